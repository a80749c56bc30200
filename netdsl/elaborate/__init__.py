"""Stage 2: syntax tree -> checked graph (semantic expansion and shape inference).

Requires: parsed modules (imports resolved by :mod:`netdsl.loader`).
Guarantees: a :class:`~netdsl.graph.Graph` whose every node has a known output shape and a unique
dotted name, or a :class:`~netdsl.errors.SemanticError` listing every independent error found.

Expansion and shape inference are one walk because the language needs shapes to expand:
a ``residual<...>`` whose body changes the shape gets a projection shortcut, and conv/fc infer
their input sizes. A layer whose inputs are unknown (because of an earlier error) is skipped
silently, so one mistake is reported once rather than cascading.

The package, by job: :mod:`.limits` (runaway limits), :mod:`.expressions` (evaluation),
:mod:`.scopes` (scopes and naming), :mod:`.arguments` (layer and block-call arguments), :mod:`.composites`
(the composite table) and :mod:`.elaborator` (this walk: statements, elements, layers, calls).
"""

from __future__ import annotations

from .elaborator import Elaborator
from .limits import MAX_CALL_DEPTH, MAX_INT, MAX_NODES, MAX_PARAMS, MAX_REPEAT, MAX_TENSOR_ELEMENTS

__all__ = ["MAX_CALL_DEPTH", "MAX_INT", "MAX_NODES", "MAX_PARAMS", "MAX_REPEAT", "MAX_TENSOR_ELEMENTS", "Elaborator"]
