"""The plugin manager: loads built-in and third-party plugins and keeps their transforms.

Built-in plugins are imported from `BUILTIN_PLUGINS`, so the core works even
with broken package metadata. Third-party plugins come from the entry-point group
`statejax.transforms`. Setting `STATEJAX_DISABLE_PLUGIN_AUTOLOAD=1` skips the
entry points; `STATEJAX_PLUGINS=name1,name2` loads only those entry points.

A plugin that fails (import error, bad hook signature, misspelled hook, invalid
or duplicate transform) is unregistered and recorded as a `PluginError`
that names its distribution, version and entry point; a `PluginWarning` is
issued, and every other transform keeps working.
"""

from __future__ import annotations

import difflib
import importlib
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points
from importlib.metadata import version as metadata_version
from typing import Any

import pluggy

from statejax._errors import PluginError
from statejax.registry import _hookspecs
from statejax.registry._protocol import StateTransform, TransformSpec

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "PluginOrigin",
    "PluginRegistry",
    "PluginWarning",
    "RegisteredTransform",
    "get_registry",
    "hookimpl",
    "reset_registry",
]

hookimpl = pluggy.HookimplMarker("statejax")

ENTRY_POINT_GROUP = "statejax.transforms"

#: The built-in transform plugins, registered without package metadata.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "statejax.transforms.jit",
    "statejax.transforms.autodiff",
    "statejax.transforms.checkpoint",
    "statejax.transforms.vmap",
    "statejax.random",
    "statejax.transforms.loops",
    "statejax.transforms.conditionals",
    "statejax.transforms.abstract",
    "statejax.transforms.parallel",
)


class PluginWarning(UserWarning):
    """A plugin failed to load; its `PluginError` message is the warning text."""


@dataclass(frozen=True)
class PluginOrigin:
    """Where a plugin came from, for listings and error messages."""

    distribution: str
    version: str
    entry_point: str

    def describe(self) -> str:
        return f"entry point {self.entry_point!r} of {self.distribution} {self.version}"


@dataclass(frozen=True)
class RegisteredTransform:
    """A transform in the registry, with the plugin that registered it."""

    transform: StateTransform
    origin: PluginOrigin

    @property
    def name(self) -> str:
        return self.transform.name

    @property
    def function(self) -> Callable[..., Any]:
        return self.transform.function

    @property
    def spec(self) -> type[TransformSpec]:
        return self.transform.spec


class PluginRegistry:
    """What a plugin's `statejax_register_transforms` hook receives."""

    def __init__(self, table: dict[str, RegisteredTransform], origin: PluginOrigin) -> None:
        self._table = table
        self._origin = origin

    def register(self, transform: StateTransform) -> None:
        """Add `transform`; its name must be free and it must satisfy the protocol."""
        origin = self._origin
        if not isinstance(transform, StateTransform) or not isinstance(transform.name, str):
            raise PluginError(
                f"{origin.describe()} registered {transform!r}, which is not a "
                "StateTransform (it needs name, function and spec); use statejax.extend.Transform."
            )
        if not (isinstance(transform.spec, type) and issubclass(transform.spec, TransformSpec)):
            raise PluginError(
                f"{origin.describe()}: transform {transform.name!r} has spec "
                f"{transform.spec!r}; it must be a subclass of statejax.extend.TransformSpec."
            )
        if not transform.name.isidentifier():
            raise PluginError(
                f"{origin.describe()}: transform name {transform.name!r} is not a Python "
                "identifier, so statejax.transform.<name> could not reach it."
            )
        taken = self._table.get(transform.name)
        if taken is not None:
            raise PluginError(
                f"{origin.describe()} registers transform {transform.name!r}, which "
                f"{taken.origin.describe()} already registered; rename one of them."
            )
        self._table[transform.name] = RegisteredTransform(transform, origin)


class Registry:
    """Every loaded transform, by name, and the errors of plugins that failed."""

    def __init__(self) -> None:
        self.transforms: dict[str, RegisteredTransform] = {}
        self.errors: list[PluginError] = []
        self.manager = pluggy.PluginManager("statejax")
        self.manager.add_hookspecs(_hookspecs)
        self._origins: dict[str, PluginOrigin] = {}

    def get(self, name: str) -> RegisteredTransform:
        """The transform called `name`; raises `AttributeError` with suggestions."""
        try:
            return self.transforms[name]
        except KeyError:
            pass
        close = difflib.get_close_matches(name, list(self.transforms), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        failed = "".join(f"\n  failed plugin: {e}" for e in self.errors)
        raise AttributeError(
            f"statejax has no transform {name!r}.{hint} Registered: "
            f"{', '.join(sorted(self.transforms))}.{failed}"
        ) from None

    def _add_plugin(self, plugin: object, name: str, origin: PluginOrigin) -> None:
        """Register one plugin and run its registration hook, all or nothing."""
        table = dict(self.transforms)
        try:
            self.manager.register(plugin, name=name)
            try:
                self.manager.check_pending()
                for impl in self.manager.hook.statejax_register_transforms.get_hookimpls():
                    if impl.plugin_name == name:
                        impl.function(registry=PluginRegistry(table, origin))
            except BaseException:
                self.manager.unregister(name=name)
                raise
        except Exception as exc:
            self._fail(exc if isinstance(exc, PluginError) else _plugin_error(origin, exc))
            return
        self.transforms = table
        self._origins[name] = origin

    def _fail(self, error: PluginError) -> None:
        self.errors.append(error)
        warnings.warn(str(error), PluginWarning, stacklevel=4)

    def load(self) -> None:
        version = _own_version()
        for module_name in BUILTIN_PLUGINS:
            origin = PluginOrigin("statejax", version, f"builtin:{module_name}")
            try:
                module = importlib.import_module(module_name)
            except Exception as exc:  # one broken built-in must not take the others down
                self._fail(_plugin_error(origin, exc))
                continue
            self._add_plugin(module, module_name, origin)
        if os.environ.get("STATEJAX_DISABLE_PLUGIN_AUTOLOAD", "") not in ("", "0"):
            return
        allow = {n.strip() for n in os.environ.get("STATEJAX_PLUGINS", "").split(",") if n.strip()}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if allow and ep.name not in allow:
                continue
            origin = _origin_of(ep)
            try:
                plugin = ep.load()
            except Exception as exc:
                self._fail(_plugin_error(origin, exc))
                continue
            self._add_plugin(plugin, f"{origin.distribution}:{ep.name}", origin)


def _own_version() -> str:
    try:
        return metadata_version("statejax")
    except PackageNotFoundError:  # running from a source tree
        return "0.0.0+unknown"


def _origin_of(ep: EntryPoint) -> PluginOrigin:
    dist = ep.dist
    name = dist.name if dist is not None else "<unknown distribution>"
    version = dist.version if dist is not None else "?"
    return PluginOrigin(name, version, f"{ep.name} = {ep.value}")


def _plugin_error(origin: PluginOrigin, exc: BaseException) -> PluginError:
    return PluginError(
        f"statejax plugin failed: {origin.describe()}: {type(exc).__name__}: {exc}. "
        "Its transforms are unavailable; the others work. Fix or uninstall the plugin, or "
        "set STATEJAX_DISABLE_PLUGIN_AUTOLOAD=1 / STATEJAX_PLUGINS=<allowed entry points>."
    )


_REGISTRY: Registry | None = None
_LOCK = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, loading plugins on first use."""
    global _REGISTRY
    registry = _REGISTRY
    if registry is None:
        with _LOCK:
            if _REGISTRY is None:
                registry = Registry()
                registry.load()
                _REGISTRY = registry
            registry = _REGISTRY
    return registry


def reset_registry() -> None:
    """Drop the registry so the next use reloads plugins (after changing the environment)."""
    global _REGISTRY
    with _LOCK:
        _REGISTRY = None
