"""Ops that change a tensor's spatial size without weights: upsampling by a factor, resizing to a size (or to
another tensor's size), padding, and centre cropping.

``upsample`` and ``resize`` follow ``torch.nn.functional.interpolate`` exactly: its output sizes, and its
source coordinates (through the ONNX ``Resize`` coordinate mode that computes the same ones):

* ``nearest``: ``src = floor(dst * in / out)`` -> ``asymmetric`` + ``floor``;
* ``bilinear``: ``src = (dst + 0.5) * in / out - 0.5`` -> ``half_pixel`` (not ``pytorch_half_pixel``, which
  maps a size-1 output to the first input row; PyTorch maps it to the middle, as ``half_pixel`` does);
* ``bilinear align_corners``: ``src = dst * (in - 1) / (out - 1)`` -> ``align_corners``.

With a scale factor, PyTorch's output size is ``floor(W * S)`` and its coordinates use ``1 / S`` itself, not
``in / out`` (``recompute_scale_factor`` unset), which is what ONNX ``Resize`` does with a ``scales`` input.
"""

from __future__ import annotations

import math

from .base import Attrs, Op, OpError, Option, Pair, Shape, _need_rank, fmt_shape

_MODE_OPTIONS = (
    Option("nearest", "flag", help="nearest-neighbour interpolation (the default)"),
    Option("bilinear", "flag", help="bilinear interpolation"),
    Option("align_corners", "flag", help="bilinear only: corner pixels' centres are aligned (PyTorch's flag)"),
)


class Interpolating(Op):
    """Base of ``upsample`` and ``resize``: the interpolation mode and its ONNX ``Resize`` attributes."""

    def validate(self, a):
        if a.nearest and a.bilinear:
            raise OpError(f"{self.name} takes one of `nearest` and `bilinear`, not both")
        if a.align_corners and not a.bilinear:
            raise OpError("`align_corners` applies to `bilinear` only (PyTorch refuses it for nearest)")
        a["mode"] = "bilinear" if a.bilinear else "nearest"

    @staticmethod
    def resize_attrs(a: Attrs) -> dict[str, str]:
        """The ONNX ``Resize`` attributes that compute ``F.interpolate``'s source coordinates (module docstring)."""
        if a.mode == "nearest":
            return {"mode": "nearest", "nearest_mode": "floor", "coordinate_transformation_mode": "asymmetric"}
        return {"mode": "linear", "coordinate_transformation_mode": "align_corners" if a.align_corners
                else "half_pixel"}

    def window(self, a, inputs):
        (_, h, w), out = inputs[0], a.out_hw
        k = 2 if a.mode == "bilinear" else 1  # an output reads its 2 nearest inputs per axis, or 1
        return (k, k), (h / out[0], w / out[1])


def _float32_scale(n: int, out: int, scale: float) -> float:
    """The float32 nearest ``scale`` whose ``Resize`` output size is ``out`` (PyTorch's ``floor(n * scale)``) both
    as ONNX shape inference computes it (exactly) and as ONNX Runtime does (a float32 product): a few ulps from
    the given scale at most, so the source coordinates stay PyTorch's."""
    import numpy as np

    s = np.float32(scale)
    for _ in range(64):
        exact, rounded = math.floor(float(s) * n), math.floor(np.float32(n) * s)
        if exact == rounded == out:
            return float(s)
        s = np.nextafter(s, np.float32(np.inf if min(exact, rounded) < out else -np.inf), dtype=np.float32)
    raise AssertionError((n, out, scale))  # pragma: no cover - a few ulps always suffice


class Upsample(Interpolating):
    name = "upsample"
    summary = "upsampling by a factor (int or float): upsample S [nearest|bilinear] [align_corners]"
    onnx_ops = ("Resize",)
    options = (Option("scale", "number", 2, positional=True, help="the scale factor"), *_MODE_OPTIONS)

    def validate(self, a):
        if a.scale <= 0:
            raise OpError(f"upsample scale must be positive, got {a.scale}")
        super().validate(a)

    def infer(self, a, inputs):
        (x,) = inputs
        _need_rank("upsample", x, 3)
        hw = tuple(math.floor(n * a.scale) for n in x[1:])  # PyTorch: floor(float(W) * S) in double precision
        if min(hw) <= 0:
            raise OpError(f"upsample {a.scale} of {fmt_shape(x)} gives an empty output {fmt_shape((x[0], *hw))}")
        return (x[0], *hw), a.with_(out_hw=hw)

    @staticmethod
    def _axis_scale(a: Attrs, n: int, out: int) -> float:
        """The ONNX scale of one axis for a float factor: the given one (PyTorch's coordinates use it), nudged by
        ulps so that the float32 size is PyTorch's ``floor(W * S)``. PyTorch's CPU nearest kernel maps an output
        of the input's size, or twice it, by ``in / out`` instead (``nearest_idx``): then that ratio exactly."""
        if a.mode == "nearest" and out in (n, 2 * n):
            return float(out // n)
        return _float32_scale(n, out, a.scale)

    def lower(self, b, node):
        a = node.attrs
        if isinstance(a.scale, int):
            scales = [1.0, 1.0, float(a.scale), float(a.scale)]
        else:
            scales = [1.0, 1.0, *(self._axis_scale(a, n, o) for n, o in zip(node.in_shapes[0][1:], a.out_hw,
                                                                               strict=True))]
        key = "x".join(repr(s) for s in scales[2:])
        b.emit("Resize", [b.input(node, 0), "", b.const(f"resize.scales.{key}", scales, "float32")],
               **self.resize_attrs(a))


class Resize(Interpolating):
    """Resizing to a size (``resize to 32x32``) or to another tensor's spatial size (``resize like @image``)."""

    name = "resize"
    summary = "resizing to a size or to a tensor's size: resize to HxW | like @ref [nearest|bilinear] [align_corners]"
    onnx_ops = ("Resize", "Shape", "Slice", "Concat")
    options = (Option("to", "pair", help="the output size HxW"),
               Option("like", "ref", help="a tensor whose HxW to take, such as @image"), *_MODE_OPTIONS)

    def validate(self, a):
        if a.to is not None and a.like is not None:
            raise OpError("resize takes one output size, `to HxW` or `like @tensor`, not both")
        if a.to is None and a.like is None:
            raise OpError("resize needs its output size: `resize to HxW` or `resize like @tensor`")
        if a.to is not None and min(a.to) <= 0:
            raise OpError(f"resize size must be positive, got {fmt_shape(a.to)}")
        super().validate(a)

    def infer(self, a, inputs):
        _need_rank("resize", inputs[0], 3)
        hw = _target_hw("resize", a, inputs)
        return (inputs[0][0], *hw), a.with_(out_hw=hw)

    def lower(self, b, node):
        _, h, w = node.shape
        # sizes = (N, C) of the input (the batch is dynamic) followed by the static (H, W)
        shape = b.emit("Shape", [b.input(node, 0)], out=f"{node.name}/input_shape")
        nc = b.emit("Slice", [shape, b.const("int64.0", [0], "int64"), b.const("int64.2", [2], "int64")],
                    out=f"{node.name}/batch_channels")
        sizes = b.emit("Concat", [nc, b.const(f"resize.hw.{h}x{w}", [h, w], "int64")], out=f"{node.name}/sizes",
                       axis=0)
        b.emit("Resize", [b.input(node, 0), "", "", sizes], **self.resize_attrs(node.attrs))


class Pad(Op):
    """Padding by ``P`` rows and columns on each side (``HxW``: ``H`` above and below, ``W`` left and right):
    ``F.pad(x, (W, W, H, H), mode)`` with ``constant`` (value ``V``, default 0), ``reflect`` or ``replicate``."""

    name = "pad"
    summary = "padding on every side: pad P [constant V | reflect | replicate] (P: N or HxW)"
    onnx_ops = ("Pad",)
    options = (Option("size", "pair", positional=True, required=True, help="the padding N or HxW"),
               Option("constant", "float", help="the padding value (default 0)"),
               Option("reflect", "flag", help="mirror the input, edge excluded (PyTorch's `reflect`)"),
               Option("replicate", "flag", help="repeat the edge (PyTorch's `replicate`, ONNX's `edge`)"))

    def validate(self, a):
        if min(a.size) < 0:
            raise OpError(f"pad size must not be negative, got {fmt_shape(a.size)}")
        modes = (["constant"] if a.constant is not None else []) + [m for m in ("reflect", "replicate") if a[m]]
        if len(modes) > 1:
            raise OpError(f"pad takes one mode of `constant V`, `reflect` and `replicate`, got {' and '.join(modes)}")
        a["mode"] = modes[0] if modes else "constant"
        a["value"] = 0.0 if a.constant is None else a.constant

    def infer(self, a, inputs):
        (x,) = inputs
        _need_rank("pad", x, 3)
        ph, pw = a.size
        if a.mode == "reflect" and (ph >= x[1] or pw >= x[2]):  # PyTorch's rule: a mirror needs rows to mirror
            raise OpError(f"pad {fmt_shape(a.size)} reflect must be smaller than the input's size {fmt_shape(x[1:])}")
        return (x[0], x[1] + 2 * ph, x[2] + 2 * pw), a

    def lower(self, b, node):
        a = node.attrs
        ph, pw = a.size
        pads = b.const(f"pad.{ph}x{pw}", [0, 0, ph, pw, 0, 0, ph, pw], "int64")
        if a.mode == "constant":
            value = b.const(f"float.{a.value!r}", a.value, "float32")
            b.emit("Pad", [b.input(node, 0), pads, value], mode="constant")
        else:
            b.emit("Pad", [b.input(node, 0), pads], mode="reflect" if a.mode == "reflect" else "edge")


class Crop(Op):
    """A centre crop to a size (``crop 388x388``) or to another tensor's size (``crop like @up``): the original
    U-Net's skip connections. The offsets round as torchvision's ``center_crop``:
    ``top = int(round((H - h) / 2))`` (Python's round, half to even)."""

    name = "crop"
    summary = "centre crop: crop HxW | crop like @ref (torchvision's center_crop offsets)"
    onnx_ops = ("Slice",)
    options = (Option("size", "pair", positional=True, help="the output size HxW"),
               Option("like", "ref", help="a tensor whose HxW to take, such as @up"))

    def validate(self, a):
        if a.size is not None and a.like is not None:
            raise OpError("crop takes one output size, `crop HxW` or `crop like @tensor`, not both")
        if a.size is None and a.like is None:
            raise OpError("crop needs its output size: `crop HxW` or `crop like @tensor`")
        if a.size is not None and min(a.size) <= 0:
            raise OpError(f"crop size must be positive, got {fmt_shape(a.size)}")
        a["to"] = a.size

    def infer(self, a, inputs):
        x = inputs[0]
        _need_rank("crop", x, 3)
        hw = _target_hw("crop", a, inputs)
        if hw[0] > x[1] or hw[1] > x[2]:
            what = f"crop like {a.like} ({fmt_shape(hw)})" if a.like else f"crop {fmt_shape(hw)}"
            raise OpError(f"{what} is larger than its input {fmt_shape(x)}")
        offsets = tuple(int(round((n - m) / 2.0)) for n, m in zip(x[1:], hw, strict=True))
        return (x[0], *hw), a.with_(offsets=offsets)

    def lower(self, b, node):
        (top, left), (_, h, w) = node.attrs.offsets, node.shape
        b.emit("Slice", [b.input(node, 0), b.const(f"crop.starts.{top}x{left}", [top, left], "int64"),
                         b.const(f"crop.ends.{top + h}x{left + w}", [top + h, left + w], "int64"),
                         b.const("int64.2x3", [2, 3], "int64")])


def _target_hw(op: str, a: Attrs, inputs: list[Shape]) -> Pair:
    """The spatial size of ``to HxW`` or of the ``like @ref`` tensor (the layer's second input)."""
    if a.like is None:
        return a.to
    ref = inputs[1]
    if len(ref) != 3:
        raise OpError(f"{op} like {a.like}: {a.like} is {fmt_shape(ref)}, not a CxHxW tensor")
    return ref[1], ref[2]
