"""Every zoo network quantizes for both targets, the result passes onnx.checker's full check, runs in ONNX
Runtime and stays close to fp32 on inputs like its calibration data. Minutes of work: marked ``slow`` and
deselected by default (run it with ``python -m pytest -m slow tests/test_quantize_zoo.py``); the CI test of
lenet5, resnet18 and mobilenet_v2 is in test_quantize.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import netdsl

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted(p.stem for p in (ROOT / "networks").glob("*.net"))
# With its seeded random weights, efficientnet_v2_s amplifies any rounding through its 40 blocks: fp16 alone moves
# its logits by ~70% and 1e-4 of input noise by ~15% (docs/quantization.md), so int8 cannot stay within 0.5 of
# fp32 there; it is held to what fp16 does instead, and the premise is checked, so the exemption cannot outlive it.
AMPLIFIES_ROUNDING = {"efficientnet_v2_s"}


@pytest.mark.slow
@pytest.mark.parametrize("target", ["ort-cpu", "trt"])
@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_network_quantizes(name, target):
    pytest.importorskip("onnxruntime.quantization", reason="quantization needs onnxruntime (optional)")
    import onnxruntime as ort

    from netdsl.quantize import is_quantized, quantize

    fp32 = netdsl.load(ROOT / "networks" / f"{name}.net").to_onnx()
    q = quantize(fp32, "random", target=target, samples=2, report=False)
    onnx.checker.check_model(q.model, full_check=True)
    assert is_quantized(q.model)
    dims = [d.dim_value for d in fp32.graph.input[0].type.tensor_type.shape.dim[1:]]
    x = np.random.default_rng(3).standard_normal((1, *dims)).astype(np.float32)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    runs = [ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
            .run(None, {"image": x})[0] for m in (fp32, q.model)]
    rel = np.linalg.norm(runs[1] - runs[0]) / np.linalg.norm(runs[0])
    assert np.isfinite(runs[1]).all()
    if name not in AMPLIFIES_ROUNDING:
        assert rel < 0.5, rel
        return
    fp16 = netdsl.load(ROOT / "networks" / f"{name}.net").to_onnx(dtype="fp16", keep_io_fp32=True)
    half = ort.InferenceSession(fp16.SerializeToString(), so, providers=["CPUExecutionProvider"])
    half = half.run(None, {"image": x})[0]
    fp16_rel = np.linalg.norm(half - runs[0]) / np.linalg.norm(runs[0])
    assert fp16_rel > 0.3, f"fp16 moves {name}'s logits by only {fp16_rel:.3f}: drop it from AMPLIFIES_ROUNDING"
    assert rel < 2 * fp16_rel, (rel, fp16_rel)
