"""Lowering to ONNX: validity, value_info, names, source locations, metadata, determinism, opsets."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from helpers import NETWORKS, actual_shapes, dedent, ort_session, random_feeds

import netdsl
from netdsl.lower import MIN_OPSET, max_opset

NEWEST = max_opset()

# every kind of layer and composite in one small network
EVERYTHING = """
block se(c, r=4) {
    scale<
        avgpool global -> fc1: conv c // r 1x1 -> relu -> fc2: conv c 1x1 -> hardsigmoid
    >
}

block bottleneck(width, stride=1) {
    residual<
        conv1: conv width 1x1 nobias -> bn1: bn -> relu
        conv2: conv width 3x3 /stride pad 1 groups 2 nobias -> bn2: bn -> relu6
        conv3: conv width * 2 1x1 nobias -> bn3: bn -> se(width * 2)
    > -> relu
}

network everything(classes=7) {
    input image: 3x32x32
    conv1: conv 16 3x3 pad 1 -> bn1: bn -> leaky_relu 0.1 -> lrn 5
    pool: maxpool 3x3 /2 pad 1 ceil
    layer1: bottleneck(8, stride=2) x 2
    mix: inception<
        b1: conv 8 1x1 -> silu
      | b2: (conv 4 1x1 -> conv 8 3x3 pad 1 dilation 1 -> gelu)
      | b3: (avgpool 3x3 /1 pad 1 -> conv 16 3x3 pad 1 depthwise -> hardswish)
    >
    channel_shuffle 4 -> dropout 0.2 -> identity
    up: upsample 2 -> conv 8 3x3 /2 pad same -> tanh
    avgpool adaptive 2x2 -> flatten -> fc 5 -> aux: sigmoid
    @up -> avgpool global -> flatten -> head: fc classes nobias -> softmax
    output probs
    output aux = @aux
}
"""


@pytest.fixture(scope="module")
def everything():
    net = netdsl.load(dedent(EVERYTHING))
    return net, net.to_onnx()


def test_full_check_and_runs(everything):
    net, model = everything
    onnx.checker.check_model(model, full_check=True)
    out = dict(zip(["probs", "aux"], ort_session(model).run(["probs", "aux"], random_feeds(model, batch=3)),
                   strict=True))
    assert out["probs"].shape == (3, 7) and out["aux"].shape == (3, 5)
    np.testing.assert_allclose(out["probs"].sum(axis=1), 1, rtol=1e-5)


def test_resnet50_full_check():
    model = netdsl.load(NETWORKS / "resnet50.net").to_onnx()
    onnx.checker.check_model(model, full_check=True)
    assert len(model.graph.initializer) >= 53 * 2 + 1
    assert sum(int(np.prod(t.dims)) for t in model.graph.initializer if "running" not in t.name) == 25_557_032


def test_value_info_for_every_intermediate_tensor(everything):
    net, model = everything
    g = model.graph
    produced = {o for n in g.node for o in n.output}
    graph_outputs = {o.name for o in g.output}
    described = {vi.name: vi for vi in g.value_info}
    assert produced - graph_outputs == set(described)  # every intermediate tensor, and nothing else
    for vi in list(g.value_info) + list(g.output) + list(g.input):
        dims = vi.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and not dims[0].HasField("dim_value"), vi.name
        assert all(d.dim_value > 0 for d in dims[1:]), vi.name
        assert vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # the declared shapes are the ones ONNX Runtime computes
    actual = actual_shapes(model, batch=2)
    for vi in g.value_info:
        assert actual[vi.name] == (2, *(d.dim_value for d in vi.type.tensor_type.shape.dim[1:])), vi.name
    # and every layer's tensor carries netdsl's inferred shape
    for node in net.graph.nodes[1:]:
        if node.name in described:
            assert tuple(d.dim_value for d in described[node.name].type.tensor_type.shape.dim[1:]) == node.shape


def test_node_names_are_dotted_paths(everything):
    net, model = everything
    layer_names = {n.name for n in net.graph.nodes}
    onnx_names = [n.name for n in model.graph.node]
    assert len(onnx_names) == len(set(onnx_names))
    for name in onnx_names:  # a layer's own node, or a helper node of its lowering `layer/Op_k`
        assert name.split("/")[0] in layer_names or name.startswith("output."), name
    for expected in ("conv1", "bn1", "layer1.0.conv2", "layer1.0.downsample.0", "layer1.1.2.fc1", "mix.b2.1",
                     "mix.concat", "head"):
        assert expected in onnx_names
    inits = {t.name for t in model.graph.initializer}
    assert {"layer1.0.downsample.1.running_var", "layer1.1.bn3.weight", "mix.b3.1.weight", "head.weight"} <= inits
    assert "head.bias" not in inits


def test_doc_strings_are_source_locations():
    src = dedent("""
        block unit(c) {
            conv c 3x3 pad 1 -> relu
        }
        network t {
            input image: 3x8x8
            stem: conv 4 1x1
            body: unit(4)
        }
    """)
    model = netdsl.load(src).to_onnx()
    docs = {n.name: n.doc_string for n in model.graph.node}
    assert docs["stem"] == "<string>:6:11"
    assert docs["body.0"].splitlines() == ["<string>:2:5", "in block `unit` called from <string>:7:11"]
    assert docs["body.1"].splitlines()[0] == "<string>:2:25"


def test_doc_strings_name_the_file(write_net):
    path = write_net("f.net", "network t {\n    input image: 3x8x8\n    conv 4 1x1\n}\n")
    model = netdsl.load(path).to_onnx()
    assert model.graph.node[0].doc_string == f"{path}:3:5"


def test_metadata(write_net):
    text = "network meta {\n    input image: 3x8x8\n    conv 4 1x1\n}\n"
    path = write_net("meta.net", text)
    model = netdsl.load(path).to_onnx()
    props = {p.key: p.value for p in model.metadata_props}
    assert props["netdsl.version"] == netdsl.__version__
    assert props["netdsl.network"] == "meta"
    assert props["netdsl.source_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert model.producer_name == "netdsl" and model.graph.name == "meta"


def test_source_hash_covers_imports(write_net):
    write_net("lib.net", "block unit(c) {\n    conv c 1x1\n}\n")
    main = write_net("main.net", 'import "lib.net"\nnetwork t {\n    input image: 3x8x8\n    unit(4)\n}\n')
    before = netdsl.load(main).graph.source_hash
    write_net("lib.net", "block unit(c) {\n    conv c 3x3\n}\n")
    assert netdsl.load(main).graph.source_hash != before


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


def test_seeds(everything):
    net, model = everything
    same = net.to_onnx(seed=0)
    assert same.SerializeToString() == model.SerializeToString()
    assert netdsl.load(dedent(EVERYTHING)).to_onnx().SerializeToString() == model.SerializeToString()
    other = _weights(net.to_onnx(seed=1))
    base = _weights(model)
    assert base.keys() == other.keys()
    assert not np.array_equal(base["conv1.weight"], other["conv1.weight"])
    np.testing.assert_array_equal(base["conv1.bias"], other["conv1.bias"])  # zeros either way
    np.testing.assert_array_equal(base["bn1.weight"], np.ones(16, np.float32))
    # fc weights: normal with std 0.01 (torchvision's rule; tests/test_default_init.py checks every kind)
    w = base["head.weight"]
    assert abs(w.std() - 0.01) < 0.35 * 0.01


def test_weights_do_not_depend_on_other_layers():
    def weight(body: str) -> np.ndarray:
        return _weights(netdsl.load(f"network t {{\n    input image: 3x8x8\n{body}}}\n").to_onnx())["x.weight"]

    alone = weight("    x: conv 4 3x3\n")
    np.testing.assert_array_equal(alone, weight("    w: relu\n    x: conv 4 3x3\n"))
    np.testing.assert_array_equal(alone, weight("    x: conv 4 3x3 -> y: conv 2 1x1\n"))


@pytest.mark.parametrize("opset", [MIN_OPSET, 17, NEWEST])
def test_opsets_valid_and_agree(opset, everything):
    net, reference = everything
    model = net.to_onnx(opset=opset)
    assert model.opset_import[0].version == opset
    onnx.checker.check_model(model, full_check=True)
    feeds = random_feeds(model, batch=2, seed=3)
    names = ["probs", "aux"]
    got = ort_session(model).run(names, feeds)
    want = ort_session(reference).run(names, feeds)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_opset_out_of_range_is_a_usage_error(everything):
    net, _ = everything
    for opset in (MIN_OPSET - 1, NEWEST + 1):
        with pytest.raises(netdsl.UsageError, match=f"between {MIN_OPSET} and {NEWEST}"):
            net.to_onnx(opset=opset)


def test_output_that_is_an_input_and_a_tensor_output_twice(run_onnx):
    src = dedent("""
        network t {
            input image: 2x4x4
            a: relu
            output raw = @image
            output first = @a
            output second = @a
        }
    """)
    model = netdsl.load(src).to_onnx()
    onnx.checker.check_model(model, full_check=True)
    x = np.linspace(-1, 1, 2 * 2 * 4 * 4, dtype=np.float32).reshape(2, 2, 4, 4)
    out = run_onnx(model, {"image": x})
    np.testing.assert_array_equal(out["raw"], x)
    np.testing.assert_array_equal(out["first"], np.maximum(x, 0))
    np.testing.assert_array_equal(out["second"], np.maximum(x, 0))
