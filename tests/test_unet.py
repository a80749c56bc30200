"""U-Net (networks/unet.net, padded; networks/unet_original.net, the paper's unpadded one with centre crops).

torchvision has no U-Net, so the figures are computed here independently, by formula from the paper's
architecture (Ronneberger et al. 2015, figure 1), and the outputs are compared with a PyTorch module written in
this file to the paper: double 3x3 conv + relu, 2x2 max pool of stride 2, 2x2 transposed conv of stride 2,
concatenation with the (centre-cropped) skip, final 1x1 conv. The module's submodules carry netdsl's names, so
netdsl's weights load into it by key with ``strict=True``.

The torch comparisons need torch (optional) and are skipped without it; the rest runs everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import FP32_TOL, NETWORKS, parity_input, parity_weights, run_onnx

import netdsl

UNET = NETWORKS / "unet.net"
ORIGINAL = NETWORKS / "unet_original.net"


def _widths(base: int) -> list[int]:
    return [base * 2**i for i in range(5)]


def unet_params(channels: int, classes: int, base: int) -> int:
    """Parameters of the paper's U-Net: every conv has a bias; the up-convolutions are C_in x C_out x 2 x 2."""
    def double(a: int, c: int) -> int:  # two 3x3 convs a -> c -> c
        return a * 9 * c + c + c * 9 * c + c

    w = _widths(base)
    total, prev = 0, channels
    for width in w:  # contracting path and bottom
        total += double(prev, width)
        prev = width
    for width in reversed(w[:4]):  # expanding path: up-conv prev -> width, then 2 x width -> width
        total += prev * width * 4 + width + double(2 * width, width)
        prev = width
    return total + prev * classes + classes


def unet_size_and_macs(channels: int, classes: int, base: int, size: int, padded: bool) -> tuple[int, int]:
    """The output size and the multiply-accumulates of convs and up-convs (a 2x2 stride-2 transposed conv gives
    every output pixel exactly one tap of each input channel: out_pixels x C_out x C_in)."""
    loss = 0 if padded else 2  # pixels an unpadded 3x3 conv loses per axis
    w = _widths(base)
    s, prev, macs = size, channels, 0
    for i, width in enumerate(w):
        s -= loss
        macs += s * s * width * prev * 9
        s -= loss
        macs += s * s * width * width * 9
        prev = width
        if i < 4:
            assert s % 2 == 0, "the paper's sizes pool without remainder"
            s //= 2
    for width in reversed(w[:4]):
        s *= 2
        macs += s * s * width * prev  # up-conv
        s -= loss
        macs += s * s * width * 2 * width * 9
        s -= loss
        macs += s * s * width * width * 9
        prev = width
    return s, macs + s * s * classes * prev


def test_unet_original_maps_572_to_388_with_2_classes():
    net = netdsl.load(ORIGINAL)
    assert [tuple(i.shape) for i in net.graph.inputs] == [(1, 572, 572)]
    assert [(o.name, net.graph.nodes[o.node].shape) for o in net.graph.outputs] == [("out", (2, 388, 388))]
    shapes = {n.name: n.shape for n in net.graph.nodes}
    # the paper's figure 1: the skips are cropped from 64, 136, 280, 568 to 56, 104, 200, 392
    assert [shapes[f"crop{i}"] for i in (4, 3, 2, 1)] == [(512, 56, 56), (256, 104, 104), (128, 200, 200),
                                                          (64, 392, 392)]
    assert [shapes[f"down{i}.3"][1] for i in (1, 2, 3, 4)] == [568, 280, 136, 64]
    assert shapes["bottom.3"] == (1024, 28, 28)


@pytest.mark.parametrize(("path", "channels", "size", "padded", "args"), [
    (ORIGINAL, 1, 572, False, {}),
    (ORIGINAL, 1, 572, False, {"classes": 5, "base": 16}),
    (UNET, 3, 256, True, {}),
    (UNET, 3, 96, True, {"classes": 3, "base": 8, "size": 96}),
])
def test_params_and_macs_follow_the_formula(path, channels, size, padded, args):
    classes, base = args.get("classes", 2), args.get("base", 64)
    net = netdsl.load(path, args=args)
    assert [tuple(i.shape) for i in net.graph.inputs] == [(channels, size, size)]
    summary = net.summary()
    out_size, macs = unet_size_and_macs(channels, classes, base, size, padded)
    assert out_size == (388 if not padded else size)
    assert (summary.params, summary.macs) == (unet_params(channels, classes, base), macs)


def test_the_formula_on_the_papers_network():
    """The formula against the paper's network (1 input channel, 2 classes, base 64) counted layer by layer."""
    convs = [(1, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512),
             (512, 1024), (1024, 1024),                   # contracting path and bottom, 3x3
             (1024, 512), (512, 512), (512, 256), (256, 256), (256, 128), (128, 128), (128, 64), (64, 64)]
    up_convs = [(1024, 512), (512, 256), (256, 128), (128, 64)]  # 2x2
    count = sum(a * c * 9 + c for a, c in convs) + sum(a * c * 4 + c for a, c in up_convs) + 64 * 2 + 2
    assert unet_params(1, 2, 64) == count == 31_030_658


def test_padded_unet_keeps_the_input_size_and_names_its_weights():
    net = netdsl.load(UNET, args={"classes": 3})
    assert [(o.name, net.graph.nodes[o.node].shape) for o in net.graph.outputs] == [("out", (3, 256, 256))]
    specs = {name: tuple(spec.shape) for name, spec, _ in net.graph.weight_specs()}
    assert specs["up4.weight"] == (1024, 512, 2, 2)  # PyTorch's ConvTranspose2d layout: C_in x C_out x F x F
    assert specs["dec4.0.weight"] == (512, 1024, 3, 3)  # after the concatenation with the skip
    assert specs["head.weight"] == (3, 64, 1, 1)
    assert not any("bn" in name or "running" in name for name in specs)  # no batch norm, as in the paper


def _torch_unet(torch, channels: int, classes: int, base: int, padded: bool, corner: bool = False):
    """The paper's U-Net as a PyTorch module, with netdsl's names (``corner``: crop the skips at their top left
    corner instead of their centre, a wrong model for the test to tell apart)."""
    nn, F = torch.nn, torch.nn.functional
    pad = 1 if padded else 0

    def double(a: int, c: int):
        return nn.Sequential(nn.Conv2d(a, c, 3, padding=pad), nn.ReLU(), nn.Conv2d(c, c, 3, padding=pad), nn.ReLU())

    w = _widths(base)

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.down1, self.down2 = double(channels, w[0]), double(w[0], w[1])
            self.down3, self.down4 = double(w[1], w[2]), double(w[2], w[3])
            self.bottom = double(w[3], w[4])
            self.up4, self.dec4 = nn.ConvTranspose2d(w[4], w[3], 2, stride=2), double(2 * w[3], w[3])
            self.up3, self.dec3 = nn.ConvTranspose2d(w[3], w[2], 2, stride=2), double(2 * w[2], w[2])
            self.up2, self.dec2 = nn.ConvTranspose2d(w[2], w[1], 2, stride=2), double(2 * w[1], w[1])
            self.up1, self.dec1 = nn.ConvTranspose2d(w[1], w[0], 2, stride=2), double(2 * w[0], w[0])
            self.head = nn.Conv2d(w[0], classes, 1)

        def forward(self, x):
            skips = []
            for down in (self.down1, self.down2, self.down3, self.down4):
                x = down(x)
                skips.append(x)
                x = F.max_pool2d(x, 2, 2)
            x = self.bottom(x)
            for up, dec in ((self.up4, self.dec4), (self.up3, self.dec3), (self.up2, self.dec2),
                            (self.up1, self.dec1)):
                x = up(x)
                skip = skips.pop()
                top, left = (skip.shape[-2] - x.shape[-2]) // 2, (skip.shape[-1] - x.shape[-1]) // 2
                if corner:
                    top = left = 0
                skip = skip[..., top:top + x.shape[-2], left:left + x.shape[-1]]  # centre crop (a no-op padded)
                x = dec(torch.cat([skip, x], dim=1))
            return self.head(x)

    return UNet().eval()


@pytest.mark.torch
@pytest.mark.parametrize(("path", "channels", "size", "padded", "args"), [
    pytest.param(UNET, 3, 96, True, {"size": 96}, id="unet"),
    pytest.param(ORIGINAL, 1, 572, False, {}, id="unet_original"),
])
def test_matches_a_pytorch_unet(path, channels, size, padded, args):
    torch = pytest.importorskip("torch", reason="the comparison needs torch (optional)")
    classes, base = 3, 8  # narrow, so the test is quick; the structure is the same at every width
    net = netdsl.load(path, args={"classes": classes, "base": base, **args})
    weights = parity_weights(net, 0)
    module = _torch_unet(torch, channels, classes, base, padded)
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()}, strict=True)
    x = parity_input((2, channels, size, size), 7)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    model = net.to_onnx(weights=weights)
    (got,) = run_onnx(model, {model.graph.input[0].name: x}).values()
    assert got.shape == want.shape == (2, classes, *(2 * (size if padded else 388,)))
    scale = float(np.abs(want).max())
    diff = float(np.abs(got.astype(np.float64) - want).max())
    print(f"UNET {path.stem} max_abs_diff={diff:.3e} max_value={scale:.3e} rel={diff / scale:.3e}")
    assert scale > 0
    assert diff <= FP32_TOL * scale
    if not padded:  # the comparison can fail: skips cropped at the corner instead of the centre disagree
        wrong = _torch_unet(torch, channels, classes, base, padded, corner=True)
        wrong.load_state_dict(module.state_dict())
        with torch.no_grad():
            cornered = wrong(torch.from_numpy(x)).numpy()
        assert float(np.abs(got - cornered).max()) > FP32_TOL * scale
