"""Reading a program: the main file, its imports (block libraries), and the choice of network.

Requires: a path or source text. Guarantees: every reachable file parsed once, import cycles
and duplicate block definitions reported, and one network chosen.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import syntax as S
from .errors import Diagnostic, DiagnosticBag, NetdslError, SemanticError, UsageError
from .ops import MERGES, OPS

MAX_IMPORT_DEPTH = 32
_EMPTY = '""'  # an empty import path, as messages show it


@dataclass(frozen=True)
class Program:
    main: S.Module
    blocks: dict[str, S.BlockDef]
    source_hash: str  # sha256 over every file's text, in load order
    files: tuple[str, ...] = ()  # the files read (real paths), in load order; none for source given as text
    # the imported files (as diagnostics show them) -> the `import` lines that brought them in, innermost first,
    # as notes: ("imported from lib/a.net:1", "imported from main.net:2")
    imported_from: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # with ``keep_going``: the errors found while loading (a missing import, an error in an imported file)
    problems: tuple[Diagnostic, ...] = ()

    @property
    def incomplete(self) -> bool:
        """Whether some import could not be loaded, so blocks it may define are missing."""
        return bool(self.problems)

    def with_import_notes(self, d: Diagnostic) -> Diagnostic:
        """``d`` with the notes that say how its file was imported, when it is in an imported file."""
        notes = self.imported_from.get(d.span.path, ()) if d.span is not None else ()
        if not notes or any(n.startswith("imported from ") for n in d.notes):
            return d
        return replace(d, notes=(*d.notes, *notes))


def load_program(source: str, path: str, base_dir: str | None, *, keep_going: bool = False) -> Program:
    """Parse ``source`` (from ``path``) and everything it imports, relative to ``base_dir``.

    Raises the errors found (a syntax error of the main file at once, the others together) unless
    ``keep_going``: then an error that leaves the main file readable (a missing import, an error inside an
    imported file) is returned in :attr:`Program.problems`, so that the checks of the main file still run.
    Every diagnostic about an imported file carries "imported from FILE:LINE" notes."""
    bag = DiagnosticBag()
    imported_from: dict[str, tuple[str, ...]] = {}
    hasher = hashlib.sha256()
    blocks: dict[str, S.BlockDef] = {}
    loaded: set[str] = set()
    shown_as: dict[str, str] = {}  # file key -> path as diagnostics show it
    order: list[str] = []  # the files hashed, in order

    def visit(text: str, shown: str, directory: str | None, stack: tuple[str, ...]) -> S.Module | None:
        shown_as[stack[-1]] = shown
        order.append(stack[-1])
        hasher.update(text.encode("utf-8"))
        notes = imported_from.get(shown, ())
        try:
            module = S.parse(text, shown, quote=directory is None or shown.endswith(".net"))
        except NetdslError as exc:
            if not notes:  # the main file: nothing else can be checked
                raise
            for d in exc.diagnostics:
                bag.error(d.message, d.span, (*d.notes, *notes))
            return None
        for imp in module.imports:
            if directory is None:
                bag.error("`import` needs a file on disk: this source was given as text", imp.span, notes)
                continue
            target, problem = _import_target(directory, imp.path)
            if problem is not None:
                bag.error(f"cannot import {imp.path or _EMPTY}: {problem}", imp.span, notes)
                continue
            key = os.path.realpath(target)
            if key in stack:
                cycle = " -> ".join(shown_as[k] for k in (*stack[stack.index(key):], key))
                bag.error(f"import cycle: {cycle}", imp.span, notes)
                continue
            if key in loaded:
                continue
            if len(stack) >= MAX_IMPORT_DEPTH:
                bag.error("imports nest too deep", imp.span, notes)
                continue
            try:
                data = S.read_source_bytes(key)  # the resolved path: what was checked is what is read
            except S.UnreadableSource as exc:
                what = exc.reason
                if exc.missing:
                    where = "" if _shown(target) == imp.path else f" {_shown(target)}"
                    what += f"{where} (an import is relative to the directory of the file that imports it)"
                bag.error(f"cannot import {imp.path}: {what}", imp.span, notes)
                continue
            loaded.add(key)
            imported_from[_shown(target)] = (f"imported from {shown}:{imp.span.line}", *notes)
            try:
                text_of = S.decode_source(data, _shown(target))
            except NetdslError as exc:  # not UTF-8
                for d in exc.diagnostics:
                    bag.error(d.message, d.span, (*d.notes, *imported_from[_shown(target)]))
                continue
            visit(text_of, _shown(target), os.path.dirname(target), (*stack, key))
        for b in module.blocks:
            if b.name in blocks:
                bag.error(f"block `{b.name}` is defined twice (first at {blocks[b.name].span})", b.span, notes)
            elif b.name in OPS or b.name in MERGES:
                bag.error(f"block `{b.name}` has the name of a built-in layer", b.span, notes)
            else:
                blocks[b.name] = b
            _check_params(b, bag, notes)
        for n in module.networks:
            _check_params(n, bag, notes)
        return module

    key = os.path.realpath(path) if base_dir is not None else path
    loaded.add(key)
    main = visit(source, path, base_dir, (key,))
    if not keep_going:
        bag.raise_if_errors(SemanticError)
    return Program(main, blocks, hasher.hexdigest(), tuple(order) if base_dir is not None else (), imported_from,
                   tuple(bag.errors))


def _import_target(directory: str, name: str) -> tuple[str, str | None]:
    """The path an ``import "name"`` in a file of ``directory`` reads, or why it may not be read.

    An import names a ``.net`` file inside the importing file's directory or below it, symbolic links
    resolved: nothing outside that tree is ever opened, and no other kind of file is read (an error about it
    would quote it). Decided from the path alone, so a refusal says nothing about what is on the disk there.
    """
    if not name.strip():
        return "", "the path is empty (expected e.g. `import \"lib/blocks.net\"`)"
    target = os.path.normpath(os.path.join(directory, name))
    root = os.path.realpath(directory)
    real = os.path.realpath(target)
    if os.path.isabs(name) or not _inside(real, root) or not _inside(os.path.abspath(target),
                                                                       os.path.abspath(directory)):
        return target, (f"it is outside the directory of the importing file ({_shown(root)}); an import may only "
                        f"name a file in that directory or below it")
    if not name.endswith(".net") or not real.endswith(".net"):
        return target, "not a .net file (only .net sources can be imported)"
    return target, None


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives
        return False


def _check_params(b: S.BlockDef, bag: DiagnosticBag, notes: tuple[str, ...] = ()) -> None:
    seen = set()
    for p in b.params:
        if p.name in seen:
            bag.error(f"parameter `{p.name}` is declared twice", p.span, notes)
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
    """(source text, path to show, directory for imports) from a path or a source string.

    A path-like object is a path. A string is source text when it spans lines or holds a `{` (every network
    and block has a body); otherwise it names a file, which must then exist.
    """
    if isinstance(path_or_source, os.PathLike) or (
            isinstance(path_or_source, str) and "\n" not in path_or_source and path_or_source.strip() and
            (path_or_source.endswith(".net") or os.path.exists(path_or_source) or "{" not in path_or_source)):
        p = Path(path_or_source)
        shown = str(path_or_source)
        text = S.read_source(p, quote=shown.endswith(".net"))
        return text, shown, str(p.resolve().parent)
    return str(path_or_source).removeprefix("\ufeff"), "<string>", None
