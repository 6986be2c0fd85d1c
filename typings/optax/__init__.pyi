# Minimal stub: the part of optax that statejax uses.
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, TypeAlias

import jax

Params: TypeAlias = Any
Updates: TypeAlias = Any
OptState: TypeAlias = Any
ScalarOrSchedule: TypeAlias = float | jax.Array | Callable[[Any], Any]

class TransformInitFn(Protocol):
    def __call__(self, params: Params) -> OptState: ...

class TransformUpdateFn(Protocol):
    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None
    ) -> tuple[Updates, OptState]: ...

class GradientTransformation(NamedTuple):
    init: TransformInitFn
    update: TransformUpdateFn

def apply_updates(params: Params, updates: Updates) -> Params: ...
def adam(
    learning_rate: ScalarOrSchedule,
    b1: float = ...,
    b2: float = ...,
    eps: float = ...,
    eps_root: float = ...,
) -> GradientTransformation: ...
def adamw(
    learning_rate: ScalarOrSchedule,
    b1: float = ...,
    b2: float = ...,
    eps: float = ...,
    eps_root: float = ...,
    weight_decay: float = ...,
) -> GradientTransformation: ...
def sgd(
    learning_rate: ScalarOrSchedule, momentum: float | None = ..., nesterov: bool = ...
) -> GradientTransformation: ...
def chain(*args: GradientTransformation) -> GradientTransformation: ...
def clip_by_global_norm(max_norm: float) -> GradientTransformation: ...
def softmax_cross_entropy_with_integer_labels(
    logits: jax.Array, labels: jax.Array, axis: int = ...
) -> jax.Array: ...
def sigmoid_binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array: ...
def l2_loss(predictions: jax.Array, targets: jax.Array | None = ...) -> jax.Array: ...
