"""The TextMate grammar of editors/textmate, run by a real TextMate tokenizer (vscode-textmate with
vscode-oniguruma, under node) on the zoo and on a fixture with every kind of token."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from netdsl.ops import MERGES, OPS

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tests" / "textmate"
GRAMMAR = ROOT / "editors" / "textmate" / "netdsl.tmLanguage.json"
FIXTURE = ROOT / "tests" / "fixtures" / "textmate" / "all_tokens.net"
ZOO = sorted((ROOT / "networks").glob("*.net"))


@pytest.fixture(scope="module")
def tokens() -> dict[str, list]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (the TextMate tokenizer runs under node)")
    if not (TOOL / "node_modules" / "vscode-textmate").is_dir():
        pytest.skip("vscode-textmate is not installed: run `npm ci` in tests/textmate")
    r = subprocess.run(["node", str(TOOL / "tokenize.js"), str(FIXTURE), *map(str, ZOO)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return {Path(k).name: v for k, v in json.loads(r.stdout).items()}


def scopes_of(tokens: list, text: str, line: int | None = None) -> list[str]:
    """The innermost scope of every token whose text is ``text`` (on ``line``, 0-based, if given)."""
    return [t[4][-1] for t in tokens if t[3] == text and (line is None or t[0] == line)]


def test_fixture_every_token_kind(tokens):
    t = tokens["all_tokens.net"]
    expected = {
        "# every kind of token of the language, for the TextMate grammar test": "comment.line.number-sign.netdsl",
        "import": "keyword.control.import.netdsl", '"lib/blocks.net"': "string.quoted.double.netdsl",
        "block": "storage.type.netdsl", "all": "entity.name.function.netdsl", "network": "storage.type.netdsl",
        "residual": "keyword.other.composite.netdsl", "conv": "keyword.other.op.netdsl",
        "leaky_relu": "keyword.other.op.netdsl", "maxpool": "keyword.other.op.netdsl",
        "a": "entity.name.tag.label.netdsl", "stem": "entity.name.tag.label.netdsl",
        '"part{i * 2}"': "entity.name.tag.label.netdsl",
        "pad": "variable.parameter.option.netdsl", "groups": "variable.parameter.option.netdsl",
        "nobias": "variable.parameter.option.netdsl", "eps": "variable.parameter.option.netdsl",
        "@a": "variable.other.reference.netdsl", "@input": "variable.other.reference.netdsl",
        "@stem": "variable.other.reference.netdsl", "add": "support.function.merge.netdsl",
        "3x3": "constant.numeric.size.netdsl", "3x32x32": "constant.numeric.size.netdsl",
        "1e-5": "constant.numeric.netdsl", "0.1": "constant.numeric.netdsl", "16": "constant.numeric.netdsl",
        "->": "keyword.operator.arrow.netdsl", "|": "punctuation.separator.branch.netdsl",
        "//": "keyword.operator.arithmetic.netdsl", "!=": "keyword.operator.comparison.netdsl",
        "if": "keyword.control.netdsl", "as": "keyword.control.netdsl", "x": "keyword.operator.repeat.netdsl",
        "input": "keyword.control.netdsl", "output": "keyword.control.netdsl",
        "image": "variable.other.definition.netdsl", "logits": "variable.other.definition.netdsl",
        "{": "punctuation.section.block.netdsl", "<": "punctuation.definition.composite.netdsl",
    }
    for text, scope in expected.items():
        found = scopes_of(t, text)
        assert found and set(found) == {scope}, (text, found)
    lines = FIXTURE.read_text().splitlines()
    unit_call = lines.index('    "part{i * 2}": unit(c) x 2 as i')
    assert scopes_of(t, "unit", unit_call) == ["entity.name.function.call.netdsl"]
    stride = lines.index("        a: conv c k /2 pad p groups 2 nobias -> bn eps 1e-5 -> leaky_relu 0.1")
    assert scopes_of(t, "/", stride) == ["keyword.operator.stride.netdsl"]


def test_zoo_ops_comments_and_labels(tokens):
    for path in ZOO:
        t = tokens[path.name]
        text = path.read_text()
        comments = [tok for tok in t if tok[4][-1].startswith("comment")]
        assert len(comments) == sum(1 for line in text.splitlines() if "#" in line), path.name
        ops = {tok[3] for tok in t if tok[4][-1] == "keyword.other.op.netdsl"}
        assert ops and ops <= set(OPS), path.name
        for i, tok in enumerate(t):  # a label is always followed by its colon (`avgpool: avgpool 7x7` too)
            if tok[4][-1] == "entity.name.tag.label.netdsl":
                assert t[i + 1][3].strip() in (":", "") and ":" in t[i + 1][3] + t[i + 2][3], (path.name, tok)
        plain = [tok[3] for tok in t if len(tok[4]) == 1 and tok[3].strip()]  # no scope but the file's
        bad = [p for p in plain if p.strip() != ":" and not all(w.isidentifier() for w in p.split())]
        assert not bad, (path.name, bad)  # every number, size, operator and bracket is scoped


def test_grammar_knows_every_op_and_merge():
    g = json.loads(GRAMMAR.read_text())
    ops = g["repository"]["op"]["match"].removeprefix(r"\b(").removesuffix(r")\b").split("|")
    assert sorted(ops) == sorted(OPS)
    merges = g["repository"]["merge"]["match"].removeprefix(r"\b(").split(")")[0].split("|")
    assert sorted(merges) == sorted(MERGES)
