"""A conformance kit for transform authors: the checks every state-aware transform passes.

`check_transform` takes a registered transform (its name) or a transform
function and runs it through the checks in `CHECKS`, each on fresh states: a
function that reads a `ParamState` `w` and increments a `ShortTermState`
`count` once per call is transformed with the author's `apply` and then called
eagerly, under `jit`, inside and around `grad` and `vmap`, inside `scan` and
`cond`. Each check compares the result with plain JAX (the author's `reference`
says what the transform computes), checks that the write persisted, and that no
state holds a tracer afterwards. `trace_error` and `run_error` raise inside the
function (while JAX traces it, and from a callback while it runs) and check that
every state is unchanged; `leaks` runs it under `jax.checking_leaks()` (the report
names the leaked trace and tracers but, unlike JAX's, not the chain of objects that
keeps each tracer alive: JAX walks the whole heap once per link, minutes in a long
test session; rerun the call under `jax.checking_leaks()` to see the chain); `spec`
checks the options model's JSON schema and that an unknown option is a
`statejax.SpecError`. The author says which checks apply with `checks=`.

The pytest plugin `statejax_pytest` (entry point `pytest11`, so installed with
statejax) provides the same function as the `statejax_conformance` fixture; it
adds nothing else and imports nothing until a test requests the fixture.

Examples:
    >>> import statejax as sj
    >>> from statejax.testing import check_transform
    >>> check_transform("jit", checks=["eager", "jit", "spec"])
    ('eager', 'jit', 'spec')
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from statejax._errors import SpecError
from statejax._jax_compat import checking_leaks_briefly
from statejax._state import ParamState, ShortTermState, State
from statejax._transforms.autodiff import grad
from statejax._transforms.conditionals import cond
from statejax._transforms.jit import jit
from statejax._transforms.loops import scan
from statejax._transforms.vmap import vmap
from statejax.registry._manager import get_registry
from statejax.registry._protocol import TransformSpec, parse_spec, spec_schema

__all__ = ["CHECKS", "Apply", "ConformanceError", "check_transform"]

#: Every check, in the order they run.
CHECKS: tuple[str, ...] = (
    "eager",
    "jit",
    "grad_inside",
    "grad_around",
    "vmap_inside",
    "vmap_around",
    "scan",
    "cond",
    "trace_error",
    "run_error",
    "leaks",
    "spec",
)

#: `apply(fn, states, **options) -> transformed`: how to apply the transform to the
#: kit's function; `states` maps `"w"` and `"count"` to the states it uses.
Apply = Callable[..., Callable[..., Any]]


class ConformanceError(AssertionError):
    """A transform failed a check of `check_transform`; the message names the check."""


class _Boom(Exception):
    """The error the kit raises inside the transformed function."""


class _Case:
    """Fresh states and the function the checks transform."""

    def __init__(self) -> None:
        self.w = ParamState(jnp.array([1.0, 2.0]))
        self.count = ShortTermState(jnp.array(0.0))
        self.states: dict[str, State[Any]] = {"w": self.w, "count": self.count}

    def step(self, x: jax.Array) -> jax.Array:
        self.count.value = self.count.value + 1.0
        return jnp.sum(self.w.value * x)

    @staticmethod
    def pure(x: jax.Array) -> jax.Array:
        return jnp.sum(jnp.array([1.0, 2.0]) * x)


_X = jnp.array([0.5, -1.0])
_XS = jnp.array([[0.5, -1.0], [2.0, 1.0], [0.0, 3.0]])


def check_transform(
    transform: str | Callable[..., Any],
    apply: Apply | None = None,
    *,
    checks: Iterable[str] = CHECKS,
    reference: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
    spec: type[TransformSpec] | None = None,
) -> tuple[str, ...]:
    """Run `transform` through the conformance checks; raise on the first failure.

    Args:
        transform: a registered transform's name (`"ema"`), or the transform
            function itself.
        apply: `apply(fn, states, **options)` applies the transform to `fn`;
            `states` maps `"w"` (read) and `"count"` (written) to the kit's
            states, and `options` must reach the transform (the `spec` check
            passes an unknown one). Default: `transform(fn, **options)`.
        checks: the names in `CHECKS` that apply to this transform.
        reference: what the transform computes, on a plain JAX function
            (`jax.jit` and `ema` compute what the function computes: the
            default, identity; a gradient transform would give `jax.grad`).
        spec: the options model; found in the registry when not given.

    Returns:
        The names of the checks run, in order.

    Raises:
        ConformanceError: a check failed; the message names the transform,
            the check and what went wrong.
        ValueError: a name in `checks` is not in `CHECKS`.

    Examples:
        >>> from statejax.testing import ConformanceError, check_transform
        >>> def naive_jit(fn):  # plain jax.jit: the function writes states while traced
        ...     return jax.jit(fn)
        >>> try:
        ...     check_transform(naive_jit, checks=["eager"])
        ... except ConformanceError as exc:
        ...     print(str(exc).split(":")[:3])
        ['statejax.testing', " check 'eager' failed", ' naive_jit raised TraceError']
    """
    selected = tuple(checks)
    unknown = [c for c in selected if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; choose from {', '.join(CHECKS)}")
    function, name, found_spec = _resolve(transform)
    spec = spec if spec is not None else found_spec
    ref = reference if reference is not None else (lambda f: f)

    def default_apply(fn: Callable[..., Any], states: Mapping[str, State[Any]], **o: Any) -> Any:
        return function(fn, **o)

    run = _Runner(name, apply if apply is not None else default_apply, ref, spec)
    done = []
    for check in CHECKS:
        if check in selected:
            try:
                getattr(run, check)()
            except ConformanceError:
                raise
            except Exception as exc:
                raise ConformanceError(
                    f"statejax.testing: check {check!r} failed: {name} raised "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            done.append(check)
    return tuple(done)


def _resolve(
    transform: str | Callable[..., Any],
) -> tuple[Callable[..., Any], str, type[TransformSpec] | None]:
    registry = get_registry()
    if isinstance(transform, str):
        entry = registry.get(transform)
        return entry.function, transform, entry.spec
    for entry in registry.transforms.values():
        if entry.function is transform:
            return transform, entry.name, entry.spec
    return transform, getattr(transform, "__name__", repr(transform)), None


class _Runner:
    """One method per check; each builds a fresh `_Case`."""

    def __init__(
        self,
        name: str,
        apply: Apply,
        ref: Callable[[Callable[..., Any]], Callable[..., Any]],
        spec: type[TransformSpec] | None,
    ) -> None:
        self.name = name
        self.apply = apply
        self.ref = ref
        self.options = spec

    def fail(self, check: str, what: str) -> ConformanceError:
        return ConformanceError(f"statejax.testing: check {check!r} failed: {self.name} {what}")

    def expect(self, check: str, case: _Case, out: Any, want: Any, count: float) -> None:
        """The result matches plain JAX, `count` was written `count` times, no tracer stays."""
        _no_tracers(self, check, case)
        got = float(case.count.value)
        if got != count:
            raise self.fail(
                check,
                f"lost a write: state 'count' holds {got} after the calls, expected {count} "
                "(the function increments it once per call). Return new values through lift; "
                "the engine merges them.",
            )
        if not np.allclose(np.asarray(out), np.asarray(want), rtol=1e-5, atol=1e-6):
            raise self.fail(check, f"returned {out!r}, plain JAX gives {want!r}")

    def eager(self) -> None:
        case = _Case()
        g = self.apply(case.step, case.states)
        g(_X)
        self.expect("eager", case, g(_X), self.ref(case.pure)(_X), 2.0)

    def jit(self) -> None:
        case = _Case()
        g = self.apply(case.step, case.states)
        h = jit(lambda x: g(x))
        h(_X)
        self.expect("jit", case, h(_X), self.ref(case.pure)(_X), 2.0)

    def grad_inside(self) -> None:
        case = _Case()
        g = self.apply(case.step, case.states)
        out = grad(lambda x: g(x))(_X)
        self.expect("grad_inside", case, out, jax.grad(self.ref(case.pure))(_X), 1.0)

    def grad_around(self) -> None:
        case = _Case()
        g = self.apply(lambda x: grad(case.step)(x), case.states)
        self.expect("grad_around", case, g(_X), self.ref(jax.grad(case.pure))(_X), 1.0)

    def vmap_inside(self) -> None:
        case = _Case()
        g = self.apply(case.step, case.states)
        out = vmap(lambda x: g(x))(_XS)
        self.expect("vmap_inside", case, out, jax.vmap(self.ref(case.pure))(_XS), 1.0)

    def vmap_around(self) -> None:
        case = _Case()
        g = self.apply(lambda xs: vmap(case.step)(xs), case.states)
        self.expect("vmap_around", case, g(_XS), self.ref(jax.vmap(case.pure))(_XS), 1.0)

    def scan(self) -> None:
        case = _Case()
        g = self.apply(case.step, case.states)
        total, _ = scan(lambda c, x: (c + g(x), None), jnp.array(0.0), _XS)
        f = self.ref(case.pure)
        want, _ = jax.lax.scan(lambda c, x: (c + f(x), None), jnp.array(0.0), _XS)
        self.expect("scan", case, total, want, 3.0)

    def cond(self) -> None:
        case = _Case()
        g = self.apply(case.step, case.states)
        other = self.apply(lambda x: jnp.sum(x) * 0.0, case.states)
        out = cond(jnp.array(True), g, other, _X)
        cond(jnp.array(False), g, other, _X)
        self.expect("cond", case, out, self.ref(case.pure)(_X), 1.0)

    def _atomic(self, check: str, bad: Callable[[_Case], Callable[..., Any]]) -> None:
        """Calling the transformed `bad` raises, eagerly and under jit; no state changes."""
        for where, wrap in (("", lambda g: g), (" under statejax.jit", jit)):
            case = _Case()
            g = wrap(self.apply(bad(case), case.states))
            before = {k: np.asarray(s.value) for k, s in case.states.items()}
            try:
                g(_X)
            except Exception:
                pass
            else:
                raise self.fail(check, f"swallowed the function's exception{where}")
            _no_tracers(self, check, case)
            for key, state in case.states.items():
                if not np.array_equal(np.asarray(state.value), before[key]):
                    raise self.fail(
                        check,
                        f"is not atomic{where}: the function raised, yet state {key!r} changed "
                        f"from {before[key]!r} to {np.asarray(state.value)!r}. Merge written "
                        "values only after the whole call succeeded (the engine does).",
                    )

    def trace_error(self) -> None:
        def bad(case: _Case) -> Callable[..., Any]:
            def f(x: jax.Array) -> jax.Array:
                case.step(x)
                raise _Boom("raised while tracing")

            return f

        self._atomic("trace_error", bad)

    def run_error(self) -> None:
        def explode(v: Any) -> Any:
            raise _Boom("raised while running")

        def bad(case: _Case) -> Callable[..., Any]:
            def f(x: jax.Array) -> Any:
                y = case.step(x)
                shape = jax.ShapeDtypeStruct((), y.dtype)  # type: ignore[no-untyped-call]
                return jax.pure_callback(explode, shape, y)

            return f

        self._atomic("run_error", bad)

    def leaks(self) -> None:
        case = _Case()
        g = self.apply(case.step, case.states)
        try:
            with checking_leaks_briefly():
                g(_X)
                jit(lambda x: g(x))(_X)
        except Exception as exc:
            if "leak" not in str(exc).lower():
                raise
            raise self.fail(
                "leaks", f"leaked a tracer (jax.checking_leaks): {str(exc).splitlines()[0]}"
            ) from exc
        _no_tracers(self, "leaks", case)

    def spec(self) -> None:
        spec = self.options
        if spec is None:
            raise self.fail("spec", "has no spec: pass spec=, or register the transform")
        schema = json.loads(json.dumps(spec_schema(spec)))
        if schema.get("type") != "object" or set(schema.get("properties", {})) != set(
            spec.model_fields
        ):
            raise self.fail(
                "spec", f"has a JSON schema that does not describe its fields: {schema}"
            )
        for label, attempt in (
            ("its spec", lambda: parse_spec(spec, self.name, not_an_option_=1)),  # type: ignore[call-arg]
            (
                "the transform",
                lambda: self.apply(_Case().step, _Case().states, not_an_option_=1),
            ),
        ):
            try:
                attempt()
            except SpecError as exc:
                if "not_an_option_" not in str(exc):
                    raise self.fail(
                        "spec", f"rejects an unknown option without naming it: {exc}"
                    ) from exc
            except TypeError as exc:
                raise self.fail(
                    "spec",
                    f"rejects an unknown option with a TypeError ({exc}), not a SpecError: "
                    "take **misspelled: Never and pass it to parse_spec",
                ) from exc
            else:
                raise self.fail("spec", f"accepts an unknown option ({label})")


def _no_tracers(run: _Runner, check: str, case: _Case) -> None:
    for key, state in case.states.items():
        stored = state._value  # what every thread sees: never a tracer
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(stored)):
            raise run.fail(check, f"left a tracer in state {key!r}: {stored!r}")
