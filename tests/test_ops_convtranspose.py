"""The transposed convolution `convtranspose` (alias `deconv`): PyTorch's ConvTranspose2d shape rule, weight layout,
MACs as torch.utils.flop_counter counts them, receptive field, and values against PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import actual_shapes, dedent, run_onnx

import netdsl
from netdsl.errors import SemanticError


def one_layer(input_shape: str, layer: str) -> str:
    return f"network t {{\n    input image: {input_shape}\n    {layer}\n}}\n"


def out_size(w: int, f: int, s: int = 1, p: int = 0, d: int = 1, q: int = 0) -> int:
    """PyTorch's ConvTranspose2d: (W - 1)*S - 2P + D*(F - 1) + Q + 1."""
    return (w - 1) * s - 2 * p + d * (f - 1) + q + 1


# (input, layer, output, torch ConvTranspose2d keyword arguments)
CASES = [
    ((4, 5, 5), "convtranspose 6 2x2 /2", (6, 10, 10), dict(kernel_size=2, stride=2)),
    ((4, 5, 7), "deconv 3 4x4 /2 pad 1", (3, out_size(5, 4, 2, 1), out_size(7, 4, 2, 1)),
     dict(kernel_size=4, stride=2, padding=1)),
    ((4, 5, 5), "convtranspose 8 3x3 /2 pad 1 output_pad 1", (8, 10, 10),
     dict(kernel_size=3, stride=2, padding=1, output_padding=1)),
    ((6, 4, 6), "convtranspose 4 3x2 /3x2 pad 1x0 groups 2 nobias", (4, out_size(4, 3, 3, 1), out_size(6, 2, 2)),
     dict(kernel_size=(3, 2), stride=(3, 2), padding=(1, 0), groups=2, bias=False)),
    ((2, 6, 6), "convtranspose 5 3x3 dilation 2 pad 1 output_pad 1", (5, out_size(6, 3, p=1, d=2, q=1),
                                                                       out_size(6, 3, p=1, d=2, q=1)),
     dict(kernel_size=3, dilation=2, padding=1, output_padding=1)),  # Q >= S: lowered as less end padding
    ((2, 6, 6), "convtranspose 5 3x3 /2 pad 2 dilation 3 output_pad 2", (5, out_size(6, 3, 2, 2, d=3, q=2),
                                                                          out_size(6, 3, 2, 2, d=3, q=2)),
     dict(kernel_size=3, stride=2, padding=2, dilation=3, output_padding=2)),
    ((3, 1, 1), "convtranspose 16 4x4", (16, 4, 4), dict(kernel_size=4)),
    ((3, 7, 5), "convtranspose 4 5x5 /4 pad 2 output_pad 3", (4, out_size(7, 5, 4, 2, q=3), out_size(5, 5, 4, 2, q=3)),
     dict(kernel_size=5, stride=4, padding=2, output_padding=3)),
]


def _params(c_in: int, layer_kwargs: dict, out: int) -> int:
    k = layer_kwargs["kernel_size"]
    kh, kw = (k, k) if isinstance(k, int) else k
    g = layer_kwargs.get("groups", 1)
    return c_in * out // g * kh * kw + (out if layer_kwargs.get("bias", True) else 0)


@pytest.mark.parametrize(("shape", "layer", "expected", "kwargs"), CASES, ids=[c[1] for c in CASES])
def test_shape_weights_and_onnx(shape, layer, expected, kwargs):
    net = netdsl.load(one_layer("x".join(map(str, shape)), layer))
    node = net.graph.nodes[-1]
    assert node.shape == expected
    groups = kwargs.get("groups", 1)
    kernel = kwargs["kernel_size"] if isinstance(kwargs["kernel_size"], tuple) else (kwargs["kernel_size"],) * 2
    assert node.weights[0].suffix == "weight" and node.weights[0].shape == (shape[0], expected[0] // groups, *kernel)
    assert [w.suffix for w in node.weights] == (["weight", "bias"] if kwargs.get("bias", True) else ["weight"])
    assert net.summary().params == _params(shape[0], kwargs, expected[0])
    # MACs: every input position meets every tap of its group's kernels
    assert net.summary().macs == shape[1] * shape[2] * shape[0] * (expected[0] // groups) * kernel[0] * kernel[1]
    model = net.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    assert actual_shapes(model)["output"] == (2, *expected)
    assert [n.op_type for n in model.graph.node] == ["ConvTranspose"]


def test_receptive_field_and_summary_detail():
    net = netdsl.load(dedent("""
        network unet_up {
            input image: 3x32x32
            conv 8 3x3 /2 pad 1
            up: convtranspose 8 2x2 /2
            conv 8 3x3 pad 1
        }
    """))
    rows = {r.name: r for r in net.summary().layers}
    # conv: rf 3, jump 2; the transposed conv reads 1 input per output (2x2 /2) and halves the jump
    assert rows["up"].receptive_field == (3, 3)
    assert rows["1"].receptive_field == (3 + 2 * 1, 3 + 2 * 1)
    assert rows["up"].detail == "2x2 /2" and rows["up"].output_shape == (8, 32, 32)


@pytest.mark.parametrize(("layer", "message", "column"), [
    ("convtranspose 8 3x3 /2 output_pad 2", "output_pad 2x2 must be smaller than the stride 2x2 or the dilation", 5),
    ("convtranspose 8 3x3 output_pad 1", "output_pad 1x1 must be smaller than the stride 1x1", 5),
    ("convtranspose 8 3x3 pad 3", "convtranspose of 4x4x4 gives an empty output 8x0x0", 5),
    ("convtranspose 6 3x3 groups 4", "groups 4 must divide both the input channels (4)", 5),
    ("convtranspose 0 3x3", "positive number of output channels", 5),
    ("convtranspose 8", "convtranspose needs a kernel size such as 2x2", 5),
    ("deconv 8 3x3 pad same", "unknown name `same`", 22),
    ("convtranspose 8 3x3 dilation 3 output_pad 2", "output_pad 2x2 beyond the padding 0x0 must be smaller than the "
     "stride 1x1", 5),
])
def test_located_errors(layer, message, column):
    with pytest.raises(SemanticError) as e:
        netdsl.load(one_layer("4x4x4", layer))
    assert message in str(e.value) and f"<string>:3:{column}: error:" in str(e.value)


# ----------------------------------------------------------------------------- against PyTorch
def _torch_layer(torch, c_in: int, out: int, kwargs: dict, weights: dict, name: str):
    layer = torch.nn.ConvTranspose2d(c_in, out, **kwargs)
    state = {k: torch.from_numpy(v) for k, v in weights.items() if k.startswith(name + ".")}
    layer.load_state_dict({k.removeprefix(name + "."): v for k, v in state.items()})
    return layer.eval()


@pytest.mark.torch
@pytest.mark.parametrize(("shape", "layer", "expected", "kwargs"), CASES, ids=[c[1] for c in CASES])
def test_matches_torch_conv_transpose(shape, layer, expected, kwargs):
    torch = pytest.importorskip("torch", reason="the comparison with ConvTranspose2d needs torch (optional)")
    net = netdsl.load(one_layer("x".join(map(str, shape)), layer))
    rng = np.random.default_rng(3)
    weights = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in net.initial_weights(0).items()}
    reference = _torch_layer(torch, shape[0], expected[0], kwargs, weights, net.graph.nodes[-1].name)
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    (out,) = run_onnx(net.to_onnx(weights=weights), {"image": x}).values()
    with torch.no_grad():
        want = reference(torch.from_numpy(x)).numpy()
    assert out.shape == want.shape
    assert np.abs(out - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.torch
@pytest.mark.parametrize(("shape", "layer", "expected", "kwargs"), CASES, ids=[c[1] for c in CASES])
def test_macs_as_torch_flop_counter_counts(shape, layer, expected, kwargs):
    torch = pytest.importorskip("torch", reason="torch.utils.flop_counter needs torch (optional)")
    from torch.utils.flop_counter import FlopCounterMode

    net = netdsl.load(one_layer("x".join(map(str, shape)), layer))
    layer_ = torch.nn.ConvTranspose2d(shape[0], expected[0], **kwargs).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        layer_(torch.zeros(1, *shape))
    assert net.summary().macs == counter.get_total_flops() // 2
    assert sum(p.numel() for p in layer_.parameters()) == net.summary().params
