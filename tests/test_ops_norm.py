"""layernorm, groupnorm, instancenorm, layer_scale and fc per_position: shapes, weights (names, shapes,
initial values), parameter and MAC counts, located errors, the ONNX nodes each opset gets, and values:
against numpy references of PyTorch's definitions at every lowering (torch-free), and against the PyTorch
modules themselves with their state_dict loaded (``@pytest.mark.torch``)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import dedent
from op_parity import check, close, random_input, run, torch_parity

import netdsl
from netdsl.errors import SemanticError, WeightsError
from netdsl.lower import MIN_OPSET, max_opset
from netdsl.ops import GroupNorm, LayerNorm, OpError

NEWEST = max_opset()


def one(layer: str, shape: str = "16x5x7", params: str = "") -> str:
    return f"network t{params} {{\n    input image: {shape}\n    {layer}\n}}\n"


def random_weights(net: netdsl.Network, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(spec.shape).astype(np.float32) for name, spec, _ in net.graph.weight_specs()}


def op_types(net: netdsl.Network, opset: int) -> set[str]:
    return {n.op_type for n in net.to_onnx(opset=opset).graph.node}


# ----------------------------------------------------------------------------- numpy references
def ref_layernorm(x, w, b, eps, axis):
    mean = x.mean(axis=axis, keepdims=True, dtype=np.float64)
    var = ((x - mean) ** 2).mean(axis=axis, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    shape = (-1, 1, 1) if axis == 1 and x.ndim == 4 else (-1,)
    return y * w.reshape(shape) + b.reshape(shape)


def ref_groupnorm(x, g, w, b, eps):
    n, c, h, wd = x.shape
    grouped = x.reshape(n, g, -1).astype(np.float64)
    y = (grouped - grouped.mean(-1, keepdims=True)) / np.sqrt(grouped.var(-1, keepdims=True) + eps)
    return y.reshape(n, c, h, wd) * w.reshape(-1, 1, 1) + b.reshape(-1, 1, 1)


def ref_instancenorm(x, eps, w=None, b=None):
    x64 = x.astype(np.float64)
    y = (x64 - x64.mean((2, 3), keepdims=True)) / np.sqrt(x64.var((2, 3), keepdims=True) + eps)
    return y if w is None else y * w.reshape(-1, 1, 1) + b.reshape(-1, 1, 1)


# ----------------------------------------------------------------------------- shapes, weights, counts
@pytest.mark.parametrize(("shape", "layer", "out", "weights", "params", "macs"), [
    ("16x5x7", "n: layernorm", (16, 5, 7), {"n.weight": (16,), "n.bias": (16,)}, 32, 0),
    ("16", "n: layernorm eps 1e-6", (16,), {"n.weight": (16,), "n.bias": (16,)}, 32, 0),
    ("16x5x7", "n: groupnorm 4", (16, 5, 7), {"n.weight": (16,), "n.bias": (16,)}, 32, 0),
    ("16x5x7", "n: groupnorm 16 eps 1e-3", (16, 5, 7), {"n.weight": (16,), "n.bias": (16,)}, 32, 0),
    ("16x5x7", "n: instancenorm", (16, 5, 7), {}, 0, 0),
    ("16x5x7", "n: instancenorm affine eps 1e-3", (16, 5, 7), {"n.weight": (16,), "n.bias": (16,)}, 32, 0),
    ("16x5x7", "features: layer_scale init 1e-6", (16, 5, 7), {"features": (16, 1, 1)}, 16, 0),
    ("16x5x7", "s: channel_scale", (16, 5, 7), {"s": (16, 1, 1)}, 16, 0),
    ("16", "s: layer_scale", (16,), {"s": (16,)}, 16, 0),
    ("16x5x7", "f: fc 64 per_position", (64, 5, 7), {"f.weight": (64, 16), "f.bias": (64,)},
     16 * 64 + 64, 64 * 16 * 5 * 7),
    ("16x5x7", "f: fc 8 per_position nobias", (8, 5, 7), {"f.weight": (8, 16)}, 8 * 16, 8 * 16 * 5 * 7),
    ("16", "f: fc 8", (8,), {"f.weight": (8, 16), "f.bias": (8,)}, 8 * 16 + 8, 8 * 16),
])
def test_shape_weights_params_and_macs(shape, layer, out, weights, params, macs):
    net = netdsl.load(one(layer, shape))
    node = net.graph.nodes[-1]
    assert node.shape == out
    assert {name: spec.shape for name, spec, _ in net.graph.weight_specs()} == weights
    assert net.graph.params == params
    row = net.summary().layers[-1]
    assert (row.params, row.macs) == (params, macs)
    assert node.op.window(node.attrs, list(node.in_shapes)) is None  # no receptive-field effect
    check(net.to_onnx())


def test_convnext_sizes_per_position_macs_and_receptive_field():
    # torchvision ConvNeXt-Tiny's first block: 96 -> 384 -> 96 channels at 56x56
    net = netdsl.load(dedent("""
        network t {
            input image: 96x56x56
            conv 96 7x7 pad 3 depthwise -> layernorm eps 1e-6 -> fc 384 per_position -> gelu -> fc 96 per_position
        }
    """))
    rows = net.summary().layers
    assert [r.macs for r in rows[2::2]] == [96 * 384 * 56 * 56, 384 * 96 * 56 * 56]
    assert rows[-1].receptive_field == (7, 7)  # the conv's; the per-position layers add nothing
    assert net.summary().layers[2].detail == "per_position"


def test_initial_values_follow_pytorch():
    net = netdsl.load(dedent("""
        network t {
            input image: 16x5x7
            ln: layernorm -> gn: groupnorm 2 -> inorm: instancenorm affine -> ls: layer_scale init 1e-6
            fc: fc 4 per_position
        }
    """))
    w = net.initial_weights()
    for name in ("ln", "gn", "inorm"):
        assert (w[f"{name}.weight"] == 1).all() and (w[f"{name}.bias"] == 0).all()
    assert w["ls"].shape == (16, 1, 1) and (w["ls"] == np.float32(1e-6)).all()
    assert (w["fc.bias"] == 0).all() and w["fc.weight"].std() > 0
    assert (netdsl.load(one("ls: layer_scale")).initial_weights()["ls"] == 1).all()


# ----------------------------------------------------------------------------- layer_scale's weight name
def test_layer_scale_is_named_by_its_path_in_a_block_scope(tmp_path):
    source = dedent("""
        block cnblock(dim) {
            residual<
                block: (conv dim 7x7 pad 3 depthwise -> identity -> layernorm eps 1e-6 -> fc 4*dim per_position
                        gelu -> fc dim per_position -> identity)
                layer_scale: layer_scale init 1e-6
            >
        }
        network t {
            input image: 8x6x6
            features: (conv 8 1x1 -> (cnblock(8)))
        }
    """)
    net = netdsl.load(source)
    names = [name for name, _, _ in net.graph.weight_specs()]
    assert "features.1.0.layer_scale" in names
    assert names[2:] == ["features.1.0.block.0.weight", "features.1.0.block.0.bias", "features.1.0.block.2.weight",
                         "features.1.0.block.2.bias", "features.1.0.block.3.weight", "features.1.0.block.3.bias",
                         "features.1.0.block.5.weight", "features.1.0.block.5.bias", "features.1.0.layer_scale"]
    # the initializer takes the name; the layer's output tensor is renamed so that ONNX names stay unique
    model = net.to_onnx()
    check(model)
    assert "features.1.0.layer_scale" in {t.name for t in model.graph.initializer}
    outputs = {o for n in model.graph.node for o in n.output}
    assert "features.1.0.layer_scale" not in outputs and "features.1.0.layer_scale/out" in outputs
    # strict key matching: a checkpoint that has it loads; one that names it with a suffix is refused
    from netdsl.checkpoint import write_checkpoint

    weights = random_weights(net)
    write_checkpoint(tmp_path / "w.safetensors", weights)
    loaded = net.load_weights(tmp_path / "w.safetensors")
    assert np.array_equal(loaded["features.1.0.layer_scale"], weights["features.1.0.layer_scale"])
    wrong = dict(weights)
    wrong["features.1.0.layer_scale.weight"] = wrong.pop("features.1.0.layer_scale")
    write_checkpoint(tmp_path / "wrong.safetensors", wrong)
    with pytest.raises(WeightsError) as e:
        net.load_weights(tmp_path / "wrong.safetensors")
    text = str(e.value)
    assert "missing `features.1.0.layer_scale` (shape 8x1x1) for layer_scale" in text
    assert "unexpected `features.1.0.layer_scale.weight`" in text
    # a compiled .onnx is a checkpoint too: its initializers carry the weight names
    net.save(tmp_path / "t.onnx", weights=weights)
    again = net.load_weights(tmp_path / "t.onnx")
    assert all(np.array_equal(again[k], weights[k]) for k in weights)


def test_weights_list_shows_the_unsuffixed_name(tmp_path):
    from helpers import netdsl_main

    (tmp_path / "t.net").write_text(one("ls: layer_scale init 0.5"))
    code, out, err = netdsl_main("weights", "list", "--json", str(tmp_path / "t.net"))
    assert code == 0, err
    assert [(w["name"], w["shape"]) for w in json.loads(out)["weights"]] == [("ls", [16, 1, 1])]


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("layer", "shape", "message"), [
    ("groupnorm 5", "16x5x7", "groupnorm 5 groups must divide the channels (16)"),
    ("groupnorm 0", "16x5x7", "groupnorm needs a positive number of groups, got 0"),
    ("groupnorm", "16x5x7", "groupnorm needs the number of groups"),
    ("groupnorm 4", "16", "groupnorm expects a CxHxW input, got 16"),
    ("instancenorm", "16", "instancenorm expects a CxHxW input, got 16"),
    ("instancenorm", "16x1x1", "instancenorm needs more than one position per channel, got 16x1x1"),
    ("fc 10", "16x5x7", "fc expects a flat input, got 16x5x7; add `flatten` before it, or `per_position` to apply "
                        "it at every position"),
    ("fc 10 per_position", "16", "fc per_position expects a CxHxW input, got 16"),
    ("layernorm eps", "16x5x7", "`eps` needs a value"),
    ("layer_scale init", "16x5x7", "`init` needs a value"),
])
def test_located_errors(layer, shape, message):
    with pytest.raises(SemanticError) as e:
        netdsl.load(one(layer, shape))
    text = str(e.value)
    assert message in text
    assert "<string>:3:" in text  # the layer's line


def test_layernorm_needs_a_cxhxw_or_flat_input():
    with pytest.raises(OpError, match="layernorm expects a CxHxW input .* or a flat input, got 4x5"):
        LayerNorm().infer(LayerNorm().bind([]), [(4, 5)])
    with pytest.raises(OpError, match="groupnorm expects a CxHxW input, got 4x5"):
        g = GroupNorm()
        g.infer(g.bind([netdsl.ops.ArgValue("value", 2, None)]), [(4, 5)])


# ----------------------------------------------------------------------------- lowering per opset
@pytest.mark.parametrize(("layer", "shape", "opset", "has", "lacks"), [
    ("layernorm", "16x5x7", 17, {"LayerNormalization", "Transpose"}, {"InstanceNormalization"}),
    ("layernorm", "16", 17, {"LayerNormalization"}, {"Transpose", "InstanceNormalization"}),
    ("layernorm", "16x5x7", 16, {"InstanceNormalization", "Transpose", "Unsqueeze"}, {"LayerNormalization"}),
    ("layernorm", "16", MIN_OPSET, {"InstanceNormalization", "Reshape"}, {"LayerNormalization", "Unsqueeze"}),
    ("groupnorm 4", "16x5x7", 21, {"GroupNormalization"}, {"InstanceNormalization"}),
    ("groupnorm 4", "16x5x7", 20, {"Reshape", "InstanceNormalization"}, {"GroupNormalization"}),
    ("fc 8 per_position", "16x5x7", 17, {"Conv", "Unsqueeze"}, {"Gemm"}),
])
def test_onnx_nodes_by_opset(layer, shape, opset, has, lacks):
    if opset > NEWEST:
        pytest.skip(f"the installed onnx package supports opsets up to {NEWEST}")
    ops = op_types(netdsl.load(one(layer, shape)), opset)
    assert has <= ops and not lacks & ops


OPSETS = sorted({MIN_OPSET, 16, 17, 18, 20, min(21, NEWEST), NEWEST})


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize(("shape", "eps"), [((16, 5, 7), 1e-6), ((16,), 1e-5), ((3, 4, 4), 0.1)])
def test_layernorm_values(opset, shape, eps):
    net = netdsl.load(one(f"n: layernorm eps {eps}", "x".join(map(str, shape))))
    w = random_weights(net)
    x = random_input(shape)
    close(run(net, x, opset, w), ref_layernorm(x, w["n.weight"], w["n.bias"], eps, 1 if len(shape) == 3 else -1))


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize(("groups", "eps"), [(4, 1e-5), (1, 1e-3), (16, 1e-5)])
def test_groupnorm_values(opset, groups, eps):
    net = netdsl.load(one(f"n: groupnorm {groups} eps {eps}"))
    w = random_weights(net)
    x = random_input((16, 5, 7))
    close(run(net, x, opset, w), ref_groupnorm(x, groups, w["n.weight"], w["n.bias"], eps))


@pytest.mark.parametrize("opset", [MIN_OPSET, NEWEST])
@pytest.mark.parametrize("layer", ["n: instancenorm", "n: instancenorm affine", "n: instancenorm eps 0.01 affine"])
def test_instancenorm_values(opset, layer):
    net = netdsl.load(one(layer))
    w = random_weights(net)
    x = random_input((16, 5, 7))
    eps = 0.01 if "0.01" in layer else 1e-5
    close(run(net, x, opset, w), ref_instancenorm(x, eps, w.get("n.weight"), w.get("n.bias")))


@pytest.mark.parametrize("opset", [MIN_OPSET, NEWEST])
@pytest.mark.parametrize(("layer", "shape"), [("s: layer_scale", "16x5x7"), ("s: channel_scale init 2", "16")])
def test_layer_scale_values(opset, layer, shape):
    net = netdsl.load(one(layer, shape))
    w = random_weights(net)
    x = random_input(net.graph.inputs[0].shape)
    close(run(net, x, opset, w), x * w["s"])


@pytest.mark.parametrize("opset", [MIN_OPSET, NEWEST])
@pytest.mark.parametrize("bias", [True, False])
def test_fc_per_position_values(opset, bias):
    net = netdsl.load(one("f: fc 12 per_position" + ("" if bias else " nobias")))
    w = random_weights(net)
    x = random_input((16, 5, 7))
    expected = np.einsum("kc,nchw->nkhw", w["f.weight"].astype(np.float64), x)
    if bias:
        expected += w["f.bias"].reshape(-1, 1, 1)
    close(run(net, x, opset, w), expected)


def test_optimize_passes_leave_the_new_ops_alone():
    # fold-bn folds only a BatchNormalization fed by a Conv with constant weights; the per-position Conv's
    # weight is an Unsqueeze of the initializer, so a bn after it stays, and the values do not change
    net = netdsl.load(dedent("""
        network t {
            input image: 16x5x7
            conv 16 3x3 pad 1 -> bn -> layernorm -> fc 8 per_position -> bn -> groupnorm 2 -> layer_scale
            instancenorm affine
        }
    """))
    w = random_weights(net)
    for name in w:
        if name.endswith("running_var"):
            w[name] = np.abs(w[name]) + 0.5
    from helpers import run_onnx

    x = random_input((16, 5, 7))
    plain = net.to_onnx(weights=w)
    folded = net.to_onnx(weights=w, fold_bn=True)
    check(folded)
    assert [n.op_type for n in folded.graph.node].count("BatchNormalization") == 1
    close(run_onnx(folded, {"image": x})["output"], run_onnx(plain, {"image": x})["output"])


@pytest.mark.parametrize("opset", [MIN_OPSET, 17, NEWEST])
def test_fp16_keeps_the_normalisations_accurate(opset):
    net = netdsl.load(dedent("""
        network t {
            input image: 16x5x7
            layernorm -> fc 32 per_position -> groupnorm 4 -> instancenorm affine -> layer_scale init 0.5
            flatten -> layernorm
        }
    """))
    w = random_weights(net)
    x = random_input((16, 5, 7), scale=50.0)
    from helpers import run_onnx

    expected = run(net, x, opset, w)
    model = net.to_onnx(opset=opset, weights=w, dtype="fp16", keep_io_fp32=True)
    check(model)
    close(run_onnx(model, {"image": x})["output"], expected, tolerance=1e-2)
    # ONNX Runtime's CPU kernels widen fp16 themselves, so the values above cannot show an overflow: check that
    # every statistic is computed in fp32 (InstanceNormalization between Casts; the others by stash_type)
    casts = {n.output[0]: n for n in model.graph.node if n.op_type == "Cast"}
    norms = [n for n in model.graph.node if n.op_type.endswith("Normalization")]
    assert norms
    for n in norms:
        if n.op_type == "InstanceNormalization":
            assert all(casts[i].attribute[0].i == onnx.TensorProto.FLOAT for i in n.input)
        else:
            assert all(a.i == 1 for a in n.attribute if a.name == "stash_type")


# ----------------------------------------------------------------------------- against PyTorch
def _torch():
    return pytest.importorskip("torch", reason="comparing with PyTorch needs torch (optional)")


def _named(**modules):
    import torch

    return torch.nn.Sequential(__import__("collections").OrderedDict(modules))


@pytest.mark.torch
@pytest.mark.parametrize("eps", [1e-6, 1e-5])
def test_torch_layernorm2d(tmp_path, eps):
    _torch()
    pytest.importorskip("torchvision", reason="ConvNeXt's LayerNorm2d is torchvision's (optional)")
    from torchvision.models.convnext import LayerNorm2d

    torch_parity(_named(norm=LayerNorm2d(16, eps=eps)), one(f"norm: layernorm eps {eps}"), (16, 5, 7), tmp_path,
                 opsets=(MIN_OPSET, 17, NEWEST))


@pytest.mark.torch
def test_torch_layernorm_on_channels_last_and_flat(tmp_path):
    torch = _torch()

    class ChannelsLast(torch.nn.LayerNorm):  # nn.LayerNorm applied on the permuted tensor
        def forward(self, x):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    torch_parity(_named(n=ChannelsLast(16)), one("n: layernorm"), (16, 5, 7), tmp_path, opsets=(MIN_OPSET, 17))
    torch_parity(_named(n=torch.nn.LayerNorm(24, eps=1e-3)), one("n: layernorm eps 1e-3", "24"), (24,), tmp_path,
                 opsets=(MIN_OPSET, 17))


@pytest.mark.torch
@pytest.mark.parametrize(("groups", "eps"), [(4, 1e-5), (2, 1e-3), (16, 1e-5)])
def test_torch_groupnorm(tmp_path, groups, eps):
    torch = _torch()
    torch_parity(_named(gn=torch.nn.GroupNorm(groups, 16, eps=eps)), one(f"gn: groupnorm {groups} eps {eps}"),
                 (16, 5, 7), tmp_path, opsets=sorted({MIN_OPSET, 18, 20, min(21, NEWEST), NEWEST}))


@pytest.mark.torch
@pytest.mark.parametrize(("layer", "kwargs"), [("instancenorm", {}), ("instancenorm affine", {"affine": True}),
                                               ("instancenorm eps 1e-3 affine", {"affine": True, "eps": 1e-3})])
def test_torch_instancenorm(tmp_path, layer, kwargs):
    torch = _torch()
    torch_parity(_named(inorm=torch.nn.InstanceNorm2d(16, **kwargs)), one(f"inorm: {layer}"), (16, 5, 7), tmp_path,
                 opsets=(MIN_OPSET, NEWEST))


@pytest.mark.torch
def test_torch_layer_scale(tmp_path):
    torch = _torch()

    class Scaled(torch.nn.Module):  # torchvision ConvNeXt's `layer_scale * x`
        def __init__(self):
            super().__init__()
            self.layer_scale = torch.nn.Parameter(torch.full((16, 1, 1), 1e-6))

        def forward(self, x):
            return self.layer_scale * x

    torch_parity(Scaled(), one("layer_scale: layer_scale init 1e-6"), (16, 5, 7), tmp_path)


@pytest.mark.torch
@pytest.mark.parametrize("bias", [True, False])
def test_torch_linear_on_channels_last(tmp_path, bias):
    torch = _torch()

    class Permute(torch.nn.Module):
        def __init__(self, *dims):
            super().__init__()
            self.dims = dims

        def forward(self, x):
            return x.permute(*self.dims)

    module = torch.nn.Sequential(Permute(0, 2, 3, 1), torch.nn.Linear(16, 40, bias=bias), Permute(0, 3, 1, 2))
    source = one("identity -> fc 40 per_position" + ("" if bias else " nobias") + " -> identity")
    torch_parity(module, source, (16, 5, 7), tmp_path, opsets=(MIN_OPSET, NEWEST))


@pytest.mark.torch
def test_torch_convnext_block(tmp_path):
    # torchvision's CNBlock binds with its own state_dict keys: block.0 (depthwise conv), block.2 (LayerNorm),
    # block.3 and block.5 (Linear, 2-D weights), layer_scale (32x1x1, no suffix)
    _torch()
    pytest.importorskip("torchvision", reason="ConvNeXt's CNBlock is torchvision's (optional)")
    from torchvision.models.convnext import CNBlock

    source = """
        network cnblock {
            input image: 32x9x9
            residual<
                block: (conv 32 7x7 pad 3 depthwise -> identity -> layernorm eps 1e-6 -> fc 128 per_position
                        gelu -> fc 32 per_position -> identity)
                layer_scale: layer_scale init 1e-6
            >
        }
    """
    torch_parity(CNBlock(32, 1e-6, 0.0), source, (32, 9, 9), tmp_path, opsets=(MIN_OPSET, 17, NEWEST))
