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

from statejax._transforms._autodiff_types import GradFunction
from statejax._transforms._common import raise_when
from statejax._transforms._selectors import (
    MappingStateAxes,
    SelectorItem,
    SelectorLike,
    StateAxesLike,
)
from statejax._transforms.abstract import eval_shape, make_jaxpr
from statejax._transforms.autodiff import (
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
from statejax._transforms.bounded import (
    bounded_while_loop,
    checkpointed_for_loop,
    checkpointed_scan,
)
from statejax._transforms.checking import (
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
from statejax._transforms.checkpoint import checkpoint, remat
from statejax._transforms.conditionals import cond, ifelse, switch
from statejax._transforms.find_state import StateFinder
from statejax._transforms.jit import jit
from statejax._transforms.loops import for_loop, scan, while_loop
from statejax._transforms.mapping import StatefulMapping, vmap2, vmap2_new_states
from statejax._transforms.naming import named_call, named_scope
from statejax._transforms.parallel import shard_map
from statejax._transforms.pmap import pmap, pmap2, pmap2_new_states
from statejax._transforms.progress import ProgressBar
from statejax._transforms.stateful import StatefulFunction
from statejax._transforms.unvmap import unvmap
from statejax._transforms.vmap import map, vmap, vmap_new_states
from statejax.registry._manager import get_registry

__all__ = [
    "all_checks",
    "automatic_checks",
    "bounded_while_loop",
    "breakpoint_if",
    "check",
    "check_error",
    "checkify",
    "GradFunction",
    "GradientTransform",
    "MappingStateAxes",
    "SelectorItem",
    "SelectorLike",
    "StateAxesLike",
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
    "raise_when",
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
