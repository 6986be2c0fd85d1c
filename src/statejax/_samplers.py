"""The NumPy-style samplers of a `RandomState`, written once as its methods.

`statejax.random.normal(...)` and the other module functions call these methods on
the default `RandomState`. Each sampler follows NumPy's argument names and defaults
(`size=`, `low`/`high`, `loc`/`scale`) and BrainState's additions: `key=` draws with
that seed or key instead of advancing the state, and `dtype=` picks the result type
(default: `statejax.environ`'s `dftype()` or `ditype()`, float32/int32 at the default
precision 32, float64/int64 at 64). With `size=None`
the result has the broadcast shape of the parameters.
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from statejax import _distributions as dist
from statejax._tracing import peek_value
from statejax.environ import dftype, ditype

__all__ = ["Samplers", "as_key", "on_default"]

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")

Size = int | Sequence[int] | None
SeedOrKey = Any  # an int seed, a typed key, or a raw uint32 key (see `as_key`)
DType = Any  # a NumPy/JAX dtype or a Python scalar type; None: environ's default


def _dims(size: Any, sampler: str) -> tuple[int, ...]:
    """`size` (an int or a sequence of ints) as a shape, each entry checked.

    Raises:
        TypeError: an entry is not an integer (`size=2.5`); the message names the sampler.
        ValueError: an entry is negative.
    """
    entries = list(size) if isinstance(size, Sequence) or np.ndim(size) == 1 else [size]
    try:
        shape = tuple(operator.index(s) for s in entries)
    except TypeError:
        raise TypeError(
            f"{sampler}: size must be an int or a sequence of ints (the shape of the result), "
            f"not {size!r}"
        ) from None
    if any(s < 0 for s in shape):
        raise ValueError(f"{sampler}: size must not be negative, not {size!r}")
    return shape


def _shape(size: Size, *params: Any) -> tuple[int, ...]:
    """`size` as a tuple; `None`: the broadcast shape of the (non-None) parameters.

    Raises:
        TypeError: an entry of `size` is not an integer.
        ValueError: an entry of `size` is negative, or a parameter's shape cannot be
            broadcast to `size` (NumPy's "shape mismatch"); the message names the
            sampler and the shapes.
    """
    sampler = sys._getframe(1).f_code.co_name  # the sampler that called us
    shapes = [np.shape(p) for p in params if p is not None]
    if size is None:
        return tuple(lax.broadcast_shapes(*shapes)) if shapes else ()
    shape = _dims(size, sampler)
    if shapes:
        try:
            fits = np.broadcast_shapes(shape, *shapes) == shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"{sampler}: parameters of shapes {', '.join(map(str, shapes))} cannot be "
                f"broadcast to size={shape}; give parameters whose shapes broadcast to "
                "size (scalars always do), or size=None to take their broadcast shape."
            )
    return shape


def _arr(x: Any, dtype: DType = None) -> jax.Array:
    return jnp.asarray(x, dtype)


def _fdt(dtype: DType) -> Any:
    return dftype() if dtype is None else dtype


def _idt(dtype: DType) -> Any:
    return ditype() if dtype is None else dtype


def _brief(value: Any) -> str:
    array = np.asarray(value)
    if array.size == 1:
        return repr(array.reshape(()).item())
    return np.array2string(array, threshold=6, separator=", ")


class _Support:
    """The support check of one draw's parameters: raise where known, mark where traced.

    `require(rule, ok, **params)` evaluates `ok(**params)` (true where the parameters
    are valid; written with operators NumPy and JAX arrays share, so NaN fails it).
    With concrete parameters (a constant inside a transform too), any false element
    is a `ValueError` naming the sampler, the rule and the values: the draw is refused
    before it splits the key. With a traced parameter the values are unknown until
    run, so the elements drawn with invalid parameters are marked, and `apply` turns
    them into NaN (float results) or -1 (integer results; an unsigned dtype's largest
    value). `check=False` (BrainState's `check_valid=False`) skips both.
    """

    __slots__ = ("bad", "check", "sampler")

    def __init__(self, sampler: str, check: bool = True) -> None:
        self.sampler = sampler
        self.check = check
        self.bad: Any = None

    def require(self, rule: str, ok: Callable[..., Any], **params: Any) -> None:
        if not self.check:
            return
        if any(isinstance(v, jax.core.Tracer) for v in params.values()):
            bad = ~jnp.asarray(ok(**{n: jnp.asarray(v) for n, v in params.items()}))
            self.bad = bad if self.bad is None else self.bad | bad
            return
        if not np.all(ok(**{n: np.asarray(v) for n, v in params.items()})):
            shown = ", ".join(f"{n}={_brief(v)}" for n, v in params.items())
            raise ValueError(f"{self.sampler}: {rule}, not {shown}")

    def apply(self, out: jax.Array, trailing: int = 0) -> jax.Array:
        """`out` with the marked elements (and `trailing` axes of each) made invalid."""
        if self.bad is None or out.dtype == jnp.bool_:
            return out
        bad = jnp.reshape(self.bad, (*jnp.shape(self.bad), *(1,) * trailing))
        if jnp.issubdtype(out.dtype, jnp.inexact):
            return jnp.where(bad, jnp.nan, out)
        return jnp.where(bad, np.array(-1).astype(out.dtype), out)


def _population(a: Any, samples: int, replace: bool) -> int:
    """The number of elements `choice` draws from: `a` (an int) or `len(a)`, checked."""
    if np.ndim(a) == 0:
        try:
            n = operator.index(a)
        except TypeError:
            raise TypeError(
                f"choice: a must be an int (the population arange(a)) or an array, not {a!r}"
            ) from None
        if n <= 0 and samples > 0:
            raise ValueError(
                f"choice: a must be a positive int unless no samples are taken, not {n}"
            )
    else:
        n = int(jnp.shape(a)[0])
        if n == 0 and samples > 0:
            raise ValueError("choice: a is empty; there is nothing to draw from")
    if not replace and samples > n:
        raise ValueError(
            f"choice: cannot take {samples} samples without replacement from {n} elements; "
            "pass replace=True or a smaller size"
        )
    return n


def _permuted_axis(x: Any, axis: Any, sampler: str) -> int:
    """`axis` of `x` (an int: `arange(x)`, or an array), checked for `permutation`/`shuffle`."""
    ndim = 1 if isinstance(x, (int, np.integer)) else jnp.ndim(x)
    if ndim == 0:
        raise ValueError(f"{sampler}: x must be an int or an array of at least 1 dimension")
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"{sampler}: axis must be an int, not {axis!r}") from None
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"{sampler}: axis {axis} is out of bounds for x of {ndim} dimension(s); "
            f"give an axis in [-{ndim}, {ndim})"
        )
    return int(axis)


def _loc_scale(x: jax.Array, loc: Any, scale: Any) -> jax.Array:
    if scale is not None:
        x = x * _arr(scale)
    if loc is not None:
        x = x + _arr(loc)
    return x


# --- draws: the key advances only when the sampler returns -----------------------------

# Read, split and write back as one step: two threads drawing outside any transform
# at once must not both split the same key (they would draw the same numbers).
_ADVANCING = threading.RLock()
_DRAWS = threading.local()  # .pending: {id(state): [key read at start, key now]}


def _pending() -> dict[int, list[Any]]:
    pending: dict[int, list[Any]] | None = getattr(_DRAWS, "pending", None)
    if pending is None:
        pending = _DRAWS.pending = {}
    return pending


def _draw(method: Callable[P, R]) -> Callable[P, R]:
    """Make a sampler a draw: the state's key is written back only when it returns.

    While the sampler runs, `_key`/`_keys` split a pending key (the state's, read once);
    a sampler that raises (a bad argument, caught by statejax or by JAX) leaves the
    state's key as it was. Samplers calling samplers (`lognormal` calls `normal`) are
    one draw. Outside transforms, if another thread advanced the key meanwhile, the
    draw runs again with the new key, as if the two had run one after the other.
    """

    @functools.wraps(method)
    def draw(*args: P.args, **kwargs: P.kwargs) -> R:
        state: Any = args[0]
        pending = _pending()
        if id(state) in pending:  # inside a draw of the same state: part of it
            return method(*args, **kwargs)
        while True:
            pending[id(state)] = taken = [None, None, None]
            try:
                out = method(*args, **kwargs)
            finally:
                del pending[id(state)]
            start, advanced, read = taken
            if advanced is None:
                return out  # drew with key=, or did not draw
            with _ADVANCING:
                # Unchanged since the draw read it (inside a trace, the read may have
                # given the key a value of the trace's, such as a new input of jit's).
                current = peek_value(state)
                if current is start or current is read:
                    state.value = advanced
                    return out

    return draw


class Samplers:
    """Every sampler of `statejax.random`, as methods of a key source.

    Mixed into `RandomState`: draws split the state's key (the state advances),
    unless `key=` is given.
    """

    __slots__ = ()

    if TYPE_CHECKING:

        def split_key(self, n: int | None = None, backup: bool = False) -> jax.Array: ...

        value: Any

    def _split(self, n: int | None) -> jax.Array:
        """Split the pending key of the running draw (see `_draw`); it is written back
        when the sampler returns. Outside a draw, split the state's key at once."""
        taken = _pending().get(id(self))
        if taken is None:
            return self.split_key(n)
        if taken[1] is None:
            # The stored key first, then the read a transform records: if another thread
            # stores a key in between, the commit in `_draw` sees the change and draws
            # again (read the other way round, this draw could split the key that other
            # thread split, and both would draw the same numbers).
            taken[0] = peek_value(cast(Any, self))
            taken[1] = taken[2] = self.value
        keys = jax.random.split(taken[1], 2 if n is None else n + 1)
        taken[1] = keys[0]
        return keys[1] if n is None else keys[1:]

    def _key(self, key: SeedOrKey | None) -> jax.Array:
        return self._split(None) if key is None else as_key(key)

    def _keys(self, n: int, key: SeedOrKey | None) -> jax.Array:
        return self._split(n) if key is None else jax.random.split(as_key(key), n)

    # --- uniform ---------------------------------------------------------------------

    def rand(self, *dn: int, key: SeedOrKey | None = None, dtype: DType = None) -> jax.Array:
        """Uniform samples in `[0, 1)` of shape `dn` (NumPy's `rand(d0, d1, ...)`).

        Examples:
            >>> from statejax import random
            >>> random.rand(2, 3).shape
            (2, 3)
        """
        return jax.random.uniform(self._key(key), _dims(dn, "rand"), _fdt(dtype))

    def randn(self, *dn: int, key: SeedOrKey | None = None, dtype: DType = None) -> jax.Array:
        """Standard normal samples of shape `dn` (NumPy's `randn(d0, d1, ...)`).

        Examples:
            >>> from statejax import random
            >>> random.randn(4).shape
            (4,)
        """
        return jax.random.normal(self._key(key), _dims(dn, "randn"), _fdt(dtype))

    def random(
        self, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Uniform samples in `[0, 1)`; `random_sample`, `ranf` and `sample` are aliases.

        Examples:
            >>> from statejax import random
            >>> x = random.random((100,))
            >>> bool(((x >= 0) & (x < 1)).all()), random.sample(3).shape
            (True, (3,))
        """
        out_shape = _shape(size)
        return jax.random.uniform(self._key(key), out_shape, _fdt(dtype))

    random_sample = random
    ranf = random
    sample = random

    def uniform(
        self,
        low: Any = 0.0,
        high: Any = 1.0,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Uniform samples in `[low, high)`.

        Examples:
            >>> from statejax import random
            >>> x = random.uniform(2.0, 3.0, size=100)
            >>> bool(((x >= 2) & (x < 3)).all())
            True
        """
        low, high = _arr(low), _arr(high)
        shape = _shape(size, low, high)
        return jax.random.uniform(self._key(key), shape, _fdt(dtype), low, high)

    def randint(
        self,
        low: Any,
        high: Any = None,
        size: Size = None,
        dtype: DType = None,
        key: SeedOrKey | None = None,
    ) -> jax.Array:
        """Integers in `[low, high)`; `randint(high)` draws from `[0, high)`.

        As in BrainState, the method takes `dtype` before `key`, and the module
        function `statejax.random.randint` takes `key` before `dtype`.

        Examples:
            >>> from statejax import random
            >>> x = random.randint(0, 3, size=50)
            >>> bool(((x >= 0) & (x < 3)).all()), random.randint(5).shape
            (True, ())
        """
        if high is None:
            low, high = 0, low
        support = _Support("randint")
        support.require("need low < high", lambda low, high: low < high, low=low, high=high)
        low, high = _arr(low), _arr(high)
        shape = _shape(size, low, high)
        return support.apply(jax.random.randint(self._key(key), shape, low, high, _idt(dtype)))

    def random_integers(
        self,
        low: Any,
        high: Any = None,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Integers in `[low, high]` (both ends included); `random_integers(high)`: `[1, high]`.

        Examples:
            >>> from statejax import random
            >>> x = random.random_integers(1, 2, size=50)
            >>> sorted(set(x.tolist()))
            [1, 2]
        """
        if high is None:
            low, high = 1, low
        _Support("random_integers").require(
            "need low <= high", lambda low, high: low <= high, low=low, high=high
        )
        _shape(size, low, high)  # a bad size is reported as random_integers'
        return self.randint(low, _arr(high) + 1, size, dtype=dtype, key=key)

    def choice(
        self,
        a: Any,
        size: Size = None,
        replace: bool = True,
        p: Any = None,
        key: SeedOrKey | None = None,
    ) -> Any:
        """Samples from `a` (an array, or `arange(a)` for an int), optionally with weights `p`.

        A sequence of non-numbers (strings) is sampled by index, as NumPy does.

        Examples:
            >>> from statejax import random
            >>> sorted(random.choice(5, size=5, replace=False).tolist())
            [0, 1, 2, 3, 4]
            >>> random.choice(['a', 'b'], size=2, p=[1.0, 0.0]).tolist()
            ['a', 'a']
        """
        out_shape = _shape(size)
        items = None
        if not isinstance(a, (int, np.integer, jax.Array)):
            array = np.asarray(a)
            if array.dtype.kind in "biufc":
                a = jnp.asarray(array)
            elif array.ndim == 1:
                items, a = array, len(array)
            else:
                raise ValueError(f"choice: a must be 1-dimensional, not of shape {array.shape}")
        population = _population(a, math.prod(out_shape), replace)
        if p is not None:
            if np.shape(p) != (population,):
                raise ValueError(
                    f"choice: p has shape {np.shape(p)}, but a has {population} elements; "
                    "give one probability per element of a"
                )
            _Support("choice").require("p must be non-negative", lambda p: p >= 0, p=p)
            p = _arr(p)
        drawn = jax.random.choice(self._key(key), a, out_shape, replace, p)
        return drawn if items is None else items[np.asarray(drawn)]

    def permutation(
        self,
        x: Any,
        axis: int = 0,
        independent: bool = False,
        key: SeedOrKey | None = None,
    ) -> jax.Array:
        """A shuffled copy of `x` along `axis` (of `arange(x)` for an int).

        Examples:
            >>> from statejax import random
            >>> sorted(random.permutation(5).tolist())
            [0, 1, 2, 3, 4]
        """
        x = x if isinstance(x, (int, np.integer)) else _arr(x)
        axis = _permuted_axis(x, axis, "permutation")
        return jax.random.permutation(self._key(key), x, axis, independent)

    def shuffle(self, x: Any, axis: int = 0, key: SeedOrKey | None = None) -> jax.Array:
        """A shuffled copy of `x` along `axis` (JAX arrays are immutable: not in place).

        Examples:
            >>> import jax.numpy as jnp
            >>> from statejax import random
            >>> sorted(random.shuffle(jnp.arange(4)).tolist())
            [0, 1, 2, 3]
        """
        x = x if isinstance(x, (int, np.integer)) else _arr(x)
        return self.permutation(x, _permuted_axis(x, axis, "shuffle"), False, key)

    # --- continuous ------------------------------------------------------------------

    def normal(
        self,
        loc: Any = None,
        scale: Any = None,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Normal samples with mean `loc` (default 0) and standard deviation `scale` (default 1).

        Examples:
            >>> from statejax import random
            >>> random.normal(size=(2, 3)).shape
            (2, 3)
            >>> random.normal(10.0, 0.0, size=2).tolist()
            [10.0, 10.0]
        """
        support = _Support("normal")
        if scale is not None:
            support.require("scale must be >= 0", lambda scale: scale >= 0, scale=scale)
        shape = _shape(size, loc, scale)
        x = jax.random.normal(self._key(key), shape, _fdt(dtype))
        return support.apply(_loc_scale(x, loc, scale))

    def standard_normal(
        self, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Standard normal samples.

        Examples:
            >>> from statejax import random
            >>> random.standard_normal(3).shape
            (3,)
        """
        out_shape = _shape(size)
        return jax.random.normal(self._key(key), out_shape, _fdt(dtype))

    def truncated_normal(
        self,
        lower: Any,
        upper: Any,
        size: Size = None,
        loc: Any = 0.0,
        scale: Any = 1.0,
        key: SeedOrKey | None = None,
        dtype: DType = None,
        check_valid: bool = True,
    ) -> jax.Array:
        """Normal samples (mean `loc`, deviation `scale`) truncated to `(lower, upper)`.

        With `check_valid`, a `loc` more than two `scale`s outside the bounds is a
        `ValueError` (checked outside transforms only).

        Examples:
            >>> from statejax import random
            >>> x = random.truncated_normal(-1.0, 1.0, size=100)
            >>> bool((abs(x) <= 1).all())
            True
        """
        support = _Support("truncated_normal", check_valid)
        support.require(
            "loc must be within 2 scales of [lower, upper] (the samples would be inaccurate)",
            lambda lower, upper, loc, scale: (
                (loc >= lower - 2 * scale) & (loc <= upper + 2 * scale)
            ),
            lower=lower,
            upper=upper,
            loc=loc,
            scale=scale,
        )
        lower, upper, loc, scale = (_arr(v, _fdt(dtype)) for v in (lower, upper, loc, scale))
        shape = _shape(size, lower, upper, loc, scale)
        z = jax.random.truncated_normal(
            self._key(key), (lower - loc) / scale, (upper - loc) / scale, shape, _fdt(dtype)
        )
        return support.apply(z * scale + loc)

    def lognormal(
        self,
        mean: Any = None,
        sigma: Any = None,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """`exp` of normal samples with mean `mean` (default 0) and deviation `sigma` (1).

        Examples:
            >>> from statejax import random
            >>> bool((random.lognormal(0.0, 1.0, size=10) > 0).all())
            True
        """
        if sigma is not None:
            _Support("lognormal").require(
                "sigma must be >= 0", lambda sigma: sigma >= 0, sigma=sigma
            )
        _shape(size, mean, sigma)  # a bad size is reported as lognormal's
        return jnp.exp(self.normal(mean, sigma, size, key, dtype))

    def standard_cauchy(
        self, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Cauchy samples (location 0, scale 1).

        Examples:
            >>> from statejax import random
            >>> random.standard_cauchy(2).shape
            (2,)
        """
        out_shape = _shape(size)
        return jax.random.cauchy(self._key(key), out_shape, _fdt(dtype))

    def exponential(
        self,
        scale: Any = None,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Exponential samples with mean `scale` (default 1).

        Examples:
            >>> from statejax import random
            >>> bool((random.exponential(2.0, size=10) >= 0).all())
            True
        """
        support = _Support("exponential")
        if scale is not None:
            support.require("scale must be >= 0", lambda scale: scale >= 0, scale=scale)
        out_shape = _shape(size, scale)
        x = jax.random.exponential(self._key(key), out_shape, _fdt(dtype))
        return support.apply(_loc_scale(x, None, scale))

    def standard_exponential(
        self, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Exponential samples with mean 1.

        Examples:
            >>> from statejax import random
            >>> random.standard_exponential((2, 2)).shape
            (2, 2)
        """
        out_shape = _shape(size)
        return jax.random.exponential(self._key(key), out_shape, _fdt(dtype))

    def gamma(
        self,
        shape: Any,
        scale: Any = None,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Gamma samples with shape `shape` (k) and scale `scale` (theta, default 1).

        Examples:
            >>> from statejax import random
            >>> random.gamma(2.0, 3.0, size=4).shape
            (4,)
        """
        support = _Support("gamma")
        support.require("shape must be >= 0", lambda shape: shape >= 0, shape=shape)
        if scale is not None:
            support.require("scale must be >= 0", lambda scale: scale >= 0, scale=scale)
        shape = _arr(shape)
        out_shape = _shape(size, shape, scale)
        x = jax.random.gamma(self._key(key), shape, out_shape, _fdt(dtype))
        return support.apply(_loc_scale(x, None, scale))

    def standard_gamma(
        self, shape: Any, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Gamma samples with shape `shape` and scale 1.

        Examples:
            >>> from statejax import random
            >>> random.standard_gamma([1.0, 2.0]).shape
            (2,)
        """
        _Support("standard_gamma").require(
            "shape must be >= 0", lambda shape: shape >= 0, shape=shape
        )
        _shape(size, shape)  # a bad size is reported as standard_gamma's
        return self.gamma(shape, None, size, key, dtype)

    def beta(
        self,
        a: Any,
        b: Any,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Beta samples with parameters `a` and `b`, in `[0, 1]`.

        Examples:
            >>> from statejax import random
            >>> x = random.beta(2.0, 5.0, size=10)
            >>> bool(((x >= 0) & (x <= 1)).all())
            True
        """
        support = _Support("beta")
        support.require("a and b must be > 0", lambda a, b: (a > 0) & (b > 0), a=a, b=b)
        a, b = _arr(a), _arr(b)
        out_shape = _shape(size, a, b)
        return support.apply(jax.random.beta(self._key(key), a, b, out_shape, _fdt(dtype)))

    def gumbel(
        self,
        loc: Any = None,
        scale: Any = None,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Gumbel samples with location `loc` (default 0) and scale `scale` (default 1).

        Examples:
            >>> from statejax import random
            >>> random.gumbel(0.0, 1.0, size=3).shape
            (3,)
        """
        support = _Support("gumbel")
        if scale is not None:
            support.require("scale must be >= 0", lambda scale: scale >= 0, scale=scale)
        out_shape = _shape(size, loc, scale)
        x = jax.random.gumbel(self._key(key), out_shape, _fdt(dtype))
        return support.apply(_loc_scale(x, loc, scale))

    def laplace(
        self,
        loc: Any = None,
        scale: Any = None,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Laplace samples with location `loc` (default 0) and scale `scale` (default 1).

        Examples:
            >>> from statejax import random
            >>> random.laplace(size=3).shape
            (3,)
        """
        support = _Support("laplace")
        if scale is not None:
            support.require("scale must be >= 0", lambda scale: scale >= 0, scale=scale)
        out_shape = _shape(size, loc, scale)
        x = jax.random.laplace(self._key(key), out_shape, _fdt(dtype))
        return support.apply(_loc_scale(x, loc, scale))

    def logistic(
        self,
        loc: Any = None,
        scale: Any = None,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Logistic samples with location `loc` (default 0) and scale `scale` (default 1).

        Examples:
            >>> from statejax import random
            >>> random.logistic(1.0, 2.0, size=3).shape
            (3,)
        """
        support = _Support("logistic")
        if scale is not None:
            support.require("scale must be >= 0", lambda scale: scale >= 0, scale=scale)
        out_shape = _shape(size, loc, scale)
        x = jax.random.logistic(self._key(key), out_shape, _fdt(dtype))
        return support.apply(_loc_scale(x, loc, scale))

    def pareto(
        self, a: Any, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Pareto II (Lomax) samples with shape `a`, as NumPy's (classical Pareto minus 1).

        Examples:
            >>> from statejax import random
            >>> bool((random.pareto(3.0, size=10) >= 0).all())
            True
        """
        support = _Support("pareto")
        support.require("a must be > 0", lambda a: a > 0, a=a)
        a = _arr(a, _fdt(dtype))
        out_shape = _shape(size, a)
        return support.apply(jax.random.pareto(self._key(key), a, out_shape, _fdt(dtype)) - 1.0)

    def standard_t(
        self, df: Any, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Student's t samples with `df` degrees of freedom; `t` is an alias.

        Examples:
            >>> from statejax import random
            >>> random.t(5.0, size=3).shape
            (3,)
        """
        support = _Support("standard_t")
        support.require("df must be > 0", lambda df: df > 0, df=df)
        df = _arr(df)
        out_shape = _shape(size, df)
        return support.apply(jax.random.t(self._key(key), df, out_shape, _fdt(dtype)))

    t = standard_t

    def chisquare(
        self,
        df: Any,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
        check_valid: bool = True,
    ) -> jax.Array:
        """Chi-square samples with `df` degrees of freedom (`df > 0`, checked if `check_valid`).

        Examples:
            >>> from statejax import random
            >>> random.chisquare([2.0, 3.0]).shape
            (2,)
        """
        support = _Support("chisquare", check_valid)
        support.require("df must be > 0", lambda df: df > 0, df=df)
        df = _arr(df, _fdt(dtype))
        out_shape = _shape(size, df)
        return support.apply(2.0 * jax.random.gamma(self._key(key), df / 2, out_shape, _fdt(dtype)))

    def noncentral_chisquare(
        self,
        df: Any,
        nonc: Any,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Noncentral chi-square samples: `df` degrees of freedom, noncentrality `nonc`.

        Drawn as a chi-square with `df + 2 N` degrees of freedom, `N ~ Poisson(nonc / 2)`.

        Examples:
            >>> from statejax import random
            >>> random.noncentral_chisquare(3.0, 2.0, size=4).shape
            (4,)
        """
        support = _Support("noncentral_chisquare")
        support.require("df must be > 0", lambda df: df > 0, df=df)
        support.require("nonc must be >= 0", lambda nonc: nonc >= 0, nonc=nonc)
        df, nonc = _arr(df, _fdt(dtype)), _arr(nonc, _fdt(dtype))
        shape = _shape(size, df, nonc)
        k_poisson, k_gamma = self._keys(2, key)
        n = jax.random.poisson(k_poisson, nonc / 2, shape)
        return support.apply(2.0 * jax.random.gamma(k_gamma, df / 2 + n, shape, _fdt(dtype)))

    def f(
        self,
        dfnum: Any,
        dfden: Any,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """F samples with `dfnum` and `dfden` degrees of freedom.

        Examples:
            >>> from statejax import random
            >>> random.f(1.0, 48.0, size=5).shape
            (5,)
        """
        support = _Support("f")
        support.require("dfnum must be > 0", lambda dfnum: dfnum > 0, dfnum=dfnum)
        support.require("dfden must be > 0", lambda dfden: dfden > 0, dfden=dfden)
        dfnum, dfden = _arr(dfnum, _fdt(dtype)), _arr(dfden, _fdt(dtype))
        out_shape = _shape(size, dfnum, dfden)
        return support.apply(jax.random.f(self._key(key), dfnum, dfden, out_shape, _fdt(dtype)))

    def noncentral_f(
        self,
        dfnum: Any,
        dfden: Any,
        nonc: Any,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Noncentral F samples: a noncentral chi-square over `dfnum` by a chi-square over `dfden`.

        Examples:
            >>> from statejax import random
            >>> random.noncentral_f(3.0, 20.0, 3.0, size=4).shape
            (4,)
        """
        support = _Support("noncentral_f")
        support.require("dfnum must be > 0", lambda dfnum: dfnum > 0, dfnum=dfnum)
        support.require("dfden must be > 0", lambda dfden: dfden > 0, dfden=dfden)
        support.require("nonc must be >= 0", lambda nonc: nonc >= 0, nonc=nonc)
        dfnum, dfden, nonc = (_arr(v, _fdt(dtype)) for v in (dfnum, dfden, nonc))
        shape = _shape(size, dfnum, dfden, nonc)
        k_num, k_den = self._keys(2, key)
        num = self.noncentral_chisquare(dfnum, nonc, shape, k_num, dtype)
        den = self.chisquare(dfden, shape, k_den, dtype, check_valid=False)
        return support.apply((num / dfnum) / (den / dfden))

    def rayleigh(
        self,
        scale: Any = 1.0,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Rayleigh samples with scale `scale` (`None`: 1, as BrainState).

        Examples:
            >>> from statejax import random
            >>> bool((random.rayleigh(2.0, size=5) >= 0).all())
            True
        """
        scale = 1.0 if scale is None else scale
        support = _Support("rayleigh")
        support.require("scale must be >= 0", lambda scale: scale >= 0, scale=scale)
        scale = _arr(scale, _fdt(dtype))
        out_shape = _shape(size, scale)
        return support.apply(jax.random.rayleigh(self._key(key), scale, out_shape, _fdt(dtype)))

    def triangular(
        self,
        left: Any = 0.0,
        mode: Any = 0.5,
        right: Any = 1.0,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Triangular samples on `[left, right]` peaking at `mode`.

        Raises:
            ValueError: not `left <= mode <= right` with `left < right` (outside transforms).

        Examples:
            >>> from statejax import random
            >>> x = random.triangular(0.0, 1.0, 2.0, size=20)
            >>> bool(((x >= 0) & (x <= 2)).all())
            True
        """
        support = _Support("triangular")
        support.require(
            "need left <= mode <= right and left < right",
            lambda left, mode, right: (left <= mode) & (mode <= right) & (left < right),
            left=left,
            mode=mode,
            right=right,
        )
        left, mode, right = (_arr(v, _fdt(dtype)) for v in (left, mode, right))
        shape = _shape(size, left, mode, right)
        x = jax.random.triangular(self._key(key), left, mode, right, shape, _fdt(dtype))
        return support.apply(x)

    def vonmises(
        self,
        mu: Any,
        kappa: Any,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Von Mises (circular normal) samples in `[-pi, pi)`: mode `mu`, concentration `kappa`.

        Examples:
            >>> import math
            >>> from statejax import random
            >>> x = random.vonmises(0.0, 4.0, size=20)
            >>> bool((abs(x) <= math.pi).all())
            True
        """
        support = _Support("vonmises")
        support.require("kappa must be >= 0", lambda kappa: kappa >= 0, kappa=kappa)
        mu, kappa = _arr(mu, _fdt(dtype)), _arr(kappa, _fdt(dtype))
        shape = _shape(size, mu, kappa)
        dt = jnp.zeros((), _fdt(dtype)).dtype
        x = dist.vonmises_centered(self._key(key), kappa, shape, dt) + mu
        return support.apply((x + jnp.pi) % (2 * jnp.pi) - jnp.pi)

    def wald(
        self,
        mean: Any,
        scale: Any,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Wald (inverse Gaussian) samples with mean `mean` and shape `scale` (lambda).

        Examples:
            >>> from statejax import random
            >>> bool((random.wald(1.0, 2.0, size=5) > 0).all())
            True
        """
        support = _Support("wald")
        support.require("mean must be > 0", lambda mean: mean > 0, mean=mean)
        support.require("scale must be > 0", lambda scale: scale > 0, scale=scale)
        mean, scale = _arr(mean, _fdt(dtype)), _arr(scale, _fdt(dtype))
        shape = _shape(size, mean, scale)
        k_normal, k_uniform = self._keys(2, key)
        y = jnp.square(jax.random.normal(k_normal, shape, _fdt(dtype)))
        # Michael, Schucany and Haas: a root of the quadratic, kept or inverted.
        my = mean * y
        x = mean + mean / (2 * scale) * (my - jnp.sqrt(4 * scale * my + my * my))
        u = jax.random.uniform(k_uniform, shape, _fdt(dtype))
        return support.apply(jnp.where(u <= mean / (mean + x), x, mean * mean / x))

    def weibull(
        self, a: Any, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Weibull samples with shape `a` and scale 1 (NumPy's `weibull`).

        Examples:
            >>> from statejax import random
            >>> bool((random.weibull(1.5, size=5) >= 0).all())
            True
        """
        _Support("weibull").require("a must be > 0", lambda a: a > 0, a=a)
        _shape(size, a)  # a shape mismatch is reported as weibull's
        return self.weibull_min(a, None, size, key, dtype)

    def weibull_min(
        self,
        a: Any,
        scale: Any = None,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Weibull samples with shape `a` and scale `scale` (default 1).

        Examples:
            >>> from statejax import random
            >>> random.weibull_min(1.5, 2.0, size=3).shape
            (3,)
        """
        support = _Support("weibull_min")
        support.require("a must be > 0", lambda a: a > 0, a=a)
        if scale is not None:
            support.require("scale must be >= 0", lambda scale: scale >= 0, scale=scale)
        a = _arr(a, _fdt(dtype))
        out_shape = _shape(size, a, scale)
        u = jax.random.uniform(self._key(key), out_shape, _fdt(dtype))
        return support.apply(_loc_scale(jnp.power(-jnp.log1p(-u), 1.0 / a), None, scale))

    def maxwell(
        self, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Maxwell samples (the length of a standard normal 3-vector).

        Examples:
            >>> from statejax import random
            >>> random.maxwell(4).shape
            (4,)
        """
        out_shape = _shape(size)
        return jax.random.maxwell(self._key(key), out_shape, _fdt(dtype))

    def loggamma(
        self, a: Any, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """The log of gamma samples with shape `a`, accurate for small `a`.

        Examples:
            >>> from statejax import random
            >>> random.loggamma(0.5, size=3).shape
            (3,)
        """
        support = _Support("loggamma")
        support.require("a must be > 0", lambda a: a > 0, a=a)
        a = _arr(a)
        out_shape = _shape(size, a)
        return support.apply(jax.random.loggamma(self._key(key), a, out_shape, _fdt(dtype)))

    def power(
        self,
        a: Any,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
        check_valid: bool = True,
    ) -> jax.Array:
        """Power-function samples in `[0, 1]` with exponent `a - 1` (`a > 0`).

        Examples:
            >>> from statejax import random
            >>> x = random.power(3.0, size=10)
            >>> bool(((x >= 0) & (x <= 1)).all())
            True
        """
        support = _Support("power", check_valid)
        support.require("a must be > 0", lambda a: a > 0, a=a)
        a = _arr(a, _fdt(dtype))
        out_shape = _shape(size, a)
        u = jax.random.uniform(self._key(key), out_shape, _fdt(dtype))
        return support.apply(jnp.power(u, 1.0 / a))

    def dirichlet(
        self, alpha: Any, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Dirichlet samples with concentrations `alpha` (last axis); shape `size + alpha.shape`.

        Examples:
            >>> from statejax import random
            >>> random.dirichlet((10.0, 5.0, 3.0), 20).shape
            (20, 3)
        """
        if np.ndim(alpha) == 0:
            raise ValueError("dirichlet: alpha must have at least one dimension (a vector)")
        support = _Support("dirichlet")
        support.require("alpha must be > 0", lambda alpha: (alpha > 0).all(-1), alpha=alpha)
        alpha = _arr(alpha)
        shape = _shape(size, alpha[..., 0]) if size is not None else None
        x = jax.random.dirichlet(self._key(key), alpha, shape, _fdt(dtype))
        return support.apply(x, trailing=1)

    def multivariate_normal(
        self,
        mean: Any,
        cov: Any,
        size: Size = None,
        method: str = "cholesky",
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Multivariate normal samples; `method` factorises `cov`: cholesky, eigh or svd.

        Raises:
            ValueError: `method` is none of the three.

        Examples:
            >>> import jax.numpy as jnp
            >>> from statejax import random
            >>> random.multivariate_normal(jnp.zeros(2), jnp.eye(2), size=5).shape
            (5, 2)
        """
        if method not in ("cholesky", "eigh", "svd"):
            raise ValueError(
                f"multivariate_normal: method must be cholesky, eigh or svd, not {method!r}"
            )
        mean, cov = _arr(mean, _fdt(dtype)), _arr(cov, _fdt(dtype))
        if mean.ndim == 0:
            raise ValueError(
                "multivariate_normal: mean must have at least one dimension (a vector), "
                "not a scalar; give mean of shape (n,) and cov of shape (n, n)"
            )
        n = mean.shape[-1]
        if cov.ndim < 2 or cov.shape[-2:] != (n, n):
            raise ValueError(
                f"multivariate_normal: cov has shape {cov.shape}, but mean {mean.shape} needs "
                f"cov of shape (..., {n}, {n})"
            )
        shape = None if size is None else _shape(size, mean[..., 0], cov[..., 0, 0])
        return jax.random.multivariate_normal(self._key(key), mean, cov, shape, _fdt(dtype), method)

    def orthogonal(
        self, n: int, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Random orthogonal `n x n` matrices (Haar distributed), of shape `size + (n, n)`.

        Examples:
            >>> import jax.numpy as jnp
            >>> from statejax import random
            >>> q = random.orthogonal(3)
            >>> bool(jnp.allclose(q @ q.T, jnp.eye(3), atol=1e-5))
            True
        """
        try:
            n = operator.index(n)
        except TypeError:
            raise TypeError(f"orthogonal: n must be an int (the matrix size), not {n!r}") from None
        if n < 0:
            raise ValueError(f"orthogonal: n must not be negative, not {n}")
        out_shape = _shape(size)
        return jax.random.orthogonal(self._key(key), n, out_shape, _fdt(dtype))

    # --- discrete --------------------------------------------------------------------

    def bernoulli(
        self,
        p: Any = 0.5,
        size: Size = None,
        key: SeedOrKey | None = None,
        check_valid: bool = True,
    ) -> jax.Array:
        """Booleans, `True` with probability `p` (in `[0, 1]`, checked if `check_valid`).

        Examples:
            >>> from statejax import random
            >>> random.bernoulli(0.5, size=4).dtype
            dtype('bool')
        """
        _Support("bernoulli", check_valid).require(
            "p must be within [0, 1]", lambda p: (p >= 0) & (p <= 1), p=p
        )
        p = _arr(p)
        out_shape = _shape(size, p)
        return jax.random.bernoulli(self._key(key), p, out_shape)

    def binomial(
        self,
        n: Any,
        p: Any,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
        check_valid: bool = True,
    ) -> jax.Array:
        """Successes among `n` trials of probability `p` (in `[0, 1]`, checked if `check_valid`).

        Examples:
            >>> from statejax import random
            >>> x = random.binomial(5, 0.5, size=(3, 2))
            >>> x.shape, bool(((x >= 0) & (x <= 5)).all())
            ((3, 2), True)
        """
        support = _Support("binomial", check_valid)
        support.require("n must be >= 0", lambda n: n >= 0, n=n)
        support.require("p must be within [0, 1]", lambda p: (p >= 0) & (p <= 1), p=p)
        n, p = _arr(n, float), _arr(p)
        out_shape = _shape(size, n, p)
        x = jax.random.binomial(self._key(key), n, p, out_shape)
        return support.apply(x.astype(_idt(dtype)))

    def poisson(
        self,
        lam: Any = 1.0,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Poisson samples with rate `lam`.

        Examples:
            >>> from statejax import random
            >>> random.poisson(3.0, size=4).shape
            (4,)
        """
        support = _Support("poisson")
        support.require("lam must be >= 0", lambda lam: lam >= 0, lam=lam)
        lam = _arr(lam)
        out_shape = _shape(size, lam)
        return support.apply(jax.random.poisson(self._key(key), lam, out_shape, _idt(dtype)))

    def geometric(
        self, p: Any, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Trials until the first success of probability `p` (in `(0, 1]`), counting it.

        Examples:
            >>> from statejax import random
            >>> bool((random.geometric([0.7, 0.5, 0.2]) >= 1).all())
            True
        """
        support = _Support("geometric")
        support.require("p must be within (0, 1]", lambda p: (p > 0) & (p <= 1), p=p)
        p = _arr(p, float)
        out_shape = _shape(size, p)
        u = jax.random.uniform(self._key(key), out_shape)
        x = jnp.floor(jnp.log1p(-u) / jnp.log1p(-p)) + 1
        return support.apply(x.astype(_idt(dtype)))

    def negative_binomial(
        self,
        n: Any,
        p: Any,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Failures before the `n`-th success of probability `p` (a gamma-Poisson mixture).

        Examples:
            >>> from statejax import random
            >>> bool((random.negative_binomial(3, 0.5, size=5) >= 0).all())
            True
        """
        support = _Support("negative_binomial")
        support.require("n must be > 0", lambda n: n > 0, n=n)
        support.require("p must be within (0, 1]", lambda p: (p > 0) & (p <= 1), p=p)
        n, p = _arr(n, float), _arr(p, float)
        shape = _shape(size, n, p)
        k_gamma, k_poisson = self._keys(2, key)
        rate = jax.random.gamma(k_gamma, n, shape) * (1 - p) / p
        return support.apply(jax.random.poisson(k_poisson, rate, shape, _idt(dtype)))

    def hypergeometric(
        self,
        ngood: Any,
        nbad: Any,
        nsample: Any,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
    ) -> jax.Array:
        """Good items among `nsample` drawn without replacement from `ngood` good, `nbad` bad.

        Examples:
            >>> from statejax import random
            >>> x = random.hypergeometric(10, 10, 5, size=20)
            >>> bool(((x >= 0) & (x <= 5)).all())
            True
        """
        support = _Support("hypergeometric")
        support.require("ngood must be >= 0", lambda ngood: ngood >= 0, ngood=ngood)
        support.require("nbad must be >= 0", lambda nbad: nbad >= 0, nbad=nbad)
        support.require(
            "need 0 <= nsample <= ngood + nbad",
            lambda ngood, nbad, nsample: (nsample >= 0) & (nsample <= ngood + nbad),
            ngood=ngood,
            nbad=nbad,
            nsample=nsample,
        )
        ngood, nbad, nsample = _arr(ngood), _arr(nbad), _arr(nsample)
        shape = _shape(size, ngood, nbad, nsample)
        idt = jnp.zeros((), _idt(dtype)).dtype
        x = dist.hypergeometric(self._key(key), ngood, nbad, nsample, shape, idt)
        return support.apply(x)

    def logseries(
        self, p: Any, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Logarithmic series samples (positive integers) with parameter `p` in `(0, 1)`.

        Examples:
            >>> from statejax import random
            >>> random.logseries([0.7, 0.5, 0.2], size=[4, 3]).shape
            (4, 3)
        """
        support = _Support("logseries")
        support.require("p must be within [0, 1)", lambda p: (p >= 0) & (p < 1), p=p)
        p = _arr(p)
        idt = jnp.zeros((), _idt(dtype)).dtype
        out_shape = _shape(size, p)
        return support.apply(dist.logseries(self._key(key), p, out_shape, idt))

    def zipf(
        self, a: Any, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Zipf samples (positive integers) with exponent `a > 1`.

        Raises:
            ValueError: `a <= 1` or NaN (checked outside transforms).

        Examples:
            >>> from statejax import random
            >>> bool((random.zipf(2.0, size=5) >= 1).all())
            True
        """
        support = _Support("zipf")
        support.require("a must be > 1", lambda a: a > 1, a=a)
        a = _arr(a, float)
        idt = jnp.zeros((), _idt(dtype)).dtype
        out_shape = _shape(size, a)
        a = jnp.where(a > 1, a, 2.0)  # the rejection loop never ends for a <= 1
        return support.apply(dist.zipf(self._key(key), a, out_shape, idt))

    def multinomial(
        self,
        n: Any,
        pvals: Any,
        size: Size = None,
        key: SeedOrKey | None = None,
        dtype: DType = None,
        check_valid: bool = True,
    ) -> jax.Array:
        """Counts of `n` draws among `len(pvals)` categories; shape `size + pvals.shape[-1:]`.

        With `check_valid`, `sum(pvals[..., :-1]) > 1` is a `ValueError` (outside transforms).

        Examples:
            >>> from statejax import random
            >>> x = random.multinomial(100, (0.5, 0.2, 0.3), size=[4, 2])
            >>> x.shape, x.sum(-1).tolist()[0]
            ((4, 2, 3), [100, 100])
        """
        if np.ndim(pvals) == 0:
            raise ValueError("multinomial: pvals must have at least one dimension (a vector)")
        support = _Support("multinomial")
        support.require("n must be >= 0", lambda n: n >= 0, n=n)
        support.check = check_valid
        support.require(
            "pvals must be within [0, 1] and sum(pvals[:-1]) must be <= 1",
            lambda pvals: ((pvals >= 0) & (pvals <= 1)).all(-1) & (pvals[..., :-1].sum(-1) <= 1),
            pvals=pvals,
        )
        n, pvals = _arr(n), _arr(pvals, float)
        batch = _shape(size, n, pvals[..., 0])
        x = jax.random.multinomial(self._key(key), n, pvals, shape=(*batch, pvals.shape[-1]))
        return support.apply(x.astype(_idt(dtype)), trailing=1)

    def categorical(
        self,
        logits: Any,
        axis: int = -1,
        size: Size = None,
        key: SeedOrKey | None = None,
    ) -> jax.Array:
        """Category indices drawn with probabilities `softmax(logits)` along `axis`.

        Examples:
            >>> import jax.numpy as jnp
            >>> from statejax import random
            >>> random.categorical(jnp.array([0.0, -1e9, -1e9]), size=3).tolist()
            [0, 0, 0]
        """
        logits = _arr(logits)
        if logits.ndim == 0:
            raise ValueError("categorical: logits must have at least one dimension")
        if not -logits.ndim <= axis < logits.ndim:
            raise ValueError(
                f"categorical: axis {axis} is out of bounds for logits of shape {logits.shape}"
            )
        shape = None
        if size is not None:
            batch = np.delete(np.array(logits.shape), axis)  # the shape without axis
            shape = _shape(size, np.broadcast_to(np.empty((), bool), tuple(batch)))
        return jax.random.categorical(self._key(key), logits, axis, shape)

    # --- like another array (PyTorch's names) ----------------------------------------

    def rand_like(self, input: Any, dtype: DType = None, key: SeedOrKey | None = None) -> jax.Array:
        """Uniform samples in `[0, 1)` with the shape (and, by default, dtype) of `input`.

        Examples:
            >>> import jax.numpy as jnp
            >>> from statejax import random
            >>> random.rand_like(jnp.zeros((2, 2))).shape
            (2, 2)
        """
        dtype = jnp.result_type(input) if dtype is None else dtype
        return self.random(jnp.shape(input), key).astype(dtype)

    def randn_like(
        self, input: Any, dtype: DType = None, key: SeedOrKey | None = None
    ) -> jax.Array:
        """Standard normal samples with the shape (and, by default, dtype) of `input`.

        Examples:
            >>> import jax.numpy as jnp
            >>> from statejax import random
            >>> random.randn_like(jnp.zeros(3)).shape
            (3,)
        """
        dtype = jnp.result_type(input) if dtype is None else dtype
        return self.standard_normal(jnp.shape(input), key).astype(dtype)

    def randint_like(
        self,
        input: Any,
        low: Any = 0,
        high: Any = None,
        dtype: DType = None,
        key: SeedOrKey | None = None,
    ) -> jax.Array:
        """Integers in `[low, high)` (`high`: default `max(input)`) with the shape of `input`.

        Examples:
            >>> import jax.numpy as jnp
            >>> from statejax import random
            >>> x = random.randint_like(jnp.zeros(4, int), 0, 5)
            >>> x.shape, bool(((x >= 0) & (x < 5)).all())
            ((4,), True)
        """
        high = jnp.max(jnp.asarray(input)) if high is None else high
        _Support("randint_like").require(
            "need low < high (high defaults to max(input))",
            lambda low, high: low < high,
            low=low,
            high=high,
        )
        dtype = jnp.result_type(input) if dtype is None else dtype
        return self.randint(low, high, jnp.shape(input), key=key).astype(dtype)


def _make_draws(cls: type) -> None:
    """Make every public method of `cls` a draw (see `_draw`); aliases stay aliases."""
    made: dict[int, Any] = {}
    for name, attr in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(attr):
            if id(attr) not in made:
                made[id(attr)] = _draw(attr)
            setattr(cls, name, made[id(attr)])


_make_draws(Samplers)

_ACCEPTED = (
    "an int seed, a raw key jax.random.PRNGKey(seed) (uint32[{raw}], or uint32[..., {raw}] for "
    "stacked keys), or a typed key jax.random.key(seed)"
)


def _shown(value: Any) -> str:
    dtype = getattr(value, "dtype", None)
    if dtype is None or not hasattr(value, "shape"):
        return f"{value!r} ({type(value).__name__})"
    return f"an array {np.dtype(dtype).name}[{','.join(map(str, np.shape(value)))}]"


def _raw_key_size() -> int:
    """The length of a raw key of JAX's default PRNG implementation (2 for threefry)."""
    impl = str(jax.config.jax_default_prng_impl)  # type: ignore[attr-defined]
    size = _RAW_KEY_SIZES.get(impl)
    if size is None:
        size = _RAW_KEY_SIZES[impl] = int(jax.eval_shape(jax.random.PRNGKey, 0).shape[-1])
    return size


_RAW_KEY_SIZES: dict[str, int] = {}


def as_key(seed_or_key: Any) -> jax.Array:
    """A typed key from an integer seed (a Python, NumPy or size-1 integer array) or a key.

    A typed key is kept; a raw key `uint32[..., 2]` is wrapped (the same bits). Anything
    else is a `TypeError` naming what was given and what is accepted, as BrainState's.
    """
    if isinstance(seed_or_key, (bool, np.bool_)):
        raise TypeError(
            f"a RandomState takes an integer seed or a key, not {seed_or_key!r}: give "
            + _ACCEPTED.format(raw=_raw_key_size())
        )
    if isinstance(seed_or_key, (int, np.integer)):
        return jax.random.key(int(seed_or_key))
    if not isinstance(seed_or_key, (jax.Array, np.ndarray)):
        raise TypeError(
            f"a RandomState takes an integer seed or a key, not {_shown(seed_or_key)}: give "
            + _ACCEPTED.format(raw=_raw_key_size())
        )
    dtype = seed_or_key.dtype
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return jnp.asarray(seed_or_key)
    shape = np.shape(seed_or_key)
    if np.size(seed_or_key) == 1 and jnp.issubdtype(dtype, jnp.integer):
        return jax.random.key(jnp.reshape(seed_or_key, ()))
    raw = _raw_key_size()
    if dtype == np.uint32 and shape and shape[-1] == raw:
        wrapped: jax.Array = jax.random.wrap_key_data(jnp.asarray(seed_or_key))
        return wrapped
    raise TypeError(
        f"a RandomState takes an integer seed or a key, not {_shown(seed_or_key)}: give "
        + _ACCEPTED.format(raw=raw)
    )


def on_default(
    method: Callable[Concatenate[S, P], R],
    name: str,
    state: Callable[[], S],
    order: Sequence[str] | None = None,
    keyword_only: Sequence[str] = (),
) -> Callable[P, R]:
    """`method` as a function drawing from `state()` (the default `RandomState`).

    The function shares the method's signature and docstring, whose examples call
    the module function; doctest runs them once, with the method (the function keeps
    the method's `__module__`, so doctest does not collect it again in `statejax.random`).
    Where BrainState's module function orders its parameters differently from the
    method (`order`, the parameter names in the function's order) or makes some
    keyword-only (`keyword_only`), the function binds its arguments by that
    signature and passes them to the method by name.
    """
    signature = inspect.signature(method)
    parameters = list(signature.parameters.values())[1:]  # without `self`
    if order is None and not keyword_only:

        def draw(*args: P.args, **kwargs: P.kwargs) -> R:
            return method(state(), *args, **kwargs)

    else:
        by_name = {p.name: p for p in parameters}
        names = list(order) if order is not None else list(by_name)
        assert sorted(names) == sorted(by_name), (name, names)
        parameters = [
            by_name[n].replace(kind=inspect.Parameter.KEYWORD_ONLY)
            if n in keyword_only
            else by_name[n]
            for n in names
        ]
        own = signature.replace(parameters=parameters)
        by_keyword: Callable[..., R] = method

        def draw(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = own.bind(*args, **kwargs)
            return by_keyword(state(), **bound.arguments)

    functools.update_wrapper(draw, method)
    draw.__name__ = draw.__qualname__ = name
    draw.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return draw
