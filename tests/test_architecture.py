"""The import graph of the netdsl package, read from the source (ast) rather than from a running process.

Every import counts, wherever it is written: at module level, inside a function (a deferred import) or under
``if TYPE_CHECKING:`` (a type-only import), as do ``importlib.import_module("netdsl....")`` calls with a
literal name. On that graph:

* there is no import cycle between netdsl's modules;
* no library module imports a command-line module (``netdsl.cli`` and everything under or beside it named
  ``cli*``); the command line sits on top of the library, never under it;
* the runtime side (``netdsl.session`` and ``netdsl.engines``) loads without the compiler: importing it does
  not import ``netdsl.lower`` or ``netdsl.elaborate`` (checked in a fresh interpreter).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, cli_env

PACKAGE = REPO / "netdsl"
COMPILER = ("netdsl.lower", "netdsl.elaborate")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(importer: str, level: int, module: str | None) -> str:
    """The absolute name of ``from <dots><module> import ...`` written in ``importer``."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _target(name: str) -> str | None:
    """The netdsl module an import of ``name`` runs: the module itself, or the nearest enclosing one
    (``from netdsl.x import attribute``); None outside the package."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(name: str, source: str | None = None) -> dict[str, int]:
    """netdsl modules imported anywhere in module ``name`` (its file, or ``source``) -> the line of the first
    such import."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source, str(path))
    found: dict[str, int] = {}

    def add(target: str | None, line: int) -> None:
        if target and target != name and target.startswith("netdsl"):
            found.setdefault(target, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(_target(alias.name), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, node.level, node.module)
            for alias in node.names:  # `from . import cli_weights` imports a module, not an attribute
                full = f"{base}.{alias.name}" if base else alias.name
                add(full if full in MODULES else _target(base), node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            add(_target(node.args[0].value), node.lineno)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _describe(component: list[str]) -> str:
    members = set(component)
    edges = [f"  {a} -> {b} ({MODULES[a].relative_to(REPO)}:{line})"
             for a in component for b, line in sorted(GRAPH[a].items()) if b in members]
    return "cycle among " + ", ".join(component) + ":\n" + "\n".join(edges)


def is_cli(name: str) -> bool:
    return name == "netdsl.__main__" or name.rpartition(".")[2].startswith("cli") or ".cli." in name + "."


# ----------------------------------------------------------------------------- the checker checks
def test_the_graph_is_read_from_the_source():
    assert "netdsl.network" in MODULES and "netdsl.session" in MODULES and len(MODULES) >= 15
    assert "netdsl.network" in GRAPH["netdsl"]  # `from .network import Network, load`
    assert any(GRAPH[m] for m in MODULES if is_cli(m))


def test_cycle_finder_finds_deferred_and_type_only_cycles():
    toy = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}, "e": {}}
    assert _cycles(toy) == [["a", "b", "c"]]
    assert _cycles({"a": {"b": 1}, "b": {}}) == []


def test_imports_inside_functions_and_type_checking_blocks_count():
    source = ("from __future__ import annotations\nfrom typing import TYPE_CHECKING\n"
              "if TYPE_CHECKING:\n    from .network import Network\n"
              "def f():\n    from . import lower\n    import netdsl.weights\n"
              "def g():\n    importlib.import_module('netdsl.session')\n    import numpy\n")
    assert imports_of("netdsl.graph", source) == {"netdsl.network": 4, "netdsl.lower": 6, "netdsl.weights": 7,
                                                   "netdsl.session": 9}


# ----------------------------------------------------------------------------- the rules
def test_no_import_cycles():
    cycles = _cycles(GRAPH)
    assert not cycles, "\n\n".join(_describe(c) for c in cycles)


def test_library_code_does_not_import_the_command_line():
    wrong = [f"{MODULES[m].relative_to(REPO)}:{line}: {m} imports {target}"
             for m in MODULES if not is_cli(m) for target, line in sorted(GRAPH[m].items()) if is_cli(target)]
    assert not wrong, "\n".join(wrong)


RUNTIME = ["netdsl.session", "netdsl.engines"] + sorted(m for m in MODULES if m.startswith("netdsl.engines."))


@pytest.mark.parametrize("module", RUNTIME)
def test_the_runtime_loads_without_the_compiler(module):
    code = (f"import importlib, json, sys\nimportlib.import_module({module!r})\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('netdsl'))))")
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert module in loaded
    assert not set(COMPILER) & set(loaded), f"importing {module} loads {sorted(set(COMPILER) & set(loaded))}"


def test_ops_import_nothing_above_them():
    """Ops are the bottom of the compiler: they lower through a protocol and never import the graph, the
    lowering or anything else of netdsl beyond the errors."""
    ops = [m for m in MODULES if m == "netdsl.ops" or m.startswith("netdsl.ops.")]
    assert len(ops) > 3
    wrong = [f"{m} imports {t}" for m in ops for t in GRAPH[m]
             if not (t == "netdsl.ops" or t.startswith("netdsl.ops.") or t == "netdsl.errors")]
    assert not wrong, "\n".join(wrong)


def test_check_loads_no_runtime_command():
    """`netdsl check` loads the compile commands only: no other command module, no numpy."""
    code = ("import sys, netdsl.cli as c; rc = c.main(['check', '-q', 'networks/lenet5.net']); "
            "print(rc, sorted(m for m in sys.modules if m.startswith('netdsl.cli.') or m == 'numpy'))")
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "['netdsl.cli.common',", "'netdsl.cli.compile']"]
