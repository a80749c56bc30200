"""Ops that change a tensor's layout without weights: flatten, channel shuffle, channel slice, reshape and
permute. Ops that change its spatial size are in :mod:`netdsl.ops.resize`."""

from __future__ import annotations

import math

from .base import Op, OpError, Option, _need_rank


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
