"""The package's import rules (shared DESIGN.md section 2), checked on the source with `ast`.

- No module takes a private name (a leading underscore) from a *public* module (one whose
  own name has no leading underscore), neither by `from X import _name` nor as
  `module._name` through an imported public module. What several modules share lives in
  a private module, which is what it is for.
- No import circle among statejax modules, counting the imports that run when a module
  is imported. Imports under `if TYPE_CHECKING:` and imports inside functions (lazy)
  make no circle either, except those listed in `KNOWN_CIRCLES`, each with its reason.
- A lower layer never imports a higher one (`LAYERS`, one reason per entry).
- Docstring examples never import the private implementation package `statejax._transforms`.

An import edge goes to the module named (`from statejax import random` to
`statejax.random`, `from statejax.graph import Module` to `statejax.graph`); the parent
packages Python imports on the way are not counted.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

# Parsed, not imported: the checks still report when a bad import breaks the package.
SRC = Path(__file__).resolve().parents[1] / "src" / "statejax"

# Layers, lowest first: a module may import its own layer and those below, never above.
# Each entry is a module or a package (all its modules), with why it sits there.
LAYERS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "base",
        (
            ("statejax._errors", "the error classes: import nothing of statejax"),
            ("statejax._jax_compat", "the only home of JAX internals"),
            ("statejax._settings", "environ's store and the record of the settings a trace read"),
            (
                "statejax.environ",
                "BrainState's global settings: the samplers' default dtypes and the engine's "
                "retrace check read them",
            ),
        ),
    ),
    (
        "state",
        (
            ("statejax._state", "the State classes"),
            ("statejax._tracing", "the thread's traces (split out of _state)"),
            ("statejax._state_hooks", "state hooks: BrainState's hook API, run by State.value"),
            ("statejax._trace_stack", "StateTraceStack, BrainState's trace object"),
            ("statejax._state_tools", "state helpers: check_state_value_tree, ..."),
            ("statejax._hidden_states", "HiddenGroupState, HiddenTreeState"),
            ("statejax._random_state", "RandomState, a State holding a key"),
            ("statejax._samplers", "the draws RandomState offers"),
            ("statejax._distributions", "the samplers' distributions (pure JAX)"),
        ),
    ),
    (
        "filters",
        (
            ("statejax.filters", "the typed filter language over states"),
            ("statejax._new_states", "catch_new_states takes a filter"),
        ),
    ),
    ("graph", (("statejax.graph", "modules, walking, flatten/treefy, contexts"),)),
    (
        "protocol",
        (
            ("statejax.registry", "the StateTransform protocol, the engine, the manager"),
            ("statejax.extend", "the plugin API: re-exports of the protocol layer"),
        ),
    ),
    (
        "plugins",
        (
            ("statejax._transforms", "the built-in transforms and their shared modules"),
            (
                "statejax.random",
                "a plugin (the statejax_batch_state hook splits keys per lane); "
                "fwd_grad draws its directions from it",
            ),
        ),
    ),
    (
        "public face",
        (
            ("statejax", "the package's own __init__: re-exports everything"),
            ("statejax.transform", "every transform by name (BrainState's module)"),
            ("statejax.cli", "the command line"),
            ("statejax.demo", "the demo the CLI runs"),
            ("statejax.optim", "optax optimizers over states: a user-level library"),
            ("statejax.checkpoints", "save/restore of states: a user-level library"),
            ("statejax.sharding", "user-level sharding helpers on jit's state rules"),
            ("statejax.testing", "the kit plugin authors test with: calls the transforms"),
            ("statejax.mypy", "the mypy plugin: reads the transform face"),
        ),
    ),
)

# Circles made only by imports under TYPE_CHECKING or inside functions, as sorted tuples
# of the modules in the circle, with the reason each is kept.
KNOWN_CIRCLES: dict[tuple[str, ...], str] = {
    ("statejax._state", "statejax._state_hooks", "statejax._tracing"): (
        "type-only: a trace records State objects, and a hook context refers to one, so "
        "_tracing and _state_hooks annotate with State; _state imports their machinery "
        "at run time"
    ),
    ("statejax.registry._hookspecs", "statejax.registry._manager"): (
        "type-only: the hookspecs (the documented plugin contract) annotate their "
        "`registry` argument as PluginRegistry, and the manager loads the hookspecs"
    ),
}


@dataclass(frozen=True)
class Import:
    """One statejax import: `from module import names` (or `import module`: `names` is
    empty), the local name `bound` to a module (or `None`), whether it runs when the
    importing module is imported (`eager`: not in a function, not under TYPE_CHECKING),
    and whether it is an edge of the import graph (a binding alone is not)."""

    module: str
    names: tuple[str, ...]
    bound: str | None
    eager: bool
    line: int
    edge: bool = True


def _module_names(root: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(tree: ast.Module, name: str, is_package: bool) -> Iterator[Import]:
    """Every statejax import of a module, each marked eager or not."""

    def absolute(node: ast.ImportFrom) -> str:
        if node.level == 0:
            return node.module or ""
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        return ".".join([*base, *([node.module] if node.module else [])])

    def visit(body: list[ast.stmt], eager: bool) -> Iterator[Import]:
        for node in body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] != "statejax":
                        continue
                    yield Import(alias.name, (), None, eager, node.lineno)
                    # `import a.b` binds `a`; `import a.b as m` binds `m` to `a.b`.
                    target = alias.name if alias.asname else "statejax"
                    bound = alias.asname or "statejax"
                    yield Import(target, (), bound, eager, node.lineno, edge=False)
            elif isinstance(node, ast.ImportFrom):
                module = absolute(node)
                if module.split(".")[0] != "statejax":
                    continue
                names = tuple(a.name for a in node.names)
                yield Import(module, names, None, eager, node.lineno)
                for alias in node.names:  # a binding, where the name is a submodule
                    sub = f"{module}.{alias.name}"
                    yield Import(sub, (), alias.asname or alias.name, eager, node.lineno, False)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                yield from visit(node.body, False)
                yield from visit(node.orelse, eager)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from visit(node.body, False)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    block = getattr(node, field, None)
                    if isinstance(block, list):
                        stmts = [s for s in block if isinstance(s, ast.stmt)]
                        for handler in block:
                            if isinstance(handler, ast.excepthandler):
                                stmts += handler.body
                        yield from visit(stmts, eager)

    yield from visit(tree.body, True)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_public_module(module: str) -> bool:
    return not module.rsplit(".", 1)[-1].startswith("_")


@dataclass
class Package:
    """The parsed source of a package: module name -> (tree, is a package)."""

    modules: dict[str, tuple[ast.Module, bool]]

    @classmethod
    def from_sources(
        cls, sources: Mapping[str, str], packages: frozenset[str] = frozenset()
    ) -> Package:
        return cls({m: (ast.parse(s), m in packages) for m, s in sources.items()})

    @classmethod
    def load(cls, root: Path) -> Package:
        return cls(
            {
                m: (ast.parse(p.read_text(encoding="utf-8"), str(p)), p.name == "__init__.py")
                for m, p in _module_names(root).items()
            }
        )

    def imports(self, name: str) -> list[Import]:
        tree, is_package = self.modules[name]
        return list(_imports(tree, name, is_package))

    def edges(self, name: str, eager_only: bool) -> set[str]:
        """The statejax modules `name` imports (a taken name that is a submodule counts
        as that submodule, otherwise the module it is taken from)."""
        found = set()
        for imp in self.imports(name):
            if not imp.edge or (eager_only and not imp.eager):
                continue
            if imp.names:
                for taken in imp.names:
                    sub = f"{imp.module}.{taken}"
                    found.add(sub if sub in self.modules else imp.module)
            else:
                found.add(imp.module)
        return {m for m in found if m in self.modules and m != name}


def private_names_taken(package: Package) -> list[str]:
    """`from X import _name` and `X._name` where X is a public module, `_name` no submodule."""
    found = []
    for name, (tree, _) in sorted(package.modules.items()):
        public_bound: dict[str, str] = {}
        for imp in package.imports(name):
            if imp.edge and imp.names and _is_public_module(imp.module):
                for taken in imp.names:
                    if _is_private(taken) and f"{imp.module}.{taken}" not in package.modules:
                        found.append(f"{name}:{imp.line} takes {taken} from {imp.module}")
            bound_module = imp.bound is not None and imp.module in package.modules
            if bound_module and _is_public_module(imp.module):
                assert imp.bound is not None
                public_bound[imp.bound] = imp.module
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in public_bound
                and _is_private(node.attr)
            ):
                module = public_bound[node.value.id]
                if f"{module}.{node.attr}" not in package.modules:
                    found.append(f"{name}:{node.lineno} uses {module}.{node.attr}")
    return found


def import_circles(package: Package, eager_only: bool) -> list[tuple[str, ...]]:
    """The strongly connected components of the import graph with more than one module
    (or a module importing itself), each as a sorted tuple."""
    graph = {m: package.edges(m, eager_only) for m in package.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[tuple[str, ...]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(circles)


def layer_of(module: str) -> int | None:
    """The index in `LAYERS` of the most specific entry naming `module` or a package above it."""
    best: tuple[int, int] | None = None
    for level, (_, entries) in enumerate(LAYERS):
        for prefix, _reason in entries:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (level, len(prefix))
    return None if best is None else best[0]


def layer_violations(package: Package) -> list[str]:
    """Imports (lazy and type-only included) from a higher layer, and modules in none."""
    found = []
    for name in sorted(package.modules):
        mine = layer_of(name)
        if mine is None:
            found.append(f"{name} is in no layer: add it to LAYERS with its reason")
            continue
        for target in sorted(package.edges(name, eager_only=False)):
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                found.append(
                    f"{name} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]}), "
                    "a higher layer"
                )
    return found


PACKAGE = Package.load(SRC)


def test_no_private_name_is_taken_from_a_public_module() -> None:
    assert private_names_taken(PACKAGE) == []


def test_no_import_circle() -> None:
    assert import_circles(PACKAGE, eager_only=True) == []


def test_lazy_and_type_only_circles_are_the_known_ones() -> None:
    assert import_circles(PACKAGE, eager_only=False) == sorted(KNOWN_CIRCLES)


def test_no_lower_layer_imports_a_higher_one() -> None:
    assert layer_violations(PACKAGE) == []


def test_every_layer_entry_has_a_reason() -> None:
    for _, entries in LAYERS:
        for module, reason in entries:
            assert module.startswith("statejax") and reason


_PRIVATE_PACKAGE = re.compile(r"statejax\._transforms\b")


def test_no_docstring_example_names_the_private_package() -> None:
    """Examples use `statejax.transform` / `statejax.extend`; a private helper that needs
    an example gets a unit test instead."""
    found = []
    for name, (tree, _) in sorted(PACKAGE.modules.items()):
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False) or ""
                for line in doc.splitlines():
                    stripped = line.strip()
                    if stripped.startswith((">>>", "...")) and _PRIVATE_PACKAGE.search(stripped):
                        found.append(f"{name}: {stripped}")
    assert found == []


# --- the checks themselves catch what they are for ---------------------------------------

_PKG = frozenset({"statejax", "statejax._transforms"})


def _package(**sources: str) -> Package:
    base = {"statejax": "", "statejax._transforms": ""}
    return Package.from_sources(
        {**base, **{k.replace("__", "."): v for k, v in sources.items()}}, _PKG
    )


@pytest.mark.parametrize(
    "source",
    [
        "from statejax._transforms.loops import _scan",
        "from statejax._transforms import loops\nloops._scan()",
        "import statejax._transforms.loops as loops\nloops._scan()",
    ],
)
def test_a_private_name_from_a_public_module_is_found(source: str) -> None:
    package = _package(
        statejax___transforms__loops="def _scan(): ...",
        statejax___transforms__vmap=source,
    )
    assert len(private_names_taken(package)) == 1


def test_private_modules_and_submodules_may_be_imported() -> None:
    package = _package(
        statejax___transforms___loop_core="def scan(): ...\ndef _helper(): ...",
        statejax___transforms__vmap="from statejax._transforms._loop_core import _helper\n"
        "from statejax._transforms import _loop_core",
    )
    assert private_names_taken(package) == []


def test_a_circle_is_found_and_type_only_imports_make_none_at_runtime() -> None:
    package = _package(
        statejax___transforms__a="from statejax._transforms.b import x",
        statejax___transforms__b="from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from statejax._transforms.a import y\n",
    )
    assert import_circles(package, eager_only=True) == []
    assert import_circles(package, eager_only=False) == [
        ("statejax._transforms.a", "statejax._transforms.b")
    ]
    package = _package(
        statejax___transforms__a="from statejax._transforms.b import x",
        statejax___transforms__b="from statejax._transforms.a import y",
    )
    assert import_circles(package, eager_only=True) == [
        ("statejax._transforms.a", "statejax._transforms.b")
    ]


def test_an_import_of_a_higher_layer_is_found() -> None:
    package = _package(statejax__filters="from statejax.transform import jit")
    package.modules["statejax.transform"] = (ast.parse(""), True)
    assert layer_violations(package) == [
        "statejax.filters (filters) imports statejax.transform (public face), a higher layer"
    ]


# --- the state layer and JAX internals -----------------------------------------------


def _modules() -> Iterator[tuple[str, ast.Module]]:
    """`(dotted name, parsed source)` of every module of the package."""
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), ast.parse(path.read_text(encoding="utf-8"), str(path))


def _runtime_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports that run when the module is imported (not those under `TYPE_CHECKING`)."""

    def visit(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node
            elif isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    yield from visit(node.body)
                yield from visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody):
                    yield from visit(block)
                for handler in node.handlers:
                    yield from visit(handler.body)

    yield from visit(tree.body)


def _imported_modules(tree: ast.Module) -> set[str]:
    found = set()
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif node.module is not None and node.level == 0:
            found.add(node.module)
    return found


def test_no_private_name_of_the_state_layer_is_imported_elsewhere() -> None:
    """Other modules use the named internal API of `_state` and `_tracing`, never their
    underscore names (the old `_TLS`, `_CALL_REFS`, `_contains_tracer`)."""
    state_layer = {"statejax._state", "statejax._tracing", "statejax._state_hooks"}
    offenders = [
        f"{name} imports {node.module}.{alias.name}"
        for name, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module in state_layer
        for alias in node.names
        if alias.name.startswith("_")
    ]
    assert offenders == []


def test_the_trace_machinery_is_below_the_state_classes() -> None:
    """`_tracing` and `_state_hooks` run without `_state` (they name `State` in annotations
    only), and the state layer imports nothing above it: no import circle."""
    trees = dict(_modules())
    below = {"statejax._errors", "statejax._jax_compat"}
    tracing = {m for m in _imported_modules(trees["statejax._tracing"]) if m.startswith("statejax")}
    assert tracing <= below
    # The state hooks sit beside the trace machinery, under the state classes.
    hooks = {
        m for m in _imported_modules(trees["statejax._state_hooks"]) if m.startswith("statejax")
    }
    assert hooks <= below | {"statejax._tracing"}
    state = {m for m in _imported_modules(trees["statejax._state"]) if m.startswith("statejax")}
    assert state <= below | {"statejax._tracing", "statejax._state_hooks"}


# JAX's internals: what statejax takes from them goes through `_jax_compat.py`, so a
# change in JAX breaks one module. `jax.core.Tracer` and `jax.core.ShapedArray` are
# public (documented); `jax.extend` is JAX's public API for extensions.
_JAX_INTERNAL = ("jax._src", "jax.interpreters", "jax.api_util")
_PUBLIC_JAX_CORE = {"Tracer", "ShapedArray"}


def _is_internal(dotted: str) -> bool:
    if any(dotted == p or dotted.startswith(p + ".") for p in _JAX_INTERNAL):
        return True
    parts = dotted.split(".")
    return parts[:2] == ["jax", "core"] and (len(parts) == 2 or parts[2] not in _PUBLIC_JAX_CORE)


def _jax_internals(tree: ast.Module) -> Iterator[str]:
    """Each use of a JAX internal in a module: imports and attribute chains (`jax.core.x`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if _is_internal(a.name))
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if _is_internal(node.module) or _is_internal(dotted):
                    yield dotted
        elif isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Del):
            dotted = ast.unparse(node)
            # A chain of names (not `f().x`); `jax.core` alone is the stem of `jax.core.Tracer`.
            plain = dotted.replace(".", "").replace("_", "").isalnum()
            if plain and dotted != "jax.core" and _is_internal(dotted):
                yield dotted


def test_jax_internals_only_in_jax_compat() -> None:
    used = {
        f"{name}: {what}"
        for name, tree in _modules()
        if name != "statejax._jax_compat"
        for what in _jax_internals(tree)
    }
    assert sorted(used) == []


def test_the_internals_check_sees_each_spelling() -> None:
    source = (
        "import jax\n"
        "from jax._src import core\n"
        "from jax.interpreters import batching\n"
        "from jax import api_util\n"
        "from jax.core import eval_jaxpr\n"
        "x = jax.core.eval_jaxpr\n"
        "y = jax.core.Tracer\n"
        "from jax.extend.core import Primitive\n"
        "from jax import core\n"
    )
    found = sorted(set(_jax_internals(ast.parse(source))))
    assert found == [
        "jax._src.core",
        "jax.api_util",
        "jax.core",
        "jax.core.eval_jaxpr",
        "jax.interpreters.batching",
    ]
