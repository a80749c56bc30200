"""The compiler's modules import each other in one direction only: no cycle, not even through an import inside a
function or under ``TYPE_CHECKING``, and the op definitions never reach up to the graph or the lowering."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "netdsl"
CORE = ("netdsl.errors", "netdsl.ops", "netdsl.graph", "netdsl.weights", "netdsl.lower", "netdsl.analysis",
        "netdsl.elaborate", "netdsl.syntax", "netdsl.loader")


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the netdsl modules it imports anywhere in its text. ``from . import x`` of a submodule ``x``
    is an edge to ``x`` only."""
    modules = _modules()
    edges = {}
    for name, (path, is_package) in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".") if is_package else name.split(".")[:-1]
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules}
                targets |= subs
                if len(subs) < len(node.names):
                    targets.add(base)
        edges[name] = {t for t in targets if t in modules and t != name}
    return edges


def _in(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _cycle(edges: dict[str, set[str]], nodes: set[str]) -> list[str] | None:
    """One import cycle among ``nodes``, as a path, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(edges[v] & nodes):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        state[v] = 2
        path.pop()
        return None

    for v in sorted(nodes):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_the_import_graph_sees_deferred_and_type_checking_imports():
    edges = import_graph()
    assert "netdsl.ops.base" in edges["netdsl.ops.windowed"]
    assert "netdsl.weights" in edges["netdsl.lower"]
    assert "netdsl.syntax" in edges["netdsl.elaborate.elaborator"]  # `from .. import syntax as S`
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}, {"a", "b", "c"}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}, {"a", "b"}) is None


def test_no_import_cycle_among_the_compiler_modules():
    edges = import_graph()
    core = {m for m in edges if _in(m, CORE)}
    cycle = _cycle(edges, core)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_ops_never_import_the_graph_or_the_lowering():
    edges = import_graph()
    for module in (m for m in edges if _in(m, ("netdsl.ops",))):
        assert not {e for e in edges[module] if not _in(e, ("netdsl.ops",))}, module
