"""The statejax mypy plugin: types `statejax.transform.<plugin name>` and checks `parse_spec`.

Enable it in the mypy configuration: `plugins = ["statejax.mypy"]` under
`[tool.mypy]` in `pyproject.toml`. With it, mypy sees each transform an installed
plugin registers as the plugin's own function: `statejax.transform.ema` has the
signature of `statejax_ema.ema`, and a name no installed plugin registers
(`statejax.transform.no_such_transform`) is an error, as for any module attribute.
Without the plugin, such names are `Any`. The built-in transforms are real
attributes of `statejax.transform` and need no plugin.

It also checks the options of `parse_spec(Spec, "name", option=...)` against the
fields of `Spec`: a misspelled option is an error naming the valid ones.

How: when mypy reaches `statejax.transform`, the plugin asks the registry (which
imports the installed plugins, and JAX, once per mypy run) which transforms exist
and where each one's function is defined, makes mypy load those modules (when
they ship `py.typed`), and adds each name to the module as a reference to that
function. Which plugins are installed is part of mypy's cache key, so installing
or removing one rechecks `statejax.transform`.

Examples:
    >>> from statejax.mypy import plugin
    >>> plugin("1.11").__name__
    'StatejaxPlugin'
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import warnings
from collections.abc import Callable
from importlib.metadata import entry_points

from mypy.errorcodes import CALL_ARG
from mypy.nodes import ARG_STAR2, GDEF, MypyFile, SymbolTableNode, TypeInfo, Var
from mypy.plugin import (
    DynamicClassDefContext,
    FunctionContext,
    FunctionSigContext,
    Plugin,
    ReportConfigContext,
)
from mypy.types import (
    AnyType,
    CallableType,
    FunctionLike,
    Instance,
    Type,
    TypeOfAny,
    TypeType,
    UninhabitedType,
    get_proper_type,
)

__all__ = ["StatejaxPlugin", "plugin"]

_TRANSFORM_MODULE = "statejax.transform"
# The call in statejax/transform/__init__.py where the plugin declares the names.
_MARKER = "statejax.transform._declare_plugin_transforms"
_PARSE_SPEC = "statejax.registry._protocol.parse_spec"
_ENTRY_POINT_GROUP = "statejax.transforms"
_PRI_MED = 10  # mypy.build's priority of an ordinary import


def _installed_targets() -> dict[str, str]:
    """`{transform name: fully qualified name of its function}` for third-party transforms.

    A name maps to `""` when its function has no importable name (a lambda, a
    local function); mypy then sees that transform as `Any`.
    """
    # Import here: statejax imports JAX, which mypy does not need for other modules.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a broken plugin is reported at run time, not here
        import statejax.transform as transform_module

        names = [n for n in dir(transform_module) if n not in transform_module.__all__]
        targets: dict[str, str] = {}
        for name in names:
            function = getattr(transform_module, name, None)
            module = getattr(function, "__module__", None)
            qualname = getattr(function, "__qualname__", None)
            ok = isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname
            targets[name] = f"{module}.{qualname}" if ok else ""
    return targets


def _is_typed(module: str) -> bool:
    """Whether mypy can read `module`: its top-level package ships `py.typed`."""
    try:
        spec = importlib.util.find_spec(module.partition(".")[0])
    except (ImportError, ValueError):
        return False
    locations = spec.submodule_search_locations if spec is not None else None
    return any(os.path.exists(os.path.join(p, "py.typed")) for p in locations or ())


def _spec_info(typ: Type) -> TypeInfo | None:
    """The class of a `type[Spec]` argument (`EmaSpec` or a variable of type `type[EmaSpec]`)."""
    typ = get_proper_type(typ)
    if isinstance(typ, CallableType) and typ.is_type_obj():
        return typ.type_object()
    if isinstance(typ, TypeType):
        item = get_proper_type(typ.item)
        if isinstance(item, Instance):
            return item.type
    return None


class StatejaxPlugin(Plugin):
    """Resolves `statejax.transform.<name>` for installed plugins; checks `parse_spec` options."""

    _targets: dict[str, str] | None = None

    def targets(self) -> dict[str, str]:
        """The installed third-party transforms, computed once per mypy run."""
        if self._targets is None:
            self._targets = _installed_targets()
        return self._targets

    def report_config_data(self, ctx: ReportConfigContext) -> object:
        # Installing or removing a plugin invalidates the cache of statejax.transform.
        if ctx.id != _TRANSFORM_MODULE:
            return None
        return sorted(
            (ep.name, ep.value, ep.dist.version if ep.dist is not None else "")
            for ep in entry_points(group=_ENTRY_POINT_GROUP)
        )

    def get_additional_deps(self, file: MypyFile) -> list[tuple[int, str, int]]:
        if file.fullname != _TRANSFORM_MODULE:
            return []
        modules = {t.rpartition(".")[0] for t in self.targets().values() if t}
        return [(_PRI_MED, m, -1) for m in sorted(modules) if m != "" and _is_typed(m)]

    def get_dynamic_class_hook(
        self, fullname: str
    ) -> Callable[[DynamicClassDefContext], None] | None:
        return self._declare_transforms if fullname == _MARKER else None

    def get_function_hook(self, fullname: str) -> Callable[[FunctionContext], Type] | None:
        return _check_parse_spec if fullname == _PARSE_SPEC else None

    def get_function_signature_hook(
        self, fullname: str
    ) -> Callable[[FunctionSigContext], FunctionLike] | None:
        return _without_never_kwargs if fullname in self.targets().values() else None

    def _declare_transforms(self, ctx: DynamicClassDefContext) -> None:
        api = ctx.api
        names = api.modules[_TRANSFORM_MODULE].names
        for name, target in self.targets().items():
            node = api.lookup_fully_qualified_or_none(target) if target else None
            if node is None and target and _is_typed(target) and not api.final_iteration:
                api.defer()  # the plugin's module is not analysed yet (an import cycle)
                return
            if node is not None and node.node is not None:
                names[name] = SymbolTableNode(GDEF, node.node, module_public=True)
            else:
                var = Var(name, AnyType(TypeOfAny.special_form))
                var._fullname = f"{_TRANSFORM_MODULE}.{name}"
                names[name] = SymbolTableNode(GDEF, var, module_public=True)
        # Every transform is now a real attribute: an unknown name is an error, not `Any`.
        names.pop("__getattr__", None)


def _without_never_kwargs(ctx: FunctionSigContext) -> FunctionLike:
    """Drop a transform's `**misspelled: Never` so that a misspelled option reads as one.

    The pattern makes the runtime turn a misspelled option into a `SpecError`; left in
    the signature, mypy would report it as an argument "expected Never".
    """
    sig = ctx.default_signature
    if (
        sig.arg_kinds
        and sig.arg_kinds[-1] == ARG_STAR2
        and isinstance(get_proper_type(sig.arg_types[-1]), UninhabitedType)
    ):
        return sig.copy_modified(
            arg_types=sig.arg_types[:-1], arg_kinds=sig.arg_kinds[:-1], arg_names=sig.arg_names[:-1]
        )
    return sig


def _check_parse_spec(ctx: FunctionContext) -> Type:
    """Report options of `parse_spec(Spec, name, **options)` that `Spec` has no field for."""
    if not ctx.arg_types or not ctx.arg_types[0] or len(ctx.arg_names) < 3:
        return ctx.default_return_type
    info = _spec_info(ctx.arg_types[0][0])
    fields_meta = info.metadata.get("dataclass") if info is not None else None
    if info is None or fields_meta is None:
        return ctx.default_return_type
    attributes = fields_meta.get("attributes", [])
    fields = [str(a["name"]) for a in attributes if a.get("is_in_init", True)]
    for name, expr in zip(ctx.arg_names[2], ctx.args[2], strict=True):
        if name is None or name in fields:
            continue  # `**options` passed through cannot be checked here
        close = difflib.get_close_matches(name, fields, n=1)
        hint = f'; did you mean "{close[0]}"?' if close else ""
        ctx.api.fail(
            f'Unexpected option "{name}" for {info.name}{hint} '
            f"(valid options: {', '.join(fields) or 'none'})",
            expr,
            code=CALL_ARG,
        )
    return ctx.default_return_type


def plugin(version: str) -> type[Plugin]:
    """The entry point mypy calls with its version; returns the plugin class."""
    return StatejaxPlugin
