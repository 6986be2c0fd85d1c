"""Overhead of ``statejax.jit`` against plain ``jax.jit`` on the same arrays.

N states of shape (4,), each stepped ``s.value = s.value + 1``. For each N this
prints the median cached-call time and the first-call time (trace + compile) of
plain ``jax.jit`` and of ``statejax.jit``, measured in one process, and their
ratios. "by hand" is the floor of any library that keeps values in objects: the same
``jax.jit`` call with the N values gathered from N objects and stored back by a plain
loop. BrainState and Flax NNX are measured too when installed (``--others``).

Cached calls run in blocks (``--block`` calls of one, then of the other, for
``--repeats`` rounds); the time of a block divided by its calls is one sample, and
the ratio is of the medians. First calls alternate a fresh build of each
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
    base: Callable[[], Any], fn: Callable[[], Any], repeats: int, block: int
) -> tuple[float, float]:
    """Median per-call times of ``base`` and ``fn``, in alternating blocks of ``block`` calls,
    so that drift in machine load hits both alike."""

    def run_block(f: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        for _ in range(block):
            out = f()
        jax.block_until_ready(out)
        return (time.perf_counter() - t0) / block

    for _ in range(3):
        run_block(base), run_block(fn)
    base_times, times = [], []
    for _ in range(repeats):
        base_times.append(run_block(base))
        times.append(run_block(fn))
    return statistics.median(base_times), statistics.median(times)


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
        for name, make in contenders.items():
            if make is None:
                continue
            line = f"  {name:15s}"
            if not args.first_only:
                base_call, call = _median_calls(base(), make(), args.repeats, args.block)
                line += (
                    f" cached {call * 1e6:8.1f} us vs {base_call * 1e6:8.1f} us"
                    f" ({call / base_call:5.3f}x, {_load()})"
                )
            if not args.cached_only:
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
