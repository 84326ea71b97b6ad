"""The package map holds: no import cycle anywhere in src/, and dependencies point down the layers."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "telemetryd"

LAYERS: dict[str, int] = {
    "model": 0,
    "slices": 0,
    "config": 1,
    "secrets": 2,
    "histogram": 2,
    "heap": 2,
    "logs": 2,
    "sdnotify": 2,
    "httpguard": 2,
    "templating": 2,
    "probes": 3,
    "reachability": 4,
    "link": 5,
    "cameras": 6,
    "alarm": 6,
    "history": 7,
    "report": 8,
    "export": 9,
    "school_responder": 9,
    "sim": 9,
    "daemon": 10,
    "commands": 10,
    "cli": 11,
    "__main__": 12,
}
"""Top-level module or package → layer: imports go to the same layer or below (docs/architecture.md)."""


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path, known: set[str]) -> Iterator[str]:
    """Every telemetryd module `module` imports, at any depth in the file (TYPE_CHECKING and function level too)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                yield submodule if submodule in known else target


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: {t for t in _imports(m, p, known) if t != m and t in known} for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
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


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_cycle_finder_finds_a_cycle() -> None:
    """The cycle finder itself reports a two-module cycle and a three-module one, and nothing in a DAG."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_in_src() -> None:
    """No module of src/telemetryd reaches itself through imports, TYPE_CHECKING ones included."""
    graph = _graph()
    assert len(graph) > 50  # the walk found the package
    assert _cycles(graph) == []


def test_dependencies_point_down_the_layers() -> None:
    """A module imports only its own layer or lower ones: probes know nothing of state, export or the daemon."""
    graph = _graph()
    tops = {_top(m) for m in graph} - {"__init__"}
    assert tops <= set(LAYERS), f"modules with no layer: {sorted(tops - set(LAYERS))}"
    upward = [
        f"{source} -> {target}"
        for source, targets in graph.items()
        for target in targets
        if _top(source) != "__init__" and _top(target) != "__init__" and LAYERS[_top(target)] > LAYERS[_top(source)]
    ]
    assert upward == []


def test_no_collector_imports_the_daemon() -> None:
    """The exporter reads domain objects: nothing under export/ imports telemetryd.daemon."""
    graph = _graph()
    assert not [
        m for m, targets in graph.items() if m.startswith("telemetryd.export") and "telemetryd.daemon" in targets
    ]
