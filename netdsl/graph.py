"""The checked graph: what shape inference produces and every later stage consumes.

A :class:`Graph` is a list of :class:`Node` in topological order. Tensor ``i`` is the
output of ``nodes[i]``; a node's ``inputs`` are tensor indices. Every node has a
fully inferred output shape (batch dimension excluded), its bound attributes,
the weights it owns, and the span and call chain of the source that made it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import Diagnostic, Span
from .ops import Attrs, Op, Shape, WeightSpec


class InputOp(Op):
    """Pseudo-op of a network input; not part of the language's layer table."""

    name = "input"
    summary = "a network input (batch dimension is dynamic)"


INPUT = InputOp()


@dataclass(frozen=True, slots=True)
class Node:
    name: str  # dotted path: layer1.0.conv1
    op: Op
    attrs: Attrs
    inputs: tuple[int, ...]
    in_shapes: tuple[Shape, ...]
    shape: Shape
    span: Span
    trace: tuple[str, ...] = ()  # "in block `bottleneck` called from f.net:14:5", innermost first
    weights: tuple[WeightSpec, ...] = ()

    @property
    def params(self) -> int:
        """Trainable parameter count (BN running statistics are buffers, not parameters)."""
        return sum(math.prod(w.shape) for w in self.weights if w.kind == "param")

    @property
    def location(self) -> str:
        return str(self.span)


@dataclass(frozen=True, slots=True)
class InputSpec:
    name: str
    shape: Shape
    node: int
    options: tuple[tuple[str, object], ...] = ()
    span: Span | None = None


@dataclass(frozen=True, slots=True)
class OutputSpec:
    name: str
    node: int
    span: Span | None = None


@dataclass
class Graph:
    """A checked network: every shape known, every name unique."""

    name: str
    nodes: list[Node]
    inputs: list[InputSpec]
    outputs: list[OutputSpec]
    source_hash: str = ""
    warnings: list[Diagnostic] = field(default_factory=list)

    def weight_specs(self) -> list[tuple[str, WeightSpec, Node]]:
        """Every weight tensor as (full name, spec, owning node), in graph order."""
        return [(f"{n.name}.{w.suffix}", w, n) for n in self.nodes for w in n.weights]

    @property
    def params(self) -> int:
        return sum(n.params for n in self.nodes)
