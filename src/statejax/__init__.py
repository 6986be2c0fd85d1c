"""statejax: state-aware JAX transformations on a plugin-extensible registry.

Example:
    >>> import jax.numpy as jnp
    >>> import statejax as sj
    >>> class Linear(sj.Module):
    ...     def __init__(self):
    ...         self.w = sj.ParamState(jnp.ones((2, 1)))
    ...         self.calls = sj.ShortTermState(jnp.array(0))
    ...     def __call__(self, x):
    ...         self.calls.value += 1
    ...         return x @ self.w.value
    >>> model = Linear()
    >>> step = sj.jit(lambda x: model(x))
    >>> step(jnp.ones((1, 2))).tolist(), int(model.calls.value)
    ([[2.0]], 1)
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("statejax")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

from statejax import filters, graph, transform
from statejax._errors import (
    BatchAxisError,
    PluginError,
    SpecError,
    StateLeakError,
    StatejaxError,
    TraceError,
)
from statejax._state import (
    BatchState,
    HiddenState,
    LongTermState,
    ParamState,
    ShortTermState,
    State,
)
from statejax.graph import GraphDef, Module, StateMapping, StateTree, treefy_merge, treefy_split
from statejax.transforms.jit import jit

__all__ = [
    "BatchAxisError",
    "BatchState",
    "GraphDef",
    "HiddenState",
    "LongTermState",
    "Module",
    "ParamState",
    "PluginError",
    "ShortTermState",
    "SpecError",
    "State",
    "StateLeakError",
    "StateMapping",
    "StateTree",
    "StatejaxError",
    "TraceError",
    "__version__",
    "filters",
    "graph",
    "jit",
    "transform",
    "treefy_merge",
    "treefy_split",
]
