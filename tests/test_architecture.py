"""The package's import graph, read from the source: no circle, mlflow behind one door, arrows pointing down.

Every import counts, also those made inside functions (nbmlops imports heavy things lazily, and a lazy import
is still an arrow between two rooms).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nbmlops"
BACKEND = "nbmlops.backend"

#: the rooms of the house, lowest first; a module may import its own room and the rooms below it
LEVELS: dict[str, int] = {
    "nbmlops.exceptions": 0,
    "nbmlops.redact": 0,
    "nbmlops.shorten": 0,
    "nbmlops.openers": 1,  # callbacks the package fills in for the rooms that must call up
    "nbmlops.config": 1,
    "nbmlops.journal": 1,
    "nbmlops.data": 2,
    "nbmlops.backend": 3,
    "nbmlops.tracking": 4,
    "nbmlops.runner": 5,
    "nbmlops.registry": 6,  # promotion goes through the runner's gates
    "nbmlops.serving": 7,  # serves registered versions, loaded as the registry loads them
    "nbmlops.widgets": 8,
    "nbmlops.server": 8,
    "nbmlops.cli": 8,
    "nbmlops.magics": 9,  # the magics show the dashboard's widgets
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The ids of the import nodes inside ``if TYPE_CHECKING:`` blocks (no arrow at run time)."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return hidden


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """Every module ``path`` imports at run time, anywhere in it: ``from x import y`` counts ``x.y`` when that
    is a module, else ``x``."""
    tree = ast.parse(path.read_text(), str(path))
    hidden = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                source = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source)
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the nbmlops modules it imports; external imports kept under their top-level name."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for imported in _imports(path, name, set(modules)):
            if imported.split(".")[0] != "nbmlops":
                edges.add(imported.split(".")[0])
            elif imported in modules and imported != name:
                edges.add(imported)
        graph[name] = edges
    return graph


def _room(module: str) -> str:
    for room in sorted(LEVELS, key=len, reverse=True):
        if module == room or module.startswith(room + "."):
            return room
    return module


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_imports_inside_functions():
    graph = _graph()
    assert "nbmlops.config" in graph["nbmlops.cli"]  # cli imports its settings inside its commands
    assert "mlflow" in graph[f"{BACKEND}.store"]


def test_no_import_circle_between_modules():
    assert _cycles(_graph()) == []


def test_mlflow_is_imported_only_in_the_backend():
    outside = sorted(
        name for name, edges in _graph().items()
        if "mlflow" in edges and not (name == BACKEND or name.startswith(BACKEND + "."))
    )
    assert outside == []


def test_every_module_lives_in_a_room():
    assert sorted(name for name in _graph() if name != "nbmlops" and _room(name) not in LEVELS) == []


def test_lower_rooms_never_import_higher_ones():
    wrong = []
    for name, edges in _graph().items():
        if name == "nbmlops":
            continue  # the package's entry points reach everything, lazily
        room = _room(name)
        for target in edges:
            if not target.startswith("nbmlops.") or target == "nbmlops":
                continue
            other = _room(target)
            if other == room:
                continue
            if LEVELS[other] > LEVELS[room] or (LEVELS[other] == LEVELS[room] and other != room):
                wrong.append(f"{name} -> {target}")
    assert sorted(wrong) == []
