"""`StatefulFunction`: a function's jaxpr and the states it uses, as BrainState offers them.

Not a plugin: it registers no transform; `statejax.transform.StatefulFunction` is a class
the transforms `abstract` and `find_state` build on.

Built on the engine (`statejax.extend.StatefulFunction`): the engine finds the
states (split and discovery, cached per identity of the modules passed and per
static argument values), and this class traces the engine's pure core once per
signature of the call (shapes and dtypes of the arguments and of the state values)
into a `ClosedJaxpr`. The compilations live in the engine's cache entry, so they die
with the modules they were made for.

The jaxpr takes, in `jax.tree.leaves` order, the dynamic positional arguments, the
dynamic keyword arguments, then one value per state of `get_states()`; it returns
the function's output, then the states' values afterwards (with
`return_only_write=True`, only the written ones: a read-only state's slot is `None`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Annotated, Any, NamedTuple

import jax
import pydantic

from statejax._jax_compat import eval_closed_jaxpr, shaped_abstractify
from statejax._transforms._common import (
    AS_TUPLE,
    AxisName,
    Index,
    jit_disabled,
    name_of,
    run_eagerly,
)
from statejax.extend import (
    PureCore,
    Split,
    State,
    StateTrace,
    TransformSpec,
    parse_spec,
)
from statejax.extend import StatefulFunction as _Engine
from statejax.graph import Module

__all__ = ["CacheKey", "StatefulFunction", "StatefulFunctionSpec"]

# A version keeps at most this many compilations (one per call signature); then it starts over.
_MAX_COMPILED = 64


class StatefulFunctionSpec(TransformSpec):
    """Options of `StatefulFunction` (and of `make_jaxpr`, which adds `return_shape`)."""

    static_argnums: Annotated[tuple[Index, ...], AS_TUPLE] = pydantic.Field(
        default=(), description="positions of arguments that are compile-time constants"
    )
    static_argnames: Annotated[tuple[str, ...], AS_TUPLE] = pydantic.Field(
        default=(), description="names of keyword arguments that are compile-time constants"
    )
    axis_env: tuple[tuple[AxisName, Index], ...] | None = pydantic.Field(
        default=None, description="(axis name, size) pairs, as jax.make_jaxpr's axis_env"
    )
    return_only_write: bool = pydantic.Field(
        default=True, description="the jaxpr returns only the written states' new values"
    )

    _pairs = pydantic.field_validator("axis_env", mode="before")(
        lambda cls, v: tuple(tuple(p) for p in v) if isinstance(v, (list, tuple)) else v
    )


class CacheKey(NamedTuple):
    """The key of one compilation: the static values and the abstract dynamic arguments.

    A module or state passed as a static argument appears as `("id", id(obj))`, so a
    key keeps nothing alive.
    """

    static_args: tuple[Any, ...]
    dyn_args: tuple[Any, ...]
    static_kwargs: tuple[Any, ...]
    dyn_kwargs: tuple[Any, ...]


class _Compiled:
    """One trace: the jaxpr, the output shapes and the states, in the jaxpr's order."""

    __slots__ = ("__weakref__", "in_tree", "jaxpr", "out_shapes", "out_tree", "split")

    def __init__(
        self, jaxpr: Any, out_shapes: Any, in_tree: Any, out_tree: Any, split: Split
    ) -> None:
        self.jaxpr = jaxpr
        self.out_shapes = out_shapes
        self.in_tree = in_tree
        self.out_tree = out_tree
        self.split = split


class _Abstract(threading.local):
    """Per thread: the public functions (by id) whose call only compiles, not runs."""

    def __init__(self) -> None:
        self.active: set[int] = set()


_ABSTRACT = _Abstract()


def _marker(value: Any) -> Any:
    """How a static value enters a key: a module or state by identity, else itself."""
    return ("id", id(value)) if isinstance(value, (Module, State)) else value


def _refuse_states(where: str, tree: Any) -> None:
    for leaf in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, State)):
        if isinstance(leaf, State):
            raise ValueError(
                f"{where} of a statejax transform cannot be an instance of State (got "
                f"{leaf!r}). Read or write the state inside the function instead; statejax "
                "threads it."
            )


def _aval(leaf: Any) -> Any:
    """The abstract value (shape, dtype, weak type) of an array, number or `ShapeDtypeStruct`."""
    return shaped_abstractify(leaf)


def _has_tracer(tree: Any) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


class StatefulFunction:
    """Wrap a function to get its jaxpr and the states it reads and writes.

    `make_jaxpr(*args, **kwargs)` traces `fun` once per cache key (the static
    argument values and the shapes and dtypes of the others) and per shape of the
    states' values; `get_jaxpr`, `get_states`, `get_read_states`,
    `get_write_states` and `get_out_shapes` compile on a miss. No state changes
    while compiling. Calling the object runs the jaxpr and stores the written
    states' new values (atomically: if it raises, no state changes).

    The jaxpr's inputs are the dynamic arguments, then the values of
    `get_states()`: the read-only states, then the written ones, each in
    first-touch order. Its outputs are `fun`'s output, then the states' new values
    (only the written ones if `return_only_write`).

    Args:
        fun: the function; its arguments and output are arrays or pytrees of them.
        static_argnums: positions of arguments that are compile-time constants.
        static_argnames: names of keyword arguments that are compile-time constants.
        axis_env: `(axis_name, size)` pairs, as `jax.make_jaxpr`'s.
        name: a name for error messages (default: the function's).
        return_only_write: the jaxpr returns only the written states' values.

    Raises:
        SpecError: an option is invalid (a negative position, say).

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> total = sj.State(jnp.zeros(2))
        >>> def f(x):
        ...     total.value = total.value + x
        ...     return total.value * 2
        >>> sf = sj.transform.StatefulFunction(f)
        >>> sf.get_write_states(jnp.ones(2)) == (total,)
        True
        >>> [str(v.aval) for v in sf.get_jaxpr(jnp.ones(2)).jaxpr.invars]
        ['float32[2]', 'float32[2]']
        >>> sf(jnp.ones(2)).tolist(), total.value.tolist()
        ([2.0, 2.0], [1.0, 1.0])
    """

    def __init__(
        self,
        fun: Callable[..., Any],
        static_argnums: int | Iterable[int] = (),
        static_argnames: str | Iterable[str] = (),
        axis_env: Sequence[tuple[Hashable, int]] | None = None,
        name: str | None = None,
        return_only_write: bool = True,
    ) -> None:
        spec = parse_spec(
            StatefulFunctionSpec,
            "StatefulFunction",
            static_argnums=static_argnums,
            static_argnames=static_argnames,
            axis_env=axis_env,
            return_only_write=return_only_write,
        )
        self.fun = fun
        self.static_argnums: tuple[int, ...] = spec.static_argnums
        self.static_argnames: tuple[str, ...] = spec.static_argnames
        self.axis_env = spec.axis_env
        self.name = name
        self.return_only_write = spec.return_only_write
        self._label = f"statejax.StatefulFunction({name or name_of(fun)})"
        statics = bool(self.static_argnums or self.static_argnames)
        self._engine: _Engine[Any] = _Engine(
            fun,
            self._label,
            self._lift,
            staged=True,
            static_key=self._static_key if statics else None,
        )
        # The latest compilation per key, weakly: it lives in the engine's cache entry.
        self._compiled: weakref.WeakValueDictionary[CacheKey, _Compiled] = (
            weakref.WeakValueDictionary()
        )
        # Lookups of a call signature that found a compilation, or traced one (approximate
        # under threads: statistics, not state).
        self._hits = 0
        self._misses = 0

    # -- keys ------------------------------------------------------------------------

    def _static_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
        # Modules and states are in the engine's key by identity already.
        return (
            tuple(_marker(args[i]) for i in self.static_argnums if i < len(args)),
            tuple((n, _marker(kwargs[n])) for n in self.static_argnames if n in kwargs),
        )

    def _split_args(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The dynamic positional and keyword arguments."""
        dyn_args = tuple(a for i, a in enumerate(args) if i not in self.static_argnums)
        dyn_kwargs = {k: v for k, v in kwargs.items() if k not in self.static_argnames}
        return dyn_args, dyn_kwargs

    def get_arg_cache_key(
        self, *args: Any, compile_if_miss: bool = False, **kwargs: Any
    ) -> CacheKey:
        """The cache key of a call with these arguments (compiling it if asked).

        Args:
            *args: the positional arguments of the call.
            compile_if_miss: trace the function if this key has no compilation yet.
            **kwargs: the keyword arguments of the call.

        Returns:
            A hashable `CacheKey`, for the `get_*_by_cache` methods.

        Raises:
            TypeError: a static argument is not hashable.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> sf = sj.transform.StatefulFunction(lambda x, n: x**n, static_argnums=1)
            >>> key = sf.get_arg_cache_key(jnp.ones(2), 3, compile_if_miss=True)
            >>> key.static_args, sf.get_out_shapes_by_cache(key)[0].shape
            ((3,), (2,))
        """
        dyn_args, dyn_kwargs = self._split_args(args, kwargs)
        _refuse_states("an argument", (dyn_args, dyn_kwargs))
        arg_leaves, arg_tree = jax.tree.flatten(dyn_args)
        kw_leaves, kw_tree = jax.tree.flatten(dict(sorted(dyn_kwargs.items())))
        key = CacheKey(
            static_args=tuple(_marker(a) for i, a in enumerate(args) if i in self.static_argnums),
            dyn_args=(arg_tree, tuple(_aval(x) for x in arg_leaves)),
            static_kwargs=tuple(
                (k, _marker(v)) for k, v in sorted(kwargs.items()) if k in self.static_argnames
            ),
            dyn_kwargs=(kw_tree, tuple(_aval(x) for x in kw_leaves)),
        )
        try:
            hash(key)
        except TypeError:
            raise TypeError(
                f"{self._label}: static arguments must be hashable; got "
                f"{key.static_args + key.static_kwargs!r}. Pass arrays as dynamic arguments."
            ) from None
        if compile_if_miss and key not in self._compiled:
            self._compile(args, kwargs)
        return key

    # -- the lift: compile per signature, then run or hand the compilation back --------

    def _lift(self, split: Split, pure: PureCore) -> Callable[..., tuple[Any, list[Any]]]:
        compiled: dict[Hashable, _Compiled] = {}
        n_read = len(split.read_states)
        only_write = self.return_only_write
        me = id(self)

        def flat(
            statics: tuple[tuple[Any, ...], dict[str, Any]],
            dyn_args: tuple[Any, ...],
            dyn_kwargs: dict[str, Any],
            state_vals: list[Any],
        ) -> tuple[Any, tuple[Any, ...]]:
            args, kwargs = self._merge_args(statics, dyn_args, dyn_kwargs)
            read_vals, write_vals = state_vals[:n_read], state_vals[n_read:]
            out, new_write_vals = pure(read_vals, write_vals, *args, **kwargs)
            _refuse_states("an output", out)
            reads = (None,) * n_read if only_write else tuple(read_vals)
            return out, reads + tuple(new_write_vals)

        def compile_for(
            read_vals: list[Any], write_vals: list[Any], args: tuple[Any, ...], kwargs: Any
        ) -> _Compiled:
            dyn_args, dyn_kwargs = self._split_args(args, kwargs)
            _refuse_states("an argument", (dyn_args, dyn_kwargs))
            state_vals = list(read_vals) + list(write_vals)
            leaves, in_tree = jax.tree.flatten((dyn_args, dyn_kwargs, state_vals))
            signature = (in_tree, tuple(_aval(x) for x in leaves))
            found = compiled.get(signature)
            if found is not None:
                self._hits += 1
                return found
            self._misses += 1
            statics = (args, kwargs)
            traced = jax.make_jaxpr(
                lambda a, k, s: flat(statics, a, k, s),
                axis_env=list(self.axis_env) if self.axis_env else None,
                return_shape=True,
            )
            jaxpr, out_shapes = traced(dyn_args, dyn_kwargs, state_vals)
            result = _Compiled(jaxpr, out_shapes, in_tree, jax.tree.structure(out_shapes), split)
            # A jaxpr closing over an enclosing trace's tracer must not outlive that trace.
            if not _has_tracer(jaxpr.consts):
                if len(compiled) >= _MAX_COMPILED:
                    compiled.clear()
                compiled[signature] = result
            return result

        def transformed(
            read_vals: list[Any], write_vals: list[Any], *args: Any, **kwargs: Any
        ) -> tuple[Any, list[Any]]:
            result = compile_for(read_vals, write_vals, args, kwargs)
            if me in _ABSTRACT.active:
                return result, list(write_vals)
            dyn_args, dyn_kwargs = self._split_args(args, kwargs)
            out, state_outs = _evaluate(result, (dyn_args, dyn_kwargs, [*read_vals, *write_vals]))
            return out, list(state_outs[n_read:])

        return transformed

    def _merge_args(
        self,
        statics: tuple[tuple[Any, ...], dict[str, Any]],
        dyn_args: tuple[Any, ...],
        dyn_kwargs: dict[str, Any],
    ) -> tuple[list[Any], dict[str, Any]]:
        """The full arguments: the static ones of the call, the (traced) dynamic ones."""
        args, kwargs = statics
        dynamic = iter(dyn_args)
        full = [a if i in self.static_argnums else next(dynamic) for i, a in enumerate(args)]
        return full, {
            **{k: v for k, v in kwargs.items() if k in self.static_argnames},
            **dyn_kwargs,
        }

    def _compile(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Compiled:
        if self.static_argnums and max(self.static_argnums) >= len(args):
            raise ValueError(
                f"{self._label}: static_argnums contains index {max(self.static_argnums)}, "
                f"but only {len(args)} positional arguments were given."
            )
        key = self.get_arg_cache_key(*args, **kwargs)
        me = id(self)
        _ABSTRACT.active.add(me)
        try:
            # The private trace takes the (unchanged) merge: compiling changes no state and
            # is invisible to an enclosing transform.
            with StateTrace(self._label):
                result: _Compiled = self._engine(*args, **kwargs)
        finally:
            _ABSTRACT.active.discard(me)
        if not _has_tracer(result.jaxpr.consts):
            self._compiled[key] = result
        return result

    def _by_cache(self, cache_key: CacheKey) -> _Compiled:
        found = self._compiled.get(cache_key)
        if found is None:
            raise ValueError(
                f"{self._label}: not compiled for this cache key. Call "
                "make_jaxpr(*args, **kwargs) with the same arguments first."
            )
        return found

    # -- BrainState's public methods ---------------------------------------------------

    def make_jaxpr(self, *args: Any, **kwargs: Any) -> StatefulFunction:
        """Trace the function for these arguments (unless cached); return `self`.

        Raises:
            ValueError: a `State` is passed or returned, or `static_argnums` names a
                position past the arguments given.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> sf = sj.transform.StatefulFunction(lambda x: x + 1).make_jaxpr(jnp.ones(3))
            >>> sf.get_states(jnp.ones(3))
            ()
        """
        self._compile(args, kwargs)
        return self

    def get_jaxpr(self, *args: Any, compile_if_miss: bool = True, **kwargs: Any) -> Any:
        """The `ClosedJaxpr` of a call with these arguments.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> sj.transform.StatefulFunction(jnp.sin).get_jaxpr(1.0).eqns[0].primitive.name
            'sin'
        """
        return self._get(args, kwargs, compile_if_miss).jaxpr

    def get_out_shapes(self, *args: Any, compile_if_miss: bool = True, **kwargs: Any) -> Any:
        """`(out_shapes, state_shapes)`: `jax.ShapeDtypeStruct` trees of the output and of
        the states' new values, aligned with `get_states()` (`None` for a read-only
        state when `return_only_write`).

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> out, states = sj.transform.StatefulFunction(jnp.outer).get_out_shapes(
            ...     jnp.ones(2), jnp.ones(3))
            >>> out.shape, states
            ((2, 3), ())
        """
        return self._get(args, kwargs, compile_if_miss).out_shapes

    def get_out_treedef(self, *args: Any, compile_if_miss: bool = True, **kwargs: Any) -> Any:
        """The tree structure of `get_out_shapes(...)`.

        Examples:
            >>> import statejax as sj
            >>> sj.transform.StatefulFunction(lambda x: (x, x)).get_out_treedef(1.0).num_leaves
            2
        """
        return self._get(args, kwargs, compile_if_miss).out_tree

    def get_states(
        self, *args: Any, compile_if_miss: bool = True, **kwargs: Any
    ) -> tuple[State[Any], ...]:
        """Every state the function touches: the read-only ones, then the written ones.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> a, b = sj.State(jnp.ones(())), sj.State(jnp.ones(()))
            >>> def f(x):
            ...     b.value = a.value * x
            >>> sj.transform.StatefulFunction(f).get_states(2.0) == (a, b)
            True
        """
        return self._get(args, kwargs, compile_if_miss).split.states

    def get_read_states(
        self, *args: Any, compile_if_miss: bool = True, **kwargs: Any
    ) -> tuple[State[Any], ...]:
        """The states the function only reads.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> a = sj.State(jnp.ones(()))
            >>> sj.transform.StatefulFunction(lambda x: a.value * x).get_read_states(2.0) == (a,)
            True
        """
        return self._get(args, kwargs, compile_if_miss).split.read_states

    def get_write_states(
        self, *args: Any, compile_if_miss: bool = True, **kwargs: Any
    ) -> tuple[State[Any], ...]:
        """The states the function writes (and may read).

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> n = sj.State(jnp.array(0))
            >>> def f():
            ...     n.value += 1
            >>> sj.transform.StatefulFunction(f).get_write_states() == (n,)
            True
        """
        return self._get(args, kwargs, compile_if_miss).split.write_states

    def _get(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], compile_if_miss: bool
    ) -> _Compiled:
        if compile_if_miss:
            return self._compile(args, kwargs)
        return self._by_cache(self.get_arg_cache_key(*args, **kwargs))

    def get_jaxpr_by_cache(self, cache_key: CacheKey) -> Any:
        """`get_jaxpr` for a key from `get_arg_cache_key`; `ValueError` if not compiled.

        Examples:
            >>> import statejax as sj
            >>> sf = sj.transform.StatefulFunction(lambda x: x * 2)
            >>> key = sf.get_arg_cache_key(1.0, compile_if_miss=True)
            >>> len(sf.get_jaxpr_by_cache(key).eqns)
            1
        """
        return self._by_cache(cache_key).jaxpr

    def get_out_shapes_by_cache(self, cache_key: CacheKey) -> Any:
        """`get_out_shapes` for a key from `get_arg_cache_key`; `ValueError` if not compiled.

        Examples:
            >>> import statejax as sj
            >>> sf = sj.transform.StatefulFunction(lambda x: x * 2)
            >>> key = sf.get_arg_cache_key(1.0, compile_if_miss=True)
            >>> sf.get_out_shapes_by_cache(key)[0].shape
            ()
        """
        return self._by_cache(cache_key).out_shapes

    def get_out_treedef_by_cache(self, cache_key: CacheKey) -> Any:
        """`get_out_treedef` for a key from `get_arg_cache_key`; `ValueError` if not compiled.

        Examples:
            >>> import statejax as sj
            >>> sf = sj.transform.StatefulFunction(lambda x: [x])
            >>> key = sf.get_arg_cache_key(1.0, compile_if_miss=True)
            >>> sf.get_out_treedef_by_cache(key).num_leaves
            1
        """
        return self._by_cache(cache_key).out_tree

    def get_states_by_cache(self, cache_key: CacheKey) -> tuple[State[Any], ...]:
        """`get_states` for a key from `get_arg_cache_key`; `ValueError` if not compiled.

        Examples:
            >>> import statejax as sj
            >>> sf = sj.transform.StatefulFunction(lambda x: x)
            >>> sf.get_states_by_cache(sf.get_arg_cache_key(1.0, compile_if_miss=True))
            ()
        """
        return self._by_cache(cache_key).split.states

    def get_read_states_by_cache(self, cache_key: CacheKey) -> tuple[State[Any], ...]:
        """`get_read_states` for a key from `get_arg_cache_key`; `ValueError` if not compiled.

        Examples:
            >>> import statejax as sj
            >>> sf = sj.transform.StatefulFunction(lambda x: x)
            >>> sf.get_read_states_by_cache(sf.get_arg_cache_key(1.0, compile_if_miss=True))
            ()
        """
        return self._by_cache(cache_key).split.read_states

    def get_write_states_by_cache(self, cache_key: CacheKey) -> tuple[State[Any], ...]:
        """`get_write_states` for a key from `get_arg_cache_key`; `ValueError` if not compiled.

        Examples:
            >>> import statejax as sj
            >>> sf = sj.transform.StatefulFunction(lambda x: x)
            >>> sf.get_write_states_by_cache(sf.get_arg_cache_key(1.0, compile_if_miss=True))
            ()
        """
        return self._by_cache(cache_key).split.write_states

    def jaxpr_call(self, state_vals: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        """Evaluate the jaxpr on given state values; return `(new_state_vals, out)`.

        Changes no state. `state_vals` holds one value per state of `get_states()`;
        `new_state_vals` has the same length (`None` for a read-only state when
        `return_only_write`).

        Raises:
            ValueError: `state_vals` has the wrong length or holds `None`.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> s = sj.State(jnp.array(1.0))
            >>> def f(x):
            ...     s.value = s.value + x
            ...     return s.value * 10
            >>> sf = sj.transform.StatefulFunction(f)
            >>> (new,), out = sf.jaxpr_call([jnp.array(5.0)], 1.0)
            >>> float(new), float(out), float(s.value)
            (6.0, 60.0, 1.0)
        """
        compiled = self._compile(args, kwargs)
        states = compiled.split.states
        if len(state_vals) != len(states):
            raise ValueError(
                f"{self._label}: State length mismatch: expected {len(states)} state values "
                f"(one per state of get_states()), got {len(state_vals)}."
            )
        missing = [i for i, v in enumerate(state_vals) if v is None]
        if missing:
            raise ValueError(
                f"{self._label}: state_vals holds None at index(es) {missing}; give every "
                "state a value."
            )
        dyn_args, dyn_kwargs = self._split_args(args, kwargs)
        out, new_state_vals = _evaluate(compiled, (dyn_args, dyn_kwargs, list(state_vals)))
        return list(new_state_vals), out

    def get_cache_stats(self) -> dict[str, dict[str, float]]:
        """Statistics of the compilation cache, as BrainState reports them.

        Returns:
            `{"compilation_cache": {"size", "maxsize", "hits", "misses", "hit_rate"}}`;
            `size` counts the cache keys compiled, `maxsize` the compilations one
            split keeps, and a hit is a call that found its compilation.

        Examples:
            >>> import statejax as sj
            >>> sf = sj.transform.StatefulFunction(lambda x: x).make_jaxpr(1.0).make_jaxpr(2.0)
            >>> stats = sf.get_cache_stats()["compilation_cache"]
            >>> stats["size"], stats["misses"], stats["hits"] >= 1
            (1, 1, True)
        """
        lookups = self._hits + self._misses
        return {
            "compilation_cache": {
                "size": len(self._compiled),
                "maxsize": _MAX_COMPILED,
                "hits": self._hits,
                "misses": self._misses,
                "hit_rate": self._hits / lookups if lookups else 0.0,
            }
        }

    def clear_cache(self) -> None:
        """Forget every compilation; the next call traces again.

        Examples:
            >>> import statejax as sj
            >>> sf = sj.transform.StatefulFunction(lambda x: x).make_jaxpr(1.0)
            >>> sf.clear_cache()
        """
        self._engine.clear_cache()
        self._compiled.clear()
        self._hits = self._misses = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function through its jaxpr and store the written states' new values.

        Under `jax.disable_jit()` the function runs eagerly instead, as BrainState's does.
        """
        if jit_disabled():
            return run_eagerly(self._label, self.fun, *args, **kwargs)
        if self.static_argnums and max(self.static_argnums) >= len(args):
            self._compile(args, kwargs)  # raises the ValueError naming the position
        return self._engine(*args, **kwargs)

    def jaxpr_call_auto(self, *args: Any, **kwargs: Any) -> Any:
        """Same as calling the object: run the jaxpr and store the written states.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> n = sj.State(jnp.array(0))
            >>> def f():
            ...     n.value += 1
            >>> sj.transform.StatefulFunction(f).jaxpr_call_auto(); int(n.value)
            1
        """
        return self(*args, **kwargs)

    def __repr__(self) -> str:
        return f"StatefulFunction({name_of(self.fun)})"


def _evaluate(compiled: _Compiled, inputs: Any) -> tuple[Any, Any]:
    """Evaluate a compilation on `(dyn_args, dyn_kwargs, state_vals)`; `(out, state_outs)`."""
    leaves, tree = jax.tree.flatten(inputs)
    if tree != compiled.in_tree:
        raise ValueError(
            f"the arguments' structure {tree} differs from the traced one {compiled.in_tree}"
        )
    closed = compiled.jaxpr
    outs = eval_closed_jaxpr(closed, *leaves)
    out, state_outs = jax.tree.unflatten(compiled.out_tree, outs)
    return out, state_outs
