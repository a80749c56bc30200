"""The pass interface: every rewrite of a compiled ONNX model (fold-bn, fp16, ...) has the same shape.

A pass is a callable with a ``name`` that takes an ``onnx.ModelProto`` and returns a :class:`PassResult`;
its docstring says what it *requires* of the model and what it *ensures* (as onnx-ir's passes do). A pass
never modifies the model it is given. :func:`run_passes` is the one place that chains them: the CLI, the
``netdsl compare`` variants, :meth:`netdsl.Network.to_onnx` and :func:`netdsl.optimize.optimize` all go
through it, so a new pass (int8, ...) is one class and one line in :func:`netdsl.optimize.standard_passes`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # onnx is imported by the passes themselves: `netdsl check` never needs it
    import onnx


@dataclass(frozen=True)
class PassResult:
    """The rewritten model and how many rewrites the pass made (0: ``model`` is the input, unchanged)."""

    model: onnx.ModelProto
    changed: int


@runtime_checkable
class Pass(Protocol):
    """A model-to-model rewrite: ``name`` (as the CLI spells it, e.g. ``fold-bn``) and ``__call__``."""

    name: str

    def __call__(self, model: onnx.ModelProto) -> PassResult: ...


def run_passes(model: onnx.ModelProto, passes: Iterable[Pass]) -> PassResult:
    """Apply ``passes`` in order; ``changed`` is the total of their rewrites. No passes: ``model`` itself."""
    changed = 0
    for p in passes:
        result = p(model)
        model, changed = result.model, changed + result.changed
    return PassResult(model, changed)
