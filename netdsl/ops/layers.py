"""Layers with weights or per-channel rules: fully connected (also per position), batch normalisation,
local response normalisation, learned per-channel scales and PReLU. (Convolution, also weighted, is a
windowed op: :mod:`netdsl.ops.windowed`; layer, group and instance normalisation are in
:mod:`netdsl.ops.norm`.)"""

from __future__ import annotations

import math

from .base import Op, OpError, Option, WeightSpec, _need_rank, fmt_shape


class Fc(Op):
    """PyTorch's ``nn.Linear``: on a flat input, or with ``per_position`` at every position of a CxHxW input
    (torchvision ConvNeXt's Linear on a channels-last tensor); the weight is ``K x C`` either way."""

    name = "fc"
    aliases = ("linear",)
    summary = ("fully connected layer: fc OUT [per_position] [nobias]; the input must be flat (use flatten), or "
               "CxHxW with per_position (the same Linear at every position)")
    onnx_ops = ("Gemm", "Unsqueeze", "Conv")
    options = (
        Option("out", "int", positional=True, required=True, help="the number of output features"),
        Option("per_position", "flag", help="apply the layer at every position of a CxHxW input"),
        Option("bias", "bool", True),
        Option("nobias", "flag"),
    )

    def validate(self, a):
        if a.out <= 0:
            raise OpError(f"fc needs a positive number of outputs, got {a.out}")
        if a.nobias:
            a["bias"] = False

    def infer(self, a, inputs):
        (x,) = inputs
        if a.per_position:
            _need_rank("fc per_position", x, 3, "on a flat input write `fc K` without `per_position`")
            return (a.out, *x[1:]), a.with_(in_features=x[0])
        _need_rank("fc", x, 1, "add `flatten` before it, or `per_position` to apply it at every position")
        return (a.out,), a.with_(in_features=x[0])

    def weights(self, a, inputs):
        w = [WeightSpec("weight", (a.out, a.in_features), "param", "small_normal", a.in_features, a.out)]
        if a.bias:
            w.append(WeightSpec("bias", (a.out,), "param", "zeros"))
        return w

    def macs(self, a, inputs, out):
        return a.in_features * math.prod(out)

    def lower(self, b, node):
        a = node.attrs
        x, w = b.input(node, 0), b.weight(node, "weight")
        bias = [b.weight(node, "bias")] if a.bias else []
        if not a.per_position:
            b.emit("Gemm", [x, w, *bias], transB=1)
            return
        # A 1x1 Conv, its weight K x C x 1 x 1 an Unsqueeze of the K x C initializer (folded by runtimes):
        # ONNX Runtime ran it 1.4x as fast as Transpose, MatMul, Add, Transpose (96 -> 384 at 56x56;
        # tools/bench_lowering_choices.py, figures in docs/language.md).
        w4 = b.emit("Unsqueeze", [w, b.const("axes23", [2, 3], "int64")], out=f"{node.name}/weight_k_c_1_1")
        b.emit("Conv", [x, w4, *bias], kernel_shape=[1, 1])


class BatchNorm(Op):
    name = "bn"
    aliases = ("batchnorm",)
    summary = "batch normalisation (inference: running statistics): bn [eps E] [momentum M]"
    onnx_ops = ("BatchNormalization",)
    options = (Option("eps", "float", 1e-5), Option("momentum", "float", 0.1))

    def infer(self, a, inputs):
        (x,) = inputs
        if len(x) not in (1, 3):
            raise OpError(f"bn expects a CxHxW or flat input, got {fmt_shape(x)}")
        return x, a.with_(channels=x[0])

    def weights(self, a, inputs):
        c = (a.channels,)
        return [WeightSpec("weight", c, "param", "ones"), WeightSpec("bias", c, "param", "zeros"),
                WeightSpec("running_mean", c, "buffer", "zeros"), WeightSpec("running_var", c, "buffer", "ones")]

    def lower(self, b, node):
        ins = [b.input(node, 0)] + [b.weight(node, s) for s in ("weight", "bias", "running_mean", "running_var")]
        b.emit("BatchNormalization", ins, epsilon=node.attrs.eps)


class Lrn(Op):
    name = "lrn"
    summary = "local response normalisation across channels (AlexNet): lrn SIZE [alpha A] [beta B] [k K]"
    onnx_ops = ("LRN", "Mul", "Unsqueeze", "Pad", "AveragePool", "Squeeze", "Add", "Pow", "Div")
    options = (Option("size", "int", 5, positional=True), Option("alpha", "float", 1e-4),
               Option("beta", "float", 0.75), Option("k", "float", 1.0, aliases=("bias",)))

    def validate(self, a):
        if a.size <= 0:
            raise OpError(f"lrn size must be positive, got {a.size}")

    def infer(self, a, inputs):
        _need_rank("lrn", inputs[0], 3)
        return inputs[0], a

    def lower(self, b, node):
        a = node.attrs  # PyTorch's LocalResponseNorm and ONNX's LRN both divide alpha by size
        x = b.input(node, 0)
        if a.size % 2:
            b.emit("LRN", [x], size=a.size, alpha=a.alpha, beta=a.beta, bias=a.k)
            return
        # Even sizes: ONNX Runtime's LRN accepts odd sizes only, and ONNX centres an even window one channel
        # later than PyTorch. PyTorch's formula spelled out: x / (k + alpha * mean(x^2 over channels
        # c - size//2 .. c + (size-1)//2, zero-padded)) ** beta.
        c, h, w = node.in_shapes[0]
        n = a.size
        sq = b.emit("Mul", [x, x], out=b.tmp(node, "square"))
        sq5 = b.emit("Unsqueeze", [sq, b.const("axes1", [1], "int64")], out=b.tmp(node, "square5", (1, c, h, w)))
        pad = b.const(f"{node.name}.pads", [0, 0, n // 2, 0, 0, 0, 0, (n - 1) // 2, 0, 0], "int64")
        padded = b.emit("Pad", [sq5, pad], out=b.tmp(node, "padded", (1, c + n - 1, h, w)))
        mean5 = b.emit("AveragePool", [padded], kernel_shape=[n, 1, 1], out=b.tmp(node, "mean5", (1, c, h, w)))
        mean = b.emit("Squeeze", [mean5, b.const("axes1", [1], "int64")], out=b.tmp(node, "mean"))
        scaled = b.emit("Mul", [mean, b.const(f"{node.name}.alpha", a.alpha, "float32")], out=b.tmp(node, "scaled"))
        base = b.emit("Add", [scaled, b.const(f"{node.name}.k", a.k, "float32")], out=b.tmp(node, "base"))
        div = b.emit("Pow", [base, b.const(f"{node.name}.beta", a.beta, "float32")], out=b.tmp(node, "divisor"))
        b.emit("Div", [x, div])


class LayerScale(Op):
    """A learned per-channel scale (ConvNeXt's ``layer_scale``, CaiT's LayerScale): ``x * gamma`` with gamma
    of PyTorch's shape C x 1 x 1 (C on a flat input). Its one parameter is named by the layer's path itself,
    no suffix, as torchvision names it (``features.1.0.layer_scale``)."""

    name = "layer_scale"
    aliases = ("channel_scale",)
    summary = "learned per-channel scale x * gamma, gamma C x 1 x 1 named by the layer itself: layer_scale [init V]"
    onnx_ops = ("Mul",)
    options = (Option("init", "float", 1.0, help="the initial value of every scale"),)

    def infer(self, a, inputs):
        (x,) = inputs
        if len(x) not in (1, 3):
            raise OpError(f"layer_scale expects a CxHxW or flat input, got {fmt_shape(x)}")
        return x, a.with_(scale_shape=(x[0], 1, 1) if len(x) == 3 else (x[0],))

    def weights(self, a, inputs):
        return [WeightSpec("", a.scale_shape, "param", "fill", fill=a.init)]

    def lower(self, b, node):
        b.emit("Mul", [b.input(node, 0), b.weight(node, "")])


class PRelu(Op):
    """PyTorch's ``nn.PReLU``: ``max(x, 0) + a * min(x, 0)`` with a learned slope ``a`` per channel
    (``weight``, C), or one slope for all channels with ``shared`` (``nn.PReLU()``'s default, shape 1)."""

    name = "prelu"
    summary = "ReLU with a learned negative slope per channel: prelu [shared] [init A] (default 0.25)"
    onnx_ops = ("PRelu", "Unsqueeze")
    options = (Option("shared", "flag", help="one slope for every channel"),
               Option("init", "float", 0.25, help="the initial slope"))

    def infer(self, a, inputs):
        (x,) = inputs
        if len(x) not in (1, 3):
            raise OpError(f"prelu expects a CxHxW or flat input, got {fmt_shape(x)}")
        return x, a.with_(channels=x[0])

    def weights(self, a, inputs):
        return [WeightSpec("weight", (1,) if a.shared else (a.channels,), "param", "fill", fill=a.init)]

    def lower(self, b, node):
        slope = b.weight(node, "weight")
        if len(node.in_shapes[0]) == 3 and not node.attrs.shared:  # C -> C x 1 x 1, to broadcast over H and W
            slope = b.emit("Unsqueeze", [slope, b.const("axes12", [1, 2], "int64")], out=f"{node.name}/slope_c11")
        b.emit("PRelu", [b.input(node, 0), slope])
