"""States and the thread-local trace stack that records how they are used.

A `State` is a mutable box around a pytree of arrays. Outside any transform,
`.value` is a plain attribute access. While a statejax transform traces a
function, a `StateTrace` sits on a thread-local stack: every read, write and
creation of a state is recorded on the top trace, and the values the trace gives
states (JAX tracers) live in the trace, never in the shared `State` object.
`State._value` therefore only ever holds concrete values: another thread reading
a state while this one traces sees the last merged value, and a trace that
raises leaves nothing behind. The engine merges a call's written values into the
states only after the transformed function returned.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, NoReturn, Self, TypeVar

import jax
import numpy as np
from jax.extend import source_info_util

from statejax._errors import StateLeakError, StateOperandError, TraceContextError, TraceError
from statejax._jax_compat import current_jax_trace, is_tracing, trace_chain, tracer_trace

__all__ = [
    "BatchState",
    "HiddenState",
    "LongTermState",
    "ParamState",
    "ShortTermState",
    "State",
    "StateTrace",
    "adopt_created",
    "check_write",
    "current_trace",
    "describe_state",
    "lives_in_trace",
    "peek_value",
    "storable_value",
]

T = TypeVar("T")


class _TraceStack(threading.local):
    def __init__(self) -> None:
        self.stack: list[StateTrace] = []
        # check_state_value_tree(): a stack of on/off flags, innermost last.
        self.tree_check: list[bool] = []
        # Inside outside_traces(): states created now are global, even while JAX traces.
        self.global_states = False
        # Called with each state created on this thread (catch_new_states), outermost first.
        self.on_create: list[Callable[[State[Any]], None]] = []


_TLS = _TraceStack()


def current_trace() -> StateTrace | None:
    """The innermost active `StateTrace` of this thread, or `None`."""
    stack = _TLS.stack
    return stack[-1] if stack else None


class _TraceLocal:
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
        return _describe(self.value)


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


def _bind_to_trace(state: State[Any], value: Any, scope: object | None = None) -> _TraceLocal:
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
    return _TraceLocal(_jax_transform_name(scope), value, weakref.ref(scope))


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
# graph/_node.py) as an argument of a transformed function therefore hands the very same
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


class _CallRefs(threading.local):
    """Per thread: how deep in statejax calls we are, and the refs made meanwhile."""

    def __init__(self) -> None:
        self.depth = 0
        self.made: list[_IdentityRef] = []


_CALL_REFS = _CallRefs()


def release_call_refs() -> None:
    """The outermost statejax call returned: the trees it made stop holding their nodes.

    The engine counts the depth in `_CALL_REFS` itself (its cached call path).
    """
    refs = _CALL_REFS
    for ref in refs.made:
        ref.node = None
    refs.made = []


def _flatten_by_reference(node: object) -> tuple[tuple[()], _IdentityRef]:
    ref = _IdentityRef(node)
    if _CALL_REFS.depth:
        _CALL_REFS.made.append(ref)
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


_NO_VALUE: Any = object()


class State(Generic[T]):
    """A mutable box around a pytree of arrays, with an optional name and tags.

    Reads and writes of `.value` inside a statejax transform are recorded so the
    transform can thread the value through its pure core. As in BrainState, `name`
    is an optional label and `tag` a set of strings (`tag="enc"` gives `{"enc"}`),
    matched by `WithTag`. `State(other_state)` takes the other state's value.
    `sharding` names the logical axis of each dimension (`("embed", None)`), which
    `statejax.sharding.shard_states` maps to mesh axes.

    Args:
        value: the initial value, a pytree of arrays (or a `State`, whose value is taken).
        name: an optional name, shown in reprs and error messages.
        tag: a tag or an iterable of tags.
        sharding: logical axis names, one per dimension of the value (`None`: not sharded).

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> count = sj.State(jnp.array(0), name="count", tag="counter")
        >>> count.value = count.value + 1
        >>> int(count.value), count.name, count.tag
        (1, 'count', {'counter'})
    """

    # _cache_entries: the transform cache entries keyed by this state, which it keeps
    # alive (see registry/_engine.py); unset until a state is passed as an argument.
    # _where: where the state was first stored ("Linear.w"), set by Module.__setattr__.
    __slots__ = (
        "__weakref__",
        "_cache_entries",
        "_level",
        "_name",
        "_source_info",
        "_value",
        "_where",
        "sharding",
        "tag",
    )
    _cache_entries: list[Any]
    tag: set[str] | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_by_reference(cls)

    def __init__(
        self,
        value: T,
        name: str | None = None,
        *,
        tag: str | Iterable[str] | None = None,
        sharding: tuple[str | tuple[str, ...] | None, ...] | None = None,
    ) -> None:
        if isinstance(value, State):
            value = value.value
        self.tag = _tag_set(tag)
        self._name = name
        # Logical axis names, one per dimension of the value (None: not sharded);
        # statejax.sharding maps them to mesh axes through rules.
        self.sharding = None if sharding is None else tuple(sharding)
        self._where: str | None = None
        self._level = len(_TLS.stack)
        self._source_info = source_info_util.current()
        for hook in _TLS.on_create:
            hook(self)
        trace = current_trace()
        if trace is not None:
            # Born inside a trace: its value lives in the trace, and outside it the
            # state reads as leaked unless a transform adopts it (vmap's ensembles).
            self._value: Any = _TraceLocal(trace.name)
            trace.record_create(self, value)
            return
        self._value = _initial_value(self, value)

    @property
    def value(self) -> T:
        """The current value; reading it inside a transform records a read."""
        stack = _TLS.stack
        value = stack[-1].read(self) if stack else self._value
        if type(value) is _TraceLocal:
            value = value.resolve(self)
        return value  # type: ignore[no-any-return]

    @value.setter
    def value(self, new: T) -> None:
        _check_value(self, new)
        stack = _TLS.stack
        if stack:
            stack[-1].write(self, new)
            return
        self._value = storable_value(self, new)

    @property
    def name(self) -> str | None:
        """The name given at creation (or set since); `None` if none was given."""
        return self._name

    @name.setter
    def name(self, name: str | None) -> None:
        self._name = name

    def _slot_items(self) -> list[tuple[str, Any]]:
        names = (
            name
            for cls in type(self).__mro__
            for name in (
                (vars(cls).get("__slots__", ()),)
                if isinstance(vars(cls).get("__slots__", ()), str)
                else vars(cls).get("__slots__", ())
            )
        )
        return [(n, getattr(self, n)) for n in names if n != "__weakref__" and hasattr(self, n)]

    # JAX's source information holds a traceback, which cannot be pickled or deep-copied:
    # copies share it (it is immutable), and an unpickled state gets the place it was
    # unpickled.
    def __copy__(self) -> Self:
        new = type(self).__new__(type(self))
        for name, value in self._slot_items():
            setattr(new, name, value)
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for name, value in self._slot_items():
            setattr(new, name, value if name == "_source_info" else copy.deepcopy(value, memo))
        return new

    def __getstate__(self) -> dict[str, Any]:
        return {n: v for n, v in self._slot_items() if n != "_source_info"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        self._source_info = source_info_util.current()

    @property
    def source_info(self) -> source_info_util.SourceInfo:
        """Where the state was created: JAX's source information (traceback and name stack).

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> from jax.extend import source_info_util
            >>> s = sj.State(jnp.zeros(2))
            >>> isinstance(s.source_info, source_info_util.SourceInfo)
            True
        """
        return self._source_info

    def raise_error_with_source_info(self, error: Exception) -> NoReturn:
        """Raise `error` with the place the state was created shown as its user frame.

        JAX's traceback filtering then points at the line that created the state.

        Raises:
            Exception: `error`, always.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> sj.State(jnp.zeros(2)).raise_error_with_source_info(ValueError("bad state"))
            Traceback (most recent call last):
            ...
            ValueError: bad state
        """
        info = self._source_info
        name_stack = source_info_util.current_name_stack() + info.name_stack
        with source_info_util.user_context(info.traceback, name_stack=name_stack):
            raise error

    def check_valid_trace(self, error_msg: Callable[[], str]) -> None:
        """Raise `TraceContextError(error_msg())` if the state cannot be used here.

        A state is unusable when it was created inside a transform that has returned
        (its value died with that trace). `error_msg` is called only then.

        Raises:
            TraceContextError: the state's value died with the trace that created it.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> sj.State(jnp.zeros(2)).check_valid_trace(lambda: "unused")
        """
        value = peek_value(self)  # inside its own trace: the trace's value
        if type(value) is _TraceLocal and not value.usable():
            raise TraceContextError(error_msg())

    @property
    def stack_level(self) -> int:
        """How many statejax traces were active when the state was created (BrainState's level)."""
        return self._level

    @stack_level.setter
    def stack_level(self, level: int) -> None:
        self._level = level

    def increase_stack_level(self) -> None:
        """Add one to `stack_level`."""
        self._level += 1

    def decrease_stack_level(self) -> None:
        """Subtract one from `stack_level`, never going below zero."""
        self._level = max(self._level - 1, 0)

    def add_tag(self, tag: str) -> None:
        """Add `tag` to the state's tag set (creating the set if it has none).

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> s = sj.State(jnp.zeros(2))
            >>> s.add_tag("frozen"); s.add_tag("frozen"); s.tag
            {'frozen'}
        """
        if self.tag is None:
            self.tag = set()
        self.tag.add(tag)

    def numel(self) -> int:
        """The total number of array elements in the value (summed over its leaves).

        Does not record a read: it depends only on shapes.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> sj.State({"a": jnp.zeros(5), "b": jnp.zeros((2, 3))}).numel()
            11
        """
        value = peek_array(self)
        return sum(int(np.size(leaf)) for leaf in jax.tree.leaves(value))

    def value_call(self, func: Callable[[Any], Any]) -> Any:
        """`jax.tree.map(func, self.value)`: apply `func` to every leaf of the value.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> sj.State({"a": jnp.ones(2)}).value_call(lambda x: x * 2)["a"].tolist()
            [2.0, 2.0]
        """
        return jax.tree.map(func, self.value)

    def restore_value(self, v: T) -> None:
        """Put back a value of the same tree structure (such as one saved earlier).

        The same write as `state.value = v` (recorded by a running transform),
        but the tree structure must match the current value's.

        Raises:
            ValueError: `v` is a `State`, or its tree structure differs; the
                message names the state and both structures.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> s = sj.State(jnp.zeros(2)); saved = s.value
            >>> s.value = jnp.ones(2); s.restore_value(saved); s.value.tolist()
            [0.0, 0.0]
        """
        if not isinstance(v, State):
            _check_same_tree(self, v)
        self.value = v

    def check_if_deleted(self) -> None:
        """Raise `StateLeakError` if the state's value died with the trace that created it.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> sj.State(jnp.zeros(2)).check_if_deleted()
        """
        value = self._value
        if type(value) is _TraceLocal:
            value.resolve(self)

    def copy(self) -> Self:
        """A new state of the same type, holding the current value, name and tags.

        Reading the value is a recorded read; inside a transform the copy is a
        state created there.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> a = sj.ParamState(jnp.ones(2), name="w")
            >>> b = a.copy(); b.value = jnp.zeros(2)
            >>> a.value.tolist(), b.name, type(b).__name__
            ([1.0, 1.0], 'w', 'ParamState')
        """
        return self._rebuilt(self.value, {})

    def replace(self, value: Any = _NO_VALUE, **kwargs: Any) -> State[Any]:
        """A copy with some attributes replaced: `value`, `name` (or `_name`), `tag`.

        Given a `State` of the same type as `value`, returns that state (with
        `kwargs` applied to a copy of it, if any), as BrainState does.

        Raises:
            ValueError: `value` is a `State` of another type.
            TypeError: a keyword is none of the above.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> a = sj.State(jnp.zeros(2), name="a")
            >>> b = a.replace(jnp.ones(2), name="b")
            >>> b.value.tolist(), b.name, a.name
            ([1.0, 1.0], 'b', 'a')
        """
        if "_value" in kwargs:
            value = kwargs.pop("_value")
        if isinstance(value, State):
            if type(value) is not type(self):
                raise ValueError(
                    f"{type(self).__name__}.replace: cannot replace with a "
                    f"{type(value).__name__}; give a {type(self).__name__} or a plain value."
                )
            return value._rebuilt(value.value, kwargs) if kwargs else value
        return self._rebuilt(self.value if value is _NO_VALUE else value, kwargs)

    def _rebuilt(self, value: Any, changes: dict[str, Any]) -> Self:
        attrs: dict[str, Any] = {
            "name": self._name,
            "tag": set(self.tag) if self.tag is not None else None,
        }
        for key, new in changes.items():
            key = key.lstrip("_")
            if key not in attrs:
                raise TypeError(
                    f"{type(self).__name__}.replace: unknown attribute {key!r}; "
                    "give value, name or tag."
                )
            attrs[key] = new
        new_state = type(self).__new__(type(self))
        State.__init__(new_state, value, attrs["name"], tag=attrs["tag"])
        # Static slots of subclasses (a HiddenGroupState's names) come along.
        for cls in type(self).__mro__:
            if cls is State:
                break
            for slot in vars(cls).get("__slots__", ()):
                if hasattr(self, slot):
                    setattr(new_state, slot, getattr(self, slot))
        return new_state

    def copy_from(self, other: State[T]) -> None:
        """Take the value, name and tags of `other` (a state of exactly this type).

        The value is written as `self.value = other.value` (a recorded write).

        Raises:
            ValueError: `other` is of another type.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> a, b = sj.State(jnp.zeros(2)), sj.State(jnp.ones(2), name="b")
            >>> a.copy_from(b); a.value.tolist(), a.name
            ([1.0, 1.0], 'b')
        """
        if type(other) is not type(self):
            raise ValueError(
                f"{type(self).__name__}.copy_from: cannot copy from a {type(other).__name__}; "
                "both states must be of the same type."
            )
        if other is self:
            return
        self.value = other.value
        self._name = other._name
        self.tag = set(other.tag) if other.tag is not None else None

    def to_state_ref(self) -> TreefyState[T]:
        """The value and metadata as a `TreefyState`, a pytree (BrainState's state reference).

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> ref = sj.State(jnp.ones(2), name="w").to_state_ref()
            >>> ref.type.__name__, ref.name, ref.value.tolist()
            ('State', 'w', [1.0, 1.0])
        """
        return TreefyState(type(self), self.value, _name=self._name, tag=self.tag)

    def update_from_ref(self, state_ref: TreefyState[T]) -> None:
        """Take the value (a recorded write) and the name and tags of `state_ref`.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> s = sj.State(jnp.zeros(2))
            >>> s.update_from_ref(sj.TreefyState(sj.State, jnp.ones(2), _name="w"))
            >>> s.value.tolist(), s.name
            ([1.0, 1.0], 'w')
        """
        meta = state_ref.get_metadata()
        self.value = state_ref.value
        if "_name" in meta:
            self._name = meta["_name"]
        if "tag" in meta:
            self.tag = _tag_set(meta["tag"])

    def __repr__(self) -> str:
        name = f", name={self._name!r}" if self._name is not None else ""
        tag = f", tag={self.tag!r}" if self.tag is not None else ""
        return f"{type(self).__name__}(value={_describe(peek_value(self))}{name}{tag})"


def _tag_set(tag: str | Iterable[str] | None) -> set[str] | None:
    if tag is None:
        return None
    if isinstance(tag, str):
        return {tag}
    tags = set(tag)
    bad = [t for t in tags if not isinstance(t, str)]
    if bad:
        raise TypeError(f"a state's tags are strings; got {bad!r}")
    return tags


def _check_value(state: State[Any], new: Any) -> None:
    """The checks of a write `state.value = new` that do not depend on a trace."""
    if isinstance(new, State):
        raise ValueError(
            f"cannot store a State as the value of {describe_state(state)}; to copy its "
            "value write `state.value = other.value`, or use `state.copy_from(other)`."
        )
    if _TLS.tree_check and _TLS.tree_check[-1]:
        _check_same_tree(state, new)


def check_write(state: State[Any], new: Any) -> None:
    """Raise the error `state.value = new` would raise here, without writing anything.

    For writing several states together: check every write first, then make them,
    so that a refused one leaves every state as it was.

    Raises:
        ValueError: `new` is a `State`, or (under `check_state_value_tree()`) its
            tree structure differs from the state's.
        TraceError: `new` holds a tracer that would outlive its trace.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax._state import check_write
        >>> s = sj.State(jnp.zeros(2))
        >>> check_write(s, jnp.ones(2)); s.value.tolist()
        [0.0, 0.0]
        >>> check_write(s, s)
        Traceback (most recent call last):
        ...
        ValueError: cannot store a State as the value of State (float32[2]) ...
    """
    _check_value(state, new)
    stack = _TLS.stack
    if stack:
        stack[-1].check_write(state, new)
    else:
        storable_value(state, new)


def _check_same_tree(state: State[Any], new: Any) -> None:
    current = peek_value(state)
    if type(current) is _TraceLocal:
        return  # a leaked state may take any value (which revives it)
    old_tree: Any = jax.tree.structure(current)
    new_tree: Any = jax.tree.structure(new)
    if old_tree != new_tree:
        raise ValueError(
            f"the value written to {describe_state(state)} has tree structure {new_tree}, "
            f"but the state's is {old_tree}; write a value of the same structure."
        )


def _initial_value(state: State[Any], value: Any) -> Any:
    """`State._value` of a state born outside any statejax trace, holding `value`.

    Born inside a plain JAX transform (treefy_merge inside jax.grad, a module built
    inside jax.jit), it belongs to that transform's trace, whatever its first value:
    it may hold the trace's tracers, and it lives as long as that trace runs.
    """
    if is_tracing() and not _TLS.global_states:
        return _bind_to_trace(state, value)
    if _contains_tracer(value):
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
    if type(current) is _TraceLocal and current.usable():
        # A state of a running plain JAX trace stays one, whatever it is given.
        assert current.scope is not None
        return _bind_to_trace(state, new, current.scope())
    if not _contains_tracer(new):
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
    shape = _describe(peek_value(state))
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


# A State is a box, not an array: `x @ state` (a forgotten `.value`) must say so, not
# "unsupported operand type(s) for @: 'DynamicJaxprTracer' and 'ParamState'". BrainState's
# State defines no operator (each is Python's TypeError); StateOperandError is a TypeError.
# `==`/`!=` stay identity comparisons, which caches and selectors rely on. Set on the class
# rather than written out, so type checkers still flag the operation.
_OPERATORS = {
    "add": "+", "sub": "-", "mul": "*", "matmul": "@", "truediv": "/", "floordiv": "//",
    "mod": "%", "pow": "**", "lshift": "<<", "rshift": ">>",
    "and": "&", "xor": "^", "or": "|",
}  # fmt: skip


def _where_used() -> str:
    trace = current_trace()
    return f"{trace.name}: " if trace is not None else ""


def _refuse_operand(symbol: str, reflected: bool = False, unary: bool = False) -> Any:
    def refuse(self: State[Any], *other: Any) -> NoReturn:
        if unary:
            used = f"{symbol}(state)" if symbol.isalpha() else f"{symbol}state"
            fix = used.replace("state", "state.value")
        elif reflected:
            used = f"{type(other[0]).__name__} {symbol} state"
            fix = f"x {symbol} state.value"
        else:
            used = f"state {symbol} {type(other[0]).__name__}"
            fix = f"state.value {symbol} x"
        raise StateOperandError(
            f"{_where_used()}{describe_state(self)} is used as an array (`{used}`), but a "
            f"State is a box around its value: read `.value` (`{fix}`; to update the state, "
            "`state.value = ...`)."
        )

    return refuse


def _refuse_item(self: State[Any], index: Any) -> NoReturn:
    raise StateOperandError(
        f"{_where_used()}{describe_state(self)} is indexed (`state[{index!r}]`), but a State "
        "is a box around its value: index `.value` instead (`state.value[...]`)."
    )


for _op, _symbol in _OPERATORS.items():
    setattr(State, f"__{_op}__", _refuse_operand(_symbol))
    setattr(State, f"__r{_op}__", _refuse_operand(_symbol, reflected=True))
for _op, _symbol in {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}.items():
    setattr(State, f"__{_op}__", _refuse_operand(_symbol))
for _op, _symbol in {"neg": "-", "pos": "+", "abs": "abs", "invert": "~"}.items():
    setattr(State, f"__{_op}__", _refuse_operand(_symbol, unary=True))
setattr(State, "__getitem__", _refuse_item)  # noqa: B010 (hidden from type checkers)
# NumPy defers to the reflected operators above instead of making an object array.
setattr(State, "__array_ufunc__", None)  # noqa: B010
del _op, _symbol


class ShortTermState(State[T]):
    """State that lives for one step or episode (counters, caches)."""

    __slots__ = ()


class LongTermState(State[T]):
    """State kept across steps but not trained (running statistics)."""

    __slots__ = ()


class ParamState(LongTermState[T]):
    """A trainable parameter (a `LongTermState`, as in BrainState)."""

    __slots__ = ()


class BatchState(LongTermState[T]):
    """State that carries a batch dimension (a `LongTermState`, as in BrainState)."""

    __slots__ = ()


class DelayState(ShortTermState[T]):
    """The buffer of a delay line (a `ShortTermState`, as in BrainState).

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> isinstance(sj.DelayState(jnp.zeros((4, 2))), sj.ShortTermState)
        True
    """

    __slots__ = ()


class HiddenState(ShortTermState[T]):
    """The hidden variable of a dynamical system (membrane potential, RNN carry).

    Its value is one array (a NumPy or JAX array, or an array-like with a `shape`
    and `dtype`, such as a `brainunit.Quantity`), never a list or dict: `varshape`
    is its shape and `num_state` is 1.

    Raises:
        TypeError: the value is not an array; the message names its type.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> h = sj.HiddenState(jnp.zeros((3, 4)))
        >>> h.varshape, h.num_state
        ((3, 4), 1)
    """

    __slots__ = ()

    def __init__(
        self, value: T, name: str | None = None, *, tag: str | Iterable[str] | None = None
    ) -> None:
        if isinstance(value, State):
            value = value.value
        _check_array(type(self).__name__, value)
        super().__init__(value, name, tag=tag)

    @property
    def varshape(self) -> tuple[int, ...]:
        """The shape of the hidden variable."""
        return tuple(peek_array(self).shape)

    @property
    def num_state(self) -> int:
        """How many hidden variables the state holds: 1."""
        return 1


def _check_array(kind: str, value: object) -> None:
    if isinstance(value, (np.ndarray, jax.Array)) or (
        hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, State)
    ):
        return
    raise TypeError(
        f"{kind} holds one array (a NumPy or JAX array, or an array-like with shape and "
        f"dtype), got a {type(value).__name__}; keep several hidden variables in several "
        "states, or in a HiddenGroupState."
    )


def peek_array(state: State[Any]) -> Any:
    """The value of `state` here (a tracer inside a trace), without recording a read."""
    value = peek_value(state)
    if type(value) is _TraceLocal:
        value = value.resolve(state)
    return value


register_by_reference(State)


class TreefyState(Generic[T]):
    """A state's type, value and metadata as a pytree: BrainState's state reference.

    The value is the pytree's only child (so `jax.tree.map` maps over it); the type
    and metadata (`_name`, `tag`, ...) are static. `to_state()` builds a new state.

    Args:
        type: the `State` class this describes.
        value: the value.
        **metadata: the state's metadata, such as `_name="w"` and `tag={"enc"}`.

    Examples:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> ref = sj.TreefyState(sj.ParamState, jnp.ones(2), _name="w")
        >>> doubled = jax.tree.map(lambda x: x * 2, ref)
        >>> doubled.value.tolist(), doubled.name
        ([2.0, 2.0], 'w')
        >>> state = doubled.to_state(); type(state).__name__, state.name
        ('ParamState', 'w')
    """

    __slots__ = ("_metadata", "type", "value")

    def __init__(self, type: type[State[Any]], value: T, **metadata: Any) -> None:
        self.type = type
        self.value = value
        self._metadata = metadata

    @property
    def name(self) -> str | None:
        """The state's name (metadata `_name`), or `None`."""
        name: str | None = self._metadata.get("_name")
        return name

    @name.setter
    def name(self, name: str | None) -> None:
        self._metadata["_name"] = name

    def get_metadata(self) -> dict[str, Any]:
        """The metadata (everything but `type` and `value`), as a new dict."""
        return dict(self._metadata)

    def replace(self, value: Any) -> TreefyState[Any]:
        """The same reference holding `value`."""
        return TreefyState(self.type, value, **self._metadata)

    def copy(self) -> TreefyState[T]:
        """A shallow copy (the same value object, a new metadata dict)."""
        return TreefyState(self.type, self.value, **self._metadata)

    def to_state(self) -> State[T]:
        """A new `State` of `type` holding `value`, with the name and tags."""
        state = self.type.__new__(self.type)
        State.__init__(
            state,
            self.value,
            self._metadata.get("_name"),
            tag=self._metadata.get("tag"),
            sharding=self._metadata.get("sharding"),
        )
        return state

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is TreefyState
            and other.type is self.type
            and other._metadata == self._metadata
            and _tree_equal(other.value, self.value)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        meta = "".join(f", {k}={v!r}" for k, v in self._metadata.items())
        return f"TreefyState(type={self.type.__name__}, value={_describe(self.value)}{meta})"


def _tree_equal(a: Any, b: Any) -> bool:
    tree_a: Any = jax.tree.structure(a)
    if tree_a != jax.tree.structure(b):
        return False
    try:
        return all(
            x is y or bool(np.array_equal(np.asarray(x), np.asarray(y)))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        )
    except Exception:  # tracers: compare by identity only
        return False


def _flatten_ref(ref: TreefyState[Any]) -> tuple[tuple[Any], tuple[Any, tuple[Any, ...]]]:
    meta = tuple((k, frozenset(v) if isinstance(v, set) else v) for k, v in ref._metadata.items())
    return (ref.value,), (ref.type, meta)


def _unflatten_ref(aux: tuple[Any, tuple[Any, ...]], children: Iterable[Any]) -> TreefyState[Any]:
    cls, meta = aux
    (value,) = children
    return TreefyState(
        cls, value, **{k: set(v) if isinstance(v, frozenset) else v for k, v in meta}
    )


jax.tree_util.register_pytree_node(TreefyState, _flatten_ref, _unflatten_ref)


_MISSING: Any = object()


def peek_value(state: State[Any]) -> Any:
    """The value `state` has for this thread right now, without recording a read.

    Inside a trace that is the trace's value (a tracer, say); outside, the stored one.
    """
    key = id(state)
    for trace in reversed(_TLS.stack):
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
        return value if value is not _MISSING else peek_value(state)

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
        _TLS.stack.append(self)
        return self

    # A transform's trace ends even if its function left a trace open inside it (a
    # `StateTraceStack` entered and never exited): the open ones end with it. A user's
    # `StateTraceStack` (False) refuses to end out of order and changes nothing.
    _ends_inner_traces = True

    def __exit__(self, exc_type: object = None, *exc: object) -> None:
        stack = _TLS.stack
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
        >>> with StateTrace("demo"):
        ...     with outside_traces():
        ...         s = State(jnp.zeros(2))
        >>> is_leaked(s)
        False
    """
    saved, _TLS.stack = _TLS.stack, []
    saved_global, _TLS.global_states = _TLS.global_states, True
    try:
        yield
    finally:
        _TLS.stack = saved
        _TLS.global_states = saved_global


def lives_in_trace(state: State[Any]) -> bool:
    """Whether `state` was created inside a plain JAX transform that is running here."""
    value = state._value
    return type(value) is _TraceLocal and value.usable()


def is_leaked(state: State[Any]) -> bool:
    """Whether `state` was created inside a transform that has finished."""
    value = state._value
    return type(value) is _TraceLocal and not value.usable()


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
    state._value = _initial_value(state, value)
