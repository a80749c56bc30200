"""`netdsl ops`: every op of the table listed with a syntax line generated from its options, one op in full,
JSON, and a one-line error with a suggestion for a name that is not an op."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import REPO, cli_env, netdsl_main

from netdsl.cli.ops import syntax_line
from netdsl.elaborate.composites import COMPOSITES
from netdsl.ops import MERGES, OPS, Op, Option


def test_every_registered_op_is_listed():
    rc, out, err = netdsl_main("ops")
    assert rc == 0 and err == ""
    names = {line.split()[0] for line in out.splitlines() if line.startswith("  ") and line[2] != " "}
    assert {op.name for op in OPS.values()} | set(MERGES) | set(COMPOSITES) <= names


def test_json_lists_every_op_name_and_alias():
    rc, out, _ = netdsl_main("ops", "--json")
    assert rc == 0
    listed = json.loads(out)
    written = {n for e in listed for n in (e["name"], *e["aliases"])}
    assert set(OPS) | set(MERGES) | set(COMPOSITES) <= written
    kinds = {e["name"]: e["kind"] for e in listed}
    assert kinds["conv"] == "layer" and kinds["concat"] == "merge" and kinds["residual"] == "composite"
    assert all(e["syntax"] and e["meaning"] and e["docs"] for e in listed)


@pytest.mark.parametrize("name", sorted({op.name for op in OPS.values()}))
def test_each_syntax_line_names_every_option(name):
    op = OPS[name]
    line = syntax_line(op)
    assert line.split()[0] == op.name
    for opt in op.options:
        if opt.positional:
            assert opt.name.upper() in line.split() or f"[{opt.name.upper()}]" in line.split()
        elif opt.name == "stride":
            assert "[/STRIDE]" in line
        else:
            assert f"[{opt.name}" in line or f"{opt.name} " in line


def test_the_syntax_line_follows_the_options():
    class Toy(Op):
        name = "toy"
        options = (Option("out", "int", positional=True, required=True), Option("size", "int", 3, positional=True),
                   Option("stride", "pair", (1, 1)), Option("pad", "pad", (0, 0), aliases=("padding",)),
                   Option("eps", "float", 1e-5), Option("mode", "int", required=True), Option("fast", "flag"))

    assert syntax_line(Toy()) == "toy OUT [SIZE] [/STRIDE] [pad N|HxW|same] [eps X] mode N [fast]"


def test_one_op_in_full():
    rc, out, err = netdsl_main("ops", "conv")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "conv: 2-D convolution"
    assert lines[1].startswith("  syntax:  conv OUT KERNEL [/STRIDE] [pad N|HxW|same]")
    assert "    pad (also padding)     pad    default 0x0" in lines
    assert "    dilation (also dil)    pair   default 1x1" in lines
    assert "    OUT                    int    required  the number of output channels" in lines
    assert "  ONNX:    Conv" in lines and "  docs:    docs/language.md §12 (layer reference)" in lines


def test_an_alias_shows_its_op():
    rc, out, _ = netdsl_main("ops", "batchnorm")
    assert rc == 0 and out.startswith("bn: batch normalisation") and "  aliases: batchnorm" in out
    rc, out, _ = netdsl_main("ops", "bn", "--json")
    entry = json.loads(out)
    assert entry["name"] == "bn" and entry["onnx"] == ["BatchNormalization"]
    assert [o["name"] for o in entry["options"]] == ["eps", "momentum"] and entry["options"][0]["default"] == 1e-5


@pytest.mark.parametrize(("name", "hint"), [
    ("dense", "; did you mean `fc`?"),
    ("Conv2d", "; did you mean `conv`?"),
    ("max_pool2d", "; did you mean `maxpool`?"),
    ("cat", "; did you mean `concat`?"),
    ("reluu", "; did you mean `relu` or `relu6`?"),
    ("zzz", " (`netdsl ops` lists every op)"),
])
def test_an_unknown_name_is_one_line_with_a_suggestion(name, hint):
    rc, out, err = netdsl_main("ops", name)
    assert rc == 1 and out == ""
    assert err == f"netdsl: error: no op named `{name}`{hint}\n"


def test_ops_loads_neither_onnx_nor_numpy():
    code = ("import sys; from netdsl.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'onnx', 'onnxruntime', 'ml_dtypes', 'numpy'}), file=sys.stderr)")
    for argv in (["ops"], ["ops", "conv", "--json"]):
        proc = subprocess.run([sys.executable, "-c", code, *argv], env=cli_env(), capture_output=True, text=True,
                              timeout=120, cwd=REPO)
        assert proc.stderr.splitlines()[-1] == "0 []", proc.stderr
