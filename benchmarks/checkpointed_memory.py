"""Benchmark (run by hand): reverse-mode memory of `checkpointed_scan` against `lax.scan`.

An RNN step `h = tanh(w @ h + u @ x)` (hidden size `--size`, input size
`--inputs`) runs for `--steps` steps; the loss is the sum of the final state. Each variant's `jax.grad` is compiled with `jax.jit`, and the
script prints XLA's temporary-buffer size (`compile().memory_analysis()`), which is
where the residuals kept for the backward pass live, then the median run time.

    python benchmarks/checkpointed_memory.py [--steps 1000 10000] [--size 256] [--inputs 16]
        [--base 16]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from statejax.transform import checkpointed_scan


def measure(scan: Callable[..., Any], steps: int, size: int, inputs: int) -> tuple[int, float]:
    """(temporary bytes of the compiled grad, median seconds per call)."""
    xs = jnp.ones((steps, inputs)) * 0.01
    u = jnp.ones((size, inputs)) * 0.1

    def loss(w: jax.Array) -> jax.Array:
        h, _ = scan(lambda h, x: (jnp.tanh(w @ h + u @ x), None), jnp.zeros(size), xs)
        return h.sum()

    w = jnp.eye(size) * 0.5
    compiled = jax.jit(jax.grad(loss)).lower(w).compile()
    temp = int(compiled.memory_analysis().temp_size_in_bytes)
    compiled(w).block_until_ready()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        compiled(w).block_until_ready()
        times.append(time.perf_counter() - start)
    return temp, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--inputs", type=int, default=16)
    parser.add_argument("--base", type=int, default=16)
    args = parser.parse_args()
    device = jax.devices()[0].device_kind
    print(f"jax {jax.__version__} on {device}; hidden {args.size}, inputs {args.inputs}")
    print("| steps | lax.scan temp | checkpointed_scan temp | ratio | lax.scan time | ckpt time |")
    print("|---|---|---|---|---|---|")
    for steps in args.steps:
        plain = measure(lax.scan, steps, args.size, args.inputs)
        ours = measure(
            lambda f, c, xs: checkpointed_scan(f, c, xs, base=args.base),
            steps,
            args.size,
            args.inputs,
        )
        print(
            f"| {steps} | {plain[0] / 1024:.0f} KiB | {ours[0] / 1024:.0f} KiB | "
            f"{plain[0] / ours[0]:.1f}x less | {plain[1] * 1e3:.2f} ms | {ours[1] * 1e3:.2f} ms |"
        )


if __name__ == "__main__":
    main()
