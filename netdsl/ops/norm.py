"""Normalisations computed from the input itself (no running statistics): layer, group and instance
normalisation, with PyTorch's weights and defaults. (Batch normalisation, which uses running statistics
at inference, is in :mod:`netdsl.ops.layers`.)

Each lowers to the ONNX operator of its meaning where the opset has one with PyTorch's semantics, and below
it to ``InstanceNormalization`` (ONNX's oldest normalisation, whose statistics stay inside one op) on a
reshaped tensor, then a per-channel scale and shift; the helpers at the top are those pieces.
"""

from __future__ import annotations

from .base import LayerNode, Lowering, Op, OpError, Option, WeightSpec, _need_rank, fmt_shape

LAYERNORM_OPSET = 17  # LayerNormalization
GROUPNORM_OPSET = 21  # GroupNormalization with one scale and bias per channel (opset 18's were per group)


def per_channel(b: Lowering, node: LayerNode, name: str) -> str:
    """The node's weight ``name`` (shape C) as C x 1 x 1, to broadcast over a CxHxW tensor (an ``Unsqueeze``
    of the initializer, which runtimes fold into a constant; the initializer keeps PyTorch's shape)."""
    return b.emit("Unsqueeze", [b.weight(node, name), b.const("axes12", [1, 2], "int64")],
                  out=f"{node.name}/{name}_c11")


def affine(b: Lowering, node: LayerNode, y: str) -> None:
    """The layer's output ``y * weight + bias``, per channel (as C x 1 x 1 over a CxHxW tensor)."""
    spatial = len(node.shape) == 3
    w = per_channel(b, node, "weight") if spatial else b.weight(node, "weight")
    bias = per_channel(b, node, "bias") if spatial else b.weight(node, "bias")
    scaled = b.emit("Mul", [y, w], out=b.tmp(node, "scaled"))
    b.emit("Add", [scaled, bias])


def instance_norm(b: Lowering, node: LayerNode, x: str, groups: int, size: int, eps: float) -> str:
    """``x`` (a [N, groups, size] tensor) normalised over its last axis, per batch item and group: an
    ``InstanceNormalization`` with unit scale and zero bias (its statistics stay inside one op, which the
    fp16 pass keeps in fp32: :data:`netdsl.precision.FP32_OPS`)."""
    return b.emit("InstanceNormalization", [x, b.const(f"ones{groups}", [1.0] * groups, "float32"),
                                            b.const(f"zeros{groups}", [0.0] * groups, "float32")],
                  epsilon=eps, out=b.tmp(node, "normalized_groups", (groups, size)))


def _reshape(b: Lowering, node: LayerNode, x: str, shape: tuple[int, ...], suffix: str) -> str:
    """``x`` reshaped to ``shape`` (batch excluded; the batch dimension is copied)."""
    key = "shape.0." + ".".join(map(str, shape))
    return b.emit("Reshape", [x, b.const(key, [0, *shape], "int64")], out=b.tmp(node, suffix, shape))


class LayerNorm(Op):
    """PyTorch's ``nn.LayerNorm(C)`` over the features of a flat tensor, and over the channels at every
    position of a CxHxW tensor: torchvision ConvNeXt's ``LayerNorm2d`` (permute to channels-last,
    ``F.layer_norm`` over C, permute back)."""

    name = "layernorm"
    summary = ("layer normalisation over the channels at each position (CxHxW, ConvNeXt's LayerNorm2d) or over "
               "the features of a flat input: layernorm [eps E]")
    onnx_ops = ("LayerNormalization", "Transpose", "Reshape", "InstanceNormalization", "Mul", "Add", "Unsqueeze")
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
                # Channels-last, LayerNormalization over the last axis, back: ONNX Runtime ran this faster than
            # a decomposition over axis 1 (tools/bench_lowering_choices.py; figures in docs/language.md).
            c, h, wd = node.in_shapes[0]
            t = b.emit("Transpose", [x], perm=[0, 2, 3, 1], out=b.tmp(node, "channels_last", (h, wd, c)))
            n = b.emit("LayerNormalization", [t, w, bias], axis=-1, epsilon=a.eps,
                       out=b.tmp(node, "normalized_last", (h, wd, c)))
            b.emit("Transpose", [n], perm=[0, 3, 1, 2])
            return
        # Below opset 17: the positions as instances of InstanceNormalization, normalised over C.
        if not spatial:
            (c,) = node.in_shapes[0]
            n = instance_norm(b, node, _reshape(b, node, x, (1, c), "instance"), 1, c, a.eps)
            affine(b, node, _reshape(b, node, n, (c,), "normalized"))
            return
        c, h, wd = node.in_shapes[0]
        flat = _reshape(b, node, x, (c, h * wd), "flat")
        t = b.emit("Transpose", [flat], perm=[0, 2, 1], out=b.tmp(node, "positions", (h * wd, c)))
        n = instance_norm(b, node, t, h * wd, c, a.eps)
        back = b.emit("Transpose", [n], perm=[0, 2, 1], out=b.tmp(node, "normalized_flat", (c, h * wd)))
        affine(b, node, _reshape(b, node, back, (c, h, wd), "normalized"))


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
        n = instance_norm(b, node, _reshape(b, node, x, (g, c // g * h * w), "grouped"), g, c // g * h * w, a.eps)
        affine(b, node, _reshape(b, node, n, (c, h, w), "normalized"))


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
