"""Ops that change a tensor's layout without weights: flatten, channel shuffle, channel slice, reshape and
permute. Ops that change its spatial size are in :mod:`netdsl.ops.resize`."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .base import OPS, ArgValue, Attrs, Op, OpError, Option, _located, _need_rank, fmt_shape


class Flatten(Op):
    name = "flatten"
    summary = "CxHxW -> C*H*W"
    onnx_ops = ("Flatten",)

    def infer(self, a, inputs):
        (x,) = inputs
        return (math.prod(x),), a

    def window(self, a, inputs):
        x = inputs[0]
        return (tuple(x[1:]), (1, 1)) if len(x) == 3 else None

    def lower(self, b, node):
        b.emit("Flatten", [b.input(node, 0)], axis=1)


class ChannelShuffle(Op):
    name = "channel_shuffle"
    summary = "ShuffleNet's channel shuffle: channel_shuffle GROUPS"
    onnx_ops = ("Reshape", "Transpose")
    options = (Option("groups", "int", positional=True, required=True, help="the number of groups"),)

    def infer(self, a, inputs):
        (x,) = inputs
        _need_rank("channel_shuffle", x, 3)
        if a.groups <= 0 or x[0] % a.groups:
            raise OpError(f"channel_shuffle groups {a.groups} must divide the channels ({x[0]})")
        return x, a

    def lower(self, b, node):
        c, h, w = node.in_shapes[0]
        g = node.attrs.groups
        r = b.emit("Reshape", [b.input(node, 0), b.const(f"{node.name}.shape5", [-1, g, c // g, h, w], "int64")],
                   out=b.tmp(node, "grouped", (g, c // g, h, w)))
        t = b.emit("Transpose", [r], perm=[0, 2, 1, 3, 4], out=b.tmp(node, "transposed", (c // g, g, h, w)))
        b.emit("Reshape", [t, b.const(f"{node.name}.shape4", [-1, c, h, w], "int64")])


class Slice(Op):
    """A contiguous range of channels, PyTorch's ``x[:, start:end]``: ShuffleNet v2's channel split is
    ``slice 0 c // 2`` for one half and ``slice c // 2 c`` for the other (``torch.chunk(x, 2, dim=1)``)."""

    name = "slice"
    summary = "channels START..END-1 of the input: slice START END (PyTorch's x[:, START:END])"
    onnx_ops = ("Slice",)
    options = (Option("start", "int", positional=True, required=True, help="the first channel (from 0)"),
               Option("end", "int", positional=True, required=True, help="the end channel (exclusive)"))

    def infer(self, a, inputs):
        (x,) = inputs
        if not 0 <= a.start < a.end <= x[0]:
            raise OpError(f"slice {a.start} {a.end} must select a non-empty range of the {x[0]} channels "
                          f"(0 <= START < END <= {x[0]})")
        return (a.end - a.start, *x[1:]), a

    def lower(self, b, node):
        a = node.attrs
        b.emit("Slice", [b.input(node, 0), b.const(f"int64.{a.start}", [a.start], "int64"),
                         b.const(f"int64.{a.end}", [a.end], "int64"), b.const("int64.1", [1], "int64")])


def _int_list(op: str, args: Sequence[ArgValue], what: str, example: str) -> tuple[int, ...]:
    """Layer arguments that are all integers (``reshape 3 85 13 13``), or one size literal (``reshape 3x85x13x13``)."""
    if not args:
        raise OpError(f"{op} needs {what}, e.g. `{op} {example}`")
    if len(args) == 1 and args[0].kind == "dims":
        return tuple(args[0].value)
    out = []
    for a in args:
        if a.kind == "dims":
            raise _located(f"{op} takes {what} as separate numbers (`{op} {example}`) or as one size literal "
                           f"(`{op} {example.replace(' ', 'x')}`), not both", a.span)
        if a.kind == "word" and a.value in OPS:  # `reshape 48 relu`: a forgotten arrow
            raise _located(f"`{a.value}` is a layer, not an argument of {op}: separate layers with `->`", a.span)
        if a.kind == "word":
            raise _located(f"unknown name `{a.value}` ({op} takes {what}, e.g. `{op} {example}`)", a.span)
        if a.kind != "value" or isinstance(a.value, bool) or not isinstance(a.value, int):
            shown = f"/{fmt_shape(a.value) if isinstance(a.value, tuple) else a.value}" if a.kind == "stride" \
                else f"@{a.value.name}" if a.kind == "ref" else str(a.value)
            raise _located(f"{op} takes {what} (integers), got {shown}", a.span)
        out.append(a.value)
    return tuple(out)


class Reshape(Op):
    """A new shape for every image's elements, in order (PyTorch's ``x.reshape(N, D1, D2, ...)``): a detector head's
    ``anchors x (5 + classes) x H x W``. The batch axis is kept."""

    name = "reshape"
    summary = "new sizes for every image's elements, in order: reshape D1 D2 ... (or reshape D1xD2x...)"
    onnx_ops = ("Reshape",)
    options = (Option("sizes", "int", positional=True, required=True, help="the new sizes D1 D2 ... (batch excluded)"),)

    def bind(self, args):
        sizes = _int_list("reshape", args, "the new sizes", "3 85 13 13")
        for a, d in zip(args, sizes, strict=False):
            if d <= 0:
                raise _located(f"reshape sizes must be positive, got {d}", a.span)
        if min(sizes) <= 0:
            raise OpError(f"reshape sizes must be positive, got {fmt_shape(sizes)}")
        return Attrs(sizes=sizes)

    def infer(self, a, inputs):
        (x,) = inputs
        if math.prod(a.sizes) != math.prod(x):
            raise OpError(f"reshape {' '.join(map(str, a.sizes))} holds {math.prod(a.sizes):,} elements, but its input "
                          f"{fmt_shape(x)} has {math.prod(x):,}")
        return a.sizes, a

    def lower(self, b, node):
        sizes = node.attrs.sizes  # 0: the batch size is copied from the input (ONNX Reshape, allowzero 0)
        b.emit("Reshape", [b.input(node, 0), b.const(f"reshape.0x{fmt_shape(sizes)}", [0, *sizes], "int64")])


class Permute(Op):
    """A reordering of every image's axes (PyTorch's ``x.permute(0, 1 + A, 1 + B, ...)``), 0-based over the axes
    after the batch: ``permute 1 2 0`` turns CxHxW into HxWxC."""

    name = "permute"
    summary = "reorders the axes after the batch (0-based): permute A B C, e.g. permute 1 2 0 (CxHxW -> HxWxC)"
    onnx_ops = ("Transpose",)
    options = (Option("axes", "int", positional=True, required=True, help="a permutation of the axes, from 0"),)

    def bind(self, args):
        return Attrs(axes=_int_list("permute", args, "the axes in their new order", "1 2 0"))

    def infer(self, a, inputs):
        (x,) = inputs
        if sorted(a.axes) != list(range(len(x))):
            raise OpError(f"permute {' '.join(map(str, a.axes))} must be a permutation of 0..{len(x) - 1}, the axes of "
                          f"its input {fmt_shape(x)} after the batch")
        return tuple(x[i] for i in a.axes), a

    def lower(self, b, node):
        b.emit("Transpose", [b.input(node, 0)], perm=[0, *(i + 1 for i in node.attrs.axes)])
