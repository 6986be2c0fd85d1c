"""The few JAX internals statejax relies on, in one place.

JAX has no public way to ask which trace is current, nor which trace a tracer
belongs to. statejax needs both to keep its central promise (no state ever holds
a tracer): a value written inside a plain JAX transform nested in a statejax
trace must be refused when it is written, not when JAX finds the leak later
without naming the state. These helpers wrap `jax._src.core` so that a change in
JAX breaks one module, and `tests/engine/test_leaks.py` pins the behaviour.

The other internals used (`jax.interpreters` to give a primitive a batching rule
and a lowering, `jax.api_util.shaped_abstractify`, `jax.core.eval_jaxpr`, and the
jaxpr tracer's `new_arg` and equation emitter, with which a jitted function's first
call is traced once: `new_trace_input`, `paste_jaxpr`) are wrapped here too: no other module of the package names `jax._src`,
`jax.interpreters`, `jax.api_util` or a non-public `jax.core` name
(`tests/test_layout.py` checks it).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import jax
from jax import api_util as _api_util
from jax._src import config as _config
from jax._src import core as _core
from jax._src import effects as _effects
from jax._src import source_info_util as _source_info_util
from jax._src import traceback_util as _traceback_util
from jax._src import xla_bridge as _xla_bridge
from jax._src.interpreters import partial_eval as _pe
from jax.extend.core import ClosedJaxpr, Primitive
from jax.interpreters import batching as _batching
from jax.interpreters import mlir as _mlir

__all__ = [
    "DISABLE_JIT",
    "api_boundary",
    "backends_initialized",
    "checking_leaks_briefly",
    "current_jax_trace",
    "eval_closed_jaxpr",
    "is_top_level",
    "is_tracing",
    "jit_disabled",
    "new_trace_input",
    "paste_jaxpr",
    "statejax_dir",
    "register_batch_rule",
    "register_lowering_of",
    "shaped_abstractify",
    "trace_chain",
    "tracer_trace",
    "tracer_var",
]


def backends_initialized() -> bool:
    """Whether JAX has started its backends (after which the platform and the number of
    host devices are fixed for the process)."""
    return bool(_xla_bridge.backends_are_initialized())


def current_jax_trace() -> object:
    """The JAX trace operations are bound to right now (the eval trace outside transforms)."""
    return _core.trace_ctx.trace


# `trace_ctx.is_top_level()` without its two property lookups: on the cached call path.
_TRACE_STATE = _core.trace_state_strong_ref
_AXIS_ENV_STATE = _core.axis_env_state
#: JAX's `jax_disable_jit` flag: `DISABLE_JIT.value` is `jit_disabled()` without the call.
DISABLE_JIT = _config.disable_jit


def is_top_level() -> bool:
    """Whether no JAX transform is tracing on this thread (values are concrete).

    Examples:
        >>> import jax
        >>> seen = []
        >>> _ = jax.jit(lambda x: seen.append(is_top_level()) or x)(1.0)
        >>> is_top_level(), seen
        (True, [False])
    """
    return _TRACE_STATE.value is _core.eval_trace and _AXIS_ENV_STATE.value is _core.top_axis_env


def tracer_trace(leaf: jax.core.Tracer[Any]) -> Any:
    """The trace a tracer belongs to."""
    return leaf._trace


def tracer_var(leaf: jax.core.Tracer[Any]) -> object:
    """The variable of the jaxpr being traced that `leaf` stands for (`None` if none).

    Examples:
        >>> import jax
        >>> seen = []
        >>> closed = jax.make_jaxpr(lambda x: seen.append(tracer_var(x)) or x)(1.0)
        >>> seen[0] is closed.jaxpr.invars[0]
        True
    """
    return getattr(leaf, "val", None) if isinstance(leaf, _pe.DynamicJaxprTracer) else None


def jit_disabled() -> bool:
    """Whether `jax.disable_jit()` is in force (jit, scan and cond then run eagerly).

    One config read: cheap enough for a cached call path.

    Examples:
        >>> import jax
        >>> with jax.disable_jit():
        ...     jit_disabled()
        True
    """
    return bool(DISABLE_JIT.value)


def trace_chain(trace: object) -> list[object]:
    """`trace` and the traces it runs inside, innermost first (ending at the eval trace)."""
    chain = []
    while trace is not None:
        chain.append(trace)
        trace = getattr(trace, "parent_trace", None)
    return chain


def is_tracing() -> bool:
    """Whether operations are being traced (not evaluated) here: some JAX transform is
    running, and `jax.ensure_compile_time_eval()` is not in force."""
    return _core.trace_ctx.trace is not _core.eval_trace


F = TypeVar("F", bound=Callable[..., Any])

#: The directory of statejax's own source files.
statejax_dir = os.path.dirname(os.path.abspath(__file__))

# Tracebacks through statejax are filtered as JAX filters its own: an error raised in the
# user's function under a transform shows the user's frames, not statejax's (nor JAX's).
# `JAX_TRACEBACK_FILTERING=off` shows them all. JAX's source information (the line an
# operation is attributed to) skips statejax's frames as well.
_traceback_util.register_exclusion(statejax_dir)


def api_boundary(fn: F) -> F:
    """Mark `fn`, a public entry point, as JAX marks its own: an exception raised below it
    leaves with the frames of statejax and JAX removed from its traceback.

    Examples:
        >>> def user_code():
        ...     raise ValueError("bad input")
        >>> entry = api_boundary(lambda: user_code())
        >>> try:
        ...     entry()
        ... except ValueError as exc:
        ...     print(exc)
        bad input
    """
    return _traceback_util.api_boundary(fn)


def shaped_abstractify(leaf: Any) -> Any:
    """The abstract value (shape, dtype, weak type) of an array, number or `ShapeDtypeStruct`.

    Examples:
        >>> import jax.numpy as jnp
        >>> shaped_abstractify(jnp.zeros((2, 3))).str_short()
        'float32[2,3]'
    """
    return _api_util.shaped_abstractify(leaf)  # type: ignore[no-untyped-call]


def eval_closed_jaxpr(closed: ClosedJaxpr, *args: Any) -> list[Any]:
    """Evaluate a closed jaxpr on flat arguments; the flat outputs.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> closed = jax.make_jaxpr(lambda x: x * 2)(1.0)
        >>> [float(v) for v in eval_closed_jaxpr(closed, jnp.float32(3.0))]
        [6.0]
    """
    outs: list[Any] = jax.core.eval_jaxpr(closed.jaxpr, closed.consts, *args)
    return outs


def new_trace_input(trace: object, leaf: Any) -> Any | None:
    """A new input of the jaxpr `trace` is building, typed as `jax.jit` would type `leaf`.

    `trace` must be the trace of a `jax.jit` being traced (`jax.jit(f).trace(...)`):
    the input is appended to its jaxpr's inputs, after the declared ones. `None` when
    `trace` builds no jaxpr or `leaf` is no array (nothing is added then).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> hidden = jnp.ones(3)
        >>> def f(x):
        ...     return x + new_trace_input(current_jax_trace(), hidden).sum()
        >>> jax.jit(f).trace(1.0).jaxpr.in_avals
        [ShapedArray(float32[], weak_type=True), ShapedArray(float32[3])]
    """
    if not isinstance(trace, _pe.DynamicJaxprTrace):
        return None
    try:
        aval = _core.shaped_abstractify(leaf)  # type: ignore[no-untyped-call]
    except TypeError:
        return None
    return trace.new_arg(aval, _source_info_util.current())


def paste_jaxpr(closed: ClosedJaxpr, inputs: list[Any]) -> list[Any] | None:
    """Stage `closed` applied to `inputs` into the jaxpr being traced; its outputs.

    The equations are copied as they are (with their source lines), none is traced
    again: for a jaxpr recorded by an earlier trace of the same function. `inputs` are
    tracers of the current trace, one per input of `closed`, of its types. `None`
    (nothing staged) when no jaxpr is being traced here, or when `closed` is a
    high-level jaxpr (`jax.experimental.hijax` types or primitives): the trace must
    then lower it to plain JAX, which it learns only from tracing each primitive.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> closed = jax.make_jaxpr(lambda x: x * 2 + 1)(1.0)
        >>> jax.jit(lambda x: paste_jaxpr(closed, [x])[0])(jnp.float32(3.0)).item()
        7.0
    """
    trace = _core.trace_ctx.trace
    jaxpr = closed.jaxpr
    if not isinstance(trace, _pe.DynamicJaxprTrace) or jaxpr.is_high:
        return None
    here = _source_info_util.current()
    env: dict[Any, Any] = dict(
        zip(
            [*jaxpr.constvars, *jaxpr.invars],
            [
                *(trace.new_const(c, source_info=here) for c in closed.consts),
                *(trace.to_jaxpr_tracer(x, here) for x in inputs),
            ],
            strict=True,
        )
    )

    def atom(x: Any, source: Any) -> Any:
        if isinstance(x, _core.Literal):
            return _pe.DynamicJaxprTracer(trace, x.aval, x, source)
        return env[x]

    for eqn in jaxpr.eqns:
        source = eqn.source_info
        ins = [atom(x, source) for x in eqn.invars]
        effects = (
            {
                e.replace(env[e.input].val) if isinstance(e, _effects.JaxprInputEffect) else e
                for e in eqn.effects
            }
            if eqn.effects
            else eqn.effects
        )
        outs = trace.emit_eqn(  # type: ignore[no-untyped-call]
            ins, [v.aval for v in eqn.outvars], eqn.primitive, eqn.params, effects, source, eqn.ctx
        )
        env.update(zip(eqn.outvars, outs, strict=True))
    return [trace.to_jaxpr_tracer(atom(x, here), here) for x in jaxpr.outvars]


def register_batch_rule(
    prim: Primitive, rule: Callable[[tuple[Any, ...], tuple[Any, ...]], tuple[Any, Any]]
) -> None:
    """Give `prim` its `vmap` rule: `rule(args, dims) -> (out, out_dim)`."""
    _batching.primitive_batchers[prim] = rule


def register_lowering_of(prim: Primitive, impl: Callable[[Any], Any]) -> None:
    """Lower `prim` (one operand, one result) as `impl`, a function of JAX operations."""
    _mlir.register_lowering(prim, _mlir.lower_fun(impl, multiple_results=False))


_brief_lock = threading.Lock()
_brief_depth = 0  # how many `checking_leaks_briefly` blocks are open, on any thread


@contextlib.contextmanager
def checking_leaks_briefly() -> Iterator[None]:
    """`jax.checking_leaks()` whose error names the leaked trace and tracers, without the
    chain of objects that keeps each tracer alive.

    JAX finds a leak cheaply (the trace outlives its `with` block) and then explains it:
    from each leaked tracer it follows one referrer at a time up to a module, and each
    link is a `gc.get_referrers` call, a walk over every object of the process. A
    report costs hundreds of such walks: seconds in a small process, minutes in a long
    test session that holds millions of objects. Inside this block the explanation is
    left out: detection is JAX's own, and the error's text is JAX's up to the chain
    (`Leaked trace ...`, then each tracer with where it was created). Reporting costs one
    `gc.collect()` and one `gc.get_referrers` per leaked trace, whatever the leak.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> kept = []
        >>> def leak(x):
        ...     kept.append(x)
        ...     return x
        >>> try:
        ...     with checking_leaks_briefly():
        ...         jax.jit(leak)(jnp.ones(2))
        ... except Exception as exc:
        ...     print(str(exc).startswith("Leaked trace"), "is referred to by" in str(exc))
        True False
    """
    global _brief_depth
    with _brief_lock:
        _brief_depth += 1
        if _brief_depth == 1:
            _core._why_alive = _no_referrer_chain
    try:
        with jax.checking_leaks():
            yield
    finally:
        with _brief_lock:
            _brief_depth -= 1
            if _brief_depth == 0:
                _core._why_alive = _why_alive


_why_alive = _core._why_alive


def _no_referrer_chain(ignore_ids: set[int], x: Any) -> str:
    """Stands in for `jax._src.core._why_alive` inside `checking_leaks_briefly`."""
    return ""
