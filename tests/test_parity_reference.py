"""Parity with torchvision on every run, without torch: stored reference logits from real torchvision.

tests/fixtures/parity/<network>.npz holds the logits torchvision computed (tools/make_parity_fixtures.py,
docs/parity.md) for the network's deterministic weights (``helpers.parity_weights``: netdsl's initial weights
from a seed, batch norms with non-trivial statistics) on a seeded input. Here the .net is compiled with the same
weights and run with ONNX Runtime on the CPU; fp32 must agree within the tolerance of tests/test_parity.py:
max |difference| <= 1e-4 * max |logit|.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import FP32_TOL, PARITY, parity_cases, parity_input, parity_weights, run_onnx

import netdsl

CASES = parity_cases()


def test_every_torchvision_network_has_a_fixture():
    have = {p.stem for p in PARITY.glob("*.npz")}
    want = {path.stem for path, _, _ in CASES}
    assert len(want) >= 23
    assert want == have, f"run tools/make_parity_fixtures.py: missing {sorted(want - have)}, " \
                         f"stale {sorted(have - want)}"


@pytest.mark.parametrize(("path", "ctor", "dims"), [pytest.param(*c, id=c[0].stem) for c in CASES])
def test_matches_stored_torchvision_logits(path, ctor, dims):
    fixture = PARITY / f"{path.stem}.npz"
    with np.load(fixture, allow_pickle=False) as data:
        expected, meta = data["logits"], json.loads(str(data["meta"]))
    assert meta["torchvision"] == ctor, f"{path.name}'s header changed: run tools/make_parity_fixtures.py"
    assert meta["input_shape"][1:] == list(dims)
    net = netdsl.load(path)
    model = net.to_onnx(weights=parity_weights(net, meta["weight_seed"]))
    x = parity_input(tuple(meta["input_shape"]), meta["input_seed"])
    (out,) = run_onnx(model, {model.graph.input[0].name: x}).values()
    assert out.shape == expected.shape
    scale = float(np.abs(expected).max())
    diff = float(np.abs(out.astype(np.float64) - expected).max())
    assert scale > 0
    assert diff <= FP32_TOL * scale, (f"{path.stem}: max diff {diff:.3g} > {FP32_TOL} x max logit {scale:.3g} "
                                      f"(torch {meta['torch_version']}, torchvision {meta['torchvision_version']})")


def test_a_wrong_weight_is_caught():
    """The comparison can fail: one batch norm's variance changed moves the logits past the tolerance."""
    path = next(p for p, _, _ in CASES if p.stem == "resnet18")
    with np.load(PARITY / "resnet18.npz", allow_pickle=False) as data:
        expected, meta = data["logits"], json.loads(str(data["meta"]))
    net = netdsl.load(path)
    weights = parity_weights(net, meta["weight_seed"])
    weights["layer4.1.bn2.running_var"] = weights["layer4.1.bn2.running_var"] * 4
    model = net.to_onnx(weights=weights)
    (out,) = run_onnx(model, {model.graph.input[0].name: parity_input(tuple(meta["input_shape"]),
                                                                      meta["input_seed"])}).values()
    assert float(np.abs(out - expected).max()) > FP32_TOL * float(np.abs(expected).max())
