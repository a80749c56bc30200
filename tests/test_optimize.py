"""Compile-time optimisation passes (netdsl.optimize): BN folding.

Folded and unfolded models must compute the same function (ONNX Runtime, rtol 1e-4) with non-trivial
bn statistics, and the folded bns must be gone from the ONNX.
"""

from __future__ import annotations

import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import netdsl
from netdsl.optimize import fold_batchnorm

NET = """
    block down(c) {
        residual<
            a: conv c 3x3 /2 pad 1 nobias -> abn: bn -> relu
            b: conv c 3x3 pad 1 nobias -> bbn: bn
        > -> relu
    }

    network opt(classes=5) {
        input image: 3x16x16
        conv1: conv 8 3x3 pad 1 -> bn1: bn -> relu
        dw: conv 8 3x3 pad 1 depthwise nobias -> dwbn: bn eps 1e-3
        tap: conv 8 1x1 nobias -> tapbn: bn
        add(@tap, @tapbn)
        side: conv 8 1x1 -> sidebn: bn
        block1: down(16)
        avgpool global -> flatten
        fc1: fc 12 -> fcbn: bn -> relu
        head: fc classes
        output logits
        output features = @side
    }
"""
FOLDED = {"bn1", "dwbn", "block1.abn", "block1.bbn", "block1.downsample.1"}
KEPT = {"tapbn": "the conv's output is also read by the add",
        "sidebn": "the conv's output is a graph output",
        "fcbn": "it follows an fc, not a conv"}


def random_weights(net: netdsl.Network, seed: int = 1) -> dict[str, np.ndarray]:
    """Initial weights with non-trivial bn statistics and conv biases (the initial ones are identities)."""
    rng = np.random.default_rng(seed)
    w = net.initial_weights()
    bns = {n.name for n in net.graph.nodes if n.op.name == "bn"}
    for name, value in w.items():
        layer, _, kind = name.rpartition(".")
        if layer in bns:
            w[name] = {"weight": rng.uniform(0.5, 2.0, value.shape), "bias": rng.normal(0, 0.5, value.shape),
                       "running_mean": rng.normal(0, 0.5, value.shape),
                       "running_var": rng.uniform(0.05, 3.0, value.shape)}[kind].astype(np.float32)
        elif kind == "bias":
            w[name] = rng.normal(0, 0.2, value.shape).astype(np.float32)
    return w


def bn_nodes(model: onnx.ModelProto) -> set[str]:
    return {n.name for n in model.graph.node if n.op_type == "BatchNormalization"}


@pytest.fixture(scope="module")
def net() -> netdsl.Network:
    return netdsl.load(textwrap.dedent(NET).lstrip("\n"))


def test_fold_bn_keeps_the_function(net, run_onnx):
    weights = random_weights(net)
    plain = net.to_onnx(weights=weights)
    folded = net.to_onnx(weights=weights, fold_bn=True)
    onnx.checker.check_model(folded, full_check=True)
    assert bn_nodes(plain) == FOLDED | set(KEPT)
    assert bn_nodes(folded) == set(KEPT), "the foldable bns disappear, the others stay"
    assert len(folded.graph.node) == len(plain.graph.node) - len(FOLDED)
    feeds = {"image": np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)}
    want, got = run_onnx(plain, feeds), run_onnx(folded, feeds)
    assert set(got) == {"logits", "features"}
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5 * np.abs(want[name]).max())
    # and the check is not vacuous: the bns do change the output
    unnormalised = net.to_onnx(weights={**weights, **{k: v for k, v in net.initial_weights().items() if "bn" in k}})
    assert np.abs(run_onnx(unnormalised, feeds)["logits"] - want["logits"]).max() > 1e-2


def test_folded_model_structure(net):
    folded = net.to_onnx(weights=random_weights(net), fold_bn=True)
    nodes = {n.name: n for n in folded.graph.node}
    conv1 = nodes["conv1"]
    # the conv writes the bn's tensor, so consumers and names downstream are unchanged
    assert list(conv1.output) == ["bn1"] and list(conv1.input) == ["image", "conv1.weight", "conv1.bias"]
    assert list(nodes["dw"].input) == ["0", "dw.weight", "dw.bias"], "a bias is created for a nobias conv"
    assert [a.i for a in nodes["dw"].attribute if a.name == "group"] == [8]
    lines = conv1.doc_string.splitlines()
    assert lines[0].endswith(":10:12") and lines[1].startswith("folded in: bn1 (") and lines[1].endswith(":10:37)")
    inits = {t.name for t in folded.graph.initializer}
    assert not any(n.startswith("bn1.") or n.startswith("block1.abn.") for n in inits)
    assert {"tapbn.running_var", "fcbn.weight"} <= inits
    value_info = {v.name for v in folded.graph.value_info}
    assert "conv1" not in value_info and "block1.downsample.0" not in value_info and "bn1" in value_info


def test_fold_weights_formula(net):
    weights = random_weights(net)
    folded = net.to_onnx(weights=weights, fold_bn=True)
    inits = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    s = weights["bn1.weight"].astype(np.float64) / np.sqrt(weights["bn1.running_var"].astype(np.float64) + 1e-5)
    np.testing.assert_allclose(inits["conv1.weight"], weights["conv1.weight"] * s[:, None, None, None], rtol=1e-6)
    want_b = (weights["conv1.bias"] - weights["bn1.running_mean"]) * s + weights["bn1.bias"]
    np.testing.assert_allclose(inits["conv1.bias"], want_b, rtol=1e-6, atol=1e-7)
    s = weights["dwbn.weight"].astype(np.float64) / np.sqrt(weights["dwbn.running_var"].astype(np.float64) + 1e-3)
    np.testing.assert_allclose(inits["dw.bias"], weights["dwbn.bias"] - weights["dwbn.running_mean"] * s,
                               rtol=1e-6, atol=1e-7)


def test_shared_conv_weight_is_not_modified_in_place(run_onnx):
    """Two convs share one weight, each followed by its own bn: each gets its own folded copy."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)

    def bn_params(p: str):
        return [numpy_helper.from_array(a.astype(np.float32), f"{p}.{k}") for k, a in (
            ("scale", rng.uniform(0.5, 2, 4)), ("bias", rng.normal(size=4)), ("mean", rng.normal(size=4)),
            ("var", rng.uniform(0.1, 2, 4)))]

    nodes = [helper.make_node("Conv", ["x", "w"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "b1.scale", "b1.bias", "b1.mean", "b1.var"], ["y1"],
                              name="b1"),
             helper.make_node("Conv", ["x", "w"], ["c2"], name="c2", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c2", "b2.scale", "b2.bias", "b2.mean", "b2.var"], ["y2"],
                              name="b2")]
    graph = helper.make_graph(
        nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, ["n", 4, 8, 8]) for y in ("y1", "y2")],
        [numpy_helper.from_array(w, "w"), *bn_params("b1"), *bn_params("b2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = fold_batchnorm(model)
    assert result.changed == 2
    assert [n.op_type for n in result.model.graph.node] == ["Conv", "Conv"]
    names = [list(n.input) for n in result.model.graph.node]
    assert names[0][1] != names[1][1] and "w" not in {names[0][1], names[1][1]}
    assert "w" not in {t.name for t in result.model.graph.initializer}, "the unused original is dropped"
    onnx.checker.check_model(result.model, full_check=True)
    feeds = {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}
    want, got = run_onnx(model, feeds), run_onnx(result.model, feeds)
    for y in ("y1", "y2"):
        np.testing.assert_allclose(got[y], want[y], rtol=1e-4, atol=1e-5)
    assert len(model.graph.node) == 4, "the input model is left untouched"


def test_nothing_to_fold_returns_the_model():
    net = netdsl.load("network n { input x: 3x8x8\n conv 4 3x3 -> relu\n output y }")
    model = net.to_onnx()
    result = fold_batchnorm(model)
    assert result.changed == 0 and result.model is model


def test_compile_fold_bn_cli(run_cli, write_net, tmp_path, run_onnx):
    src = write_net("opt.net", NET)
    rc, out, err = run_cli("compile", src, "-o", tmp_path / "folded.onnx", "--fold-bn")
    assert rc == 0, err
    rc, out, err = run_cli("compile", src, "-o", tmp_path / "plain.onnx")
    assert rc == 0, err
    folded, plain = onnx.load(tmp_path / "folded.onnx"), onnx.load(tmp_path / "plain.onnx")
    assert bn_nodes(folded) == set(KEPT) and bn_nodes(plain) == FOLDED | set(KEPT)
    assert folded.graph.node[0].doc_string.startswith(str(src) + ":10:12")
    feeds = {"image": np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)}
    np.testing.assert_allclose(run_onnx(folded, feeds)["logits"], run_onnx(plain, feeds)["logits"],
                               rtol=1e-4, atol=1e-6)
