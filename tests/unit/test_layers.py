"""Imports flow one way: no circles in ``statestore/`` and ``api/``, and no library
module imports the package root.

The graph is read from the source (every ``import`` / ``from`` statement in a file,
those under ``if TYPE_CHECKING:`` and inside functions included), not from what
Python happens to load: a circle hidden behind a lazy import is still a type or a
rule in the wrong module. ``api/`` is imported as ``statestore.api`` (``statestore/api``
links to it), so ``api/x.py`` is the module ``statestore.api.x``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOT = "statestore"
# Front-ends: they use the public API the root re-exports, and nothing below them
# imports them (the library is theirs, not the other way round).
FRONT_ENDS = ("statestore.api", "statestore.cli")


def _module_name(path: Path, base: Path, prefix: list[str]) -> str:
    parts = prefix + list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    modules: dict[str, Path] = {}
    for path in (REPO / "statestore").rglob("*.py"):
        if path.relative_to(REPO / "statestore").parts[0] == "api":
            continue  # the link to api/, read from there below
        modules[_module_name(path, REPO, [])] = path
    for path in (REPO / "api").rglob("*.py"):
        modules[_module_name(path, REPO / "api", [ROOT, "api"])] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(module imported, line) for every import statement of module *name* that names
    a module of the package (``from pkg import sub`` imports ``pkg.sub`` when it is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target in modules:
                yield target, node.lineno
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    yield f"{target}.{alias.name}", node.lineno


def _graph() -> tuple[dict[str, dict[str, int]], dict[str, Path]]:
    """module -> {module it imports: first line that does}, and the module paths."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for target, line in _imports(name, path, modules):
            if target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph, modules


def _circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _is_front_end(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FRONT_ENDS)


def test_the_import_graph_has_no_circles() -> None:
    """No group of modules imports each other, counting every import statement."""
    graph, modules = _graph()
    report = []
    for circle in _circles(graph):
        lines = [
            f"  {a} -> {b} ({modules[a].relative_to(REPO)}:{graph[a][b]})"
            for a in circle
            for b in sorted(graph[a])
            if b in circle
        ]
        report.append(f"circle of {len(circle)}: {', '.join(circle)}\n" + "\n".join(lines))
    assert not report, "import circles:\n" + "\n".join(report)


def test_the_circle_finder_finds_a_circle() -> None:
    """The component search reports a three-module loop and leaves a chain alone."""
    graph: dict[str, dict[str, int]] = {
        "a": {"b": 1},
        "b": {"c": 1},
        "c": {"a": 1, "d": 1},
        "d": {},
    }
    assert _circles(graph) == [["a", "b", "c"]]
    assert _circles({"a": {"b": 1}, "b": {}}) == []


def test_no_library_module_imports_the_package_root() -> None:
    """Library modules import the module that defines a name, never ``statestore`` itself;
    the front-ends (api, cli) may use the root's public names because the root never
    reaches them."""
    graph, modules = _graph()
    offenders = [
        f"{modules[name].relative_to(REPO)}:{edges[ROOT]}"
        for name, edges in sorted(graph.items())
        if ROOT in edges and name != ROOT and not _is_front_end(name)
    ]
    assert offenders == [], f"library modules importing the package root: {offenders}"
    reached: set[str] = set()
    todo = [ROOT]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(graph[name])
    assert sorted(n for n in reached if _is_front_end(n)) == []
