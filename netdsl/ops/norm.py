"""Normalisations computed from the input itself (no running statistics): layer, group and instance
normalisation, with PyTorch's weights and defaults. (Batch normalisation, which uses running statistics
at inference, is in :mod:`netdsl.ops.layers`.)

Each lowers to the ONNX operator of its meaning where the opset has one with PyTorch's semantics, and to
a decomposition below it; the shared pieces of those decompositions are the helpers at the top.
"""

from __future__ import annotations

from .base import LayerNode, Lowering, Op, OpError, Option, Shape, WeightSpec, _need_rank, fmt_shape

LAYERNORM_OPSET = 17  # LayerNormalization
GROUPNORM_OPSET = 21  # GroupNormalization with one scale and bias per channel (opset 18's were per group)


def reduce_mean(b: Lowering, node: LayerNode, x: str, axis: int, suffix: str, shape: Shape) -> str:
    """The mean of ``x`` over one axis of the batched tensor, the axis kept (``ReduceMean``'s axes became
    an input at opset 18)."""
    out = b.tmp(node, suffix, shape)
    if b.opset >= 18:
        return b.emit("ReduceMean", [x, b.const(f"axes{axis}", [axis], "int64")], out=out, keepdims=1)
    return b.emit("ReduceMean", [x], out=out, axes=[axis], keepdims=1)


def per_channel(b: Lowering, node: LayerNode, name: str) -> str:
    """The node's weight ``name`` (shape C) as C x 1 x 1, to broadcast over a CxHxW tensor (an ``Unsqueeze``
    of the initializer, which runtimes fold into a constant; the initializer keeps PyTorch's shape)."""
    return b.emit("Unsqueeze", [b.weight(node, name), b.const("axes12", [1, 2], "int64")],
                  out=f"{node.name}/{name}_c11")


def affine(b: Lowering, node: LayerNode, y: str, broadcast: bool) -> None:
    """The layer's output ``y * weight + bias``, per channel (``broadcast``: as C x 1 x 1 over CxHxW)."""
    w = per_channel(b, node, "weight") if broadcast else b.weight(node, "weight")
    bias = per_channel(b, node, "bias") if broadcast else b.weight(node, "bias")
    scaled = b.emit("Mul", [y, w], out=b.tmp(node, "scaled"))
    b.emit("Add", [scaled, bias])


def normalized(b: Lowering, node: LayerNode, x: str, axis: int, eps: float) -> str:
    """``(x - mean) / sqrt(var + eps)`` over one axis (biased variance, as PyTorch normalises)."""
    shape = node.in_shapes[0]
    reduced = tuple(1 if i == axis - 1 else d for i, d in enumerate(shape)) if axis > 0 else (*shape[:-1], 1)
    mean = reduce_mean(b, node, x, axis, "mean", reduced)
    d = b.emit("Sub", [x, mean], out=b.tmp(node, "centred"))
    sq = b.emit("Mul", [d, d], out=b.tmp(node, "squared"))
    var = reduce_mean(b, node, sq, axis, "variance", reduced)
    ve = b.emit("Add", [var, b.const(f"{node.name}.eps", eps, "float32")], out=b.tmp(node, "variance_eps", reduced))
    std = b.emit("Sqrt", [ve], out=b.tmp(node, "std", reduced))
    return b.emit("Div", [d, std], out=b.tmp(node, "normalized"))


class LayerNorm(Op):
    """PyTorch's ``nn.LayerNorm(C)`` over the features of a flat tensor, and over the channels at every
    position of a CxHxW tensor: torchvision ConvNeXt's ``LayerNorm2d`` (permute to channels-last,
    ``F.layer_norm`` over C, permute back)."""

    name = "layernorm"
    summary = ("layer normalisation over the channels at each position (CxHxW, ConvNeXt's LayerNorm2d) or over "
               "the features of a flat input: layernorm [eps E]")
    onnx_ops = ("LayerNormalization", "Transpose", "ReduceMean", "Sub", "Mul", "Add", "Sqrt", "Div", "Unsqueeze")
    options = (Option("eps", "float", 1e-5),)

    def validate(self, a):
        if a.eps < 0:
            raise OpError(f"layernorm eps must not be negative, got {a.eps:g}")

    def infer(self, a, inputs):
        (x,) = inputs
        if len(x) not in (1, 3):
            raise OpError(f"layernorm expects a CxHxW input (normalised over C at each position) or a flat "
                          f"input, got {fmt_shape(x)}")
        return x, a.with_(channels=x[0])

    def weights(self, a, inputs):
        c = (a.channels,)
        return [WeightSpec("weight", c, "param", "ones"), WeightSpec("bias", c, "param", "zeros")]

    def lower(self, b, node):
        a, x = node.attrs, b.input(node, 0)
        spatial = len(node.in_shapes[0]) == 3
        if b.opset >= LAYERNORM_OPSET:
            w, bias = b.weight(node, "weight"), b.weight(node, "bias")
            if not spatial:
                b.emit("LayerNormalization", [x, w, bias], axis=-1, epsilon=a.eps)
                return
            # Channels-last, LayerNormalization over the last axis, back: ONNX Runtime ran this 1.6x as fast
            # as the decomposition over axis 1 (tools/bench_lowering_choices.py; docs/language.md).
            c, h, wd = node.in_shapes[0]
            t = b.emit("Transpose", [x], perm=[0, 2, 3, 1], out=b.tmp(node, "channels_last", (h, wd, c)))
            n = b.emit("LayerNormalization", [t, w, bias], axis=-1, epsilon=a.eps,
                       out=b.tmp(node, "normalized_last", (h, wd, c)))
            b.emit("Transpose", [n], perm=[0, 3, 1, 2])
            return
        y = normalized(b, node, x, 1 if spatial else -1, a.eps)
        affine(b, node, y, spatial)


class GroupNorm(Op):
    """PyTorch's ``nn.GroupNorm(G, C)``: each group of C/G channels normalised over its channels and
    positions, then a per-channel scale and shift."""

    name = "groupnorm"
    summary = "group normalisation: groupnorm G [eps E] (G groups of channels; weight and bias per channel)"
    onnx_ops = ("GroupNormalization", "Reshape", "InstanceNormalization", "Mul", "Add", "Unsqueeze")
    options = (Option("groups", "int", positional=True, required=True, help="the number of groups"),
               Option("eps", "float", 1e-5))

    def validate(self, a):
        if a.groups <= 0:
            raise OpError(f"groupnorm needs a positive number of groups, got {a.groups}")
        if a.eps < 0:
            raise OpError(f"groupnorm eps must not be negative, got {a.eps:g}")

    def infer(self, a, inputs):
        (x,) = inputs
        _need_rank("groupnorm", x, 3)
        if x[0] % a.groups:
            raise OpError(f"groupnorm {a.groups} groups must divide the channels ({x[0]})")
        return x, a.with_(channels=x[0])

    def weights(self, a, inputs):
        c = (a.channels,)
        return [WeightSpec("weight", c, "param", "ones"), WeightSpec("bias", c, "param", "zeros")]

    def lower(self, b, node):
        a, x = node.attrs, b.input(node, 0)
        if b.opset >= GROUPNORM_OPSET:
            b.emit("GroupNormalization", [x, b.weight(node, "weight"), b.weight(node, "bias")],
                   num_groups=a.groups, epsilon=a.eps)
            return
        # Below opset 21, ONNX's GroupNormalization scales per group: normalise each group as one instance
        # of a [N, G, C/G*H*W] tensor, then scale and shift per channel.
        c, h, w = node.in_shapes[0]
        g = a.groups
        grouped = b.emit("Reshape", [x, b.const(f"shape.0.{g}.-1", [0, g, -1], "int64")],
                         out=b.tmp(node, "grouped", (g, c // g * h * w)))
        n = b.emit("InstanceNormalization", [grouped, b.const(f"ones{g}", [1.0] * g, "float32"),
                                             b.const(f"zeros{g}", [0.0] * g, "float32")],
                   epsilon=a.eps, out=b.tmp(node, "normalized_groups", (g, c // g * h * w)))
        back = b.emit("Reshape", [n, b.const(f"shape.0.{c}.{h}.{w}", [0, c, h, w], "int64")],
                      out=b.tmp(node, "normalized"))
        affine(b, node, back, True)


class InstanceNorm(Op):
    """PyTorch's ``nn.InstanceNorm2d(C)``: each channel of each image normalised over its positions; by
    default no affine parameters and no running statistics (``affine`` adds a per-channel weight and bias)."""

    name = "instancenorm"
    summary = "instance normalisation: instancenorm [eps E] [affine] (PyTorch's default: no weights)"
    onnx_ops = ("InstanceNormalization",)
    options = (Option("eps", "float", 1e-5), Option("affine", "flag"))

    def validate(self, a):
        if a.eps < 0:
            raise OpError(f"instancenorm eps must not be negative, got {a.eps:g}")

    def infer(self, a, inputs):
        (x,) = inputs
        _need_rank("instancenorm", x, 3)
        if x[1] * x[2] == 1:  # PyTorch refuses it too: every value would become the bias
            raise OpError(f"instancenorm needs more than one position per channel, got {fmt_shape(x)}")
        return x, a.with_(channels=x[0])

    def weights(self, a, inputs):
        if not a.affine:
            return []
        c = (a.channels,)
        return [WeightSpec("weight", c, "param", "ones"), WeightSpec("bias", c, "param", "zeros")]

    def lower(self, b, node):
        a = node.attrs
        c = a.channels
        if a.affine:
            scale, bias = b.weight(node, "weight"), b.weight(node, "bias")
        else:  # ONNX requires a scale and a bias
            scale, bias = b.const(f"ones{c}", [1.0] * c, "float32"), b.const(f"zeros{c}", [0.0] * c, "float32")
        b.emit("InstanceNormalization", [b.input(node, 0), scale, bias], epsilon=a.eps)
