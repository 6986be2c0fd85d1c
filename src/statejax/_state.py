"""States and the thread-local trace stack that records how they are used.

A :class:`State` is a mutable box around a pytree of arrays. Outside any
transform, ``.value`` is a plain attribute access. While a statejax transform
traces a function, a :class:`StateTrace` sits on a thread-local stack and every
read, write and creation of a state is recorded on the top trace; that record is
what the engine uses to build the pure core. The trace also remembers each
state's value on first touch and puts it back when it closes, so a trace never
leaves a tracer behind, whether the traced function returns or raises.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

import jax
import numpy as np

from statejax._errors import StateLeakError, TraceError

__all__ = [
    "BatchState",
    "HiddenState",
    "LongTermState",
    "ParamState",
    "ShortTermState",
    "State",
    "StateTrace",
    "adopt_created",
    "current_trace",
    "describe_state",
]

T = TypeVar("T")


class _TraceStack(threading.local):
    def __init__(self) -> None:
        self.stack: list[StateTrace] = []


_TLS = _TraceStack()


def current_trace() -> StateTrace | None:
    """The innermost active :class:`StateTrace` of this thread, or ``None``."""
    stack = _TLS.stack
    return stack[-1] if stack else None


class _Leaked:
    """Stands in for the value of a state created inside a finished transform."""

    __slots__ = ("transform",)

    def __init__(self, transform: str) -> None:
        self.transform = transform

    def __repr__(self) -> str:
        return f"<created inside {self.transform}; no value outside it>"


class _Shown:
    """Shows as the given text in a repr (for describing the leaves of a pytree)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _describe(value: object) -> str:
    leaves = jax.tree.leaves(value)
    if not (len(leaves) == 1 and leaves[0] is value):
        # A pytree: show its structure with each array leaf described.
        return repr(jax.tree.map(lambda leaf: _Shown(_describe(leaf)), value))
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


def _contains_tracer(value: object) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


# A State travels through pytree functions by reference: it has no leaves, and the
# object itself is the node's auxiliary data. Passing a State (or a Module, see
# graph.py) as an argument of a transformed function therefore hands the very same
# object to the traced function, which discovers it like a closed-over state.
def _flatten_by_reference(node: object) -> tuple[tuple[()], object]:
    return (), node


def _unflatten_by_reference(node: object, _children: Iterable[object]) -> object:
    return node


def register_by_reference(cls: type) -> None:
    """Make ``cls`` a leafless pytree node that is passed through transforms by reference."""
    jax.tree_util.register_pytree_node(cls, _flatten_by_reference, _unflatten_by_reference)


class State(Generic[T]):
    """A mutable, named-by-path box around a pytree of arrays.

    Reads and writes of ``.value`` inside a statejax transform are recorded so the
    transform can thread the value through its pure core.

    Example:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> count = sj.State(jnp.array(0), tag="counter")
        >>> count.value = count.value + 1
        >>> int(count.value)
        1
    """

    __slots__ = ("__weakref__", "_name", "_value", "tag")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_by_reference(cls)

    def __init__(self, value: T, *, tag: str | None = None) -> None:
        trace = current_trace()
        if trace is not None:
            trace.record_create(self)
        elif _contains_tracer(value):
            raise TraceError(
                f"{type(self).__name__} was created holding a JAX tracer outside any statejax "
                "transform; create states outside jax.jit/jax.grad, or use statejax.jit/grad "
                "so the state is threaded through the trace."
            )
        self._value: Any = value
        self.tag = tag
        # Where the state was first stored, e.g. "Linear.w"; set by Module.__setattr__.
        self._name: str | None = None

    @property
    def value(self) -> T:
        """The current value; reading it inside a transform records a read."""
        stack = _TLS.stack
        if stack:
            stack[-1].record_read(self)
        value = self._value
        if type(value) is _Leaked:
            raise StateLeakError(
                f"this {type(self).__name__} was created inside {value.transform} and used after "
                "it returned; its value only existed inside the trace. Create the state outside "
                "the transform (for example in the module's __init__) and write to it inside."
            )
        return value  # type: ignore[no-any-return]

    @value.setter
    def value(self, new: T) -> None:
        stack = _TLS.stack
        if stack:
            stack[-1].record_write(self)
        elif _contains_tracer(new):
            raise TraceError(
                f"a JAX tracer was written to a {type(self).__name__} outside any statejax "
                "transform (inside plain jax.jit/grad/vmap?). It would leak; use statejax.jit, "
                "statejax.grad or statejax.vmap, which thread states through the trace."
            )
        self._value = new

    def __repr__(self) -> str:
        tag = f", tag={self.tag!r}" if self.tag is not None else ""
        return f"{type(self).__name__}(value={_describe(self._value)}{tag})"


def describe_state(state: State[Any], path: tuple[Any, ...] | None = None) -> str:
    """How error messages name a state: its path if known, else where it was stored.

    Example:
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
    shape = _describe(state._value)
    if path is not None:
        return f"{kind} at path {path!r} ({shape})"
    where = f" {state._name}" if state._name else f" tagged {state.tag!r}" if state.tag else ""
    return f"{kind}{where} ({shape})"


class ParamState(State[T]):
    """A trainable parameter."""

    __slots__ = ()


class ShortTermState(State[T]):
    """State that lives for one step or episode (counters, caches)."""

    __slots__ = ()


class LongTermState(State[T]):
    """State kept across steps but not trained (running statistics)."""

    __slots__ = ()


class HiddenState(State[T]):
    """The hidden variables of a dynamical system (membrane potential, RNN carry)."""

    __slots__ = ()


class BatchState(State[T]):
    """State that carries a batch dimension."""

    __slots__ = ()


register_by_reference(State)


class StateTrace:
    """The record of how one traced function used states.

    ``known`` is the set of states the caller already threads through the trace;
    touching any other state is recorded in ``unknown`` so the engine can retrace
    with a larger set. On exit every touched state gets back its value from
    before the trace, and states created inside are marked as leaked unless a
    transform adopted them.
    """

    __slots__ = ("_known", "created", "name", "originals", "owner", "reads", "unknown", "writes")

    def __init__(self, name: str, owner: object = None, known: Iterable[State[Any]] = ()) -> None:
        self.name = name
        self.owner = owner
        self._known = {id(s) for s in known}
        self.originals: dict[int, tuple[State[Any], Any]] = {}
        self.reads: dict[int, State[Any]] = {}
        self.writes: dict[int, State[Any]] = {}
        self.created: list[State[Any]] = []
        self.unknown: dict[int, State[Any]] = {}

    def set_value(self, state: State[Any], value: Any) -> None:
        """Give ``state`` the value ``value`` for the duration of the trace."""
        key = id(state)
        if key not in self.originals:
            self.originals[key] = (state, state._value)
        state._value = value

    def _touch(self, state: State[Any]) -> None:
        key = id(state)
        if key not in self.originals:
            self.originals[key] = (state, state._value)
            if key not in self._known:
                self.unknown[key] = state

    def record_read(self, state: State[Any]) -> None:
        self._touch(state)
        self.reads.setdefault(id(state), state)

    def record_write(self, state: State[Any]) -> None:
        self._touch(state)
        self.writes.setdefault(id(state), state)

    def record_create(self, state: State[Any]) -> None:
        self.created.append(state)
        # A state born in this trace holds its value from birth: nothing to restore.
        self.originals[id(state)] = (state, _Leaked(self.name))

    def adopt(self, state: State[Any]) -> None:
        """Keep ``state`` (created in this trace) alive after exit; the caller sets its value."""
        self.originals.pop(id(state), None)

    def __enter__(self) -> StateTrace:
        _TLS.stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        popped = _TLS.stack.pop()
        assert popped is self, "statejax trace stack corrupted"
        for state, value in self.originals.values():
            state._value = value


@contextlib.contextmanager
def outside_traces() -> Iterator[None]:
    """Run a block as if no statejax trace were active: states created in it are global.

    For library-level states made lazily on first use, such as the default random
    key, which may happen inside a transform. Combine with
    ``jax.ensure_compile_time_eval()`` so their initial values are concrete.

    Example:
        >>> import jax.numpy as jnp
        >>> with StateTrace("demo"):
        ...     with outside_traces():
        ...         s = State(jnp.zeros(2))
        >>> is_leaked(s)
        False
    """
    saved, _TLS.stack = _TLS.stack, []
    try:
        yield
    finally:
        _TLS.stack = saved


def is_leaked(state: State[Any]) -> bool:
    """Whether ``state`` was created inside a transform that has finished."""
    return type(state._value) is _Leaked


def adopt_created(state: State[Any], value: Any) -> None:
    """Hand out ``state``, created inside a trace that has closed, holding ``value``.

    For transforms that return the states their function created (vmap returns
    them stacked, for ensembles): after the transform's trace closed the state
    is marked leaked; this gives it ``value`` instead. Inside an enclosing
    trace the state is recorded as created *there*, so the enclosing transform
    decides its fate in turn (another vmap stacks it again; jit marks it leaked).

    Example:
        >>> import jax.numpy as jnp
        >>> from statejax import State
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
        trace.record_create(state)
    state._value = value
