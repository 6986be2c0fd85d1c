"""Overhead of ``statejax.jit`` against plain ``jax.jit`` on the same arrays.

N states of shape (4,), each stepped ``s.value = s.value + 1``. For each N this
prints the median cached-call time and the first-call time (trace + compile) of
plain ``jax.jit`` and of ``statejax.jit``, measured in one process, and their
ratios. "by hand" is the floor of any library that keeps values in objects: the same
``jax.jit`` call with the N values gathered from N objects and stored back by a plain
loop. BrainState and Flax NNX are measured too when installed (``--others``).

Cached calls run in blocks (``--block`` calls of the baseline, then of each contender
in turn, for ``--repeats`` rounds); the time of a block divided by its calls is one
sample, and the ratio is of the medians. First calls alternate a fresh build of each
(``--first-repeats``, at least 9), median of each. The machine's load average is
printed with each figure: on a shared machine, compare ratios, not times.

Run by hand: ``python benchmarks/jit_overhead.py [--sizes 10 100 1000] [--first-only]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import statejax as sj


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def _median_calls(
    base: Callable[[], Any], fns: dict[str, Callable[[], Any]], repeats: int, block: int
) -> tuple[float, dict[str, float]]:
    """Median per-call times of ``base`` and of each of ``fns``, in blocks of ``block``
    calls taken in turn, so that drift in machine load hits all alike."""

    def run_block(f: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        for _ in range(block):
            out = f()
        jax.block_until_ready(out)
        return (time.perf_counter() - t0) / block

    everyone = {"": base, **fns}
    for _ in range(3):
        for f in everyone.values():
            run_block(f)
    times: dict[str, list[float]] = {name: [] for name in everyone}
    for _ in range(repeats):
        for name, f in everyone.items():
            times[name].append(run_block(f))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    return medians.pop(""), medians


def _load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def _first_call(make: Callable[[], Callable[[], Any]]) -> float:
    # A fresh function each time, so neither JAX's nor statejax's caches help.
    fn = make()
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def plain_jax(n: int) -> Callable[[], Callable[[], Any]]:
    def make() -> Callable[[], Any]:
        vals = [jnp.full((4,), float(i)) for i in range(n)]
        box = [vals]

        @jax.jit
        def step(vs: list[jax.Array]) -> list[jax.Array]:
            return [v + 1 for v in vs]

        def call() -> Any:
            box[0] = step(box[0])
            return box[0][-1]

        return call

    return make


class _Holder:
    __slots__ = ("value",)

    def __init__(self, value: jax.Array) -> None:
        self.value = value


def by_hand(n: int) -> Callable[[], Callable[[], Any]]:
    """The floor of any state library: the values live in N objects, so each call
    gathers them, calls the same `jax.jit` function, and stores the results back
    (a Python loop, no lock, no check)."""

    def make() -> Callable[[], Any]:
        holders = [_Holder(jnp.full((4,), float(i))) for i in range(n)]

        @jax.jit
        def step(vs: list[jax.Array]) -> list[jax.Array]:
            return [v + 1 for v in vs]

        def call() -> Any:
            new = step([h.value for h in holders])
            for h, v in zip(holders, new, strict=True):
                h.value = v
            return holders[-1].value

        return call

    return make


def statejax_jit(n: int) -> Callable[[], Callable[[], Any]]:
    def make() -> Callable[[], Any]:
        states = [sj.State(jnp.full((4,), float(i))) for i in range(n)]

        @sj.jit
        def step() -> None:
            for s in states:
                s.value = s.value + 1

        def call() -> Any:
            step()
            return states[-1].value

        return call

    return make


def brainstate_jit(n: int) -> Callable[[], Callable[[], Any]] | None:
    try:
        import brainstate
    except ImportError:
        return None

    def make() -> Callable[[], Any]:
        states = [brainstate.State(jnp.full((4,), float(i))) for i in range(n)]

        @brainstate.transform.jit
        def step() -> None:
            for s in states:
                s.value = s.value + 1

        def call() -> Any:
            step()
            return states[-1].value

        return call

    return make


def nnx_jit(n: int) -> Callable[[], Callable[[], Any]] | None:
    try:
        from flax import nnx
    except ImportError:
        return None

    def make() -> Callable[[], Any]:
        class Bag(nnx.Module):
            def __init__(self) -> None:
                self.vs = nnx.List([nnx.Variable(jnp.full((4,), float(i))) for i in range(n)])

        bag = Bag()

        @nnx.jit
        def step(b: Any) -> None:
            for v in b.vs:
                v.value = v.value + 1

        def call() -> Any:
            step(bag)
            return bag.vs[-1].value

        return call

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=60, help="rounds of cached blocks")
    parser.add_argument("--block", type=int, default=20, help="cached calls per block")
    parser.add_argument("--first-repeats", type=int, default=9)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--first-only", action="store_true", help="skip the cached calls")
    parser.add_argument("--cached-only", action="store_true", help="skip the first calls")
    parser.add_argument("--others", action="store_true", help="BrainState and NNX too")
    args = parser.parse_args()
    print(
        f"jax {jax.__version__} on {jax.default_backend()}; cached: {args.repeats} blocks "
        f"of {args.block} calls; first calls: {args.first_repeats} fresh builds"
    )
    for n in args.sizes:
        base = plain_jax(n)
        print(f"N={n}:")
        contenders = {"by hand": by_hand(n), "statejax.jit": statejax_jit(n)}
        if args.others:
            contenders |= {"brainstate.jit": brainstate_jit(n), "nnx.jit": nnx_jit(n)}
        makes = {name: make for name, make in contenders.items() if make is not None}
        cached: dict[str, str] = {name: "" for name in makes}
        if not args.first_only:
            # One base and every contender, interleaved block by block.
            base_call, calls = _median_calls(
                base(), {name: make() for name, make in makes.items()}, args.repeats, args.block
            )
            for name, call in calls.items():
                cached[name] = (
                    f" cached {call * 1e6:8.1f} us vs {base_call * 1e6:8.1f} us"
                    f" ({call / base_call:5.3f}x, {_load()})"
                )
        for name, make in makes.items():
            if name == "by hand" and args.first_only:
                continue  # the floor is of cached calls only
            line = f"  {name:15s}" + cached[name]
            if not args.cached_only and name != "by hand":
                # First calls are noisy (compilation); alternate with the baseline so
                # that drift in machine load hits both alike, and compare medians.
                firsts, base_firsts = [], []
                for _ in range(args.first_repeats):
                    base_firsts.append(_first_call(base))
                    firsts.append(_first_call(make))
                first, base_first = statistics.median(firsts), statistics.median(base_firsts)
                line += (
                    f"   first {first * 1e3:8.1f} ms vs {base_first * 1e3:8.1f} ms"
                    f" ({first / base_first:5.3f}x, {_load()})"
                )
            print(line, flush=True)


if __name__ == "__main__":
    main()
