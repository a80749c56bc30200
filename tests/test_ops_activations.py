"""prelu, elu, mish, softplus and hardtanh: shapes, weights, located errors, the ONNX nodes each opset gets,
and values against numpy references of PyTorch's definitions (torch-free) and against the PyTorch modules
with their state_dict loaded (``@pytest.mark.torch``)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import dedent
from op_parity import check, close, random_input, run, torch_parity

import netdsl
from netdsl.errors import SemanticError
from netdsl.lower import MIN_OPSET, max_opset

NEWEST = max_opset()
OPSETS = sorted({MIN_OPSET, 17, 18, NEWEST})


def one(layer: str, shape: str = "16x5x7", params: str = "") -> str:
    return f"network t{params} {{\n    input image: {shape}\n    {layer}\n}}\n"


def ops_of(layer: str, opset: int, shape: str = "16x5x7") -> set[str]:
    return {n.op_type for n in netdsl.load(one(layer, shape)).to_onnx(opset=opset).graph.node}


# ----------------------------------------------------------------------------- numpy references
def softplus(x, beta=1.0, threshold=20.0):
    bx = beta * x.astype(np.float64)
    return np.where(bx > threshold, x, np.logaddexp(0.0, bx) / beta)


def elu(x, alpha=1.0):
    x = x.astype(np.float64)
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def prelu(x, slope):
    shape = (-1, 1, 1) if x.ndim == 4 and slope.size > 1 else (-1,)
    return np.where(x > 0, x, slope.reshape(shape) * x)


# ----------------------------------------------------------------------------- shapes and weights
@pytest.mark.parametrize(("shape", "layer", "weights", "init"), [
    ("16x5x7", "p: prelu", {"p.weight": (16,)}, 0.25),
    ("16x5x7", "p: prelu shared", {"p.weight": (1,)}, 0.25),
    ("16", "p: prelu init 0.1", {"p.weight": (16,)}, 0.1),
    ("16", "p: prelu shared init 0.5", {"p.weight": (1,)}, 0.5),
    ("16x5x7", "a: elu", {}, None),
    ("16x5x7", "a: mish", {}, None),
    ("16", "a: softplus beta 2", {}, None),
    ("16x5x7", "a: hardtanh min 0 max 6", {}, None),
])
def test_shape_weights_and_initial_values(shape, layer, weights, init):
    net = netdsl.load(one(layer, shape))
    node = net.graph.nodes[-1]
    assert node.shape == net.graph.inputs[0].shape
    assert {name: spec.shape for name, spec, _ in net.graph.weight_specs()} == weights
    assert net.graph.params == sum(int(np.prod(s)) for s in weights.values())
    row = net.summary().layers[-1]
    assert row.macs == 0 and node.op.window(node.attrs, list(node.in_shapes)) is None
    if init is not None:
        (value,) = net.initial_weights().values()
        assert (value == np.float32(init)).all()
    check(net.to_onnx())


@pytest.mark.parametrize(("layer", "message"), [
    ("hardtanh min 2 max 1", "hardtanh needs min < max, got min 2 and max 1"),
    ("hardtanh min 1 max 1", "hardtanh needs min < max"),
    ("softplus beta 0", "softplus beta must not be 0"),
    ("prelu 3", "too many arguments for prelu"),
    ("prelu init 0.1 init 0.2", "`init` given twice"),
    ("elu alpha", "`alpha` needs a value"),
    ("mish 2", "too many arguments for mish"),
    ("hardtanh min low", "unknown name `low`"),
])
def test_located_errors(layer, message):
    with pytest.raises(SemanticError) as e:
        netdsl.load(one(layer))
    assert message in str(e.value) and "<string>:3:" in str(e.value)


def test_a_negative_bound_is_a_parameter():
    # a layer argument cannot start with a sign (`min -2` reads as `min - 2`): a parameter carries it
    net = netdsl.load(one("a: hardtanh min lo max hi", params="(lo = -2, hi = 2)"))
    assert (net.graph.nodes[-1].attrs.min, net.graph.nodes[-1].attrs.max) == (-2.0, 2.0)
    x = random_input((16, 5, 7))
    close(run(net, x), np.clip(x, -2, 2))


# ----------------------------------------------------------------------------- lowering per opset
@pytest.mark.parametrize(("layer", "opset", "has", "lacks"), [
    ("mish", 18, {"Mish"}, {"Softplus"}),
    ("mish", 17, {"Softplus", "Tanh", "Mul"}, {"Mish"}),
    ("softplus", 17, {"Softplus", "Greater", "Where"}, {"Mul", "Div"}),
    ("softplus beta 2", 17, {"Softplus", "Greater", "Where", "Mul", "Div"}, set()),
    ("prelu", 17, {"PRelu", "Unsqueeze"}, set()),
    ("prelu shared", 17, {"PRelu"}, {"Unsqueeze"}),
    ("elu alpha 0.5", MIN_OPSET, {"Elu"}, set()),
    ("hardtanh", MIN_OPSET, {"Clip"}, set()),
])
def test_onnx_nodes_by_opset(layer, opset, has, lacks):
    ops = ops_of(layer, opset)
    assert has <= ops and not lacks & ops


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize(("layer", "reference"), [
    ("elu", elu),
    ("elu alpha 0.3", lambda x: elu(x, 0.3)),
    ("mish", lambda x: x * np.tanh(np.logaddexp(0.0, x.astype(np.float64)))),
    ("softplus", softplus),
    ("softplus beta 2 threshold 3", lambda x: softplus(x, 2.0, 3.0)),  # the threshold is crossed: x itself
    ("softplus beta 0.5 threshold 1", lambda x: softplus(x, 0.5, 1.0)),
    ("hardtanh", lambda x: np.clip(x, -1, 1)),
    ("hardtanh min 0 max 6", lambda x: np.clip(x, 0, 6)),
    ("hardtanh max_val 0.5", lambda x: np.clip(x, -1, 0.5)),
])
def test_activation_values(opset, layer, reference):
    net = netdsl.load(one(layer))
    x = random_input((16, 5, 7), scale=4.0)
    close(run(net, x, opset), reference(x))


def test_softplus_follows_the_threshold_exactly():
    # beta*x just above the threshold gives x, just below gives log1p(exp(beta*x))/beta: 0.02 apart here
    net = netdsl.load(one("softplus beta 2 threshold 3", "4"))
    x = np.array([[1.49, 1.51, 1.6, -30.0]], np.float32)
    out = run(net, x)
    assert out[0, 1] == x[0, 1] and out[0, 2] == x[0, 2]
    assert abs(out[0, 0] - np.log1p(np.exp(2.98)) / 2) < 1e-6 and out[0, 0] - x[0, 0] > 0.02
    close(out, softplus(x, 2.0, 3.0))


@pytest.mark.parametrize("opset", [MIN_OPSET, NEWEST])
@pytest.mark.parametrize(("layer", "shape"), [("p: prelu", "16x5x7"), ("p: prelu shared", "16x5x7"),
                                              ("p: prelu", "16"), ("p: prelu shared init 0.1", "16")])
def test_prelu_values(opset, layer, shape):
    net = netdsl.load(one(layer, shape))
    (name, spec, _), = net.graph.weight_specs()
    slope = np.random.default_rng(3).standard_normal(spec.shape).astype(np.float32)
    x = random_input(net.graph.inputs[0].shape)
    close(run(net, x, opset, {name: slope}), prelu(x, slope))


def test_fp16_runs_every_activation():
    net = netdsl.load(dedent("""
        network t {
            input image: 16x5x7
            prelu -> elu -> mish -> softplus beta 2 threshold 3 -> hardtanh min 0 max 6 -> prelu shared
        }
    """))
    x = random_input((16, 5, 7))
    from helpers import run_onnx

    for opset in (MIN_OPSET, NEWEST):
        model = net.to_onnx(opset=opset, dtype="fp16", keep_io_fp32=True)
        check(model)
        close(run_onnx(model, {"image": x})["output"], run(net, x, opset), tolerance=1e-2)


# ----------------------------------------------------------------------------- against PyTorch
def _torch():
    return pytest.importorskip("torch", reason="comparing with PyTorch needs torch (optional)")


@pytest.mark.torch
@pytest.mark.parametrize(("layer", "make", "shape"), [
    ("act: prelu", lambda nn: nn.PReLU(16), (16, 5, 7)),
    ("act: prelu shared", lambda nn: nn.PReLU(), (16, 5, 7)),
    ("act: prelu", lambda nn: nn.PReLU(16), (16,)),
    ("act: prelu shared init 0.1", lambda nn: nn.PReLU(init=0.1), (16,)),
    ("act: elu", lambda nn: nn.ELU(), (16, 5, 7)),
    ("act: elu alpha 0.4", lambda nn: nn.ELU(alpha=0.4), (16, 5, 7)),
    ("act: mish", lambda nn: nn.Mish(), (16, 5, 7)),
    ("act: softplus", lambda nn: nn.Softplus(), (16, 5, 7)),
    ("act: softplus beta 2 threshold 3", lambda nn: nn.Softplus(beta=2, threshold=3), (16, 5, 7)),
    ("act: softplus beta 0.5 threshold 1", lambda nn: nn.Softplus(beta=0.5, threshold=1), (16,)),
    ("act: hardtanh", lambda nn: nn.Hardtanh(), (16, 5, 7)),
    ("act: hardtanh min 0 max 6", lambda nn: nn.Hardtanh(0.0, 6.0), (16, 5, 7)),
])
def test_torch_activations(tmp_path, layer, make, shape):
    torch = _torch()
    from collections import OrderedDict

    module = torch.nn.Sequential(OrderedDict(act=make(torch.nn)))
    torch_parity(module, one(layer, "x".join(map(str, shape))), shape, tmp_path, opsets=OPSETS, scale=4.0)


@pytest.mark.torch
def test_torch_hardtanh_negative_bounds(tmp_path):
    torch = _torch()
    from collections import OrderedDict

    module = torch.nn.Sequential(OrderedDict(act=torch.nn.Hardtanh(-2.0, 0.5)))
    torch_parity(module, one("act: hardtanh min lo max 0.5", params="(lo = -2)"), (16, 5, 7), tmp_path, scale=4.0)
