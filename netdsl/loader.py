"""Reading a program: the main file, its imports (block libraries), and the choice of network.

Requires: a path or source text. Guarantees: every reachable file parsed once, import cycles
and duplicate block definitions reported, and one network chosen.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from . import syntax as S
from .errors import DiagnosticBag, SemanticError, UsageError
from .ops import MERGES, OPS

MAX_IMPORT_DEPTH = 32


@dataclass(frozen=True)
class Program:
    main: S.Module
    blocks: dict[str, S.BlockDef]
    source_hash: str  # sha256 over every file's text, in load order


def load_program(source: str, path: str, base_dir: str | None) -> Program:
    """Parse ``source`` (from ``path``) and everything it imports, relative to ``base_dir``."""
    bag = DiagnosticBag()
    hasher = hashlib.sha256()
    blocks: dict[str, S.BlockDef] = {}
    loaded: set[str] = set()
    shown_as: dict[str, str] = {}  # file key -> path as diagnostics show it

    def visit(text: str, shown: str, directory: str | None, stack: tuple[str, ...]) -> S.Module:
        shown_as[stack[-1]] = shown
        hasher.update(text.encode("utf-8"))
        module = S.parse(text, shown)
        for imp in module.imports:
            if directory is None:
                bag.error("`import` needs a file on disk: this source was given as text", imp.span)
                continue
            target = os.path.normpath(os.path.join(directory, imp.path))
            key = os.path.realpath(target)
            if key in stack:
                cycle = " -> ".join(shown_as[k] for k in (*stack[stack.index(key):], key))
                bag.error(f"import cycle: {cycle}", imp.span)
                continue
            if key in loaded:
                continue
            if len(stack) >= MAX_IMPORT_DEPTH:
                bag.error("imports nest too deep", imp.span)
                continue
            if not os.path.isfile(target):
                what = "a directory, not a file" if os.path.isdir(target) else "no such file"
                where = "" if _shown(target) == imp.path else f" {_shown(target)}"
                bag.error(f"cannot import {imp.path}: {what}{where} (an import is relative to the directory of "
                          f"the file that imports it)", imp.span)
                continue
            loaded.add(key)
            visit(S.read_source(target), _shown(target), os.path.dirname(target), (*stack, key))
        for b in module.blocks:
            if b.name in blocks:
                bag.error(f"block `{b.name}` is defined twice (first at {blocks[b.name].span})", b.span)
            elif b.name in OPS or b.name in MERGES:
                bag.error(f"block `{b.name}` has the name of a built-in layer", b.span)
            else:
                blocks[b.name] = b
            _check_params(b, bag)
        for n in module.networks:
            _check_params(n, bag)
        return module

    key = os.path.realpath(path) if base_dir is not None else path
    loaded.add(key)
    main = visit(source, path, base_dir, (key,))
    bag.raise_if_errors(SemanticError)
    return Program(main, blocks, hasher.hexdigest())


def _check_params(b: S.BlockDef, bag: DiagnosticBag) -> None:
    seen = set()
    for p in b.params:
        if p.name in seen:
            bag.error(f"parameter `{p.name}` is declared twice", p.span)
        seen.add(p.name)


def choose_network(program: Program, name: str | None) -> S.BlockDef:
    nets = program.main.networks
    if name is not None:
        for n in nets:
            if n.name == name:
                return n
        have = ", ".join(n.name for n in nets) or "none"
        raise UsageError(f"{program.main.path}: no network named `{name}` (networks in this file: {have})")
    if not nets:
        have = ", ".join(f"`{b.name}`" for b in program.main.blocks)
        raise SemanticError(f"{program.main.path}: defines no `network`" + (f" (only blocks: {have})" if have else
                            " (expected e.g. `network name { input image: 3x224x224 ... }`)"))
    if len(nets) > 1:
        have = ", ".join(n.name for n in nets)
        raise UsageError(f"{program.main.path}: holds several networks ({have}); pick one with --network NAME")
    return nets[0]


def _shown(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def read(path_or_source: str | os.PathLike) -> tuple[str, str, str | None]:
    """(source text, path to show, directory for imports) from a path or a source string."""
    if isinstance(path_or_source, os.PathLike) or (
            isinstance(path_or_source, str) and "\n" not in path_or_source and
            (path_or_source.endswith(".net") or os.path.exists(path_or_source))):
        p = Path(path_or_source)
        text = S.read_source(p)
        return text, str(path_or_source), str(p.resolve().parent)
    return str(path_or_source), "<string>", None
