"""Stage 4: checked graph -> ONNX model.

Requires: a checked :class:`~netdsl.graph.Graph` and a value for every weight it names.
Guarantees: an ONNX ``ModelProto`` that passes ``onnx.checker.check_model(full_check=True)``, with
one ONNX node (or a short run of nodes) per netdsl layer, named by the layer's dotted path, whose
``doc_string`` is the ``path:line:col`` of the source that produced it; value_info for every
intermediate tensor, with a symbolic batch dimension; and netdsl metadata.

This is the only module that builds ONNX protobufs; each op's lowering lives with the op in
:mod:`netdsl.ops` and talks to the :class:`OnnxBuilder` below.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .graph import INPUT, Graph, Node
from .ops import Shape

BATCH = "batch"
DEFAULT_OPSET = 17
MIN_OPSET = 13


def max_opset() -> int:
    """The newest default-domain opset the installed onnx package supports."""
    return onnx.defs.onnx_opset_version()


class OnnxBuilder:
    """Collects ONNX nodes, initializers and value_info while layers lower themselves."""

    def __init__(self, graph: Graph, opset: int, weights: Mapping[str, np.ndarray]):
        self.graph, self.opset, self.weights = graph, opset, weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.value_info: list[onnx.ValueInfoProto] = []
        self._consts: dict[str, str] = {}
        self._added: set[str] = set()
        self.names = [n.name for n in graph.nodes]  # ONNX tensor name of each graph tensor
        self._node: Node | None = None
        self._output = ""
        self._emitted = 0

    # -- used by op lowerings
    def input(self, node: Node, i: int) -> str:
        return self.names[node.inputs[i]]

    def weight(self, node: Node, suffix: str) -> str:
        name = f"{node.name}.{suffix}"
        if name not in self._added:
            self._added.add(name)
            self.initializers.append(numpy_helper.from_array(np.asarray(self.weights[name]), name))
        return name

    def const(self, key: str, array: np.ndarray) -> str:
        """A shared constant initializer (scalars such as relu6's bounds, reshape targets)."""
        name = self._consts.get(key)
        if name is None:
            name = self._consts[key] = f"const.{key}"
            self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def tmp(self, node: Node, suffix: str, shape: Shape | None = None) -> str:
        """An intermediate tensor inside one layer's lowering, with its value_info."""
        name = f"{node.name}/{suffix}"
        self.value_info.append(_value_info(name, node.shape if shape is None else shape))
        return name

    def emit(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        """Add one ONNX node for the layer being lowered; without ``out`` it writes the layer's output."""
        node = self._node
        assert node is not None
        output = self._output if out is None else out
        name = node.name if out is None else f"{node.name}/{op_type}_{self._emitted}"
        self._emitted += 1
        doc = node.location + "".join(f"\n{t}" for t in node.trace)
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=name, doc_string=doc, **attrs))
        return output


def lower(graph: Graph, weights: Mapping[str, np.ndarray], opset: int = DEFAULT_OPSET,
          metadata: Mapping[str, str] | None = None, version: str = "") -> onnx.ModelProto:
    """Build the ONNX model of a checked graph. ``weights`` maps every weight name to its array."""
    b = OnnxBuilder(graph, opset, weights)
    output_of = {o.node: o for o in graph.outputs}
    # Graph outputs take their declared names directly, so no extra Identity nodes are needed,
    # except when a tensor is an input or is output twice.
    renamed: dict[int, str] = {}
    for o in graph.outputs:
        if o.node not in renamed and graph.nodes[o.node].op is not INPUT:
            renamed[o.node] = o.name
    for idx, name in renamed.items():
        b.names[idx] = name
    for i, node in enumerate(graph.nodes):
        if node.op is INPUT:
            continue
        b._node, b._output, b._emitted = node, b.names[i], 0
        node.op.lower(b, node)
        if i not in output_of:
            b.value_info.append(_value_info(b.names[i], node.shape))
    outputs = []
    for o in graph.outputs:
        if b.names[o.node] != o.name:  # an input or an already-named tensor: copy it
            b.nodes.append(helper.make_node("Identity", [b.names[o.node]], [o.name], name=f"output.{o.name}"))
        outputs.append(_value_info(o.name, graph.nodes[o.node].shape))
    inputs = [_value_info(i.name, i.shape) for i in graph.inputs]
    g = helper.make_graph(b.nodes, graph.name, inputs, outputs, b.initializers, value_info=b.value_info)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(g, opset_imports=opsets, producer_name="netdsl", producer_version=version,
                              ir_version=helper.find_min_ir_version_for(opsets))
    meta = {"netdsl.version": version, "netdsl.network": graph.name, "netdsl.source_sha256": graph.source_hash,
            "netdsl.inputs": json.dumps([{"name": i.name, "shape": list(i.shape), **dict(i.options)}
                                         for i in graph.inputs], sort_keys=True)}
    meta.update(metadata or {})
    helper.set_model_props(model, meta)
    return model


def _value_info(name: str, shape: Shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH, *shape])
