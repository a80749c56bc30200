"""Merge ops: several tensors in, one out (residual sums, squeeze-and-excitation scaling, inception and dense
concatenations, FractalNet's averaging joins). Called with tensor references: ``add(@a, @b)``; the composites
``residual<>``, ``scale<>``, ``inception<>``, ``mean<>`` and ``fractal<>`` use them too."""

from __future__ import annotations

import math

from .base import Op, OpError, Shape, fmt_shape


class Merge(Op):
    """Base of the merge ops: at least two inputs; a subclass gives the shape rule (:meth:`combine`) and
    the lowering."""

    def infer(self, a, inputs):
        if len(inputs) < 2:
            raise OpError(f"{self.name} needs at least two tensors, got {len(inputs)}")
        return self.combine(inputs), a

    def combine(self, inputs: list[Shape]) -> Shape:
        """The output shape of inputs (two or more); raises OpError."""
        raise NotImplementedError


class Elementwise(Merge):
    """An elementwise binary op folded over its inputs (``add``, ``mul``); a Cx1x1 input broadcasts over
    CxHxW."""

    def __init__(self, name: str, onnx_op: str, summary: str):
        self.name, self.onnx_op, self.summary, self.onnx_ops = name, onnx_op, summary, (onnx_op,)

    def combine(self, inputs):
        out = _broadcast(inputs)
        if out is None:
            raise OpError(f"{self.name} needs inputs of one shape (or Cx1x1 against CxHxW), got "
                          + ", ".join(fmt_shape(s) for s in inputs))
        return out

    def lower(self, b, node):
        ins = [b.input(node, i) for i in range(len(node.inputs))]
        acc = ins[0]
        for i, other in enumerate(ins[1:], start=1):
            last = i == len(ins) - 1
            acc = b.emit(self.onnx_op, [acc, other], out=None if last else b.tmp(node, f"partial{i}"))


class Concat(Merge):
    """Channel concatenation; every input has the same spatial size."""

    name = "concat"
    summary = "channel concatenation: concat(@a, @b, ...)"
    onnx_ops = ("Concat",)

    def combine(self, inputs):
        first = inputs[0]
        if any(len(s) != len(first) or s[1:] != first[1:] for s in inputs):
            raise OpError("concat needs the same spatial size on every input, got "
                          + ", ".join(fmt_shape(s) for s in inputs))
        return (sum(s[0] for s in inputs), *first[1:])

    def lower(self, b, node):
        b.emit("Concat", [b.input(node, i) for i in range(len(node.inputs))], axis=1)


class Mean(Merge):
    """Elementwise mean of inputs of one shape (no broadcasting: a join of equals).

    Lowered to ONNX ``Mean``, one node whatever the number of inputs: it exists at every opset netdsl emits,
    TensorRT's ONNX parser takes it, and ONNX Runtime's CPU kernel runs it as fast as the chain of n-1 ``Add`` and
    a ``Mul`` by 1/n, or faster (docs/language.md, section 12). Like every op but conv and fc it counts no MACs.
    """

    name = "mean"
    summary = "elementwise mean of tensors of one shape: mean(@a, @b, ...)"
    onnx_ops = ("Mean",)

    def combine(self, inputs):
        if any(s != inputs[0] for s in inputs):
            raise OpError("mean needs inputs of one shape, got " + ", ".join(fmt_shape(s) for s in inputs))
        return inputs[0]

    def lower(self, b, node):
        b.emit("Mean", [b.input(node, i) for i in range(len(node.inputs))])


def _broadcast(shapes: list[Shape]) -> Shape | None:
    out = max(shapes, key=lambda s: math.prod(s))
    for s in shapes:
        if len(s) != len(out) or any(d != o and d != 1 for d, o in zip(s, out, strict=True)):
            return None
    return out
