"""Conditionals over functions that read and write states: `cond`, `switch`, `ifelse`.

Every branch is traced (as in `jax.lax.cond`). The states written by *any*
branch are carried through every branch: a branch that does not write such a
state returns it unchanged, so the state keeps its value on the paths that do
not write it. States only read are passed in as operands. Under `vmap` with a
batched predicate, JAX turns the conditional into a select over both branches;
the states come out selected per lane in the same way.

Under `jax.disable_jit()`, with a concrete predicate or index, only the chosen
branch runs, once, as plain Python (as `jax.lax.cond` does, and BrainState): it
sees concrete values, may return anything (a string, `None`), and its state writes
are stored after it returns, all together (if it raises, no state changes).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import pydantic
from jax import lax

from statejax._transforms._common import (
    SpecTypeError,
    cached_call,
    name_of,
    run_eagerly,
    show_signature,
    signature,
)
from statejax._transforms.unvmap import unvmap
from statejax.extend import (
    Lift,
    PureCore,
    SpecError,
    Split,
    StatefulFunction,
    TraceError,
    Transform,
    TransformSpec,
    describe_state,
    hookimpl,
    jit_disabled,
    parse_spec,
)

__all__ = ["CondSpec", "IfElseSpec", "SwitchSpec", "cond", "ifelse", "switch"]

R = TypeVar("R")


class CondSpec(TransformSpec):
    """Options of `cond`: none."""


class SwitchSpec(TransformSpec):
    """Options of `switch`: none."""


class IfElseSpec(TransformSpec):
    """Options of `ifelse`."""

    check_cond: bool = pydantic.Field(
        default=True,
        description="check that the conditions are mutually exclusive: exactly one true "
        "(at most one when there is an else branch)",
    )


# -- jax.disable_jit: run the chosen branch only ----------------------------------------

_SCALAR_LIKE = (jax.Array, np.ndarray, np.generic, bool, int, float)


def _concrete(value: Any, kinds: str, convert: Callable[[Any], int]) -> int | None:
    """`convert(value)` if `value` is a concrete scalar whose dtype kind is in `kinds`.

    `None` when it is traced (batched under `vmap`, abstract under `eval_shape`), not a
    scalar, or of another dtype: the lax conditional then decides, tracing every
    branch or reporting the bad predicate or index as it always does.
    """
    if not isinstance(value, _SCALAR_LIKE) or np.ndim(value) != 0:
        return None
    try:
        if np.dtype(jnp.result_type(value)).kind not in kinds:
            return None
        return int(convert(value))
    except jax.errors.ConcretizationTypeError:  # a tracer without a concrete value
        return None


def _run_branch(name: str, branches: Sequence[Callable[..., Any]], index: int, ops: Any) -> Any:
    """Run `branches[index]` alone, eagerly, its writes stored after it returns."""
    branch = branches[index]
    return run_eagerly(f"statejax.{name}({name_of(branch)})", branch, *ops)


Select = Callable[[list[Callable[..., Any]], list[Any], list[Any], Any, tuple[Any, ...]], Any]


def _branching(
    name: str,
    branches: Sequence[Callable[..., Any]],
    select: Select,
    which: Any,
    operands: tuple[Any, ...],
) -> Any:
    """Run `select` (a lax conditional, choosing by `which`) over the branches made pure on
    one shared split. `select` must be a module-level function: at the top level the
    compiled conditional is cached per identity of the branches and `select`."""
    label = f"statejax.{name}({', '.join(name_of(b) for b in branches)})"

    def build(fns: Sequence[Callable[..., Any]]) -> tuple[Callable[..., Any], str, Lift]:
        return _dispatcher(fns), label, _branching_lift(name, len(fns), select)

    stateful = cached_call(name, branches, (select,), build)
    if stateful is None:
        stateful = StatefulFunction(
            _dispatcher(branches), label, _branching_lift(name, len(branches), select), staged=True
        )
    return stateful(which, *operands)


def _dispatcher(branches: Sequence[Callable[..., Any]]) -> Callable[..., Any]:
    branches = list(branches)

    def dispatch(index: int, *ops: Any) -> Any:
        return branches[index](*ops)

    return dispatch


def _branching_lift(name: str, count: int, select: Select) -> Lift:
    def lift(split: Split, pure: PureCore) -> Callable[..., tuple[Any, list[Any]]]:
        # What each branch left in the written states, to explain a type mismatch.
        written: dict[int, list[Any]] = {}

        def make_branch(index: int) -> Callable[..., Any]:
            def branch(
                read_vals: list[Any], write_vals: list[Any], ops: tuple[Any, ...]
            ) -> tuple[Any, list[Any]]:
                out, new_write_vals = pure(read_vals, write_vals, index, *ops)
                written[index] = [signature(v) for v in new_write_vals]
                return out, new_write_vals

            return branch

        fns = [make_branch(i) for i in range(count)]

        def transformed(
            read_vals: list[Any], write_vals: list[Any], which: Any, *ops: Any
        ) -> tuple[Any, list[Any]]:
            written.clear()
            try:
                out, new_write_vals = select(fns, list(read_vals), list(write_vals), which, ops)
            except TypeError as exc:  # lax: the branches' outputs differ in type
                _explain_mismatch(name, split, written, exc)
                raise
            return out, new_write_vals

        return transformed

    return lift


def _explain_mismatch(
    name: str, split: Split, written: dict[int, list[Any]], exc: TypeError
) -> None:
    """Raise a TraceError naming the state if branches left it with different types."""
    if len(written) < 2:
        return
    first, *others = sorted(written)
    for pos, state in enumerate(split.write_states):
        for other in others:
            a, b = written[first][pos], written[other][pos]
            if a != b:
                raise TraceError(
                    f"statejax.{name}: branch {first} leaves {describe_state(state)} as "
                    f"{show_signature(a)} but branch {other} as {show_signature(b)}; a state written by any branch "
                    "is carried through every branch, so all branches must leave it with the "
                    "same shape and dtype (a branch that does not write it keeps its current "
                    "value). Give the state its final shape and dtype before the conditional."
                ) from exc


def _switch(
    name: str, index: Any, branches: list[Callable[..., Any]], operands: tuple[Any, ...]
) -> Any:
    """`lax.switch` over the branches made pure (`switch` and `ifelse`)."""
    return _branching(name, branches, _select_switch, index, operands)


def _select_switch(
    fns: list[Callable[..., Any]], rv: list[Any], wv: list[Any], index: Any, ops: tuple[Any, ...]
) -> Any:
    return lax.switch(index, fns, rv, wv, ops)


def _select_cond(
    fns: list[Callable[..., Any]], rv: list[Any], wv: list[Any], pred: Any, ops: tuple[Any, ...]
) -> Any:
    return lax.cond(pred, fns[0], fns[1], rv, wv, ops)


def _check_branches(name: str, branches: Any) -> list[Callable[..., Any]]:
    if not isinstance(branches, (list, tuple)) or not branches:
        raise SpecError(
            f"statejax.{name}: branches must be a non-empty list or tuple of functions; "
            f"got {branches!r:.80}."
        )
    for i, b in enumerate(branches):
        if not callable(b):
            raise SpecTypeError(
                f"statejax.{name}: branch {i} is {b!r:.80}, which is not callable; pass "
                "functions (use `lambda *ops: value` for a constant)."
            )
    return list(branches)


def cond(pred: Any, true_fun: Callable[..., R], false_fun: Callable[..., R], *operands: Any) -> R:
    """`true_fun(*operands)` if `pred` else `false_fun(*operands)`, threading states.

    Like `jax.lax.cond`: both functions are traced, and they must return
    the same structure. A state written by either branch is carried through
    both, so the branch that does not write it leaves it unchanged.

    Under `jax.disable_jit()` with a concrete `pred`, only the chosen function runs,
    as plain Python: it may call `float(x)`, branch on values and return anything;
    its state writes are stored when it returns (if it raises, no state changes).

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import cond
        >>> hits = sj.State(jnp.array(0))
        >>> def hit(x):
        ...     hits.value += 1
        ...     return x * 2
        >>> int(cond(True, hit, lambda x: x, 5)), int(cond(False, hit, lambda x: x, 5))
        (10, 5)
        >>> int(hits.value)
        1
        >>> import jax
        >>> with jax.disable_jit():
        ...     cond(hits.value > 0, lambda: "hit", lambda: None)
        'hit'
    """
    parse_spec(CondSpec, "cond")
    _check_branches("cond", [true_fun, false_fun])
    if jit_disabled():
        flag = _concrete(pred, "biuf", bool)  # a number is true where not 0, as in lax.cond
        if flag is not None:
            return _run_branch("cond", [false_fun, true_fun], flag, operands)  # type: ignore[no-any-return]
    return _branching("cond", [true_fun, false_fun], _select_cond, pred, operands)  # type: ignore[no-any-return]


def switch(index: Any, branches: Sequence[Callable[..., R]], *operands: Any) -> R:
    """`branches[index](*operands)`, threading states; `index` is clamped into range.

    Like `jax.lax.switch`: every branch is traced and must return the same
    structure. The states written by any branch are carried through all of them.
    Under `jax.disable_jit()` with a concrete `index`, only the chosen branch runs,
    eagerly, as in `cond`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import switch
        >>> log = sj.State(jnp.zeros(3))
        >>> def mark(i):
        ...     def branch(x):
        ...         log.value = log.value.at[i].add(x)
        ...         return i
        ...     return branch
        >>> [int(switch(k, [mark(0), mark(1), mark(2)], 1.0)) for k in (2, 0, 7)]
        [2, 0, 2]
        >>> log.value.tolist()
        [1.0, 0.0, 2.0]
    """
    parse_spec(SwitchSpec, "switch")
    fns = _check_branches("switch", branches)
    if jit_disabled():
        i = _concrete(index, "iu", int)  # lax.switch refuses other dtypes
        if i is not None:
            return _run_branch("switch", fns, min(max(i, 0), len(fns) - 1), operands)  # type: ignore[no-any-return]
    return _switch("switch", index, fns, operands)  # type: ignore[no-any-return]


def ifelse(
    conditions: Sequence[Any],
    branches: Sequence[Callable[..., R]],
    *operands: Any,
    check_cond: bool = True,
) -> R:
    """Run the branch of the true condition, threading states (BrainState's `ifelse`).

    `branches[i]` runs where `conditions[i]` is true. Pass as many branches as
    conditions, or one branch more (the extra last branch is the `else`). With
    `check_cond=True` (the default) the conditions must be mutually exclusive:
    exactly one true (at most one with an `else`), else a `ValueError` (raised
    through JAX's `JaxRuntimeError` when the conditions are traced, under `jit`).
    With `check_cond=False` the first true condition wins, and if none holds the
    last branch runs. Every branch is traced; conditions may be traced booleans,
    batched under `vmap`. Under `jax.disable_jit()` with concrete conditions, only
    the chosen branch runs, eagerly, as in `cond`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from statejax.transform import ifelse
        >>> def sign(a):
        ...     return ifelse([a > 0, a < 0], [lambda: 1, lambda: -1, lambda: 0])
        >>> [int(sign(jnp.array(v))) for v in (3.0, -2.0, 0.0)]
        [1, -1, 0]
        >>> int(ifelse([True, True], [lambda: 1, lambda: 2], check_cond=False))
        1
        >>> ifelse([True, True], [lambda: 1, lambda: 2])
        Traceback (most recent call last):
        ValueError: statejax.ifelse: 2 of the 2 conditions are true; with check_cond=True exactly one must be true. Make the conditions mutually exclusive, or pass check_cond=False for the first true one to win.
    """
    spec = parse_spec(IfElseSpec, "ifelse", check_cond=check_cond)
    fns = _check_branches("ifelse", branches)
    if not isinstance(conditions, (list, tuple)) or not conditions:
        raise SpecError(
            "statejax.ifelse: conditions must be a non-empty list or tuple of boolean "
            f"scalars; got {conditions!r:.80}."
        )
    n = len(conditions)
    if len(fns) not in (n, n + 1):
        raise SpecError(
            f"statejax.ifelse: got {n} conditions and {len(fns)} branches; pass one branch per "
            f"condition ({n}), or one more ({n + 1}) for an else branch."
        )
    fallback = len(fns) - 1
    at_most = len(fns) > n  # with an else branch, no true condition is fine
    eager = [_concrete(c, "biuf", bool) for c in conditions]
    if spec.check_cond and None not in eager:
        _check_exclusive(sum(map(bool, eager)), n, at_most)
    if jit_disabled() and None not in eager:
        first = next((i for i, flag in enumerate(eager) if flag), fallback)
        return _run_branch("ifelse", fns, first, operands)  # type: ignore[no-any-return]
    flags = jnp.stack([jnp.asarray(c).astype(bool).reshape(()) for c in conditions])
    if spec.check_cond and None in eager:
        true = jnp.sum(flags.astype(jnp.int32))
        bad = (true > 1) if at_most else (true != 1)
        lax.cond(
            unvmap(bad, "any"),  # any lane: under vmap a batched cond would run both sides
            lambda: jax.debug.callback(
                functools.partial(_check_exclusive, n=n, at_most=at_most), true
            ),
            lambda: None,
        )
    index = jnp.where(jnp.any(flags), jnp.argmax(flags), fallback).astype(jnp.int32)
    return _switch("ifelse", index, fns, operands)  # type: ignore[no-any-return]


def _check_exclusive(true: Any, n: int, at_most: bool) -> None:
    """Raise unless `true` (how many conditions hold) is one (or, with an else, at most one)."""
    true = int(np.max(true))  # under vmap, the callback may see every lane
    if true == 1 or (at_most and true == 0):
        return
    need = "at most one" if at_most else "exactly one"
    raise ValueError(
        f"statejax.ifelse: {true} of the {n} conditions are true; with check_cond=True "
        f"{need} must be true. Make the conditions mutually exclusive, or pass "
        "check_cond=False for the first true one to win."
    )


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    registry.register(
        Transform("cond", cond, CondSpec, "lax.cond; states written by either branch carried")
    )
    registry.register(
        Transform("switch", switch, SwitchSpec, "lax.switch; union of written states carried")
    )
    registry.register(
        Transform("ifelse", ifelse, IfElseSpec, "first true condition's branch (BrainState)")
    )
