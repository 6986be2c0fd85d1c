"""The hook specifications: the documented contract between statejax and its plugins.

A plugin is a module (or object) with functions marked ``@statejax.extend.hookimpl``
whose names match the hooks below. Built-in transforms are plugins too and use
nothing a third party cannot. A third-party plugin is found through the
``statejax.transforms`` entry-point group::

    [project.entry-points."statejax.transforms"]
    ema = "statejax_ema.plugin"

A hook implementation may accept a subset of a hook's arguments. A function
marked ``@hookimpl`` whose name matches no hook below is reported as an error
when plugins load (pluggy's ``check_pending``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from statejax.registry._manager import PluginRegistry

hookspec = pluggy.HookspecMarker("statejax")


@hookspec
def statejax_register_transforms(registry: PluginRegistry) -> None:
    """Register the plugin's transforms: call ``registry.register(transform)`` for each.

    ``transform`` satisfies :class:`statejax.extend.StateTransform` (for example a
    :class:`statejax.extend.Transform`). A name that is already taken is a
    :class:`statejax.PluginError` naming both plugins.
    """

