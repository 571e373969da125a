"""The client's modules import one another without a circle, lazy and type-checking imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import initium.client

PACKAGE = "initium.client"
ROOT = Path(initium.client.__file__).parent


def _module_name(path: Path) -> str:
    return PACKAGE if path.name == "__init__.py" else f"{PACKAGE}.{path.stem}"


def _imported(node: ast.AST, modules: set[str], here: str) -> set[str]:
    """The package's modules one import statement names (`from initium.client import _x` names _x)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: resolved against this module's package
            base = ".".join([PACKAGE, *([base] if base else [])])
        # `from initium.client import _x` names the module _x; `from initium.client import Client` the package.
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    else:
        return set()
    found = set()
    for name in names:
        # The longest known module the name starts with: `initium.client._x.f` is _x, `initium.client` the package.
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != here:
            found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its body (module level, in functions,
    under TYPE_CHECKING): any of them can close a circle."""
    paths = {_module_name(p): p for p in sorted(ROOT.glob("*.py"))}
    modules = set(paths)
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[name] = set().union(*(_imported(node, modules, name) for node in ast.walk(tree)))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle as [a, b, ..., a], or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_clients_modules_import_without_a_circle() -> None:
    graph = import_graph()
    assert f"{PACKAGE}._base" in graph and graph[PACKAGE]  # the walk saw the package
    cycle = find_cycle({name: deps - {PACKAGE} for name, deps in graph.items()})
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])
    importers = sorted(name for name, deps in graph.items() if PACKAGE in deps)
    assert not importers, f"{importers} import the package itself, which imports every module"


def test_the_check_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
