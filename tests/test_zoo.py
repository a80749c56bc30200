"""The network zoo (networks/*.net): published figures, valid ONNX, runs in ONNX Runtime, torchvision weight names.

Every ``networks/*.net`` file is picked up by a glob, so a new zoo network is covered as soon as it exists. Its
published figures go in ``PUBLISHED``; its torchvision state_dict keys in ``tests/fixtures/torchvision_keys/`` (made
by ``tools/make_key_fixtures.py --ref DIR`` from ``tools/torchvision_reference.py`` dumps), or, for a network with
no torchvision counterpart, a reason in ``NO_TORCHVISION``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import netdsl

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted(ROOT.joinpath("networks").glob("*.net"))
KEY_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "torchvision_keys"

# network -> (params, MACs of conv+fc layers per image at the file's input size, source). Params must match exactly,
# MACs within MACS_TOLERANCE (published MAC figures are often rounded or count slightly different layers).
PUBLISHED: dict[str, tuple[int, int, str]] = {
    # 156 + 2,416 + 48,120 + 10,164 + 850 params; MACs 6*28*28*25 + 16*10*10*150 + 120*400 + 120*84 + 84*10
    "lenet5": (61_706, 416_520, "LeCun et al. 1998 (C1..F6 + 10-way output; MACs counted by hand)"),
    "alexnet": (61_100_840, 714_188_480, "torchvision AlexNet_Weights: 61.1M params, 0.71 GFLOPS"),
    "vgg16": (138_357_544, 15_470_264_320, "torchvision VGG16_Weights: 138.4M params, 15.47 GFLOPS"),
    "googlenet": (6_624_904, 1_498_376_192, "torchvision GoogLeNet_Weights: 6.6M params, 1.5 GFLOPS"),
    "resnet18": (11_689_512, 1_814_073_344, "torchvision ResNet18_Weights: 11.7M params, 1.81 GFLOPS"),
    "resnet50": (25_557_032, 4_089_184_256, "torchvision ResNet50_Weights: 25.6M params, 4.09 GFLOPS"),
}
MACS_TOLERANCE = 0.005

# Zoo networks that have no torchvision model to match names against.
NO_TORCHVISION = {
    "lenet5": "torchvision has no LeNet-5",
}

BATCH = 2


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


KEYED = [p for p in ZOO if (KEY_FIXTURES / f"{p.stem}.json").exists()]


@pytest.fixture(scope="module", params=ZOO, ids=_ids(ZOO))
def compiled(request) -> tuple[netdsl.Network, onnx.ModelProto]:
    """Each zoo network loaded and lowered once per module (vgg16 alone is 553 MB of weights)."""
    net = netdsl.load(str(request.param))
    return net, net.to_onnx()


def test_zoo_is_not_empty():
    assert {"lenet5", "alexnet", "vgg16", "googlenet", "resnet18", "resnet50"} <= {p.stem for p in ZOO}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_figures(name):
    params, macs, source = PUBLISHED[name]
    path = ROOT / "networks" / f"{name}.net"
    assert path.exists(), f"PUBLISHED lists {name} but there is no {path}"
    summary = netdsl.load(str(path)).summary()
    assert summary.params == params, f"{name}: {summary.params:,} params, published {params:,} ({source})"
    assert abs(summary.macs - macs) <= MACS_TOLERANCE * macs, \
        f"{name}: {summary.macs:,} MACs, published {macs:,} ({source})"


@pytest.mark.parametrize("path", ZOO, ids=_ids(ZOO))
def test_zoo_file_checks_without_warnings_and_states_its_figures(path):
    net = netdsl.load(str(path))
    assert net.warnings == [], [str(w) for w in net.warnings]
    summary = net.summary()
    head = path.read_text().split("\n\n", 1)[0]  # the leading comment block
    assert head.startswith("#"), f"{path.name} must start with a comment citing the paper"
    assert f"{summary.params:,} params" in head, f"{path.name}'s header does not state {summary.params:,} params"
    assert f"{summary.macs:,} MACs" in head, f"{path.name}'s header does not state {summary.macs:,} MACs"


def test_onnx_checker_full(compiled):
    _, model = compiled
    onnx.checker.check_model(model, full_check=True)


def test_onnx_runtime_runs_batch(compiled):
    net, model = compiled
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal((BATCH, *i.shape)).astype(np.float32) for i in net.graph.inputs}
    assert [i.name for i in session.get_inputs()] == list(feeds)
    results = session.run(None, feeds)
    declared = [(o.name, (BATCH, *net.graph.nodes[o.node].shape)) for o in net.graph.outputs]
    assert [o.name for o in session.get_outputs()] == [name for name, _ in declared]
    for (name, shape), y in zip(declared, results, strict=True):
        assert y.shape == shape, f"output {name}: {y.shape}, declared {shape}"
        assert y.dtype == np.float32
        assert np.isfinite(y).all(), f"output {name} has non-finite values"
        assert np.ptp(y) > 0, f"output {name} is constant"


def test_every_zoo_network_has_torchvision_keys_or_a_reason():
    fixtures = {p.stem for p in KEY_FIXTURES.glob("*.json")}
    zoo = {p.stem for p in ZOO}
    missing = sorted(zoo - fixtures - set(NO_TORCHVISION))
    assert not missing, (f"no torchvision key fixture for {missing}: run tools/make_key_fixtures.py --ref DIR "
                         f"NAME, or give a reason in NO_TORCHVISION")
    assert not fixtures - zoo, f"key fixtures without a zoo network: {sorted(fixtures - zoo)}"
    assert not fixtures & set(NO_TORCHVISION), "a network is both in NO_TORCHVISION and has a key fixture"


@pytest.mark.parametrize("compiled", KEYED, ids=_ids(KEYED), indirect=True)
def test_weight_names_match_torchvision(compiled):
    net, model = compiled
    data = json.loads((KEY_FIXTURES / f"{Path(net.path).stem}.json").read_text())
    expected = {key: tuple(shape) for key, shape in data["keys"].items()}
    assert expected, "empty fixture"
    specs = {name: tuple(spec.shape) for name, spec, _ in net.graph.weight_specs()}
    assert sorted(set(specs) - set(expected)) == [], "netdsl weights torchvision does not have"
    assert sorted(set(expected) - set(specs)) == [], "torchvision keys netdsl does not produce"
    wrong = {k: (specs[k], expected[k]) for k in expected if specs[k] != expected[k]}
    assert wrong == {}, "shape mismatches (netdsl, torchvision)"
    # The compiled model's initializers carry the same names and shapes, so a torchvision state_dict loads as is.
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    assert {k: inits.get(k) for k in expected} == expected


@pytest.mark.parametrize("name", ["lenet5", "googlenet"])
def test_compiling_twice_gives_identical_bytes(name, tmp_path):
    path = str(ROOT / "networks" / f"{name}.net")
    first = netdsl.load(path).to_onnx().SerializeToString()
    second = netdsl.load(path).to_onnx().SerializeToString()
    assert first == second
    assert netdsl.load(path).to_onnx(seed=1).SerializeToString() != first  # the bytes do depend on the weights
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    netdsl.load(path).save(a)
    netdsl.load(path).save(b)
    assert a.read_bytes() == b.read_bytes() == first
