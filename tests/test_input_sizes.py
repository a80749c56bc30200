"""Input sizes as expressions of network parameters: ``input image: 3 x size x size``, ``--arg size=64``."""

from __future__ import annotations

import json

import pytest
from helpers import dedent, netdsl_main, run_onnx

import netdsl
from netdsl import syntax as S
from netdsl.errors import SemanticError
from netdsl.fmt import format_source

FCN = dedent("""
    network fcn(size=32, c=3) {
        input image: c x size x 2*size
        conv 8 3x3 pad 1 -> relu -> maxpool 2x2 /2
        conv 4 1x1
    }
""")


def test_a_literal_size_keeps_working():
    decl = S.parse("network t {\n    input image: 3x8x8\n    relu\n}\n").networks[0].body[0]
    assert decl.shape == (3, 8, 8)
    assert [(d.span.column, d.span.end_column) for d in decl.dims] == [(18, 19), (20, 21), (22, 23)]
    assert netdsl.load("network t {\n    input image: 3x8x8\n    relu\n}\n").graph.inputs[0].shape == (3, 8, 8)


def test_spaced_literals_mean_the_same_as_a_literal():
    spaced = S.parse("network t {\n    input image: 3 x 8x8\n    relu\n}\n").networks[0].body[0]
    assert spaced.shape == (3, 8, 8)


def test_the_size_follows_the_parameters():
    decl = S.parse(FCN).networks[0].body[0]
    assert decl.shape is None and [type(d).__name__ for d in decl.dims] == ["Var", "Var", "BinOp"]
    assert netdsl.load(FCN).graph.inputs[0].shape == (3, 32, 64)
    net = netdsl.load(FCN, args={"size": 48, "c": 1})
    assert net.graph.inputs[0].shape == (1, 48, 96)
    assert net.graph.nodes[-1].shape == (4, 24, 48)


def test_the_onnx_model_has_the_size_asked_for():
    model = netdsl.load(FCN, args={"size": 16}).to_onnx(seed=0)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == [3, 16, 32]
    (out,) = run_onnx(model).values()
    assert out.shape[1:] == (4, 8, 16)


def test_arg_overrides_the_size_on_the_command_line(tmp_path):
    path = tmp_path / "fcn.net"
    path.write_text(FCN, encoding="utf-8")
    rc, out, err = netdsl_main("summary", str(path), "--arg", "size=8", "--json")
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["inputs"][0]["shape"] == [3, 8, 16]


@pytest.mark.parametrize(("args", "message", "column"), [
    ({"size": 2.5}, "an input size must be a positive integer, got 2.5 (from `size` = 2.5)", 22),
    ({"size": 0}, "an input size must be a positive integer, got 0 (from `size` = 0)", 22),
    ({"c": -1}, "an input size must be a positive integer, got -1 (from `c` = -1)", 18),
])
def test_a_wrong_size_is_an_error_at_its_dimension(args, message, column):
    with pytest.raises(SemanticError) as err:
        netdsl.load(FCN, args=args)
    errors = [d for d in err.value.diagnostics if d.severity == "error"]
    assert errors[0].message == message
    assert (errors[0].span.line, errors[0].span.column) == (2, column)
    # no cascade: the layers after the input and the network are not reported as lacking one
    assert not any("input" in d.message and "declare" in d.message for d in errors)


def test_an_unknown_name_in_a_size_is_located():
    with pytest.raises(SemanticError) as err:
        netdsl.load("network t(size=8) {\n    input image: 3 x siz x size\n    relu\n}\n")
    (d,) = err.value.diagnostics
    assert d.message == "unknown name `siz`; did you mean `size`?" and (d.span.line, d.span.column) == (2, 22)


def test_a_size_glued_to_names_gets_a_hint():
    with pytest.raises(netdsl.errors.NetdslSyntaxError) as err:
        S.parse("network t(size=8) {\n    input image: 3xsizexsize\n    relu\n}\n", "t.net")
    (d,) = err.value.diagnostics
    assert "(`3 x size x size`)" in d.message and (d.span.line, d.span.column) == (2, 18)


@pytest.mark.parametrize(("written", "canonical"), [
    ("3 x 224 x 224", "3x224x224"),
    ("3x224 x 224", "3x224x224"),
    ("3 x size x size", "3 x size x size"),
    ("3 x 2 * size x (size + 1)", "3 x 2*size x (size+1)"),
    ("c x size//2 x size", "c x size//2 x size"),
])
def test_fmt_writes_a_size_canonically(written, canonical):
    source = f"network t(size=8, c=3) {{\n    input image: {written} mean=(0.5, 0.5, 0.5)\n    relu\n}}\n"
    out = format_source(source)
    assert out == f"network t(size=8, c=3) {{\n    input image: {canonical} mean=(0.5, 0.5, 0.5)\n    relu\n}}\n"
    assert format_source(out) == out
    assert netdsl.load(out).graph.inputs[0].shape == netdsl.load(source).graph.inputs[0].shape
