"""`netdsl compare`'s default tolerances: chosen by the lower precision compared, atol relative to each tensor's
range; explicit --atol/--rtol win; the README's example passes on the default weights and a corrupted weight in
the fp16 model fails it, naming the faulted layer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import NETWORKS

from netdsl.agreement import UNIT_ROUNDOFF, Tolerance, agreement, default_tolerance, lowest_precision

RESNET18 = str(NETWORKS / "resnet18.net")
README_PAIRS = "ort:cpu,ort:cpu+fold-bn,ort:cpu+fp16"
FAULTED = "layer4.1.conv2"


def test_defaults_scale_with_precision():
    fp32, fp16, bf16 = default_tolerance("fp32"), default_tolerance("fp16"), default_tolerance("bf16")
    assert (fp32.rtol, fp32.atol, fp32.atol_range) == (1e-3, None, 1e-4)  # the fp32 floors
    # 20 roundings of float16's unit roundoff 2**-11 = 0.00977, rounded up to one digit
    assert (fp16.rtol, fp16.atol, fp16.atol_range) == (0.01, None, 0.01)
    assert bf16.rtol == bf16.atol_range == 0.08
    assert default_tolerance("int8").precision == "int8"  # a precision name is all a new one needs
    assert lowest_precision("fp32", "fp16") == "fp16" and lowest_precision("fp32", "fp32") == "fp32"
    assert set(UNIT_ROUNDOFF) >= {"fp32", "fp16", "bf16", "int8"}
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        default_tolerance("fp8")


def test_explicit_tolerances_win():
    both = default_tolerance("fp16", atol=0.0, rtol=1e-6)
    assert (both.atol, both.rtol, both.precision) == (0.0, 1e-6, "explicit")
    only_rtol = default_tolerance("fp16", rtol=0.5)
    assert only_rtol.rtol == 0.5 and only_rtol.atol is None and only_rtol.atol_range == 0.01


def test_atol_is_relative_to_the_tensor_range():
    ref = np.array([100.0, -50.0, 1e-4, 0.0], np.float32)
    got = ref + np.array([0.5, -0.5, 0.5, 0.5], np.float32)  # 0.5% of the range on every element
    tol = default_tolerance("fp16")
    assert tol.atol_for(ref) == pytest.approx(1.0)
    a = agreement(got, ref, tol)
    assert a.passed and a.max_rel > 1000  # the near-zero element's relative error does not decide
    assert a.atol == pytest.approx(1.0) and a.rtol == 0.01
    assert not agreement(got, ref, default_tolerance("fp32")).passed  # fp32: 1e-4 x 100 = 0.01
    assert not agreement(ref + 2.0, ref, tol).passed  # 2% of the range fails at fp16
    assert agreement(ref, ref, Tolerance(rtol=0.0, atol=0.0)).passed
    assert agreement(np.zeros(3), np.zeros(3), tol).atol == 0.0  # an all-zero tensor: exact


def test_readme_example_passes_on_default_weights(run_cli):
    rc, out, err = run_cli("compare", RESNET18, "--engines", README_PAIRS, "--per-layer")
    assert rc == 0, out + err
    assert "ort:cpu+fold-bn vs ort:cpu: fp32 tolerances: atol 0.0001 x max|reference|, rtol 0.001" in out
    assert "ort:cpu+fp16 vs ort:cpu: fp16 tolerances: atol 0.01 x max|reference|, rtol 0.01" in out
    assert out.count("intermediate tensors agree") == 2 and "PASS: all 2 comparisons agree" in out
    # the same fp16 run fails at fp32 tolerances given explicitly
    rc, out, err = run_cli("compare", RESNET18, "--engines", "ort:cpu,ort:cpu+fp16", "--atol", "1e-4",
                           "--rtol", "1e-3", "--json")
    assert rc == 1, err
    (comp,) = json.loads(out)["comparisons"]
    tol = comp["tolerance"]
    assert (tol["precision"], tol["rtol"], tol["atol"]) == ("explicit", 1e-3, 1e-4)


def _corrupt_fp16_weight(monkeypatch, weight: str) -> None:
    """The fp16 pair's model gets the filter of one output channel of ``weight`` negated (what a flipped sign bit
    pattern or a wrong layout does to one channel); the reference and fold-bn pairs are untouched. Measured on
    the default weights: logits off by 11% of their range, against 0.04% for float16 rounding."""
    import onnx.numpy_helper

    from netdsl.cli import compare

    real = compare.variant

    def faulty(model, target, *args, **kwargs):
        out = real(model, target, *args, **kwargs)
        if target.fp16:
            (init,) = [i for i in out.graph.initializer if i.name == weight]
            value = onnx.numpy_helper.to_array(init).copy()
            value[0] = -value[0]
            init.CopyFrom(onnx.numpy_helper.from_array(value, weight))
        return out

    monkeypatch.setattr(compare, "variant", faulty)


def test_fault_fails_and_names_the_faulted_layer(run_cli, monkeypatch):
    _corrupt_fp16_weight(monkeypatch, f"{FAULTED}.weight")
    rc, out, err = run_cli("compare", RESNET18, "--engines", README_PAIRS, "--per-layer", "--json")
    assert rc == 1, err
    fold, fp16 = json.loads(out)["comparisons"]
    assert fold["pass"] and fold["per_layer"]["first_divergence"] is None
    assert not fp16["pass"] and fp16["tolerance"]["precision"] == "fp16"
    first = fp16["per_layer"]["first_divergence"]
    assert first["node"] == FAULTED and first["op"] == "Conv", first
    assert first["location"].startswith(f"{RESNET18}:")
    rc, out, err = run_cli("compare", RESNET18, "--engines", README_PAIRS, "--per-layer")
    assert rc == 1 and "FAIL: 1 of 2 comparisons disagree" in out
    assert f"first divergence: tensor `{FAULTED}`" in out
