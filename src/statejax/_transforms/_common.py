"""Small helpers shared by the built-in plugins.

Private: not part of the plugin API. The plugins use them to name user functions,
to describe the type of a carried state value in error messages, to validate the
integer options of their specs, to run a function eagerly under
`jax.disable_jit()`, and to raise an error from inside compiled code (`raise_when`,
public as `statejax.transform.raise_when`, used by `autodiff`'s `debug_nan` and by
`checking`).
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Annotated, Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import pydantic

# The errors that are also a TypeError/ValueError are public (statejax.SpecTypeError, ...);
# the plugins take them from here.
from statejax._errors import SpecTypeError, TraceTypeError, TraceValueError
from statejax._jax_compat import is_top_level
from statejax.extend import (
    Lift,
    Split,
    State,
    StatefulFunction,
    StateTrace,
    current_trace,
    jit_disabled,
)

__all__ = [
    "AS_TUPLE",
    "MAX_INT32",
    "Count",
    "Index",
    "PositiveCount",
    "SignedIndex",
    "SpecTypeError",
    "TraceTypeError",
    "TraceValueError",
    "as_tuple",
    "cached_call",
    "eager_call",
    "is_traced",
    "jit_disabled",
    "name_of",
    "raise_when",
    "run_eagerly",
    "show_signature",
    "signature",
    "wait_for_results",
]

R = TypeVar("R")


#: The largest position or count an option takes: JAX counts loop steps in int32.
MAX_INT32 = 2**31 - 1


def _strict_int(value: Any) -> Any:
    """Refuse a bool where an int is expected; accept a NumPy integer as an int."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{value!r} is a bool, not an int; give an int")
    if isinstance(value, np.integer):
        return int(value)
    return value


_NOT_BOOL = pydantic.BeforeValidator(_strict_int)

#: A non-negative int option that counts something (a position, a length), at most an int32.
#: A bool, a float or a string is refused, where pydantic's plain `int` would take `True` as 1.
Index = Annotated[int, pydantic.Strict(), pydantic.Field(ge=0, le=MAX_INT32), _NOT_BOOL]
#: Like `Index`; the name for sizes rather than positions.
Count = Index

# An axis name: any hashable. pydantic before 2.11 cannot write a JSON schema for
# `Hashable`, so the schema is given: any JSON value names an axis.
AxisName = Annotated[Hashable, pydantic.WithJsonSchema({})]
#: A position that may count from the end (`-1`: the last), within int32 either way.
SignedIndex = Annotated[
    int, pydantic.Strict(), pydantic.Field(ge=-MAX_INT32, le=MAX_INT32), _NOT_BOOL
]
#: A positive `Count`.
PositiveCount = Annotated[int, pydantic.Strict(), pydantic.Field(gt=0, le=MAX_INT32), _NOT_BOOL]

_ARRAY_LIKE = (jax.Array, np.ndarray, np.generic, bool, int, float, complex)


def as_tuple(value: Any) -> Any:
    """Accept one position or name where options take a tuple (`static_argnums=1`).

    Anything else is returned as it is, for pydantic to validate.

    Examples:
        >>> as_tuple(1), as_tuple(["a", "b"]), as_tuple(None)
        ((1,), ('a', 'b'), None)
    """
    if isinstance(value, (int, str, np.integer)):
        return (value,)
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _tuple_or_empty(value: Any) -> Any:
    return () if value is None else as_tuple(value)


#: The normaliser of a tuple option that also takes one item or `None` (no items), as
#: `static_argnums=1`: `Annotated[tuple[Index, ...], AS_TUPLE]`.
AS_TUPLE = pydantic.BeforeValidator(_tuple_or_empty)


def name_of(fn: Any) -> str:
    """How error messages and trace names refer to a user function.

    Examples:
        >>> def step(x): return x
        >>> name_of(step), name_of(3)
        ('step', '3')
    """
    return str(getattr(fn, "__qualname__", None) or repr(fn))


def signature(value: Any) -> Any:
    """The structure, shapes and dtypes of a value, as a loop carry or branch output sees them.

    Weak typing is ignored (a Python float and a float32 array agree), as JAX's
    control flow promotes weakly typed carries.
    """
    leaves, treedef = jax.tree.flatten(value)
    return treedef, [
        (np.shape(leaf), jnp.result_type(leaf)) if isinstance(leaf, _ARRAY_LIKE) else None
        for leaf in leaves
    ]


def show_signature(sig: Any) -> str:
    """A `signature` as text: `float32[2,3]` for an array, else the tree and its leaves.

    Examples:
        >>> import jax.numpy as jnp
        >>> show_signature(signature(jnp.zeros((2, 3))))
        'float32[2,3]'
    """
    treedef, leaves = sig
    shown = [
        "?" if item is None else f"{np.dtype(item[1]).name}[{','.join(map(str, item[0]))}]"
        for item in leaves
    ]
    is_array = treedef == jax.tree.structure(0)
    return shown[0] if is_array else f"{treedef} with leaves {', '.join(shown)}"


# -- jax.disable_jit -----------------------------------------------------------------


def eager_call(
    name: str, fn: Callable[..., R], /, *args: Any, **kwargs: Any
) -> tuple[R, list[tuple[State[Any], Any]]]:
    """Run `fn` once, for real, and return its result and its writes, `(state, new_value)`.

    The writes are not applied: every state is as it was when this returns or raises.
    The states `fn` reads are reported to an enclosing statejax trace, as a transform's
    reads are. States `fn` creates are marked as leaked, as under a traced transform.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> total = sj.State(jnp.array(1.0))
        >>> def add():
        ...     total.value = total.value + 1.0
        >>> _, writes = eager_call("add", add)
        >>> [float(v) for _, v in writes], float(total.value)
        ([2.0], 1.0)
    """
    with StateTrace(f"{name} (eager)") as trace:
        out = fn(*args, **kwargs)
        created = {id(s) for s in trace.created}
        writes = [(s, s.value) for k, s in trace.writes.items() if k not in created]
    if current_trace() is not None:
        skip = created | trace.writes.keys()
        Split(read_states=[s for k, s in trace.reads.items() if k not in skip]).gather()
    return out, writes


def run_eagerly(name: str, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """Run `fn` once, eagerly, as a transform does under `jax.disable_jit()`.

    Like `jax.jit` under `jax.disable_jit()`, the function runs as plain Python on
    concrete values (so `float(x)` and `if x > 0:` work), and its state writes are
    applied after it returns, all together: if it raises, no state changes.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> total = sj.State(jnp.array(1.0))
        >>> def add(x):
        ...     total.value = total.value + float(x)
        ...     return total.value
        >>> float(run_eagerly("add", add, jnp.array(2.0))), float(total.value)
        (3.0, 3.0)
    """
    out, writes = eager_call(name, fn, *args, **kwargs)
    Split(write_states=[s for s, _ in writes]).scatter([v for _, v in writes])
    return out


def wait_for_results(values: Any) -> None:
    """Wait until the computation that returned `values` has finished, raising its error.

    A run-time error of a compiled computation (a `jax.debug.callback` that raises)
    does not always fail the call: on several devices, and on accelerators, the call
    returns arrays that raise when read. A transform waits for its written values
    before storing them, so the error raises at the call and the states keep their
    last good values. Every result of one run becomes ready (or fails) together, so
    one array is waited for (all its shards: every device). Nothing happens for
    tracers or when there is no array.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> wait_for_results([jax.jit(lambda x: x + 1)(jnp.ones(2))])
    """
    for value in values:
        leaf = value if isinstance(value, jax.Array) else next(iter(jax.tree.leaves(value)), None)
        if isinstance(leaf, jax.core.Tracer):
            return
        if isinstance(leaf, jax.Array):
            leaf.block_until_ready()
            return


def is_traced(value: Any) -> bool:
    """Whether any leaf of `value` is a JAX tracer."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


def raise_when(pred: Any, make_error: Callable[..., BaseException | None], *operands: Any) -> None:
    """Raise `make_error(pred, *operands)` when any element of `pred` is true.

    Outside a trace it raises at once. Inside one, a host callback raises when
    the compiled code runs, so the enclosing transform fails before it stores
    any state. `make_error` gets the values as NumPy arrays (per lane under
    `vmap`); it returns the exception, or raises itself, or returns `None`
    to raise nothing.

    Examples:
        >>> import jax.numpy as jnp
        >>> from statejax.transform import raise_when
        >>> raise_when(jnp.array([False, True]), lambda p: ValueError(f"bad lanes {p}"))
        Traceback (most recent call last):
        ValueError: bad lanes [False  True]
    """

    def fire(p: Any, *values: Any) -> None:
        if np.any(p):
            error = make_error(np.asarray(p), *values)
            if error is not None:
                raise error

    if not is_traced((pred, operands)):
        fire(pred, *operands)
        return
    pred = jnp.asarray(pred)
    # The callback runs only when a lane fails (under vmap, the cond becomes a select
    # and `fire` checks each lane itself).
    jax.lax.cond(
        jnp.any(pred),
        lambda p, ops: jax.debug.callback(fire, p, *ops),
        lambda p, ops: None,
        pred,
        operands,
    )


# -- the cache of the function-form transforms ---------------------------------------


def cached_call(
    kind: str,
    fns: Sequence[Callable[..., Any]],
    options: Hashable,
    build: Callable[[Sequence[Callable[..., Any]]], tuple[Callable[..., Any], str, Lift]],
) -> StatefulFunction[Any] | None:
    """The compiled `StatefulFunction` of a function-form transform (`scan(f, ...)`) call.

    `map`, `scan`, `while_loop`, `cond`, ... take the user's function with each call,
    so a call cannot keep its trace on a decorated object as `jit` does. At the top
    level (no JAX transform tracing, jit enabled) this cache keeps one per `kind`,
    identity of each of `fns` and hashable `options`: a repeated call with the same
    shapes then traces nothing, as a repeated `jax.lax.scan` of the same function
    does not. `build(weak_fns)` returns the `StatefulFunction`'s `(fn, name, lift)`,
    made from `weak_fns` (never from `fns`); its lift's function is handed to
    `jax.jit` (so the call is one compiled computation, whose writes the engine
    merges after it returned: atomic). The functions are held weakly (a bound
    method through its instance and function): an entry dies with any of them and
    keeps none alive. `None` where nothing can be cached (inside a trace, under
    `jax.disable_jit()`, a function that cannot be weakly referenced, unhashable
    options): the caller runs its uncached path.
    """
    if not is_top_level() or jit_disabled():
        return None
    try:
        idents = tuple(_identity(fn) for fn in fns)
        key = (kind, idents, options)
        found = _CALLS.get(key)
    except TypeError:
        return None
    if found is not None:
        return found[0]
    try:
        refs = [_weak_ref(fn) for fn in fns]
    except TypeError:
        return None
    weak_fns = [_weak_callable(fn, ref) for fn, ref in zip(fns, refs, strict=True)]
    fn, name, lift = build(weak_fns)

    def jitted(split: Split, pure: Any) -> Callable[..., Any]:
        return jax.jit(lift(split, pure))

    stateful: StatefulFunction[Any] = StatefulFunction(fn, name, jitted, staged=True)
    token = object()

    def forget(_: object) -> None:
        entry = _CALLS.get(key)
        if entry is not None and entry[1] is token:
            _CALLS.pop(key, None)

    # Weak references to what each function lives by (a bound method: its instance and
    # function), with callbacks that drop the entry.
    keep = [weakref.ref(obj, forget) for fn in fns for obj in _referents(fn)]
    with _CALLS_LOCK:
        if len(_CALLS) >= _MAX_CALLS:
            _CALLS.clear()
        _CALLS[key] = (stateful, token, keep)
    return stateful


# At most this many cached calls; then the cache starts over.
_MAX_CALLS = 1024
_CALLS: dict[Hashable, tuple[StatefulFunction[Any], object, list[weakref.ref[Any]]]] = {}
_CALLS_LOCK = threading.Lock()


def _referents(fn: Callable[..., Any]) -> list[object]:
    if inspect.ismethod(fn):
        return [fn.__self__, fn.__func__]
    return [fn]


def _identity(fn: Callable[..., Any]) -> Hashable:
    return tuple(id(obj) for obj in _referents(fn))


def _weak_ref(fn: Callable[..., Any]) -> Callable[[], Any]:
    if inspect.ismethod(fn):
        return weakref.WeakMethod(fn)
    return weakref.ref(fn)


def _weak_callable(fn: Callable[..., Any], ref: Callable[[], Any]) -> Callable[..., Any]:
    """A function calling what `ref` refers to, named as `fn` (which it does not keep)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        target = ref()
        assert target is not None  # the cache entry dies with it
        return target(*args, **kwargs)

    call.__name__ = getattr(fn, "__name__", "function")
    call.__qualname__ = getattr(fn, "__qualname__", call.__name__)
    return call
