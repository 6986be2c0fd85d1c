"""`statejax demo`: train a small MLP on two interleaving half-moons.

Everything is generated in code (no downloads): a two-moons data set, a
`statejax.Module` MLP of `statejax.ParamState` s, a training step
that is `jit` of `grad` plus an optax Adam update through
`statejax.optim.Optimizer`, a tqdm progress bar, and a final test
accuracy. The `statejax demo` command (`statejax.cli`) runs it and holds the
accuracy to its bar; this module only trains and reports. The tutorial in the docs
walks through this file.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

import statejax as sj
from statejax.optim import Optimizer

__all__ = ["MLP", "Linear", "TrainResult", "make_moons", "run", "train"]

HIDDEN = 32  # width of the two hidden layers
LEARNING_RATE = 1e-2
N_POINTS = 1024  # in the training set, and again in the test set


def make_moons(n: int, noise: float, seed: int) -> tuple[jax.Array, jax.Array]:
    """`n` points on two interleaving half circles with Gaussian noise, and their labels.

    Examples:
        >>> x, y = make_moons(8, noise=0.1, seed=0)
        >>> x.shape, y.shape, sorted(set(y.tolist()))
        ((8, 2), (8,), [0, 1])
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    angle = rng.uniform(0.0, np.pi, size=n)
    upper = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    lower = np.stack([1.0 - np.cos(angle), 0.5 - np.sin(angle)], axis=1)
    points = np.where(labels[:, None] == 0, upper, lower)
    points = points + rng.normal(scale=noise, size=points.shape)
    points = (points - np.array([0.5, 0.25])) / np.array([0.9, 0.5])  # roughly centred, unit
    return jnp.asarray(points, jnp.float32), jnp.asarray(labels, jnp.int32)


class Linear(sj.Module):
    """A dense layer `x @ w + b` with Glorot-uniform weights."""

    def __init__(self, n_in: int, n_out: int, key: jax.Array) -> None:
        limit = (6.0 / (n_in + n_out)) ** 0.5
        self.w = sj.ParamState(jax.random.uniform(key, (n_in, n_out), minval=-limit, maxval=limit))
        self.b = sj.ParamState(jnp.zeros(n_out))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.w.value + self.b.value


class MLP(sj.Module):
    """Dense layers with `tanh` between them; `sizes` = (inputs, hidden..., outputs).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from statejax.demo import MLP
        >>> net = MLP((2, 4, 3), jax.random.PRNGKey(0))
        >>> net(jnp.ones((5, 2))).shape, len(net.states())
        ((5, 3), 4)
    """

    def __init__(self, sizes: Sequence[int], key: jax.Array) -> None:
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = [
            Linear(n_in, n_out, k)
            for n_in, n_out, k in zip(sizes[:-1], sizes[1:], keys, strict=True)
        ]

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = jnp.tanh(layer(x))
        return self.layers[-1](x)


@dataclass(frozen=True)
class TrainResult:
    """What `train` reports."""

    final_loss: float
    test_accuracy: float
    seconds: float


def train(
    steps: int = 1000,
    *,
    seed: int = 0,
    hidden: int = HIDDEN,
    learning_rate: float = LEARNING_RATE,
    n_points: int = N_POINTS,
    progress: bool = True,
) -> TrainResult:
    """Train the demo MLP with full-batch Adam for `steps` steps; return loss and accuracy.

    Examples:
        >>> result = train(150, progress=False)
        >>> result.test_accuracy >= 0.95
        True
    """
    start = time.perf_counter()
    x_train, y_train = make_moons(n_points, noise=0.1, seed=seed)
    x_test, y_test = make_moons(n_points, noise=0.1, seed=seed + 1)

    model = MLP((2, hidden, hidden, 2), jax.random.PRNGKey(seed))
    params = model.states(sj.ParamState)  # path -> ParamState
    optimizer = Optimizer(optax.adam(learning_rate), params)

    def loss_fn(x: jax.Array, y: jax.Array) -> jax.Array:
        logits = model(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @sj.jit
    def train_step(x: jax.Array, y: jax.Array) -> jax.Array:
        grads, loss = sj.grad(loss_fn, params, return_value=True)(x, y)
        optimizer.update(grads)  # writes the params and Adam's moments
        return loss

    @sj.jit
    def accuracy(x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.mean(jnp.argmax(model(x), axis=-1) == y)

    bar = tqdm(range(steps), desc="training", disable=not progress)
    loss: jax.Array = jnp.array(jnp.nan)
    for step in bar:
        loss = train_step(x_train, y_train)
        if progress and (step % 50 == 0 or step == steps - 1):
            bar.set_postfix(loss=f"{float(loss):.4f}")
    bar.close()
    return TrainResult(
        final_loss=float(loss),
        test_accuracy=float(accuracy(x_test, y_test)),
        seconds=time.perf_counter() - start,
    )


def run(steps: int, seed: int = 0, progress: bool = True) -> TrainResult:
    """Train for `steps` steps and print what `statejax demo` shows: data, model, result.

    Examples:
        >>> result = run(150, progress=False)  # doctest: +ELLIPSIS
        two moons: 1024 training points, 1024 test points; MLP 2-32-32-2, Adam(lr=0.01)
        final training loss: ...
        test accuracy: ...%
        >>> result.test_accuracy >= 0.95
        True
    """
    print(
        f"two moons: {N_POINTS} training points, {N_POINTS} test points; "
        f"MLP 2-{HIDDEN}-{HIDDEN}-2, Adam(lr={LEARNING_RATE})"
    )
    result = train(steps, seed=seed, progress=progress)
    print(f"final training loss: {result.final_loss:.4f} ({steps} steps, {result.seconds:.1f} s)")
    print(f"test accuracy: {100 * result.test_accuracy:.1f}%")
    return result
