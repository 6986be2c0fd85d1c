"""Exponential moving averages of states, updated inside a compiled step.

Examples:
    >>> import jax.numpy as jnp
    >>> import statejax as sj
    >>> from statejax_ema import ema
    >>> w = sj.ParamState(jnp.array(0.0))
    >>> def train_step() -> None:
    ...     w.value = w.value + 1.0
    >>> step = ema(train_step, [w], decay=0.5)
    >>> for _ in range(3):
    ...     step()
    >>> float(w.value), float(step.averages[0].value)
    (3.0, 2.125)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Never, ParamSpec, TypeVar

import jax
import pydantic

import statejax as sj
from statejax.extend import PureCore, Split, StatefulFunction, TransformSpec, parse_spec

__all__ = ["EmaFunction", "EmaSpec", "ema"]

P = ParamSpec("P")
R = TypeVar("R")


def _as_mapping(states: Any) -> Any:
    """Accept a mapping path -> State (`model.states(...)`), one State, or a sequence."""
    if isinstance(states, sj.State):
        return {0: states}
    if isinstance(states, Mapping):
        return dict(states)
    if isinstance(states, Sequence) and not isinstance(states, str):
        return dict(enumerate(states))
    return states


def _states_json_schema(schema: dict[str, Any]) -> None:
    """The JSON schema of `states`: the three forms the validator accepts."""
    state = {"description": "a State (a Python object; not representable in JSON)"}
    schema.pop("type", None)
    schema.pop("additionalProperties", None)
    schema["anyOf"] = [
        {
            "type": "object",
            "additionalProperties": state,
            "minProperties": 1,
            "description": "a mapping path -> State, such as model.states(sj.ParamState)",
        },
        {"type": "array", "items": state, "minItems": 1, "description": "a list of States"},
        state,
    ]


class EmaSpec(TransformSpec):
    """Options of `ema`."""

    states: dict[Any, Any] = pydantic.Field(
        description="the states to average: a mapping path -> State such as "
        "model.states(sj.ParamState), a list of States, or a single State",
        json_schema_extra=_states_json_schema,
    )
    decay: float = pydantic.Field(
        default=0.999, gt=0.0, lt=1.0, description="weight of the old average, in (0, 1)"
    )

    @pydantic.field_validator("states", mode="before")
    @classmethod
    def _states(cls, value: Any) -> Any:
        mapping = _as_mapping(value)
        if not isinstance(mapping, dict):
            raise ValueError(
                "expected a mapping path -> State, a list of States or a single State, "
                f"got {type(value).__name__}"
            )
        for path, state in mapping.items():
            if not isinstance(state, sj.State):
                raise ValueError(
                    f"the entry at path {path!r} is {type(state).__name__}, not a State; "
                    "pass model.states(sj.ParamState) or a list of States"
                )
        if not mapping:
            raise ValueError("no states selected; pass at least one State")
        return mapping

    def __hash__(self) -> int:  # dict fields: hash by state identity
        return hash((tuple((p, id(s)) for p, s in self.states.items()), self.decay))


class EmaFunction(Generic[P, R]):
    """A compiled step that also keeps moving averages; see `ema`."""

    def __init__(self, fn: Callable[P, R], spec: EmaSpec) -> None:
        tracked: list[sj.State[Any]] = list(spec.states.values())
        #: path -> LongTermState holding the running average of the state at that path.
        self.averages: dict[Any, sj.LongTermState[Any]] = {
            path: sj.LongTermState(state.value, tag="ema") for path, state in spec.states.items()
        }
        shadows = list(self.averages.values())
        decay = spec.decay

        def lift(split: Split, pure: PureCore) -> Callable[..., Any]:
            def averaged(read: list[Any], write: list[Any], *args: Any, **kwargs: Any) -> Any:
                out, new_write = pure(read, write, *args, **kwargs)
                new_write = list(new_write)
                for state, shadow in zip(tracked, shadows, strict=True):
                    written, i = split.position(state)
                    current = new_write[i] if written else read[i]
                    _, j = split.position(shadow)
                    new_write[j] = jax.tree.map(
                        lambda avg, cur: decay * avg + (1.0 - decay) * cur, new_write[j], current
                    )
                return out, new_write

            return jax.jit(averaged)

        # The averages are written every call; the tracked states are at least read.
        seed = Split(read_states=tracked, write_states=shadows)
        self._stateful: StatefulFunction[R] = StatefulFunction(fn, "ema", lift, seed, staged=True)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._stateful(*args, **kwargs)


def ema(
    fn: Callable[P, R], states: Any, decay: float = 0.999, **misspelled: Never
) -> EmaFunction[P, R]:
    """Compile `fn` and keep an exponential moving average of `states` across calls.

    After each call, `average = decay * average + (1 - decay) * value` for every
    selected state, computed in the same compiled computation as `fn`. The
    averages start at the states' values when `ema` is called and are exposed
    as `.averages` (same keys as `states`). A misspelled option is a
    `statejax.SpecError` with a did-you-mean (and a mypy error).

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax_ema import ema
        >>> w = sj.ParamState(jnp.array(4.0))
        >>> step = ema(lambda: None, {"w": w}, decay=0.5)
        >>> w.value = jnp.array(0.0); step()
        >>> float(step.averages["w"].value)
        2.0
    """
    spec = parse_spec(EmaSpec, "ema", states=states, decay=decay, **misspelled)
    return EmaFunction(fn, spec)
