"""Pointwise ops: the output has the input's shape (activations, softmax, dropout, identity). PReLU, an
activation with a weight, is in :mod:`netdsl.ops.layers`."""

from __future__ import annotations

import math
from collections.abc import Callable

from .base import LayerNode, Lowering, Op, OpError, Option


class Pointwise(Op):
    """Base of the elementwise ops: the output has the input's shape, no weights, no window.

    A subclass lowers itself in :meth:`apply`, given the ONNX name of its input.
    """

    def lower(self, b, node):
        self.apply(b, node, b.input(node, 0))

    def apply(self, b: Lowering, node: LayerNode, x: str) -> None:
        raise NotImplementedError


class Activation(Pointwise):
    """An activation function given by its lowering (one entry of the table in :mod:`netdsl.ops`)."""

    def __init__(self, name: str, summary: str, lower: Callable, onnx_ops: tuple[str, ...],
                 options: tuple[Option, ...] = (), aliases: tuple[str, ...] = ()):
        self.name, self.summary, self._lower = name, summary, lower
        self.onnx_ops, self.options, self.aliases = onnx_ops, options, aliases

    def apply(self, b, node, x):
        self._lower(b, node, x)


def simple(onnx_op: str, **attrs) -> Callable:
    """The lowering of an activation that is one ONNX op."""
    return lambda b, node, x: b.emit(onnx_op, [x], **attrs)


def hardswish(b, node, x):
    if b.opset >= 14:
        b.emit("HardSwish", [x])
    else:
        hs = b.emit("HardSigmoid", [x], alpha=1.0 / 6, beta=0.5, out=b.tmp(node, "hardsigmoid"))
        b.emit("Mul", [x, hs])


def silu(b, node, x):
    s = b.emit("Sigmoid", [x], out=b.tmp(node, "sigmoid"))
    b.emit("Mul", [x, s])


def gelu(b, node, x):
    if b.opset >= 20:
        b.emit("Gelu", [x])
        return
    # 0.5 * x * (1 + erf(x / sqrt(2))), PyTorch's exact GELU
    t = b.emit("Div", [x, b.const("sqrt2", math.sqrt(2.0), "float32")], out=b.tmp(node, "scaled"))
    e = b.emit("Erf", [t], out=b.tmp(node, "erf"))
    p = b.emit("Add", [e, b.const("one", 1.0, "float32")], out=b.tmp(node, "erf_plus_1"))
    h = b.emit("Mul", [x, b.const("half", 0.5, "float32")], out=b.tmp(node, "half_x"))
    b.emit("Mul", [h, p])


class Softmax(Pointwise):
    name = "softmax"
    summary = "softmax over the channel axis"
    onnx_ops = ("Softmax",)

    def apply(self, b, node, x):
        b.emit("Softmax", [x], axis=1)


class Dropout(Pointwise):
    name = "dropout"
    aliases = ("droppath", "stochastic_depth")
    summary = "dropout / stochastic depth: identity at inference (dropout P)"
    onnx_ops = ("Identity",)
    options = (Option("p", "float", 0.5, positional=True),)

    def validate(self, a):
        if not 0.0 <= a.p <= 1.0:
            raise OpError(f"dropout probability must be in [0, 1], got {a.p}")

    def apply(self, b, node, x):
        b.emit("Identity", [x])


class Identity(Pointwise):
    name = "identity"
    summary = "passes its input through"
    onnx_ops = ("Identity",)

    def apply(self, b, node, x):
        b.emit("Identity", [x])


class Elu(Pointwise):
    name = "elu"
    summary = "x if x > 0 else alpha * (exp(x) - 1): elu [alpha A] (default 1.0)"
    onnx_ops = ("Elu",)
    options = (Option("alpha", "float", 1.0),)

    def apply(self, b, node, x):
        b.emit("Elu", [x], alpha=node.attrs.alpha)


class Mish(Pointwise):
    name = "mish"
    summary = "x * tanh(softplus(x))"
    onnx_ops = ("Mish", "Softplus", "Tanh", "Mul")

    def apply(self, b, node, x):
        if b.opset >= 18:
            b.emit("Mish", [x])
            return
        sp = b.emit("Softplus", [x], out=b.tmp(node, "softplus"))
        t = b.emit("Tanh", [sp], out=b.tmp(node, "tanh"))
        b.emit("Mul", [x, t])


class Softplus(Pointwise):
    """PyTorch's ``nn.Softplus``: ``log(1 + exp(beta * x)) / beta``, and ``x`` itself where
    ``beta * x > threshold``."""

    name = "softplus"
    summary = "log(1 + exp(beta*x)) / beta, x where beta*x > threshold: softplus [beta B] [threshold T] (1, 20)"
    onnx_ops = ("Softplus", "Mul", "Div", "Greater", "Where")
    options = (Option("beta", "float", 1.0), Option("threshold", "float", 20.0))

    def validate(self, a):
        if a.beta == 0:
            raise OpError("softplus beta must not be 0")

    def apply(self, b, node, x):
        a = node.attrs
        bx = x if a.beta == 1 else b.emit("Mul", [x, b.const(f"{node.name}.beta", a.beta, "float32")],
                                          out=b.tmp(node, "beta_x"))
        sp = b.emit("Softplus", [bx], out=b.tmp(node, "softplus"))
        if a.beta != 1:
            sp = b.emit("Div", [sp, b.const(f"{node.name}.beta", a.beta, "float32")], out=b.tmp(node, "scaled"))
        above = b.emit("Greater", [bx, b.const(f"{node.name}.threshold", a.threshold, "float32")],
                       out=f"{node.name}/above_threshold")
        b.emit("Where", [above, x, sp])


class Hardtanh(Pointwise):
    name = "hardtanh"
    summary = "x clipped to [min, max]: hardtanh [min A] [max B] (default -1, 1)"
    onnx_ops = ("Clip",)
    options = (Option("min", "float", -1.0, aliases=("min_val",)), Option("max", "float", 1.0, aliases=("max_val",)))

    def validate(self, a):
        if not a.min < a.max:
            raise OpError(f"hardtanh needs min < max, got min {a.min:g} and max {a.max:g}")

    def apply(self, b, node, x):
        a = node.attrs
        lo, hi = b.const(f"{node.name}.min", a.min, "float32"), b.const(f"{node.name}.max", a.max, "float32")
        b.emit("Clip", [x, lo, hi])
