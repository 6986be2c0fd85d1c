"""Small helpers shared by the control-flow plugins (loops, conditionals, abstract).

Private: not part of the plugin API. The plugins use them to name user functions
and to describe the type of a carried state value in error messages.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["as_tuple", "name_of", "show_signature", "signature"]

_ARRAY_LIKE = (jax.Array, np.ndarray, np.generic, bool, int, float, complex)


def as_tuple(value: Any) -> Any:
    """Accept one position or name where options take a tuple (``static_argnums=1``).

    Anything else is returned as it is, for pydantic to validate.

    Example:
        >>> as_tuple(1), as_tuple(["a", "b"]), as_tuple(None)
        ((1,), ('a', 'b'), None)
    """
    if isinstance(value, (int, str)):
        return (value,)
    return tuple(value) if isinstance(value, (list, tuple)) else value


def name_of(fn: Any) -> str:
    """How error messages and trace names refer to a user function.

    Example:
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
    """A :func:`signature` as text: ``float32[2,3]`` for an array, else the tree and its leaves.

    Example:
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
