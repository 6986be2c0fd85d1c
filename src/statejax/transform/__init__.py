"""Every registered transform, built-in and third-party: `statejax.transform.<name>`.

The built-ins are imported here so type checkers see their signatures; any other
name is looked up in the plugin registry, so an installed plugin's transform is
reachable as `statejax.transform.<its name>`.

Examples:
    >>> import statejax as sj
    >>> sj.transform.jit is sj.jit
    True
"""

from typing import Any

from statejax.registry._manager import get_registry
from statejax.transforms.abstract import eval_shape, make_jaxpr
from statejax.transforms.autodiff import grad, hessian, jacfwd, jacrev, jvp, vector_grad, vjp
from statejax.transforms.checkpoint import checkpoint, remat
from statejax.transforms.conditionals import cond, ifelse, switch
from statejax.transforms.find_state import StateFinder
from statejax.transforms.jit import jit
from statejax.transforms.loops import for_loop, scan, while_loop
from statejax.transforms.mapping import StatefulMapping
from statejax.transforms.stateful import StatefulFunction
from statejax.transforms.vmap import map, vmap

__all__ = [
    "StateFinder",
    "StatefulFunction",
    "StatefulMapping",
    "checkpoint",
    "cond",
    "eval_shape",
    "for_loop",
    "grad",
    "hessian",
    "ifelse",
    "jacfwd",
    "jacrev",
    "jit",
    "jvp",
    "make_jaxpr",
    "map",
    "remat",
    "scan",
    "switch",
    "vector_grad",
    "vjp",
    "vmap",
    "while_loop",
]


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return get_registry().get(name).function


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(get_registry().transforms))
