"""`reshape D1 D2 ...` and `permute A B C`: shapes, located errors, the dynamic batch, and values against numpy and
PyTorch's ``reshape`` / ``permute``."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import dedent, netdsl_main, run_onnx

import netdsl
from netdsl.errors import SemanticError

YOLO_HEAD = dedent("""
    network head(anchors=3, classes=80) {
        input features: 256x13x13
        conv anchors*(5+classes) 1x1
        r: reshape anchors 5+classes 13 13
        p: permute 0 2 3 1
    }
""")


def one_layer(input_shape: str, layer: str) -> str:
    return f"network t {{\n    input image: {input_shape}\n    {layer}\n}}\n"


def test_a_detector_head_reshapes_and_permutes():
    net = netdsl.load(YOLO_HEAD)
    nodes = {n.name: n for n in net.graph.nodes}
    assert nodes["r"].shape == (3, 85, 13, 13) and nodes["p"].shape == (3, 13, 13, 85)
    model = net.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Conv", "Reshape", "Transpose"]
    for batch in (1, 3):  # the batch stays dynamic
        x = np.random.default_rng(batch).standard_normal((batch, 256, 13, 13)).astype(np.float32)
        out = run_onnx(model, {"features": x})
        assert out["output"].shape == (batch, 3, 13, 13, 85)
    args = netdsl.load(YOLO_HEAD, args={"anchors": 5, "classes": 20})
    assert args.graph.nodes[-1].shape == (5, 13, 13, 25)


@pytest.mark.parametrize(("shape", "layer", "expected"), [
    ((3, 4, 4), "reshape 3 16", (3, 16)),
    ((3, 4, 4), "reshape 48", (48,)),
    ((3, 4, 4), "reshape 12x4", (12, 4)),
    ((3, 4, 4), "reshape 6 2 2 2", (6, 2, 2, 2)),
    ((3, 4, 5), "permute 1 2 0", (4, 5, 3)),
    ((3, 4, 5), "permute 0 2 1", (3, 5, 4)),
    ((3, 4, 5), "permute 0 1 2", (3, 4, 5)),
    ((48,), "reshape 3 4 4", (3, 4, 4)),
])
def test_values_match_numpy(shape, layer, expected):
    net = netdsl.load(one_layer("x".join(map(str, shape)), layer))
    assert net.graph.nodes[-1].shape == expected
    model = net.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    (out,) = run_onnx(model, {"image": x}).values()
    op, *numbers = layer.split()
    if op == "reshape":
        want = x.reshape(2, *expected)
    else:
        want = x.transpose(0, *(int(a) + 1 for a in numbers))
    np.testing.assert_array_equal(out, want)


def test_a_permuted_tensor_feeds_the_ops_after_it():
    net = netdsl.load(one_layer("4x6x8", "permute 0 2 1 -> conv 2 3x3 -> reshape 2 24 -> reshape 2 4 6"))
    assert net.graph.nodes[-1].shape == (2, 4, 6)
    onnx.checker.check_model(net.to_onnx(), full_check=True)


@pytest.mark.parametrize(("layer", "message", "column"), [
    ("reshape 3 4 5", "reshape 3 4 5 holds 60 elements, but its input 3x4x4 has 48", 5),
    ("reshape 2 k", "reshape 2 2 holds 4 elements, but its input 3x4x4 has 48", 5),
    ("reshape 3x4 4", "reshape takes the new sizes as separate numbers (`reshape 3 85 13 13`) or as one size "
     "literal (`reshape 3x85x13x13`), not both", 13),
    ("reshape", "reshape needs the new sizes, e.g. `reshape 3 85 13 13`", 5),
    ("reshape 0 48", "reshape sizes must be positive, got 0", 13),
    ("reshape 3.5 2", "reshape takes the new sizes (integers), got 3.5", 13),
    ("reshape 48 pad", "`pad` is a layer", 16),
    ("reshape 48 @image", "reshape takes no tensor reference (`@image`)", 16),
    ("permute 0 1", "permute 0 1 must be a permutation of 0..2, the axes of its input 3x4x4 after the batch", 5),
    ("permute 0 0 1", "permute 0 0 1 must be a permutation of 0..2", 5),
    ("permute 1 2 3", "permute 1 2 3 must be a permutation of 0..2", 5),
    ("permute /2", "permute takes the axes in their new order (integers), got /2", 13),
    ("permute", "permute needs the axes in their new order, e.g. `permute 1 2 0`", 5),
])
def test_located_errors(layer, message, column):
    with pytest.raises(SemanticError) as e:
        netdsl.load(f"network t(k=2) {{\n    input image: 3x4x4\n    {layer}\n}}\n")
    assert message in str(e.value) and f"<string>:3:{column}: error:" in str(e.value)


def test_summary_shows_the_new_shapes(tmp_path):
    path = tmp_path / "head.net"
    path.write_text(YOLO_HEAD)
    code, out, err = netdsl_main("summary", str(path))
    assert code == 0, err
    assert "3x85x13x13" in out and "3x13x13x85" in out


@pytest.mark.torch
def test_matches_torch_reshape_and_permute():
    torch = pytest.importorskip("torch", reason="the comparison with torch.reshape / permute needs torch (optional)")
    net = netdsl.load(YOLO_HEAD)
    weights = {k: v for k, v in net.initial_weights(0).items()}
    x = np.random.default_rng(7).standard_normal((2, 256, 13, 13)).astype(np.float32)
    (out,) = run_onnx(net.to_onnx(weights=weights), {"features": x}).values()
    conv = torch.nn.Conv2d(256, 255, 1)
    conv.load_state_dict({"weight": torch.from_numpy(weights["0.weight"]), "bias": torch.from_numpy(weights["0.bias"])})
    with torch.no_grad():
        want = conv(torch.from_numpy(x)).reshape(2, 3, 85, 13, 13).permute(0, 1, 3, 4, 2).numpy()
    assert out.shape == want.shape
    assert np.abs(out - want).max() <= 1e-5 * np.abs(want).max()


def test_fmt_writes_a_parenthesised_layer_argument_without_spaces():
    from netdsl.fmt import format_source

    source = YOLO_HEAD.replace("conv anchors*(5+classes) 1x1", "conv anchors * ( 5 + classes ) 1x1")
    assert "conv anchors * ( 5" in source
    assert format_source(source) == YOLO_HEAD
