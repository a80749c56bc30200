"""Agreement of two runs of one model: the numerics behind ``netdsl compare``, usable from the API.

An element of ``actual`` agrees with the reference ``expected`` when ``|a - b| <= atol + rtol * |b|``
(numpy.isclose's rule, in float64); NaN agrees only with NaN, an infinity only with the same infinity.
:func:`first_divergence` walks a model's intermediate tensors in graph order and names the first that
does not agree, with the node that writes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Agreement:
    """How one tensor of one pair agrees with the reference's."""

    shape: tuple[int, ...]
    max_abs: float
    max_rel: float  # over the elements where the reference is non-zero
    mismatched: int  # elements outside atol + rtol * |reference|
    size: int
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.mismatched == 0 and not self.note

    def to_json(self) -> dict:
        out = {"shape": list(self.shape), "max_abs": _num(self.max_abs), "max_rel": _num(self.max_rel),
               "mismatched": self.mismatched, "size": self.size, "pass": self.passed}
        if self.note:
            out["note"] = self.note
        return out


def agreement(actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float) -> Agreement:
    """Compare ``actual`` with the reference ``expected`` (numpy.isclose's rule, in float64)."""
    if actual.shape != expected.shape:
        note = f"shape {dims(actual.shape)} differs from the reference's {dims(expected.shape)}"
        return Agreement(actual.shape, math.inf, math.inf, actual.size, actual.size, note)
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        same = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))
        diff = np.where(same, 0.0, np.abs(a - b))
        diff = np.where(np.isnan(diff), math.inf, diff)
        ok = same | (np.isfinite(b) & (diff <= atol + rtol * np.abs(b)))
        nonzero = (b != 0) & np.isfinite(b)
        rel = diff[nonzero] / np.abs(b[nonzero])
    return Agreement(actual.shape, float(diff.max(initial=0.0)), float(rel.max(initial=0.0)),
                     int(ok.size - np.count_nonzero(ok)), int(ok.size))


def intermediate_tensors(model) -> tuple[str, ...]:
    """Every tensor a node of ``model`` (an onnx.ModelProto) writes that is not a graph output, in node order."""
    outputs = {o.name for o in model.graph.output}
    return tuple(out for node in model.graph.node for out in node.output if out and out not in outputs)


def first_divergence(order: Sequence[str], actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
                     atol: float, rtol: float) -> tuple[int, str | None, Agreement | None]:
    """(tensors compared, the first of ``order`` present in both runs that disagrees or None, its agreement)."""
    common = [n for n in order if n in actual and n in expected]
    for name in common:
        a = agreement(actual[name], expected[name], atol, rtol)
        if not a.passed:
            return len(common), name, a
    return len(common), None, None


def _num(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def dims(shape) -> str:
    """``2x3`` for a shape, ``scalar`` for ()."""
    return "x".join(map(str, shape)) or "scalar"
