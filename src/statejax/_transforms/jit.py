"""`jit`: compile a function that reads and writes states.

The pure core is handed to `jax.jit`. On a cached call the wrapper gathers
the state values into two flat lists, calls the compiled core through JAX's C++
dispatch (which checks shapes and dtypes, and retraces when a state's shape or
dtype changed), and stores the written values back.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Annotated, Any, ParamSpec, TypeVar, overload

import jax
import numpy as np
import pydantic
from jax.sharding import Sharding

from statejax._errors import ShardingError
from statejax._transforms._common import (
    Index,
    as_tuple,
    run_eagerly,
    wait_for_results,
)
from statejax._transforms._state_specs import (
    RESHAPED,
    StateRules,
    check_donated,
    check_fits,
    parse_rules,
    resolve,
    state_paths,
)
from statejax.extend import (
    CALLS_PURE_AS_IS,
    PureCore,
    Split,
    State,
    StatefulFunction,
    Transform,
    TransformSpec,
    describe_state,
    hookimpl,
    parse_spec,
)
from statejax.filters import Path
from statejax.graph import Module, iter_states

__all__ = ["JitSpec", "jit"]

_RULES_SCHEMA = pydantic.WithJsonSchema(
    {"description": "{State, State type or filter: Sharding}", "type": "object"}
)

P = ParamSpec("P")
R = TypeVar("R")


class JitSpec(TransformSpec):
    """Options of `jit`."""

    in_shardings: Any = pydantic.Field(
        default=None,
        description="a Sharding for every positional argument, or a tuple of them, one per "
        "non-static positional argument (None: as the arguments are placed)",
    )
    out_shardings: Any = pydantic.Field(
        default=None,
        description="a Sharding or a pytree of them (a prefix of the result) for the result "
        "(None: as XLA propagates)",
    )
    static_argnums: tuple[Index, ...] = pydantic.Field(
        default=(),
        description="positions of arguments that are compile-time constants "
        "(hashable, non-negative; a new value recompiles)",
    )
    static_argnames: tuple[str, ...] = pydantic.Field(
        default=(), description="names of keyword arguments that are compile-time constants"
    )
    donate_argnums: tuple[Index, ...] = pydantic.Field(
        default=(),
        description="positions of arguments whose buffers the computation may reuse "
        "(non-negative; the caller must not use them afterwards)",
    )
    donate_argnames: tuple[str, ...] = pydantic.Field(
        default=(), description="names of keyword arguments whose buffers may be reused"
    )
    keep_unused: bool = pydantic.Field(
        default=False, description="keep arguments the computation does not use"
    )
    inline: bool = pydantic.Field(
        default=False, description="inline the computation into an enclosing jit's"
    )
    name: str | None = pydantic.Field(
        default=None, description="the name of the compiled computation (None: the function's)"
    )
    donate_states: bool = pydantic.Field(
        default=False,
        description="donate the buffers of written states to the computation "
        "(ignored on the CPU, which cannot reuse them)",
    )
    state_shardings: Annotated[StateRules, _RULES_SCHEMA] = pydantic.Field(
        default=(),
        description="{State, State type or filter: Sharding}: read states enter with that "
        "sharding and written states leave with it (first match wins; others as placed)",
    )

    _normalise = pydantic.field_validator(
        "static_argnums", "static_argnames", "donate_argnums", "donate_argnames", mode="before"
    )(lambda cls, v: as_tuple(v))

    @pydantic.field_validator("in_shardings", mode="before")
    @classmethod
    def _in_shardings(cls, value: object) -> object:
        if isinstance(value, list):
            value = tuple(value)
        if value is None or isinstance(value, (Sharding, tuple)):
            return value
        raise ValueError(
            f"{value!r} ({type(value).__name__}) is neither a Sharding nor a tuple of them "
            "(one per non-static positional argument)"
        )

    @pydantic.field_validator("state_shardings", mode="before")
    @classmethod
    def _state_rules(cls, value: object) -> StateRules:
        if isinstance(value, Sharding):
            raise ValueError(
                "give a mapping {State or filter: Sharding}, e.g. {sj.ParamState: sharding}; "
                "a single Sharding would also place every counter and key"
            )
        return parse_rules(value, (Sharding,), "a Sharding")


@overload
def jit(
    fn: Callable[P, R],
    /,
    *,
    in_shardings: Any = None,
    out_shardings: Any = None,
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
    donate_argnums: int | Sequence[int] = (),
    donate_argnames: str | Sequence[str] = (),
    keep_unused: bool = False,
    inline: bool = False,
    name: str | None = None,
    donate_states: bool = False,
    state_shardings: Mapping[Any, Sharding | None] | None = None,
) -> Callable[P, R]: ...
@overload
def jit(
    fn: None = None,
    /,
    *,
    in_shardings: Any = None,
    out_shardings: Any = None,
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
    donate_argnums: int | Sequence[int] = (),
    donate_argnames: str | Sequence[str] = (),
    keep_unused: bool = False,
    inline: bool = False,
    name: str | None = None,
    donate_states: bool = False,
    state_shardings: Mapping[Any, Sharding | None] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def jit(
    fn: Callable[P, R] | None = None, /, **options: Any
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Compile `fn` with `jax.jit`, threading the states it reads and writes.

    The first call traces `fn` to find its states; later calls go straight to
    the compiled code. Writes to states inside `fn` are visible after the call.
    Under `jax.disable_jit()` it runs `fn` eagerly instead, as `jax.jit` does
    (concrete values, so `float(x)` works), writes still applied after the call.
    Use it as `@jit`, `@jit(static_argnums=...)` or `jit(fn, ...)`, on functions
    or methods.

    The options are `jax.jit`'s, plus `state_shardings`: a mapping
    `{State, State type or filter: Sharding}` (first match wins). A read state
    enters with its sharding and a written one leaves with it, so parameters
    and optimizer state stay where they are, call after call. A state whose
    value is committed to another sharding is never moved: the call raises
    `ShardingError` naming it. Unmatched states keep the placement of their
    values (a new placement compiles anew, as in `jax.jit`).

    The returned function has `clear_cache()`, and `lower`, `trace`,
    `eval_shape` and `compile` taking the call's arguments, as `jax.jit`'s;
    they change no state. `lower` and `trace` stage the whole pure core, whose
    inputs are `(read_state_values, written_state_values, *args)` and whose
    result is `(result, new_written_state_values)`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> total = sj.State(jnp.array(0.0))
        >>> @sj.jit
        ... def add(x):
        ...     total.value = total.value + x
        ...     return total.value * 2
        >>> float(add(1.5)), float(add(1.0)), float(total.value)
        (3.0, 5.0, 2.5)
        >>> add.eval_shape(1.0).shape, float(total.value)
        ((), 2.5)
    """
    # Options arrive as **options so a misspelled one becomes a SpecError with a
    # did-you-mean rather than Python's bare TypeError; the overloads type them.
    spec = parse_spec(JitSpec, "jit", **options)
    if fn is None:
        return functools.partial(_jit, spec=spec)
    return _jit(fn, spec=spec)


def _jit(fn: Callable[P, R], spec: JitSpec) -> Callable[P, R]:
    spec = _with_static_resolved(fn, spec)
    name = getattr(fn, "__qualname__", repr(fn))
    label = f"statejax.jit({spec.name or name})"
    sharded = (
        spec.in_shardings is not None
        or spec.out_shardings is not None
        or bool(spec.state_shardings)
    )

    def lift(split: Split, pure: PureCore) -> Callable[..., Any]:
        if sharded:
            return _ShardedJit(split, pure, spec, label)
        # The pure core takes (read_values, write_values, *args): shift positions by two.
        donate = tuple(i + 2 for i in spec.donate_argnums)
        if spec.donate_states and jax.default_backend() != "cpu":
            donate = (1, *donate)
        jitted = jax.jit(
            _named(pure, spec.name, label),
            static_argnums=tuple(i + 2 for i in spec.static_argnums),
            static_argnames=spec.static_argnames,
            donate_argnums=donate,
            donate_argnames=spec.donate_argnames,
            keep_unused=spec.keep_unused,
            inline=spec.inline,
        )
        if spec.donate_argnums or spec.donate_argnames:
            return _Donating(jitted, split, spec, label)
        return jitted

    static_key = (
        functools.partial(_static_values, spec.static_argnums, spec.static_argnames)
        if spec.static_argnums or spec.static_argnames
        else None
    )
    # Under jax.disable_jit() the engine runs `fn` eagerly instead (one flag read per call).
    stateful: StatefulFunction[R] = StatefulFunction(
        fn,
        label,
        lift,
        staged=True,
        static_key=static_key,
        eager=functools.partial(run_eagerly, label, fn),
    )
    ahead_of_time = stateful.ahead_of_time
    # An API boundary calling the engine: errors leave without statejax's (and JAX's)
    # frames in the traceback.
    wrapper: Callable[P, R] = stateful.as_function(fn)

    def staged(method: str) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            return ahead_of_time(method, *args, **kwargs)

        run.__name__ = method
        run.__doc__ = f"`jax.jit`'s `{method}` of the pure core for these arguments."
        return run

    lower = staged("lower")

    def eval_shape(*args: Any, **kwargs: Any) -> Any:
        """The shape and dtype of the result for these arguments; nothing runs."""
        return staged("eval_shape")(*args, **kwargs)[0]

    def compile(*args: Any, **kwargs: Any) -> jax.stages.Compiled:
        """`lower(...).compile()`."""
        return lower(*args, **kwargs).compile()  # type: ignore[no-any-return]

    wrapper.origin_fun = fn  # type: ignore[attr-defined]
    wrapper.lower = lower  # type: ignore[attr-defined]
    wrapper.trace = staged("trace")  # type: ignore[attr-defined]
    wrapper.eval_shape = eval_shape  # type: ignore[attr-defined]
    wrapper.compile = compile  # type: ignore[attr-defined]
    return wrapper


def _named(pure: PureCore, name: str | None, label: str) -> Callable[..., Any]:
    """The pure core as `jax.jit` sees it: named after the user's function, or `name`.

    JAX names the traced function and its arguments in its errors (a Python `if` on a
    traced value: "while tracing the function step at model.py:12 ... depends on the
    value of the argument x"). It takes the function's name, file and line from the
    user's function (through `__wrapped__`), and the arguments' names from the
    signature: the user's parameters after the two lists of state values. A state value
    it names (`read_vals[0]`) is renamed after the state when the error passes here.
    Only traces run this function: a cached call never does.
    """

    def core(*args: Any, **kwargs: Any) -> Any:
        try:
            return pure(*args, **kwargs)
        except _TRACER_ERRORS as exc:
            _name_states(exc, label, pure.split, args[2:], kwargs)
            raise

    # It forwards arguments and result unchanged: the engine may replay the discovery trace.
    setattr(core, CALLS_PURE_AS_IS, pure)
    if name is None:
        core.__wrapped__ = pure.fn  # type: ignore[attr-defined]
    else:
        core.__name__ = core.__qualname__ = name
    core.__signature__ = _core_signature(pure.fn)  # type: ignore[attr-defined]
    return core


class _Donating:
    """`jax.jit`'s function, refusing a call that donates an argument holding a state's value.

    XLA cannot donate a buffer the same call also reads: on one device it refuses the
    call with an error about a "flattened argument", on several it may crash the
    process. So the donated arguments are compared (by identity) with the state values
    before anything runs; only jit with `donate_argnums`/`donate_argnames` pays for it.
    """

    def __init__(self, jitted: Any, split: Split, spec: JitSpec, label: str) -> None:
        self.jitted = jitted
        self.split = split
        self.spec = spec
        self.label = label

    def __call__(self, rv: Sequence[Any], wv: Sequence[Any], /, *args: Any, **kwargs: Any) -> Any:
        spec = self.spec
        check_donated(
            self.label, self.split, rv, wv, args, kwargs, spec.donate_argnums, spec.donate_argnames
        )
        return self.jitted(rv, wv, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # lower, trace, eval_shape
        return getattr(self.jitted, name)


#: JAX's errors for a traced value used where Python needs a concrete one.
_TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
)
_POSITIONAL = inspect.Parameter.POSITIONAL_ONLY
_STATE_VALUES = (
    inspect.Parameter("read_vals", _POSITIONAL),
    inspect.Parameter("write_vals", _POSITIONAL),
)
_GENERIC = inspect.Signature(
    [
        *_STATE_VALUES,
        inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
        inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
    ]
)
# A state value as JAX names it: `read_vals[0]`, or a leaf in it, `write_vals[2][0].mu[1]`.
_STATE_VALUE = re.compile(r"\b(read_vals|write_vals)\[(\d+)\]((?:\[[^\]\s]*\]|\.\w+)*)")


def _core_signature(fn: Callable[..., Any]) -> inspect.Signature:
    """`(read_vals, write_vals, /, <fn's parameters>)`: how JAX names the arguments."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return _GENERIC
    if any(p.name in ("read_vals", "write_vals") for p in params):
        return _GENERIC
    try:
        return inspect.Signature([*_STATE_VALUES, *params])
    except ValueError:
        return _GENERIC


def _name_states(
    exc: BaseException, label: str, split: Split, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> None:
    """Rename the state values in JAX's message (`read_vals[0]`) after their states."""
    if not exc.args or not isinstance(exc.args[0], str):
        return
    paths: dict[int, Path] = {}
    for arg in [*args, *kwargs.values()]:
        if isinstance(arg, (Module, State)):
            for path, state in iter_states(arg):
                paths[id(state)] = path

    def rename(match: re.Match[str]) -> str:
        states = split.read_states if match.group(1) == "read_vals" else split.write_states
        index = int(match.group(2))
        if index >= len(states):
            return match.group(0)
        found = states[index]
        leaf = f" (at {match.group(3)} in its value)" if match.group(3) else ""
        return f"{describe_state(found, paths.get(id(found)))}{leaf}"

    text = _STATE_VALUE.sub(rename, exc.args[0])
    if text != exc.args[0]:
        text += (
            f"\n{label} hands JAX the values of the states the function uses as arguments; "
            "read in a Python `if`, `while`, `int()` or `float()` they are traced too. Use "
            "statejax.cond, jnp.where or a static argument instead."
        )
    exc.args = (text, *exc.args[1:])


class _ShardedJit:
    """The lifted pure core of one split when shardings are given.

    `jax.jit` takes no keyword arguments once `in_shardings` is given, so the
    compiled function takes them packed, `(reads, writes, kwargs, donated_kwargs,
    *static_kwargs, *args)`: one compiled function per number of positional
    arguments and set of static keyword arguments given (a single `in_shardings`
    applies to each). The static keyword values go in as static positional
    arguments, so `jax.jit` hashes them as it would the keywords: a new value
    compiles anew, an unhashable one is its error. The state shardings are resolved
    on the first call, when the arguments show the states' paths.

    A call returns once the written values are computed. On several devices (and on
    accelerators) a run-time error, such as a `jax.debug.callback` that raises, does
    not fail the dispatch: it poisons the results, which raise when read. Waiting for
    the written values makes it raise here, before any state changes, so the states
    keep their last good values (docs/performance.md gives the cost).
    """

    def __init__(self, split: Split, pure: PureCore, spec: JitSpec, label: str) -> None:
        self.split = split
        self.pure = pure
        self.spec = spec
        self.label = label
        self.static_names = spec.static_argnames
        self.donating = bool(spec.donate_argnums or spec.donate_argnames)
        self.variants: dict[Hashable, Any] = {}
        self.read_shardings: list[Any] = []
        self.write_shardings: list[Any] = []
        self.paths: dict[int, Path] = {}

    def _variant(self, args: tuple[Any, ...], kwargs: Any) -> tuple[Hashable, tuple[str, ...]]:
        """The key of the compiled function for a call, and its static keywords' names."""
        if self.static_names and kwargs:
            names = tuple(n for n in self.static_names if n in kwargs)
            if names:
                return (len(args), names), names
        return len(args), ()

    def _build(
        self,
        rv: Sequence[Any],
        wv: Sequence[Any],
        args: tuple[Any, ...],
        kwargs: Any,
        key: Hashable,
        names: tuple[str, ...],
    ) -> Any:
        spec, split = self.spec, self.split
        if not self.variants:
            self.paths = state_paths(split, spec.state_shardings, args, kwargs)
            placements = resolve(spec.state_shardings, split.states, self.paths, None)
            for state, value, placement in zip(split.states, [*rv, *wv], placements, strict=True):
                check_fits(self.label, state, self.paths.get(id(state)), value, placement)
            n_reads = len(split.read_states)
            self.read_shardings = placements[:n_reads]
            self.write_shardings = placements[n_reads:]
        static = set(spec.static_argnums)
        n_dynamic = sum(1 for i in range(len(args)) if i not in static)
        user_in = spec.in_shardings
        if user_in is None:
            args_in: tuple[Any, ...] = (None,) * n_dynamic
        elif isinstance(user_in, tuple):
            args_in = user_in
        else:
            args_in = (user_in,) * n_dynamic
        pure = _named(self.pure, spec.name, self.label)
        n_static = len(names)

        def core(read_vals: Any, write_vals: Any, kw: Any, donated: Any, *rest: Any) -> Any:
            statics = dict(zip(names, rest[:n_static], strict=True))
            return pure(read_vals, write_vals, *rest[n_static:], **kw, **donated, **statics)

        # JAX takes the function's name, file and line from the user's function.
        core.__wrapped__ = pure  # type: ignore[attr-defined]
        core.__signature__ = inspect.signature(core, follow_wrapped=False)  # type: ignore[attr-defined]

        first = 4 + n_static  # the position of the first positional argument
        donate = tuple(i + first for i in spec.donate_argnums)
        if spec.donate_argnames:
            donate = (3, *donate)
        if spec.donate_states and jax.default_backend() != "cpu":
            donate = (1, *donate)
        jitted = jax.jit(
            core,
            in_shardings=(self.read_shardings, self.write_shardings, None, None, *args_in),
            out_shardings=(spec.out_shardings, self.write_shardings),
            static_argnums=(*range(4, first), *(i + first for i in spec.static_argnums)),
            donate_argnums=donate,
            keep_unused=spec.keep_unused,
            inline=spec.inline,
        )
        self.variants[key] = jitted
        return jitted

    def _pack(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        spec = self.spec
        kw = {k: v for k, v in kwargs.items() if k not in spec.static_argnames}
        donated = {k: kw.pop(k) for k in spec.donate_argnames if k in kw}
        return kw, donated

    def __call__(self, rv: Sequence[Any], wv: Sequence[Any], /, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            key, names = self._variant(args, kwargs)
            kw, donated = self._pack(kwargs)
            statics: tuple[Any, ...] = tuple(kwargs[n] for n in names)
        else:
            key, names, kw, donated, statics = len(args), (), {}, {}, ()
        jitted = self.variants.get(key)
        if jitted is None:
            jitted = self._build(rv, wv, args, kwargs, key, names)
        if self.donating:
            spec = self.spec
            check_donated(
                self.label,
                self.split,
                rv,
                wv,
                args,
                kwargs,
                spec.donate_argnums,
                spec.donate_argnames,
            )
        try:
            out, new_wv = jitted(rv, wv, kw, donated, *statics, *args)
        except ValueError:
            self._explain(rv, wv)
            raise
        if new_wv:
            # Raises a run-time error of the computation now, while the states still
            # hold their last good values (see the class docstring).
            wait_for_results(new_wv)
        return out, new_wv

    def _staged(self, method: str, rv: Any, wv: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        key, names = self._variant(args, kwargs)
        jitted = self.variants.get(key) or self._build(rv, wv, args, kwargs, key, names)
        kw, donated = self._pack(kwargs)
        statics = tuple(kwargs[n] for n in names)
        try:
            return getattr(jitted, method)(rv, wv, kw, donated, *statics, *args)
        except ValueError:
            self._explain(rv, wv)
            raise

    def lower(self, rv: Any, wv: Any, /, *args: Any, **kwargs: Any) -> Any:
        return self._staged("lower", rv, wv, args, kwargs)

    def trace(self, rv: Any, wv: Any, /, *args: Any, **kwargs: Any) -> Any:
        return self._staged("trace", rv, wv, args, kwargs)

    def eval_shape(self, rv: Any, wv: Any, /, *args: Any, **kwargs: Any) -> Any:
        return self._staged("eval_shape", rv, wv, args, kwargs)

    def _explain(self, rv: Sequence[Any], wv: Sequence[Any]) -> None:
        """`jax.jit` refused the call: if a state's value is to blame, say which state.

        A value whose shape changed so that its sharding no longer divides it is a
        `SpecError`, one committed to another sharding a `ShardingError`.
        """
        shardings = [*self.read_shardings, *self.write_shardings]
        for state, value, want in zip(self.split.states, [*rv, *wv], shardings, strict=True):
            check_fits(self.label, state, self.paths.get(id(state)), value, want, fix=RESHAPED)
        self._misplaced(rv, wv)

    def _misplaced(self, rv: Sequence[Any], wv: Sequence[Any]) -> None:
        """`jax.jit` refused an argument's sharding: if a state's, say which one."""
        shardings = [*self.read_shardings, *self.write_shardings]
        for state, value, want in zip(self.split.states, [*rv, *wv], shardings, strict=True):
            if want is None:
                continue
            for leaf in jax.tree.leaves(value):
                if isinstance(leaf, jax.core.Tracer):
                    continue
                have = getattr(leaf, "sharding", None)
                committed = getattr(leaf, "committed", False)
                if have is None or not committed or have.is_equivalent_to(want, np.ndim(leaf)):
                    continue
                raise ShardingError(
                    f"{self.label}: {describe_state(state, self.paths.get(id(state)))} holds a "
                    f"value placed as {have}, but state_shardings places it as {want}; statejax "
                    "does not move it silently. Put it back with jax.device_put(state.value, "
                    "sharding) (or statejax.sharding.shard_states), or change state_shardings."
                ) from None


def _with_static_resolved(fn: Callable[..., Any], spec: JitSpec) -> JitSpec:
    """`spec` with each static parameter named both by position and by name, as `jax.jit`
    resolves them: given only `static_argnums`, a static parameter passed by keyword is
    still static (and the reverse)."""
    nums, names = spec.static_argnums, spec.static_argnames
    if bool(nums) == bool(names):  # neither, or both as the user gave them
        return spec
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return spec
    either = (inspect.Parameter.POSITIONAL_OR_KEYWORD,)
    if nums:
        names = tuple(p.name for i, p in enumerate(params) if i in nums and p.kind in either)
    else:
        nums = tuple(i for i, p in enumerate(params) if p.name in names and p.kind in either)
    return spec.model_copy(update={"static_argnums": nums, "static_argnames": names})


def _static_values(
    argnums: tuple[int, ...], argnames: tuple[str, ...], args: tuple[Any, ...], kwargs: Any
) -> Any:
    """The static arguments of a call: each combination is its own cache entry, whose
    split holds only the states that variant touches."""
    values = (
        tuple(args[i] for i in argnums if i < len(args)),
        tuple(kwargs.get(n) for n in argnames),
    )
    try:
        hash(values)
    except TypeError:  # jax.jit reports unhashable static arguments itself
        return None
    return values


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    registry.register(
        Transform("jit", jit, JitSpec, "compile with jax.jit; states threaded in and out")
    )
