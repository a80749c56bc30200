"""`netdsl compare` as a user runs it (in-process with captured streams): the CPU, small networks.

On one CPU the honest sources of disagreement are compile-time variants of the same network
(``+fp16`` rounds weights and activations to float16; ``+fold-bn`` changes the order of the
arithmetic), so those are what the failing and per-layer cases compare against plain ``ort:cpu``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

SMALL = """
    network small(classes=10) {
        input image: 3x16x16
        conv1: conv 8 3x3 pad 1 nobias -> bn1: bn -> relu
        conv2: conv 8 3x3 pad 1 -> bn2: bn -> relu
        pool: maxpool 2x2 /2
        avgpool global -> flatten
        fc: fc classes
        output logits
    }
"""


@pytest.fixture
def small(write_net):
    return write_net("small.net", SMALL)


def test_pass_exit_0(run_cli, small):
    rc, out, err = run_cli("compare", small, "--engines", "ort:cpu,ort:cpu+opt=disable,ort:cpu+fold-bn+threads=1")
    assert rc == 0, err
    assert "ort:cpu+opt=disable vs ort:cpu" in out and "ort:cpu+fold-bn+threads=1 vs ort:cpu" in out
    assert "PASS: all 2 comparisons agree" in out
    assert "FAIL" not in out


def test_fail_exit_1_and_tolerances_decide(run_cli, small):
    rc, out, err = run_cli("compare", small, "--engines", "ort:cpu,ort:cpu+fp16", "--atol", "0", "--rtol", "1e-4")
    assert rc == 1, err
    assert "FAIL: 1 of 1 comparisons disagree" in out
    assert "Traceback" not in err
    # the same two runs agree once the tolerance admits float16 rounding
    rc, out, err = run_cli("compare", small, "--engines", "ort:cpu,ort:cpu+fp16", "--atol", "0.05", "--rtol", "0.05")
    assert rc == 0, out + err


def test_per_layer_names_first_diverging_layer_and_its_source(run_cli, small):
    rc, out, err = run_cli("compare", small, "--engines", "ort:cpu,ort:cpu+fp16", "--per-layer",
                           "--atol", "0", "--rtol", "1e-3")
    assert rc == 1, err
    # float16 weights already change the first conv's output beyond fp32 tolerances (atol 0, rtol 1e-3)
    assert f"{small}:3:12: note: first divergence: tensor `conv1` (node conv1, Conv)" in out
    assert "conv1: conv 8 3x3 pad 1 nobias -> bn1: bn -> relu" in out  # the quoted source line


def test_per_layer_fold_bn_at_zero_tolerance_points_at_the_bn(run_cli, small):
    # Folding changes rounding only: it passes the default tolerances, and at zero tolerance the first
    # tensor that differs is the first bn's output (the conv's own output no longer exists when folded).
    rc, out, err = run_cli("compare", small, "--engines", "ort:cpu,ort:cpu+fold-bn", "--per-layer", "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["comparisons"][0]["per_layer"]["first_divergence"] is None
    rc, out, err = run_cli("compare", small, "--engines", "ort:cpu,ort:cpu+fold-bn", "--per-layer", "--json",
                           "--atol", "0", "--rtol", "0")
    report = json.loads(out)
    first = report["comparisons"][0]["per_layer"]["first_divergence"]
    assert first["tensor"] == "bn1" and first["op"] == "BatchNormalization"
    assert first["location"] == f"{small}:3:44"
    assert rc == (0 if report["comparisons"][0]["pass"] else 1)


def test_json_schema(run_cli, small):
    rc, out, err = run_cli("compare", small, "--engines", "ort:cpu,ort:cpu+fp16", "--per-layer", "--json",
                           "--batch", "2", "--atol", "0", "--rtol", "1e-3")
    assert rc == 1, err
    r = json.loads(out)
    assert set(r) >= {"model", "reference", "atol", "rtol", "per_layer", "inputs", "input_source", "engines",
                      "comparisons", "pass"}
    assert r["model"] == "small" and r["reference"] == "ort:cpu" and r["pass"] is False
    assert r["atol"] == 0 and r["rtol"] == 1e-3
    assert r["inputs"] == {"image": {"shape": [2, 3, 16, 16], "dtype": "float32"}}
    assert [e["label"] for e in r["engines"]] == ["ort:cpu", "ort:cpu+fp16"]
    assert r["engines"][1]["variants"] == ["fp16"]
    for e in r["engines"]:
        assert e["engine"] == "ort" and e["device"] == "cpu" and e["opt_level"] == "all"
        assert e["threads"] >= 1 and e["prepare_seconds"] >= 0
    (comp,) = r["comparisons"]
    assert comp["engine"] == "ort:cpu+fp16" and comp["reference"] == "ort:cpu" and comp["pass"] is False
    logits = comp["outputs"]["logits"]
    assert logits["shape"] == [2, 10] and logits["size"] == 20 and logits["pass"] is False
    assert 0 < logits["max_abs"] < 0.1 and logits["max_rel"] > 0 and 0 < logits["mismatched"] <= 20
    first = comp["per_layer"]["first_divergence"]
    assert first["tensor"] == "conv1" and first["location"] == f"{small}:3:12"
    assert comp["per_layer"]["compared"] >= 8


def test_onnx_model_with_input_file(run_cli, small, tmp_path):
    onnx_path = tmp_path / "small.onnx"
    rc, _, err = run_cli("compile", small, "-o", onnx_path, "-q")
    assert rc == 0, err
    x = np.random.default_rng(3).standard_normal((3, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rc, out, err = run_cli("compare", onnx_path, "--engines", "ort:cpu,ort:cpu+fold-bn", "--input",
                           f"image={tmp_path / 'x.npy'}", "--json")
    assert rc == 0, err
    r = json.loads(out)
    assert r["input_source"] == "files" and r["inputs"]["image"]["shape"] == [3, 3, 16, 16]
    assert r["comparisons"][0]["outputs"]["logits"]["max_abs"] < 1e-4


def test_unavailable_engine_is_a_clear_error(run_cli, small):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has ONNX Runtime's CUDA provider, so ort:cuda is available")
    rc, out, err = run_cli("compare", small, "--engines", "ort:cpu,ort:cuda")
    assert rc == 1
    assert err.startswith("netdsl: error: ort:cuda: --device cuda needs ONNX Runtime's CUDAExecutionProvider")
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("engines, message", [
    ("ort:cpu", "needs at least two engine:device pairs"),
    ("ort:cpu,ort:gpu", "engine `ort` runs on cpu, cuda, tensorrt; got `gpu`"),
    ("ort:cpu,onnx:cpu", "unknown engine `onnx`"),
    ("ort:cpu,ort:cpu+opt=fast", "bad option `+opt=fast`"),
    ("ort:cpu,ort:cpu+precision=fp16", "use `+fp16`"),
])
def test_bad_engine_list_is_a_usage_error(run_cli, small, engines, message):
    rc, _, err = run_cli("compare", small, "--engines", engines)
    assert rc == 2
    assert message in err and "Traceback" not in err


def test_agreement_rule():
    from netdsl.agreement import agreement

    ref = np.array([1.0, 0.0, -2.0, np.nan, np.inf, 100.0], np.float32)
    same = agreement(ref.copy(), ref, atol=0, rtol=0)
    assert same.passed and same.max_abs == 0 and same.mismatched == 0, "NaN agrees with NaN, inf with inf"
    got = np.array([1.0 + 2e-4, 1e-5, -2.0, np.nan, np.inf, 100.05], np.float32)
    a = agreement(got, ref, atol=1e-4, rtol=1e-3)
    # |2e-4| > 1e-4 + 1e-3*1 passes (1.1e-3); 1e-5 <= 1e-4 passes; 0.05 <= 1e-4 + 0.1 passes
    assert a.passed and a.max_abs == pytest.approx(0.05, rel=1e-3)
    assert a.max_rel == pytest.approx(5e-4, rel=1e-2), "relative error is taken where the reference is non-zero"
    b = agreement(got, ref, atol=1e-4, rtol=0)
    assert not b.passed and b.mismatched == 2  # 1+2e-4 and 100.05
    c = agreement(np.array([np.nan, -np.inf], np.float32), np.array([0.0, np.inf], np.float32), atol=1, rtol=1)
    assert c.mismatched == 2 and c.max_abs == np.inf
    d = agreement(np.zeros((2, 3)), np.zeros((3, 2)), atol=1, rtol=1)
    assert not d.passed and "shape 2x3 differs from the reference's 3x2" in d.note
