"""`netdsl quantize` and int8 everywhere: calibration data, the QDQ models of both targets, the per-layer
report, exclusions and the budget, metadata, --precision int8 on the runtime commands, and the API.

Quantization is real (onnxruntime.quantization), every model is checked by onnx.checker and run by ONNX
Runtime; TensorRT builds use TensorRT for RTX on the CPU."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import netdsl_main
from onnx import TensorProto, numpy_helper

import netdsl
from netdsl.quantize import (
    SPEED_MARGIN,
    TRT_OPS,
    around_float_ops,
    calibration_data,
    float_islands,
    is_quantized,
    prepare_fp32,
    quantization_record,
    quantize,
)

pytest.importorskip("onnxruntime.quantization", reason="quantization needs onnxruntime (optional extra `quantize`)")

ROOT = Path(__file__).resolve().parent.parent
NETS = ROOT / "networks"
LOCATION = re.compile(r"networks/\w+\.net:\d+:\d+")


def _fp32(name: str) -> onnx.ModelProto:
    return netdsl.load(NETS / f"{name}.net").to_onnx()


def _ort(model: onnx.ModelProto, optimized: Path | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _images(model: onnx.ModelProto, n: int, seed: int = 0) -> np.ndarray:
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    return np.random.default_rng(seed).standard_normal((n, *dims)).astype(np.float32)


# ----------------------------------------------------------------------------- end to end, both targets
@pytest.mark.parametrize("target", ["ort-cpu", "trt"])
@pytest.mark.parametrize("name", ["lenet5", "resnet18", "mobilenet_v2"])
def test_quantize_end_to_end(name, target, tmp_path):
    out = tmp_path / f"{name}.int8.onnx"
    # 8 samples: with fewer, minmax ranges from random data can miss inputs drawn later (lenet5: 0.21 with 2)
    rc, stdout, err = netdsl_main("quantize", NETS / f"{name}.net", "--calibrate", "random", "--samples", "8",
                                  "--target", target, "-o", out, "--top", "5")
    assert rc == 0, err
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert is_quantized(model)
    record = quantization_record(model)
    assert record["target"] == target and record["method"] == "minmax" and record["samples"] == 8
    assert record["random"] is True and record["excluded"] == []
    # the report: meaningless-for-accuracy note, ranked layers with their .net locations, the output error
    assert "random inputs" in stdout and "mean nothing for real data" in stdout
    rows = [line for line in stdout.splitlines() if line.startswith("  ")]
    assert len(rows) == 5 and all(LOCATION.search(r) for r in rows), stdout
    added = [float(re.search(r"added +([-+][\d.]+)", r).group(1)) for r in rows]
    assert added == sorted(added, reverse=True)
    assert re.search(r"output: rel error 0\.0\d\d\d", stdout), stdout
    # it runs, and stays close to fp32 on inputs like its calibration data
    fp32 = _fp32(name)
    x = _images(fp32, 2, seed=5)
    want = _ort(fp32).run(None, {"image": x})[0]
    got = _ort(model).run(None, {"image": x})[0]
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert rel < 0.2, rel


def test_trt_target_is_symmetric_per_channel_with_fp32_biases():
    """What TensorRT needs: int8 zero points of 0 everywhere, per-channel weight scales on the output-channel axis,
    no DequantizeLinear feeding a bias, Q/DQ on every input of residual adds and concats, and nothing else
    quantized."""
    for name in ("resnet18", "mobilenet_v2", "squeezenet1_1"):
        model = quantize(_fp32(name), "random", target="trt", samples=2, report=False).model
        g = model.graph
        init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        producer = {o: n for n in g.node for o in n.output}
        qdq = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
        assert qdq
        for n in qdq:
            zp = init[n.input[2]] if len(n.input) > 2 and n.input[2] else np.zeros(1, np.int8)
            assert zp.dtype == np.int8 and not zp.any(), n.name
        convs = [n for n in g.node if n.op_type in ("Conv", "Gemm")]
        assert convs
        for n in convs:
            dq = producer[n.input[1]]
            assert dq.op_type == "DequantizeLinear"
            weight, scale = init[dq.input[0]], init[dq.input[1]]
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            assert weight.dtype == np.int8 and axis == 0 and scale.shape == (weight.shape[0],), n.name
            if len(n.input) > 2 and n.input[2]:
                assert n.input[2] in init and init[n.input[2]].dtype == np.float32, n.name  # no DQ on biases
        merges = [n for n in g.node if n.op_type in ("Add", "Concat")]
        assert merges  # residual adds (resnet18, mobilenet_v2), fire-module concats (squeezenet1_1)
        for n in merges:
            assert all(producer[i].op_type == "DequantizeLinear" for i in n.input), n.name
        # int8 activations reach only the ops TensorRT runs in int8 and those it moves Q/DQ across
        readers = {n.op_type for n in g.node for i in n.input
                   if i in producer and producer[i].op_type == "DequantizeLinear" and producer[i].input[0] not in init}
        assert readers <= {*TRT_OPS, "Relu", "Clip", "Flatten", "Identity", "Reshape"}, readers


def test_ort_cpu_target_fuses_every_conv_and_gemm(tmp_path):
    """ONNX Runtime's optimised model of an ort-cpu int8 model runs every conv as QLinearConv and the classifier
    as QGemm, every residual add as QLinearAdd: no unfused Q/DQ pair is left on the hot path."""
    for name in ("resnet18", "mobilenet_v2"):
        fp32 = _fp32(name)
        convs = sum(n.op_type == "Conv" for n in fp32.graph.node)
        gemms = sum(n.op_type == "Gemm" for n in fp32.graph.node)
        adds = sum(n.op_type == "Add" for n in fp32.graph.node)
        q = quantize(fp32, "random", samples=2, report=False)
        assert q.float_ops == {}  # nothing left for the report to warn about
        model = q.model
        path = tmp_path / f"{name}.opt.onnx"
        _ort(model, optimized=path)
        opt = onnx.load(path)
        ops = [n.op_type for n in opt.graph.node]
        assert ops.count("QLinearConv") == convs, ops
        assert ops.count("QGemm") == gemms, ops
        assert ops.count("QLinearAdd") == adds, ops
        assert "Conv" not in ops and "Gemm" not in ops and "MatMul" not in ops and "Add" not in ops
        # the only Q/DQ left are the graph's boundary: fp32 image in, fp32 logits out
        assert ops.count("QuantizeLinear") == 1 and ops.count("DequantizeLinear") == 1, ops


def test_ops_without_an_int8_kernel_are_reported(tmp_path):
    """LeNet-5's tanh has no int8 kernel in ONNX Runtime: each of the four runs in float between a dequantize and
    a quantize (what made its int8 model slower than fp32), and the report says so."""
    assert quantize(_fp32("lenet5"), "random", samples=2, report=False).float_ops == {"Tanh": 4}
    rc, out, err = netdsl_main("quantize", ROOT / "networks" / "lenet5.net", "--calibrate", "random",
                               "--samples", "2", "-o", tmp_path / "l.onnx")
    assert rc == 0, err
    assert "no int8 kernel for 4 op(s) here (Tanh x4)" in out


HARDSWISH = """
network hs {
    input image: 3x16x16
    c1: conv 8 3x3 pad 1 -> hardswish
    c2: conv 8 3x3 pad 1 -> relu
    c3: conv 16 3x3 /2 pad 1 -> relu
    pool: avgpool global -> flatten
    fc: fc 10
    output logits
}
"""


def test_the_partial_candidate_keeps_the_layers_around_float_ops_and_leaves_no_float_island(tmp_path):
    """int8-partial keeps the convs that feed or read an op without an int8 kernel (hard-swish here) in fp32,
    so that op runs next to its fp32 producer and no dequantize -> float op -> quantize is left."""
    (tmp_path / "hs.net").write_text(HARDSWISH)
    fp32 = netdsl.load(tmp_path / "hs.net").to_onnx()
    assert around_float_ops(prepare_fp32(fp32)) == ("c1", "c2")
    int8 = quantize(fp32, "random", report=False).model
    assert set(float_islands(int8)) >= {"HardSigmoid"}  # ORT runs hard-swish as HardSigmoid and Mul in float
    partial = quantize(fp32, "random", report=False, exclude=["c1", "c2"]).model
    assert float_islands(partial) == {}
    assert {n.name for n in partial.graph.node if n.op_type == "Conv"} >= {"c1", "c2"}  # still fp32 convs


def test_fastest_times_the_candidates_and_keeps_the_fastest(tmp_path):
    (tmp_path / "hs.net").write_text(HARDSWISH)
    fp32 = netdsl.load(tmp_path / "hs.net").to_onnx()
    q = quantize(fp32, "random", report=False, fastest=True, threads=1)
    speed = q.speed
    assert list(speed.median_ms) == ["int8", "int8-partial", "fp32"] and speed.threads == 1 and speed.runs >= 21
    assert all(ms > 0 for ms in speed.median_ms.values())
    best = min(("int8", "int8-partial"), key=speed.median_ms.__getitem__)
    assert speed.chosen == (best if speed.speedup(best) >= SPEED_MARGIN else "fp32")
    record = quantization_record(q.model)
    assert record["speed"]["chosen"] == speed.chosen and set(record["speed"]["median_ms"]) == set(speed.median_ms)
    # the model written is the chosen candidate
    quantized_convs = {n.name for n in q.model.graph.node if n.op_type == "Conv"}  # fp32 convs keep their op
    if speed.chosen == "int8":
        assert quantized_convs == set() and q.speed_excluded == () and not q.kept_fp32
    elif speed.chosen == "int8-partial":
        assert quantized_convs == {"c1", "c2"} and q.speed_excluded == ("c1", "c2")
        assert "c1" in record["excluded"] and float_islands(q.model) == {}
    else:
        assert q.kept_fp32 and not any(n.op_type == "QuantizeLinear" for n in q.model.graph.node)
        assert quantized_convs == {"c1", "c2", "c3"}
    assert is_quantized(q.model)  # whatever was chosen, it has been through the quantizer: not quantized again


def test_fastest_on_the_command_line(tmp_path):
    """LeNet-5: every conv and fc feeds a tanh, so there is no partial candidate (it would keep every layer)."""
    out = tmp_path / "l5.onnx"
    rc, stdout, err = netdsl_main("quantize", NETS / "lenet5.net", "--calibrate", "random", "--fastest",
                                  "--threads", "1", "-o", out, "--json")
    assert rc == 0, err
    report = json.loads(stdout)
    speed = report["speed"]
    assert set(speed["median_ms"]) == {"int8", "fp32"} and speed["threads"] == 1 and speed["batch"] == 1
    ms = speed["median_ms"]
    assert speed["chosen"] == ("int8" if ms["fp32"] >= SPEED_MARGIN * ms["int8"] else "fp32")
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert quantization_record(model)["speed"]["chosen"] == speed["chosen"]
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node) == (speed["chosen"] == "int8")
    rc, stdout, err = netdsl_main("quantize", NETS / "lenet5.net", "--calibrate", "random", "--fastest",
                                  "-o", tmp_path / "again.onnx")
    assert rc == 0, err
    assert re.search(r"speed on this CPU \(batch 1, \d+ thread\(s\), median of at least \d+ runs each", stdout), stdout
    assert re.search(r"^  int8 +[\d.]+ ms  [\d.]+x fp32", stdout, re.M)
    assert re.search(r"^  fp32 +[\d.]+ ms", stdout, re.M)
    assert stdout.count("<- kept") == 1
    # the written model, whichever it is, is used as it is by --precision int8, and not quantized again
    rc, _, err = netdsl_main("run", out, "--precision", "int8", "--json")
    assert rc == 0 and "calibrated" not in err, err
    rc, _, err = netdsl_main("quantize", out, "--calibrate", "random", "-o", tmp_path / "third.onnx")
    assert rc == 1 and "quantized already" in err and not (tmp_path / "third.onnx").exists()
    assert ("kept it in fp32" in err) == (speed["chosen"] == "fp32")


@pytest.mark.parametrize("args, message", [
    (["--fastest", "--target", "trt"], "--fastest times ONNX Runtime on this CPU: it applies to --target ort-cpu"),
    (["--threads", "2"], "--threads applies with --fastest"),
    (["--fastest", "--threads", "0"], "--threads must be at least 1"),
])
def test_fastest_options_are_checked(args, message, tmp_path):
    out = tmp_path / "x.onnx"
    rc, _, err = netdsl_main("quantize", NETS / "lenet5.net", "--calibrate", "random", *args, "-o", out)
    assert rc == 2 and message in err, err
    assert not out.exists()


# ----------------------------------------------------------------------------- calibration data
def test_calibration_from_images_uses_the_declared_preprocessing(tmp_path):
    from PIL import Image

    from netdsl.preprocess import declared_preprocessing

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    model = _fp32("resnet18")
    cal = calibration_data(str(folder), model)
    assert cal.samples == 3 and not cal.random
    meta = {p.key: p.value for p in model.metadata_props}
    prep = declared_preprocessing(meta["netdsl.inputs"], "resnet18", {"image": (3, 224, 224)})["image"]
    np.testing.assert_array_equal(cal.batches[0]["image"][1], prep.load(folder / "1.png"))


def test_calibration_from_npz_and_sample_limit(tmp_path):
    model = _fp32("lenet5")
    np.savez(tmp_path / "cal.npz", image=np.ones((20, 1, 32, 32), np.float32))
    cal = calibration_data(str(tmp_path / "cal.npz"), model, samples=11)
    assert cal.samples == 11 and [b["image"].shape[0] for b in cal.batches] == [8, 3]


@pytest.mark.parametrize("case", ["empty folder", "wrong shape", "nan", "not an image", "corrupt image", "no such"])
def test_bad_calibration_data_is_one_line_exit_1_and_nothing_written(case, tmp_path):
    data = tmp_path / "data"
    if case == "empty folder":
        data.mkdir()
        want = "folder holds no images"
    elif case == "wrong shape":
        data = tmp_path / "x.npy"
        np.save(data, np.zeros((4, 3, 32, 32), np.float32))
        want = "has shape 4x3x32x32, expected Nx1x32x32"
    elif case == "nan":
        data = tmp_path / "x.npy"
        a = np.zeros((4, 1, 32, 32), np.float32)
        a[2, 0, 3, 3] = np.nan
        np.save(data, a)
        want = "holds 1 NaN or infinite value(s)"
    elif case == "not an image":
        data = tmp_path / "notes.txt"
        data.write_text("hello")
        want = "not an image, .npy or .npz file"
    elif case == "corrupt image":
        data.mkdir()
        (data / "a.png").write_bytes(b"not a png")
        want = "not a readable image"
    else:
        data = tmp_path / "missing"
        want = "no such file or folder"
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, out, err = netdsl_main("quantize", NETS / "lenet5.net", "--calibrate", data, "-o", tmp_path / "q.onnx")
    assert rc == 1, (out, err)
    assert err.count("\n") == 1 and err.startswith("netdsl: error: ") and want in err, err
    assert "Traceback" not in err and out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ----------------------------------------------------------------------------- exclusions and the budget
def test_exclude_keeps_labelled_layers_fp32(tmp_path):
    out = tmp_path / "r18.onnx"
    rc, stdout, err = netdsl_main("quantize", NETS / "resnet18.net", "--calibrate", "random", "--samples", "2",
                                  "--exclude", "layer4.*", "--exclude", "fc", "-o", out, "--json")
    assert rc == 0, err
    report = json.loads(stdout)
    model = onnx.load(out)
    producer = {o: n for n in model.graph.node for o in n.output}
    excluded = {n.name for n in model.graph.node if (n.name.startswith("layer4.") or n.name == "fc")
                and n.op_type not in ("QuantizeLinear", "DequantizeLinear")}
    assert set(report["excluded"]) == excluded and "fc" in excluded and "layer4.0.conv1" in excluded
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm"):
            weight_quantized = producer.get(n.input[1]) is not None
            assert weight_quantized == (n.name not in excluded), n.name
    assert quantization_record(model)["excluded"] == report["excluded"]
    assert all(x["label"] not in excluded for x in report["layers"])
    rc, _, err = netdsl_main("quantize", NETS / "resnet18.net", "--calibrate", "random", "--exclude", "layer9.*",
                             "-o", tmp_path / "x.onnx")
    assert rc == 2 and "--exclude layer9.*: no layer has that label" in err
    assert not (tmp_path / "x.onnx").exists()


def test_budget_keeps_the_worst_layers_fp32_until_the_error_fits():
    fp32 = _fp32("lenet5")
    full = quantize(fp32, "random", samples=4)
    budget = full.output_error * 0.6
    q = quantize(fp32, "random", samples=4, budget=budget)
    assert q.budget_excluded and q.output_error <= budget < full.output_error
    assert q.budget_excluded[0] == next(x.label for x in full.layers if x.op not in ("Relu", "MaxPool"))
    assert list(q.budget_excluded) == quantization_record(q.model)["excluded"]


# ----------------------------------------------------------------------------- the runtime commands and the API
def test_precision_int8_on_run_and_compare(tmp_path):
    rc, out, err = netdsl_main("run", NETS / "lenet5.net", "--precision", "int8", "--batch", "2", "--json")
    assert rc == 0, err
    assert "calibrated on random inputs" in err
    assert json.loads(out)["outputs"]["logits"]["shape"] == [2, 10]
    rc, out, err = netdsl_main("compare", NETS / "lenet5.net", "--engines", "ort:cpu,ort:cpu+precision=int8",
                               "--atol", "0.1", "--rtol", "0.1", "--json")
    assert rc == 0, (out, err)
    comp = json.loads(out)["comparisons"][0]["outputs"]["logits"]
    assert 0 < comp["max_abs"] < 0.1  # int8 differs from fp32, a little


def test_an_int8_onnx_is_used_as_it_is(tmp_path):
    q = tmp_path / "l5.int8.onnx"
    rc, _, err = netdsl_main("quantize", NETS / "lenet5.net", "--calibrate", "random", "-o", q)
    assert rc == 0, err
    rc, out, err = netdsl_main("run", q, "--precision", "int8", "--json")
    assert rc == 0 and "calibrated" not in err, err
    rc, _, err = netdsl_main("quantize", q, "--calibrate", "random", "-o", tmp_path / "again.onnx")
    assert rc == 1 and "quantized already" in err


def test_session_and_network_api():
    x = _images(_fp32("lenet5"), 3)
    sess = netdsl.Session(NETS / "lenet5.net", precision="int8", calibration=x)
    record = json.loads(sess.source.metadata["netdsl.quantization"])
    assert record["samples"] == 3 and record["calibration"] == "an array"
    net = netdsl.load(NETS / "lenet5.net")
    ref = net.session().run(image=x)["logits"]
    got = sess.run(image=x)["logits"]
    assert 0 < np.abs(got - ref).max() < 0.1
    q = net.quantize({"image": x}, target="trt", method="percentile")
    assert q.target == "trt" and q.method == "percentile" and q.layers and q.top1_agreement is not None
    assert {t.data_type for t in q.model.graph.initializer} >= {TensorProto.INT8}


# ----------------------------------------------------------------------------- TensorRT for RTX, no GPU
@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                    reason="needs TensorRT for RTX (optional package tensorrt-rtx-cu13)")
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_build_precision_int8_makes_a_strongly_typed_engine(name, tmp_path):
    plan = tmp_path / f"{name}.plan"
    rc, out, err = netdsl_main("build", NETS / f"{name}.net", "--precision", "int8", "--batch", "1..2",
                               "--cache-dir", tmp_path / "cache", "-o", plan)
    assert rc == 0, err
    assert ", int8, batch 1..2" in out and plan.stat().st_size > 0
