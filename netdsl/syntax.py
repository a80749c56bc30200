"""Stage 1: text -> syntax tree.

Parses .net source with the Lark grammar in ``grammars/netdsl.lark`` and builds
small frozen dataclasses, each carrying the :class:`~netdsl.errors.Span` of the
text it came from. The transformer only builds the tree; every check beyond the
grammar happens in later passes. Lark's exceptions never escape: they become
:class:`~netdsl.errors.NetdslSyntaxError` with a location and a readable
"expected ... found ..." message.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.lark import PostLex
from lark.visitors import Transformer_NonRecursive

from .errors import NetdslSyntaxError, SourceFile, Span
from .limits import (  # noqa: F401 - re-exported: the limits this module enforces
    MAX_EXPR_DEPTH,
    MAX_LINE_CHARS,
    MAX_LITERAL_DIGITS,
    MAX_NESTING,
    MAX_SOURCE_BYTES,
    MAX_TOKENS,
)


# ----------------------------------------------------------------------------- expressions
@dataclass(frozen=True, slots=True)
class Num:
    value: int | float
    span: Span


@dataclass(frozen=True, slots=True)
class Var:
    name: str
    span: Span


@dataclass(frozen=True, slots=True)
class BinOp:
    op: str  # + - * // % (arithmetic), == != < <= > >= (comparisons: 1 or 0)
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Neg:
    operand: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Dims:
    """A literal size such as ``3x3`` or ``3x224x224``."""

    values: tuple[int, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Tuple_:
    values: tuple[int | float, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Str:
    value: str
    span: Span


Expr = Num | Var | BinOp | Neg


# ----------------------------------------------------------------------------- layer arguments
@dataclass(frozen=True, slots=True)
class Stride:
    """``/2``, ``/s`` or ``/2x1`` in a layer's arguments."""

    value: Expr | Dims
    span: Span


# ----------------------------------------------------------------------------- chain elements
@dataclass(frozen=True, slots=True)
class Ref:
    """``@name``: a named tensor of the enclosing scope (a chain element, a merge's or block's argument, or a
    layer argument: ``resize like @image``)."""

    path: str
    span: Span


LayerArg = Expr | Dims | Stride | Ref


@dataclass(frozen=True, slots=True)
class Layer:
    op: str
    args: tuple[LayerArg, ...]
    span: Span
    op_span: Span


@dataclass(frozen=True, slots=True)
class KwArg:
    name: str
    value: Expr | Ref
    span: Span


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Expr | Ref | KwArg, ...]
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class Sequence:
    chains: tuple[Chain, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Composite:
    kind: str  # residual, inception, scale, ...
    branches: tuple[Sequence, ...]
    span: Span
    kind_span: Span


@dataclass(frozen=True, slots=True)
class Group:
    body: Sequence
    span: Span


Primary = Layer | Call | Composite | Group | Ref


@dataclass(frozen=True, slots=True)
class Label:
    """``conv1:`` or a template such as ``"denselayer{i + 1}":`` whose ``{expr}`` parts are evaluated."""

    text: str
    parts: tuple[str | Expr, ...]  # literal text and expressions, in order
    span: Span

    @property
    def is_template(self) -> bool:
        return any(not isinstance(p, str) for p in self.parts)


@dataclass(frozen=True, slots=True)
class Element:
    label: Label | None
    primary: Primary
    repeat: Expr | None
    span: Span
    index_var: str | None = None  # `x N as i`
    condition: Expr | None = None  # `if EXPR`: the element exists only when EXPR is non-zero


@dataclass(frozen=True, slots=True)
class Chain:
    elements: tuple[Element, ...]
    span: Span


# ----------------------------------------------------------------------------- statements
@dataclass(frozen=True, slots=True)
class InputDecl:
    """``input image: 3x224x224`` or ``input image: 3 x size x size``: one expression per dimension (a literal
    ``3x224x224`` gives one number per part, each spanning its digits)."""

    name: str
    dims: tuple[Expr, ...]
    options: tuple[tuple[str, object, Span], ...]
    span: Span

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The size when every dimension is an integer literal, else None (it depends on parameters)."""
        if all(isinstance(d, Num) and isinstance(d.value, int) for d in self.dims):
            return tuple(d.value for d in self.dims)
        return None


@dataclass(frozen=True, slots=True)
class OutputDecl:
    name: str
    ref: Ref | None
    span: Span
    condition: Expr | None = None  # `if EXPR`: declared only when EXPR is non-zero


Statement = InputDecl | OutputDecl | Chain


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    default: Expr | None
    span: Span


@dataclass(frozen=True, slots=True)
class BlockDef:
    name: str
    params: tuple[Param, ...]
    body: tuple[Statement, ...]
    span: Span
    is_network: bool = False


@dataclass(frozen=True, slots=True)
class Import:
    path: str
    span: Span


@dataclass(frozen=True, slots=True)
class Module:
    """One parsed .net file."""

    path: str
    imports: tuple[Import, ...]
    blocks: tuple[BlockDef, ...]
    networks: tuple[BlockDef, ...]


# ----------------------------------------------------------------------------- parser
def _grammar_text() -> str:
    try:  # installed wheel: grammars/ is shipped inside the package
        return resources.files("netdsl").joinpath("grammars/netdsl.lark").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):  # source checkout / editable install
        return (Path(__file__).resolve().parent.parent / "grammars" / "netdsl.lark").read_text(encoding="utf-8")


@functools.cache
def _parser() -> Lark:
    grammar = _grammar_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True,
                start=["start", "expr"], cache=_parser_cache(grammar), postlex=_CountTokens())


class _TooManyTokens(Exception):
    def __init__(self, token: Token):
        super().__init__(token)
        self.token = token


class _CountTokens(PostLex):
    """Stops the parse at token MAX_TOKENS + 1, before the parse tree of a huge source is built."""

    always_accept = ()

    def process(self, stream):
        for n, token in enumerate(stream, 1):
            if n > MAX_TOKENS:
                raise _TooManyTokens(token)
            yield token


def _parser_cache(grammar: str) -> str | bool:
    """Where Lark keeps the analysed grammar between runs (building the LALR tables is most of what
    `netdsl check` would spend beyond imports), or False for no cache.

    The cache is a pickle, so it lives only in a directory that no one else can write:
    netdsl's cache folder (``$NETDSL_CACHE_DIR``, else ``$XDG_CACHE_HOME/netdsl`` or ``~/.cache/netdsl``, as
    :func:`netdsl.machine.cache_home`), created with mode 0700 and checked to be owned
    by this user. Lark stores a hash of the grammar, its options and its version in the file and
    rebuilds on any mismatch or unreadable file; the name carries a hash of the grammar and Lark's
    version so that checkouts and environments that differ do not evict each other.
    """
    import hashlib

    from lark import __version__ as lark_version

    if not hasattr(os, "getuid"):  # not POSIX: no cheap way to check who can write the directory
        return False
    directory = os.environ.get("NETDSL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "netdsl")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.stat(directory)
    except OSError:
        return False
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        return False
    key = hashlib.sha256(f"{lark_version}\n{grammar}".encode()).hexdigest()[:16]
    return os.path.join(directory, f"grammar-{key}.lark")


def _span(path: str, meta) -> Span:
    return Span(path, meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(path: str, tok: Token) -> Span:
    return Span(path, tok.line, tok.column, tok.end_line or tok.line, tok.end_column or tok.column + len(tok))


@v_args(meta=True)
class _Builder(Transformer_NonRecursive):
    """Lark tree -> dataclasses. Builds only; checks nothing but the length of integer literals.

    Non-recursive: a tree as deep as the limits allow (:func:`_check_depth`) never meets Python's recursion
    limit here.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def _s(self, meta) -> Span:
        return _span(self.path, meta)

    # expressions
    def _ints(self, text: str, span: Span) -> tuple[int, ...]:
        """The numbers of a literal such as ``3x224x224`` (or ``42``)."""
        parts = text.split("x")
        for p in parts:
            if len(p) > MAX_LITERAL_DIGITS:
                raise NetdslSyntaxError(f"integer literal of {len(p):,} digits is too long (at most "
                                        f"{MAX_LITERAL_DIGITS} digits)", span)
        return tuple(int(p) for p in parts)

    def int(self, meta, c):
        return Num(self._ints(str(c[0]), self._s(meta))[0], self._s(meta))

    def float(self, meta, c):
        return Num(float(c[0]), self._s(meta))

    def var(self, meta, c):
        return Var(str(c[0]), self._s(meta))

    def _bin(op):  # noqa: N805 - helper evaluated at class creation
        def rule(self, meta, c):
            return BinOp(op, c[0], c[1], self._s(meta))
        return rule

    add, sub, mul, floordiv, mod = _bin("+"), _bin("-"), _bin("*"), _bin("//"), _bin("%")
    eq, ne, lt, le, gt, ge = _bin("=="), _bin("!="), _bin("<"), _bin("<="), _bin(">"), _bin(">=")

    def neg(self, meta, c):
        return Neg(c[0], self._s(meta))

    def dims(self, meta, c):
        return Dims(self._ints(str(c[0]), self._s(meta)), self._s(meta))

    def stride(self, meta, c):
        v = c[0]
        if isinstance(v, Token):
            v = Dims(self._ints(str(v), _tok_span(self.path, v)), _tok_span(self.path, v))
        return Stride(v, self._s(meta))

    def tuple(self, meta, c):
        return Tuple_(tuple(n.value for n in c), self._s(meta))

    # chain elements
    def ref(self, meta, c):
        return Ref(str(c[0])[1:], self._s(meta))

    def layer(self, meta, c):
        return Layer(str(c[0]), tuple(c[1:]), self._s(meta), _tok_span(self.path, c[0]))

    def kwarg(self, meta, c):
        return KwArg(str(c[0]), c[1], self._s(meta))

    def arg_list(self, meta, c):
        return tuple(c)

    def call(self, meta, c):
        return Call(str(c[0]), c[1] or (), self._s(meta), _tok_span(self.path, c[0]))

    def sequence(self, meta, c):
        return Sequence(tuple(c), self._s(meta))

    def composite(self, meta, c):
        return Composite(str(c[0]), tuple(c[1:]), self._s(meta), _tok_span(self.path, c[0]))

    def group(self, meta, c):
        return Group(c[0], self._s(meta))

    def label(self, meta, c):
        tok = c[0]
        span = _tok_span(self.path, tok)
        if tok.type == "NAME":
            return Label(str(tok), (str(tok),), span)
        return Label(str(tok)[1:-1], _template_parts(str(tok)[1:-1], span), span)

    def repeat(self, meta, c):
        return (c[0], str(c[1]) if c[1] is not None else None)

    def condition(self, meta, c):
        return c[0]

    def element(self, meta, c):
        label, primary, repeat, condition = c
        count, var = repeat if repeat is not None else (None, None)
        return Element(label, primary, count, self._s(meta), var, condition)

    def chain(self, meta, c):
        return Chain(tuple(c), self._s(meta))

    # statements
    def shape(self, meta, c):
        dims: list[Expr] = []
        for d in c:
            if isinstance(d, Dims):  # `3x224x224`, or a literal part of `3x32 x size`: a number per part
                col = d.span.column
                for text, value in zip(_partition_dims(d), d.values, strict=True):
                    dims.append(Num(value, d.span.at(d.span.line, col, d.span.line, col + len(text))))
                    col += len(text) + 1
            else:
                dims.append(d)
        return tuple(dims)

    def input_option(self, meta, c):
        name, value = c
        if isinstance(value, Token):
            value = Str(str(value).strip('"'), _tok_span(self.path, value)) if value.type == "STRING" \
                else Var(str(value), _tok_span(self.path, value))
        return (str(name), value, self._s(meta))

    def input_decl(self, meta, c):
        return InputDecl(str(c[0]), c[1], tuple(c[2:]), self._s(meta))

    def output_decl(self, meta, c):
        ref = c[1]
        if isinstance(ref, Token):  # `output aux = @aux1`: the REF terminal, not a `ref` rule
            ref = Ref(str(ref)[1:], _tok_span(self.path, ref))
        return OutputDecl(str(c[0]), ref, self._s(meta), c[2])

    def param(self, meta, c):
        return Param(str(c[0]), c[1], self._s(meta))

    def param_list(self, meta, c):
        return tuple(c)

    def body(self, meta, c):
        return tuple(c)

    def block_def(self, meta, c):
        return BlockDef(str(c[0]), c[1] or (), c[2], self._s(meta))

    def network_def(self, meta, c):
        return BlockDef(str(c[0]), c[1] or (), c[2], self._s(meta), is_network=True)

    def import_stmt(self, meta, c):
        return Import(str(c[0]).strip('"'), self._s(meta))

    def start(self, meta, c):
        return c


def _partition_dims(d: Dims) -> list[str]:
    """The digits of each part of a size literal, as written (``007x3`` -> ``007``, ``3``)."""
    text = d.span.quoted_line()
    if text is not None and d.span.line == d.span.end_line:
        written = text[d.span.column - 1:d.span.end_column - 1]
        if re.fullmatch(r"\d+(x\d+)+", written):
            return written.split("x")
    return [str(v) for v in d.values]


def _template_parts(text: str, span: Span) -> tuple[str | Expr, ...]:
    """Split ``denselayer{i + 1}`` into literal text and parsed expressions."""
    parts: list[str | Expr] = []
    pos = 0
    while pos < len(text):
        start = text.find("{", pos)
        if start < 0:
            parts.append(text[pos:])
            break
        end = text.find("}", start)
        if end < 0:
            raise NetdslSyntaxError("unclosed `{` in a name template", span)
        if start > pos:
            parts.append(text[pos:start])
        inner = text[start + 1:end]
        col = span.column + 1 + start + 1  # the quote, then the brace
        if len(inner) > MAX_LITERAL_DIGITS:  # keeps the expression shallow and its literals short
            raise NetdslSyntaxError(f"`{{...}}` in a name template holds {len(inner):,} characters, more than the "
                                    f"{MAX_LITERAL_DIGITS} allowed", span)
        try:
            tree = _parser().parse(inner, start="expr")
            expr = _Builder(span.source or span.path).transform(tree)
        except UnexpectedInput:
            where = span.at(span.line, col - 1, span.line, col + len(inner) + 1)
            hint = " (`/` is the stride; integer division is `//`)" if "/" in inner.replace("//", "") else ""
            raise NetdslSyntaxError(f"`{{{inner}}}` is not an expression{hint}", where) from None
        parts.append(_shift(expr, span, col - 1))
        pos = end + 1
    for p in parts:
        if isinstance(p, str) and not all(ch.isalnum() or ch in "_-" for ch in p):
            raise NetdslSyntaxError(f"a name may hold letters, digits, `_` and `-`, got {p!r}", span)
    return tuple(parts)


def _shift(expr, span: Span, col: int):
    """Re-anchor an expression parsed from inside a template at the template's position."""
    import dataclasses

    def fix(e):
        if isinstance(e, (Num, Var, BinOp, Neg)):
            changes = {"span": span.at(span.line, col + e.span.column - 1, span.line,
                                       col + e.span.end_column - 1)}
            if isinstance(e, BinOp):
                changes.update(left=fix(e.left), right=fix(e.right))
            if isinstance(e, Neg):
                changes.update(operand=fix(e.operand))
            return dataclasses.replace(e, **changes)
        return e

    return fix(expr)


# Names of terminals as a user would call them, for "expected ..." messages.
_TERMINAL_NAMES = {
    "_NL": "end of line", "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "DIMS": "a size like 3x3",
    "REF": "a tensor reference like @name", "STRING": 'a quoted path', "_ARROW": "`->`", "LPAR": "`(`",
    "RPAR": "`)`", "LBRACE": "`{`", "RBRACE": "`}`", "COLON": "`:`", "COMMA": "`,`", "EQUAL": "`=`",
    "LESSTHAN": "`<`", "MORETHAN": "`>`", "VBAR": "`|`", "SLASH": "`/`", "PLUS": "`+`", "MINUS": "`-`",
    "STAR": "`*`", "PERCENT": "`%`", "$END": "end of file", "X": "`x`",
}


# What may start a chain element; named as one thing in messages, not as four terminals.
_ELEMENT_START = {"NAME", "REF", "LPAR"}
_CLOSER = {"LBRACE": "RBRACE", "LPAR": "RPAR", "LESSTHAN": "MORETHAN"}


def _describe_expected(expected: set[str]) -> str:
    terms = {t for t in expected if not t.startswith("__ANON") and t != "WS"}
    last = []
    if _ELEMENT_START <= terms:
        terms -= _ELEMENT_START | {"STRING"}
        last.append("a layer (or a block call, a `(` group, a @reference)")
    names = []
    for term in terms:
        names.append(_TERMINAL_NAMES.get(term, f"`{term.lower()}`" if term.isupper() and len(term) < 10
                                         and term.isalpha() else term))
    names = sorted(set(names)) + last
    if not names:
        return ""
    if len(names) > 6:
        return "expected " + ", ".join(names[:6]) + ", ..."
    return "expected " + (" or ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " or " + names[-1])


def _unclosed_note(path: str, exc: UnexpectedToken) -> tuple[str, ...]:
    """A note naming the innermost bracket still open when the parser met a wrong closer or the end of file."""
    stack = getattr(getattr(exc, "interactive_parser", None), "parser_state", None)
    stack = getattr(stack, "value_stack", None) or []
    for i in range(len(stack) - 1, -1, -1):
        opener = stack[i]
        if isinstance(opener, Token) and opener.type in _CLOSER:
            wanted = _CLOSER[opener.type]
            if exc.token.type == wanted or exc.token.type not in ("$END", "_NL", *_CLOSER.values()) \
                    or exc.token.type == "_NL" and wanted not in exc.expected:
                return ()
            before = stack[i - 1] if i and isinstance(stack[i - 1], Token) else None
            what = f"`{opener}`"
            if opener.type == "LESSTHAN" and before is not None and before.type == "NAME":
                what = f"`{before}<`"
                opener = before
            close = {"RBRACE": "}", "RPAR": ")", "MORETHAN": ">"}[wanted]
            return (f"{what} opened at {path}:{opener.line}:{opener.column} is not closed (expected `{close}`)",)
    return ()


def _describe_token(tok: Token) -> str:
    if tok.type == "_NL":
        return "end of line"
    if tok.type == "$END":
        return "end of file"
    return f"`{tok}`"


def _line_before(text: str, span: Span) -> str:
    """The text of the span's line before the span."""
    lines = text.splitlines() or [""]
    return lines[min(span.line, len(lines)) - 1][:span.column - 1]


_COMPARISONS = ("==", "!=", "<=", ">=", "<", ">")


def _bare_comparison(path: str, text: str, span: Span, exc: UnexpectedToken) -> tuple[str, Span] | None:
    """The message and span for a comparison written without parentheses after ``if`` (``relu if t != 1``), or
    None. Inside a composite's ``<...>`` the ``>`` of ``if cols > 1`` closes the composite and the parser stops
    at the ``1``; elsewhere it stops at the comparison itself."""
    before = _line_before(text, span)
    ifs = list(re.finditer(r"\bif\s+", before))
    if not ifs:
        return None
    cond_start = ifs[-1].end()
    between = before[cond_start:]
    if re.search(r"[|()#]|->", between) or not between.strip():
        return None
    stack = getattr(getattr(getattr(exc, "interactive_parser", None), "parser_state", None), "value_stack", None) or []
    in_composite = any(isinstance(t, Token) and t.type == "LESSTHAN" for t in stack)
    if str(exc.token) in _COMPARISONS:
        pass  # `relu if t != 1`: the parser stops at the comparison
    elif re.search(r"(?<!-)>\s*$", between) and exc.token.type not in ("_NL", "$END"):
        in_composite = True  # `if cols > 1` inside `<...>`: the `>` closed the composite
    else:
        return None
    lines = text.splitlines()
    line = lines[span.line - 1] if span.line <= len(lines) else ""
    rest = re.split(r"\||->|#", line[cond_start:], maxsplit=1)[0].rstrip()
    if rest.endswith(">") and not rest.endswith(("->", ">=")) and rest.count(">") > 1:
        rest = rest[:-1].rstrip()  # the composite's own closing bracket on the same line
    where = "inside a composite's `<...>`" if in_composite else "after `if`"
    why = " (without them, `>` closes the composite)" if in_composite and ">" in rest else ""
    msg = f"a comparison {where} needs parentheses: write `if ({rest})`{why}"
    return msg, Span(path, span.line, cond_start + 1, span.line, cond_start + 1 + len(rest))


_INPUT_LINE = re.compile(r"(\s*input\s+[A-Za-z_]\w*\s*:\s*)([^\s=]+)")


def _glued_input_size(path: str, text: str, line: int) -> tuple[str, Span] | None:
    """The message and span for an input size whose `x` touches a name (``input image: 3xsizexsize``, which lexes
    as the number 3 and the name ``xsizexsize``), on the error's line or the line before; or None."""
    lines = text.splitlines()
    for n in (line, line - 1):
        m = _INPUT_LINE.match(lines[n - 1]) if 0 < n <= len(lines) else None
        if m is None:
            continue
        written = m[2]
        parts = written.split("x")
        if len(parts) < 2 or not all(re.fullmatch(r"\d+|[A-Za-z_]\w*", p) for p in parts) \
                or all(p.isdigit() for p in parts):
            return None
        col = m.start(2) + 1
        return (f"`{written}` is not a size: with parameter names, write a spaced `x` between the dimensions "
                f"(`{' x '.join(parts)}`)", Span(path, n, col, n, col + len(written)))
    return None


def _syntax_error(path: str, text: str, exc: UnexpectedInput) -> NetdslSyntaxError:
    line = getattr(exc, "line", None) or 1
    col = getattr(exc, "column", None) or 1
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        msg = f"unexpected character {ch!r}"
        span = Span(path, line, col, line, col + 1)
    elif isinstance(exc, UnexpectedToken):
        tok = exc.token
        if tok.type == "$END":
            lines = text.splitlines() or [""]
            line, col = len(lines), len(lines[-1]) + 1
            span = Span(path, line, col, line, col + 1)
        elif tok.type == "_NL":  # point at the end of the line, not the start of the next
            span = Span(path, tok.line, tok.column, tok.line, tok.column + 1)
        else:
            span = _tok_span(path, tok)
        expected = _describe_expected(set(exc.expected))
        msg = f"unexpected {_describe_token(tok)}" + (f"; {expected}" if expected else "")
        notes = _unclosed_note(path, exc)
        bare = _bare_comparison(path, text, span, exc)
        glued = _glued_input_size(path, text, span.line)
        if bare is not None:
            msg, span = bare
            notes = ()
        elif glued is not None:
            msg, span = glued
            notes = ()
        elif tok.type == "X":
            msg += " (`x` is the repetition keyword and cannot be a name; sizes are written without spaces: 3x3)"
        elif re.search(r"\d\s+x\s*$|\d\s*x\s+$", _line_before(text, span)):  # `3 x 224 x 224`
            msg += " (sizes are written without spaces: 3x3, 3x224x224)"
        elif tok.type == "LPAR" and re.search(r"\w\s+$", _line_before(text, span)):  # `conv 8 3x3 pad (p - 1)`
            msg = "unexpected `(`: a layer's arguments cannot start with `(` (a group `(...)` follows `->`)"
    elif isinstance(exc, UnexpectedEOF):
        lines = text.splitlines() or [""]
        span = Span(path, len(lines), len(lines[-1]) + 1, len(lines), len(lines[-1]) + 2)
        msg = "unexpected end of file"
    else:  # pragma: no cover - every UnexpectedInput subclass is handled above
        span = Span(path, line, col, line, col + 1)
        msg = str(exc).splitlines()[0]
    return NetdslSyntaxError(msg, span, notes=locals().get("notes", ()))


def _too_deep(path: str, text: str) -> NetdslSyntaxError:
    """The error for input nested past Python's recursion limit, at its deepest opening bracket."""
    depth, deepest, where = 0, 0, 0
    for i, ch in enumerate(text):
        if ch in "(<":
            depth += 1
            if depth > deepest:
                deepest, where = depth, i
        elif ch in ")>" and not (ch == ">" and text[i - 1:i] == "-"):
            depth = max(0, depth - 1)
    line = text.count("\n", 0, where) + 1
    col = where - (text.rfind("\n", 0, where) + 1) + 1
    return NetdslSyntaxError(f"nesting is too deep ({deepest} levels of brackets here); flatten the expression "
                             f"or the groups", Span(path, line, col, line, col + 1))


def parse(text: str, path: str = "<string>", *, quote: bool = True) -> Module:
    """Parse one file's text into a :class:`Module`. Raises NetdslSyntaxError.

    ``quote``: whether diagnostics may quote lines of ``text`` (false for a file that is not a ``.net`` source).
    """
    source = SourceFile(path, text) if quote else path  # spans made from a SourceFile quote its text
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise NetdslSyntaxError(f"source is larger than {MAX_SOURCE_BYTES // (1024 * 1024)} MiB",
                                Span(source, 1, 1, 1, 2))
    if "\t" in text:
        text = text.replace("\t", " ")  # columns count characters; tabs would misplace carets
    try:
        tree = _parse_tree(text, source)
        items = _Builder(source).transform(tree)
    except UnexpectedInput as exc:
        raise _syntax_error(source, text, exc) from None
    except VisitError as exc:  # a literal too long, or a name template that is not an expression
        while isinstance(exc, VisitError):
            exc = exc.orig_exc
        raise exc from None
    except RecursionError:
        raise _too_deep(source, text) from None
    imports = tuple(i for i in items if isinstance(i, Import))
    blocks = tuple(i for i in items if isinstance(i, BlockDef) and not i.is_network)
    networks = tuple(i for i in items if isinstance(i, BlockDef) and i.is_network)
    return Module(path, imports, blocks, networks)


def _parse_tree(text: str, path: str) -> Tree:
    """Lark's parse tree of a file's text, after the cheap limits, while counting tokens, then checked for depth."""
    _check_line_length(text, path)
    code = _blank_comments(text)
    _check_token_bound(code, path)
    try:
        tree = _parser().parse(code + "\n", start="start")
    except _TooManyTokens as exc:
        raise NetdslSyntaxError(_TOO_MANY_TOKENS, _tok_span(path, exc.token)) from None
    _check_depth(tree, path)
    return tree


_TOO_MANY_TOKENS = (f"the source has more than {MAX_TOKENS:,} tokens (names, numbers, symbols), the limit of one "
                    f"file; split it into files that `import` each other")
_STRING_OR_COMMENT = re.compile(r'"[^"\n]*"|#[^\n]*')
_TOKENISH = re.compile(r'"[^"\n]*"|[^ \t\f\r\n"]+|"')  # each match holds at least one token
_LONG_LINE = re.compile(r"(?:^|\n)([^\n]{" + str(MAX_LINE_CHARS + 1) + "})")  # tries only at line starts: linear
_EXPR_RULES = frozenset({"add", "sub", "mul", "floordiv", "mod", "neg", "eq", "ne", "lt", "le", "gt", "ge"})
_NESTING_RULES = frozenset({"group", "composite"})


def _blank_comments(text: str) -> str:
    """``text`` with every comment replaced by spaces: lines and columns stay where they were, and the lexer
    finds the end of a statement by scanning blanks only. A ``#`` inside a string is not a comment."""
    if "#" not in text:
        return text
    return _STRING_OR_COMMENT.sub(lambda m: m[0] if m[0][0] == '"' else " " * len(m[0]), text)


def _check_line_length(text: str, path: str) -> None:
    if len(text) <= MAX_LINE_CHARS:
        return
    m = _LONG_LINE.search(text)
    if m:
        line = text.count("\n", 0, m.start(1)) + 1
        raise NetdslSyntaxError(f"line is longer than {MAX_LINE_CHARS:,} characters", Span(path, line, 1, line, 2))


def _check_token_bound(code: str, path: str) -> None:
    """Refuse, before lexing, a source that certainly has more than MAX_TOKENS tokens."""
    if len(code) - code.count(" ") - code.count("\n") <= MAX_TOKENS:  # a token takes at least one character
        return
    for n, m in enumerate(_TOKENISH.finditer(code), 1):
        if n > MAX_TOKENS:
            line = code.count("\n", 0, m.start()) + 1
            col = m.start() - (code.rfind("\n", 0, m.start()) + 1) + 1
            raise NetdslSyntaxError(_TOO_MANY_TOKENS, Span(path, line, col, line, col + 1))


def _check_depth(tree: Tree, path: str) -> None:
    """Refuse expressions and brackets nested deeper than the later passes (which recurse) can follow."""
    stack = [(tree, 0, 0)]
    while stack:
        node, expr, nest = stack.pop()
        expr = expr + 1 if node.data in _EXPR_RULES else 0
        nest += node.data in _NESTING_RULES
        if expr > MAX_EXPR_DEPTH:
            raise NetdslSyntaxError(f"expression is too deep: more than {MAX_EXPR_DEPTH} operators nested in one "
                                    f"another; split it (e.g. compute a part as a block parameter)",
                                    _span(path, node.meta))
        if nest > MAX_NESTING:
            raise NetdslSyntaxError(f"nesting is too deep: more than {MAX_NESTING} levels of groups and "
                                    f"composites here; flatten the groups or move a part into a block",
                                    _span(path, node.meta))
        stack.extend((c, expr, nest) for c in node.children if isinstance(c, Tree))


class UnreadableSource(Exception):
    """A source file that cannot be read as one: ``reason`` says why, for a message; ``missing`` when it does
    not exist."""

    def __init__(self, reason: str, missing: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.missing = missing


def _not_regular(mode: int) -> UnreadableSource | None:
    import stat

    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return UnreadableSource("is a directory, not a .net file")
    kind = ("a named pipe" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "")
    return UnreadableSource("not a regular file" + (f" ({kind})" if kind else ""))


_READ_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_BINARY", 0))


def read_source_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a source file, reading at most MAX_SOURCE_BYTES + 1 of them.

    Only a regular file is opened (a named pipe would block, a device never end), and it is checked again once
    open, in case it was replaced in between. Raises :class:`UnreadableSource`.
    """
    try:
        bad = _not_regular(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        raise UnreadableSource("no such file", missing=True) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise UnreadableSource(f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if bad is not None:
        raise bad
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        raise UnreadableSource("no such file", missing=True) from None
    except OSError as exc:
        raise UnreadableSource(f"cannot read: {exc.strerror}") from None
    chunks, size = [], 0
    try:
        st = os.fstat(fd)
        bad = _not_regular(st.st_mode)
        if bad is not None:
            raise bad
        if st.st_size <= MAX_SOURCE_BYTES:
            while size <= MAX_SOURCE_BYTES:
                chunk = os.read(fd, min(1 << 20, MAX_SOURCE_BYTES + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        else:
            size = st.st_size
    except OSError as exc:
        raise UnreadableSource(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > MAX_SOURCE_BYTES:
        raise UnreadableSource(f"source is larger than {MAX_SOURCE_BYTES // (1024 * 1024)} MiB")
    return b"".join(chunks)


def read_source(path: str | os.PathLike, quote: bool = True) -> str:
    """Read a .net file as UTF-8 text, turning OS and decoding failures into NetdslErrors.

    ``quote``: whether the error about undecodable bytes may quote the line they are on.
    """
    shown = str(path)
    try:
        data = read_source_bytes(path)
    except UnreadableSource as exc:
        raise NetdslSyntaxError(f"{shown}: {exc.reason}") from None
    return decode_source(data, shown, quote)


def decode_source(data: bytes, shown: str, quote: bool = True) -> str:
    """A source file's bytes as text: UTF-8, without a byte order mark."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = data[: exc.start].decode("utf-8")
        line = text.count("\n") + 1
        col = len(text) - (text.rfind("\n") + 1) + 1
        # quote the line, undecodable bytes shown as U+FFFD; not for binary files
        where = SourceFile(shown, data.decode("utf-8", "replace")) if quote and b"\0" not in data[:4096] else shown
        raise NetdslSyntaxError(f"file is not UTF-8 text: byte 0x{data[exc.start]:02x} here cannot be decoded",
                                Span(where, line, col, line, col + 1)) from None
