"""The split / pure core / merge recipe shared by every transform.

A transform plugin wraps a user function in a `StatefulFunction` and supplies one
thing: `lift(split, pure)`, which hands the pure core to a JAX transform. The
engine does the rest:

1. **split**: the `Split` lists the states the function reads (only) and the
   states it writes. It starts as the plugin's seed (often empty) and is
   *verified* by every trace: a trace that touches a state outside the split
   notes the missing states on its pure core (`PureCore.noted`), and the engine
   retries with the union. Before a call runs for real, an abstract trace
   (`TraceMode.DISCOVER`, under `jax.eval_shape`) completes the split; a real
   trace that still meets a new state (`TraceMode.RUN`) is aborted with
   `StateSetChanged`, so nothing runs on a stale split. So discovery costs one
   extra trace on the first call and nothing afterwards; for `jax.jit` lifts not
   even that: the discovery trace is recorded and replayed (`_recording`).
2. **pure core**: `PureCore` `(read_vals, write_vals, *args, **kwargs) ->
   (out, new_write_vals)` runs the user function inside a `StateTrace` that
   gives the states the given values (tracers, under a JAX transform). Those
   values live in the trace, never in the shared `State` objects.
3. **merge**: the new values of the written states are stored back, all of one
   call together, only after the lifted function returned.

If anything raises, no state changes. Splits are cached per identity of the
modules and states passed (positionally or by keyword), weakly: a cache entry
dies with the objects it is keyed by and keeps none of them alive.

This module holds `StatefulFunction` (the cache and the retry loop); `Split` and the
merge are in `_split`, `PureCore` and the trace modes in `_pure`, and jit's recorded
first trace in `_recording`.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Generic, ParamSpec, TypeVar

import jax
import numpy as np

from statejax._errors import PluginError
from statejax._jax_compat import (
    DISABLE_JIT as _DISABLE_JIT,
)
from statejax._jax_compat import (
    api_boundary,
    is_top_level,
    jit_disabled,
)
from statejax._settings import GENERATION, changed
from statejax._state import State
from statejax._tracing import (
    CALL_REFS,
    THIS_THREAD,
    StateTrace,
    release_call_refs,
)
from statejax.graph import Module
from statejax.registry._pure import (
    Lift,
    MissingStates,
    PureCore,
    StateSetChanged,
    TraceMode,
    check_traceable,
)
from statejax.registry._recording import Recording
from statejax.registry._split import MERGE_LOCK, Split, all_concrete, short_repr

__all__ = ["CALLS_PURE_AS_IS", "StatefulFunction", "calls_pure_as_is"]

P = ParamSpec("P")
R = TypeVar("R")


class _Version:
    """One split of an entry with its pure core and lifted function.

    Only `verified` changes, once, from False to True: an abstract trace found
    that the split holds every state the function touches.
    """

    __slots__ = (
        "_verified",
        "env_reads",
        "env_seen",
        "fast",
        "jitted",
        "pure",
        "read_states",
        "signatures",
        "split",
        "transformed",
        "write_states",
    )

    def __init__(
        self, split: Split, pure: PureCore, transformed: Callable[..., Any], verified: bool
    ) -> None:
        self.split = split
        # The split's lists, one attribute away for the cached call path.
        self.read_states = split.read_states
        self.write_states = split.write_states
        self.pure = pure
        self.transformed = transformed
        self._verified = verified
        # The environ settings its traces read (the pure core's dict, shared), and the
        # environ generation at which they were last found unchanged.
        self.env_reads = pure.env_reads
        self.env_seen = GENERATION.value
        # A `jax.jit` function: called at the top level (jit not disabled), it returns
        # concrete arrays only (JAX refuses a tracer kept from another trace), so the
        # merge checks only the number of values.
        self.jitted = isinstance(transformed, _jit_function_type())
        # The signatures of the eager calls this split was verified for.
        self.signatures: set[Hashable] = set()
        # Whether a call may take the inlined cached path: a verified `jax.jit` core
        # (which returns concrete arrays at the top level, jit not disabled).
        self.fast = verified and self.jitted

    @property
    def verified(self) -> bool:
        return self._verified

    @verified.setter
    def verified(self, value: bool) -> None:
        self._verified = value
        self.fast = value and self.jitted


class _Entry:
    """The cache entry of one tuple of modules/states: the current `_Version`.

    A call reads `version` once and uses only that, so a thread that grows the
    split (installing a new version) never gives another thread a split that does
    not match its lifted function. `refs` are the weak references (with
    callbacks that drop the entry) to the objects the entry is keyed by.
    """

    __slots__ = ("__weakref__", "owner", "refs", "version")

    def __init__(self) -> None:
        self.version: _Version | None = None
        self.refs: list[weakref.ref[Any]] = []
        # Names this entry to its pure cores and their StateSetChanged signals. A token,
        # not the entry itself, so that the entry is freed by reference counting (no
        # cycle through its pure cores) as soon as a module it is keyed by dies.
        self.owner = object()

    @property
    def split(self) -> Split:
        assert self.version is not None
        return self.version.split

    @property
    def pure(self) -> PureCore:
        assert self.version is not None
        return self.version.pure


class StatefulFunction(Generic[R]):
    """A user function wrapped with the split/merge recipe around a plugin's `lift`.

    Calling it gathers the split's values, calls the lifted pure core, merges the
    written values and returns the result. Splits are cached per identity of the
    modules and states passed as arguments, positionally or by keyword (so a
    jitted method keeps one split per instance); an entry dies with those
    objects and keeps none of them alive.

    `staged=True` says that the lifted function traces the whole pure core
    before running any of it (as `jax.jit` and `lax.scan` do). Otherwise
    (`jax.grad`, `jax.vmap` run as they trace) an eager call first checks the
    split with an abstract trace, so the function runs for real once per call
    even when a call touches a state no earlier call did.

    `eager(*args, **kwargs)`, if given, is called instead under `jax.disable_jit()` (as
    `jit` runs the function eagerly there).

    `static_key(args, kwargs)` gives the hashable values of the arguments the
    lifted function treats as compile-time constants (jit's static arguments): each
    gets its own cache entry, so a variant stores back only the states it writes,
    not those of every variant (which a concurrent call of another variant could
    be writing).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.extend import StatefulFunction
        >>> count = sj.State(jnp.array(0))
        >>> def step(x):
        ...     count.value += 1
        ...     return x * 2
        >>> lift = lambda split, pure: jax.jit(pure)      # a state-aware jit in one line
        >>> f = StatefulFunction(step, "my_jit", lift, staged=True)
        >>> int(f(jnp.array(3))), int(count.value)
        (6, 1)
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        lift: Lift,
        seed: Split | None = None,
        *,
        staged: bool = False,
        static_key: Callable[[tuple[Any, ...], dict[str, Any]], Hashable] | None = None,
        eager: Callable[..., Any] | None = None,
    ) -> None:
        self.fn = fn
        self.eager = eager
        self.name = name
        self.lift = lift
        self.seed = seed if seed is not None else Split()
        self.staged = staged
        self.static_key = static_key
        # Entries keyed by modules only (or by nothing) are held here. An entry keyed by
        # a State is held by that state instead (its split refers to the state, so a
        # strong reference from here would keep the state alive for ever), and only
        # referenced weakly here.
        self._entries: dict[tuple[Hashable, ...], _Entry] = {}
        self._state_keyed: dict[tuple[Hashable, ...], weakref.ref[_Entry]] = {}
        # The entry of calls that pass no module or state (key `()`), one attribute away.
        self._bare: _Entry | None = None
        self._lock = threading.Lock()

    def split_for(self, *args: Any, **kwargs: Any) -> Split:
        """The current split for a call with these arguments."""
        entry = self._find(self._key(args, kwargs))
        return entry.split if entry is not None else self.seed

    def clear_cache(self) -> None:
        """Forget every split and lifted function; the next call discovers again."""
        with self._lock:
            self._bare = None
            self._entries.clear()
            for ref in list(self._state_keyed.values()):
                entry = ref()
                if entry is not None:
                    _release_from_states(entry)
            self._state_keyed.clear()

    def _key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Hashable, ...]:
        """The cache key of a call: the identities of the modules and states passed, then
        (as one nested tuple) the static values."""
        key = [id(a) for a in args if isinstance(a, _BY_REFERENCE)]
        if kwargs:
            key += [id(v) for v in kwargs.values() if isinstance(v, _BY_REFERENCE)]
        if self.static_key is None:
            return tuple(key)
        return (*key, self.static_key(args, kwargs))

    def _find(self, key: tuple[Hashable, ...]) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            ref = self._state_keyed.get(key)
            entry = ref() if ref is not None else None
        return entry

    def as_function(self, like: Callable[P, Any]) -> Callable[P, R]:
        """A plain function that calls this one, with `like`'s name, docs and signature.

        Being a function, it binds as a method when stored on a class, so a
        decorated method works. It carries `clear_cache()` and `stateful`
        (this object).
        """
        # A JAX API boundary (one function, calling this object): errors leave without
        # statejax's frames in their traceback, as they leave a JAX transform.
        wrapper: Callable[P, R] = functools.wraps(like)(api_boundary(self.__call__))
        wrapper.clear_cache = self.clear_cache  # type: ignore[attr-defined]
        wrapper.stateful = self  # type: ignore[attr-defined]
        return wrapper

    def __call__(self, /, *args: Any, **kwargs: Any) -> R:
        # `self` positional-only: a jitted method may be called as `Cls.method(self=m)`.
        if self.eager is not None and _DISABLE_JIT.value:
            eager: R = self.eager(*args, **kwargs)
            return eager
        # Count call depth here, not through helper calls: this is the cached call path.
        # Even a call passing no module counts: a state's value may hold one, which
        # `jax.jit` flattens by reference when it retraces.
        calls = CALL_REFS
        depth = calls.depth
        calls.depth = depth + 1
        try:
            entry = self._bare
            if entry is None or kwargs or (args and not all_concrete(args)):
                # Not a call passing only arrays and numbers, once one was made (those
                # share the entry `_bare`, with no key to make).
                if args or kwargs or self.static_key:
                    key = self._key(args, kwargs)
                    entry = self._entries.get(key)
                    if entry is None:
                        entry = self._find(key) or self._new_entry(key, args, kwargs)
                    if not key:
                        self._bare = entry
                else:
                    entry = self._bare_entry()
            version = entry.version
            assert version is not None
            if version.env_reads and version.env_seen != GENERATION.value:
                version = self._refresh(entry, version)
            top_level = is_top_level()
            if version.fast and top_level and not THIS_THREAD.stack:
                # The cached call of a verified `jax.jit` core at the top level, inlined:
                # gather under the merge lock, call the compiled core, merge under it.
                states = version.write_states
                _lock()  # (acquire/release: cheaper than `with` on this path)
                try:
                    read_vals = [s._value for s in version.read_states]
                    write_vals = [s._value for s in states]
                finally:
                    _unlock()
                try:
                    returned = version.transformed(read_vals, write_vals, *args, **kwargs)
                except (StateSetChanged, TypeError) as exc:  # a retrace met something new
                    fast: R = self._settle_failed(exc, entry, version, args, kwargs, top_level)
                    return fast
                if type(returned) is tuple and len(returned) == 2:
                    result, new_vals = returned
                    if type(new_vals) is list and len(new_vals) == len(states):
                        _lock()
                        try:
                            for state, value in zip(states, new_vals):  # noqa: B905 (checked)
                                state._value = value
                        finally:
                            _unlock()
                        return result  # type: ignore[no-any-return]
                else:
                    self._refuse_result(returned)
                    result, new_vals = returned
                version.split.scatter(new_vals, top_level, name=self.name, concrete=True)
                return result  # type: ignore[no-any-return]
            if version.verified and (self.staged or not top_level):
                mode = TraceMode.RUN  # the cached call path: no abstract trace first
            else:
                mode = self._mode(version, args, kwargs)
            result_: R = self._settle(entry, version, mode, args, kwargs, top_level)
            return result_
        finally:
            calls.depth = depth
            if not depth and calls.made:
                release_call_refs()

    def _bare_entry(self) -> _Entry:
        """The entry of calls that pass no module or state, made on the first."""
        entry = self._find(()) or self._new_entry((), (), {})
        self._bare = entry
        return entry

    def _settle_failed(
        self,
        exc: Exception,
        entry: _Entry,
        version: _Version,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        top_level: bool,
    ) -> Any:
        """The inlined cached call raised: handle it as `_settle` handles its own call."""
        if isinstance(exc, StateSetChanged):
            if exc.owner is not entry.owner or not version.pure.noted:
                raise exc
            return self._settle(
                entry, version, TraceMode.RUN, args, kwargs, top_level, aborted=True
            )
        split = version.split
        with MERGE_LOCK:
            values = [s._value for s in split.states]
        check_traceable(split.states, values, self.name)
        raise exc

    def _refuse_result(self, returned: object) -> None:
        """A lifted function returned no `(result, new_write_values)` pair: name the lift.

        A list of two is accepted as the pair (returns normally)."""
        if isinstance(returned, list) and len(returned) == 2:
            return
        lift = self.lift
        where = f"{getattr(lift, '__module__', '?')}.{getattr(lift, '__qualname__', lift)}"
        raise PluginError(
            f"{self.name}: the function made by its lift ({where}) returned "
            f"{type(returned).__name__} {short_repr(returned)}, not a pair (result, "
            "new_write_values). A lift's function returns what the pure core returns: the "
            "result, and a list with the new value of each state in split.write_states. "
            "No state was changed."
        )

    def ahead_of_time(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """`method` of the lifted function, on the state values, for a call with these
        arguments: for ahead-of-time inspection, such as jit's `.lower(...)`, which is
        `jax.jit`'s `lower` of the verified split's lifted function.

        Nothing runs and no state changes (the split is found by abstract traces, as on a
        first call). It counts as one statejax call: the trees its traces make hold the
        modules they meet weakly once it returns, as a call's do.
        """
        calls = CALL_REFS
        calls.depth += 1
        try:
            key = self._key(args, kwargs)
            entry = self._find(key) or self._new_entry(key, args, kwargs)
            version = entry.version
            assert version is not None
            if version.env_reads and version.env_seen != GENERATION.value:
                version = self._refresh(entry, version)
            if not version.verified or version.pure.noted:
                version = self._discover(entry, version, args, kwargs)
            read_vals, write_vals = version.split.gather()
            return getattr(version.transformed, method)(read_vals, write_vals, *args, **kwargs)
        finally:
            calls.depth -= 1
            if not calls.depth and calls.made:
                release_call_refs()

    def _version(self, entry: _Entry, split: Split, verified: bool) -> _Version:
        pure = PureCore(self.fn, split, self.name, entry.owner)
        return _Version(split, pure, self.lift(split, pure), verified)

    def _new_entry(
        self, key: tuple[Hashable, ...], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _Entry:
        with self._lock:
            entry = self._find(key)
            if entry is not None:  # another thread made it meanwhile
                return entry
            entry = _Entry()
            entry.version = self._version(entry, self.seed, verified=False)
            forget = functools.partial(_forget_entry, weakref.ref(self), key, weakref.ref(entry))
            keyed = _by_reference(args, kwargs)
            entry.refs = [weakref.ref(obj, forget) for obj in keyed]
            states = [obj for obj in keyed if isinstance(obj, State)]
            if not states:
                self._entries[key] = entry
                return entry
            for state in states:
                held = getattr(state, "_cache_entries", None)
                if held is None:
                    held = state._cache_entries = []
                held.append(entry)
            self._state_keyed[key] = weakref.ref(entry)
            return entry

    def _refresh(self, entry: _Entry, version: _Version) -> _Version:
        """A version whose traces saw the environ settings as they are now.

        `version`'s traces read settings, and some setting changed since they were last
        checked: if one they read differs now, install a fresh version of the same split
        (a new lifted function, so JAX traces again); otherwise keep `version`.
        """
        generation = GENERATION.value  # read first: a change after it is seen next call
        if not changed(version.env_reads):
            version.env_seen = generation
            return version
        with self._lock:
            current = entry.version
            assert current is not None
            if current is version:
                entry.version = current = self._version(entry, version.split, version.verified)
            return current

    def _grow(
        self,
        entry: _Entry,
        missing: Sequence[MissingStates],
        verified: bool,
        replay: Recording | None = None,
    ) -> _Version:
        """Install the split grown by the missing states (unless another thread already did).

        `replay`: the discovery trace that found them, for the new split's first trace.
        """
        reads = [s for found in missing for s in found.reads]
        writes = [s for found in missing for s in found.writes]
        with self._lock:
            current = entry.version
            assert current is not None
            split = current.split.union(reads, writes)
            if not split.same_as(current.split):
                entry.version = current = self._version(entry, split, verified)
                if replay is not None:
                    current.pure.replay = replay
                    current.pure.env_reads.update(replay.env_reads)
            return current

    def _mode(self, version: _Version, args: tuple[Any, ...], kwargs: dict[str, Any]) -> TraceMode:
        """Whether a call must first check its split with an abstract trace (DISCOVER).

        A staged lift needs this once per split: it traces everything before running
        anything, so a retrace meeting a new state costs nothing to abort. Under
        `jax.disable_jit` it runs eagerly, and an abstract trace would refuse what the
        user disabled jit for (`float(x)`, Python branches on values): skip it.

        An eager call of a lift that is not staged (grad, vmap) runs the function as it
        traces, so its split is checked for every new signature of the call (the
        structure, shapes and dtypes of the arguments and state values, and the
        values of other arguments), as `jax.jit` retraces for a new signature.
        """
        if self.staged:
            return TraceMode.RUN if jit_disabled() else TraceMode.DISCOVER
        if version.verified:
            signature = _call_signature(version.split, args, kwargs)
            if signature is not None and signature in version.signatures:
                return TraceMode.RUN
        return TraceMode.DISCOVER

    def _settle(
        self,
        entry: _Entry,
        version: _Version,
        mode: TraceMode,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        top_level: bool,
        run: bool = True,
        aborted: bool = False,
    ) -> Any:
        """The one retry loop: trace `version` in `mode` until its split is complete.

        Each trace that finds states missing notes them on the pure core
        (`PureCore.noted`, the one signal), and the loop installs the grown split:
        after an abstract DISCOVER trace the grown split is checked by another one;
        after an aborted RUN trace the retry, itself a real trace, checks it. A split
        noted stale by another thread (whose lenient trace JAX may have handed this
        thread from its cache) is never run. With `run`, returns the call's result,
        having merged its writes; without, the verified version (nothing runs).
        """
        while True:
            if version.pure.noted:
                version = self._grow(entry, version.pure.noted, verified=aborted)
                mode = TraceMode.RUN if aborted else TraceMode.DISCOVER
                aborted = False
                continue
            if mode is TraceMode.DISCOVER:
                recording = self._trace_abstractly(version, args, kwargs)
                noted = version.pure.noted
                if noted:
                    if recording is None or len(noted) != 1 or noted[0] is not recording.missing:
                        continue
                    # One recorded trace found the missing states, each given an input: the
                    # grown split is complete, and its first trace replays that one.
                    version = self._grow(entry, noted, verified=True, replay=recording)
                    if not version.verified:  # another thread's split: check it
                        continue
                else:
                    version.verified = True
                    if not self.staged and run:
                        _remember_signature(version, args, kwargs)
                mode = TraceMode.RUN
            if not run:
                return version
            split = version.split
            read_vals, write_vals = split.gather(top_level)
            try:
                returned = version.transformed(read_vals, write_vals, *args, **kwargs)
            except StateSetChanged as abort:
                if abort.owner is not entry.owner or not version.pure.noted:
                    raise  # another function's trace: its own loop retries it
                aborted = True
                continue
            except TypeError:
                # JAX rejects a state value it cannot trace; say which state it was.
                check_traceable(split.states, read_vals + write_vals, self.name)
                raise
            if type(returned) is not tuple or len(returned) != 2:
                self._refuse_result(returned)
            result, new_write_vals = returned
            concrete = version.jitted and top_level and not jit_disabled()
            split.scatter(new_write_vals, top_level, name=self.name, concrete=concrete)
            return result

    def _discover(
        self, entry: _Entry, version: _Version, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _Version:
        """Complete and verify the split with abstract traces; the verified version."""
        found: _Version = self._settle(
            entry, version, TraceMode.DISCOVER, args, kwargs, top_level=True, run=False
        )
        return found

    def _trace_abstractly(
        self, version: _Version, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Recording | None:
        """One DISCOVER trace of the lifted function; missing states end up in `noted`.

        The lifted function runs under `jax.eval_shape`, which computes nothing and
        runs no side effect, while the pure core notes the states missing from the
        split instead of aborting. So an eager grad or vmap then runs the function
        for real once per call, and no JAX trace is abandoned by an exception
        (JAX keeps an aborted trace, and the values it closed over, alive).

        A `jax.jit` lift that calls the pure core as it is is traced by its own `trace`
        method instead, recorded (see `_recording`): returns the recording when the
        trace found missing states and it can be replayed for the grown split.
        """
        split = version.split
        pure = version.pure
        read_vals, write_vals = split.gather()
        transformed: Any = version.transformed
        recording = Recording() if calls_pure_as_is(transformed, pure) else None

        def run(read: list[Any], write: list[Any]) -> None:
            transformed(read, write, *args, **kwargs)

        def run_closed() -> None:
            transformed(read_vals, write_vals, *args, **kwargs)

        traced: Any = None
        try:
            # The trace around it keeps anything the lifted function stores in a
            # state while tracing (a created state it hands out, say): nothing leaks.
            with pure.traced_as(TraceMode.DISCOVER), pure.recorded_by(recording):
                with StateTrace(f"{self.name} (discovery)"):
                    if recording is not None:
                        # `jax.jit`'s own trace, which runs nothing: with no state
                        # missing, JAX keeps it for the call (one trace in all).
                        traced = transformed.trace(read_vals, write_vals, *args, **kwargs)
                    elif self.staged:
                        jax.eval_shape(run, read_vals, write_vals)
                    else:
                        # An eager lift (grad, vmap) hands the state values to its JAX
                        # transform, which traces only those it transforms: a state vmap
                        # broadcasts, or grad does not differentiate, stays concrete there,
                        # as a value jax.vmap closes over does. Discovery closes over them
                        # too, so a Python branch on such a value runs in both.
                        jax.eval_shape(run_closed)
        except Exception as exc:
            if not pure.noted:  # a real error, not an artefact of a missing state
                if isinstance(exc, TypeError):
                    check_traceable(split.states, read_vals + write_vals, self.name)
                raise
            return None  # the grown split is traced anew: its errors name its states
        if recording is None or not pure.noted:
            return None
        states = [*split.states, *recording.written, *(s for s, _ in recording.extra_inputs)]
        return recording if recording.seal(traced.jaxpr, states, pure.env_reads) else None


#: The attribute naming the pure core a wrapper calls with its own arguments, returning
#: what it returns: `jax.jit` of such a wrapper (or of the pure core itself) compiles the
#: pure core as it is, and its discovery trace can be replayed (see `_recording`).
CALLS_PURE_AS_IS = "__statejax_calls_pure_as_is__"


def calls_pure_as_is(transformed: Callable[..., Any], pure: PureCore) -> bool:
    """Whether `transformed` is `jax.jit` (or a wrapper with its `trace`, as jit's
    donating one) of the pure core, or of a wrapper of it marked with `CALLS_PURE_AS_IS`."""
    if not callable(getattr(transformed, "trace", None)):
        return False
    fn = getattr(transformed, "__wrapped__", None)
    return fn is pure or getattr(fn, CALLS_PURE_AS_IS, None) is pure


_MAX_SIGNATURES = 256


@functools.cache
def _jit_function_type() -> type:
    """The type of the functions `jax.jit` returns (made without running anything)."""
    return type(jax.jit(_identity))


def _identity(x: Any) -> Any:
    return x


def _call_signature(split: Split, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
    """What decides which states an eager call touches, as far as the call shows it.

    The tree of the arguments and state values, the type of each array, the value of
    each flag (a bool, None, a string) and the type of anything else: like `jax.jit`,
    a new number does not count, so a learning rate that changes every call does not
    cost an abstract trace every call. `None` when the tree cannot be hashed.
    """
    read_vals, write_vals = split.gather()
    leaves, treedef = jax.tree.flatten((read_vals, write_vals, args, kwargs))
    signature: list[Any] = [treedef]
    for leaf in leaves:
        if isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
            signature.append(jax.typeof(leaf))
        elif leaf is None or isinstance(leaf, (bool, str)):
            signature.append((type(leaf), leaf))
        else:
            signature.append(type(leaf))
    key = tuple(signature)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _remember_signature(version: _Version, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Record that `version` is verified for eager calls of this signature."""
    signature = _call_signature(version.split, args, kwargs)
    if signature is not None:
        if len(version.signatures) >= _MAX_SIGNATURES:
            version.signatures.clear()
        version.signatures.add(signature)


def _forget_entry(
    owner: weakref.ref[StatefulFunction[Any]],
    key: tuple[Hashable, ...],
    entry_ref: weakref.ref[_Entry],
    _: object,
) -> None:
    """Weak-reference callback: an object an entry is keyed by died; drop the entry.

    It runs wherever the garbage collector runs, so it takes no lock; dict pops and
    list removals are atomic.
    """
    stateful = owner()
    if stateful is not None:
        stateful._entries.pop(key, None)
        stateful._state_keyed.pop(key, None)
    entry = entry_ref()
    if entry is not None:
        _release_from_states(entry)


def _release_from_states(entry: _Entry) -> None:
    """Stop the live states an entry is keyed by from holding it."""
    for ref in entry.refs:
        held = getattr(ref(), "_cache_entries", None)
        if held is not None:
            held[:] = [e for e in held if e is not entry]


_BY_REFERENCE = (Module, State)


def _by_reference(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[object]:
    found: list[object] = [a for a in args if isinstance(a, _BY_REFERENCE)]
    if kwargs:
        found += [v for v in kwargs.values() if isinstance(v, _BY_REFERENCE)]
    return found


_lock, _unlock = MERGE_LOCK.acquire, MERGE_LOCK.release
