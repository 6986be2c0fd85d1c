"""The few JAX internals statejax relies on, in one place.

JAX has no public way to ask which trace is current, nor which trace a tracer
belongs to. statejax needs both to keep its central promise (no state ever holds
a tracer): a value written inside a plain JAX transform nested in a statejax
trace must be refused when it is written, not when JAX finds the leak later
without naming the state. These helpers wrap `jax._src.core` so that a change in
JAX breaks one module, and `tests/engine/test_leaks.py` pins the behaviour.
"""

from __future__ import annotations

from typing import Any

import jax
from jax._src import core as _core

__all__ = [
    "current_jax_trace",
    "is_top_level",
    "is_tracing",
    "jit_disabled",
    "trace_chain",
    "tracer_trace",
]


def current_jax_trace() -> object:
    """The JAX trace operations are bound to right now (the eval trace outside transforms)."""
    return _core.trace_ctx.trace


def is_top_level() -> bool:
    """Whether no JAX transform is tracing on this thread (values are concrete)."""
    return bool(_core.trace_ctx.is_top_level())


def tracer_trace(leaf: jax.core.Tracer[Any]) -> Any:
    """The trace a tracer belongs to."""
    return leaf._trace


def jit_disabled() -> bool:
    """Whether `jax.disable_jit()` is in force (jit, scan and cond then run eagerly).

    One config read: cheap enough for a cached call path.

    Examples:
        >>> import jax
        >>> with jax.disable_jit():
        ...     jit_disabled()
        True
    """
    return bool(jax.config.jax_disable_jit)  # type: ignore[attr-defined]


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
