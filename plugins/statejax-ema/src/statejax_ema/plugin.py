"""The entry-point module: registers `ema` with statejax."""

from __future__ import annotations

from statejax.extend import PluginRegistry, Transform, hookimpl
from statejax_ema import EmaSpec, ema


@hookimpl
def statejax_register_transforms(registry: PluginRegistry) -> None:
    registry.register(
        Transform("ema", ema, EmaSpec, "exponential moving average of selected states")
    )
