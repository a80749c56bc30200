"""INT8 accuracy on real data: tools/digits.net trained on scikit-learn's digits (tools/train_digits.py),
compiled by netdsl, quantized on a calibration split of the training images; held-out accuracy of int8 is
within one point of fp32's for both targets."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.torch


def test_int8_digits_accuracy_is_within_one_point_of_fp32():
    pytest.importorskip("torch", reason="training the digits network needs torch (optional)")
    pytest.importorskip("sklearn", reason="the digits data set comes with scikit-learn (optional)")
    pytest.importorskip("onnxruntime.quantization", reason="quantization needs onnxruntime (optional)")
    spec = importlib.util.spec_from_file_location("train_digits", ROOT / "tools" / "train_digits.py")
    tool = importlib.util.module_from_spec(spec)
    sys.modules["train_digits"] = tool
    spec.loader.exec_module(tool)
    xtr, ytr, xte, yte, cal = tool.data(100)
    model = tool.train(xtr, ytr, epochs=15)
    weights = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    acc = tool.measure(weights, cal, xte, yte)
    assert acc["fp32"] > 0.95, acc
    for target in ("ort-cpu", "trt"):
        assert abs(acc[f"int8 {target}"] - acc["fp32"]) <= 0.01, acc
