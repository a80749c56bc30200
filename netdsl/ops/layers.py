"""Layers with weights or per-channel rules: fully connected, batch normalisation, local response
normalisation. (Convolution, also weighted, is a windowed op: :mod:`netdsl.ops.windowed`.)"""

from __future__ import annotations

from .base import Op, OpError, Option, WeightSpec, _need_rank, fmt_shape


class Fc(Op):
    name = "fc"
    aliases = ("linear",)
    summary = "fully connected layer: fc OUT [nobias]; the input must be flat (use flatten)"
    onnx_ops = ("Gemm",)
    options = (
        Option("out", "int", positional=True, required=True, help="the number of output features"),
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
        _need_rank("fc", x, 1, "add `flatten` before it")
        return (a.out,), a.with_(in_features=x[0])

    def weights(self, a, inputs):
        w = [WeightSpec("weight", (a.out, a.in_features), "param", "small_normal", a.in_features, a.out)]
        if a.bias:
            w.append(WeightSpec("bias", (a.out,), "param", "zeros"))
        return w

    def macs(self, a, inputs, out):
        return a.in_features * a.out

    def lower(self, b, node):
        ins = [b.input(node, 0), b.weight(node, "weight")]
        if node.attrs.bias:
            ins.append(b.weight(node, "bias"))
        b.emit("Gemm", ins, transB=1)


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
