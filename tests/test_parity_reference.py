"""Parity with torchvision on every run, without torch: stored reference logits from real torchvision.

tests/fixtures/parity/<network>.npz holds the logits (a segmentation model's ``out`` and ``aux`` score maps, every
third row and column of them: ``meta["sample"]``) torchvision computed (tools/make_parity_fixtures.py,
docs/parity.md) for the network's deterministic weights (``helpers.parity_weights``: netdsl's initial weights
from a seed, batch norms with non-trivial statistics) on a seeded input. Here the .net is compiled with the same
weights (and the header's ``# parity-args``) and run with ONNX Runtime on the CPU; fp32 must agree, output by
output, within the tolerance of tests/test_parity.py: max |difference| <= 1e-4 * max |value|.

The parameter and MAC totals of every network with a torchvision key fixture (tests/fixtures/torchvision_keys,
counted by tools/torchvision_reference.py on torchvision's model) must equal netdsl's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import FP32_TOL, PARITY, paired_outputs, parity_args, parity_cases, parity_input, parity_weights, run_onnx

import netdsl

CASES = parity_cases()
KEY_FIXTURES = PARITY.parent / "torchvision_keys"
NETWORKS = PARITY.parents[2] / "networks"


def test_every_torchvision_network_has_a_fixture():
    have = {p.stem for p in PARITY.glob("*.npz")}
    want = {path.stem for path, _, _ in CASES}
    assert len(want) >= 23
    assert want == have, f"run tools/make_parity_fixtures.py: missing {sorted(want - have)}, " \
                         f"stale {sorted(have - want)}"


def _stored(fixture):
    """The stored reference: ({output name: array}, meta)."""
    with np.load(fixture, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        return {name: data[name] for name in meta.get("outputs", ["logits"])}, meta


def _sampled(array: np.ndarray, meta: dict) -> np.ndarray:
    """A score map as stored: every ``meta["sample"]``-th row and column (logits are stored whole)."""
    step = meta.get("sample", 1)
    return array[..., ::step, ::step] if array.ndim == 4 else array


@pytest.mark.parametrize(("path", "ctor", "dims"), [pytest.param(*c, id=c[0].stem) for c in CASES])
def test_matches_stored_torchvision_logits(path, ctor, dims):
    expected, meta = _stored(PARITY / f"{path.stem}.npz")
    assert meta["torchvision"] == ctor, f"{path.name}'s header changed: run tools/make_parity_fixtures.py"
    assert meta["input_shape"][1:] == list(dims)
    assert meta.get("args", {}) == parity_args(path), f"{path.name}'s parity-args changed"
    net = netdsl.load(path, args=parity_args(path))
    model = net.to_onnx(weights=parity_weights(net, meta["weight_seed"]))
    x = parity_input(tuple(meta["input_shape"]), meta["input_seed"])
    outs = run_onnx(model, {model.graph.input[0].name: x})
    for name, want, got in paired_outputs(expected, outs):
        got = _sampled(got, meta)
        assert got.shape == want.shape, name
        scale = float(np.abs(want).max())
        diff = float(np.abs(got.astype(np.float64) - want).max())
        assert scale > 0
        assert diff <= FP32_TOL * scale, (f"{path.stem} {name}: max diff {diff:.3g} > {FP32_TOL} x max value "
                                          f"{scale:.3g} (torch {meta['torch_version']}, torchvision "
                                          f"{meta['torchvision_version']})")


KEYED = sorted(p.stem for p in KEY_FIXTURES.glob("*.json"))


@pytest.mark.parametrize("name", KEYED)
def test_params_and_macs_equal_torchvision(name):
    """netdsl's totals at the file's input equal what tools/torchvision_reference.py counted on torchvision's
    model (parameters; conv and linear multiply-accumulates from forward hooks) at the same input."""
    data = json.loads((KEY_FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    net = netdsl.load(NETWORKS / f"{name}.net")
    assert list(net.graph.inputs[0].shape) == data["input_shape"]
    summary = net.summary()
    assert (summary.params, summary.macs) == (data["params"], data["macs"]), data["builder_kwargs"]


def test_a_wrong_weight_is_caught():
    """The comparison can fail: one batch norm's variance changed moves the logits past the tolerance."""
    path = next(p for p, _, _ in CASES if p.stem == "resnet18")
    stored, meta = _stored(PARITY / "resnet18.npz")
    expected = stored["logits"]
    net = netdsl.load(path)
    weights = parity_weights(net, meta["weight_seed"])
    weights["layer4.1.bn2.running_var"] = weights["layer4.1.bn2.running_var"] * 4
    model = net.to_onnx(weights=weights)
    (out,) = run_onnx(model, {model.graph.input[0].name: parity_input(tuple(meta["input_shape"]),
                                                                      meta["input_seed"])}).values()
    assert float(np.abs(out - expected).max()) > FP32_TOL * float(np.abs(expected).max())
