"""The plugin manager: loads built-in and third-party plugins and keeps their transforms.

Built-in plugins are imported from `BUILTIN_PLUGINS`, so the core works even
with broken package metadata. Third-party plugins come from the entry-point group
`statejax.transforms`. Setting `STATEJAX_DISABLE_PLUGIN_AUTOLOAD=1` skips every
entry point; otherwise `STATEJAX_PLUGINS=name1,name2` loads only the entry points
with those names (the left-hand side of `name = module` in the plugin's metadata).

A plugin that fails (import error, bad hook signature, a hook that is misspelled,
undecorated, `async`, or returns instead of registering, an invalid transform) is
unregistered and recorded as a `PluginError` that names its distribution, version
and entry point, chained to its cause. A name claimed twice loses only that name:
a built-in keeps its name; a name two third-party plugins claim goes to neither.
Each error is reported once, as a `PluginWarning` at the user's call site, and
never raised into an unrelated call, whatever the warnings filter: every other
transform keeps working.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import os
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points
from importlib.metadata import version as metadata_version
from pathlib import Path
from typing import Any

import pluggy
import pydantic

from statejax._errors import PluginError
from statejax._jax_compat import is_top_level
from statejax._state import State
from statejax._tracing import describe_state
from statejax.registry import _hookspecs
from statejax.registry._hookspecs import StateBatching
from statejax.registry._protocol import StateTransform, TransformSpec
from statejax.registry._split import check_merge

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
    "statejax._transforms.jit",
    "statejax._transforms.checking",
    "statejax._transforms.autodiff",
    "statejax._transforms.checkpoint",
    "statejax._transforms.vmap",
    "statejax._transforms.mapping",
    "statejax.random",
    "statejax._transforms.loops",
    "statejax._transforms.bounded",
    "statejax._transforms.unvmap",
    "statejax._transforms.naming",
    "statejax._transforms.conditionals",
    "statejax._transforms.abstract",
    "statejax._transforms.parallel",
    "statejax._transforms.pmap",
)

_HOOKS = sorted(n for n in _hookspecs.__all__ if n.startswith("statejax_"))
_FIX = (
    "Fix or uninstall the plugin, or set STATEJAX_DISABLE_PLUGIN_AUTOLOAD=1 / "
    "STATEJAX_PLUGINS=<allowed entry point names>."
)


class PluginWarning(UserWarning):
    """A plugin failed to load; its `PluginError` message is the warning text.

    Issued once per failure, at the call that first needed the registry. It is
    never raised: where a warnings filter turns it into an error, statejax shows
    it instead, so that a broken plugin cannot break an unrelated transform.
    """


@dataclass(frozen=True)
class PluginOrigin:
    """Where a plugin came from, for listings and error messages."""

    distribution: str
    version: str
    entry_point: str

    @property
    def builtin(self) -> bool:
        """Whether the plugin is built into statejax (it keeps its names in a clash)."""
        return self.entry_point.startswith("builtin:")

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

    def __init__(self, origin: PluginOrigin) -> None:
        self._origin = origin
        self.claims: list[RegisteredTransform] = []
        self.errors: list[PluginError] = []

    def register(self, transform: StateTransform) -> None:
        """Add `transform`, checked against the protocol; see `statejax_register_transforms`."""
        try:
            _check_transform(transform, self._origin)
            if any(c.name == transform.name for c in self.claims):
                raise PluginError(
                    f"{self._origin.describe()} registers transform {transform.name!r} twice; "
                    "register each name once."
                )
        except PluginError as error:
            self.errors.append(error)  # reported even if the plugin swallows it
            raise
        self.claims.append(RegisteredTransform(transform, self._origin))


def _check_transform(transform: StateTransform, origin: PluginOrigin) -> None:
    if not isinstance(transform, StateTransform) or not isinstance(transform.name, str):
        raise PluginError(
            f"{origin.describe()} registered {transform!r}, which is not a "
            "StateTransform (it needs name, function and spec); use statejax.extend.Transform."
        )
    name = transform.name
    if not name.isidentifier():
        raise PluginError(
            f"{origin.describe()}: transform name {name!r} is not a Python "
            "identifier, so statejax.transform.<name> could not reach it."
        )
    if not callable(transform.function):
        raise PluginError(
            f"{origin.describe()}: transform {name!r} has function {transform.function!r} "
            f"({type(transform.function).__name__}), which is not callable; pass the "
            "function users call, such as statejax.extend.Transform(name, my_transform, Spec)."
        )
    spec = transform.spec
    if not (isinstance(spec, type) and issubclass(spec, TransformSpec)):
        raise PluginError(
            f"{origin.describe()}: transform {name!r} has spec "
            f"{spec!r}; it must be a subclass of statejax.extend.TransformSpec."
        )
    _check_defaults(spec, name, origin)


def _check_defaults(spec: type[TransformSpec], name: str, origin: PluginOrigin) -> None:
    """A spec's defaults must satisfy its own constraints (checked with no options given)."""
    try:
        spec()
    except pydantic.ValidationError as exc:
        required = {f for f, info in spec.model_fields.items() if info.is_required()}
        bad = [
            e
            for e in exc.errors()
            if e["type"] != "missing"
            # With required fields left out, only errors on defaulted fields are the spec's.
            and (not required or (e["loc"] and e["loc"][0] not in required))
        ]
        if bad:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'the defaults together'}: {e['msg']}"
                for e in bad
            )
            raise PluginError(
                f"{origin.describe()}: transform {name!r} has spec {spec.__name__} whose "
                f"defaults violate its own constraints ({problems}); fix the defaults."
            ) from exc


class Registry:
    """Every loaded transform, by name, and the errors of plugins that failed."""

    def __init__(self) -> None:
        self.transforms: dict[str, RegisteredTransform] = {}
        self.errors: list[PluginError] = []
        self.manager = pluggy.PluginManager("statejax")
        self.manager.add_hookspecs(_hookspecs)
        self._origins: dict[str, PluginOrigin] = {}
        # Names two third-party plugins claimed: neither gets them; the error says why.
        self._contested: dict[str, PluginError] = {}
        self._loaded = False
        self._reported = 0

    def get(self, name: str) -> RegisteredTransform:
        """The transform called `name`; raises `AttributeError` with suggestions."""
        try:
            return self.transforms[name]
        except KeyError:
            pass
        contested = self._contested.get(name)
        if contested is not None:
            raise AttributeError(f"statejax has no transform {name!r}: {contested}") from None
        close = difflib.get_close_matches(name, list(self.transforms), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        failed = "".join(f"\n  failed plugin: {e}" for e in self.errors)
        raise AttributeError(
            f"statejax has no transform {name!r}.{hint} Registered: "
            f"{', '.join(sorted(self.transforms))}.{failed}"
        ) from None

    def load(self) -> None:
        """Load the built-in and entry-point plugins; a second call does nothing."""
        if self._loaded:
            return
        self._loaded = True
        claims: list[RegisteredTransform] = []
        version = _own_version()
        for module_name in BUILTIN_PLUGINS:
            origin = PluginOrigin("statejax", version, f"builtin:{module_name}")
            try:
                module = importlib.import_module(module_name)
            except Exception as exc:  # one broken built-in must not take the others down
                self.errors.append(_plugin_error(origin, exc))
                continue
            claims += self._add_plugin(module, module_name, origin)
        if os.environ.get("STATEJAX_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0"):
            claims += self._load_entry_points()
        self._settle(claims)

    def _load_entry_points(self) -> list[RegisteredTransform]:
        allow = {n.strip() for n in os.environ.get("STATEJAX_PLUGINS", "").split(",") if n.strip()}
        found = list(entry_points(group=ENTRY_POINT_GROUP))
        missing = sorted(allow - {ep.name for ep in found})
        if missing:
            installed = ", ".join(sorted({ep.name for ep in found})) or "none"
            self.errors.append(
                PluginError(
                    f"STATEJAX_PLUGINS names {', '.join(map(repr, missing))}, which no installed "
                    f"distribution provides as an entry point of group {ENTRY_POINT_GROUP!r} "
                    f"(installed entry points: {installed}). It lists entry point names."
                )
            )
        claims: list[RegisteredTransform] = []
        for ep in found:
            if allow and ep.name not in allow:
                continue
            origin = _origin_of(ep)
            try:
                plugin = ep.load()
            except Exception as exc:
                self.errors.append(_plugin_error(origin, exc))
                continue
            claims += self._add_plugin(plugin, f"{origin.distribution}:{ep.name}", origin)
        return claims

    def _add_plugin(
        self, plugin: object, name: str, origin: PluginOrigin
    ) -> list[RegisteredTransform]:
        """Register one plugin and run its registration hook: its claims, all or none."""
        registry = PluginRegistry(origin)
        try:
            self.manager.register(plugin, name=name)
            try:
                self.manager.check_pending()
                _check_hooks(self.manager, plugin, name, origin)
                for impl in self.manager.hook.statejax_register_transforms.get_hookimpls():
                    if impl.plugin_name == name:
                        returned = impl.function(registry=registry)
                        if returned is not None:
                            raise PluginError(
                                f"{origin.describe()}: statejax_register_transforms returned "
                                f"{returned!r} instead of None; statejax ignores what a hook "
                                "returns. Call registry.register(transform) for each transform."
                            )
            except BaseException:
                self.manager.unregister(name=name)
                raise
        except Exception as exc:
            if not any(exc is e for e in registry.errors):
                self.errors.append(
                    exc if isinstance(exc, PluginError) else _plugin_error(origin, exc)
                )
            self.errors += [e for e in registry.errors]
            return []
        self.errors += registry.errors  # errors the plugin caught and went on after
        self._origins[name] = origin
        return registry.claims

    def _settle(self, claims: list[RegisteredTransform]) -> None:
        """Give each name to its one claimant; resolve clashes by the documented rule.

        A built-in keeps its name against any third party. A name that several third
        parties claim goes to none of them (whichever loads first is an accident of
        discovery order); the plugins' other names are unaffected.
        """
        by_name: dict[str, list[RegisteredTransform]] = {}
        for claim in claims:
            by_name.setdefault(claim.name, []).append(claim)
        for name, rivals in by_name.items():
            if len(rivals) == 1:
                self.transforms[name] = rivals[0]
                continue
            owners = [c for c in rivals if c.origin.builtin]
            others = sorted(
                (c.origin for c in rivals if not c.origin.builtin),
                key=lambda o: (o.distribution, o.entry_point),
            )
            claimants = " and ".join(o.describe() for o in others)
            if owners:
                self.transforms[name] = owners[0]
                self.errors.append(
                    PluginError(
                        f"{claimants} registers transform {name!r}, which "
                        f"{owners[0].origin.describe()} already registered. The built-in "
                        f"keeps the name; the plugin's other transforms work. Rename it in "
                        "the plugin."
                    )
                )
                continue
            error = PluginError(
                f"transform {name!r} is registered by both {claimants}; statejax gives the "
                "name to neither (the plugins' other transforms work). Uninstall one, or load "
                "only one with STATEJAX_PLUGINS=<entry point name>."
            )
            self._contested[name] = error
            self.errors.append(error)

    def describe_plugin(self, name: str) -> str:
        """The plugin registered as `name`, for error messages (its origin when loaded here)."""
        origin = self._origins.get(name)
        return origin.describe() if origin is not None else f"plugin {name!r}"

    def batch_rule(self, state: State[Any], spec: TransformSpec) -> StateBatching | None:
        """The first answer of the `statejax_batch_state` hooks for `state`, checked.

        The hooks are called as pluggy calls a `firstresult` hook (last registered
        first), here, so that an answer that is neither `None` nor a `StateBatching`
        is a `PluginError` naming the plugin that gave it. The rule returned checks
        what its `prepare` and `finish` return (see `_checked_rule`).
        """
        hook = self.manager.hook.statejax_batch_state
        impls = hook.get_hookimpls()
        kwargs = {"state": state, "spec": spec}
        rule: object = None
        if any(impl.hookwrapper or impl.wrapper for impl in impls):
            # Wrappers take part in the call: let pluggy run it, and name every plugin.
            rule = hook(**kwargs)
            who = " or ".join(self.describe_plugin(i.plugin_name) for i in impls)
        else:
            who = ""
            for impl in reversed(impls):
                rule = impl.function(*[kwargs[arg] for arg in impl.argnames])
                if rule is not None:
                    who = self.describe_plugin(impl.plugin_name)
                    break
        if rule is None:
            return None
        if not isinstance(rule, StateBatching):
            raise PluginError(
                f"{who}: hook statejax_batch_state returned {type(rule).__name__} "
                f"{rule!r:.80} for {describe_state(state)}; it must return a "
                "statejax.extend.StateBatching (to batch the state) or None (to let another "
                "plugin decide)."
            )
        return _checked_rule(rule, who, state)

    def report(self) -> None:
        """Warn (`PluginWarning`) about each error not reported yet, at the user's call site."""
        pending, self._reported = self.errors[self._reported :], len(self.errors)
        for error in pending:
            _warn(str(error))


_INTERNAL = tuple(
    str(Path(module.__file__).parent) + os.sep
    for module in (sys.modules["statejax"], pluggy, importlib)
    if module.__file__ is not None
)


def _warn(message: str) -> None:
    """Issue a `PluginWarning` pointing at the first frame outside statejax; never raise it."""
    frame = sys._getframe(1)
    level = 2
    while frame.f_back is not None and (
        frame.f_code.co_filename.startswith(_INTERNAL)
        or frame.f_code.co_filename.startswith("<frozen ")
        or "/jax/" in frame.f_code.co_filename
    ):
        frame = frame.f_back
        level += 1
    try:
        warnings.warn(message, PluginWarning, stacklevel=level)
    except PluginWarning as escalated:
        # The filter makes PluginWarning an error. Raising it here would fail whichever
        # call first needed the registry (a vmap, another plugin's transform): show it
        # instead, as the default filter would. `Registry.errors` still holds it.
        warnings.showwarning(
            escalated, PluginWarning, frame.f_code.co_filename, frame.f_lineno, line=None
        )


def _check_hooks(
    manager: pluggy.PluginManager, plugin: object, name: str, origin: PluginOrigin
) -> None:
    """Report hooks pluggy would ignore (undecorated, misspelled) or could not run (async)."""
    impls = [
        impl for caller in manager.get_hookcallers(plugin) or [] for impl in caller.get_hookimpls()
    ]
    impls = [impl for impl in impls if impl.plugin_name == name]
    for impl in impls:
        function = impl.function
        if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
            raise PluginError(
                f"{origin.describe()}: hook {function.__name__} is 'async def', so calling it "
                "would only create a coroutine and its body would never run; statejax calls "
                "hooks synchronously. Make it a plain 'def'."
            )
    marked = {impl.function.__name__ for impl in impls}
    defined = [n for n in dir(plugin) if not n.startswith("__") and callable(getattr(plugin, n))]
    undecorated = sorted(n for n in defined if n in _HOOKS and n not in marked)
    if undecorated:
        raise PluginError(
            f"{origin.describe()}: {', '.join(undecorated)} is not marked with "
            "@statejax.extend.hookimpl, so statejax would ignore it. Decorate it with @hookimpl."
        )
    if not impls:
        guesses = {
            n: close[0]
            for n in defined
            if (close := difflib.get_close_matches(n, _HOOKS, n=1, cutoff=0.75))
        }
        hint = "".join(f" It defines {n!r}: did you mean {h!r}?" for n, h in guesses.items())
        raise PluginError(
            f"{origin.describe()} defines no statejax hook (no function marked "
            f"@statejax.extend.hookimpl named {' or '.join(_HOOKS)}), so it would do "
            f"nothing.{hint}"
        )


def _checked_rule(rule: StateBatching, who: str, state: State[Any]) -> StateBatching:
    """`rule`, with its `prepare` and `finish` checked each time they return.

    `prepare` must return a pair `(lane_value, carry)`; `finish` a value the merge may
    store (`check_merge`: no tracer of a trace that is not running). Otherwise a
    `PluginError` names the plugin, the hook and the state, before any state changes.
    """
    prepare, finish = rule.prepare, rule.finish

    def checked_prepare(value: Any, axis_size: int) -> tuple[Any, Any]:
        prepared = prepare(value, axis_size)
        if not isinstance(prepared, (tuple, list)) or len(prepared) != 2:
            raise PluginError(
                f"{who}: the prepare of the StateBatching that hook statejax_batch_state "
                f"returned for {describe_state(state)} returned {type(prepared).__name__} "
                f"{prepared!r:.80}, not a pair (lane_value, carry). No state was changed."
            )
        return prepared[0], prepared[1]

    def checked_finish(new_value: Any, carry: Any) -> Any:
        stored = finish(new_value, carry)
        label = f"{who}: the finish of the StateBatching from hook statejax_batch_state"
        check_merge(label, (state,), (stored,), is_top_level())
        return stored

    return dataclasses.replace(rule, prepare=checked_prepare, finish=checked_finish)


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
    error = PluginError(
        f"statejax plugin failed: {origin.describe()}: {type(exc).__name__}: {exc}. "
        f"Its transforms are unavailable; the others work. {_FIX}"
    )
    error.__cause__ = exc  # with its traceback: where in the plugin it failed
    return error


_REGISTRY: Registry | None = None
_LOCK = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, loading plugins on first use (and reporting failures once)."""
    registry = _REGISTRY
    if registry is None:
        registry = _load_registry()
    return registry


def _load_registry() -> Registry:
    global _REGISTRY
    with _LOCK:
        registry = _REGISTRY
        if registry is not None:
            return registry
        registry = Registry()
        registry.load()
        # Installed before any warning, so nothing a warning does can make the next
        # call load (and warn) again.
        _REGISTRY = registry
    registry.report()
    return registry


def reset_registry() -> None:
    """Drop the registry so the next use reloads plugins (after changing the environment)."""
    global _REGISTRY
    with _LOCK:
        _REGISTRY = None
