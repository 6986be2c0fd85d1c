"""The package's layering rules (shared DESIGN.md section 2), checked on the source with `ast`."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import statejax

SRC = Path(statejax.__file__).parent


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
    state_layer = {"statejax._state", "statejax._tracing"}
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
