"""Every registered transform, built-in and third-party: `statejax.transform.<name>`.

The built-ins are imported here so type checkers see their signatures; any other
name is looked up in the plugin registry, so an installed plugin's transform is
reachable as `statejax.transform.<its name>`.

Examples:
    >>> import statejax as sj
    >>> sj.transform.jit is sj.jit
    True
"""

from typing import TYPE_CHECKING, Any

from statejax.registry._manager import get_registry
from statejax.transforms.abstract import eval_shape, make_jaxpr
from statejax.transforms.autodiff import (
    GradientTransform,
    fwd_grad,
    grad,
    hessian,
    jacfwd,
    jacobian,
    jacrev,
    jvp,
    vector_grad,
    vjp,
)
from statejax.transforms.bounded import (
    bounded_while_loop,
    checkpointed_for_loop,
    checkpointed_scan,
)
from statejax.transforms.checking import (
    all_checks,
    automatic_checks,
    breakpoint_if,
    check,
    check_error,
    checkify,
    debug_nan,
    debug_nan_if,
    div_checks,
    float_checks,
    index_checks,
    jit_error_if,
    nan_checks,
    user_checks,
)
from statejax.transforms.checkpoint import checkpoint, remat
from statejax.transforms.conditionals import cond, ifelse, switch
from statejax.transforms.find_state import StateFinder
from statejax.transforms.jit import jit
from statejax.transforms.loops import for_loop, scan, while_loop
from statejax.transforms.mapping import StatefulMapping, vmap2, vmap2_new_states
from statejax.transforms.naming import named_call, named_scope
from statejax.transforms.parallel import shard_map
from statejax.transforms.pmap import pmap, pmap2, pmap2_new_states
from statejax.transforms.progress import ProgressBar
from statejax.transforms.stateful import StatefulFunction
from statejax.transforms.unvmap import unvmap
from statejax.transforms.vmap import map, vmap, vmap_new_states

__all__ = [
    "all_checks",
    "automatic_checks",
    "bounded_while_loop",
    "breakpoint_if",
    "check",
    "check_error",
    "checkify",
    "GradientTransform",
    "StateFinder",
    "StatefulFunction",
    "StatefulMapping",
    "ProgressBar",
    "checkpoint",
    "checkpointed_for_loop",
    "checkpointed_scan",
    "cond",
    "debug_nan",
    "debug_nan_if",
    "div_checks",
    "eval_shape",
    "float_checks",
    "for_loop",
    "fwd_grad",
    "grad",
    "hessian",
    "ifelse",
    "index_checks",
    "jacfwd",
    "jacobian",
    "jacrev",
    "jit",
    "jit_error_if",
    "jvp",
    "make_jaxpr",
    "map",
    "named_call",
    "named_scope",
    "nan_checks",
    "pmap",
    "pmap2",
    "pmap2_new_states",
    "remat",
    "scan",
    "shard_map",
    "switch",
    "unvmap",
    "user_checks",
    "vector_grad",
    "vjp",
    "vmap",
    "vmap_new_states",
    "vmap2",
    "vmap2_new_states",
    "while_loop",
]


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return get_registry().get(name).function


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(get_registry().transforms))


if TYPE_CHECKING:
    # With the statejax.mypy plugin enabled, mypy declares every installed plugin's transform
    # here, typed as the plugin's function, and drops __getattr__ so unknown names are errors.
    def _declare_plugin_transforms() -> object: ...

    _plugin_transforms = _declare_plugin_transforms()
