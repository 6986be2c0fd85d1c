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
    """`_tracing` runs without `_state` (it names `State` in annotations only), and the
    state layer imports nothing above it: no import circle."""
    trees = dict(_modules())
    below = {"statejax._errors", "statejax._jax_compat"}
    tracing = {m for m in _imported_modules(trees["statejax._tracing"]) if m.startswith("statejax")}
    assert tracing <= below
    state = {m for m in _imported_modules(trees["statejax._state"]) if m.startswith("statejax")}
    assert state <= below | {"statejax._tracing"}
