"""The canonical layout of ``.net`` sources (``netdsl fmt``).

:func:`format_source` re-emits a source's tokens with one canonical spacing and indentation and keeps every
comment where its author put it. The front end blanks comments before lexing (``syntax._blank_comments``), so
they are not in the syntax tree: this module reads the original text itself, with a tokenizer that follows the
grammar's terminals, comments included, and takes from the syntax tree only what the tokens alone cannot tell
(which ``(`` opens a group, which ``<`` a composite, where a layer's arguments are).

The layout:

- four spaces of indentation per level: block and network bodies, multi-line groups ``( ... )`` and
  composites ``kind< ... >``; a continuation line (``-> next`` or the next argument after ``,``) is indented
  one level deeper than the line its chain starts on;
- a multi-line composite puts each branch on its own line, the first at the composite's indentation and each
  later one after ``| `` two columns to the left, so that branches align; ``>`` and ``)`` close on a line of
  their own;
- one space around ``->``, ``|``, binary operators and comparisons, after ``,`` and ``:``; none inside brackets,
  around ``=`` of a keyword argument or default (``p=1``), after ``/`` and unary ``-``; in a layer's arguments,
  where spaces separate the arguments, an expression is written without spaces (``conv width*4 1x1``);
- a trailing comma in an argument or parameter list exactly when its ``)`` is on a line of its own;
- line breaks stay where the author put them (a statement per line, as the grammar requires; ``{`` and ``}``
  always end and start a line); at most one blank line in a row, none after an opening or before a closing
  bracket, none at the start of the file; the file ends with one newline;
- own-line comments take the indentation of the code that follows them; trailing comments of consecutive lines
  are aligned two columns after the longest of those lines.

The result is checked to have the same syntax tree as the input (positions aside), so formatting never
changes what a source means.
"""

from __future__ import annotations

import dataclasses
import re

from .errors import NetdslError, Span
from .syntax import Composite, Group, InputDecl, Layer, OutputDecl, parse

__all__ = ["format_source"]

INDENT = 4
MAX_WIDTH = 120  # trailing comments are aligned only while lines stay within this width
KEYWORDS = frozenset({"import", "block", "network", "input", "output", "if", "x", "as"})
_BINARY = frozenset({"+", "-", "*", "//", "%"})
_COMPARISON = frozenset({"==", "!=", "<=", ">=", "<", ">"})

_TOKEN = re.compile(r"""
    (?P<comment>\#[^\n]*)
  | (?P<newline>\n)
  | (?P<ws>[ \t\f\r]+)
  | (?P<string>"[^"\n]*")
  | (?P<dims>\d+(?:x\d+)+(?![\w.]))
  | (?P<float>\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\.\d+(?:[eE][-+]?\d+)?)
  | (?P<int>\d+)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<ref>@[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
  | (?P<op>->|//|==|!=|<=|>=|[-+*/%<>(){},:=|])
""", re.VERBOSE)


@dataclasses.dataclass(slots=True)
class _Tok:
    kind: str  # name, int, float, dims, string, ref, op
    text: str
    offset: int
    newlines: int = 0  # source line breaks between the previous token (or comment) and this one
    role: str = ""  # for brackets and operators: group, paren, list, composite, body, unary, binary, ...
    match: int = -1  # the index of the matching bracket
    multiline: bool = False  # an opening bracket whose contents span lines
    in_layer: bool = False
    drop: bool = False  # a trailing comma left out
    comma_after: bool = False  # a trailing comma added after this token


@dataclasses.dataclass(slots=True)
class _Comment:
    text: str
    newlines: int  # line breaks before it
    trailing: bool


@dataclasses.dataclass(slots=True)
class _Line:
    indent: int
    parts: list[str]
    comment: str | None = None
    blank_before: bool = False

    def code(self) -> str:
        return " " * self.indent + "".join(self.parts)


def format_source(text: str, path: str = "<string>") -> str:
    """The canonical layout of a ``.net`` source's text.

    Raises :class:`~netdsl.errors.NetdslSyntaxError` (with the diagnostics ``netdsl check`` prints) when ``text``
    does not parse. The result parses to the same syntax tree as ``text`` (positions aside) and formats to itself.
    """
    text = text.replace("\r\n", "\n")
    module = parse(text, path)
    items = _tokens(text)
    tokens = [t for t in items if isinstance(t, _Tok)]
    _annotate(tokens, text, module)
    out = _layout(items)
    try:
        again = parse(out, path)
    except NetdslError as exc:  # pragma: no cover - a formatter bug, never the user's
        raise AssertionError(f"formatting {path} produced text that does not parse: {exc}") from None
    if _shape(again) != _shape(module):  # pragma: no cover - a formatter bug, never the user's
        raise AssertionError(f"formatting {path} would change its meaning")
    return out


# ----------------------------------------------------------------------------- tokens
def _tokens(text: str) -> list[_Tok | _Comment]:
    items: list[_Tok | _Comment] = []
    newlines, code_on_line = 0, False
    pos = 0
    for m in _TOKEN.finditer(text):
        if m.start() != pos:  # the text parsed, so this cannot happen; fail loudly rather than drop text
            raise AssertionError(f"unexpected text at offset {pos}")  # pragma: no cover
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        if kind == "newline":
            newlines += 1
            code_on_line = False
            continue
        if kind == "comment":
            items.append(_Comment(m[0].rstrip(), newlines, code_on_line))
        else:
            items.append(_Tok(kind, m[0], m.start(), newlines))
            code_on_line = True
        newlines = 0
    if pos != len(text):  # pragma: no cover
        raise AssertionError(f"unexpected text at offset {pos}")
    return items


def _walk(node, found: dict[str, list]) -> None:
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, tuple | list):
            stack.extend(n)
            continue
        if not dataclasses.is_dataclass(n):
            continue
        if isinstance(n, Composite):
            found["composite"].append(n.kind_span)
        elif isinstance(n, Group):
            found["group"].append(n.span)
        elif isinstance(n, Layer):
            found["layer"].append(n.span)
        elif isinstance(n, OutputDecl):
            found["output"].append(n.span)
        elif isinstance(n, InputDecl) and n.dims:
            first, last = n.dims[0].span, n.dims[-1].span
            found["shape"].append(Span(first.path, first.line, first.column, last.end_line, last.end_column))
        stack.extend(getattr(n, f.name) for f in dataclasses.fields(n) if "span" not in f.name)


def _annotate(tokens: list[_Tok], text: str, module) -> None:
    """Give brackets and operators their roles, match brackets, and mark multi-line brackets."""
    starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            starts.append(i + 1)

    def offset(line: int, column: int) -> int:
        return starts[line - 1] + column - 1

    found: dict[str, list] = {"composite": [], "group": [], "layer": [], "output": [], "shape": []}
    _walk((module.imports, module.blocks, module.networks), found)
    composite_kinds = {offset(s.line, s.column) for s in found["composite"]}
    groups = {offset(s.line, s.column) for s in found["group"]}
    # an input's size is written like a layer's arguments (`3 x 2*size x 2*size`)
    shapes = sorted((offset(s.line, s.column), offset(s.end_line, s.end_column)) for s in found["shape"])
    layers = sorted([(offset(s.line, s.column), offset(s.end_line, s.end_column)) for s in found["layer"]]
                    + shapes)
    outputs = [(offset(s.line, s.column), offset(s.end_line, s.end_column)) for s in found["output"]]

    li = 0  # layers do not nest: each token is inside at most one, and both lists are in text order
    for t in tokens:
        while li < len(layers) and layers[li][1] <= t.offset:
            li += 1
        t.in_layer = li < len(layers) and layers[li][0] <= t.offset

    for a, b in shapes:  # a size of literals only is one literal: `3 x 224 x 224` -> `3x224x224`
        inside = [t for t in tokens if a <= t.offset < b]
        if all(t.kind in ("int", "dims") or t.kind == "name" and t.text == "x" for t in inside):
            for t in inside:
                if t.text == "x":
                    t.role = "glue"

    stack: list[int] = []
    for i, t in enumerate(tokens):
        prev = tokens[i - 1] if i else None
        if t.kind != "op":
            continue
        s = t.text
        if s == "{":
            t.role = "body"
            stack.append(i)
        elif s == "(":
            if t.offset in groups:
                t.role = "group"
            elif prev is not None and prev.kind == "name" and prev.text not in KEYWORDS:
                t.role = "list"
            else:
                t.role = "paren"
            stack.append(i)
        elif s == "<" and prev is not None and prev.offset in composite_kinds:
            t.role = "composite"
            stack.append(i)
        elif s in ("}", ")") or (s == ">" and stack and tokens[stack[-1]].role == "composite"):
            j = stack.pop()
            t.match, tokens[j].match = j, i
            t.role = tokens[j].role
            tokens[j].multiline = any(u.newlines for u in tokens[j + 1:i + 1])
            if t.role == "list" and prev is not tokens[j]:
                if t.newlines and prev.text != ",":
                    prev.comma_after = True
                elif not t.newlines and prev.text == ",":
                    prev.drop = True
        elif s == "-" and (prev is None or prev.kind == "op" and prev.text != ")" and prev.role != "composite"
                           or prev.kind == "name" and prev.text in KEYWORDS):
            t.role = "unary"
        elif s in _BINARY:
            t.role = "binary"
        elif s in _COMPARISON:
            t.role = "comparison"
        elif s == "=":
            t.role = "spaced" if any(a <= t.offset < b for a, b in outputs) else "tight"
        elif s == "|":
            t.role = "branch"
            t.match = stack[-1] if stack else -1


# ----------------------------------------------------------------------------- layout
def _space(p: _Tok, t: _Tok) -> str:
    """The space between two tokens on one line."""
    if t.text in (",", ":") or t.text == ")" or p.text == "(" or p.text == "/":
        return ""
    if t.role == "glue" or p.role == "glue":
        return ""
    if t.text == "=" and t.role == "tight" or p.text == "=" and p.role == "tight":
        return ""
    if t.text == "(" and p.role in ("binary", "unary") and t.in_layer and p.in_layer:
        return ""  # `conv anchors*(5+classes) 1x1`: a layer argument is written without spaces
    if t.text == "(":
        return "" if t.role == "list" else " "
    if t.text == "<" and t.role == "composite" or p.text == "<" and p.role == "composite":
        return ""
    if t.text == ">" and t.role == "composite":
        return ""
    if p.role == "unary":
        return ""
    if (t.role == "binary" or p.role == "binary") and t.in_layer and p.in_layer:
        return ""
    return " "


def _layout(items: list[_Tok | _Comment]) -> str:
    tokens = [t for t in items if isinstance(t, _Tok)]
    lines: list[_Line] = []
    pending: list[_Comment] = []  # own-line comments waiting for the next line of code
    frames: list[list[int]] = [[-1, 0, 0]]  # per open bracket: [index of opener, content indent, chain indent]
    line_logical = 0  # the logical indent of the current line (a `| ` line: where its branch starts)
    prev: _Tok | None = None
    ti = 0
    # the indent of a closer, per opener index
    opener_indent: dict[int, int] = {}

    def forced_break(p: _Tok, t: _Tok) -> bool:
        if p.text == "{" or t.text == "}":
            return True
        if p.role in ("group", "composite") and p.text in "(<" and p.multiline:
            return True
        if t.role in ("group", "composite") and t.text in ")>" and tokens[t.match].multiline:
            return True
        return t.text == "|" and t.match >= 0 and tokens[t.match].multiline

    for item in items:
        if isinstance(item, _Comment):
            if item.trailing and lines:
                lines[-1].comment = item.text
            else:
                pending.append(item)
            continue
        t = item
        new_line = prev is None or t.newlines > 0 or forced_break(prev, t)
        if new_line:
            closer = t.text in ("}", ")", ">") and t.match >= 0 and t.match < ti
            if closer:
                indent = opener_indent.get(t.match, 0)
                logical = indent
            elif t.text == "|" and t.match >= 0:
                logical = frames[-1][1]
                indent = logical - 2
            else:
                new_chain = prev is None or prev.text in ("{", "|") or prev.role in ("group", "composite") \
                    and prev.text in "(<" or (prev.text not in ("->", ",") and t.text not in ("->", ")", ">"))
                if new_chain:
                    indent = frames[-1][1]
                    frames[-1][2] = indent
                else:
                    chain_frame = next(f for f in reversed(frames) if f[0] < 0 or tokens[f[0]].role != "list"
                                       and tokens[f[0]].role != "paren")
                    indent = chain_frame[2] + INDENT
                logical = indent
            # own-line comments before it
            inner = frames[-1][1] if closer else indent  # a comment before a closer belongs to what it closes
            for c in pending:
                lines.append(_Line(inner if prev is not None else 0, [""], c.text, blank_before=c.newlines > 1))
            pending.clear()
            blank = t.newlines > 1  # line breaks since the last comment or token
            if t.text == "|":
                lines.append(_Line(indent, ["|"], None, blank_before=blank))
                frames[-1][2] = logical
            else:
                lines.append(_Line(indent, [], None, blank_before=blank))
            line_logical = logical
        elif prev is not None and not t.drop:
            lines[-1].parts.append(_space(prev, t))
        if t.text == "|":
            if not new_line:
                lines[-1].parts.append("|")
            frames[-1][2] = frames[-1][1]
        elif not t.drop:
            lines[-1].parts.append(t.text + ("," if t.comma_after else ""))
        if t.text in ("{", "(", "<") and t.role in ("body", "group", "list", "paren", "composite"):
            opener_indent[ti] = line_logical
            frames.append([ti, line_logical + INDENT, line_logical + INDENT])
        elif t.text in ("}", ")", ">") and t.match >= 0 and t.match < ti:
            frames.pop()
        prev = t
        ti += 1
    for c in pending:
        lines.append(_Line(0, [""], c.text, blank_before=c.newlines > 1))
    return _render(lines)


def _render(lines: list[_Line]) -> str:
    # blank lines: none at the start, none after an opening bracket, none before a closing one
    out: list[_Line] = []
    for line in lines:
        code = "".join(line.parts)
        if line.blank_before:
            prev_code = "".join(out[-1].parts) if out else ""
            if not out or prev_code.endswith(("{", "(", "<")) or code.startswith(("}", ")", ">")):
                line.blank_before = False
        out.append(line)
    # align trailing comments of consecutive lines of code, as long as no line grows past MAX_WIDTH
    i = 0
    while i < len(out):
        if out[i].comment is None or not "".join(out[i].parts):
            i += 1
            continue
        width = len(out[i].code()) + 2
        j = i + 1
        while j < len(out) and out[j].comment is not None and "".join(out[j].parts) and not out[j].blank_before:
            wider = max(width, len(out[j].code()) + 2)
            if any(wider + len(out[k].comment) > MAX_WIDTH for k in range(i, j + 1)):
                break
            width = wider
            j += 1
        for k in range(i, j):
            out[k].parts.append(" " * (width - len(out[k].code())))
        i = j
    text: list[str] = []
    for line in out:
        if line.blank_before:
            text.append("")
        code = "".join(line.parts)
        if code.strip():
            s = " " * line.indent + code
            text.append(s + line.comment if line.comment is not None else s.rstrip())
        else:
            text.append(" " * line.indent + (line.comment or ""))
    return "\n".join(text).rstrip("\n") + "\n" if text else ""


# ----------------------------------------------------------------------------- meaning
def _shape(node):
    """A syntax tree without its positions, for comparing what two texts mean."""
    if isinstance(node, Span):
        return None
    if isinstance(node, tuple | list):
        return tuple(_shape(n) for n in node)
    if dataclasses.is_dataclass(node):
        return (type(node).__name__,) + tuple(_shape(getattr(node, f.name)) for f in dataclasses.fields(node)
                                              if "span" not in f.name and f.name != "path")
    return node

