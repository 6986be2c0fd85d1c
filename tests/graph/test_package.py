"""The graph package: its public face (`statejax.graph`) and the layer rules of its
private modules (shared/DESIGN.md, section 2)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from statejax import graph

SRC = Path(__file__).parents[2] / "src" / "statejax"
GRAPH = SRC / "graph"

PUBLIC_NAMES = [
    "FlattedDict",
    "GraphDef",
    "MAX_INT",
    "MergeContext",
    "Module",
    "NestedDict",
    "Node",
    "NodeEdge",
    "NodeSpec",
    "NodeStates",
    "PytreeEdge",
    "PytreeType",
    "RefMap",
    "SplitContext",
    "StateEdge",
    "StateLeafEdge",
    "StateMapping",
    "StateTree",
    "Static",
    "StaticEdge",
    "clone",
    "flatten",
    "graph_to_tree",
    "graphdef",
    "iter_leaf",
    "iter_node",
    "iter_states",
    "merge_context",
    "nodes",
    "pop_states",
    "register_graph_node_type",
    "split_context",
    "states",
    "tree_to_graph",
    "treefy_merge",
    "treefy_split",
    "treefy_states",
    "unflatten",
    "update_states",
]

# What the graph layer may import from statejax: the state and filter layers (and the
# error types), never the registry, the transforms or the public face.
LOWER_LAYERS = {
    "statejax._errors",
    "statejax._new_states",
    "statejax._state",
    "statejax._tracing",
    "statejax.filters",
}


def _statejax_imports(path: Path) -> set[str]:
    """Every statejax module `path` imports, anywhere in it (TYPE_CHECKING blocks too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == "statejax" or m.startswith("statejax.")}


def test_the_public_face_exports_exactly_the_public_names() -> None:
    assert sorted(graph.__all__) == PUBLIC_NAMES
    # (Names such as `@py_builtins` are pytest's assertion rewriting, not the package's.)
    public = sorted(n for n in dir(graph) if n.isidentifier() and not n.startswith("_"))
    assert public == PUBLIC_NAMES
    assert graph.Node is graph.Module and graph.FlattedDict is graph.StateMapping
    # The graph reference page renders each public name once.
    page = (SRC.parents[1] / "docs" / "reference" / "graph.md").read_text()
    listed = re.search(r"::: statejax\.graph\n    options:\n      members: \[(.*)\]", page)
    assert listed is not None, "docs/reference/graph.md: no members list under ::: statejax.graph"
    assert sorted(listed.group(1).split(", ")) == PUBLIC_NAMES


def test_graph_modules_import_only_lower_layers_and_form_no_circle() -> None:
    modules = {p.stem: p for p in GRAPH.glob("*.py")}
    assert set(modules) - {"__init__"} and all(m.startswith("_") for m in modules)
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        imports = _statejax_imports(path)
        inside = {
            m.removeprefix("statejax.graph.") for m in imports if m.startswith("statejax.graph.")
        }
        outside = imports - {f"statejax.graph.{m}" for m in inside}
        assert outside <= LOWER_LAYERS, f"graph/{name}.py imports {sorted(outside - LOWER_LAYERS)}"
        assert inside <= set(modules) - {"__init__"}, f"graph/{name}.py imports {inside}"
        edges[name] = inside
    # No circle: repeatedly remove the modules that import no remaining module.
    remaining = dict(edges)
    while remaining:
        ready = [m for m, deps in remaining.items() if not deps & set(remaining)]
        assert ready, f"import circle among graph modules: {sorted(remaining)}"
        for m in ready:
            del remaining[m]


def test_other_modules_import_graph_names_through_the_public_face() -> None:
    private = re.compile(r"^statejax\.graph\._")
    offenders = [
        f"{path.relative_to(SRC)}: {module}"
        for path in SRC.rglob("*.py")
        if GRAPH not in path.parents
        for module in _statejax_imports(path)
        if private.match(module)
    ]
    assert offenders == []
