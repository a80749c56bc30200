"""Properties of `netdsl fmt` (netdsl.fmt.format_source), with hypothesis, over three sources of input:

- generated programs: blocks and a network built from the language's constructs (layers, calls, composites,
  groups, labels, `x N`, `if`), laid out at random (spaces, indentation, line breaks wherever the grammar allows
  one, blank lines, own-line and trailing comments);
- the zoo with its layout changed at random (indentation, spaces around punctuation, blank lines, trailing
  spaces), which must format back to the zoo's own text: the layout is canonical;
- the zoo with random deletions, insertions and duplications (tests/test_check_fuzz.py's mutations), kept when they
  still parse; when they do not, `netdsl fmt` must leave the file untouched and report what `check` reports.

The properties: formatting is idempotent; the comments (text and order) are the same before and after; the
program means the same. Meaning is compared three ways, from the cheapest: the syntax trees without their
positions; the checked graphs (every node's name, op, attributes, inputs, shapes, weight specs and call trace,
the inputs, outputs and warnings; or the same error messages when the program does not check), locations taken
out; and for generated programs the compiled ONNX bytes, with the two things that must change taken out: each
node's doc string (its source location: lines move when a file is formatted) and the model's
``netdsl.source_sha256`` metadata (the hash of the source text). Everything else, weights included, is compared
byte for byte.

The examples are derandomized. NETDSL_FMT_EXAMPLES multiplies their number (default 1: 2,100 in
all; e.g. NETDSL_FMT_EXAMPLES=10 for a longer run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_check_fuzz import mutated_zoo

import netdsl
from netdsl import cli
from netdsl.errors import NetdslError, NetdslSyntaxError, Span
from netdsl.fmt import format_source
from netdsl.syntax import parse

NETWORKS = Path(__file__).resolve().parent.parent / "networks"
ZOO = {p.name: p.read_text(encoding="utf-8") for p in sorted(NETWORKS.glob("*.net"))}
SCALE = float(os.environ.get("NETDSL_FMT_EXAMPLES", "1"))
# no shrinking: a failure is reported as drawn, and a failing run stays short
PROPERTY = settings(derandomize=True, deadline=None, database=None, phases=(Phase.explicit, Phase.generate),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much,
                                           HealthCheck.large_base_example])


def examples(n: int) -> int:
    return max(1, round(n * SCALE))


# ----------------------------------------------------------------------------- what is compared
_STRING_OR_COMMENT = re.compile(r'"[^"\n]*"|#[^\n]*')
_LOCATION = re.compile(r"(<string>|[\w./-]+\.net):\d+:\d+")


def comments(text: str) -> list[str]:
    """Every comment's text, in order (trailing blanks aside): the front end's own definition of a comment."""
    return [m[0].rstrip() for m in _STRING_OR_COMMENT.finditer(text.replace("\t", " ")) if m[0].startswith("#")]


def tree(node):
    """A syntax tree without positions."""
    if isinstance(node, Span):
        return None
    if isinstance(node, tuple | list):
        return tuple(tree(n) for n in node)
    if dataclasses.is_dataclass(node):
        return (type(node).__name__,) + tuple(tree(getattr(node, f.name)) for f in dataclasses.fields(node)
                                              if not f.name.endswith("span") and f.name != "path")
    return node


def unplaced(text: str) -> str:
    return _LOCATION.sub(r"\1:L:C", str(text))


def graph(text: str):
    """The checked graph without source locations, or the error messages when the program does not check."""
    try:
        net = netdsl.load(text)
    except NetdslError as exc:
        return ("error", tuple((d.severity, unplaced(d.message), tuple(map(unplaced, d.notes)))
                               for d in exc.diagnostics))
    g = net.graph
    nodes = tuple((n.name, type(n.op).__name__, getattr(n.op, "name", ""), unplaced(repr(dict(n.attrs))), n.inputs,
                   n.in_shapes, n.shape, repr(n.weights), tuple(map(unplaced, n.trace))) for n in g.nodes)
    return (g.name, nodes, tuple((i.name, i.shape, i.node, repr(i.options)) for i in g.inputs),
            tuple((o.name, o.node) for o in g.outputs), tuple(unplaced(w.message) for w in g.warnings))


def onnx_bytes(text: str) -> bytes:
    """The compiled model, less node doc strings (source locations) and the source text's hash."""
    model = netdsl.load(text).to_onnx()
    for node in model.graph.node:
        node.doc_string = ""
    for prop in model.metadata_props:
        if prop.key == "netdsl.source_sha256":
            prop.value = ""
    return model.SerializeToString()


def check_formatting(text: str, compare_graphs: bool = True) -> str:
    """format_source(text): idempotent, same comments, same syntax tree, and (optionally) same checked graph."""
    out = format_source(text)
    assert format_source(out) == out, (text, out)
    assert comments(out) == comments(text), (text, out)
    assert tree(parse(out)) == tree(parse(text)), (text, out)
    if compare_graphs:
        assert graph(out) == graph(text), (text, out)
    return out


# ----------------------------------------------------------------------------- generated programs
# A program is drawn from one seeded random.Random (hypothesis draws the seed): far cheaper than a draw per choice.
BR, NL = object(), object()  # a place where a line break may go; one where a line break must go
COMMENTS = ["# note", "#", "## -> | < > ( ) { }", '# "quoted" x 2', "#tight", "#   spaced   out", "# é ünïcode"]
LAYERS = [["conv", "8", "3x3", "pad", "1"], ["conv", "4", "1x1"], ["relu"], ["bn"], ["bn", "eps", "0.001"],
          ["maxpool", "3x3", "/", "1", "pad", "1"], ["avgpool", "3x3", "/", "1", "pad", "1", "ceil"], ["identity"],
          ["dropout", "0.5"], ["conv", "8", "3x3", "/", "1", "pad", "1", "nobias"], ["sigmoid"]]
BLOCK_LAYERS = [["conv", "c", "*", "2", "1x1"], ["conv", "c", "k", "pad", "k", "//", "2"],
                ["conv", "c", "+", "1", "-", "1", "3x3", "pad", "k", "*", "2", "//", "2", "-", "2"]]
CALL_ARGS = [["8"], ["4", ",", BR, "k", "=", "1"], ["c", "=", "4"], ["2", "*", "4", ","], ["8", ",", BR, "3"]]
REPEATS = [["2"], ["1"], ["(", "1", "+", "1", ")"]]
CONDITIONS = [["1"], ["0"], ["(", "2", "*", "2", "==", "4", ")"]]


class Program:
    def __init__(self, rnd):
        self.rnd, self.labels, self.blocks = rnd, 0, []

    def chain(self, depth: int, in_block: bool) -> list:
        out: list = []
        for i in range(self.rnd.randint(1, 2)):
            if i:
                out += [BR, "->", BR]
            out += self.element(depth, in_block)
        return out

    def element(self, depth: int, in_block: bool) -> list:
        rnd, out = self.rnd, []
        labelled = rnd.randint(0, 3) == 0
        if labelled:
            self.labels += 1
            out += [f"l{self.labels}", ":"] if rnd.random() < 0.5 else [f'"n{self.labels}_{{1 + 1}}"', ":"]
        kinds = ["layer"] * 4 + (["composite", "group"] if depth < 2 else []) + (["call"] if self.blocks else [])
        kind = rnd.choice(kinds)
        if kind == "layer":
            out += rnd.choice(LAYERS + (BLOCK_LAYERS if in_block else []))
        elif kind == "call":
            out += [rnd.choice(self.blocks), "("] + rnd.choice(CALL_ARGS) + [")"]
        elif kind == "group":
            out += ["(", BR] + self.sequence(depth + 1, in_block) + [BR, ")"]
        else:
            kind = rnd.choice(["residual", "inception", "seq"])
            n = {"residual": rnd.randint(1, 2), "seq": 1}.get(kind, rnd.randint(2, 3))
            out += [kind, "<", BR]
            for b in range(n):
                if b:
                    out += [BR, "|", BR]
                out += self.sequence(depth + 1, in_block)
            out += [BR, ">"]
        if not labelled and rnd.randint(0, 4) == 0:  # a labelled element repeated needs a name template
            out += ["x"] + rnd.choice(REPEATS)
        if rnd.randint(0, 5) == 0:
            out += ["if"] + rnd.choice(CONDITIONS + ([["(", "c", ">", "1", ")"]] if in_block else []))
        return out

    def sequence(self, depth: int, in_block: bool) -> list:
        out: list = []
        for i in range(self.rnd.randint(1, 2)):
            if i:
                out.append(NL)
            out += self.chain(depth, in_block)
        return out

    def pieces(self) -> list:
        rnd, out = self.rnd, []
        for b in range(rnd.randint(0, 2)):
            params = rnd.choice([["c", ",", "k", "=", "3"], ["c", ",", BR, "k", "=", "3", ","],
                                 ["c", "=", "8", ",", "k", "=", "1", "+", "2"]])
            out += ["block", f"b{b}", "("] + params + [")", "{", BR] + self.sequence(0, True) + [BR, "}", NL]
            self.blocks.append(f"b{b}")
        out += ["network", "t", "{", BR, "input", "image", ":", "3x8x8", NL]
        for _ in range(rnd.randint(1, 2)):
            out += self.chain(0, False) + [NL]
        out += ["avgpool", "global", "->", BR, "flatten", "->", "fc", "10", NL, "output", "logits", BR, "}"]
        return out


_WORD = re.compile(r"[\w\"@.]")


def laid_out(rnd, pieces: list) -> str:
    """The program's tokens with random spaces, indentation, line breaks, blank lines and comments."""
    text: list[str] = []
    prev = ""
    for p in pieces:
        if p is BR or p is NL:
            if p is NL or rnd.randint(0, 2) == 0:
                if rnd.randint(0, 3) == 0:
                    text.append(" " * rnd.randint(0, 3) + rnd.choice(COMMENTS))
                text.append("\n" * rnd.randint(1, 3))
                while rnd.randint(0, 4) == 0:
                    text.append(" " * rnd.randint(0, 9) + rnd.choice(COMMENTS) + "\n")
                text.append(" " * rnd.randint(0, 10))
                prev = ""
            continue
        need = bool(prev) and bool(_WORD.search(prev[-1])) and bool(_WORD.match(p))
        if prev:
            text.append(" " * rnd.randint(1 if need else 0, 3))
        text.append(p)
        prev = p
    if rnd.random() < 0.5:
        text.append(" " * rnd.randint(0, 2) + rnd.choice(COMMENTS))
    text.append("\n" * rnd.randint(0, 3))
    return "".join(text)


@st.composite
def generated(draw) -> str:
    rnd = random.Random(draw(st.integers(0, 2**64 - 1)))
    return laid_out(rnd, Program(rnd).pieces())


def test_generated_programs_parse():
    """The generator writes programs that parse and mostly check: the properties below are not vacuous."""
    seen = {"parse": 0, "check": 0}

    @settings(PROPERTY, max_examples=100)
    @given(generated())
    def probe(text):
        parse(text)
        seen["parse"] += 1
        seen["check"] += graph(text)[0] != "error"

    probe()
    assert seen["parse"] == 100 and seen["check"] >= 50, seen


@settings(PROPERTY, max_examples=examples(650))
@given(generated())
def test_generated_programs(text):
    check_formatting(text, compare_graphs=False)


@settings(PROPERTY, max_examples=examples(150))
@given(generated())
def test_generated_programs_check_the_same(text):
    assert graph(check_formatting(text)) == graph(text)


@settings(PROPERTY, max_examples=examples(150))
@given(generated())
def test_generated_programs_compile_to_the_same_onnx(text):
    out = format_source(text)
    try:
        before = onnx_bytes(text)
    except NetdslError:
        with pytest.raises(NetdslError):
            onnx_bytes(out)
        return
    assert onnx_bytes(out) == before, (text, out)


# ----------------------------------------------------------------------------- the zoo, laid out differently
_PUNCT = re.compile(r"\s*(->|//|==|!=|<=|>=|[,:=|)<>+*])\s*")


@st.composite
def zoo_layouts(draw) -> tuple[str, str]:
    """A zoo file and the same program laid out differently (comments and line breaks unchanged)."""
    name = draw(st.sampled_from(sorted(ZOO)))
    lines = ZOO[name].splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i].rstrip("\n")
        m = _STRING_OR_COMMENT.search(line)
        while m is not None and m[0].startswith('"'):
            m = _STRING_OR_COMMENT.search(line, m.end())
        code, comment = (line[:m.start()], line[m.start():]) if m else (line, "")
        kind = draw(st.sampled_from(["indent", "punctuation", "blank", "trailing"]))
        if kind == "indent" and code.strip():
            code = " " * draw(st.integers(0, 12)) + code.lstrip()
        elif kind == "punctuation" and code.strip():
            parts = re.split(r'("[^"]*")', code)  # strings untouched
            spaced = []
            for j, part in enumerate(parts):
                if j % 2 == 0:
                    part = _PUNCT.sub(lambda mm: " " * draw(st.integers(0, 2)) + mm[1] + " " * draw(st.integers(0, 2))
                                      if draw(st.booleans()) else mm[0], part)
                spaced.append(part)
            indent = len(code) - len(code.lstrip())
            code = code[:indent] + "".join(spaced).lstrip()
        elif kind == "trailing":
            code += " " * draw(st.integers(1, 4))
        elif kind == "blank" and not line.strip():
            lines[i] = "\n" * draw(st.integers(1, 4))
            continue
        lines[i] = code + (" " * draw(st.integers(0, 6)) + comment if comment and code.strip() else comment) + "\n"
    return name, "".join(lines)


@settings(PROPERTY, max_examples=examples(650))
@given(zoo_layouts())
def test_zoo_layouts_format_back_to_the_zoo(case):
    name, text = case
    assert format_source(text) == ZOO[name], (name, text)


def test_the_zoo_means_the_same_once_formatted():
    """Formatting the zoo after undoing its layout (every line flush left, spaces around punctuation gone)
    gives back the zoo, with the same checked graphs."""
    for name, text in ZOO.items():
        flat = "\n".join(_PUNCT.sub(r"\1", line.strip()) if "#" not in line and '"' not in line else line.strip()
                         for line in text.splitlines()) + "\n"
        assert flat != text
        assert format_source(flat) == text, name
        assert graph(flat) == graph(text), name


# ----------------------------------------------------------------------------- the zoo, mutated
@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fmt")


def run(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = cli.main(list(argv))
    return rc, err.getvalue()


@settings(PROPERTY, max_examples=examples(400))
@given(mutated_zoo())
def test_mutated_zoo(folder, data):
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
        parse(text)
    except (UnicodeDecodeError, NetdslError):
        path = folder / "bad.net"
        path.write_bytes(data)
        rc, err = run("fmt", str(path))
        assert rc == 1 and "error" in err and "internal error" not in err, err
        assert path.read_bytes() == data, "a file that does not parse was rewritten"
        assert run("check", str(path)) == (1, err), "fmt reports a syntax error differently from check"
        with pytest.raises(NetdslError):
            format_source(text)
        return
    check_formatting(text, compare_graphs=False)  # the same syntax tree: the same program


def test_syntax_errors_are_the_parser_s():
    """format_source raises the parser's own error, quoted the same way."""
    bad = ZOO["resnet50.net"].replace("    > -> relu", "    >> -> relu")
    with pytest.raises(NetdslSyntaxError) as a:
        format_source(bad, "resnet50.net")
    with pytest.raises(NetdslSyntaxError) as b:
        parse(bad, "resnet50.net")
    assert str(a.value) == str(b.value) and "resnet50.net:" in str(a.value)
