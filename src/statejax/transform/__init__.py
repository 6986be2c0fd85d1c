"""Every registered transform, built-in and third-party: ``statejax.transform.<name>``.

The built-ins are imported here so type checkers see their signatures; any other
name is looked up in the plugin registry, so an installed plugin's transform is
reachable as ``statejax.transform.<its name>``.

Example:
    >>> import statejax as sj
    >>> sj.transform.jit is sj.jit
    True
"""

from typing import Any

from statejax.registry._manager import get_registry
from statejax.transforms.jit import jit

__all__ = ["jit"]


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return get_registry().get(name).function


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(get_registry().transforms))
