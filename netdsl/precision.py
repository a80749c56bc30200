"""Precision: turning a compiled fp32 ONNX model into an fp16 one (``netdsl compile --dtype fp16``).

Requires: an ONNX model whose floating-point tensors are float32 (netdsl's own, or one exported by a
framework). Guarantees: every float32 tensor (initializers, Constant values, Cast targets, activations,
inputs and outputs) becomes float16 — except inputs that ONNX requires to be float32 (Resize's
``scales``), the ops listed in ``fp32_ops`` and :data:`FP32_OPS` (computed in fp32 between Casts, e.g.
Softmax), and, with
``keep_io_fp32``, the graph inputs and outputs, which stay fp32 with Casts at the boundary (tensor
names unchanged). TensorRT 11 is strongly typed, so this pass is how netdsl makes an fp16 engine.

:func:`fp16_report` lists the weights whose values overflow (|x| > 65504, they become inf) or, in a
significant share, underflow to zero (0 < |x| < 2**-24) in fp16.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .passes import PassResult

FP16_MAX = 65504.0
FP16_TINY = 2.0**-24  # smallest subnormal: anything smaller in magnitude becomes 0
FP32_INPUT_SLOTS = {("Resize", 2), ("Upsample", 1)}  # (op type, input index) that must stay float32
# Ops always computed in fp32 between Casts. InstanceNormalization (instancenorm, and groupnorm and layernorm
# below the opsets of their own ONNX ops) computes a mean and a variance in its input's type, and the squares
# of fp16 values overflow beyond 256; LayerNormalization and GroupNormalization (opset 21) keep their
# statistics in fp32 by definition (``stash_type``), so they run in fp16.
FP32_OPS = ("InstanceNormalization",)
# A few values below 2**-24 in millions of trained or He-initialised weights (the tail of a normal
# distribution) change nothing; a tensor that loses more than this share of its non-zero values does.
UNDERFLOW_SHARE = 1e-3


@dataclass(frozen=True)
class RangeIssue:
    weight: str
    overflow: int  # values beyond fp16's range (become inf)
    underflow: int  # non-zero values that become 0
    nonzero: int  # non-zero values in the tensor
    max_abs: float


def fp16_report(weights: Mapping[str, np.ndarray]) -> list[RangeIssue]:
    """Weights that do not survive the cast to float16, by name, in the given order.

    A weight is reported when any value overflows, or when more than ``UNDERFLOW_SHARE`` of its
    non-zero values underflow to zero.
    """
    issues = []
    for name, w in weights.items():
        a = np.abs(np.asarray(w, dtype=np.float32))
        if a.size == 0:
            continue
        over = int((a > FP16_MAX).sum())
        nonzero = int(np.count_nonzero(a))
        under = int(((a > 0) & (a < FP16_TINY)).sum())
        if over or under > UNDERFLOW_SHARE * nonzero:
            issues.append(RangeIssue(name, over, under, nonzero, float(a.max())))
    return issues


@dataclass(frozen=True)
class ToFp16:
    """The fp16 pass: :func:`to_fp16` as a :class:`~netdsl.passes.Pass` (requires and ensures what the module
    docstring says); ``changed`` counts the float32 initializers made float16 (at least 1: the model's
    precision always changes)."""

    keep_io_fp32: bool = False
    fp32_ops: tuple[str, ...] = ()
    name = "fp16"

    def __call__(self, model: onnx.ModelProto) -> PassResult:
        out = to_fp16(model, keep_io_fp32=self.keep_io_fp32, fp32_ops=self.fp32_ops)
        before = {t.name: t.data_type for t in model.graph.initializer}
        return PassResult(out, max(1, sum(before.get(t.name) != t.data_type for t in out.graph.initializer)))


def to_fp16(model: onnx.ModelProto, keep_io_fp32: bool = False, fp32_ops: tuple[str, ...] = ()) -> onnx.ModelProto:
    """A float16 copy of ``model`` (see the module docstring); :class:`ToFp16` is the same as a pass."""
    m = _copy_without_initializers(model)
    g = m.graph
    keep32 = {node.input[i] for node in g.node for (op, i) in FP32_INPUT_SLOTS
              if node.op_type == op and len(node.input) > i}
    g.initializer.extend(_half(t) if t.data_type == TensorProto.FLOAT and t.name not in keep32 else t
                         for t in model.graph.initializer)
    io32 = {vi.name for vi in (*g.input, *g.output) if vi.type.tensor_type.elem_type == TensorProto.FLOAT}
    for vi in (*g.value_info, *g.input, *g.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT and vi.name not in keep32:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    new_nodes: list[onnx.NodeProto] = []
    fp32 = set(fp32_ops) | set(FP32_OPS)
    for node in g.node:
        _retype_node(node, keep32)
        if node.op_type not in fp32:
            new_nodes.append(node)
            continue
        ins = []
        for k, x in enumerate(node.input):
            cast = f"{x}/to_fp32_{node.name}_{k}"
            new_nodes.append(helper.make_node("Cast", [x], [cast], name=f"{node.name}/cast_in{k}",
                                              to=TensorProto.FLOAT))
            ins.append(cast)
        outs = [f"{y}/fp32" for y in node.output]
        node.ClearField("input")
        node.input.extend(ins)
        original = list(node.output)
        node.ClearField("output")
        node.output.extend(outs)
        new_nodes.append(node)
        for y, y32 in zip(original, outs, strict=True):
            new_nodes.append(helper.make_node("Cast", [y32], [y], name=f"{node.name}/cast_out",
                                              to=TensorProto.FLOAT16))
    if keep_io_fp32 and io32:
        new_nodes = _fp32_boundary(g, new_nodes, io32)
    g.ClearField("node")
    g.node.extend(new_nodes)
    props = {p.key: p.value for p in m.metadata_props}
    props["netdsl.dtype"] = "fp16" + ("+fp32-io" if keep_io_fp32 else "")
    del m.metadata_props[:]
    helper.set_model_props(m, props)
    return m


def _copy_without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose graph has no initializers (copying fp32 weights only to replace them is slow)."""
    m = onnx.ModelProto()
    _copy_fields(model, m, skip="graph")
    _copy_fields(model.graph, m.graph, skip="initializer")
    return m


def _copy_fields(src, dst, skip: str) -> None:
    for field, value in src.ListFields():
        if field.name == skip:
            continue
        if hasattr(value, "extend"):  # a repeated field
            getattr(dst, field.name).extend(value)
        elif hasattr(value, "CopyFrom"):  # a message
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def _half(t: onnx.TensorProto) -> onnx.TensorProto:
    with np.errstate(over="ignore"):  # fp16_report names the weights that overflow
        if t.HasField("raw_data") and t.data_location != TensorProto.EXTERNAL:  # the fast path: no extra copies
            half = onnx.TensorProto(name=t.name, dims=t.dims, data_type=TensorProto.FLOAT16)
            half.raw_data = np.frombuffer(t.raw_data, dtype="<f4").astype("<f2").tobytes()
            return half
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name)


def _retype_node(node: onnx.NodeProto, keep32: set[str]) -> None:
    """float32 produced inside the graph (Constant values, Cast and ConstantOfShape targets) made float16."""
    if node.output and node.output[0] in keep32:
        return
    for attr in node.attribute:
        if node.op_type in ("Constant", "ConstantOfShape") and attr.name == "value" and \
                attr.t.data_type == TensorProto.FLOAT:
            attr.t.CopyFrom(_half(attr.t))
        elif node.op_type in ("Cast", "CastLike") and attr.name == "to" and attr.i == TensorProto.FLOAT:
            attr.i = TensorProto.FLOAT16


def _fp32_boundary(g: onnx.GraphProto, nodes: list[onnx.NodeProto], io32: set[str]) -> list[onnx.NodeProto]:
    """Keep the float inputs and outputs named ``io32`` float32: inside the graph each such tensor is renamed
    ``<name>/fp16`` (also where an output is consumed by later nodes), with a Cast at the boundary."""
    inner = {name: f"{name}/fp16" for name in io32}
    for node in nodes:
        for k, x in enumerate(node.input):
            if x in inner:
                node.input[k] = inner[x]
        for k, y in enumerate(node.output):
            if y in inner:
                node.output[k] = inner[y]
    for vi in g.value_info:
        if vi.name in inner:
            vi.name = inner[vi.name]
    front, back = [], []
    for vi in g.input:
        if vi.name in inner:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
            front.append(helper.make_node("Cast", [vi.name], [inner[vi.name]], name=f"{vi.name}/cast_fp16",
                                          to=TensorProto.FLOAT16))
    inputs = {vi.name for vi in g.input}
    for vi in g.output:
        if vi.name in inner and vi.name not in inputs:  # an input passed straight through stays as it is
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
            back.append(helper.make_node("Cast", [inner[vi.name]], [vi.name], name=f"{vi.name}/cast_fp32",
                                         to=TensorProto.FLOAT))
    return front + nodes + back
