"""What the language server knows about one document, computed by the compiler's own passes.

:func:`analyze` runs the loader and the elaborator on a document's text (imports read from disk relative to
its path) and keeps what the editor features need: the syntax tree, the blocks in scope, every network's
checked graph and summary, and the diagnostics. The queries (:meth:`Analysis.hover`, :meth:`Analysis.definition`
and the rest) answer from that result alone. Nothing here depends on the protocol library: positions are
0-based ``(line, character)`` pairs and ranges pairs of them, as in LSP; a span (1-based, end exclusive)
becomes a range by subtracting one.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from dataclasses import dataclass, field

from .. import syntax as S
from ..analysis import LayerStats, summarize
from ..elaborate import Elaborator
from ..errors import Diagnostic, NetdslError, Span
from ..graph import INPUT, Graph, Node
from ..loader import Program, load_program
from ..ops import MERGES, OPS, fmt_shape, weight_name

Pos = tuple[int, int]
Range = tuple[Pos, Pos]

_CALLED_FROM = re.compile(r"called from (.+):(\d+):(\d+)$")
_LOCATION = re.compile(r"(?:at |from )?((?:[A-Za-z]:)?[^\s:`]+):(\d+):(\d+)")
MAX_HINT_SHAPES = 3  # a block body's line shows at most this many distinct shapes (one per instance)


def span_range(span: Span) -> Range:
    return (span.line - 1, span.column - 1), (span.end_line - 1, span.end_column - 1)


def contains(span: Span, pos: Pos) -> bool:
    start, end = span_range(span)
    return start <= pos < end or (start == end == pos)


class Columns:
    """Columns as the compiler counts them (characters) to and from LSP's default unit, UTF-16 code units
    (a character beyond the Basic Multilingual Plane, such as an emoji, is two)."""

    def __init__(self, text: str):
        self.lines = text.split("\n")

    def to_client(self, line: int, column: int) -> int:
        if 0 <= line < len(self.lines) and not self.lines[line].isascii():
            text = self.lines[line]
            return len(text[:column].encode("utf-16-le")) // 2 + max(0, column - len(text))
        return column

    def from_client(self, line: int, column: int) -> int:
        if 0 <= line < len(self.lines) and not self.lines[line].isascii():
            units = 0
            for i, ch in enumerate(self.lines[line]):
                if units >= column:
                    return i
                units += 2 if ord(ch) > 0xFFFF else 1
            return len(self.lines[line]) + max(0, column - units)
        return column


@dataclass(frozen=True)
class Problem:
    """A diagnostic placed in a document: the range, and the notes that name another place."""

    severity: str
    message: str
    range: Range
    path: str | None  # the file the span is in (None: no span)
    related: tuple[tuple[str, Range, str], ...] = ()  # (path, range, note)


@dataclass(frozen=True)
class Hint:
    position: Pos
    label: str


@dataclass(frozen=True)
class Symbol:
    name: str
    kind: str  # "block", "network", "layer", "call", "label"
    range: Range
    selection: Range
    detail: str = ""
    children: tuple[Symbol, ...] = ()


@dataclass
class Analysis:
    """One document's text, path and everything the compiler says about it."""

    path: str
    text: str
    module: S.Module | None = None
    program: Program | None = None
    graphs: list[Graph] = field(default_factory=list)
    stats: dict[str, LayerStats] = field(default_factory=dict)  # "network/node name" -> row
    problems: list[Problem] = field(default_factory=list)

    @functools.cached_property
    def columns(self) -> Columns:
        return Columns(self.text)

    # ------------------------------------------------------------------ helpers
    def _mine(self, span: Span | None) -> bool:
        return span is not None and _same_file(span.path, self.path)

    def _lines(self) -> list[str]:
        return self.text.splitlines()

    def _slice(self, span: Span) -> str:
        lines = self._lines()
        if span.line != span.end_line or not 0 < span.line <= len(lines):
            return ""
        return lines[span.line - 1][span.column - 1:span.end_column - 1]

    def objects(self) -> list:
        """Every syntax-tree object of this document, parents before children."""
        return [] if self.module is None else _walk(self.module)

    def blocks(self) -> dict[str, S.BlockDef]:
        """The blocks in scope: this file's and its imports' (this file's own when imports failed)."""
        if self.program is not None:
            return dict(self.program.blocks)
        return {b.name: b for b in (self.module.blocks if self.module else ())}

    def _defs(self) -> list[S.BlockDef]:
        return [] if self.module is None else [*self.module.blocks, *self.module.networks]

    def _enclosing(self, pos: Pos) -> S.BlockDef | None:
        return next((b for b in self._defs() if contains(b.span, pos)), None)

    def _nodes(self) -> list[tuple[Graph, Node]]:
        return [(g, n) for g in self.graphs for n in g.nodes if n.op is not INPUT]

    # ------------------------------------------------------------------ inlay hints
    def hints(self) -> list[Hint]:
        """At the end of each line that makes layers: the output shape of the line's last layer (one per
        instance of a block body, distinct shapes only)."""
        last: dict[tuple[int, tuple], Node] = {}  # (line, instance) -> last node made on that line
        for g, node in self._nodes():
            for line, instance in self._sites(g, node):
                last[(line, instance)] = node
        shapes: dict[int, list[str]] = {}
        for (line, _), node in last.items():
            shown = shapes.setdefault(line, [])
            s = fmt_shape(node.shape)
            if s not in shown:
                shown.append(s)
        lines = self._lines()
        out = []
        for line, shown in sorted(shapes.items()):
            if not 0 <= line < len(lines):
                continue
            more = " | …" if len(shown) > MAX_HINT_SHAPES else ""
            code = lines[line].split("#", 1)[0].rstrip()  # before a trailing comment
            out.append(Hint((line, len(code)), "→ " + " | ".join(shown[:MAX_HINT_SHAPES]) + more))
        return out

    def _sites(self, g: Graph, node: Node) -> list[tuple[int, tuple]]:
        """The lines of this document that made ``node`` (its own, and the block calls it came from)."""
        sites = []
        if self._mine(node.span):
            sites.append((node.span.end_line - 1, (g.name, *node.trace)))
        for k, note in enumerate(node.trace):
            m = _CALLED_FROM.search(note)
            if m and _same_file(m.group(1), self.path):
                sites.append((int(m.group(2)) - 1, (g.name, *node.trace[k + 1:])))
        return sites

    def _call_nodes(self, call: S.Call) -> list[tuple[Graph, Node]]:
        """The nodes a block call expanded to (every instance of the call)."""
        where = f"called from {call.span.path}:{call.span.line}:{call.span.column}"
        return [(g, n) for g, n in self._nodes() if any(t.endswith(where) for t in n.trace)]

    # ------------------------------------------------------------------ hover
    def hover(self, pos: Pos) -> tuple[str, Range] | None:
        call = self._innermost(pos, S.Call, lambda c: c.name_span)
        if call is not None and call.name in self.blocks():
            return self._hover_call(call), span_range(call.name_span)
        ref = self._innermost(pos, S.Ref)
        if ref is not None:
            return self._hover_ref(ref, pos), span_range(ref.span)
        nodes = [(g, n) for g, n in self._nodes() if self._mine(n.span) and contains(n.span, pos)]
        if nodes:
            smallest = min(nodes, key=lambda gn: _size(gn[1].span))[1].span
            nodes = [(g, n) for g, n in nodes if n.span == smallest]
            return self._hover_layer(nodes), span_range(smallest)
        return None

    def _hover_ref(self, ref: S.Ref, pos: Pos) -> str:
        """A reference: the element it names and that element's output shape (each instance's)."""
        label = self._label_for(ref, pos)
        if label is None:
            return f"`@{ref.path.lstrip('@')}`"
        element = next((o for o in self.objects() if isinstance(o, S.Element) and o.label is label), None)
        last: dict[tuple, Node] = {}
        if element is not None:
            lo, hi = span_range(element.span)
            for g, n in self._nodes():
                starts = [(span_range(n.span)[0], n.trace)] if self._mine(n.span) else []
                for k, note in enumerate(n.trace):  # made by a block called inside the element
                    m = _CALLED_FROM.search(note)
                    if m and _same_file(m.group(1), self.path):
                        starts.append(((int(m.group(2)) - 1, int(m.group(3)) - 1), n.trace[k + 1:]))
                for start, instance in starts:
                    if lo <= start < hi:
                        last[(g.name, *instance)] = n
        shapes = " | ".join(dict.fromkeys(fmt_shape(n.shape) for n in last.values()))
        return f"`@{ref.path.lstrip('@')}`: the element labelled `{_label_text(label)}` (line {label.span.line})" + \
            (f", output `{shapes}`" if shapes else "")

    def _hover_layer(self, nodes: list[tuple[Graph, Node]]) -> str:
        g, node = nodes[0]
        row = self.stats.get(f"{g.name}/{node.name}")
        out = [f"**{node.op.name}** `{node.name}`" + (f" ({len(nodes)} instances)" if len(nodes) > 1 else ""),
               "", f"- output: `{' | '.join(dict.fromkeys(fmt_shape(n.shape) for _, n in nodes))}`",
               f"- input: `{', '.join(fmt_shape(s) for s in node.in_shapes)}`",
               f"- params: {node.params:,}"]
        if row is not None:
            rf = row.receptive_field
            out.append(f"- MACs: {row.macs:,}")
            out.append(f"- receptive field: {_rf(rf)}")
            if row.detail:
                out.append(f"- arguments: `{row.detail}`")
        if node.weights:
            out.append("- weights: " + ", ".join(f"`{weight_name(node.name, w.suffix)}` {fmt_shape(w.shape)}"
                                                 for w in node.weights))
        if node.op.summary:
            out += ["", node.op.summary]
        return "\n".join(out)

    def _hover_call(self, call: S.Call) -> str:
        block = self.blocks()[call.name]
        out = [f"```netdsl\n{self.signature(block)}\n```"]
        nodes = self._call_nodes(call)
        if nodes:
            where = f"called from {call.span.path}:{call.span.line}:{call.span.column}"
            groups: dict[tuple, list[Node]] = {}
            for g, n in nodes:
                key = (g.name, *n.trace[[t.endswith(where) for t in n.trace].index(True):])
                groups.setdefault(key, []).append(n)
            first = next(iter(groups.values()))
            stats = [self.stats.get(f"{key[0]}/{n.name}") for key, ns in groups.items() for n in ns]
            macs = sum(r.macs for r in stats if r is not None)
            params = sum(n.params for _, n in nodes)
            outputs = " | ".join(dict.fromkeys(fmt_shape(ns[-1].shape) for ns in groups.values()))
            each = f" in each of {len(groups)} instances" if len(groups) > 1 else ""
            out.append(f"expands to {len(first)} layers{each} (`{first[0].name}` … `{first[-1].name}`), "
                       f"output `{outputs}`, {params:,} params, {macs:,} MACs" + (" in all" if each else ""))
        else:
            out.append(f"defined at {block.span}")
        return "\n\n".join(out)

    def signature(self, block: S.BlockDef) -> str:
        params = []
        for p in block.params:
            if p.default is None:
                params.append(p.name)
            else:
                params.append(f"{p.name}={_text_of(p.default.span) or '…'}")
        return f"{'network' if block.is_network else 'block'} {block.name}({', '.join(params)})"

    # ------------------------------------------------------------------ navigation
    def _innermost(self, pos: Pos, kind: type, span_of=lambda o: o.span):
        found = [o for o in self.objects() if isinstance(o, kind) and self._mine(span_of(o))
                 and contains(span_of(o), pos)]
        return min(found, key=lambda o: _size(span_of(o))) if found else None

    def _label_at(self, pos: Pos) -> S.Label | None:
        return self._innermost(pos, S.Label)

    def _labels(self, scope: S.BlockDef | None) -> list[S.Label]:
        objs = self.objects() if scope is None else _walk(scope)
        return [o for o in objs if isinstance(o, S.Label) and self._mine(o.span)]

    def definition(self, pos: Pos) -> tuple[str, Range] | None:
        """(path, range) of what the name at ``pos`` names."""
        call = self._innermost(pos, S.Call, lambda c: c.name_span)
        if call is not None:
            block = self.blocks().get(call.name)
            return (block.span.path, span_range(_name_span(block))) if block else None
        ref = self._innermost(pos, S.Ref)
        if ref is not None:
            label = self._label_for(ref, pos)
            return (self.path, span_range(_label_name(label))) if label else None
        imp = self._innermost(pos, S.Import)
        if imp is not None and os.path.isabs(self.path):
            target = os.path.normpath(os.path.join(os.path.dirname(self.path), imp.path))
            return (target, ((0, 0), (0, 0))) if os.path.isfile(target) else None
        return None

    def _label_for(self, ref: S.Ref, pos: Pos) -> S.Label | None:
        first = ref.path.lstrip("@").split(".")[0]
        for label in self._labels(self._enclosing(pos)):
            if _label_text(label) == first:
                return label
        return None

    def _name_at(self, pos: Pos) -> tuple[str, str] | None:
        """("block", name) or ("label", name) for the name under ``pos``."""
        call = self._innermost(pos, S.Call, lambda c: c.name_span)
        if call is not None and call.name in self.blocks():
            return "block", call.name
        for b in self._defs():
            if not b.is_network and contains(_name_span(b), pos):
                return "block", b.name
        ref = self._innermost(pos, S.Ref)
        if ref is not None:
            return "label", ref.path.lstrip("@").split(".")[0]
        label = self._label_at(pos)
        if label is not None:
            return "label", _label_text(label)
        return None

    def references(self, pos: Pos, include_declaration: bool = True) -> list[Range]:
        """Ranges in this document that name what ``pos`` names (block or label)."""
        what = self._name_at(pos)
        if what is None:
            return []
        kind, name = what
        out: list[Range] = []
        if kind == "block":
            if include_declaration:
                out += [span_range(_name_span(b)) for b in self._defs() if b.name == name and not b.is_network]
            out += [span_range(c.name_span) for c in self.objects()
                    if isinstance(c, S.Call) and c.name == name and self._mine(c.name_span)]
            return out
        scope = self._enclosing(pos)
        objs = self.objects() if scope is None else _walk(scope)
        for o in objs:
            if isinstance(o, S.Label) and include_declaration and _label_text(o) == name and self._mine(o.span):
                out.append(span_range(_label_name(o)))
            elif isinstance(o, S.Ref) and o.path.lstrip("@").split(".")[0] == name and self._mine(o.span):
                (l0, c0), _ = span_range(o.span)
                out.append(((l0, c0 + 1), (l0, c0 + 1 + len(name))))
        return out

    def rename(self, pos: Pos, new_name: str) -> list[tuple[Range, str]] | None:
        if self._name_at(pos) is None or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", new_name):
            return None
        return [(r, new_name) for r in self.references(pos)]

    # ------------------------------------------------------------------ symbols, folding, tokens
    def symbols(self) -> list[Symbol]:
        out = []
        for b in self._defs():
            children = []
            for o in _walk(b):
                if isinstance(o, S.Element) and isinstance(o.primary, (S.Layer, S.Call, S.Composite)):
                    p = o.primary
                    kind = "call" if isinstance(p, S.Call) else "layer"
                    what = p.kind if isinstance(p, S.Composite) else p.op if isinstance(p, S.Layer) else p.name
                    name = _label_text(o.label) if o.label else what
                    children.append(Symbol(name, kind, span_range(o.span), span_range(o.span), what))
            kind = "network" if b.is_network else "block"
            out.append(Symbol(b.name, kind, span_range(b.span), span_range(_name_span(b)), self.signature(b),
                              tuple(children)))
        return out

    def folding(self) -> list[tuple[int, int]]:
        out = []
        for o in self.objects():
            if isinstance(o, (S.BlockDef, S.Composite)) and o.span.end_line > o.span.line:
                out.append((o.span.line - 1, o.span.end_line - 1))
        return out

    def tokens(self) -> list[tuple[Range, str]]:
        """Semantic tokens, one line each: ops, block calls, composites, labels, references, blocks, params."""
        out = []
        blocks = self.blocks()
        for o in self.objects():
            if isinstance(o, S.BlockDef):
                out.append((span_range(_name_span(o)), "class"))
                out += [(span_range(_first_word(p.span, p.name)), "parameter") for p in o.params]
            elif isinstance(o, S.Layer) and self._mine(o.op_span):
                out.append((span_range(o.op_span), "keyword" if o.op in OPS else "variable"))
            elif isinstance(o, S.Call) and self._mine(o.name_span):
                out.append((span_range(o.name_span), "function" if o.name in blocks or o.name not in MERGES
                            else "keyword"))
            elif isinstance(o, S.Composite) and self._mine(o.kind_span):
                out.append((span_range(o.kind_span), "macro"))
            elif isinstance(o, S.Label) and self._mine(o.span):
                out.append((span_range(_label_name(o)), "property"))
            elif isinstance(o, S.Ref) and self._mine(o.span):
                out.append((span_range(o.span), "variable"))
        return sorted((t for t in out if t[0][0][0] == t[0][1][0]), key=lambda t: t[0][0])

    # ------------------------------------------------------------------ completion
    def completions(self, pos: Pos) -> list[dict]:
        """Items: {"label", "kind" (op, option, block, label, merge), "detail", "insert"}."""
        lines = self._lines()
        line = lines[pos[0]] if 0 <= pos[0] < len(lines) else ""
        before = line[:max(0, pos[1])].split("#", 1)[0]
        if re.search(r"@[\w.]*$", before):
            scope = self._enclosing(pos)
            names = dict.fromkeys(_label_text(lb) for lb in self._labels(scope))
            names.setdefault("input", None)
            return [{"label": n, "kind": "label", "detail": "labelled element", "insert": n} for n in names]
        segment = re.split(r"->|[|<:(]", before)[-1]
        words = segment.split()
        if words and words[0] in OPS and (len(words) > 1 or before.endswith(" ")):
            op = OPS[words[0]]
            return [{"label": o.name, "kind": "option", "detail": f"{op.name} option ({o.kind})"
                     + (f", default {o.default}" if o.default is not None else ""), "insert": o.name}
                    for o in op.options if not o.positional]
        items = []
        for name, op in sorted(OPS.items()):
            items.append({"label": name, "kind": "op", "detail": op.summary or op.name,
                          "insert": name, "doc": _op_syntax(op)})
        for name, op in sorted(MERGES.items()):
            items.append({"label": name, "kind": "merge", "detail": op.summary or name, "insert": f"{name}(@"})
        own = {b.name for b in (self.module.blocks if self.module else ())}
        for name, block in sorted(self.blocks().items()):
            detail = self.signature(block) + ("" if name in own else f"  (imported from {block.span.path})")
            args = ", ".join(p.name for p in block.params if p.default is None)
            items.append({"label": name, "kind": "block", "detail": detail, "insert": f"{name}({args})"})
        return items


# ---------------------------------------------------------------------- analysis
def analyze(text: str, path: str) -> Analysis:
    """Everything the compiler says about ``text``, the current contents of the file at ``path``.

    Never raises for bad input: every problem becomes a :class:`Problem`.
    """
    a = Analysis(path, text)
    base = os.path.dirname(path) if os.path.isabs(path) else None
    diagnostics: list[Diagnostic] = []
    try:
        a.program = load_program(text, path, base)
        a.module = a.program.main
    except NetdslError as e:
        diagnostics += e.diagnostics
        try:
            a.module = S.parse(text, path)
        except NetdslError:
            pass
    except (RecursionError, MemoryError) as e:
        diagnostics.append(Diagnostic("error", f"the input is too large or nests too deeply ({type(e).__name__})"))
    if a.program is not None:
        for net in a.program.main.networks:
            try:
                graph = Elaborator(a.program.blocks).network(net, {}, a.program.source_hash)
            except NetdslError as e:
                diagnostics += e.diagnostics
                continue
            except (RecursionError, MemoryError) as e:
                diagnostics.append(Diagnostic("error", f"network `{net.name}` is too large or nests too deeply "
                                                       f"({type(e).__name__})", net.span))
                continue
            a.graphs.append(graph)
            diagnostics += graph.warnings
            for row in summarize(graph).layers:
                a.stats[f"{graph.name}/{row.name}"] = row
    seen = set()
    for d in diagnostics:
        key = (d.severity, d.message, d.span)
        if key not in seen:
            seen.add(key)
            a.problems.append(_problem(d, path))
    return a


def _problem(d: Diagnostic, path: str) -> Problem:
    related = []
    notes = []
    for note in d.notes:
        m = _LOCATION.search(note)
        if m:
            line, col = int(m.group(2)) - 1, int(m.group(3)) - 1
            related.append((m.group(1), ((line, col), (line, col)), note))
        else:
            notes.append(note)
    message = "\n".join([d.message, *notes])
    if d.span is None:
        return Problem(d.severity, message, ((0, 0), (0, 0)), None, tuple(related))
    if not _same_file(d.span.path, path):  # in an imported file: shown at the top, the place in a related note
        related.insert(0, (d.span.path, span_range(d.span), "here"))
        return Problem(d.severity, f"{d.span}: {message}", ((0, 0), (0, 0)), d.span.path, tuple(related))
    return Problem(d.severity, message, span_range(d.span), d.span.path, tuple(related))


# ---------------------------------------------------------------------- small helpers
def _same_file(a: str, b: str) -> bool:
    return a == b or os.path.abspath(a) == os.path.abspath(b)


def _field_values(obj) -> list:
    return [getattr(obj, f.name) for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []


def _walk(root) -> list:
    out, stack = [], [root]
    while stack:
        obj = stack.pop()
        out.append(obj)
        for value in reversed(_field_values(obj)):
            if isinstance(value, tuple):
                stack.extend(v for v in reversed(value) if dataclasses.is_dataclass(v))
            elif dataclasses.is_dataclass(value) and not isinstance(value, Span):
                stack.append(value)
    return [o for o in out if not isinstance(o, Span)]


def _size(span: Span) -> tuple[int, int]:
    return span.end_line - span.line, (span.end_column - span.column) if span.end_line == span.line else 0


def _text_of(span: Span) -> str:
    text = span.quoted_line()
    return text[span.column - 1:span.end_column - 1] if text is not None and span.end_line == span.line else ""


def _first_word(span: Span, word: str) -> Span:
    return span.at(span.line, span.column, span.line, span.column + len(word))


def _name_span(block: S.BlockDef) -> Span:
    """The span of a block's or network's name (after `block ` or `network `)."""
    line = block.span.quoted_line() or ""
    start = block.span.column - 1
    m = re.compile(r"(?:block|network)\s+" + re.escape(block.name)).match(line, start)
    col = m.end() - len(block.name) + 1 if m else block.span.column
    return block.span.at(block.span.line, col, block.span.line, col + len(block.name))


def _label_text(label: S.Label) -> str:
    return label.text.strip('"')


def _label_name(label: S.Label) -> Span:
    """The label's name without the colon."""
    text = label.text
    return label.span.at(label.span.line, label.span.column, label.span.line, label.span.column + len(text))


def _rf(rf: tuple[float, float]) -> str:
    h, w = (int(x) if float(x).is_integer() else x for x in rf)
    return f"{h}" if h == w else f"{h}x{w}"


def _op_syntax(op) -> str:
    parts = [op.name]
    for o in op.options:
        if o.positional:
            parts.append(o.name.upper() if o.required else f"[{o.name.upper()}]")
        elif o.kind == "flag":
            parts.append(f"[{o.name}]")
        else:
            parts.append(f"[{o.name} {o.kind.upper()}]")
    return " ".join(parts) + (f"\n\n{op.summary}" if op.summary else "")
