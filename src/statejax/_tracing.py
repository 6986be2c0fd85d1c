"""The trace machinery: which statejax traces run on this thread, and what they record.

While a statejax transform traces a function, a `StateTrace` sits on a
thread-local stack (`THIS_THREAD.stack`): every read, write and creation of a
state is recorded on the top trace, and the values the trace gives states (JAX
tracers) live in the trace, never in the shared `State` object. `State._value`
therefore only ever holds concrete values, or a `TraceLocal` standing in for a
value that lives in a trace: another thread reading a state while this one
traces sees the last merged value, and a trace that raises leaves nothing
behind. The engine merges a call's written values into the states only after
the transformed function returned.

Also here: the references by which states and modules travel through pytrees
(`register_by_reference`, released when the outermost statejax call returns),
and how error messages name a state (`describe_state`), which needs the value
the state has in this thread's traces.

This module knows states only by identity and by the slots it owns on them
(`_value`; `_where`, `_name` and `tag` to describe them); the `State` classes
are in `statejax._state`, which builds on this one.

Names without a leading underscore are the internal API of the package:

| name | what |
|---|---|
| `StateTrace` | the record of one traced function (public as `statejax.extend.StateTrace`) |
| `current_trace()`, `current_traces()` | this thread's innermost trace, and all of them |
| `THIS_THREAD` | this thread's `ThreadTraces` (for the `State` class's hot paths) |
| `outside_traces()`, `checking_value_trees()`, `calling_on_create()` | thread switches |
| `TraceLocal` | what `State._value` holds for a value that lives in a trace |
| `peek_value`, `initial_value`, `storable_value`, `adopt_created` | a state's value here |
| `lives_in_trace`, `is_leaked` | whether a state's value lives in a (finished) trace |
| `CALL_REFS`, `release_call_refs`, `register_by_reference` | by-reference pytree nodes |
| `contains_tracer`, `describe_value`, `describe_state` | values and error messages |
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from statejax._errors import StateLeakError, TraceError
from statejax._jax_compat import current_jax_trace, is_tracing, trace_chain, tracer_trace

if TYPE_CHECKING:
    # Type-only, and unavoidable: a trace records `State` objects (plugins read them
    # from `PureCore.record` as such), and a `State` consults the trace.
    from statejax._state import State

__all__ = [
    "CALL_REFS",
    "THIS_THREAD",
    "CallRefs",
    "StateTrace",
    "ThreadTraces",
    "TraceLocal",
    "adopt_created",
    "calling_on_create",
    "checking_value_trees",
    "contains_tracer",
    "current_trace",
    "current_traces",
    "describe_state",
    "describe_value",
    "initial_value",
    "is_leaked",
    "lives_in_trace",
    "outside_traces",
    "peek_value",
    "register_by_reference",
    "release_call_refs",
    "storable_value",
]


class ThreadTraces(threading.local):
    """Per thread: the active statejax traces, and the switches that change how states act.

    Not to be confused with `StateTrace` (one trace's record) or the public
    `StateTraceStack` (BrainState's record of a block). Other modules read it
    through `current_traces()` and change it through the context managers below;
    only the `State` class's hot paths read `THIS_THREAD` directly.
    """

    def __init__(self) -> None:
        # The active traces, outermost first.
        self.stack: list[StateTrace] = []
        # checking_value_trees(): a stack of on/off flags, innermost last.
        self.tree_check: list[bool] = []
        # Inside outside_traces(): states created now are global, even while JAX traces.
        self.global_states = False
        # Called with each state created on this thread (calling_on_create), outermost first.
        self.on_create: list[Callable[[State[Any]], None]] = []
        # Inside hooks_paused() (statejax._state_hooks): state accesses run no hook.
        self.hooks_paused = 0


THIS_THREAD = ThreadTraces()


def current_trace() -> StateTrace | None:
    """The innermost active `StateTrace` of this thread, or `None`."""
    stack = THIS_THREAD.stack
    return stack[-1] if stack else None


def current_traces() -> list[StateTrace]:
    """This thread's active statejax traces, outermost first (empty outside any).

    The live list, for a cheap `if current_traces():`; read it, never change it
    (`outside_traces()` swaps in another list for its block).
    """
    return THIS_THREAD.stack


@contextlib.contextmanager
def checking_value_trees(on: bool) -> Iterator[None]:
    """Inside the block, a write that changes a state's tree structure is refused (`on`).

    Blocks nest; the innermost decides. This thread only.
    """
    flags = THIS_THREAD.tree_check
    flags.append(on)
    try:
        yield
    finally:
        flags.pop()


@contextlib.contextmanager
def calling_on_create(hook: Callable[[State[Any]], None]) -> Iterator[None]:
    """Inside the block, `hook(state)` is called with each state created on this thread.

    Blocks nest; the outermost hook is called first.
    """
    hooks = THIS_THREAD.on_create
    hooks.append(hook)
    try:
        yield
    finally:
        hooks.remove(hook)


class TraceLocal:
    """Stands in `State._value` for a state created inside a trace; it lives there only.

    Created inside a statejax transform, a state's value is in that transform's
    `StateTrace` and this holds none (`value` is missing): after the transform
    returned, the state is leaked. Created inside a plain JAX transform (say by
    `treefy_merge` inside `jax.grad`), this holds the value, tracers and all, with a
    weak reference to the JAX trace it belongs to (`scope`): usable while that
    trace (or one inside it) is running on this thread, leaked after.
    """

    __slots__ = ("scope", "transform", "value")

    def __init__(
        self, transform: str, value: Any = None, scope: weakref.ref[Any] | None = None
    ) -> None:
        self.transform = transform
        self.value = value
        self.scope = scope

    def usable(self) -> bool:
        """Whether the value can be used here: its JAX trace is running on this thread."""
        if self.scope is None:
            return False
        scope = self.scope()
        return scope is not None and any(t is scope for t in trace_chain(current_jax_trace()))

    def resolve(self, state: State[Any]) -> Any:
        """The value, or a StateLeakError naming `state` if it is not usable here."""
        if self.usable():
            return self.value
        raise StateLeakError(
            f"{describe_state(state)} was created inside {self.transform} and used after it "
            "returned (or from another thread); its value only existed inside that trace. "
            "Create the state outside the transform (for example in the module's __init__) "
            "and write to it inside, or use it only inside the transform that created it."
        )

    def __repr__(self) -> str:
        if self.scope is None:
            return f"<created inside {self.transform}; no value outside it>"
        return describe_value(self.value)


# What each kind of JAX trace is, for error messages: the plain JAX transforms that
# make it, and the statejax transforms to use in their place.
_PLAIN_TRANSFORMS: dict[str, tuple[str, str]] = {
    "JVPTrace": (
        "jax.jvp/jax.jacfwd",
        "statejax.grad, jacfwd or jvp instead of jax.grad/jax.jvp/jax.jacfwd",
    ),
    "LinearizeTrace": (
        "jax.grad/jax.vjp",
        "statejax.grad, vjp or jacrev instead of jax.grad/jax.vjp/jax.jacrev",
    ),
    "BatchTrace": ("jax.vmap", "statejax.vmap instead of jax.vmap"),
    "DynamicJaxprTrace": (
        "jax.jit (or lax.scan, jax.eval_shape, ...)",
        "statejax.jit, scan, for_loop, while_loop, cond or checkpoint "
        "instead of their jax/lax counterparts",
    ),
}


def _jax_transform_name(jax_trace: object) -> str:
    kind = type(jax_trace).__name__
    return f"a plain JAX transform ({_PLAIN_TRANSFORMS.get(kind, (kind, ''))[0]})"


def _instead(jax_trace: object) -> str:
    entry = _PLAIN_TRANSFORMS.get(type(jax_trace).__name__)
    return entry[1] if entry else "the statejax transform of the same name"


def _bind_to_trace(state: State[Any], value: Any, scope: object | None = None) -> TraceLocal:
    """`value` (holding tracers) as the value of a state that lives in a plain JAX trace.

    `scope` is the JAX trace the state belongs to (default: the current one). Every
    tracer in `value` must belong to it or to a trace it runs inside; a tracer of a
    trace nested deeper would escape that trace when it ends.
    """
    if scope is None:
        scope = current_jax_trace()
    allowed = trace_chain(scope)
    for leaf in jax.tree.leaves(value):
        if isinstance(leaf, jax.core.Tracer) and not any(tracer_trace(leaf) is t for t in allowed):
            raise TraceError(
                f"{describe_state(state)} lives inside {_jax_transform_name(scope)}, but the "
                "value written to it is a tracer of a JAX transform nested deeper, which would "
                "escape it. Write the state inside the transform it was created in, or "
                "return the value from the nested transform."
            )
    return TraceLocal(_jax_transform_name(scope), value, weakref.ref(scope))


class _Shown:
    """Shows as the given text in a repr (for describing the leaves of a pytree)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def describe_value(value: object) -> str:
    """A short description of a value for reprs and messages: `float32[3,2]`, `int32[]=0`.

    Examples:
        >>> import jax.numpy as jnp
        >>> describe_value(jnp.zeros((3, 2))), describe_value({"n": jnp.array(0)})
        ('float32[3,2]', "{'n': int32[]=0}")
    """
    leaves = jax.tree.leaves(value)
    if not (len(leaves) == 1 and leaves[0] is value):
        # A pytree: show its structure with each array leaf described.
        return repr(jax.tree.map(lambda leaf: _Shown(describe_value(leaf)), value))
    if hasattr(value, "shape"):
        shape = ",".join(str(d) for d in value.shape)
        dtype = getattr(value, "dtype", None)
        try:
            short = np.dtype(dtype).name
        except TypeError:  # extended dtypes, such as typed random keys: no numpy view
            return f"{dtype}[{shape}]"
        if isinstance(value, jax.core.Tracer):
            return f"{short}[{shape}] (traced)"
        if getattr(value, "size", 2) == 1:
            return f"{short}[{shape}]={np.asarray(value).item()!r}"
        return f"{short}[{shape}]"
    return repr(value)


def contains_tracer(value: object) -> bool:
    """Whether any leaf of the pytree `value` is a JAX tracer."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


# A State travels through pytree functions by reference: it has no leaves, and the
# object itself is the node's auxiliary data. Passing a State (or a Module, see
# graph.py) as an argument of a transformed function therefore hands the very same
# object to the traced function, which discovers it like a closed-over state.
#
# JAX compares and hashes auxiliary data in its caches (jax.jit's compilation cache
# keys hold the argument tree), so the object travels inside an `_IdentityRef`:
# equal only for the same object, whatever the class's __eq__/__hash__ say (a
# dataclass module is unhashable; two modules may compare equal). It holds the
# object strongly while the tree is in use (a module created inside vmap lives only
# in its output tree until JAX rebuilds it); refs made during a statejax call are
# weakened when the call returns, so a cache key does not keep a dropped module,
# and the cache entry keyed by that module, alive.
class _IdentityRef:
    __slots__ = ("node", "ref")

    def __init__(self, node: object) -> None:
        self.node: object | None = node
        # Without a callback, weakref.ref returns the one shared reference of a live
        # object, so refs to the same node are identical and compare fast. A class
        # without weak references (custom __slots__) is held, and compared, by itself.
        try:
            self.ref: object = weakref.ref(node)
        except TypeError:
            self.ref = node

    def target(self) -> object | None:
        """The node, or `None` if it was only weakly held and has died."""
        if self.node is not None:
            return self.node
        ref = self.ref
        return ref() if type(ref) is weakref.ref else ref

    def __eq__(self, other: object) -> bool:
        return type(other) is _IdentityRef and other.ref is self.ref

    def __hash__(self) -> int:
        return id(self.ref)

    def __repr__(self) -> str:
        return repr(self.target())


class CallRefs(threading.local):
    """Per thread: how deep in statejax calls we are, and the refs made meanwhile.

    The engine counts `depth` itself on its cached call path (no helper call), and
    calls `release_call_refs()` when the outermost call returns with refs `made`.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.made: list[_IdentityRef] = []


CALL_REFS = CallRefs()


def release_call_refs() -> None:
    """The outermost statejax call returned: the trees it made stop holding their nodes.

    The engine counts the depth in `CALL_REFS` itself (its cached call path).
    """
    refs = CALL_REFS
    for ref in refs.made:
        ref.node = None
    refs.made = []


def _flatten_by_reference(node: object) -> tuple[tuple[()], _IdentityRef]:
    ref = _IdentityRef(node)
    if CALL_REFS.depth:
        CALL_REFS.made.append(ref)
    return (), ref


def _unflatten_by_reference(ref: _IdentityRef, _children: Iterable[object]) -> object:
    node = ref.target()
    if node is None:
        raise TraceError(
            "a transformed function returned a Module or State that no longer exists (it "
            "was created inside an earlier trace of the function and dropped since); "
            "return arrays, or modules that outlive the call, from a transformed function."
        )
    return node


def register_by_reference(cls: type) -> None:
    """Make `cls` a leafless pytree node that is passed through transforms by reference."""
    jax.tree_util.register_pytree_node(cls, _flatten_by_reference, _unflatten_by_reference)


def initial_value(state: State[Any], value: Any) -> Any:
    """`State._value` of a state born outside any statejax trace, holding `value`.

    Born inside a plain JAX transform (treefy_merge inside jax.grad, a module built
    inside jax.jit), it belongs to that transform's trace, whatever its first value:
    it may hold the trace's tracers, and it lives as long as that trace runs.
    """
    if is_tracing() and not THIS_THREAD.global_states:
        return _bind_to_trace(state, value)
    if contains_tracer(value):
        raise TraceError(
            f"{type(state).__name__} was created holding a JAX tracer outside any transform "
            "(a tracer that escaped its trace); create states from concrete values, or "
            "inside the transform whose values they hold."
        )
    return value


def storable_value(state: State[Any], new: Any) -> Any:
    """What `State._value` becomes when `new` is written outside any statejax trace.

    A state living in a running plain JAX trace (created there) takes any value of
    that trace and stays in it. Any other state takes a concrete value as it is; a
    traced one would leak: a `TraceError` naming the state.
    """
    current = state._value
    if type(current) is TraceLocal and current.usable():
        # A state of a running plain JAX trace stays one, whatever it is given.
        assert current.scope is not None
        return _bind_to_trace(state, new, current.scope())
    if not contains_tracer(new):
        return new
    raise TraceError(
        f"a JAX tracer was written to {describe_state(state)} outside any statejax "
        "transform (inside plain jax.jit/grad/vmap?). The state exists outside that "
        "transform, so the tracer would leak; use statejax.jit, statejax.grad or "
        "statejax.vmap, which thread states through the trace, or create the state "
        "inside the transform (treefy_merge) and return its value."
    )


def describe_state(state: State[Any], path: tuple[Any, ...] | None = None) -> str:
    """How error messages name a state: its path if known, else where it was stored.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Linear(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.zeros((3, 2)))
        >>> describe_state(Linear().w)
        'ParamState Linear.w (float32[3,2])'
        >>> describe_state(Linear().w, ("layers", 0, "w"))
        "ParamState at path ('layers', 0, 'w') (float32[3,2])"
    """
    kind = type(state).__name__
    shape = describe_value(peek_value(state))
    if path is not None:
        return f"{kind} at path {path!r} ({shape})"
    where = (
        f" {state._where}"
        if state._where
        else f" {state._name!r}"
        if state._name
        else f" tagged {', '.join(map(repr, sorted(state.tag)))}"
        if state.tag
        else ""
    )
    return f"{kind}{where} ({shape})"


_MISSING: Any = object()


def peek_value(state: State[Any]) -> Any:
    """The value `state` has for this thread right now, without recording a read.

    Inside a trace that is the trace's value (a tracer, say); outside, the stored one.
    """
    key = id(state)
    for trace in reversed(THIS_THREAD.stack):
        value = trace.values.get(key, _MISSING)
        if value is not _MISSING:
            return value
    return state._value


class StateTrace:
    """The record of how one traced function used states, and the values it gave them.

    `known` is the set of states the caller threads through the trace (their
    values are put in `values` with `set_value`); touching any other state is
    recorded in `unknown` so the engine can retrace with a larger set. Values
    written inside the trace stay in `values`: the shared `State` objects are
    never touched, and the record is emptied of values when the trace closes, so
    it keeps no tracer alive. States created inside are marked as leaked unless a
    transform adopts them.
    """

    __slots__ = (
        "_jax_trace",
        "_known",
        "created",
        "name",
        "reads",
        "unknown",
        "values",
        "writes",
    )

    def __init__(self, name: str, known: Iterable[State[Any]] = ()) -> None:
        self.name = name
        self._known = {id(s) for s in known}
        self._jax_trace: object = None
        self.values: dict[int, Any] = {}
        self.reads: dict[int, State[Any]] = {}
        self.writes: dict[int, State[Any]] = {}
        self.created: list[State[Any]] = []
        self.unknown: dict[int, State[Any]] = {}

    def set_value(self, state: State[Any], value: Any) -> None:
        """Give `state` the value `value` inside this trace (a known state's input)."""
        self.values[id(state)] = value

    def _touch(self, key: int, state: State[Any]) -> None:
        if key not in self._known:
            self.unknown.setdefault(key, state)

    def read(self, state: State[Any]) -> Any:
        """Record a read of `state` and return the value it has in this thread's traces."""
        key = id(state)
        if key not in self.reads:
            self.reads[key] = state
            self._touch(key, state)
        value = self.values.get(key, _MISSING)
        if value is not _MISSING:
            return value
        return self._read_beneath(state) if self._reads_beneath else peek_value(state)

    # A trace of a block that is part of the enclosing computation (a `StateTraceStack`)
    # reads a state it holds no value of from the trace beneath it, which records it:
    # a transform around the block takes the state as an input, instead of compiling its
    # stored value in. A transform's own trace peeks: it takes the state as an input
    # itself, and a trace that computes nothing (discovery, `eval_shape`) stays invisible.
    _reads_beneath = False

    def _read_beneath(self, state: State[Any]) -> Any:
        # Not only the top: a block nested in another one reads through it.
        stack = THIS_THREAD.stack
        for depth in range(len(stack) - 1, -1, -1):
            if stack[depth] is self:
                return stack[depth - 1].read(state) if depth else state._value
        return peek_value(state)

    def write(self, state: State[Any], value: Any) -> None:
        """Record a write of `state`; the value stays in this trace."""
        key = id(state)
        if key not in self.writes:
            self.writes[key] = state
            self._touch(key, state)
        self.check_write(state, value)
        self.values[key] = value

    def check_write(self, state: State[Any], value: Any) -> None:
        """Raise the error `write(state, value)` would raise, recording nothing."""
        jax_trace = current_jax_trace()
        if jax_trace is not self._jax_trace:
            self._refuse_escaping(state, value, jax_trace)

    def _refuse_escaping(self, state: State[Any], value: Any, jax_trace: object) -> None:
        # Written inside a plain JAX transform nested in this trace: a tracer of that
        # transform would outlive it (JAX's bare UnexpectedTracerError, naming nothing).
        for leaf in jax.tree.leaves(value):
            if isinstance(leaf, jax.core.Tracer) and tracer_trace(leaf) is not self._jax_trace:
                raise TraceError(
                    f"{describe_state(state)} was written inside a plain JAX transform "
                    f"nested in {self.name}; its new value is a tracer of that transform and "
                    f"would escape it. Use {_instead(jax_trace)}, so the state is threaded "
                    "through it, or write the state outside it."
                )

    def record_create(self, state: State[Any], value: Any) -> None:
        """Record `state` as born in this trace, holding `value` here."""
        key = id(state)
        self.created.append(state)
        self._known.add(key)  # its value is here from birth: never unknown
        self.values[key] = value

    def __enter__(self) -> StateTrace:
        self._jax_trace = current_jax_trace()
        THIS_THREAD.stack.append(self)
        return self

    # A transform's trace ends even if its function left a trace open inside it (a
    # `StateTraceStack` entered and never exited): the open ones end with it. A user's
    # `StateTraceStack` (False) refuses to end out of order and changes nothing.
    _ends_inner_traces = True

    def __exit__(self, exc_type: object = None, *exc: object) -> None:
        stack = THIS_THREAD.stack
        if stack and stack[-1] is self:
            stack.pop()
            self._close()
            return
        index = next((i for i, t in enumerate(stack) if t is self), None)
        if index is None or not self._ends_inner_traces:
            # Not the innermost active trace: refuse, leaving the stack as it is, so
            # the traces can still be left in order.
            raise RuntimeError(
                f"{self.name} was exited out of order: it is not the innermost active "
                "trace on this thread. Exit nested traces innermost first."
            )
        left_open = stack[index + 1 :]
        del stack[index:]
        for trace in (self, *left_open):
            trace._close()
        if exc_type is None:  # an error in flight says more than this one
            raise RuntimeError(
                f"{', '.join(t.name for t in left_open)} entered inside {self.name} was "
                "still active when it ended; exit every StateTraceStack in the function "
                "that entered it (use a `with` block)."
            )

    def _close(self) -> None:
        # The values die with the trace: a record kept after it holds no tracer.
        self.values = {}
        self._jax_trace = None


@contextlib.contextmanager
def outside_traces() -> Iterator[None]:
    """Run a block as if no statejax trace were active: states created in it are global.

    For library-level states made lazily on first use, such as the default random
    key, which may happen inside a transform. Combine with
    `jax.ensure_compile_time_eval()` so their initial values are concrete.

    Examples:
        >>> import jax.numpy as jnp
        >>> from statejax import State
        >>> with StateTrace("demo"):
        ...     with outside_traces():
        ...         s = State(jnp.zeros(2))
        >>> is_leaked(s)
        False
    """
    saved, THIS_THREAD.stack = THIS_THREAD.stack, []
    saved_global, THIS_THREAD.global_states = THIS_THREAD.global_states, True
    try:
        yield
    finally:
        THIS_THREAD.stack = saved
        THIS_THREAD.global_states = saved_global


def lives_in_trace(state: State[Any]) -> bool:
    """Whether `state` was created inside a plain JAX transform that is running here."""
    value = state._value
    return type(value) is TraceLocal and value.usable()


def is_leaked(state: State[Any]) -> bool:
    """Whether `state` was created inside a transform that has finished."""
    value = state._value
    return type(value) is TraceLocal and not value.usable()


def adopt_created(state: State[Any], value: Any) -> None:
    """Hand out `state`, created inside a trace that has closed, holding `value`.

    For transforms that return the states their function created (vmap returns
    them stacked, for ensembles): after the transform's trace closed the state
    is marked leaked; this gives it `value` instead. Inside an enclosing
    trace the state is recorded as created *there*, so the enclosing transform
    decides its fate in turn (another vmap stacks it again; jit marks it leaked).

    Examples:
        >>> import jax.numpy as jnp
        >>> from statejax import State
        >>> from statejax.extend import StateTrace, adopt_created, is_leaked
        >>> with StateTrace("demo") as trace:
        ...     s = State(jnp.zeros(2))
        >>> is_leaked(s)
        True
        >>> adopt_created(s, jnp.ones(2))
        >>> s.value.tolist()
        [1.0, 1.0]
    """
    trace = current_trace()
    if trace is not None:
        trace.record_create(state, value)
        return
    state._value = initial_value(state, value)
