"""Sliding-window ops: the :class:`Windowed` base (output size, padding, receptive field, unread input),
the convolution and the transposed convolution. Pooling, also windowed, is in :mod:`netdsl.ops.pool`."""

from __future__ import annotations

import math

from .base import Attrs, Op, OpError, Option, Pair, Shape, WeightSpec, _need_rank, fmt_shape


def _pads(size: Pair, kernel: Pair, stride: Pair, pad, dilation: Pair) -> tuple[int, int, int, int]:
    """(top, left, bottom, right). ``same`` pads like TensorFlow/PyTorch: output = ceil(in/stride), extra at the end."""
    if pad == "same":
        out = []
        for n, k, s, d in zip(size, kernel, stride, dilation, strict=True):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            out.append((total // 2, total - total // 2))
        return (out[0][0], out[1][0], out[0][1], out[1][1])
    return (pad[0], pad[1], pad[0], pad[1])


def _out_size(n: int, k: int, s: int, lo: int, hi: int, d: int, ceil: bool) -> int:
    eff = (k - 1) * d + 1
    span = n + lo + hi - eff
    if span < 0:
        return 0
    if not ceil:
        return span // s + 1
    out = -(-span // s) + 1
    if (out - 1) * s >= n + lo:  # PyTorch: the last window must start inside the input or left padding
        out -= 1
    return out


class Windowed(Op):
    """Base of the ops that slide a window over H and W (conv, pooling): the output size rule
    floor((W - F + 2P) / S) + 1 per spatial axis (or ceil), their receptive-field effect, and the warning
    when the windows leave trailing input unread.

    Attributes a subclass sets: ``padding_below_kernel`` when the padding on each side must be smaller
    than the window (pooling: a window of padding alone has nothing to pool).
    """

    padding_below_kernel: bool = False

    def _spatial(self, attrs: Attrs, x: Shape, ceil: bool = False) -> tuple[Pair, tuple[int, int, int, int]]:
        """The output (H, W) and the resolved (top, left, bottom, right) padding; raises OpError."""
        kernel, stride, dil = attrs.kernel, attrs.stride, attrs.get("dilation") or (1, 1)
        pads = _pads(x[1:], kernel, stride, attrs.pad, dil)
        if self.padding_below_kernel and attrs.pad != "same" \
                and (pads[0] >= (kernel[0] - 1) * dil[0] + 1 or pads[1] >= (kernel[1] - 1) * dil[1] + 1):
            raise OpError(f"padding {attrs.pad[0]}x{attrs.pad[1]} must be smaller than the kernel "
                          f"{fmt_shape(kernel)} for pooling")
        hw = tuple(_out_size(n, k, s, lo, hi, d, ceil)
                   for n, k, s, lo, hi, d in zip(x[1:], kernel, stride, pads[:2], pads[2:], dil, strict=True))
        if min(hw) <= 0:
            eff = tuple((k - 1) * d + 1 for k, d in zip(kernel, dil, strict=True))
            dilated = " (dilated)" if tuple(dil) != (1, 1) else ""
            padded = f" padded by {pads[0]}x{pads[1]}" if any(pads) else ""
            raise OpError(f"{self.name} kernel {fmt_shape(eff)}{dilated} is larger than its input "
                          f"{fmt_shape(x[1:])}{padded}")
        return hw, pads

    def window(self, attrs, inputs):
        dil = attrs.get("dilation") or (1, 1)
        return tuple((k - 1) * d + 1 for k, d in zip(attrs.kernel, dil, strict=True)), attrs.stride

    def dropped(self, attrs, inputs):
        if attrs.get("ceil") or attrs.get("floor") or attrs.pad == "same":  # `floor`: the drop is intended
            return None
        x = inputs[0]
        dil = attrs.get("dilation") or (1, 1)
        lost = []
        for axis, n, k, s, d, lo, hi in zip(("rows", "columns"), x[1:], attrs.kernel, attrs.stride, dil,
                                            attrs.pads[:2], attrs.pads[2:], strict=True):
            eff = (k - 1) * d + 1
            if (n + lo + hi - eff) % s == 0 or s > eff:
                continue  # fits exactly, or the stride skips inputs everywhere by design
            out = (n + lo + hi - eff) // s + 1
            unread = (n + lo + hi) - ((out - 1) * s + eff) - hi  # trailing real inputs no window reads
            if unread > 0:
                lost.append(f"the last {unread} input {axis if unread > 1 else axis[:-1]}")
        if not lost:
            return None
        return (f"{self.name} {fmt_shape(attrs.kernel)} /{_stride_text(attrs.stride)} does not tile the input "
                f"{fmt_shape(x[1:])} (W - F + 2P is not divisible by the stride): "
                + " and ".join(lost) + " are dropped")


def _stride_text(s: Pair) -> str:
    return str(s[0]) if s[0] == s[1] else fmt_shape(s)


def _onnx_pads(p: tuple[int, int, int, int]) -> list[int]:
    return list(p)


# ----------------------------------------------------------------------------- convolution
class Conv(Windowed):
    name = "conv"
    summary = "2-D convolution: conv OUT KxK [/S] [pad P|same] [dilation D] [groups G|depthwise] [nobias] [floor]"
    onnx_ops = ("Conv",)
    options = (
        Option("out", "int", positional=True, required=True, help="the number of output channels"),
        Option("kernel", "pair", positional=True, required=True, help="a kernel size such as 3x3"),
        Option("stride", "pair", (1, 1)),
        Option("pad", "pad", (0, 0), aliases=("padding",)),
        Option("dilation", "pair", (1, 1), aliases=("dil",)),
        Option("groups", "int", 1),
        Option("depthwise", "flag"),
        Option("bias", "bool", True),
        Option("nobias", "flag"),
        Option("floor", "flag", help="output sizes round down on purpose: no warning for unread rows/columns"),
    )

    def validate(self, a):
        if a.out <= 0:
            raise OpError(f"conv needs a positive number of output channels, got {a.out}")
        for what in ("kernel", "stride", "dilation"):
            if min(a[what]) <= 0:
                raise OpError(f"conv {what} must be positive, got {fmt_shape(a[what])}")
        if a.pad != "same" and min(a.pad) < 0:
            raise OpError(f"conv padding must not be negative, got {fmt_shape(a.pad)}")
        if a.groups <= 0:
            raise OpError(f"conv groups must be positive, got {a.groups}")
        if a.nobias:
            a["bias"] = False

    def infer(self, a, inputs):
        (x,) = inputs
        _need_rank("conv", x, 3)
        groups = x[0] if a.depthwise else a.groups
        if x[0] % groups or a.out % groups:
            raise OpError(f"groups {groups} must divide both the input channels ({x[0]}) "
                          f"and the output channels ({a.out})")
        a = a.with_(groups=groups, in_channels=x[0])
        hw, pads = self._spatial(a, x)
        return (a.out, *hw), a.with_(pads=pads)

    def weights(self, a, inputs):
        fan_in = a.in_channels // a.groups * a.kernel[0] * a.kernel[1]
        fan_out = a.out // a.groups * a.kernel[0] * a.kernel[1]
        w = [WeightSpec("weight", (a.out, a.in_channels // a.groups, *a.kernel), "param", "kaiming_fan_out",
                        fan_in, fan_out)]
        if a.bias:
            w.append(WeightSpec("bias", (a.out,), "param", "zeros"))
        return w

    def macs(self, a, inputs, out):
        return out[0] * out[1] * out[2] * (a.in_channels // a.groups) * a.kernel[0] * a.kernel[1]

    def lower(self, b, node):
        a = node.attrs
        ins = [b.input(node, 0), b.weight(node, "weight")] + ([b.weight(node, "bias")] if a.bias else [])
        b.emit("Conv", ins, kernel_shape=list(a.kernel), strides=list(a.stride), pads=_onnx_pads(a.pads),
               dilations=list(a.dilation), group=a.groups)


# ----------------------------------------------------------------------------- transposed convolution
class ConvTranspose(Op):
    """PyTorch's ``ConvTranspose2d``: the gradient of a convolution with the same arguments, used to upsample
    (U-Net's up-convolutions, FCN's learned upsampling). Per spatial axis
    ``out = (W - 1)*S - 2P + D*(F - 1) + Q + 1`` with ``Q`` the output padding."""

    name = "convtranspose"
    aliases = ("deconv",)
    summary = ("transposed 2-D convolution: convtranspose OUT KxK [/S] [pad P] [output_pad Q] [groups G] "
               "[dilation D] [nobias]")
    onnx_ops = ("ConvTranspose",)
    options = (
        Option("out", "int", positional=True, required=True, help="the number of output channels"),
        Option("kernel", "pair", positional=True, required=True, help="a kernel size such as 2x2"),
        Option("stride", "pair", (1, 1)),
        Option("pad", "pair", (0, 0), aliases=("padding",)),
        Option("output_pad", "pair", (0, 0), aliases=("output_padding",)),
        Option("dilation", "pair", (1, 1), aliases=("dil",)),
        Option("groups", "int", 1),
        Option("bias", "bool", True),
        Option("nobias", "flag"),
    )

    def validate(self, a):
        if a.out <= 0:
            raise OpError(f"convtranspose needs a positive number of output channels, got {a.out}")
        for what in ("kernel", "stride", "dilation"):
            if min(a[what]) <= 0:
                raise OpError(f"convtranspose {what} must be positive, got {fmt_shape(a[what])}")
        if min(a.pad) < 0 or min(a.output_pad) < 0:
            raise OpError("convtranspose padding must not be negative")
        for q, s, d in zip(a.output_pad, a.stride, a.dilation, strict=True):
            if q >= max(s, d):  # PyTorch's rule: the extra rows must fall inside one stride (or dilation) step
                raise OpError(f"convtranspose output_pad {fmt_shape(a.output_pad)} must be smaller than the stride "
                              f"{fmt_shape(a.stride)} or the dilation {fmt_shape(a.dilation)}")
        if a.groups <= 0:
            raise OpError(f"convtranspose groups must be positive, got {a.groups}")
        if a.nobias:
            a["bias"] = False

    def infer(self, a, inputs):
        (x,) = inputs
        _need_rank("convtranspose", x, 3)
        if x[0] % a.groups or a.out % a.groups:
            raise OpError(f"groups {a.groups} must divide both the input channels ({x[0]}) "
                          f"and the output channels ({a.out})")
        hw = tuple((n - 1) * s - 2 * p + d * (k - 1) + q + 1 for n, s, p, d, k, q
                   in zip(x[1:], a.stride, a.pad, a.dilation, a.kernel, a.output_pad, strict=True))
        if min(hw) <= 0:
            raise OpError(f"convtranspose of {fmt_shape(x)} gives an empty output {fmt_shape((a.out, *hw))}: "
                          f"its padding {fmt_shape(a.pad)} removes more than the kernel adds")
        # ONNX: PyTorch crops the full output by P at the start and by P - Q at the end. ONNX Runtime refuses an
        # output_padding not below the stride, so Q goes into the end padding where it can
        end = tuple(max(p - q, 0) for p, q in zip(a.pad, a.output_pad, strict=True))
        extra = tuple(max(q - p, 0) for p, q in zip(a.pad, a.output_pad, strict=True))
        if any(e >= s for e, s in zip(extra, a.stride, strict=True)):
            raise OpError(f"convtranspose output_pad {fmt_shape(a.output_pad)} beyond the padding "
                          f"{fmt_shape(a.pad)} must be smaller than the stride {fmt_shape(a.stride)} (ONNX Runtime "
                          f"refuses more; PyTorch allows up to the dilation)")
        return (a.out, *hw), a.with_(in_channels=x[0], pads=(*a.pad, *a.pad), onnx_pads=(*a.pad, *end),
                                     onnx_output_pad=extra)

    def weights(self, a, inputs):
        per_group = a.out // a.groups
        # PyTorch's layout C_in x K/G x F x F; its initialisation takes fan_in from dimension 1
        w = [WeightSpec("weight", (a.in_channels, per_group, *a.kernel), "param", "he_normal",
                        per_group * a.kernel[0] * a.kernel[1])]
        if a.bias:
            w.append(WeightSpec("bias", (a.out,), "param", "zeros"))
        return w

    def macs(self, a, inputs, out):
        # every input element meets every tap of its group's kernels once (torch.utils.flop_counter: the
        # transposed convolution's FLOPs count over the input's positions)
        _, h, w = inputs[0]
        return h * w * a.in_channels * (a.out // a.groups) * a.kernel[0] * a.kernel[1]

    def window(self, a, inputs):
        # an output reads the inputs within ceil(F' / S) positions of the input grid, which it divides by S
        k = tuple(max(1, math.ceil(((f - 1) * d + 1) / s)) for f, d, s in zip(a.kernel, a.dilation, a.stride,
                                                                               strict=True))
        return k, (1 / a.stride[0], 1 / a.stride[1])

    def lower(self, b, node):
        a = node.attrs
        ins = [b.input(node, 0), b.weight(node, "weight")] + ([b.weight(node, "bias")] if a.bias else [])
        b.emit("ConvTranspose", ins, kernel_shape=list(a.kernel), strides=list(a.stride), pads=list(a.onnx_pads),
               dilations=list(a.dilation), group=a.groups, output_padding=list(a.onnx_output_pad))
