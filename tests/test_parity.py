"""Parity with torchvision: netdsl's zoo networks compute what torchvision's models compute.

For every zoo file that names its torchvision counterpart in a header line
``# torchvision: resnet50()`` (a call on ``torchvision.models``; an optional
``# parity-input: 3x299x299`` sets the input, an optional ``# parity-args: aux=1`` the network's arguments that
match the call), build that model with random weights *and random BN
statistics*, save its state_dict as safetensors, compile the .net with ``--weights`` and run the same
random batch of 2 through ONNX Runtime (CPU) and through torchvision in eval mode, and compare every output
(a classifier's logits; a segmentation model's ``out`` and ``aux`` score maps, each by name and against its own
largest value):

* fp32: max |difference| <= 1e-4 * max |logit|
* fp16 (``--dtype fp16 --fp32-io``): max |difference| <= 2e-2 * max |logit|. float16 keeps 11 significant
  bits (relative rounding 2**-11 ~ 4.9e-4 per rounding); the measured differences are 4e-4 to 2e-3 of
  the largest logit (docs/parity.md), so 2e-2 leaves room for unlucky seeds while still catching any real
  bug (a wrong layer, a missing BN or a wrong stride give differences of the order of the logits).
  What this checks on a CPU: that the fp16 model is well formed and that rounding every weight and
  constant to float16 keeps the outputs; ONNX Runtime's x86 CPU provider has no float16 convolution
  kernels, so it computes in float32 between casts. Compute in float16 (and its overflow on random
  weights) is exercised only on a GPU (tools/gpu_selftest.py).

Needs torch and torchvision (optional): ``pip install torch==2.14.1 torchvision==0.29.1``; skipped
cleanly when they are absent.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import FP16_TOL, FP32_TOL, paired_outputs, parity_args, parity_cases, reference_outputs, torchvision_model


def _cases():
    return [pytest.param(path, ctor, dims, id=path.stem) for path, ctor, dims in parity_cases()]


@pytest.mark.torch
@pytest.mark.parametrize(("path", "ctor", "dims"), _cases())
def test_parity_with_torchvision(path, ctor, dims, tmp_path):
    torch = pytest.importorskip("torch", reason="parity tests need torch (optional)")
    safetensors_torch = pytest.importorskip("safetensors.torch", reason="parity tests need safetensors")
    import netdsl

    model = torchvision_model(ctor)
    ckpt = tmp_path / "w.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    x = torch.randn(2, *dims, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = reference_outputs(model(x))

    net = netdsl.load(path, args=parity_args(path))
    weights = net.load_weights(ckpt)  # strict: every key must match, num_batches_tracked ignored
    for dtype, tol in (("fp32", FP32_TOL), ("fp16", FP16_TOL)):
        sess = netdsl.Session(net.to_onnx(weights=weights, dtype=dtype, keep_io_fp32=True))
        outs = sess.run({sess.inputs[0].name: x.numpy()})
        for name, want, got in paired_outputs(ref, outs):
            label = path.stem if len(ref) == 1 else f"{path.stem}.{name}"
            scale = float(np.abs(want).max())
            diff = float(np.abs(got.astype(np.float64) - want).max())
            print(f"PARITY {label} {dtype} max_abs_diff={diff:.3e} max_logit={scale:.3e} rel={diff / scale:.3e}")
            assert got.shape == want.shape
            assert diff <= tol * scale, f"{label} {dtype}: max diff {diff:.3g} > {tol} x max logit {scale:.3g}"
