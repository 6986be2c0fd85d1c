"""Built-in plugin: abstract (being written)."""

from __future__ import annotations

from typing import Any

from statejax.extend import hookimpl


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    """Registers nothing yet."""
