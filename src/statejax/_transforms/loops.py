"""Loops over functions that read and write states: `scan`, `for_loop`, `while_loop`.

Each loop wraps its body in the engine's split / pure core / merge recipe and
hands the pure core to `jax.lax.scan` or `jax.lax.while_loop`:

- states **written** in the body are part of the loop carry, next to the user's
  carry, so each step sees the previous step's value and the final values are
  stored back after the loop;
- states only **read** are passed in once as loop constants, not carried.

The result equals a Python loop over the same body. Reverse-mode gradients flow
through `scan` and `for_loop` (with respect to states and
arguments); `while_loop` supports forward mode only (`jax.jvp`,
`jax.jacfwd`), exactly as `jax.lax.while_loop`.

`scan` and `for_loop` take `pbar=` (a `ProgressBar`, or an int `k`) to show
a tqdm progress bar driven from inside the compiled loop through a host
callback, every `k` steps; it works under `jit`.

Under `jax.disable_jit()` every loop runs as a Python loop over concrete values, as
`jax.lax.scan` and `jax.lax.while_loop` do there, so a body may call `float(x)` or
branch on a value with `if`; the states it writes are still carried from step to step
and stored after the loop (all together; if a step raises, no state changes).
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
    eager_call,
    jit_disabled,
    name_of,
    run_eagerly,
    show_signature,
    signature,
)
from statejax._transforms.progress import (
    BarHandler,
    PbarOption,
    ProgressBar,
    check_pbar_type,
    progress_handler,
)
from statejax.extend import (
    PureCore,
    SpecError,
    Split,
    State,
    StatefulFunction,
    TraceError,
    Transform,
    TransformSpec,
    describe_state,
    hookimpl,
    parse_spec,
)

__all__ = [
    "ForLoopSpec",
    "ProgressBar",
    "ScanSpec",
    "WhileLoopSpec",
    "for_loop",
    "scan",
    "while_loop",
]

C = TypeVar("C")
Y = TypeVar("Y")


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


class ForLoopSpec(ScanSpec):
    """Options of `for_loop` (the same as `scan`)."""


class WhileLoopSpec(TransformSpec):
    """Options of `while_loop`: none."""


def _loop_length(name: str, xs: Any, length: int | None) -> int | None:
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


# -- scan / for_loop -----------------------------------------------------------------


def _check_carried(
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


def _pair(out: Any, name: str, fn_name: str) -> tuple[Any, Any]:
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
            carry, y = _pair(f(carry, jax.tree.map(itemgetter(i), xs)), name, fn_name)
            ys.append(y)
            if progress is not None:
                progress.tick_eagerly(done, carry, y)
        if spec.reverse:
            ys.reverse()
        return carry, jax.tree.map(lambda *y: jnp.stack(y), *ys)

    return run_eagerly(f"statejax.{name}({fn_name})", loop)


def _scan(
    f: Callable[..., Any], init: Any, xs: Any, spec: ScanSpec, name: str, fn_name: str
) -> tuple[Any, Any]:
    total = _loop_length(name, xs, spec.length)
    progress = progress_handler(spec.pbar, total, name)
    if jit_disabled():
        n = _eager_length(xs, total)
        if n is not None:
            return _scan_eagerly(f, init, xs, n, spec, progress, name, fn_name)

    def lift(split: Split, pure: PureCore) -> Callable[..., tuple[Any, list[Any]]]:
        def transformed(
            read_vals: list[Any], write_vals: list[Any], init: Any, xs: Any
        ) -> tuple[Any, list[Any]]:
            def body(carry: Any, x: Any) -> tuple[Any, Any]:
                step, state_vals, c = carry
                out, new_state_vals = pure(read_vals, state_vals, c, x)
                _check_carried(name, split, state_vals, new_state_vals)
                new_c, y = _pair(out, name, fn_name)
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

    stateful: StatefulFunction[tuple[Any, Any]] = StatefulFunction(
        f, f"statejax.{name}({fn_name})", lift, staged=True
    )
    return stateful(init, xs)


def scan(
    f: Callable[[C, Any], tuple[C, Y]],
    init: C,
    xs: Any,
    length: int | None = None,
    reverse: bool = False,
    unroll: int | bool = 1,
    pbar: ProgressBar | int | None = None,
) -> tuple[C, Y]:
    """Scan `f(carry, x) -> (carry, y)` over the leading axis of `xs`, threading states.

    Like `jax.lax.scan`, returns `(final_carry, stacked_ys)`. States that
    `f` writes are carried from step to step and hold their final values
    afterwards; states it only reads are loop constants. Differentiable in
    reverse mode. `pbar=ProgressBar(...)` (or an int `k`) shows a progress
    bar updated every `k` steps from inside the compiled loop.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import scan
        >>> total = sj.State(jnp.array(0.0))
        >>> def step(carry, x):
        ...     total.value = total.value + x
        ...     return carry + 1, total.value
        >>> n, running = scan(step, 0, jnp.arange(4.0))
        >>> int(n), running.tolist(), float(total.value)
        (4, [0.0, 1.0, 3.0, 6.0], 6.0)
    """
    check_pbar_type("scan", pbar)
    spec = parse_spec(ScanSpec, "scan", length=length, reverse=reverse, unroll=unroll, pbar=pbar)
    return _scan(f, init, xs, spec, "scan", name_of(f))


def for_loop(
    f: Callable[..., Y],
    *xs: Any,
    length: int | None = None,
    reverse: bool = False,
    unroll: int | bool = 1,
    pbar: ProgressBar | int | None = None,
) -> Y:
    """Call `f(*x)` for each slice `x` of `xs` along axis 0; return the stacked outputs.

    A `scan` without a user carry: states written by `f` are carried from
    step to step, states only read are constants. With no `xs`, pass `length`
    and `f` takes no arguments. Takes the same `pbar` option as
    `scan`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import for_loop
        >>> v = sj.HiddenState(jnp.array(1.0))
        >>> def step(x):
        ...     v.value = 0.5 * v.value + x
        ...     return v.value
        >>> for_loop(step, jnp.ones(3)).tolist(), float(v.value)
        ([1.5, 1.75, 1.875], 1.875)
    """
    check_pbar_type("for_loop", pbar)
    spec = parse_spec(
        ForLoopSpec, "for_loop", length=length, reverse=reverse, unroll=unroll, pbar=pbar
    )

    def body(carry: None, x: tuple[Any, ...]) -> tuple[None, Any]:
        return carry, f(*x)

    _, ys = _scan(body, None, tuple(xs), spec, "for_loop", name_of(f))
    return ys  # type: ignore[no-any-return]


# -- while_loop ----------------------------------------------------------------------

_COND = "cond_fun"
_BODY = "body_fun"


def while_loop(cond_fun: Callable[[C], Any], body_fun: Callable[[C], C], init_val: C) -> C:
    """Run `val = body_fun(val)` while `cond_fun(val)` is true, threading states.

    Like `jax.lax.while_loop`. States that `body_fun` writes are carried
    through the loop; `cond_fun` may read states (it sees the current carried
    values) but must not write any: that is a `statejax.TraceError`.
    Forward-mode differentiable only, as in JAX (the number of steps is not known
    ahead, so reverse mode would need unbounded memory); use `scan` or
    `for_loop` with a fixed length for reverse mode.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import while_loop
        >>> total = sj.State(jnp.array(0))
        >>> def body(i):
        ...     total.value = total.value + i
        ...     return i + 1
        >>> int(while_loop(lambda i: total.value < 10, body, 0)), int(total.value)
        (5, 10)
    """
    parse_spec(WhileLoopSpec, "while_loop")
    body_name = name_of(body_fun)
    cond_name = name_of(cond_fun)
    if jit_disabled():
        try:
            return _while_eagerly(cond_fun, body_fun, init_val, body_name, cond_name)
        except _TracedCondition:
            pass  # inside vmap, say: run the traced loop, as lax.while_loop does

    def dispatch(which: str, val: Any) -> Any:
        return body_fun(val) if which == _BODY else cond_fun(val)

    def lift(split: Split, pure: PureCore) -> Callable[..., tuple[Any, list[Any]]]:
        def transformed(
            read_vals: list[Any], write_vals: list[Any], init_val: Any
        ) -> tuple[Any, list[Any]]:
            def cond(carry: tuple[list[Any], Any]) -> Any:
                state_vals, val = carry
                out, _ = pure(read_vals, state_vals, _COND, val)
                record = pure.record
                assert record is not None  # set by every call of the pure core
                created = {id(s) for s in record.created}
                _refuse_cond_writes(
                    cond_name, [s for k, s in record.writes.items() if k not in created]
                )
                return out

            def body(carry: tuple[list[Any], Any]) -> tuple[list[Any], Any]:
                state_vals, val = carry
                new_val, new_state_vals = pure(read_vals, state_vals, _BODY, val)
                _check_carried("while_loop", split, state_vals, new_state_vals)
                return new_state_vals, new_val

            new_write_vals, val = lax.while_loop(cond, body, (list(write_vals), init_val))
            return val, new_write_vals

        return transformed

    stateful: StatefulFunction[C] = StatefulFunction(
        dispatch, f"statejax.while_loop({body_name})", lift, staged=True
    )
    return stateful(init_val)


def _refuse_cond_writes(
    cond_name: str, written: Sequence[State[Any]], loop: str = "while_loop"
) -> None:
    if written:
        names = ", ".join(describe_state(s) for s in written)
        raise TraceValueError(
            f"statejax.{loop}: cond_fun {cond_name} writes {names}; a loop "
            "condition must not change states (it is evaluated an extra time, and "
            "its writes would be lost). Move the write into body_fun."
        )


class _TracedCondition(Exception):
    """The eager loop's condition has no concrete value (the loop runs inside `vmap` under
    `jax.disable_jit()`): the caller runs the traced loop instead. No state has changed."""


def _while_eagerly(
    cond_fun: Callable[[C], Any],
    body_fun: Callable[[C], C],
    init_val: C,
    body_name: str,
    cond_name: str,
) -> C:
    """`while_loop` under `jax.disable_jit()`: a Python loop, like `lax.while_loop`'s.

    Raises `_TracedCondition` when the condition is not concrete; the loop's writes are
    then not applied (`run_eagerly` applies them only when the loop returns).
    """

    def cond(val: C) -> bool:
        out, writes = eager_call(f"statejax.while_loop({cond_name})", cond_fun, val)
        _refuse_cond_writes(cond_name, [s for s, _ in writes])
        try:
            return bool(out)
        except jax.errors.ConcretizationTypeError:
            raise _TracedCondition from None

    def loop() -> C:
        val = init_val
        while cond(val):
            val = body_fun(val)
        return val

    return run_eagerly(f"statejax.while_loop({body_name})", loop)


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    registry.register(
        Transform("scan", scan, ScanSpec, "lax.scan; written states carried, read states constant")
    )
    registry.register(
        Transform("for_loop", for_loop, ForLoopSpec, "a scan without carry: f(*x) for x in xs")
    )
    registry.register(
        Transform(
            "while_loop",
            while_loop,
            WhileLoopSpec,
            "lax.while_loop; written states carried (forward-mode autodiff only)",
        )
    )
