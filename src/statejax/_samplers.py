"""The NumPy-style samplers of a `RandomState`, written once as its methods.

`statejax.random.normal(...)` and the other module functions call these methods on
the default `RandomState`. Each sampler follows NumPy's argument names and defaults
(`size=`, `low`/`high`, `loc`/`scale`) and BrainState's additions: `key=` draws with
that seed or key instead of advancing the state, and `dtype=` picks the result type
(default: JAX's default float or int, float32/int32 unless x64 is on). With `size=None`
the result has the broadcast shape of the parameters.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from statejax import _distributions as dist
from statejax._jax_compat import is_top_level

__all__ = ["Samplers", "as_key", "on_default"]

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")

Size = int | Sequence[int] | None
SeedOrKey = Any  # an int seed, a typed key, or a raw uint32 key (see `as_key`)
DType = Any  # a NumPy/JAX dtype or a Python scalar type; None: JAX's default


def _shape(size: Size, *params: Any) -> tuple[int, ...]:
    """`size` as a tuple; `None`: the broadcast shape of the (non-None) parameters.

    Raises:
        ValueError: a parameter's shape cannot be broadcast against `size` (NumPy's
            "shape mismatch"); the message names the sampler and the shapes.
    """
    shapes = [jnp.shape(p) for p in params if p is not None]
    if size is None:
        return tuple(lax.broadcast_shapes(*shapes)) if shapes else ()
    shape = tuple(int(s) for s in size) if isinstance(size, Sequence) else (int(size),)
    if shapes:
        try:
            np.broadcast_shapes(shape, *shapes)
        except ValueError:
            sampler = sys._getframe(1).f_code.co_name  # the sampler that called us
            raise ValueError(
                f"{sampler}: parameters of shapes {', '.join(map(str, shapes))} cannot be "
                f"broadcast against size={shape}; give parameters whose shapes broadcast to "
                "size (scalars always do), or size=None to take their broadcast shape."
            ) from None
    return shape


def _arr(x: Any, dtype: DType = None) -> jax.Array:
    return jnp.asarray(x, dtype)


def _fdt(dtype: DType) -> Any:
    return float if dtype is None else dtype


def _idt(dtype: DType) -> Any:
    return int if dtype is None else dtype


def _check(bad: Any, message: str) -> None:
    """Raise `ValueError(message)` when `bad` is true; values traced under a transform
    are not checked (their values are unknown until run)."""
    if is_top_level() and bool(jnp.any(bad)):
        raise ValueError(message)


def _loc_scale(x: jax.Array, loc: Any, scale: Any) -> jax.Array:
    if scale is not None:
        x = x * _arr(scale)
    if loc is not None:
        x = x + _arr(loc)
    return x


class Samplers:
    """Every sampler of `statejax.random`, as methods of a key source.

    Mixed into `RandomState`: draws split the state's key (the state advances),
    unless `key=` is given.
    """

    __slots__ = ()

    if TYPE_CHECKING:

        def split_key(self, n: int | None = None, backup: bool = False) -> jax.Array: ...

    def _key(self, key: SeedOrKey | None) -> jax.Array:
        # Samplers check their parameters and shapes before calling this, so a refused
        # draw leaves the state's key as it was.
        return self.split_key() if key is None else as_key(key)

    def _keys(self, n: int, key: SeedOrKey | None) -> jax.Array:
        return self.split_key(n) if key is None else jax.random.split(as_key(key), n)

    # --- uniform ---------------------------------------------------------------------

    def rand(self, *dn: int, key: SeedOrKey | None = None, dtype: DType = None) -> jax.Array:
        """Uniform samples in `[0, 1)` of shape `dn` (NumPy's `rand(d0, d1, ...)`).

        Examples:
            >>> from statejax import random
            >>> random.rand(2, 3).shape
            (2, 3)
        """
        return jax.random.uniform(self._key(key), dn, _fdt(dtype))

    def randn(self, *dn: int, key: SeedOrKey | None = None, dtype: DType = None) -> jax.Array:
        """Standard normal samples of shape `dn` (NumPy's `randn(d0, d1, ...)`).

        Examples:
            >>> from statejax import random
            >>> random.randn(4).shape
            (4,)
        """
        return jax.random.normal(self._key(key), dn, _fdt(dtype))

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
        low, high = _arr(low), _arr(high)
        shape = _shape(size, low, high)
        return jax.random.randint(self._key(key), shape, low, high, _idt(dtype))

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
        p = None if p is None else _arr(p)
        key_ = self._key(key)
        if not isinstance(a, (int, np.integer, jax.Array)):
            items = np.asarray(a)
            if items.dtype.kind not in "biufc":
                index = jax.random.choice(key_, len(items), out_shape, replace, p)
                return items[np.asarray(index)]
            a = jnp.asarray(items)
        return jax.random.choice(key_, a, out_shape, replace, p)

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
        return jax.random.permutation(self._key(key), x, axis, independent)

    def shuffle(self, x: Any, axis: int = 0, key: SeedOrKey | None = None) -> jax.Array:
        """A shuffled copy of `x` along `axis` (JAX arrays are immutable: not in place).

        Examples:
            >>> import jax.numpy as jnp
            >>> from statejax import random
            >>> sorted(random.shuffle(jnp.arange(4)).tolist())
            [0, 1, 2, 3]
        """
        return self.permutation(x, axis, False, key)

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
        shape = _shape(size, loc, scale)
        return _loc_scale(jax.random.normal(self._key(key), shape, _fdt(dtype)), loc, scale)

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
        lower, upper, loc, scale = (_arr(v, _fdt(dtype)) for v in (lower, upper, loc, scale))
        if check_valid:
            _check(
                (loc < lower - 2 * scale) | (loc > upper + 2 * scale),
                "truncated_normal: loc is more than 2 scales outside [lower, upper]; "
                "the samples would be inaccurate",
            )
        shape = _shape(size, lower, upper, loc, scale)
        z = jax.random.truncated_normal(
            self._key(key), (lower - loc) / scale, (upper - loc) / scale, shape, _fdt(dtype)
        )
        out: jax.Array = z * scale + loc
        return out

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
        out_shape = _shape(size, scale)
        x = jax.random.exponential(self._key(key), out_shape, _fdt(dtype))
        return _loc_scale(x, None, scale)

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
        shape = _arr(shape)
        out_shape = _shape(size, shape, scale)
        x = jax.random.gamma(self._key(key), shape, out_shape, _fdt(dtype))
        return _loc_scale(x, None, scale)

    def standard_gamma(
        self, shape: Any, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Gamma samples with shape `shape` and scale 1.

        Examples:
            >>> from statejax import random
            >>> random.standard_gamma([1.0, 2.0]).shape
            (2,)
        """
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
        a, b = _arr(a), _arr(b)
        out_shape = _shape(size, a, b)
        return jax.random.beta(self._key(key), a, b, out_shape, _fdt(dtype))

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
        out_shape = _shape(size, loc, scale)
        x = jax.random.gumbel(self._key(key), out_shape, _fdt(dtype))
        return _loc_scale(x, loc, scale)

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
        out_shape = _shape(size, loc, scale)
        x = jax.random.laplace(self._key(key), out_shape, _fdt(dtype))
        return _loc_scale(x, loc, scale)

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
        out_shape = _shape(size, loc, scale)
        x = jax.random.logistic(self._key(key), out_shape, _fdt(dtype))
        return _loc_scale(x, loc, scale)

    def pareto(
        self, a: Any, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Pareto II (Lomax) samples with shape `a`, as NumPy's (classical Pareto minus 1).

        Examples:
            >>> from statejax import random
            >>> bool((random.pareto(3.0, size=10) >= 0).all())
            True
        """
        a = _arr(a, _fdt(dtype))
        out_shape = _shape(size, a)
        return jax.random.pareto(self._key(key), a, out_shape, _fdt(dtype)) - 1.0

    def standard_t(
        self, df: Any, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Student's t samples with `df` degrees of freedom; `t` is an alias.

        Examples:
            >>> from statejax import random
            >>> random.t(5.0, size=3).shape
            (3,)
        """
        df = _arr(df)
        out_shape = _shape(size, df)
        return jax.random.t(self._key(key), df, out_shape, _fdt(dtype))

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
        df = _arr(df, _fdt(dtype))
        if check_valid:
            _check(df <= 0, "chisquare: df must be > 0")
        out_shape = _shape(size, df)
        return 2.0 * jax.random.gamma(self._key(key), df / 2, out_shape, _fdt(dtype))

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
        df, nonc = _arr(df, _fdt(dtype)), _arr(nonc, _fdt(dtype))
        shape = _shape(size, df, nonc)
        k_poisson, k_gamma = self._keys(2, key)
        n = jax.random.poisson(k_poisson, nonc / 2, shape)
        return 2.0 * jax.random.gamma(k_gamma, df / 2 + n, shape, _fdt(dtype))

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
        dfnum, dfden = _arr(dfnum, _fdt(dtype)), _arr(dfden, _fdt(dtype))
        out_shape = _shape(size, dfnum, dfden)
        return jax.random.f(self._key(key), dfnum, dfden, out_shape, _fdt(dtype))

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
        dfnum, dfden, nonc = (_arr(v, _fdt(dtype)) for v in (dfnum, dfden, nonc))
        shape = _shape(size, dfnum, dfden, nonc)
        k_num, k_den = self._keys(2, key)
        num = self.noncentral_chisquare(dfnum, nonc, shape, k_num, dtype)
        den = self.chisquare(dfden, shape, k_den, dtype, check_valid=False)
        out: jax.Array = (num / dfnum) / (den / dfden)
        return out

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
        scale = _arr(1.0 if scale is None else scale, _fdt(dtype))
        out_shape = _shape(size, scale)
        return jax.random.rayleigh(self._key(key), scale, out_shape, _fdt(dtype))

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
        left, mode, right = (_arr(v, _fdt(dtype)) for v in (left, mode, right))
        _check(
            (left > mode) | (mode > right) | (left >= right),
            "triangular: need left <= mode <= right and left < right",
        )
        shape = _shape(size, left, mode, right)
        return jax.random.triangular(self._key(key), left, mode, right, shape, _fdt(dtype))

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
        mu, kappa = _arr(mu, _fdt(dtype)), _arr(kappa, _fdt(dtype))
        shape = _shape(size, mu, kappa)
        dt = jnp.zeros((), _fdt(dtype)).dtype
        x = dist.vonmises_centered(self._key(key), kappa, shape, dt) + mu
        out: jax.Array = (x + jnp.pi) % (2 * jnp.pi) - jnp.pi
        return out

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
        mean, scale = _arr(mean, _fdt(dtype)), _arr(scale, _fdt(dtype))
        shape = _shape(size, mean, scale)
        k_normal, k_uniform = self._keys(2, key)
        y = jnp.square(jax.random.normal(k_normal, shape, _fdt(dtype)))
        # Michael, Schucany and Haas: a root of the quadratic, kept or inverted.
        my = mean * y
        x = mean + mean / (2 * scale) * (my - jnp.sqrt(4 * scale * my + my * my))
        u = jax.random.uniform(k_uniform, shape, _fdt(dtype))
        return jnp.where(u <= mean / (mean + x), x, mean * mean / x)

    def weibull(
        self, a: Any, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Weibull samples with shape `a` and scale 1 (NumPy's `weibull`).

        Examples:
            >>> from statejax import random
            >>> bool((random.weibull(1.5, size=5) >= 0).all())
            True
        """
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
        a = _arr(a, _fdt(dtype))
        out_shape = _shape(size, a, scale)
        u = jax.random.uniform(self._key(key), out_shape, _fdt(dtype))
        return _loc_scale(jnp.power(-jnp.log1p(-u), 1.0 / a), None, scale)

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
        a = _arr(a)
        out_shape = _shape(size, a)
        return jax.random.loggamma(self._key(key), a, out_shape, _fdt(dtype))

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
        a = _arr(a, _fdt(dtype))
        if check_valid:
            _check(a <= 0, "power: a must be > 0")
        out_shape = _shape(size, a)
        u = jax.random.uniform(self._key(key), out_shape, _fdt(dtype))
        return jnp.power(u, 1.0 / a)

    def dirichlet(
        self, alpha: Any, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Dirichlet samples with concentrations `alpha` (last axis); shape `size + alpha.shape`.

        Examples:
            >>> from statejax import random
            >>> random.dirichlet((10.0, 5.0, 3.0), 20).shape
            (20, 3)
        """
        alpha = _arr(alpha)
        shape = _shape(size, alpha[..., 0]) if size is not None else None
        return jax.random.dirichlet(self._key(key), alpha, shape, _fdt(dtype))

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
        shape = None if size is None else _shape(size)
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
        p = _arr(p)
        if check_valid:
            _check((p < 0) | (p > 1), "bernoulli: p must be within [0, 1]")
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
        n, p = _arr(n, float), _arr(p)
        if check_valid:
            _check((p < 0) | (p > 1), "binomial: p must be within [0, 1]")
        out_shape = _shape(size, n, p)
        x = jax.random.binomial(self._key(key), n, p, out_shape)
        return x.astype(_idt(dtype))

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
        lam = _arr(lam)
        out_shape = _shape(size, lam)
        return jax.random.poisson(self._key(key), lam, out_shape, _idt(dtype))

    def geometric(
        self, p: Any, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Trials until the first success of probability `p` (in `(0, 1]`), counting it.

        Examples:
            >>> from statejax import random
            >>> bool((random.geometric([0.7, 0.5, 0.2]) >= 1).all())
            True
        """
        p = _arr(p, float)
        _check((p <= 0) | (p > 1), "geometric: p must be within (0, 1]")
        out_shape = _shape(size, p)
        u = jax.random.uniform(self._key(key), out_shape)
        return (jnp.floor(jnp.log1p(-u) / jnp.log1p(-p)) + 1).astype(_idt(dtype))

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
        n, p = _arr(n, float), _arr(p, float)
        shape = _shape(size, n, p)
        k_gamma, k_poisson = self._keys(2, key)
        rate = jax.random.gamma(k_gamma, n, shape) * (1 - p) / p
        return jax.random.poisson(k_poisson, rate, shape, _idt(dtype))

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
        ngood, nbad, nsample = _arr(ngood), _arr(nbad), _arr(nsample)
        shape = _shape(size, ngood, nbad, nsample)
        idt = jnp.zeros((), _idt(dtype)).dtype
        return dist.hypergeometric(self._key(key), ngood, nbad, nsample, shape, idt)

    def logseries(
        self, p: Any, size: Size = None, key: SeedOrKey | None = None, dtype: DType = None
    ) -> jax.Array:
        """Logarithmic series samples (positive integers) with parameter `p` in `(0, 1)`.

        Examples:
            >>> from statejax import random
            >>> random.logseries([0.7, 0.5, 0.2], size=[4, 3]).shape
            (4, 3)
        """
        p = _arr(p)
        idt = jnp.zeros((), _idt(dtype)).dtype
        out_shape = _shape(size, p)
        return dist.logseries(self._key(key), p, out_shape, idt)

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
        a = _arr(a, float)
        _check(~(a > 1), "zipf: a must be > 1")
        idt = jnp.zeros((), _idt(dtype)).dtype
        out_shape = _shape(size, a)
        return dist.zipf(self._key(key), a, out_shape, idt)

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
        n, pvals = _arr(n), _arr(pvals, float)
        if check_valid:
            _check(
                jnp.sum(pvals[..., :-1], axis=-1) > 1.0, "multinomial: sum(pvals[:-1]) must be <= 1"
            )
        batch = _shape(size, n, pvals[..., 0])
        x = jax.random.multinomial(self._key(key), n, pvals, shape=(*batch, pvals.shape[-1]))
        out: jax.Array = x.astype(_idt(dtype))
        return out

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
        shape = None if size is None else _shape(size)
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
        dtype = jnp.result_type(input) if dtype is None else dtype
        return self.randint(low, high, jnp.shape(input), key=key).astype(dtype)


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
