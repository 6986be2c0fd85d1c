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
from typing import Any, TypeVar

from jax import lax

from statejax._transforms._common import cached_call, jit_disabled, name_of
from statejax._transforms._loop_core import (
    BODY,
    COND,
    ScanSpec,
    TracedCondition,
    check_carried,
    dispatcher,
    for_body,
    refuse_cond_writes,
    scan_states,
    while_eagerly,
)
from statejax._transforms.progress import ProgressBar, check_pbar_type
from statejax.extend import (
    Lift,
    PureCore,
    Split,
    StatefulFunction,
    Transform,
    TransformSpec,
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


class ForLoopSpec(ScanSpec):
    """Options of `for_loop` (the same as `scan`)."""


class WhileLoopSpec(TransformSpec):
    """Options of `while_loop`: none."""


# -- scan / for_loop -----------------------------------------------------------------


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
    return scan_states(f, init, xs, spec, "scan", name_of(f))


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

    _, ys = scan_states(f, None, tuple(xs), spec, "for_loop", name_of(f), for_body)
    return ys  # type: ignore[no-any-return]


# -- while_loop ----------------------------------------------------------------------


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
            return while_eagerly(cond_fun, body_fun, init_val, body_name, cond_name)
        except TracedCondition:
            pass  # inside vmap, say: run the traced loop, as lax.while_loop does

    label = f"statejax.while_loop({body_name})"

    def build(fns: Sequence[Callable[..., Any]]) -> tuple[Callable[..., Any], str, Lift]:
        return dispatcher(*fns), label, _while_lift(cond_name)

    stateful = cached_call("while_loop", (cond_fun, body_fun), (), build)
    if stateful is None:
        stateful = StatefulFunction(
            dispatcher(cond_fun, body_fun), label, _while_lift(cond_name), staged=True
        )
    out: C = stateful(init_val)
    return out


def _while_lift(cond_name: str) -> Lift:
    def lift(split: Split, pure: PureCore) -> Callable[..., tuple[Any, list[Any]]]:
        def transformed(
            read_vals: list[Any], write_vals: list[Any], init_val: Any
        ) -> tuple[Any, list[Any]]:
            def cond(carry: tuple[list[Any], Any]) -> Any:
                state_vals, val = carry
                out, _ = pure(read_vals, state_vals, COND, val)
                record = pure.record
                assert record is not None  # set by every call of the pure core
                created = {id(s) for s in record.created}
                refuse_cond_writes(
                    cond_name, [s for k, s in record.writes.items() if k not in created]
                )
                return out

            def body(carry: tuple[list[Any], Any]) -> tuple[list[Any], Any]:
                state_vals, val = carry
                new_val, new_state_vals = pure(read_vals, state_vals, BODY, val)
                check_carried("while_loop", split, state_vals, new_state_vals)
                return new_state_vals, new_val

            new_write_vals, val = lax.while_loop(cond, body, (list(write_vals), init_val))
            return val, new_write_vals

        return transformed

    return lift


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
