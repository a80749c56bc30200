"""The pass interface (netdsl.passes): fold-bn and fp16 are Passes returning PassResults, chained in one place."""

from __future__ import annotations

import onnx
from onnx import TensorProto

import netdsl
from netdsl.optimize import FoldBatchNorm, optimize, standard_passes
from netdsl.passes import Pass, PassResult, run_passes
from netdsl.precision import ToFp16, to_fp16

NET = """
network p(classes=3) {
    input image: 3x8x8
    c: conv 4 3x3 pad 1 nobias -> cbn: bn -> relu
    avgpool global -> flatten
    head: fc classes
    output logits
}
"""


def _net() -> netdsl.Network:
    return netdsl.load(NET)


def test_both_passes_follow_the_interface():
    model = _net().to_onnx()
    for p, name in ((FoldBatchNorm(), "fold-bn"), (ToFp16(keep_io_fp32=True), "fp16")):
        assert isinstance(p, Pass)
        assert p.name == name
        result = p(model)
        assert isinstance(result.model, onnx.ModelProto) and result.changed >= 1
    assert FoldBatchNorm()(model).changed == 1  # one bn folded into its conv


def test_the_fp16_pass_is_to_fp16():
    model = _net().to_onnx()
    result = ToFp16(keep_io_fp32=True)(model)
    assert result.model.SerializeToString() == to_fp16(model, keep_io_fp32=True).SerializeToString()
    floats = [t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT]
    assert result.changed == len(floats)
    assert all(t.data_type == TensorProto.FLOAT for t in model.graph.initializer)  # the input is left alone


def test_run_passes_chains_in_order_and_adds_up_changes():
    model = _net().to_onnx()
    folded = FoldBatchNorm()(model)
    half = ToFp16()(folded.model)
    chained = run_passes(model, [FoldBatchNorm(), ToFp16()])
    assert chained.model.SerializeToString() == half.model.SerializeToString()
    assert chained.changed == folded.changed + half.changed
    assert run_passes(model, []) == PassResult(model, 0)


def test_to_onnx_optimize_and_standard_passes_agree():
    net = _net()
    base = net.to_onnx()
    passes = standard_passes(fold_bn=True, fp16=True, keep_io_fp32=True)
    assert [p.name for p in passes] == ["fold-bn", "fp16"]
    expected = run_passes(base, passes).model.SerializeToString()
    assert net.to_onnx(fold_bn=True, dtype="fp16", keep_io_fp32=True).SerializeToString() == expected
    assert optimize(base, fold_bn=True, fp16=True, keep_io_fp32=True).SerializeToString() == expected
    assert optimize(base) is base
