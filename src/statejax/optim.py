"""Optimizers as state: a thin layer over optax.

`Optimizer` pairs an optax `GradientTransformation` with the parameter
states it trains. The optax state (Adam's moments, step counts...) lives in an
`OptimState`, so `update(grads)` is an ordinary state-writing call that
works eagerly and inside `statejax.jit`; no update rule is written by hand.

Examples:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import statejax as sj
    >>> from statejax.optim import Optimizer
    >>> from statejax.transform import grad
    >>> w = sj.ParamState(jnp.array([1.0, -2.0]))
    >>> opt = Optimizer(optax.sgd(0.1), [w])
    >>> @sj.jit
    ... def step():
    ...     grads = grad(lambda: jnp.sum(w.value ** 2), [w])()
    ...     opt.update(grads)
    >>> step()
    >>> [round(float(v), 4) for v in w.value]
    [0.8, -1.6]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils  # type: ignore[import-untyped]
from jax.sharding import NamedSharding, PartitionSpec

from statejax._errors import SpecError
from statejax._state import LongTermState, State
from statejax.graph import Module, StateMapping

__all__ = ["OptimState", "Optimizer"]

T = TypeVar("T")


class OptimState(LongTermState[T]):
    """The state of an optimizer (optax's moments, counts): kept across steps, not trained."""

    __slots__ = ()


class Optimizer(Module):
    """An optax transformation bound to parameter states, its own state held in a State.

    `params` is a mapping to states (such as `model.states(ParamState)`) or a
    list/tuple of states. `update` takes gradients in the same structure,
    the one `statejax.grad` returns for those
    `grad_states`. `opt_state` is the `OptimState`; the optimizer is a
    `statejax.Module`, so `optimizer.states()` finds it.

    Examples:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> import statejax as sj
        >>> from statejax.optim import Optimizer
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(3))
        >>> net = Net()
        >>> opt = Optimizer(optax.adam(1e-3), net.states(sj.ParamState))
        >>> list(opt.states())
        [('opt_state',)]
    """

    def __init__(
        self,
        tx: optax.GradientTransformation,
        params: Mapping[Any, State[Any]] | Sequence[State[Any]],
    ) -> None:
        if isinstance(params, Mapping):
            keys: tuple[Any, ...] = tuple(params)
            states = tuple(params[k] for k in keys)
            self._is_mapping = True
        elif isinstance(params, (list, tuple)):
            keys = tuple(range(len(params)))
            states = tuple(params)
            self._is_mapping = False
        else:
            raise SpecError(
                f"statejax.optim.Optimizer: params must be a mapping to States (such as "
                f"model.states(ParamState)) or a list of States, got {type(params).__name__}."
            )
        for state in states:
            if not isinstance(state, State):
                raise SpecError(
                    f"statejax.optim.Optimizer: params must hold States, got {state!r}."
                )
        self.tx = tx
        # A StateMapping is not walked by Module.states(): only opt_state is this module's.
        self.params: StateMapping[State[Any]] = StateMapping(zip(keys, states, strict=True))
        self._keys = keys
        # optax.apply_updates returns strongly typed arrays: make weakly typed parameters
        # (jnp.array(0.1)) strong now, so the first update does not change their type and
        # make a jitted training step compile a second time.
        for state in states:
            state.value = jax.tree.map(lambda v: jnp.asarray(v, jnp.result_type(v)), state.value)
        self.opt_state = OptimState(tx.init(self._values()))

    # optax sees the parameters as a flat list, in the order of `params`: lists flatten
    # in JAX's C++ pytree code, so the optimizer state costs nothing extra on a jit call
    # (a StateTree, a Python-registered pytree node, would call back into Python).
    def _values(self) -> list[Any]:
        return [s.value for s in self.params.values()]

    def _grads_list(self, grads: Any) -> list[Any]:
        if self._is_mapping:
            if not isinstance(grads, Mapping) or len(grads) != len(self._keys):
                raise TypeError(
                    "Optimizer.update: expected gradients as a mapping with the keys of params "
                    f"{list(self._keys)!r}, got {type(grads).__name__}"
                )
            try:
                return [grads[k] for k in self._keys]
            except KeyError as missing:
                raise TypeError(
                    f"Optimizer.update: no gradient for the parameter {missing.args[0]!r}"
                ) from None
        if not isinstance(grads, (list, tuple)) or len(grads) != len(self._keys):
            raise TypeError(
                f"Optimizer.update: expected a list of {len(self._keys)} gradients (one per "
                f"parameter), got {type(grads).__name__}"
            )
        return list(grads)

    def shard_like_params(self) -> None:
        """Place the optimizer state as the parameters are placed now.

        An optimizer made after its parameters were sharded already holds its
        moments sharded like them (optax makes them with `zeros_like`); call this
        after sharding the parameters of an existing optimizer. Each leaf that
        mirrors a parameter (found by `optax.tree_utils.tree_map_params`) takes that
        parameter's sharding; the others (step counts) are replicated on the
        parameters' mesh. `statejax.jit` then keeps them there.

        Examples:
            >>> import jax.numpy as jnp
            >>> import optax
            >>> import statejax as sj
            >>> w = sj.ParamState(jnp.ones(2))
            >>> opt = Optimizer(optax.adam(0.1), [w])
            >>> opt.shard_like_params()
            >>> opt.opt_state.value[0].mu[0].sharding.is_equivalent_to(w.value.sharding, 1)
            True
        """
        params = self._values()
        meshes = [
            leaf.sharding.mesh
            for leaf in jax.tree.leaves(params)
            if isinstance(getattr(leaf, "sharding", None), NamedSharding)
        ]
        replicated = NamedSharding(meshes[0], PartitionSpec()) if meshes else None  # type: ignore[no-untyped-call]
        self.opt_state.value = optax.tree_utils.tree_map_params(
            self.tx,
            lambda leaf, param: jax.device_put(leaf, param.sharding),
            self.opt_state.value,
            params,
            transform_non_params=lambda leaf: (
                leaf if replicated is None else jax.device_put(leaf, replicated)
            ),
        )

    def update(self, grads: Any, **extra_args: Any) -> None:
        """Apply one optax step: write new parameter values and the new optimizer state.

        `grads` has the structure of `params` (a mapping with its keys, or a
        list in its order). `extra_args` go to `tx.update`, for the optax
        transformations that take them (`value=loss` for
        `optax.contrib.reduce_on_plateau`). Works eagerly and inside `statejax.jit`.

        Examples:
            >>> import jax.numpy as jnp
            >>> import optax
            >>> import statejax as sj
            >>> w = sj.ParamState(jnp.array([1.0, -2.0]))
            >>> opt = Optimizer(optax.sgd(0.5), {"w": w})
            >>> opt.update({"w": jnp.array([1.0, -1.0])})
            >>> w.value.tolist()
            [0.5, -1.5]
        """
        params = self._values()
        updates, new_opt_state = self.tx.update(
            self._grads_list(grads), self.opt_state.value, params, **extra_args
        )
        new_params = optax.apply_updates(params, updates)
        for state, value in zip(self.params.values(), new_params, strict=True):
            state.value = value
        self.opt_state.value = new_opt_state
