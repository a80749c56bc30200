"""`netdsl ops`: the ops of the language, from the op table itself (netdsl.ops OPS and MERGES, and the composites
of netdsl.elaborate.composites): a line each, or one op in full.

Every syntax line is generated from the op's options, so the listing cannot drift from what the parser and the
op table accept. Loads neither onnx nor onnxruntime.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from ..errors import NetdslError
from . import EXIT_OK
from .common import print_json

# the value a keyword option takes, by kind, as the syntax line shows it
_VALUE = {"int": "N", "float": "X", "pair": "N|HxW", "pad": "N|HxW|same", "bool": "true|false", "ref": "@REF"}
_DOCS = {"layer": "docs/language.md §12 (layer reference)", "merge": "docs/language.md §9 (tensor references "
         "and merges) and §12 (merges)", "composite": "docs/language.md §8 (groups and composites)"}


@dataclass(frozen=True)
class Entry:
    """One op as `netdsl ops` shows it."""

    name: str
    kind: str  # layer, merge or composite
    aliases: tuple[str, ...]
    syntax: str
    meaning: str
    options: tuple[dict, ...]
    onnx: tuple[str, ...]
    docs: str

    def as_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "aliases": list(self.aliases), "syntax": self.syntax,
                "meaning": self.meaning, "options": list(self.options), "onnx": list(self.onnx), "docs": self.docs}


def syntax_line(op) -> str:
    """``conv OUT KERNEL [/STRIDE] [pad N|HxW|same] ...``: how a layer of ``op`` is written, from its options."""
    parts = [op.name]
    for opt in op.options:
        if opt.positional:
            word = opt.name.upper()
            parts.append(word if opt.required else f"[{word}]")
        elif opt.name == "stride":
            parts.append("[/STRIDE]")
        elif opt.kind == "flag":
            parts.append(f"[{opt.name}]")
        else:
            value = _VALUE.get(opt.kind, opt.name.upper())
            parts.append(f"{opt.name} {value}" if opt.required else f"[{opt.name} {value}]")
    return " ".join(parts)


def _meaning(op) -> str:
    """The op's summary without the syntax it may spell out (``2-D convolution: conv OUT ...``)."""
    text = op.summary.strip()
    for name in (op.name, *op.aliases):
        head, sep, _ = text.partition(f": {name}")
        if sep and head:
            return head
    return text or op.name


def _default(opt) -> object:
    if opt.kind == "flag":
        return False
    if isinstance(opt.default, tuple):
        return list(opt.default)
    return opt.default


def entries() -> list[Entry]:
    """Every op of the table (an op under its aliases once), then the merges, then the composites."""
    from ..elaborate.composites import COMPOSITES
    from ..ops import MERGES, OPS

    out: list[Entry] = []
    seen: set[int] = set()
    for op in OPS.values():
        if id(op) in seen:
            continue
        seen.add(id(op))
        options = tuple({"name": o.name, "kind": o.kind, "default": _default(o), "positional": o.positional,
                         "required": o.required, "aliases": list(o.aliases), "help": o.help} for o in op.options)
        out.append(Entry(op.name, "layer", tuple(op.aliases), syntax_line(op), _meaning(op), options,
                         tuple(op.onnx_ops), _DOCS["layer"]))
    for op in MERGES.values():
        out.append(Entry(op.name, "merge", tuple(op.aliases), f"{op.name}(@a, @b, ...)", _meaning(op), (),
                         tuple(op.onnx_ops), _DOCS["merge"]))
    for kind, expand in COMPOSITES.items():
        doc = " ".join((expand.__doc__ or kind).split("\n\n")[0].split()).replace("``", "`")
        first = doc.split(". ")[0].split(" (")[0].rstrip(".")
        out.append(Entry(kind, "composite", (), f"{kind}< BRANCH | BRANCH ... >", first, (), (), _DOCS["composite"]))
    return out


def find(name: str, table: list[Entry]) -> Entry | None:
    for e in table:
        if name == e.name or name in e.aliases:
            return e
    return None


def cmd_ops(args: argparse.Namespace) -> int:
    table = entries()
    if args.name is None:
        if args.json:
            print_json([e.as_json() for e in table])
            return EXIT_OK
        width = max(len(e.name) for e in table)
        for kind, title in (("layer", "layers"), ("merge", "merges (of tensor references)"),
                            ("composite", "composites")):
            print(f"{title}:")
            for e in table:
                if e.kind == kind:  # the name and its meaning, then how it is written when it takes arguments
                    print(f"  {e.name:<{width}}  {e.meaning}")
                    if e.syntax != e.name:
                        print(f"  {'':<{width}}  {e.syntax}")
        print("`netdsl ops NAME` shows one op in full.")
        return EXIT_OK
    entry = find(args.name, table)
    if entry is None:
        from ..ops.synonyms import did_you_mean
        from ..text import plain

        known = [n for e in table for n in (e.name, *e.aliases)]
        hint = did_you_mean(args.name, known) or " (`netdsl ops` lists every op)"
        raise NetdslError(f"no op named `{plain(args.name, 80)}`{hint}")
    if args.json:
        print_json(entry.as_json())
        return EXIT_OK
    _show(entry)
    return EXIT_OK


def _show(e: Entry, out=None) -> None:
    out = out or sys.stdout
    lines = [f"{e.name}: {e.meaning}", f"  syntax:  {e.syntax}", f"  kind:    {e.kind}"]
    if e.aliases:
        lines.append("  aliases: " + ", ".join(e.aliases))
    if e.options:
        lines.append("  options:")
        for o in e.options:
            name = o["name"].upper() if o["positional"] else o["name"]
            also = f" (also {', '.join(o['aliases'])})" if o["aliases"] else ""
            default = "required" if o["required"] else "off" if o["kind"] == "flag" else \
                f"default {_shown(o['default'])}"
            help_ = f"  {o['help']}" if o["help"] else ""
            lines.append(f"    {name + also:<22} {o['kind']:<6} {default}{help_}")
    if e.onnx:
        lines.append("  ONNX:    " + ", ".join(e.onnx))
    lines.append(f"  docs:    {e.docs}")
    print("\n".join(lines), file=out)


def _shown(value: object) -> str:
    if isinstance(value, list | tuple):
        return "x".join(str(v) for v in value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def register(sub) -> None:
    p = sub.add_parser("ops", help="list the ops of the language (layers, merges, composites) or show one in full")
    p.add_argument("name", nargs="?", metavar="NAME", help="show this op in full (an op's name or alias)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_ops)


__all__ = ["Entry", "entries", "find", "register", "syntax_line"]
