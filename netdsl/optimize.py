"""Stage 5 (optional): compile-time optimisation passes, ONNX model (with its weights) -> ONNX model.

These run after lowering, on request (``netdsl compile --fold-bn``, ``Network.to_onnx(fold_bn=True)``),
and work on any ONNX model, including one netdsl did not produce. Each pass returns a new model and
leaves its argument untouched.

What ONNX Runtime already does at session creation (constant folding, Conv+BatchNormalization and
Conv+activation fusion, the NCHWc layout at ``--opt-level all``) is not repeated here: a pass belongs
in this module when it makes the *file* better for every consumer: smaller, fewer nodes, faster to
load, and fast at any runtime optimisation level (see docs/runtime.md for the measurements).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .passes import Pass, PassResult, run_passes
from .precision import ToFp16

__all__ = ["FoldBatchNorm", "PassResult", "fold_batchnorm", "optimize", "standard_passes"]


def fold_batchnorm(model: onnx.ModelProto) -> PassResult:
    """Fold each inference BatchNormalization into the Conv that feeds it.

    Requires: a model whose Conv weights/biases and BatchNormalization parameters are initializers
    held in the model (not external data, not graph inputs).
    Folds a BatchNormalization only when its input is produced by a Conv whose output nothing else
    reads (no other node, not a graph output), with a constant weight (and bias, if any), and the
    BatchNormalization is in inference mode with a single output.
    Guarantees: with ``s = gamma / sqrt(var + eps)``, the Conv computes ``W * s`` (per output channel)
    plus bias ``(b - mean) * s + beta``, arithmetic done in float64 and rounded once to the weight's
    dtype; the Conv now writes the BatchNormalization's output tensor, so every consumer, graph output
    and tensor name downstream is unchanged; the Conv's former output tensor and its value_info are
    gone; the Conv node keeps its name and source location, and its ``doc_string`` gains a line naming
    the folded node. Initializers left unused are dropped; a weight shared with another node is never
    modified in place (the folded copy gets a new name). Node order stays topological.
    """
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    graph_inputs = {i.name for i in g.input}
    graph_outputs = {o.name for o in g.output}
    readers = Counter(name for node in g.node for name in node.input if name)

    def constant(name: str) -> np.ndarray | None:
        t = inits.get(name)
        if t is None or name in graph_inputs or t.data_location == onnx.TensorProto.EXTERNAL:
            return None
        return numpy_helper.to_array(t)

    folded: dict[int, onnx.NodeProto] = {}  # index of a Conv node -> its folded replacement
    dropped: set[int] = set()  # indices of folded BatchNormalization nodes
    new_inits: dict[str, list[onnx.TensorProto]] = {}  # placed where the Conv's weight was
    dead_values: set[str] = set()
    index = {out: i for i, node in enumerate(g.node) for out in node.output}
    taken = set(inits) | set(index) | graph_inputs

    def name_for(original: str, fallback: str) -> str:
        """The folded tensor replaces ``original`` when only this Conv reads it; otherwise a new name."""
        if original and readers[original] == 1:
            del inits[original]
            return original
        name = _unique(original + ".folded" if original else fallback, taken)
        taken.add(name)
        return name

    for i, bn in enumerate(g.node):
        if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx") or len(bn.output) != 1:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in bn.attribute}
        if attrs.get("training_mode", 0) or len(bn.input) != 5:
            continue
        c = index.get(bn.input[0])
        if c is None or c in folded:
            continue
        conv = g.node[c]
        y = conv.output[0]
        if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx") or readers[y] != 1 or y in graph_outputs:
            continue
        has_bias = len(conv.input) > 2 and bool(conv.input[2])
        gamma, beta, mean, var = (constant(n) for n in bn.input[1:5])
        w = constant(conv.input[1])
        b = constant(conv.input[2]) if has_bias else None
        if any(v is None for v in (gamma, beta, mean, var, w)) or (has_bias and b is None):
            continue
        eps = float(attrs.get("epsilon", 1e-5))
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        folded_w = (w.astype(np.float64) * scale.reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)
        bias = b.astype(np.float64) if b is not None else np.zeros(w.shape[0])
        folded_b = ((bias - mean.astype(np.float64)) * scale + beta.astype(np.float64)).astype(w.dtype)

        wn = conv.input[1]
        w_name = name_for(wn, "")
        fallback = wn[: -len(".weight")] + ".bias" if wn.endswith(".weight") else wn + "_bias"
        b_name = name_for(conv.input[2] if has_bias else "", fallback)
        new_inits.setdefault(wn, []).extend((numpy_helper.from_array(folded_w, w_name),
                                             numpy_helper.from_array(folded_b, b_name)))

        where = bn.doc_string.split("\n", 1)[0]
        doc = conv.doc_string + f"\nfolded in: {bn.name or bn.output[0]}" + (f" ({where})" if where else "")
        node = helper.make_node("Conv", [conv.input[0], w_name, b_name], [bn.output[0]], name=conv.name,
                                doc_string=doc)
        node.attribute.extend(conv.attribute)
        folded[c] = node
        dropped.add(i)
        dead_values.add(y)

    if not folded:
        return PassResult(model, 0)
    nodes = [folded.get(i, node) for i, node in enumerate(g.node) if i not in dropped]
    used = {name for node in nodes for name in node.input} | graph_outputs
    initializers = []
    for t in g.initializer:
        if t.name in inits and t.name in used:
            initializers.append(t)
        initializers += new_inits.pop(t.name, [])
    original_inits = {t.name for t in g.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.ClearField("node")
    out.graph.node.extend(nodes)
    out.graph.ClearField("initializer")
    out.graph.initializer.extend(initializers)
    out.graph.ClearField("value_info")
    out.graph.value_info.extend(v for v in g.value_info if v.name not in dead_values)
    # An initializer also listed as a graph input (IR < 4 style) goes with it when unused.
    out.graph.ClearField("input")
    out.graph.input.extend(i for i in g.input if i.name not in original_inits or i.name in used)
    return PassResult(out, len(folded))


@dataclass(frozen=True)
class FoldBatchNorm:
    """The :func:`fold_batchnorm` pass (requires and ensures what that function says)."""

    name = "fold-bn"

    def __call__(self, model: onnx.ModelProto) -> PassResult:
        return fold_batchnorm(model)


def standard_passes(*, fold_bn: bool = False, fp16: bool = False, keep_io_fp32: bool = False) -> tuple[Pass, ...]:
    """The passes asked for, in pipeline order: fold-bn (in fp32), then fp16."""
    passes: list[Pass] = []
    if fold_bn:
        passes.append(FoldBatchNorm())
    if fp16:
        passes.append(ToFp16(keep_io_fp32=keep_io_fp32))
    return tuple(passes)


def optimize(model: onnx.ModelProto, *, fold_bn: bool = False, fp16: bool = False,
             keep_io_fp32: bool = False) -> onnx.ModelProto:
    """Run the passes asked for, in pipeline order (:func:`standard_passes`); with none, return ``model`` itself."""
    return run_passes(model, standard_passes(fold_bn=fold_bn, fp16=fp16, keep_io_fp32=keep_io_fp32)).model


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    i = 1
    while f"{name}{i}" in taken:
        i += 1
    return f"{name}{i}"
