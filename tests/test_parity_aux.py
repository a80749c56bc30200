"""Parity of GoogLeNet's auxiliary classifiers with torchvision (``networks/googlenet.net`` with ``aux=1``).

torchvision computes ``aux1``/``aux2`` only in training mode, where batch norm would use batch statistics. So the
reference runs the model in eval mode, captures the outputs of ``inception4a`` and ``inception4d`` with forward
hooks, and calls ``model.aux1`` / ``model.aux2`` on them (batch norm in eval mode, dropout the identity). The
netdsl network, compiled from the same state_dict (strict binding: the aux keys included), must give the same
three outputs within test_parity's tolerances. The heads' adaptive 4x4 pool on a 14x14 map has uneven,
overlapping windows, so this also checks netdsl's general adaptive pooling against PyTorch.

Needs torch and torchvision (optional); skipped cleanly when they are absent. The checks that the auxiliary heads are
optional (GoogLeNet's, and the segmentation models' ``aux_classifier``, compared with ``tests/test_parity.py``
under the header's ``# parity-args: aux=1``) need neither.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import FP16_TOL, FP32_TOL, torchvision_model

GOOGLENET = Path(__file__).resolve().parent.parent / "networks" / "googlenet.net"


@pytest.mark.torch
def test_googlenet_aux_outputs_match_torchvision(tmp_path):
    torch = pytest.importorskip("torch", reason="parity tests need torch (optional)")
    safetensors_torch = pytest.importorskip("safetensors.torch", reason="parity tests need safetensors")
    import netdsl

    model = torchvision_model("googlenet(aux_logits=True, init_weights=False)")
    assert not model.training
    ckpt = tmp_path / "w.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    taps = {}
    hooks = [getattr(model, name).register_forward_hook(lambda _m, _i, out, name=name: taps.__setitem__(name, out))
             for name in ("inception4a", "inception4d")]
    with torch.no_grad():
        logits = model(x)
        ref = {"logits": logits, "aux1": model.aux1(taps["inception4a"]), "aux2": model.aux2(taps["inception4d"])}
    for h in hooks:
        h.remove()
    ref = {k: v.numpy() for k, v in ref.items()}

    net = netdsl.load(GOOGLENET, args={"aux": 1})
    weights = net.load_weights(ckpt)
    assert [o.name for o in net.graph.outputs] == ["logits", "aux1", "aux2"]
    for dtype, tol in (("fp32", FP32_TOL), ("fp16", FP16_TOL)):
        sess = netdsl.Session(net.to_onnx(weights=weights, dtype=dtype, keep_io_fp32=True))
        outs = sess.run({sess.inputs[0].name: x.numpy()})
        for name, want in ref.items():
            scale = float(np.abs(want).max())
            diff = float(np.abs(outs[name].astype(np.float64) - want).max())
            print(f"PARITY googlenet.{name} {dtype} max_abs_diff={diff:.3e} max_logit={scale:.3e} "
                  f"rel={diff / scale:.3e}")
            assert outs[name].shape == want.shape
            assert diff <= tol * scale, f"{name} {dtype}: max diff {diff:.3g} > {tol} x max logit {scale:.3g}"


def test_googlenet_default_has_no_aux_heads():
    import netdsl

    net = netdsl.load(GOOGLENET)
    assert [o.name for o in net.graph.outputs] == ["logits"]
    assert not any(name.startswith("aux") for name, _, _ in net.graph.weight_specs())
    with_aux = netdsl.load(GOOGLENET, args={"aux": 1})
    assert with_aux.summary().params == 13_004_888  # torchvision googlenet(aux_logits=True)
    assert {n.name for n in with_aux.graph.nodes} >= {n.name for n in net.graph.nodes}


# torchvision's published figures for its segmentation weights (the COCO_WITH_VOC_LABELS_V1 entries, built with the
# auxiliary head): num_params, and "_ops", GFLOPS at 3x520x520 that count conv and linear multiply-accumulates
SEGMENTATION = {
    "fcn_resnet50": (35_322_218, 152.717),
    "deeplabv3_resnet50": (42_004_074, 178.722),
}


@pytest.mark.parametrize("name", sorted(SEGMENTATION))
def test_segmentation_aux_head_is_optional(name):
    import netdsl

    path = GOOGLENET.parent / f"{name}.net"
    net = netdsl.load(path)
    assert [o.name for o in net.graph.outputs] == ["out"]
    assert not any(n.startswith("aux_classifier.") for n, _, _ in net.graph.weight_specs())
    with_aux = netdsl.load(path, args={"aux": 1})
    assert [o.name for o in with_aux.graph.outputs] == ["out", "aux"]
    shapes = {o.name: with_aux.graph.nodes[o.node].shape for o in with_aux.graph.outputs}
    assert shapes == {"out": (21, 520, 520), "aux": (21, 520, 520)}  # both resized to the input's size
    params, gmacs = SEGMENTATION[name]
    summary = with_aux.summary()
    assert summary.params == params
    assert round(summary.macs / 1e9, 3) == gmacs
    assert {k for k, _, _ in with_aux.graph.weight_specs()} - {k for k, _, _ in net.graph.weight_specs()} == {
        f"aux_classifier.{i}.{w}" for i, w in [(0, "weight"), (1, "weight"), (1, "bias"), (1, "running_mean"),
                                                (1, "running_var"), (4, "weight"), (4, "bias")]}
