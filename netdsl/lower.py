"""Stage 4: checked graph -> ONNX model.

Requires: a checked :class:`~netdsl.graph.Graph` and a value (or the deterministic initialisation) for
every weight it names.
Guarantees: an ONNX ``ModelProto`` that passes ``onnx.checker.check_model(full_check=True)``, with
one ONNX node (or a short run of nodes) per netdsl layer, named by the layer's dotted path, whose
``doc_string`` is the ``path:line:col`` of the source that produced it; value_info for every
intermediate tensor, with a symbolic batch dimension; and netdsl metadata.

This is the only module that builds ONNX protobufs; each op's lowering lives with the op in
:mod:`netdsl.ops` and talks to the :class:`OnnxBuilder` below. Initializers and their values come from
:mod:`netdsl.weights`.

Lowering produces a :class:`LoweredModel`: the model in three parts around its initializers, and the
initializers, whose values are computed only when needed. :meth:`LoweredModel.to_proto` builds the
whole ``ModelProto``; :meth:`LoweredModel.write` streams exactly the bytes that
``to_proto().SerializeToString()`` returns, computing the weights on worker threads while it writes and
holding only a few at a time, so ``netdsl compile`` never keeps a second copy of every weight, nor a
serialized copy of the model, in memory.

onnx and numpy are imported on first use, not with this module: ``netdsl check`` imports it for
:data:`DEFAULT_OPSET` and must stay fast.
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from .graph import INPUT, Graph, Node
from .ops import Shape, weight_name
from .weights import Initializer, computed, initial_value

if TYPE_CHECKING:
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

BATCH = "batch"
DEFAULT_OPSET = 17
MIN_OPSET = 13


class _Deferred:
    """A module imported on first attribute access (its attributes are then copied here, so later
    lookups cost what a module's do)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        self.__dict__.update(vars(importlib.import_module(self._name)))
        return self.__dict__[attr] if attr in self.__dict__ else object.__getattribute__(self, attr)


if not TYPE_CHECKING:
    np, onnx = _Deferred("numpy"), _Deferred("onnx")
    helper, numpy_helper = _Deferred("onnx.helper"), _Deferred("onnx.numpy_helper")


def max_opset() -> int:
    """The newest default-domain opset the installed onnx package supports."""
    return onnx.defs.onnx_opset_version()


# ----------------------------------------------------------------------------- builder
class OnnxBuilder:
    """Collects ONNX nodes, initializers and value_info while layers lower themselves (it is the
    :class:`netdsl.ops.Lowering` every op's ``lower`` is written against).

    ``weights`` maps weight names to arrays; ``None`` means the deterministic initialisation from
    ``seed`` (:mod:`netdsl.weights`), computed only when the model is written or built.

    Nodes go straight into ``front`` (the graph's fields before its initializers: node, name) and
    value_info into ``back`` (the fields after them: input, output, value_info), so nothing is copied
    later. Attributes and tensor types repeat a lot in a CNN, so each distinct one is built once.
    """

    def __init__(self, graph: Graph, opset: int, weights: Mapping[str, np.ndarray] | None, seed: int = 0):
        self.graph, self.opset, self.weights, self.seed = graph, opset, weights, seed
        self.front = onnx.GraphProto()
        self.back = onnx.GraphProto()
        self.initializers: list[Initializer] = []
        self._consts: dict[str, str] = {}
        self._added: set[str] = set()
        self._attributes: dict[tuple[str, str, str], onnx.AttributeProto] = {}
        self._types: dict[Shape, onnx.TypeProto] = {}
        # ONNX tensor name of each graph tensor: the layer's path, unless a weight already has that name
        # (a weight with an empty suffix, such as layer_scale's, is named by the path itself)
        self.names = [n.name + "/out" if any(not w.suffix for w in n.weights) else n.name for n in graph.nodes]
        self._node: Node | None = None
        self._output = ""
        self._emitted = 0
        self.namespaces = node_metadata(opset)

    # -- used by op lowerings
    def input(self, node: Node, i: int) -> str:
        return self.names[node.inputs[i]]

    def weight(self, node: Node, suffix: str) -> str:
        name = weight_name(node.name, suffix)
        if name not in self._added:
            self._added.add(name)
            if self.weights is not None:
                self.initializers.append(Initializer.of(name, self.weights[name]))
            else:
                for spec in node.weights:
                    if spec.suffix == suffix:
                        break
                else:
                    raise KeyError(name)
                self.initializers.append(Initializer(name, spec.shape, _float32(),
                                                     functools.partial(initial_value, name, spec, self.seed),
                                                     costly=spec.init not in ("zeros", "ones")))
        return name

    def const(self, key: str, value, dtype: str | None = None) -> str:
        """A shared constant initializer (scalars such as relu6's bounds, reshape targets):
        ``np.asarray(value, dtype)``, e.g. ``b.const("six", 6.0, "float32")``."""
        name = self._consts.get(key)
        if name is None:
            name = self._consts[key] = f"const.{key}"
            self.initializers.append(Initializer.of(name, np.asarray(value, dtype)))
        return name

    def tmp(self, node: Node, suffix: str, shape: Shape | None = None) -> str:
        """An intermediate tensor inside one layer's lowering, with its value_info."""
        name = f"{node.name}/{suffix}"
        self.value_info(name, node.shape if shape is None else shape)
        return name

    def emit(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        """Add one ONNX node for the layer being lowered; without ``out`` it writes the layer's output."""
        node = self._node
        assert node is not None
        output = self._output if out is None else out
        name = node.name if out is None else f"{node.name}/{op_type}_{self._emitted}"
        self._emitted += 1
        doc = node.location + "".join(f"\n{t}" for t in node.trace)
        self.add_node(op_type, inputs, output, name, doc, attrs)
        if self.namespaces and "." in node.name:  # the block path, so that viewers group a block's nodes
            self.front.node[-1].metadata_props.add(key="namespace", value=node.name.rsplit(".", 1)[0].replace(".", "/"))
        return output

    # -- protobuf building (what onnx.helper.make_node / make_tensor_value_info do, without copies)
    def add_node(self, op_type: str, inputs: list[str], output: str, name: str, doc: str = "",
                 attrs: Mapping[str, object] | None = None) -> None:
        n = self.front.node.add()
        n.op_type = op_type
        n.input.extend(inputs)
        n.output.append(output)
        if name:
            n.name = name
        if doc:
            n.doc_string = doc
        if attrs:
            n.attribute.extend(self._attribute(k, v) for k, v in sorted(attrs.items()) if v is not None)

    def value_info(self, name: str, shape: Shape, field: str = "value_info") -> None:
        """Declare a float tensor ``[batch, *shape]`` in the graph's ``value_info``, ``input`` or ``output``."""
        vi = getattr(self.back, field).add()
        vi.name = name
        t = self._types.get(shape)
        if t is None:
            t = self._types[shape] = helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, [BATCH, *shape])
        vi.type.CopyFrom(t)

    def _attribute(self, key: str, value: object) -> onnx.AttributeProto:
        k = (key, type(value).__name__, repr(value))
        attr = self._attributes.get(k)
        if attr is None:
            attr = self._attributes[k] = helper.make_attribute(key, value)
        return attr


@functools.cache
def node_metadata(opset: int) -> bool:
    """Whether a model of ``opset`` can carry node metadata (``NodeProto.metadata_props``, ONNX IR version 10)."""
    if "metadata_props" not in onnx.NodeProto.DESCRIPTOR.fields_by_name:
        return False  # an onnx package older than 1.16
    return helper.find_min_ir_version_for([helper.make_opsetid("", opset)]) >= 10


def _float32() -> np.dtype:
    return np.dtype(np.float32)


# ----------------------------------------------------------------------------- lowering
def lower(graph: Graph, weights: Mapping[str, np.ndarray], opset: int = DEFAULT_OPSET,
          metadata: Mapping[str, str] | None = None, version: str = "") -> onnx.ModelProto:
    """Build the ONNX model of a checked graph. ``weights`` maps every weight name to its array."""
    return lower_model(graph, opset, weights=weights, metadata=metadata, version=version).to_proto()


def lower_model(graph: Graph, opset: int = DEFAULT_OPSET, *, weights: Mapping[str, np.ndarray] | None = None,
                seed: int = 0, metadata: Mapping[str, str] | None = None, version: str = "") -> LoweredModel:
    """Lower a checked graph, leaving initializer values to be computed when the model is written or built.

    ``weights`` maps every weight name to its array; without it every weight takes its deterministic
    initial value from ``seed`` (:func:`netdsl.weights.initial_value`).
    """
    if weights is None and seed < 0:
        raise ValueError("seed must be non-negative")
    b = OnnxBuilder(graph, opset, weights, seed)
    b.front.name = graph.name
    output_of = {o.node: o for o in graph.outputs}
    # Graph outputs take their declared names directly, so no extra Identity nodes are needed,
    # except when a tensor is an input or is output twice.
    renamed: dict[int, str] = {}
    for o in graph.outputs:
        if o.node not in renamed and graph.nodes[o.node].op is not INPUT:
            renamed[o.node] = o.name
    for idx, name in renamed.items():
        b.names[idx] = name
    for i in graph.inputs:
        b.value_info(i.name, i.shape, "input")
    for i, node in enumerate(graph.nodes):
        if node.op is INPUT:
            continue
        b._node, b._output, b._emitted = node, b.names[i], 0
        node.op.lower(b, node)
        if i not in output_of:
            b.value_info(b.names[i], node.shape)
    for o in graph.outputs:
        if b.names[o.node] != o.name:  # an input or an already-named tensor: copy it
            b.add_node("Identity", [b.names[o.node]], o.name, f"output.{o.name}")
        b.value_info(o.name, graph.nodes[o.node].shape, "output")
    opsets = [helper.make_opsetid("", opset)]
    head = helper.make_model(onnx.GraphProto(), opset_imports=opsets, producer_name="netdsl",
                             producer_version=version, ir_version=helper.find_min_ir_version_for(opsets))
    head.ClearField("graph")
    meta = {"netdsl.version": version, "netdsl.network": graph.name, "netdsl.source_sha256": graph.source_hash,
            "netdsl.inputs": json.dumps([{"name": i.name, "shape": list(i.shape), **dict(i.options)}
                                         for i in graph.inputs], sort_keys=True)}
    meta.update(metadata or {})
    helper.set_model_props(head, meta)
    return LoweredModel(head, b.front, b.back, tuple(b.initializers))


# ----------------------------------------------------------------------------- the lowered model
@dataclass(frozen=True)
class LoweredModel:
    """An ONNX model whose initializer values are computed on demand.

    ``head`` is the model without its graph; ``graph_front`` holds the graph's fields numbered below
    ``initializer`` (node, name) and ``graph_back`` those above it (input, output, value_info);
    ``initializers`` are the graph's initializers, in order. Protobuf writes a message's fields in
    field-number order and a repeated field as the concatenation of its elements, so the serialized
    model is: the head's fields before ``graph``, the graph's key and length, ``graph_front``, each
    initializer, ``graph_back``, and the head's fields after ``graph``. :meth:`write` emits exactly that.
    """

    head: onnx.ModelProto
    graph_front: onnx.GraphProto
    graph_back: onnx.GraphProto
    initializers: tuple[Initializer, ...]

    def initializer_bytes(self) -> int:
        """Bytes of initializer data (what external data would hold)."""
        return sum(i.nbytes for i in self.initializers)

    def to_proto(self, workers: int | None = None) -> onnx.ModelProto:
        """The whole model, every initializer in it."""
        return self.assemble(self.tensors(workers))

    def serialized_size(self) -> int:
        """Length of :meth:`write`'s output, known without computing any weight."""
        return self._layout.size

    def write(self, f: BinaryIO, workers: int | None = None) -> int:
        """Stream the serialized model to ``f``; returns the bytes written."""
        layout = self._layout
        f.write(layout.head)
        for (init, value), prefix in zip(computed(self.initializers, workers), layout.prefixes, strict=True):
            if isinstance(prefix, bytes):  # header, then the raw bytes straight from the array
                data = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
                if data.nbytes < 65536:  # one call for small tensors (bn statistics, biases)
                    f.write(prefix + data.tobytes())
                else:
                    f.write(prefix)
                    f.write(data)
            else:  # a dtype the fast path does not cover: let onnx encode it
                encoded = numpy_helper.from_array(value, init.name).SerializeToString()
                f.write(_key(_INITIALIZER) + _varint(len(encoded)) + encoded)
        f.write(layout.tail)
        return layout.size

    def tensors(self, workers: int | None = None) -> Iterator[onnx.TensorProto]:
        """Each initializer as a ``TensorProto``, computed as it is consumed (external data is written from
        these by :func:`netdsl.files.save_model`)."""
        return (numpy_helper.from_array(value, init.name) for init, value in computed(self.initializers, workers))

    def assemble(self, tensors: Iterable[onnx.TensorProto]) -> onnx.ModelProto:
        """The model with ``tensors`` as its initializers."""
        model = onnx.ModelProto()
        model.CopyFrom(self.head)
        model.graph.MergeFrom(self.graph_front)
        model.graph.initializer.extend(tensors)
        model.graph.MergeFrom(self.graph_back)
        return model

    @functools.cached_property
    def _layout(self) -> _Layout:
        head_lo, head_hi = _split(self.head, _GRAPH)
        front, back = self.graph_front.SerializeToString(), self.graph_back.SerializeToString()
        prefixes = tuple(_tensor_prefix(i) for i in self.initializers)
        inits = sum(len(p) + i.nbytes if isinstance(p, bytes) else len(_key(_INITIALIZER)) + len(_varint(p)) + p
                    for i, p in zip(self.initializers, prefixes, strict=True))
        graph_length = len(front) + inits + len(back)
        head = head_lo + _key(_GRAPH) + _varint(graph_length) + front
        tail = back + head_hi
        return _Layout(head, prefixes, tail, len(head) + inits + len(tail))


@dataclass(frozen=True, slots=True)
class _Layout:
    """A serialized model around its initializers: ``head`` (up to the first initializer), each
    initializer's prefix (or, for dtypes onnx encodes itself, its encoded length), and ``tail``."""

    head: bytes
    prefixes: tuple[bytes | int, ...]
    tail: bytes
    size: int


_GRAPH = 7  # ModelProto.graph
_INITIALIZER = 5  # GraphProto.initializer
_NAME = 8  # TensorProto.name
_RAW_DATA = 9  # TensorProto.raw_data


def _key(field: int) -> bytes:
    return _varint(field << 3 | 2)  # wire type 2: length-delimited


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _split(message, number: int) -> tuple[bytes, bytes]:
    """The serialization of ``message``'s fields numbered below ``number``, and of those above it."""
    lo, hi = type(message)(), type(message)()
    lo.CopyFrom(message)
    hi.CopyFrom(message)
    for fd, _ in message.ListFields():
        if fd.number >= number:
            lo.ClearField(fd.name)
        if fd.number <= number:
            hi.ClearField(fd.name)
    return lo.SerializeToString(), hi.SerializeToString()


def _tensor_prefix(init: Initializer) -> bytes | int:
    """For plain little-endian number arrays: the initializer's bytes up to its raw data (graph key and
    length, dims, data_type, name, raw_data key and length), as ``numpy_helper.from_array`` would encode
    them. For other dtypes: the length of onnx's own encoding (computed now)."""
    header = _dims_and_type(init.shape, init.dtype)
    if header is None:
        return len(numpy_helper.from_array(init.compute(), init.name).SerializeToString())
    name = init.name.encode("utf-8")
    nbytes = init.nbytes
    head = header + (_key(_NAME) + _varint(len(name)) + name if name else b"") + _key(_RAW_DATA) + _varint(nbytes)
    return _key(_INITIALIZER) + _varint(len(head) + nbytes) + head


@functools.lru_cache(maxsize=4096)
def _dims_and_type(shape: tuple[int, ...], dtype: np.dtype) -> bytes | None:
    """A TensorProto's ``dims`` and ``data_type`` fields (1 and 2; ``name`` is 8 and ``raw_data`` 9, so
    they follow), or None for dtypes other than plain little-endian numbers."""
    if not (dtype.isbuiltin and dtype.kind in "biufc" and (dtype.itemsize == 1 or dtype == dtype.newbyteorder("<"))):
        return None
    header = onnx.TensorProto()
    header.dims.extend(shape)
    header.data_type = helper.np_dtype_to_tensor_dtype(dtype)
    return header.SerializeToString()
