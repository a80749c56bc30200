"""The op table (netdsl/ops.py): shape rules, parameter and MAC counts, receptive fields, and numerics.

Shapes are checked twice: against the textbook formula floor((W - F + 2P) / S) + 1 written out here,
and against the shapes ONNX Runtime actually produces. Values are checked against numpy
implementations of PyTorch's definitions.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from helpers import actual_shapes, dedent

import netdsl
from netdsl.errors import SemanticError
from netdsl.lower import MIN_OPSET, max_opset
from netdsl.ops import MERGES, OPS

NEWEST = max_opset()


def out_size(w: int, f: int, p: int, s: int, d: int = 1, ceil: bool = False, pad_end: int | None = None) -> int:
    """floor((W - F + 2P) / S) + 1 with F the dilated kernel; ceil mode as PyTorch (last window starts inside)."""
    f = (f - 1) * d + 1
    span = w - f + p + (p if pad_end is None else pad_end)
    if not ceil:
        return span // s + 1
    out = math.ceil(span / s) + 1
    return out - 1 if (out - 1) * s >= w + p else out


def one_layer(input_shape: str, layer: str) -> str:
    return f"network t {{\n    input image: {input_shape}\n    {layer}\n}}\n"


def check_shape(source: str, expected: tuple[int, ...]) -> netdsl.Network:
    """netdsl infers ``expected`` for the last layer, and ONNX Runtime produces it."""
    net = netdsl.load(source)
    last = net.graph.nodes[net.graph.outputs[0].node]
    assert last.shape == expected
    model = net.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    assert actual_shapes(model)[net.graph.outputs[0].name] == (2, *expected)
    return net


# ----------------------------------------------------------------------------- shape rules
C = 3
SHAPE_CASES = [
    # (input CxHxW, layer, expected output) with the expected sizes from the formula
    ((3, 32, 32), "conv 8 3x3", (8, out_size(32, 3, 0, 1), out_size(32, 3, 0, 1))),
    ((3, 32, 32), "conv 8 3x3 /2 pad 1", (8, out_size(32, 3, 1, 2), out_size(32, 3, 1, 2))),
    ((3, 31, 31), "conv 8 5x5 /3 pad 2 dilation 2", (8, out_size(31, 5, 2, 3, d=2), out_size(31, 5, 2, 3, d=2))),
    ((3, 20, 21), "conv 8 3x5 /1x2 pad 1x2", (8, out_size(20, 3, 1, 1), out_size(21, 5, 2, 2))),
    ((6, 10, 10), "conv 6 3x3 groups 3 pad 1", (6, 10, 10)),
    ((6, 11, 11), "conv 12 3x3 depthwise /2", (12, out_size(11, 3, 0, 2), out_size(11, 3, 0, 2))),
    ((3, 227, 227), "conv 96 11x11 /4", (96, 55, 55)),
    # pad same: output = ceil(W / S), the extra padding at the end (TensorFlow / PyTorch "same")
    ((3, 15, 15), "conv 8 3x3 /2 pad same", (8, 8, 8)),
    ((3, 10, 11), "conv 8 4x4 pad same", (8, 10, 11)),
    ((3, 10, 10), "conv 8 3x3 pad same dilation 3", (8, 10, 10)),
    ((3, 7, 7), "conv 4 2x2 /3 pad same", (4, 3, 3)),
    # pooling: stride defaults to the kernel
    ((64, 112, 112), "maxpool 3x3 /2", (64, out_size(112, 3, 0, 2), out_size(112, 3, 0, 2))),
    ((64, 112, 112), "maxpool 3x3 /2 ceil", (64, out_size(112, 3, 0, 2, ceil=True), 56)),
    ((64, 112, 112), "maxpool 3x3 /2 pad 1", (64, 56, 56)),
    ((4, 7, 7), "avgpool 2x2", (4, out_size(7, 2, 0, 2), 3)),
    ((4, 7, 7), "avgpool 2x2 ceil", (4, out_size(7, 2, 0, 2, ceil=True), 4)),
    ((4, 8, 8), "maxpool 3x3 /3 pad 1 ceil", (4, out_size(8, 3, 1, 3, ceil=True), 3)),  # PyTorch's ceil rule
    ((4, 6, 8), "maxpool 3x3 /3 pad 1 ceil", (4, out_size(6, 3, 1, 3, ceil=True), out_size(8, 3, 1, 3, ceil=True))),
    ((4, 6, 19), "avgpool 2x2 /3 ceil", (4, out_size(6, 2, 0, 3, ceil=True), out_size(19, 2, 0, 3, ceil=True))),
    ((4, 6, 6), "maxpool 1x1 /2 ceil", (4, 3, 3)),
    ((8, 13, 9), "avgpool global", (8, 1, 1)),
    ((8, 13, 9), "maxpool global", (8, 1, 1)),
    ((256, 12, 12), "avgpool adaptive 6x6", (256, 6, 6)),
    ((256, 6, 6), "avgpool adaptive 6x6", (256, 6, 6)),
    ((16, 8, 12), "maxpool adaptive 2x3", (16, 2, 3)),
    ((16, 9, 7), "avgpool adaptive 2x3", (16, 2, 3)),
    ((6, 4, 4), "slice 1 4", (3, 4, 4)),
    ((256, 6, 6), "flatten", (256 * 6 * 6,)),
    ((6, 4, 4), "channel_shuffle 3", (6, 4, 4)),
    ((3, 5, 7), "upsample 2", (3, 10, 14)),
    ((3, 5, 7), "upsample 3", (3, 15, 21)),
    ((3, 5, 7), "bn", (3, 5, 7)),
    ((3, 5, 7), "lrn 5", (3, 5, 7)),
    ((3, 5, 7), "dropout 0.3", (3, 5, 7)),
    ((3, 5, 7), "identity", (3, 5, 7)),
    ((3, 5, 7), "softmax", (3, 5, 7)),
    ((8, 5, 7), "layernorm eps 1e-6", (8, 5, 7)),
    ((8, 5, 7), "groupnorm 4", (8, 5, 7)),
    ((8, 5, 7), "instancenorm affine", (8, 5, 7)),
    ((8, 5, 7), "layer_scale init 1e-6", (8, 5, 7)),
    ((8, 5, 7), "channel_scale", (8, 5, 7)),
    ((8, 5, 7), "prelu", (8, 5, 7)),
    ((8, 5, 7), "elu", (8, 5, 7)),
    ((8, 5, 7), "mish", (8, 5, 7)),
    ((8, 5, 7), "softplus", (8, 5, 7)),
    ((8, 5, 7), "hardtanh", (8, 5, 7)),
]


@pytest.mark.parametrize(("shape", "layer", "expected"), SHAPE_CASES, ids=[c[1] for c in SHAPE_CASES])
def test_shape_rule(shape, layer, expected):
    check_shape(one_layer("x".join(map(str, shape)), layer), expected)


def test_fc_and_flat_layers():
    net = check_shape(dedent("""
        network t {
            input image: 3x4x5
            flatten -> fc 7 -> bn -> relu -> linear 3 nobias -> softmax
        }
    """), (3,))
    assert [n.shape for n in net.graph.nodes][1:] == [(60,), (7,), (7,), (7,), (3,), (3,)]
    check_shape(one_layer("20", "fc 4"), (4,))  # a flat input declared directly


@pytest.mark.parametrize(("layers", "expected"), [
    ("a: conv 4 1x1\nb: conv 4 1x1\nadd(@a, @b)", (4, 9, 9)),
    ("a: conv 4 1x1\nb: conv 4 1x1\nc: conv 4 1x1\nadd(@a, @b, @c)", (4, 9, 9)),
    ("a: conv 4 1x1\nb: avgpool global\nc: conv 4 1x1\nmul(@b, @c)", (4, 1, 1)),
    ("a: conv 4 1x1\nb: conv 4 1x1 -> avgpool global\nmul(@a, @b)", (4, 9, 9)),
    ("a: conv 4 1x1\nb: conv 4 1x1 -> avgpool global\nmul(@b, @a)", (4, 9, 9)),
    ("a: conv 4 1x1\nb: conv 5 1x1\nconcat(@image, @a, @b)", (12, 9, 9)),
    ("a: conv 4 1x1\nb: conv 4 3x3 pad 1\nc: conv 4 1x1\nmean(@a, @b, @c)", (4, 9, 9)),
])
def test_merge_shapes(layers, expected):
    body = "\n".join("    " + ln for ln in layers.splitlines())
    check_shape(f"network t {{\n    input image: 3x9x9\n{body}\n}}\n", expected)


@pytest.mark.parametrize(("layers", "message"), [
    ("a: conv 4 1x1\nb: conv 5 1x1\nadd(@a, @b)", "add needs inputs of one shape"),
    ("a: conv 4 1x1\nb: conv 4 3x3\nconcat(@a, @b)", "concat needs the same spatial size"),
    ("a: conv 4 1x1\nb: conv 2 1x1 -> avgpool global\nmul(@a, @b)", "mul needs inputs of one shape"),
    ("a: conv 4 1x1\nb: avgpool global\nmean(@a, @b)", "mean needs inputs of one shape, got 4x9x9, 4x1x1"),
    ("conv 16 3x3 groups 5", "groups 5 must divide both the input channels (3) and the output channels (16)"),
    ("channel_shuffle 2", "channel_shuffle groups 2 must divide the channels (3)"),
    ("maxpool 3x3 pad 3", "padding 3x3 must be smaller than the kernel"),
    ("conv 4 10x10", "conv kernel 10x10 is larger than its input 9x9"),
    ("conv 4 3x3 dilation 5", "conv kernel 11x11 (dilated) is larger than its input 9x9"),
    ("maxpool 8x8 /2 pad 2 -> conv 4 4x4", "conv kernel 4x4 is larger than its input 3x3"),
    ("fc 10", "fc expects a flat input, got 3x9x9; add `flatten` before it"),
    ("flatten -> conv 4 1x1", "conv expects a CxHxW input, got 243"),
    ("maxpool", "maxpool needs exactly one of a kernel size, `global` or `adaptive HxW`"),
    ("conv 0 3x3", "conv needs a positive number of output channels, got 0"),
    ("dropout 2", "dropout probability must be in [0, 1], got 2.0"),
    ("lrn 0", "lrn size must be positive"),
    ("upsample 0", "upsample scale must be positive"),
])
def test_shape_rule_errors(layers, message):
    body = "\n".join("    " + ln for ln in layers.splitlines())
    with pytest.raises(SemanticError) as err:
        netdsl.load(f"network t {{\n    input image: 3x9x9\n{body}\n}}\n")
    assert message in str(err.value)


def test_every_op_is_covered_by_a_shape_case():
    covered = {c[1].split()[0] for c in SHAPE_CASES} | {"fc", "linear"}
    assert set(OPS) - covered <= {"leaky_relu", "leakyrelu", "relu", "relu6", "sigmoid", "tanh", "hardswish",
                                  "hardsigmoid", "silu", "swish", "gelu", "batchnorm", "droppath",
                                  "stochastic_depth", "maxpool"}  # activations: see the numeric tests
    assert set(MERGES) == {"add", "mul", "concat", "mean"}


# ----------------------------------------------------------------------------- parameters and MACs
def stats(source: str):
    """(params, macs) of the last layer, and the summary."""
    s = netdsl.load(source).summary()
    return s.layers[-1].params, s.layers[-1].macs, s


@pytest.mark.parametrize(("shape", "layer", "f", "c_in", "k", "groups", "bias"), [
    ("3x32x32", "conv 64 3x3 pad 1", 3, 3, 64, 1, True),
    ("3x32x32", "conv 64 3x3 pad 1 nobias", 3, 3, 64, 1, False),
    ("32x16x16", "conv 64 5x5 groups 4", 5, 32, 64, 4, True),
    ("32x16x16", "conv 32 3x3 depthwise pad 1", 3, 32, 32, 32, True),
    ("32x16x16", "conv 64 3x3 depthwise pad 1 bias false", 3, 32, 64, 32, False),
    ("3x227x227", "conv 96 11x11 /4", 11, 3, 96, 1, True),
])
def test_conv_params_and_macs(shape, layer, f, c_in, k, groups, bias):
    params, macs, s = stats(one_layer(shape, layer))
    assert params == (f * f * c_in // groups + (1 if bias else 0)) * k
    _, h, w = s.layers[-1].output_shape
    assert macs == k * h * w * f * f * c_in // groups


def test_bn_fc_and_weightless_layers():
    params, macs, _ = stats(one_layer("48x7x7", "bn"))
    assert (params, macs) == (2 * 48, 0)  # gamma and beta; running statistics are buffers
    params, macs, _ = stats(one_layer("9216", "fc 4096"))
    assert (params, macs) == ((9216 + 1) * 4096, 9216 * 4096)
    params, macs, _ = stats(one_layer("9216", "fc 4096 nobias"))
    assert (params, macs) == (9216 * 4096, 9216 * 4096)
    for layer in ("relu", "maxpool 2x2", "avgpool global", "flatten", "lrn 5", "upsample 2", "channel_shuffle 2",
                  "softmax", "dropout", "gelu"):
        assert stats(one_layer("4x8x8", layer))[:2] == (0, 0), layer


def test_weight_shapes_match_onnx_initializers(compile_net):
    net, model = compile_net(one_layer("32x8x8", "conv 64 3x3 groups 4 -> bn -> flatten -> fc 10"))
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    assert inits["0.weight"] == (64, 8, 3, 3) and inits["0.bias"] == (64,)
    assert inits["1.running_var"] == (64,) and inits["3.weight"] == (10, 64 * 6 * 6)
    assert sum(math.prod(d) for n, d in inits.items() if "running" not in n) == net.graph.params


# ----------------------------------------------------------------------------- receptive field
@pytest.mark.parametrize(("layers", "rf"), [
    ("conv 8 3x3 -> conv 8 3x3 -> conv 8 3x3", 7),  # three stacked 3x3 see what one 7x7 sees
    ("conv 8 7x7", 7),
    ("conv 8 3x3", 3),
    ("conv 8 3x3 /2 -> conv 8 3x3", 3 + 2 * 2),
    ("conv 8 3x3 dilation 2", 5),
    ("conv 8 1x1 -> relu -> bn", 1),
    ("conv 8 7x7 /2 pad 3 -> maxpool 3x3 /2 pad 1", 7 + 2 * 2),  # ResNet stem: 11
    ("conv 8 5x5 /2 -> conv 8 3x3 /2 -> conv 8 3x3", 5 + 2 * 2 + 2 * 4),
])
def test_receptive_field(layers, rf):
    s = netdsl.load(one_layer("3x64x64", layers)).summary()
    assert s.layers[-1].receptive_field == (rf, rf)
    assert s.to_json()["layers"][-1]["receptive_field"] == rf


def test_receptive_field_of_a_residual_is_its_widest_branch():
    s = netdsl.load(one_layer("3x32x32", "residual< conv 3 3x3 pad 1 -> conv 3 3x3 pad 1 >")).summary()
    assert s.layers[-1].name == "add" and s.layers[-1].receptive_field == (5, 5)


# ----------------------------------------------------------------------------- worked examples
def test_alexnet_first_layers():
    net = netdsl.load(dedent("""
        network alexnet_start {
            input image: 3x227x227
            conv1: conv 96 11x11 /4 -> relu
            pool1: maxpool 3x3 /2
        }
    """))
    layers = {x.name: x for x in net.summary().layers}
    assert layers["conv1"].output_shape == (96, 55, 55)  # (227 - 11) / 4 + 1
    assert layers["conv1"].params == (11 * 11 * 3 + 1) * 96 == 34_944
    assert layers["conv1"].macs == 96 * 55 * 55 * 11 * 11 * 3 == 105_415_200
    assert layers["pool1"].output_shape == (96, 27, 27)  # (55 - 3) / 2 + 1
    assert layers["pool1"].params == 0
    assert not net.warnings  # both divide exactly: nothing dropped


NAIVE = """
    network naive {
        input image: 192x28x28
        inception<
            conv 64 1x1
          | conv 128 3x3 pad 1
          | conv 32 5x5 pad 2
          | maxpool 3x3 /1 pad 1
        >
    }
"""
BOTTLENECK = """
    network inception3a {
        input image: 192x28x28
        inception<
            branch1: conv 64 1x1
          | branch2: (conv 96 1x1 -> conv 128 3x3 pad 1)
          | branch3: (conv 16 1x1 -> conv 32 5x5 pad 2)
          | branch4: (maxpool 3x3 /1 pad 1 -> conv 32 1x1)
        >
    }
"""


def test_googlenet_inception_bottleneck_reduces_macs():
    naive = netdsl.load(dedent(NAIVE)).summary()
    bottleneck = netdsl.load(dedent(BOTTLENECK)).summary()
    hw = 28 * 28
    # naive: 1x1, 3x3 and 5x5 convolutions straight on 192 channels
    naive_macs = hw * 64 * 192 + hw * 128 * 192 * 9 + hw * 32 * 192 * 25
    assert naive_macs == 9_633_792 + 173_408_256 + 120_422_400 == 303_464_448
    assert naive.macs == naive_macs
    assert naive.outputs[0][1] == (64 + 128 + 32 + 192, 28, 28)
    # GoogLeNet's module: 1x1 reductions to 96 and 16 channels first, and a 1x1 projection after the pool
    bottleneck_macs = (hw * 64 * 192  # branch1
                       + hw * 96 * 192 + hw * 128 * 96 * 9  # branch2
                       + hw * 16 * 192 + hw * 32 * 16 * 25  # branch3
                       + hw * 32 * 192)  # branch4
    assert bottleneck_macs == 9_633_792 + 14_450_688 + 86_704_128 + 2_408_448 + 10_035_200 + 4_816_896
    assert bottleneck_macs == 128_049_152
    assert bottleneck.macs == bottleneck_macs
    assert bottleneck.outputs[0][1] == (256, 28, 28)
    assert naive.macs / bottleneck.macs > 2.3
    # the 5x5 path alone shrinks almost tenfold
    five = {x.name: x.macs for x in bottleneck.layers}
    assert 120_422_400 / (five["branch3.0"] + five["branch3.1"]) > 9.6
    assert bottleneck.params == (192 + 1) * 64 + (192 + 1) * 96 + (96 * 9 + 1) * 128 + (192 + 1) * 16 \
        + (16 * 25 + 1) * 32 + (192 + 1) * 32


# ----------------------------------------------------------------------------- numerics through ONNX Runtime
def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf)(x.astype(np.float64))


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),
    "leaky_relu 0.2": lambda x: np.where(x > 0, x, 0.2 * x),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "hardswish": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "hardsigmoid": lambda x: np.clip(x + 3, 0, 6) / 6,
    "silu": lambda x: x / (1 + np.exp(-x)),
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "softmax": lambda x: _softmax(x, 1),
    "dropout 0.5": lambda x: x,
    "identity": lambda x: x,
}


@pytest.mark.parametrize("opset", [MIN_OPSET, NEWEST], ids=lambda o: f"opset{o}")
@pytest.mark.parametrize("layer", list(ACTIVATIONS))
def test_activation_values(layer, opset, run_net):
    # values from -8 to 8 reach every piece of the piecewise functions (relu6's 6, hardswish's +-3)
    x = np.linspace(-8, 8, 2 * 5 * 4 * 6, dtype=np.float32).reshape(2, 5, 4, 6)
    _, model, out = run_net(one_layer("5x4x6", layer), feeds={"image": x}, opset=opset)
    assert model.opset_import[0].version == opset
    np.testing.assert_allclose(out["output"], ACTIVATIONS[layer](x), rtol=1e-5, atol=1e-6)


def test_hardswish_and_gelu_lower_by_opset(compile_net):
    types = {}
    for opset in (13, 14, 19, 20, NEWEST):
        _, model = compile_net(one_layer("4x2x2", "hardswish -> gelu"), opset=opset)
        types[opset] = [n.op_type for n in model.graph.node]
    assert types[13] == ["HardSigmoid", "Mul", "Div", "Erf", "Add", "Mul", "Mul"]
    assert types[14][0] == "HardSwish" and "Erf" in types[19]
    assert types[20] == types[NEWEST] == ["HardSwish", "Gelu"]


def test_softmax_of_a_flat_input(run_net):
    x = np.random.default_rng(1).standard_normal((3, 10)).astype(np.float32)
    _, _, out = run_net(one_layer("10", "softmax"), feeds={"image": x})
    np.testing.assert_allclose(out["output"], _softmax(x, 1), rtol=1e-5)


def torch_lrn(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """PyTorch's LocalResponseNorm: b_c = a_c / (k + alpha/n * sum over c-n//2 .. c+(n-1)//2 of a^2)^beta."""
    c = x.shape[1]
    sq = np.pad(x.astype(np.float64) ** 2, ((0, 0), (size // 2, (size - 1) // 2), (0, 0), (0, 0)))
    window = np.stack([sq[:, i:i + size].sum(axis=1) for i in range(c)], axis=1)
    return x / (k + alpha / size * window) ** beta


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
def test_lrn_matches_pytorch(size, run_net):
    x = np.random.default_rng(2).standard_normal((2, 7, 5, 6)).astype(np.float32) * 3
    _, _, out = run_net(one_layer("7x5x6", f"lrn {size} alpha 0.5 beta 0.75 k 2"), feeds={"image": x})
    np.testing.assert_allclose(out["output"], torch_lrn(x, size, 0.5, 0.75, 2.0), rtol=1e-5, atol=1e-6)


def test_lrn_alexnet_defaults(run_net):
    x = np.random.default_rng(3).standard_normal((1, 16, 3, 3)).astype(np.float32) * 20
    _, _, out = run_net(one_layer("16x3x3", "lrn 5"), feeds={"image": x})  # alpha 1e-4, beta 0.75, k 1
    np.testing.assert_allclose(out["output"], torch_lrn(x, 5, 1e-4, 0.75, 1.0), rtol=1e-5)


def torch_pool(x: np.ndarray, kind: str, k: int, s: int, p: int, ceil: bool, count_pad: bool = True) -> np.ndarray:
    """PyTorch's max_pool2d / avg_pool2d (square kernel), including its ceil-mode and divisor rules."""
    n, c, h, w = x.shape
    oh, ow = out_size(h, k, p, s, ceil=ceil), out_size(w, k, p, s, ceil=ceil)
    out = np.zeros((n, c, oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * s - p, j * s - p
            h1, w1 = min(h0 + k, h + p), min(w0 + k, w + p)
            pool_size = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            region = x[:, :, h0:h1, w0:w1]
            if kind == "max":
                out[:, :, i, j] = region.max(axis=(2, 3))
            else:
                out[:, :, i, j] = region.sum(axis=(2, 3)) / (pool_size if count_pad else (h1 - h0) * (w1 - w0))
    return out


@pytest.mark.parametrize(("hw", "k", "s", "p", "ceil"), [
    (7, 3, 2, 1, False), (6, 3, 2, 1, True), (7, 3, 2, 0, True), (8, 3, 3, 1, True), (6, 1, 2, 0, True),
    (19, 2, 3, 0, True), (112, 3, 2, 0, True), (5, 2, 2, 1, False), (9, 3, 1, 1, False),
])
@pytest.mark.parametrize("kind", ["max", "avg", "avg_exclude_pad"])
def test_pool_values_match_pytorch(hw, k, s, p, ceil, kind, run_net):
    x = np.random.default_rng(4).standard_normal((1, 2, hw, hw + 1)).astype(np.float32)
    layer = f"{kind[:3]}pool {k}x{k} /{s}" + (f" pad {p}" if p else "") + (" ceil" if ceil else "")
    layer += " exclude_pad" if kind == "avg_exclude_pad" else ""
    net, model, out = run_net(one_layer(f"2x{hw}x{hw + 1}", layer), feeds={"image": x}, opset=MIN_OPSET)
    onnx.checker.check_model(model, full_check=True)
    expected = torch_pool(x, kind[:3], k, s, p, ceil, count_pad=kind == "avg")
    np.testing.assert_allclose(out["output"], expected, rtol=1e-5, atol=1e-6)
    assert net.graph.nodes[-1].shape == expected.shape[1:]


def test_channel_shuffle_and_upsample_values(run_net):
    x = np.arange(2 * 6 * 2 * 3, dtype=np.float32).reshape(2, 6, 2, 3)
    _, _, out = run_net(one_layer("6x2x3", "channel_shuffle 2 -> upsample 2"), feeds={"image": x})
    shuffled = x.reshape(2, 2, 3, 2, 3).transpose(0, 2, 1, 3, 4).reshape(2, 6, 2, 3)
    assert shuffled[0, :, 0, 0].tolist() == [0, 18, 6, 24, 12, 30]  # channels 0 3 1 4 2 5
    np.testing.assert_array_equal(out["output"], shuffled.repeat(2, axis=2).repeat(2, axis=3))


def test_conv_pad_same_values(run_net):
    # asymmetric "same" padding (the extra row and column at the end), checked against a numpy convolution
    x = np.random.default_rng(5).standard_normal((1, 1, 7, 7)).astype(np.float32)
    net, model, out = run_net(one_layer("1x7x7", "conv 1 4x4 /2 pad same nobias"), feeds={"image": x})
    assert net.graph.nodes[-1].attrs.pads == (1, 1, 2, 2)  # total (ceil(7/2) - 1) * 2 + 4 - 7 = 3
    w = next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "0.weight")[0, 0]
    xp = np.pad(x[0, 0], ((1, 2), (1, 2)))
    expected = np.array([[(xp[2 * i:2 * i + 4, 2 * j:2 * j + 4] * w).sum() for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(out["output"][0, 0], expected, rtol=1e-5, atol=1e-5)


def test_dropped_input_warning():
    net = netdsl.load(one_layer("3x7x7", "conv 8 3x3 /3"))
    (w,) = net.warnings
    assert w.severity == "warning" and "does not tile the input 7x7" in w.message
    assert "the last 1 input row and the last 1 input column are dropped" in w.message
    assert not netdsl.load(one_layer("3x7x7", "conv 8 3x3 /2")).warnings  # (7 - 3) / 2 divides
    assert not netdsl.load(one_layer("3x8x8", "maxpool 3x3 /2 ceil")).warnings  # ceil reads everything
    assert not netdsl.load(one_layer("3x8x8", "conv 8 3x3 /2 pad same")).warnings
