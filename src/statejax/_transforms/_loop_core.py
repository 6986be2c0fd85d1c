"""The loop core that `scan`, `for_loop`, `while_loop` and the checkpointed loops share.

Private to the built-in plugins. `scan_states` runs a body `(carry, x) -> (carry, y)`
as a stateful `lax.scan` (written states carried next to the user's carry, read states
constants), or as a Python loop under `jax.disable_jit()`; the checks every loop makes
on its body (`check_carried`, `pair`, `refuse_cond_writes`), and the eager
`while_loop` (`while_eagerly`), live here too. `ScanSpec` holds the options of a scan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import pydantic
from jax import lax

from statejax._errors import LoopBodyError
from statejax._transforms._common import (
    Count,
    PositiveCount,
    TraceValueError,
    cached_call,
    eager_call,
    jit_disabled,
    run_eagerly,
    show_signature,
    signature,
)
from statejax._transforms.progress import BarHandler, PbarOption, progress_handler
from statejax.extend import (
    Lift,
    PureCore,
    SpecError,
    Split,
    State,
    StatefulFunction,
    TraceError,
    TransformSpec,
    describe_state,
)

__all__ = [
    "BODY",
    "COND",
    "ScanSpec",
    "TracedCondition",
    "check_carried",
    "loop_length",
    "pair",
    "refuse_cond_writes",
    "dispatcher",
    "for_body",
    "scan_states",
    "while_eagerly",
]

C = TypeVar("C")

#: Which function of a `while_loop` the pure core runs: its one dispatching function
#: takes this name as its first argument.
COND = "cond_fun"
BODY = "body_fun"


class ScanSpec(TransformSpec):
    """Options of `scan`."""

    length: Count | None = pydantic.Field(
        default=None, description="number of steps; needed when xs is None"
    )
    reverse: bool = pydantic.Field(default=False, description="run the steps from last to first")
    unroll: PositiveCount | pydantic.StrictBool = pydantic.Field(
        default=1,
        description="how many steps to unroll per loop iteration (a positive int; True: all, "
        "False: none)",
    )
    pbar: PbarOption = None


def loop_length(name: str, xs: Any, length: int | None) -> int | None:
    """The number of steps (`None` for a malformed `xs`, which lax.scan reports)."""
    if length is not None:
        return length
    leaves = jax.tree.leaves(xs)
    if not leaves:
        raise SpecError(
            f"statejax.{name}: there is nothing to loop over (no arrays in xs) and no length; "
            "pass length=n to run n steps without xs."
        )
    shape = np.shape(leaves[0])
    return int(shape[0]) if shape else None


def check_carried(
    name: str, split: Split, old_vals: Sequence[Any], new_vals: Sequence[Any]
) -> None:
    """A written state must keep its structure, shapes and dtypes from step to step."""
    for state, old, new in zip(split.write_states, old_vals, new_vals, strict=True):
        before, after = signature(old), signature(new)
        if before != after:
            raise TraceError(
                f"statejax.{name}: the loop body changes {describe_state(state)} from "
                f"{show_signature(before)} to {show_signature(after)}; a state written in a "
                "loop is carried from step to step, so it must keep its shape and dtype. Give "
                "the state its final shape and dtype before the loop (for example "
                "jnp.zeros(shape, dtype))."
            )


def pair(out: Any, name: str, fn_name: str) -> tuple[Any, Any]:
    """The body's `(carry, y)`; anything else is a `TypeError` naming the body."""
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise LoopBodyError(
            f"statejax.{name}({fn_name}): the loop body must return a pair (carry, y); it "
            f"returned {type(out).__name__} {out!r:.80}. Return the new carry and this "
            "step's output, for example `return carry, y` (`return carry, None` for none)."
        )
    return out[0], out[1]


def _eager_length(xs: Any, total: int | None) -> int | None:
    """The number of steps of an eager scan, or `None` to leave it to `lax.scan`
    (no steps, whose outputs only a trace can shape, or a malformed `xs`)."""
    lengths = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(xs)}
    if not total or len(lengths - {total}) > 0:
        return None
    return total


def _scan_eagerly(
    f: Callable[..., Any],
    init: Any,
    xs: Any,
    n: int,
    spec: ScanSpec,
    progress: BarHandler | None,
    name: str,
    fn_name: str,
) -> tuple[Any, Any]:
    """`_scan` under `jax.disable_jit()`: a Python loop of `n` steps, like `lax.scan`'s."""
    xs = jax.tree.map(jnp.asarray, xs)

    def loop() -> tuple[Any, Any]:
        carry, ys = init, []
        steps = reversed(range(n)) if spec.reverse else range(n)
        for done, i in enumerate(steps, 1):
            carry, y = pair(f(carry, jax.tree.map(itemgetter(i), xs)), name, fn_name)
            ys.append(y)
            if progress is not None:
                progress.tick_eagerly(done, carry, y)
        if spec.reverse:
            ys.reverse()
        return carry, jax.tree.map(lambda *y: jnp.stack(y), *ys)

    return run_eagerly(f"statejax.{name}({fn_name})", loop)


def dispatcher(cond_fun: Callable[..., Any], body_fun: Callable[..., Any]) -> Callable[..., Any]:
    """The one function a while loop's pure core runs: `(COND or BODY, val)`."""

    def dispatch(which: str, val: Any) -> Any:
        return body_fun(val) if which == BODY else cond_fun(val)

    return dispatch


def for_body(f: Callable[..., Any]) -> Callable[[None, tuple[Any, ...]], tuple[None, Any]]:
    """The scan body of a for loop of `f`: `f` applied to the step's slices, no carry."""

    def body(carry: None, x: tuple[Any, ...]) -> tuple[None, Any]:
        return carry, f(*x)

    return body


def scan_states(
    f: Callable[..., Any],
    init: Any,
    xs: Any,
    spec: ScanSpec,
    name: str,
    fn_name: str,
    adapt: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
) -> tuple[Any, Any]:
    """`lax.scan` of `f` (or of `adapt(f)`, the loop body made from the user's `f`),
    threading states. `adapt` must be a module-level function: at the top level the
    compiled loop is cached per identity of `f`, `adapt` and the options."""
    total = loop_length(name, xs, spec.length)
    progress = progress_handler(spec.pbar, total, name)
    if jit_disabled():
        n = _eager_length(xs, total)
        if n is not None:
            body = f if adapt is None else adapt(f)
            return _scan_eagerly(body, init, xs, n, spec, progress, name, fn_name)
    label = f"statejax.{name}({fn_name})"
    stateful: StatefulFunction[tuple[Any, Any]] | None = None
    if progress is None:

        def build(fns: Sequence[Callable[..., Any]]) -> tuple[Callable[..., Any], str, Lift]:
            body = fns[0] if adapt is None else adapt(fns[0])
            return body, label, _scan_lift(spec, name, fn_name, None)

        stateful = cached_call(name, (f,), (spec, adapt), build)
    if stateful is None:
        body = f if adapt is None else adapt(f)
        stateful = StatefulFunction(
            body, label, _scan_lift(spec, name, fn_name, progress), staged=True
        )
    return stateful(init, xs)


def _scan_lift(spec: ScanSpec, name: str, fn_name: str, progress: Any) -> Lift:
    def lift(split: Split, pure: PureCore) -> Callable[..., tuple[Any, list[Any]]]:
        def transformed(
            read_vals: list[Any], write_vals: list[Any], init: Any, xs: Any
        ) -> tuple[Any, list[Any]]:
            def body(carry: Any, x: Any) -> tuple[Any, Any]:
                step, state_vals, c = carry
                out, new_state_vals = pure(read_vals, state_vals, c, x)
                check_carried(name, split, state_vals, new_state_vals)
                new_c, y = pair(out, name, fn_name)
                if progress is not None:
                    step = step + 1
                    progress.tick(step, new_c, y)
                return (step, new_state_vals, new_c), y

            step0 = jnp.zeros((), jnp.int32) if progress is not None else None
            (_, new_write_vals, carry), ys = lax.scan(
                body,
                (step0, list(write_vals), init),
                xs,
                length=spec.length,
                reverse=spec.reverse,
                unroll=spec.unroll,
            )
            return (carry, ys), new_write_vals

        return transformed

    return lift


def refuse_cond_writes(
    cond_name: str, written: Sequence[State[Any]], loop: str = "while_loop"
) -> None:
    if written:
        names = ", ".join(describe_state(s) for s in written)
        raise TraceValueError(
            f"statejax.{loop}: cond_fun {cond_name} writes {names}; a loop "
            "condition must not change states (it is evaluated an extra time, and "
            "its writes would be lost). Move the write into body_fun."
        )


class TracedCondition(Exception):
    """The eager loop's condition has no concrete value (the loop runs inside `vmap` under
    `jax.disable_jit()`): the caller runs the traced loop instead. No state has changed."""


def while_eagerly(
    cond_fun: Callable[[C], Any],
    body_fun: Callable[[C], C],
    init_val: C,
    body_name: str,
    cond_name: str,
) -> C:
    """`while_loop` under `jax.disable_jit()`: a Python loop, like `lax.while_loop`'s.

    Raises `TracedCondition` when the condition is not concrete; the loop's writes are
    then not applied (`run_eagerly` applies them only when the loop returns).
    """

    def cond(val: C) -> bool:
        out, writes = eager_call(f"statejax.while_loop({cond_name})", cond_fun, val)
        refuse_cond_writes(cond_name, [s for s, _ in writes])
        try:
            return bool(out)
        except jax.errors.ConcretizationTypeError:
            raise TracedCondition from None

    def loop() -> C:
        val = init_val
        while cond(val):
            val = body_fun(val)
        return val

    return run_eagerly(f"statejax.while_loop({body_name})", loop)
