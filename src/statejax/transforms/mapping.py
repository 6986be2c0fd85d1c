"""`StatefulMapping`: BrainState's class form of a state-aware `vmap`.

A thin layer over `statejax.transform.vmap` (and so over the engine): it adds
BrainState's `static_argnums`/`static_argnames`, which are closed over per call
(as `jax.jit` closes over static arguments) and are neither traced nor mapped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Literal

import pydantic

from statejax.extend import State, TransformSpec, parse_spec
from statejax.graph import Module
from statejax.transforms._common import Index, as_tuple
from statejax.transforms.vmap import vmap

__all__ = ["StatefulMapping", "StatefulMappingSpec"]

# Mapped functions kept per combination of static values; then the cache starts over.
_MAX_VARIANTS = 64


class StatefulMappingSpec(TransformSpec):
    """Options of `StatefulMapping` beyond those of `vmap`."""

    static_argnums: tuple[Index, ...] = pydantic.Field(
        default=(), description="positions of arguments closed over per call, not mapped"
    )
    static_argnames: tuple[str, ...] = pydantic.Field(
        default=(), description="names of keyword arguments closed over per call, not mapped"
    )
    unexpected_out_state_mapping: Literal["raise"] = pydantic.Field(
        default="raise",
        description="the policy for a batched write into a state outside state_out_axes: "
        "'raise' (BatchAxisError naming the state; declare it in state_in_axes/state_out_axes)",
    )

    _normalise = pydantic.field_validator("static_argnums", "static_argnames", mode="before")(
        lambda cls, v: () if v is None else as_tuple(v)
    )


class StatefulMapping:
    """Vectorise `fun` over a batch axis, threading the states it reads and writes.

    Calls `statejax.transform.vmap` with `state_in_axes` as its `in_states` and
    `state_out_axes` as its `out_states` (a selector for axis 0, or
    `{axis: selector}`); every other state is broadcast, and writing a batched
    value into one raises `statejax.BatchAxisError`. Arguments named by
    `static_argnums`/`static_argnames` are closed over per call, so they may be
    any hashable Python value; their `in_axes` entries are dropped.

    Args:
        fun: the function to vectorise.
        in_axes: as `jax.vmap`'s, one entry per positional argument (static ones included).
        out_axes: as `jax.vmap`'s.
        state_in_axes: the states mapped on an axis and written back batched.
        state_out_axes: the states written back batched.
        unexpected_out_state_mapping: only `"raise"` (see `docs/porting.md`).
        static_argnums: positions of arguments closed over, not mapped.
        static_argnames: names of keyword arguments closed over, not mapped.
        axis_size: the batch size, needed when nothing is mapped.
        axis_name: the name of the batch axis, for collectives.
        name: a name for the object's `repr`.

    Raises:
        SpecError: an option is invalid.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> counter = sj.ShortTermState(jnp.zeros(3))
        >>> def accumulate(x, scale):
        ...     counter.value = counter.value + x * scale
        ...     return counter.value
        >>> batched = sj.transform.StatefulMapping(
        ...     accumulate, state_in_axes={0: sj.ShortTermState}, static_argnums=1)
        >>> batched(jnp.asarray([1.0, 2.0, 3.0]), 2).tolist(), counter.value.tolist()
        ([2.0, 4.0, 6.0], [2.0, 4.0, 6.0])
    """

    def __init__(
        self,
        fun: Callable[..., Any],
        in_axes: Any = 0,
        out_axes: Any = 0,
        state_in_axes: Any = None,
        state_out_axes: Any = None,
        unexpected_out_state_mapping: str = "raise",
        static_argnums: int | Iterable[int] | None = (),
        static_argnames: str | Iterable[str] | None = (),
        axis_size: int | None = None,
        axis_name: Hashable | None = None,
        name: str | None = None,
    ) -> None:
        spec = parse_spec(
            StatefulMappingSpec,
            "StatefulMapping",
            static_argnums=static_argnums,
            static_argnames=static_argnames,
            unexpected_out_state_mapping=unexpected_out_state_mapping,
        )
        self.origin_fun = fun
        self.name = name
        self.in_axes = in_axes
        self.out_axes = out_axes
        self.state_in_axes = state_in_axes
        self.state_out_axes = state_out_axes
        self.axis_size = axis_size
        self.axis_name = axis_name
        self.unexpected_out_state_mapping = spec.unexpected_out_state_mapping
        self.static_argnums: tuple[int, ...] = spec.static_argnums
        self.static_argnames: tuple[str, ...] = spec.static_argnames
        self._options = {
            "out_axes": out_axes,
            "in_states": state_in_axes,
            "out_states": state_out_axes,
            "axis_size": axis_size,
            "axis_name": axis_name,
        }
        dyn_in_axes = self._dynamic_in_axes()
        # Validated once, here: a bad option is a SpecError at construction.
        self._mapped = vmap(fun, in_axes=dyn_in_axes, **self._options)
        self._variants: dict[Hashable, Callable[..., Any]] = {}

    def _dynamic_in_axes(self) -> Any:
        """`in_axes` without the entries of static positions (a per-argument tuple)."""
        if isinstance(self.in_axes, (tuple, list)) and self.static_argnums:
            return tuple(a for i, a in enumerate(self.in_axes) if i not in self.static_argnums)
        return self.in_axes

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the mapped function; the selected states come back batched."""
        if not (self.static_argnums or self.static_argnames):
            return self._mapped(*args, **kwargs)
        if self.static_argnums and max(self.static_argnums) >= len(args):
            raise ValueError(
                f"{self!r}: static_argnums contains index {max(self.static_argnums)}, but only "
                f"{len(args)} positional arguments were given."
            )
        statics = tuple(args[i] for i in self.static_argnums)
        static_kw = tuple((k, kwargs[k]) for k in self.static_argnames if k in kwargs)
        dyn_args = [a for i, a in enumerate(args) if i not in self.static_argnums]
        dyn_kwargs = {k: v for k, v in kwargs.items() if k not in self.static_argnames}
        return self._variant(statics, static_kw)(*dyn_args, **dyn_kwargs)

    def _variant(
        self, statics: tuple[Any, ...], static_kw: tuple[tuple[str, Any], ...]
    ) -> Callable[..., Any]:
        key = (statics, static_kw)
        try:
            found = self._variants.get(key)
        except TypeError:
            raise TypeError(
                f"{self!r}: static arguments must be hashable; got {key!r}. Pass arrays as "
                "mapped (or broadcast, in_axes=None) arguments."
            ) from None
        if found is not None:
            return found
        positions, fun = self.static_argnums, self.origin_fun

        @functools.wraps(fun)
        def bound(*dyn_args: Any, **dyn_kwargs: Any) -> Any:
            dynamic = iter(dyn_args)
            n = len(dyn_args) + len(positions)
            full = [
                statics[positions.index(i)] if i in positions else next(dynamic) for i in range(n)
            ]
            return fun(*full, **dict(static_kw), **dyn_kwargs)

        mapped = vmap(bound, in_axes=self._dynamic_in_axes(), **self._options)
        # A module or state among the static values would be kept alive by the cache.
        if not any(isinstance(v, (Module, State)) for v in (*statics, *dict(static_kw).values())):
            if len(self._variants) >= _MAX_VARIANTS:
                self._variants.clear()
            self._variants[key] = mapped
        return mapped

    def __repr__(self) -> str:
        return f"StatefulMapping({self.name or getattr(self.origin_fun, '__qualname__', '?')})"
