"""Progress bars for the loops: `ProgressBar` and its host side.

A loop given `pbar=` carries a step counter next to its states; every `freq` steps
(and on the first and the last step) the compiled loop reports the counter to the
host through `jax.debug.callback`, where a `tqdm` bar is drawn. So the bar works
inside `jit`, and each run of a compiled loop draws a fresh bar.

Not a plugin: it registers no transform; the loop plugins (`loops`, `bounded`, through
`_loop_core`) take their `pbar=` option from here.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import jax
import numpy as np
import pydantic
from jax import lax

from statejax._transforms._common import PositiveCount, SpecTypeError
from statejax.extend import SpecError, TransformSpec, parse_spec

__all__ = [
    "BarHandler",
    "PbarOption",
    "ProgressBar",
    "as_pbar",
    "check_pbar_type",
    "pbar_json_schema",
    "progress_handler",
]

# Options the bar sets itself: tqdm would get them twice.
_OWN_TQDM_OPTIONS = ("total", "desc", "initial")


class _BarOptions(TransformSpec):
    """The options of `ProgressBar`, without its keyword-collecting `__init__`."""

    model_config = pydantic.ConfigDict(
        json_schema_extra={
            "description": "How a loop shows its progress: a tqdm bar updated from inside the "
            "compiled loop."
        }
    )

    freq: PositiveCount | None = pydantic.Field(
        default=None, description="update the bar every this many steps"
    )
    count: PositiveCount | None = pydantic.Field(
        default=None, description="update the bar this many times in all (instead of freq)"
    )
    desc: str | tuple[str, Callable[..., Any]] | None = pydantic.Field(
        default=None,
        description="text before the bar, or (format string, function of {i, carry, y} "
        "returning the dict to format it with)",
    )
    kwargs: tuple[tuple[str, Any], ...] = pydantic.Field(
        default=(), description="further options passed on to tqdm, as (name, value) pairs"
    )

    @pydantic.model_validator(mode="after")
    def _freq_or_count(self) -> _BarOptions:
        if self.freq is not None and self.count is not None:
            raise ValueError("give freq or count, not both")
        return self


class ProgressBar(_BarOptions):
    """How a loop shows its progress: a tqdm bar updated from inside the compiled loop.

    Pass it as `pbar=` to `scan`, `for_loop`, `checkpointed_scan` or
    `checkpointed_for_loop` (`pbar=k`, a positive int, means `ProgressBar(freq=k)`).
    The bar is updated every `freq` steps, or `count` times in all (`freq` is then
    the number of steps divided by `count`); by default every 5% of the steps (every
    step for 20 steps or fewer). Give `freq` or `count`, not both.

    `desc` is the text before the bar: a string, or a pair `(fmt, fn)` where `fn`
    gets `{"i": step, "carry": carry, "y": y}` (the step counted from 0, and the
    carry and output of that step) inside the loop and returns a dict of arrays,
    which the host formats into `fmt` (`fmt.format(**fn(data))`) at each update.
    Further keyword arguments go to `tqdm` (`leave=False`, `ncols=80`, ...).

    Args:
        freq: update the bar every this many steps.
        count: update the bar this many times in all.
        desc: the text shown before the bar, or `(format_string, function)`.
        **kwargs: options passed on to `tqdm`.

    `print_freq` and `print_count` are BrainState's names of `freq` and `count`.

    Raises:
        SpecError: `freq` or `count` is not a positive int, both are given, `desc`
            is neither a string nor a `(str, callable)` pair, or a `tqdm` option is
            one the bar sets itself (`total`, `desc`, `initial`). When `desc` has the
            wrong type (not a string, list or tuple; a first item that is not a
            string; a second that is not callable) the error is a `TypeError` too.
            A keyword argument that is no option of tqdm (`leav=False`) is refused
            here too, with a did-you-mean, rather than when the loop runs.

    Examples:
        >>> import jax.numpy as jnp
        >>> from statejax.transform import ProgressBar, for_loop
        >>> bar = ProgressBar(freq=2, desc=("step {i}, y={y:.1f}", lambda d: d), leave=False)
        >>> bar.freq, bar.kwargs
        (2, (('leave', False),))
        >>> for_loop(lambda x: x * 2, jnp.arange(4.0), pbar=bar).tolist()
        [0.0, 2.0, 4.0, 6.0]
    """

    def __init__(
        self,
        freq: int | None = None,
        count: int | None = None,
        desc: str | tuple[str, Callable[..., Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        _check_desc_types(desc)
        _check_tqdm_options(kwargs)
        own = [k for k in kwargs if k in _OWN_TQDM_OPTIONS]
        if own:
            raise SpecError(
                f"statejax.ProgressBar: the bar sets tqdm's {', '.join(own)} itself; remove "
                "it (use desc= for the text, freq=/count= for the updates)."
            )
        try:
            super().__init__(
                freq=freq, count=count, desc=desc, kwargs=tuple(sorted(kwargs.items()))
            )
        except pydantic.ValidationError:
            # Validate again through parse_spec for statejax's error message.
            parse_spec(_BarOptions, "ProgressBar", freq=freq, count=count, desc=desc, kwargs=())
            raise

    @property
    def print_freq(self) -> int | None:
        """BrainState's name of `freq`."""
        return self.freq

    @property
    def print_count(self) -> int | None:
        """BrainState's name of `count`."""
        return self.count


def _tqdm_options() -> list[str]:
    """The keyword options of the bar `tqdm.auto` draws (tqdm's own; `display` in notebooks)."""
    from tqdm import tqdm  # tqdm.std's bar; imported on first use (most take no options)

    parameters = inspect.signature(tqdm.__init__).parameters.values()
    named = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    return [n for n in named if n not in ("self", "iterable")] + ["display"]


def _check_tqdm_options(kwargs: dict[str, Any]) -> None:
    """Refuse, when the bar is made, a tqdm option tqdm would refuse when it is drawn."""
    if not kwargs:
        return
    known = _tqdm_options()
    unknown = [name for name in kwargs if name not in known]
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SpecError(
            f"statejax.ProgressBar: {name!r} is not an option of tqdm, which draws the bar "
            f"(it would fail when the loop runs).{hint} tqdm's options: "
            f"{', '.join(n for n in known if n not in _OWN_TQDM_OPTIONS)}."
        )


def _check_desc_types(desc: object) -> None:
    """A `desc` of the wrong type: a `SpecError` that is also a `TypeError`, as BrainState's."""
    if desc is None or isinstance(desc, str):
        return
    problem = None
    if not isinstance(desc, (tuple, list)):
        problem = f"{type(desc).__name__} {desc!r:.80} is neither a string nor a tuple"
    elif len(desc) == 2 and not isinstance(desc[0], str):
        problem = f"its first item {desc[0]!r:.80} is not a format string"
    elif len(desc) == 2 and not callable(desc[1]):
        problem = f"its second item {desc[1]!r:.80} is not callable"
    if problem is not None:
        raise SpecTypeError(
            f"statejax.ProgressBar: option desc: {problem}; give a string, or a pair "
            "(format string, function of {i, carry, y} returning a dict)."
        )


def check_pbar_type(name: str, pbar: object) -> None:
    """Refuse a `pbar=` of no accepted type with a `SpecError` that is also a `TypeError`.

    A `ProgressBar`, an int (a bool is refused later, by `as_pbar`), a dict of
    `ProgressBar`'s options, or `None` pass on to the spec's validation.
    """
    if pbar is None or isinstance(pbar, (ProgressBar, int, np.integer, dict)):
        return
    raise SpecTypeError(
        f"statejax.{name}: option pbar: {type(pbar).__name__} {pbar!r:.80} is not a progress "
        "bar; give ProgressBar(...), an int k (update every k steps), or None (no bar)."
    )


def as_pbar(value: Any) -> Any:
    """`pbar=` before validation: an int is a `ProgressBar` of that `freq`.

    A bool is refused (it is no number of steps), where pydantic would read it as 1.
    """
    if isinstance(value, bool):
        raise ValueError(
            f"{value!r} is a bool; give ProgressBar() for the default bar, an int k to update "
            "every k steps, or None for no bar"
        )
    if isinstance(value, (int, np.integer)):
        return {"freq": int(value)}
    return value


def pbar_json_schema(schema: dict[str, Any]) -> None:
    """The JSON schema of `pbar`: what the validator accepts, not only `ProgressBar`."""
    every = pydantic.TypeAdapter(PositiveCount).json_schema()
    schema["anyOf"] = [
        {**every, "description": "update the bar every this many steps"},
        *schema.get("anyOf", []),
    ]


#: The `pbar` option of the loops' specs (`pbar: PbarOption = None`): a `ProgressBar`, a
#: positive int `k` (read as `ProgressBar(freq=k)`), or `None` for no bar; a bool is refused.
PbarOption = Annotated[
    ProgressBar | None,
    pydantic.BeforeValidator(as_pbar),
    pydantic.Field(
        description="show a progress bar: a ProgressBar, a positive int k (update every k "
        "steps), or None (no bar)",
        json_schema_extra=pbar_json_schema,
    ),
]


class BarHandler:
    """The host side of one loop's bar: receives the number of steps done."""

    def __init__(self, config: ProgressBar, total: int, name: str) -> None:
        self.total = total
        if config.count is not None:
            freq = total // config.count
            if freq == 0:
                raise SpecError(
                    f"statejax.{name}: pbar count={config.count} is more updates than the "
                    f"{total} steps; give a count of at most {total}."
                )
        elif config.freq is not None:
            freq = config.freq
            if freq > total:
                raise SpecError(
                    f"statejax.{name}: pbar freq={freq} is more than the {total} steps; give "
                    f"a freq of at most {total}."
                )
        else:
            freq = total // 20 if total > 20 else 1
        self.freq = freq
        desc = config.desc
        self.fmt: str = desc[0] if isinstance(desc, tuple) else (desc or f"Running {name}")
        self.data_fn: Callable[..., Any] | None = desc[1] if isinstance(desc, tuple) else None
        self.name = name
        self.kwargs = dict(config.kwargs)
        self.bar: Any = None

    def _describe(self, data: Any) -> str:
        return self.fmt if self.data_fn is None else self.fmt.format(**data)

    def __call__(self, done: Any, data: Any = None) -> None:
        done = int(done)
        if done == 1:  # every run reports its first step: start a fresh bar
            if self.bar is not None:
                self.bar.close()
            from tqdm.auto import tqdm  # imported on first use: the bar is optional

            options = {"leave": True, "mininterval": 0, **self.kwargs}
            self.bar = tqdm(total=self.total, desc=self._describe(data), **options)
        bar = self.bar
        if bar is None or done <= bar.n:
            return
        if self.data_fn is not None:
            bar.set_description(self._describe(data), refresh=False)
        bar.update(done - bar.n)
        if done >= self.total:
            bar.close()
            self.bar = None

    def data(self, done: Any, carry: Any, y: Any) -> Any:
        """The values `desc`'s function picks from this step (traced; `None` without one)."""
        if self.data_fn is None:
            return None
        data = self.data_fn({"i": done - 1, "carry": carry, "y": y})
        if not isinstance(data, dict):
            raise TypeError(
                f"statejax.{self.name}: the desc function of the ProgressBar must return a "
                f"dict of values to format {self.fmt!r} with; it returned "
                f"{type(data).__name__}."
            )
        return data

    def due(self, done: Any) -> Any:
        return (done == 1) | (done % self.freq == 0) | (done == self.total)

    def tick(self, done: jax.Array, carry: Any = None, y: Any = None) -> None:
        """Called in the loop body with the steps done (from 1): report them when due."""
        data = self.data(done, carry, y)
        lax.cond(
            self.due(done) & (done <= self.total),
            lambda: jax.debug.callback(self, done, data),
            lambda: None,
        )

    def tick_eagerly(self, done: int, carry: Any = None, y: Any = None) -> None:
        """`tick` for a loop run in Python (under `jax.disable_jit()`)."""
        if self.due(done):
            self(done, self.data(done, carry, y))


def progress_handler(config: ProgressBar | None, total: int | None, name: str) -> BarHandler | None:
    """The host side of `config` for a loop of `total` steps (`None`: no bar)."""
    if config is None or not total:
        return None
    return BarHandler(config, total, name)
