"""statejax: state-aware JAX transformations on a plugin-extensible registry.

Examples:
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

from typing import TYPE_CHECKING

from statejax import checkpoints, environ, filters, graph, random, sharding, transform
from statejax._errors import (
    BatchAxisError,
    BrainStateError,
    EnvironError,
    EnvironKeyError,
    EnvironTypeError,
    HookCancellationError,
    HookError,
    HookExecutionError,
    HookRegistrationError,
    HookWarning,
    LoopBodyError,
    NaNError,
    PluginError,
    ShardingError,
    SpecError,
    SpecTypeError,
    StatejaxError,
    StateLeakError,
    StateOperandError,
    TraceContextError,
    TraceError,
    TraceTypeError,
    TraceValueError,
)
from statejax._hidden_states import HiddenGroupState, HiddenTreeState
from statejax._new_states import catch_new_states
from statejax._random_state import RandomState
from statejax._state import (
    BatchState,
    DelayState,
    HiddenState,
    LongTermState,
    ParamState,
    ShortTermState,
    State,
    TreefyState,
)
from statejax._state_hooks import (
    GlobalHookRegistry,
    Hook,
    HookConfig,
    HookContext,
    HookHandle,
    HookManager,
    InitHookContext,
    MutableWriteHookContext,
    ReadHookContext,
    RestoreHookContext,
    WriteHookContext,
    clear_state_hooks,
    has_state_hooks,
    list_state_hooks,
    register_state_hook,
    unregister_state_hook,
)
from statejax._state_tools import (
    FakeState,
    StateDictManager,
    check_state_jax_tracer,
    check_state_value_tree,
    maybe_state,
)
from statejax._trace_stack import StateTraceStack
from statejax._transforms.abstract import eval_shape, make_jaxpr
from statejax._transforms.autodiff import grad, hessian, jacfwd, jacrev, jvp, vector_grad, vjp
from statejax._transforms.checkpoint import checkpoint, remat
from statejax._transforms.conditionals import cond, ifelse, switch
from statejax._transforms.jit import jit
from statejax._transforms.loops import for_loop, scan, while_loop
from statejax._transforms.parallel import shard_map
from statejax._transforms.progress import ProgressBar
from statejax._transforms.vmap import vmap
from statejax.graph import (
    FlattedDict,  # BrainState's brainstate.util.FlattedDict
    GraphDef,
    Module,
    NestedDict,  # BrainState's brainstate.util.NestedDict
    StateMapping,
    StateTree,
    treefy_merge,
    treefy_split,
)
from statejax.registry._manager import _own_version
from statejax.transform import (
    bounded_while_loop,
    breakpoint_if,
    checkify,
    checkpointed_for_loop,
    checkpointed_scan,
    debug_nan,
    debug_nan_if,
    fwd_grad,
    jacobian,
    jit_error_if,
    named_call,
    named_scope,
    pmap,
    pmap2,
    pmap2_new_states,
    unvmap,
    vmap2,
    vmap2_new_states,
    vmap_new_states,
)

__version__ = _own_version()

if TYPE_CHECKING:
    from statejax import optim
else:

    def __getattr__(name: str) -> object:
        # `statejax.optim` wraps optax, which takes about a second to import: it is loaded
        # on first use, so `import statejax` (and `statejax list`) never pays for it.
        if name == "optim":
            import statejax.optim

            return statejax.optim
        raise AttributeError(f"module 'statejax' has no attribute {name!r}")


__all__ = [
    "BatchAxisError",
    "ProgressBar",
    "RandomState",
    "BatchState",
    "BrainStateError",
    "EnvironError",
    "EnvironKeyError",
    "EnvironTypeError",
    "DelayState",
    "FakeState",
    "FlattedDict",
    "GraphDef",
    "GlobalHookRegistry",
    "Hook",
    "HookCancellationError",
    "HookConfig",
    "HookContext",
    "HookError",
    "HookExecutionError",
    "HookHandle",
    "HookManager",
    "HookRegistrationError",
    "HookWarning",
    "InitHookContext",
    "MutableWriteHookContext",
    "ReadHookContext",
    "RestoreHookContext",
    "WriteHookContext",
    "clear_state_hooks",
    "has_state_hooks",
    "list_state_hooks",
    "register_state_hook",
    "unregister_state_hook",
    "HiddenGroupState",
    "HiddenState",
    "HiddenTreeState",
    "LongTermState",
    "LoopBodyError",
    "Module",
    "NaNError",
    "NestedDict",
    "ParamState",
    "PluginError",
    "ShardingError",
    "ShortTermState",
    "SpecError",
    "SpecTypeError",
    "State",
    "StateDictManager",
    "StateLeakError",
    "StateMapping",
    "StateOperandError",
    "StateTraceStack",
    "StateTree",
    "StatejaxError",
    "TraceContextError",
    "TraceError",
    "TraceTypeError",
    "TraceValueError",
    "TreefyState",
    "__version__",
    "catch_new_states",
    "checkpoint",
    "check_state_jax_tracer",
    "check_state_value_tree",
    "checkpoints",
    "environ",
    "cond",
    "eval_shape",
    "filters",
    "for_loop",
    "grad",
    "graph",
    "hessian",
    "ifelse",
    "jacfwd",
    "jacrev",
    "jit",
    "jvp",
    "make_jaxpr",
    "maybe_state",
    "optim",
    "random",
    "remat",
    "scan",
    "shard_map",
    "sharding",
    "switch",
    "transform",
    "treefy_merge",
    "treefy_split",
    "vector_grad",
    "vjp",
    "vmap",
    "while_loop",
    # The rest of the built-in transforms: every transform a built-in plugin registers is
    # top-level, except `map` (a Python builtin; `statejax.transform.map`).
    "bounded_while_loop",
    "breakpoint_if",
    "checkify",
    "checkpointed_for_loop",
    "checkpointed_scan",
    "debug_nan",
    "debug_nan_if",
    "fwd_grad",
    "jacobian",
    "jit_error_if",
    "named_call",
    "named_scope",
    "pmap",
    "pmap2",
    "pmap2_new_states",
    "unvmap",
    "vmap2",
    "vmap2_new_states",
    "vmap_new_states",
]
