"""The layout of the package: no import cycles, no library module importing the CLI, and the runtime
(sessions, engines, benchmarking, agreement, doctor) importable without the compiler."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "netdsl"
# Modules that must sit on no import cycle. The compiler core (graph, ops, lower, weights) is not listed
# while lowering and weights still reach each other.
ACYCLIC = ("netdsl.cli", "netdsl.network", "netdsl.session", "netdsl.api", "netdsl.engines", "netdsl.passes",
           "netdsl.optimize", "netdsl.precision", "netdsl.benchmark", "netdsl.agreement", "netdsl.doctor",
           "netdsl.machine", "netdsl.lazy")
COMPILER = ("netdsl.lower", "netdsl.elaborate", "netdsl.network", "netdsl.syntax", "netdsl.loader")


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> netdsl modules it imports, counting every import statement (deferred and type-only ones
    too) and the packages an import runs (``import netdsl.engines.ort`` runs ``netdsl.engines`` first)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets.update(f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target
                               for a in node.names)
        deps = set()
        for t in targets:
            parts = t.split(".")
            deps.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1))
                        if p in modules and p != name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_deferred_imports():
    graph = import_graph()
    assert "netdsl.session" in graph["netdsl.network"]  # Network.session imports it inside the method
    assert "netdsl.engines" in graph["netdsl.engines.ort"]


def test_no_import_cycle_through_the_cli_runtime_or_passes():
    on_cycles = {m for component in cycles(import_graph()) for m in component}
    assert sorted(m for m in on_cycles if m.startswith(ACYCLIC)) == []


def test_no_library_module_imports_the_cli():
    graph = import_graph()
    offenders = sorted((m, d) for m, deps in graph.items() for d in deps
                       if d.startswith("netdsl.cli") and not m.startswith("netdsl.cli") and m != "netdsl.__main__")
    assert offenders == []


def test_the_runtime_loads_without_the_compiler():
    code = ("import sys, netdsl.session, netdsl.engines.ort, netdsl.benchmark, netdsl.agreement, netdsl.doctor; "
            f"print(sorted(m for m in sys.modules if m in {COMPILER!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_check_loads_no_runtime_command():
    code = ("import sys, netdsl.cli as c; rc = c.main(['check', '-q', 'networks/lenet5.net']); "
            "print(rc, sorted(m for m in sys.modules if m.startswith('netdsl.cli.') or m == 'numpy'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent)
    assert out.stdout.split() == ["0", "['netdsl.cli.common',", "'netdsl.cli.compile']"]
