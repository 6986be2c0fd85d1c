"""Loops with memory-bounded reverse mode: `checkpointed_scan`, `checkpointed_for_loop`
and `bounded_while_loop`.

Reverse-mode differentiation of `jax.lax.scan` keeps every step's intermediate
values until the backward pass: memory grows with the number of steps (the
backpropagation-through-time problem of long RNN and spiking-network runs). These
loops run the steps as nested scans instead: `n` steps become blocks of
`base**(depth-1)` steps, each block `base` sub-blocks, and so on down to single
steps. Every level above the innermost is wrapped in `jax.checkpoint`, so the
backward pass keeps only the carries at block starts (about `base * depth` of
them) and recomputes a block when it reaches it: memory about `O(base * log n)`
steps for about `depth` times the forward compute.

Blocks past the last step (the padding up to a whole number of blocks) are
skipped with a `lax.cond`; in `bounded_while_loop` a block is skipped as soon as
the condition is false on every lane (through `unvmap`, so under `vmap` the skip
stays a real branch), which makes it a while loop that reverse mode works through.

States are threaded as in `scan`: written states are carried, read states are
constants, and the final values are stored after the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import jax
import jax.numpy as jnp
import pydantic
from jax import lax

from statejax._transforms._common import MAX_INT32, Count, cached_call, jit_disabled, name_of
from statejax._transforms._loop_core import (
    BODY,
    COND,
    ScanSpec,
    TracedCondition,
    check_carried,
    dispatcher,
    for_body,
    loop_length,
    pair,
    refuse_cond_writes,
    scan_states,
    while_eagerly,
)
from statejax._transforms.progress import (
    PbarOption,
    ProgressBar,
    check_pbar_type,
    progress_handler,
)
from statejax._transforms.unvmap import unvmap
from statejax.extend import (
    Lift,
    PureCore,
    SpecError,
    Split,
    StatefulFunction,
    Transform,
    TransformSpec,
    hookimpl,
    parse_spec,
)

__all__ = [
    "BoundedWhileLoopSpec",
    "CheckpointedForLoopSpec",
    "CheckpointedScanSpec",
    "bounded_while_loop",
    "checkpointed_for_loop",
    "checkpointed_scan",
]

C = TypeVar("C")
Y = TypeVar("Y")

#: The branching factor of the nested scans: an int of at least 2.
Base = Annotated[int, pydantic.Strict(), pydantic.Field(ge=2, le=MAX_INT32)]

_BASE_DESCRIPTION = (
    "steps per block at each level of the nested scans (at least 2): a larger base "
    "compiles faster, a smaller one recomputes less"
)


class CheckpointedScanSpec(TransformSpec):
    """Options of `checkpointed_scan`."""

    length: Count | None = pydantic.Field(
        default=None, description="number of steps; needed when xs is None"
    )
    base: Base = pydantic.Field(default=16, description=_BASE_DESCRIPTION)
    pbar: PbarOption = None


class CheckpointedForLoopSpec(CheckpointedScanSpec):
    """Options of `checkpointed_for_loop` (the same as `checkpointed_scan`)."""


class BoundedWhileLoopSpec(TransformSpec):
    """Options of `bounded_while_loop`."""

    max_steps: Count = pydantic.Field(
        description="the most steps the loop runs; it stops there even if cond_fun holds"
    )
    base: Base = pydantic.Field(default=16, description=_BASE_DESCRIPTION)


# -- the nested, checkpointed scans ---------------------------------------------------


def _depth(n: int, base: int) -> int:
    """The number of levels: the least `d >= 1` with `base**d >= n`."""
    depth, size = 1, base
    while size < n:
        depth, size = depth + 1, size * base
    return depth


def _nested_scan(
    step: Callable[[Any, Any], tuple[Any, Any]],
    active: Callable[[Any], Any],
    carry: Any,
    xs: Any,
    n: int,
    base: int,
    y_shape: Any,
) -> tuple[Any, Any]:
    """`lax.scan(step, carry, xs)` over `n` steps as nested scans, checkpointed per level.

    `active(carry)` says whether the block starting at this carry runs (else it is
    skipped and its outputs are zeros of `y_shape`); every step must advance what
    `active` looks at. Returns the final carry and the `n` stacked outputs.
    """
    depth = _depth(n, base)
    inner = base ** (depth - 1)
    top = -(-n // inner)
    padded = top * inner
    shape = (top,) + (base,) * (depth - 1)

    def blocked(a: jax.Array) -> jax.Array:
        if padded > n:
            a = jnp.concatenate([a, jnp.zeros((padded - n, *a.shape[1:]), a.dtype)])
        return a.reshape(shape + a.shape[1:])

    def zeros(size: int) -> Any:
        lead = (size,) if size > 1 else ()
        return jax.tree.map(lambda s: jnp.zeros(lead + s.shape, s.dtype), y_shape)

    def blocks(carry: Any, xb: Any, sub: int, length: int) -> tuple[Any, Any]:
        """Scan over `length` blocks of `sub` steps each."""

        def run(carry: Any, x: Any) -> tuple[Any, Any]:
            if sub == 1:
                return step(carry, x)
            return blocks(carry, x, sub // base, base)

        def body(carry: Any, x: Any) -> tuple[Any, Any]:
            return lax.cond(  # type: ignore[no-any-return]
                active(carry), run, lambda c, _: (c, zeros(sub)), carry, x
            )

        if sub > 1:  # the innermost scan keeps its steps' values: no recompute there
            body = jax.checkpoint(body, prevent_cse=False)
        carry, ys = lax.scan(body, carry, xb, length=length)
        if sub > 1:
            ys = jax.tree.map(lambda a: a.reshape((length * sub, *a.shape[2:])), ys)
        return carry, ys

    carry, ys = blocks(carry, jax.tree.map(blocked, xs), inner, top)
    return carry, jax.tree.map(lambda a: a[:n], ys)


# -- checkpointed_scan / checkpointed_for_loop ----------------------------------------


def _checkpointed_scan(
    f: Callable[..., Any],
    init: Any,
    xs: Any,
    spec: CheckpointedScanSpec,
    name: str,
    fn_name: str,
    adapt: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
) -> tuple[Any, Any]:
    n = loop_length(name, xs, spec.length)
    if not n or jit_disabled():
        # Nothing to bound (no steps), or a Python loop (no reverse mode to bound).
        plain = ScanSpec(length=spec.length, pbar=spec.pbar)
        return scan_states(f, init, xs, plain, name, fn_name, adapt)
    sizes = [jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(xs)]
    if any(size != n for size in sizes):
        given = f"length={spec.length}" if spec.length is not None else f"{n} (the first)"
        raise SpecError(
            f"statejax.{name}: the arrays in xs have leading axis lengths {sizes} (None: a "
            f"scalar) but the loop runs {given} steps; give every array in xs the same "
            "leading axis length, equal to length."
        )
    progress = progress_handler(spec.pbar, n, name)
    label = f"statejax.{name}({fn_name})"
    stateful: StatefulFunction[tuple[Any, Any]] | None = None
    if progress is None:

        def build(fns: Sequence[Callable[..., Any]]) -> tuple[Callable[..., Any], str, Lift]:
            loop_body = fns[0] if adapt is None else adapt(fns[0])
            return loop_body, label, _checkpointed_lift(spec, n, name, fn_name, None)

        stateful = cached_call(name, (f,), (spec, n, adapt), build)
    if stateful is None:
        loop_body = f if adapt is None else adapt(f)
        stateful = StatefulFunction(
            loop_body, label, _checkpointed_lift(spec, n, name, fn_name, progress), staged=True
        )
    return stateful(init, xs)


def _checkpointed_lift(
    spec: CheckpointedScanSpec, n: int, name: str, fn_name: str, progress: Any
) -> Lift:
    def lift(split: Split, pure: PureCore) -> Callable[..., tuple[Any, list[Any]]]:
        def transformed(
            read_vals: list[Any], write_vals: list[Any], init: Any, xs: Any
        ) -> tuple[Any, list[Any]]:
            def step(carry: Any, x: Any) -> tuple[Any, Any]:
                i, state_vals, c = carry
                out, new_state_vals = pure(read_vals, state_vals, c, x)
                check_carried(name, split, state_vals, new_state_vals)
                new_c, y = pair(out, name, fn_name)
                if progress is not None:
                    progress.tick(i + 1, new_c, y)
                return (i + 1, new_state_vals, new_c), y

            start = (jnp.zeros((), jnp.int32), list(write_vals), init)
            x0 = jax.tree.map(lambda a: a[0], xs)
            y_shape = jax.eval_shape(lambda c, x: step(c, x)[1], start, x0)
            (_, new_write_vals, carry), ys = _nested_scan(
                step, lambda c: c[0] < n, start, xs, n, spec.base, y_shape
            )
            return (carry, ys), new_write_vals

        return transformed

    return lift


def checkpointed_scan(
    f: Callable[[C, Any], tuple[C, Y]],
    init: C,
    xs: Any,
    length: int | None = None,
    base: int = 16,
    pbar: ProgressBar | int | None = None,
) -> tuple[C, Y]:
    """`scan` whose reverse mode keeps `O(base * log n)` steps in memory, not `O(n)`.

    The same results as `scan(f, init, xs, length)`: `(final_carry, stacked_ys)`,
    states written by `f` carried and stored afterwards. The steps run as nested
    scans of `base` blocks, each level under `jax.checkpoint`, so `jax.grad` of a
    long loop (backpropagation through time) stores the carries at block starts
    and recomputes each block once more in the backward pass, about
    `log_base(n)` times the forward compute in all. Takes `pbar=` as `scan`.

    Args:
        f: the step, `(carry, x) -> (carry, y)`.
        init: the initial carry.
        xs: the arrays to scan over along axis 0 (or `None`, with `length`).
        length: the number of steps, when `xs` is `None`.
        base: blocks per level; larger compiles faster, smaller recomputes less.
        pbar: a `ProgressBar`, or an int `k` for a bar updated every `k` steps.

    Returns:
        `(final_carry, ys)`, as `scan`.

    Raises:
        SpecError: `base` is not an int of at least 2, or another option is invalid.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from statejax.transform import checkpointed_scan
        >>> def loss(w):
        ...     step = lambda h, x: (jnp.tanh(w * h + x), h)
        ...     h, _ = checkpointed_scan(step, 0.0, jnp.ones(100), base=4)
        ...     return h
        >>> def plain(w):
        ...     return jax.lax.scan(lambda h, x: (jnp.tanh(w * h + x), h), 0.0, jnp.ones(100))[0]
        >>> bool(jnp.allclose(jax.grad(loss)(0.5), jax.grad(plain)(0.5)))
        True
    """
    check_pbar_type("checkpointed_scan", pbar)
    spec = parse_spec(
        CheckpointedScanSpec, "checkpointed_scan", length=length, base=base, pbar=pbar
    )
    return _checkpointed_scan(f, init, xs, spec, "checkpointed_scan", name_of(f))


def checkpointed_for_loop(
    f: Callable[..., Y],
    *xs: Any,
    length: int | None = None,
    base: int = 16,
    pbar: ProgressBar | int | None = None,
) -> Y:
    """`for_loop` whose reverse mode keeps `O(base * log n)` steps in memory.

    Calls `f(*x)` for each slice `x` of `xs` along axis 0 and stacks the outputs,
    as `for_loop`, running the steps as `checkpointed_scan` does.

    Args:
        f: the step; it takes one slice of each of `xs`.
        *xs: the arrays to loop over along axis 0 (none, with `length`).
        length: the number of steps, when there are no `xs`.
        base: blocks per level; larger compiles faster, smaller recomputes less.
        pbar: a `ProgressBar`, or an int `k` for a bar updated every `k` steps.

    Returns:
        The outputs of `f`, stacked on a leading axis.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import checkpointed_for_loop
        >>> v = sj.HiddenState(jnp.array(0.0))
        >>> def step(x):
        ...     v.value = 0.5 * v.value + x
        ...     return v.value
        >>> checkpointed_for_loop(step, jnp.ones(3), base=2).tolist(), float(v.value)
        ([1.0, 1.5, 1.75], 1.75)
    """
    check_pbar_type("checkpointed_for_loop", pbar)
    spec = parse_spec(
        CheckpointedForLoopSpec, "checkpointed_for_loop", length=length, base=base, pbar=pbar
    )

    _, ys = _checkpointed_scan(
        f, None, tuple(xs), spec, "checkpointed_for_loop", name_of(f), for_body
    )
    return ys  # type: ignore[no-any-return]


# -- bounded_while_loop ---------------------------------------------------------------


def bounded_while_loop(
    cond_fun: Callable[[C], Any],
    body_fun: Callable[[C], C],
    init_val: C,
    *,
    max_steps: int,
    base: int = 16,
) -> C:
    """`while_loop` of at most `max_steps` steps that reverse mode works through.

    Runs `val = body_fun(val)` while `cond_fun(val)` holds, but no more than
    `max_steps` times, threading states as `while_loop` (`cond_fun` may read
    states, not write them). Unlike `while_loop`, `jax.grad` and `jax.vjp` work
    through it: the steps run as nested scans (see `checkpointed_scan`) whose
    blocks are skipped once the condition is false, so the cost is about the steps
    taken, and reverse-mode memory about `base * log_base(max_steps)` steps. Under
    `vmap` the loop runs while any lane's condition holds; a lane whose condition
    is false keeps its value.

    Args:
        cond_fun: `val -> bool`, the loop condition.
        body_fun: `val -> val`, one step.
        init_val: the initial value.
        max_steps: the most steps to run (a non-negative int).
        base: blocks per level; larger compiles faster, smaller recomputes less.

    Returns:
        The final value.

    Raises:
        SpecError: `max_steps` is not a non-negative int, or `base` not an int of
            at least 2.
        TraceError: `cond_fun` writes a state.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from statejax.transform import bounded_while_loop
        >>> def grow(x):   # doubles x until it exceeds 10, at most 8 times
        ...     return bounded_while_loop(lambda v: v < 10.0, lambda v: v * 2.0, x, max_steps=8)
        >>> float(grow(3.0)), float(jax.grad(grow)(3.0))     # 3 * 2**2 = 12
        (12.0, 4.0)
    """
    spec = parse_spec(BoundedWhileLoopSpec, "bounded_while_loop", max_steps=max_steps, base=base)
    body_name = name_of(body_fun)
    cond_name = name_of(cond_fun)
    init_val = jax.tree.map(jnp.asarray, init_val)
    n = spec.max_steps
    if n == 0:
        return init_val
    if jit_disabled():
        try:
            return _bounded_eagerly(cond_fun, body_fun, init_val, n, body_name, cond_name)
        except TracedCondition:
            pass  # inside vmap, say: run the traced loop

    label = f"statejax.bounded_while_loop({body_name})"

    def build(fns: Sequence[Callable[..., Any]]) -> tuple[Callable[..., Any], str, Lift]:
        return dispatcher(*fns), label, _bounded_lift(spec, cond_name)

    stateful = cached_call("bounded_while_loop", (cond_fun, body_fun), spec, build)
    if stateful is None:
        stateful = StatefulFunction(
            dispatcher(cond_fun, body_fun), label, _bounded_lift(spec, cond_name), staged=True
        )
    out: C = stateful(init_val)
    return out


def _bounded_lift(spec: BoundedWhileLoopSpec, cond_name: str) -> Lift:
    n = spec.max_steps

    def lift(split: Split, pure: PureCore) -> Callable[..., tuple[Any, list[Any]]]:
        def transformed(
            read_vals: list[Any], write_vals: list[Any], init_val: Any
        ) -> tuple[Any, list[Any]]:
            def holds(state_vals: list[Any], val: Any) -> Any:
                out, _ = pure(read_vals, state_vals, COND, val)
                record = pure.record
                assert record is not None  # set by every call of the pure core
                created = {id(s) for s in record.created}
                refuse_cond_writes(
                    cond_name,
                    [s for k, s in record.writes.items() if k not in created],
                    "bounded_while_loop",
                )
                return jnp.asarray(out, bool)

            def step(carry: Any, _: Any) -> tuple[Any, None]:
                i, state_vals, val = carry
                keep = holds(state_vals, val)  # per lane, under vmap
                new_val, new_state_vals = pure(read_vals, state_vals, BODY, val)
                check_carried("bounded_while_loop", split, state_vals, new_state_vals)
                new_state_vals, new_val = jax.tree.map(
                    lambda new, old: jnp.where(keep, new, old),
                    (new_state_vals, new_val),
                    (list(state_vals), val),
                )
                return (i + 1, new_state_vals, new_val), None

            def active(carry: Any) -> Any:
                i, state_vals, val = carry
                return (i < n) & unvmap(holds(state_vals, val), "any")

            start = (jnp.zeros((), jnp.int32), list(write_vals), init_val)
            (_, new_write_vals, val), _ = _nested_scan(
                step, active, start, None, n, spec.base, None
            )
            return val, new_write_vals

        return transformed

    return lift


def _bounded_eagerly(
    cond_fun: Callable[[C], Any],
    body_fun: Callable[[C], C],
    init_val: C,
    max_steps: int,
    body_name: str,
    cond_name: str,
) -> C:
    """`bounded_while_loop` under `jax.disable_jit()`: a Python loop."""
    steps = iter(range(max_steps))
    return while_eagerly(
        lambda v: next(steps, None) is not None and cond_fun(v),
        body_fun,
        init_val,
        body_name,
        cond_name,
    )


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    registry.register(
        Transform(
            "checkpointed_scan",
            checkpointed_scan,
            CheckpointedScanSpec,
            "scan with memory-bounded reverse mode (nested checkpointed scans)",
        )
    )
    registry.register(
        Transform(
            "checkpointed_for_loop",
            checkpointed_for_loop,
            CheckpointedForLoopSpec,
            "for_loop with memory-bounded reverse mode (nested checkpointed scans)",
        )
    )
    registry.register(
        Transform(
            "bounded_while_loop",
            bounded_while_loop,
            BoundedWhileLoopSpec,
            "while_loop of at most max_steps steps; reverse-mode differentiable",
        )
    )
