"""The checked graph: what shape inference produces and every later stage consumes.

A :class:`Graph` is a list of :class:`Node` in topological order. Tensor ``i`` is the
output of ``nodes[i]``; a node's ``inputs`` are tensor indices. Every node has a
fully inferred output shape (batch dimension excluded), its bound attributes,
the weights it owns, and the span and call chain of the source that made it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import Diagnostic, Span
from .ops import Attrs, Op, Shape, WeightSpec, weight_name


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


@dataclass(frozen=True, slots=True)
class Graph:
    """A checked network: every shape known, every name unique. Immutable once built.

    ``source_hash`` is the sha256 of the program's text (every file, in load order), as the lowered
    model's metadata records it; empty for a graph not built from source.
    """

    name: str
    nodes: tuple[Node, ...]
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    source_hash: str = ""
    warnings: tuple[Diagnostic, ...] = ()

    def __post_init__(self) -> None:
        for f in ("nodes", "inputs", "outputs", "warnings"):
            object.__setattr__(self, f, tuple(getattr(self, f)))

    def weight_specs(self) -> list[tuple[str, WeightSpec, Node]]:
        """Every weight tensor as (full name, spec, owning node), in graph order."""
        return [(weight_name(n.name, w.suffix), w, n) for n in self.nodes for w in n.weights]

    @property
    def params(self) -> int:
        return sum(n.params for n in self.nodes)
