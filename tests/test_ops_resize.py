"""Resizing ops and tensor references as layer arguments: `upsample S`, `resize to HxW`, `resize like @ref`.

Shapes are checked against the ONNX checker (full) and against what ONNX Runtime produces; values against
``torch.nn.functional.interpolate`` (the tests marked ``torch``).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import actual_shapes, dedent, netdsl_main, run_onnx

import netdsl
from netdsl.errors import SemanticError
from netdsl.fmt import format_source


def one_layer(input_shape: str, layer: str) -> str:
    return f"network t {{\n    input image: {input_shape}\n    {layer}\n}}\n"


def compiled(source: str) -> tuple[netdsl.Network, onnx.ModelProto]:
    """The network and its ONNX model, which passes the full checker and whose output shape ONNX Runtime
    confirms."""
    net = netdsl.load(source)
    model = net.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    out = net.graph.outputs[0]
    assert actual_shapes(model)[out.name] == (2, *net.graph.nodes[out.node].shape)
    return net, model


def error_of(source: str) -> str:
    with pytest.raises(SemanticError) as e:
        netdsl.load(source)
    return str(e.value)


# ----------------------------------------------------------------------------- shapes (no torch)
@pytest.mark.parametrize(("shape", "layer", "expected"), [
    ("3x5x7", "upsample 2", (3, 10, 14)),
    ("3x5x7", "upsample 3 bilinear", (3, 15, 21)),
    ("3x5x7", "upsample 1.5", (3, 7, 10)),  # PyTorch: floor(W * S)
    ("3x13x11", "upsample 2.3 bilinear align_corners", (3, 29, 25)),
    ("3x13x11", "upsample 0.7", (3, 9, 7)),
    ("3x9x9", "upsample 1.7 bilinear", (3, 15, 15)),  # 9 * 1.7 = 15.3; float32(1.7) * 9 rounds to 15.3 too
    ("3x10x10", "upsample 2.3", (3, 23, 23)),  # float32(2.3) * 10 < 23: the ONNX scale is nudged up
    ("4x5x7", "resize to 12x9", (4, 12, 9)),
    ("4x5x7", "resize to 3 bilinear", (4, 3, 3)),
    ("4x5x7", "resize to 1x1 bilinear", (4, 1, 1)),
])
def test_resize_shapes(shape, layer, expected):
    net, _ = compiled(one_layer(shape, layer))
    assert net.graph.nodes[-1].shape == expected


def test_resize_like_a_network_input_and_a_labelled_layer():
    net, model = compiled(dedent("""
        network seg(classes=3) {
            input image: 3x33x31
            stem: conv 8 3x3 /2 pad 1 -> relu
            conv 8 3x3 /2 pad 1 -> relu -> conv classes 1x1
            up: resize like @stem bilinear
            resize like @image bilinear align_corners
        }
    """))
    nodes = {n.name: n for n in net.graph.nodes}
    assert nodes["up"].shape == (3, 17, 16) and nodes["up"].in_shapes == ((3, 9, 8), (8, 17, 16))
    assert net.graph.nodes[-1].shape == (3, 33, 31)
    assert net.graph.nodes[-1].inputs[1] == 0  # @image is the layer's second graph input
    # the referenced tensor gives a size, not values: the receptive field comes from the first input only
    rows = {r.name: r for r in net.summary().layers}
    assert rows["up"].receptive_field == (7 + 4, 7 + 4)  # bilinear: 2 inputs per axis at a jump of 4


def test_resize_like_a_tensor_passed_to_a_block():
    net, _ = compiled(dedent("""
        block up(skip, c) {
            resize like @skip -> conv c 1x1
        }
        network t {
            input image: 3x16x16
            a: conv 4 3x3 /2 pad 1
            b: conv 4 3x3 /2 pad 1
            up(@a, 5)
        }
    """))
    assert net.graph.nodes[-1].shape == (5, 8, 8)


@pytest.mark.parametrize(("layer", "message", "column"), [
    ("resize like @nope", "unknown tensor `@nope`", 17),
    ("relu @image", "relu takes no tensor reference (`@image`)", 10),
    ("conv 8 3x3 pad @image", "conv takes no tensor reference", 20),
    ("resize @image", "a tensor reference is written after `like`: `resize like @image`", 12),
    ("resize like 3", "`like` needs a tensor reference such as @image", 17),
    ("resize", "resize needs its output size", 5),
    ("resize to 4x4 like @image", "not both", 5),
    ("resize to 0x4", "resize size must be positive, got 0x4", 5),
    ("resize to 4x4 nearest bilinear", "one of `nearest` and `bilinear`", 5),
    ("upsample 2 align_corners", "`align_corners` applies to `bilinear` only", 5),
    ("upsample 0", "upsample scale must be positive", 5),
    ("upsample 1-1.5", "upsample scale must be positive, got -0.5", 5),
    ("upsample 0.1", "upsample 0.1 of 3x8x8 gives an empty output 3x0x0", 5),
])
def test_located_errors(layer, message, column):
    text = error_of(one_layer("3x8x8", layer))
    assert message in text
    assert f"<string>:3:{column}: error:" in text


def test_resize_like_a_flat_tensor_is_an_error():
    text = error_of(dedent("""
        network t {
            input image: 3x8x8
            v: flatten
            @image -> resize like @v
        }
    """))
    assert "resize like @v: @v is 192, not a CxHxW tensor" in text


def test_summary_shows_the_resized_shapes(tmp_path):
    path = tmp_path / "seg.net"
    path.write_text(dedent("""
        network seg {
            input image: 3x20x20
            conv 4 3x3 /2 pad 1 -> upsample 1.5 bilinear -> resize like @image
        }
    """))
    code, out, err = netdsl_main("summary", str(path))
    assert code == 0, err
    assert "4x15x15" in out and "4x20x20" in out and "upsample" in out and "resize" in out


def test_fmt_keeps_references_in_layer_arguments():
    source = dedent("""
        network t {
            input image: 3x8x8
            a: conv 4 3x3 /2 pad 1
            resize  like   @image  bilinear
        }
    """)
    formatted = format_source(source)
    assert "    resize like @image bilinear\n" in formatted
    assert format_source(formatted) == formatted


def test_nearest_upsampling_values_without_torch():
    """Integer nearest upsampling repeats every pixel S times (a check that needs no torch)."""
    net, model = compiled(one_layer("2x3x4", "upsample 3"))
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 4)).astype(np.float32)
    (out,) = run_onnx(model, {"image": x}).values()
    np.testing.assert_array_equal(out, x.repeat(3, axis=2).repeat(3, axis=3))


# ----------------------------------------------------------------------------- values against PyTorch
SIZES = [(5, 7), (6, 6), (13, 11), (1, 3)]
MODES = ["nearest", "bilinear", "bilinear align_corners"]
RESIZE_TO = [(10, 14), (1, 1), (3, 5), (12, 18), (29, 31), (6, 6)]
SCALES = [2, 3, 1.5, 2.3, 0.5, 1.7, 0.7]


def _torch_cases():
    for h, w in SIZES:
        for mode in MODES:
            for th, tw in RESIZE_TO:
                yield (h, w), f"resize to {th}x{tw} {mode}", {"size": (th, tw)}
            for s in SCALES:
                if min(int(h * s), int(w * s)) > 0:
                    yield (h, w), f"upsample {s} {mode}", {"scale_factor": s}


def _assert_close(out: np.ndarray, expected: np.ndarray) -> None:
    assert out.shape == expected.shape
    scale = float(np.abs(expected).max())
    assert scale > 0
    assert float(np.abs(out - expected).max()) <= 1e-5 * scale


@pytest.mark.torch
@pytest.mark.parametrize(("hw", "layer", "kwargs"), list(_torch_cases()), ids=lambda v: str(v))
def test_matches_torch_interpolate(hw, layer, kwargs):
    torch = pytest.importorskip("torch", reason="the comparison with F.interpolate needs torch (optional)")
    h, w = hw
    _, model = compiled(one_layer(f"3x{h}x{w}", layer))
    x = np.random.default_rng(h * 100 + w).standard_normal((2, 3, h, w)).astype(np.float32)
    (out,) = run_onnx(model, {"image": x}).values()
    mode = "nearest" if "nearest" in layer else "bilinear"
    align = None if mode == "nearest" else "align_corners" in layer
    expected = torch.nn.functional.interpolate(torch.from_numpy(x), mode=mode, align_corners=align, **kwargs)
    _assert_close(out, expected.numpy())


@pytest.mark.torch
def test_resize_like_matches_torch_interpolate_to_the_reference_size():
    torch = pytest.importorskip("torch", reason="the comparison with F.interpolate needs torch (optional)")
    _, model = compiled(dedent("""
        network t {
            input image: 2x9x7
            input guide: 1x20x15
            @image -> resize like @guide bilinear
        }
    """))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 9, 7)).astype(np.float32)
    g = rng.standard_normal((2, 1, 20, 15)).astype(np.float32)
    (out,) = run_onnx(model, {"image": x, "guide": g}).values()
    expected = torch.nn.functional.interpolate(torch.from_numpy(x), size=(20, 15), mode="bilinear",
                                               align_corners=False)
    _assert_close(out, expected.numpy())


# ----------------------------------------------------------------------------- crop
def _center_crop(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """torchvision's center_crop offsets: int(round((H - h) / 2.0)), Python's round (half to even)."""
    top, left = int(round((x.shape[2] - h) / 2.0)), int(round((x.shape[3] - w) / 2.0))
    return x[:, :, top:top + h, left:left + w]


@pytest.mark.parametrize(("shape", "layer", "expected", "offsets"), [
    ("2x8x8", "crop 4x4", (2, 4, 4), (2, 2)),
    ("2x9x10", "crop 4x7", (2, 4, 7), (2, 2)),  # (9-4)/2 = 2.5 -> 2, (10-7)/2 = 1.5 -> 2: half to even
    ("2x8x11", "crop 5", (2, 5, 5), (2, 3)),  # 1.5 -> 2, 3
    ("2x7x7", "crop 7x7", (2, 7, 7), (0, 0)),
    ("2x13x6", "crop 2x1", (2, 2, 1), (6, 2)),  # 5.5 -> 6, 2.5 -> 2
])
def test_crop_shapes_offsets_and_values(shape, layer, expected, offsets):
    net, model = compiled(one_layer(shape, layer))
    node = net.graph.nodes[-1]
    assert node.shape == expected and node.attrs.offsets == offsets
    assert [n.op_type for n in model.graph.node] == ["Slice"]
    x = np.random.default_rng(2).standard_normal((2, *map(int, shape.split("x")))).astype(np.float32)
    (out,) = run_onnx(model, {"image": x}).values()
    np.testing.assert_array_equal(out, _center_crop(x, *expected[1:]))


def test_crop_like_a_skip_connection():
    """The original U-Net: the contracting path's tensor is cropped to the upsampled one and concatenated."""
    net, model = compiled(dedent("""
        network unet_step {
            input image: 1x40x40
            conv 8 3x3 -> relu -> conv 8 3x3 -> skip: relu
            maxpool 2x2 -> conv 16 3x3 -> relu -> conv 16 3x3 -> relu
            up: convtranspose 8 2x2 /2
            @skip -> c: crop like @up
            concat(@c, @up) -> conv 8 3x3
        }
    """))
    nodes = {n.name: n for n in net.graph.nodes}
    assert nodes["skip"].shape == (8, 36, 36) and nodes["up"].shape == (8, 28, 28)
    assert nodes["c"].shape == (8, 28, 28) and nodes["c"].attrs.offsets == (4, 4)
    assert net.graph.nodes[-1].shape == (8, 26, 26)
    rows = {r.name: r for r in net.summary().layers}
    assert rows["c"].receptive_field == rows["skip"].receptive_field  # the crop reads @skip's values only


@pytest.mark.parametrize(("layer", "message", "column"), [
    ("crop 300x300", "crop 300x300 is larger than its input 3x8x8", 5),
    ("crop 4x9", "crop 4x9 is larger than its input 3x8x8", 5),
    ("crop", "crop needs its output size", 5),
    ("crop 4x4 like @image", "not both", 5),
    ("crop like @nope", "unknown tensor `@nope`", 15),
    ("crop 0x2", "crop size must be positive, got 0x2", 5),
])
def test_crop_errors(layer, message, column):
    text = error_of(one_layer("3x8x8", layer))
    assert message in text and f"<string>:3:{column}: error:" in text


def test_crop_like_a_larger_tensor_is_an_error():
    text = error_of(dedent("""
        network t {
            input image: 3x8x8
            conv 4 3x3 -> crop like @image
        }
    """))
    assert "crop like @image (8x8) is larger than its input 4x6x6" in text


@pytest.mark.torch
def test_crop_matches_torchvision_center_crop():
    torch = pytest.importorskip("torch", reason="the comparison with torchvision needs torch (optional)")
    tvf = pytest.importorskip("torchvision.transforms.functional", reason="needs torchvision (optional)")
    for shape, size in (((3, 9, 10), (4, 7)), ((3, 13, 6), (2, 1)), ((3, 64, 64), (56, 56)), ((3, 11, 11), (4, 4))):
        _, model = compiled(one_layer("x".join(map(str, shape)), f"crop {size[0]}x{size[1]}"))
        x = np.random.default_rng(4).standard_normal((2, *shape)).astype(np.float32)
        (out,) = run_onnx(model, {"image": x}).values()
        np.testing.assert_array_equal(out, tvf.center_crop(torch.from_numpy(x), list(size)).numpy())


# ----------------------------------------------------------------------------- pad
PAD_CASES = [
    ("3x5x7", "pad 1", (3, 7, 9), {"pad": (1, 1, 1, 1)}),
    ("3x5x7", "pad 2x1", (3, 9, 9), {"pad": (1, 1, 2, 2)}),
    ("3x5x7", "pad 2 constant 0.5", (3, 9, 11), {"pad": (2, 2, 2, 2), "value": 0.5}),
    ("3x5x7", "pad 4x6 reflect", (3, 13, 19), {"pad": (6, 6, 4, 4), "mode": "reflect"}),
    ("3x5x7", "pad 3x9 replicate", (3, 11, 25), {"pad": (9, 9, 3, 3), "mode": "replicate"}),
    ("3x1x1", "pad 2 replicate", (3, 5, 5), {"pad": (2, 2, 2, 2), "mode": "replicate"}),
    ("3x5x7", "pad 0x1 constant 0", (3, 5, 9), {"pad": (1, 1, 0, 0)}),
]


def _numpy_pad(x: np.ndarray, kwargs: dict) -> np.ndarray:
    """numpy's np.pad with PyTorch's modes (reflect: edge excluded; replicate: numpy's `edge`)."""
    left, right, top, bottom = kwargs["pad"]
    width = ((0, 0), (0, 0), (top, bottom), (left, right))
    mode = kwargs.get("mode", "constant")
    if mode == "constant":
        return np.pad(x, width, constant_values=kwargs.get("value", 0.0))
    return np.pad(x, width, mode={"reflect": "reflect", "replicate": "edge"}[mode])


@pytest.mark.parametrize(("shape", "layer", "expected", "kwargs"), PAD_CASES, ids=[c[1] for c in PAD_CASES])
def test_pad_shapes_and_values(shape, layer, expected, kwargs):
    net, model = compiled(one_layer(shape, layer))
    assert net.graph.nodes[-1].shape == expected and net.summary().params == 0
    assert [n.op_type for n in model.graph.node] == ["Pad"]
    x = np.random.default_rng(5).standard_normal((2, *map(int, shape.split("x")))).astype(np.float32)
    (out,) = run_onnx(model, {"image": x}).values()
    np.testing.assert_array_equal(out, _numpy_pad(x, kwargs))


@pytest.mark.parametrize(("layer", "message", "column"), [
    ("pad 8 reflect", "pad 8x8 reflect must be smaller than the input's size 8x6", 5),
    ("pad 2x6 reflect", "pad 2x6 reflect must be smaller than the input's size 8x6", 5),
    ("pad 1 reflect replicate", "pad takes one mode of `constant V`, `reflect` and `replicate`", 5),
    ("pad 1 constant 0 reflect", "got constant and reflect", 5),
    ("pad", "pad needs the padding N or HxW", 5),
    ("pad 1 constant", "`constant` needs a value", 11),
    ("pad 1-2", "pad size must not be negative, got -1x-1", 5),
    ("relu pad", "`pad` is a layer, not an argument of relu", 10),
])
def test_pad_errors(layer, message, column):
    text = error_of(one_layer("3x8x6", layer))
    assert message in text and f"<string>:3:{column}: error:" in text


def test_pad_the_layer_and_pad_the_option_live_together():
    net, _ = compiled(one_layer("3x8x8", "pad 1 -> conv 4 3x3 pad 1 -> maxpool 2x2 pad 1 -> pad 2 reflect"))
    assert [n.shape for n in net.graph.nodes[1:]] == [(3, 10, 10), (4, 10, 10), (4, 6, 6), (4, 10, 10)]


@pytest.mark.torch
@pytest.mark.parametrize(("shape", "layer", "expected", "kwargs"), PAD_CASES, ids=[c[1] for c in PAD_CASES])
def test_pad_matches_torch(shape, layer, expected, kwargs):
    torch = pytest.importorskip("torch", reason="the comparison with F.pad needs torch (optional)")
    _, model = compiled(one_layer(shape, layer))
    x = np.random.default_rng(6).standard_normal((2, *map(int, shape.split("x")))).astype(np.float32)
    (out,) = run_onnx(model, {"image": x}).values()
    mode = kwargs.get("mode", "constant")
    extra = {"value": kwargs.get("value", 0.0)} if mode == "constant" else {}
    want = torch.nn.functional.pad(torch.from_numpy(x), kwargs["pad"], mode=mode, **extra).numpy()
    np.testing.assert_array_equal(out, want)


def test_textmate_grammar_scopes_pad_as_a_layer_and_as_an_option(tmp_path):
    """`pad` is a layer at the start of an element and an option after a layer's argument."""
    import json
    import shutil
    import subprocess
    from pathlib import Path

    tool = Path(__file__).resolve().parent / "textmate"
    if shutil.which("node") is None:
        pytest.skip("node is not installed (the TextMate tokenizer runs under node)")
    if not (tool / "node_modules" / "vscode-textmate").is_dir():
        pytest.skip("vscode-textmate is not installed: run `npm ci` in tests/textmate")
    path = tmp_path / "t.net"
    path.write_text(dedent("""
        network t {
            input image: 3x8x8
            pad 1 -> conv 4 3x3 pad 1 -> c: pad 2 reflect
            resize like @image bilinear -> crop 4x4
        }
    """))
    r = subprocess.run(["node", str(tool / "tokenize.js"), str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    (tokens,) = json.loads(r.stdout).values()
    scopes = [(t[3].strip(), t[4][-1].rsplit(".", 1)[0]) for t in tokens if t[3].strip()]
    assert [s for w, s in scopes if w == "pad"] == ["keyword.other.op", "variable.parameter.option", "keyword.other.op"]
    assert ("resize", "keyword.other.op") in scopes and ("crop", "keyword.other.op") in scopes
    assert ("like", "variable.parameter.option") in scopes and ("reflect", "variable.parameter.option") in scopes
    assert ("@image", "variable.other.reference") in scopes


EVERY_SHAPE_OP = dedent("""
    network t {
        input image: 3x8x8
        upsample 1.5 bilinear -> resize like @image -> resize to 6x10 -> upsample 2 bilinear align_corners
        pad 1 constant 0.5 -> pad 1 reflect -> pad 2x1 replicate -> crop like @image -> crop 6
        convtranspose 4 2x2 /2 -> deconv 4 3x3 /2 pad 1 output_pad 1 -> reshape 4 24 24 -> permute 0 2 1
    }
""")


@pytest.mark.parametrize("opset", ["min", "newest"])
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_every_shape_op_at_the_oldest_and_newest_opset_and_in_fp16(opset, dtype):
    from netdsl.lower import MIN_OPSET, max_opset

    net = netdsl.load(EVERY_SHAPE_OP)
    assert net.graph.nodes[-1].shape == (4, 24, 24)
    model = net.to_onnx(opset=MIN_OPSET if opset == "min" else max_opset(), dtype=dtype)
    onnx.checker.check_model(model, full_check=True)
    assert {"Resize", "Pad", "Slice", "ConvTranspose", "Reshape", "Transpose"} <= {n.op_type for n in model.graph.node}
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float16 if dtype == "fp16" else np.float32)
    assert run_onnx(model, {"image": x})["output"].shape == (2, 4, 24, 24)
