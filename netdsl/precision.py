"""Precision: turning a compiled fp32 ONNX model into an fp16 one (``netdsl compile --dtype fp16``).

Requires: a model from :func:`netdsl.lower.lower`. Guarantees: every float tensor (weights,
activations, inputs and outputs) is float16 — except Resize's ``scales`` (fp32 by the ONNX spec), the
ops listed in ``fp32_ops`` (computed in fp32 between Casts, e.g. Softmax), and, with
``keep_io_fp32``, the graph inputs and outputs, which stay fp32 with Casts at the boundary.
TensorRT 11 is strongly typed, so this pass is how netdsl makes an fp16 engine.

:func:`fp16_report` lists the weights whose values overflow (|x| > 65504) or underflow to zero
(0 < |x| < 2**-24) in fp16.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FP16_MAX = 65504.0
FP16_TINY = 2.0**-24  # smallest subnormal: anything smaller in magnitude becomes 0
FP32_INPUT_SLOTS = {("Resize", 2)}  # (op type, input index) that must stay float32


@dataclass(frozen=True)
class RangeIssue:
    weight: str
    overflow: int  # values beyond fp16's range (become inf)
    underflow: int  # non-zero values that become 0
    max_abs: float


def fp16_report(weights: Mapping[str, np.ndarray]) -> list[RangeIssue]:
    """Weights that do not survive the cast to float16, by name."""
    issues = []
    for name, w in weights.items():
        a = np.abs(np.asarray(w, dtype=np.float32))
        over = int((a > FP16_MAX).sum())
        under = int(((a > 0) & (a < FP16_TINY)).sum())
        if over or under:
            issues.append(RangeIssue(name, over, under, float(a.max())))
    return issues


def to_fp16(model: onnx.ModelProto, keep_io_fp32: bool = False, fp32_ops: tuple[str, ...] = ()) -> onnx.ModelProto:
    """A float16 copy of ``model`` (see the module docstring)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    keep32 = {node.input[i] for node in g.node for (op, i) in FP32_INPUT_SLOTS
              if node.op_type == op and len(node.input) > i}
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT and t.name not in keep32:
            arr = numpy_helper.to_array(t)
            with np.errstate(over="ignore"):
                t.CopyFrom(numpy_helper.from_array(arr.astype(np.float16), t.name))
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    new_nodes: list[onnx.NodeProto] = []
    for node in g.node:
        if node.op_type in fp32_ops:
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
        else:
            new_nodes.append(node)
    if keep_io_fp32:
        front, back = [], []
        renames = {}
        for vi in g.input:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
            renames[vi.name] = f"{vi.name}/fp16"
            front.append(helper.make_node("Cast", [vi.name], [renames[vi.name]], name=f"{vi.name}/cast_fp16",
                                          to=TensorProto.FLOAT16))
        out_names = {vi.name for vi in g.output}
        for node in new_nodes:
            for k, x in enumerate(node.input):
                if x in renames:
                    node.input[k] = renames[x]
            for k, y in enumerate(node.output):
                if y in out_names:
                    node.output[k] = f"{y}/fp16"
        for vi in g.output:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
            back.append(helper.make_node("Cast", [f"{vi.name}/fp16"], [vi.name], name=f"{vi.name}/cast_fp32",
                                         to=TensorProto.FLOAT))
        new_nodes = front + new_nodes + back
    g.ClearField("node")
    g.node.extend(new_nodes)
    props = {p.key: p.value for p in m.metadata_props}
    props["netdsl.dtype"] = "fp16" + ("+fp32-io" if keep_io_fp32 else "")
    del m.metadata_props[:]
    helper.set_model_props(m, props)
    return m
