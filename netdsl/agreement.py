"""Agreement of two runs of one model: the numerics behind ``netdsl compare``, usable from the API.

An element of ``actual`` agrees with the reference ``expected`` when ``|a - b| <= atol + rtol * |b|``
(numpy.isclose's rule, in float64); NaN agrees only with NaN, an infinity only with the same infinity.
:func:`first_divergence` walks a model's intermediate tensors in graph order and names the first that
does not agree, with the node that writes it.

Default tolerances (:func:`default_tolerance`) follow the lower precision of the two runs compared. With
``u`` that precision's unit roundoff (fp32 2**-24, bf16 2**-8, fp16 2**-11; int8 half a step of 127 levels,
2**-8) and ``t = 20 u`` rounded up to one digit (fp16 0.01, bf16 and int8 0.08), ``rtol = max(1e-3, t)`` and
the absolute tolerance is relative to each tensor's magnitude: ``atol = max(1e-4, t) * max |reference|``,
so near-zero elements of a tensor are judged against the tensor's range rather than their own size (a
float16 conv output's elements near zero otherwise show relative errors in the hundreds). Explicit
tolerances replace the defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Unit roundoff by precision name: the largest relative rounding error of one value.
UNIT_ROUNDOFF = {"fp32": 2.0 ** -24, "bf16": 2.0 ** -8, "fp16": 2.0 ** -11, "int8": 2.0 ** -8}
ROUNDINGS = 20  # roundings allowed to accumulate into one element's error
FLOOR_RTOL, FLOOR_ATOL = 1e-3, 1e-4  # the fp32 defaults: reassociation (fold-bn, kernels) changes more than u


@dataclass(frozen=True)
class Tolerance:
    """The tolerance of one comparison: ``|a - b| <= atol + rtol * |b|`` with ``atol`` either absolute
    (``atol``) or ``atol_range`` times the reference tensor's largest magnitude (when ``atol`` is None)."""

    rtol: float
    atol: float | None = None
    atol_range: float = 0.0
    precision: str = "fp32"  # what the defaults were chosen for; "explicit" when both were given

    def atol_for(self, expected: np.ndarray) -> float:
        if self.atol is not None:
            return self.atol
        finite = np.abs(np.asarray(expected, dtype=np.float64))
        finite = finite[np.isfinite(finite)]
        return self.atol_range * float(finite.max(initial=0.0))

    def describe(self) -> str:
        atol = f"{self.atol:g}" if self.atol is not None else f"{self.atol_range:g} x max|ref|"
        return f"atol {atol}, rtol {self.rtol:g}"

    def to_json(self) -> dict:
        return {"precision": self.precision, "rtol": self.rtol, "atol": self.atol, "atol_range": self.atol_range}


def _round_up(x: float) -> float:
    """``x`` rounded up to one significant digit (0.00977 -> 0.01), so tolerances read plainly."""
    scale = 10.0 ** math.floor(math.log10(x))
    return float(f"{math.ceil(round(x / scale, 9)) * scale:.1g}")


def lowest_precision(*precisions: str) -> str:
    """The precision of least accuracy among ``precisions`` (the largest unit roundoff)."""
    return max(precisions, key=lambda p: UNIT_ROUNDOFF[p])


def default_tolerance(precision: str = "fp32", atol: float | None = None, rtol: float | None = None) -> Tolerance:
    """The tolerance for a comparison whose less accurate side runs at ``precision`` (a key of
    UNIT_ROUNDOFF); an explicit ``atol`` or ``rtol`` replaces the default."""
    if precision not in UNIT_ROUNDOFF:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(UNIT_ROUNDOFF)}")
    u = _round_up(ROUNDINGS * UNIT_ROUNDOFF[precision])
    label = "explicit" if atol is not None and rtol is not None else precision
    return Tolerance(rtol=max(FLOOR_RTOL, u) if rtol is None else rtol, atol=atol,
                     atol_range=max(FLOOR_ATOL, u), precision=label)


@dataclass(frozen=True)
class Agreement:
    """How one tensor of one pair agrees with the reference's."""

    shape: tuple[int, ...]
    max_abs: float
    max_rel: float  # over the elements where the reference is non-zero
    mismatched: int  # elements outside atol + rtol * |reference|
    size: int
    note: str = ""
    atol: float = math.nan  # the tolerances applied (atol resolved for this tensor)
    rtol: float = math.nan

    @property
    def passed(self) -> bool:
        return self.mismatched == 0 and not self.note

    def to_json(self) -> dict:
        out = {"shape": list(self.shape), "max_abs": _num(self.max_abs), "max_rel": _num(self.max_rel),
               "mismatched": self.mismatched, "size": self.size, "pass": self.passed,
               "atol": _num(self.atol), "rtol": _num(self.rtol)}
        if self.note:
            out["note"] = self.note
        return out


def agreement(actual: np.ndarray, expected: np.ndarray, atol: float | Tolerance, rtol: float | None = None,
              ) -> Agreement:
    """Compare ``actual`` with the reference ``expected`` (numpy.isclose's rule, in float64), with absolute
    and relative tolerances ``atol`` and ``rtol``, or with a :class:`Tolerance` as ``atol``."""
    if isinstance(atol, Tolerance):
        atol, rtol = atol.atol_for(expected), atol.rtol
    if rtol is None:
        raise TypeError("agreement() needs rtol with a numeric atol")
    if actual.shape != expected.shape:
        note = f"shape {dims(actual.shape)} differs from the reference's {dims(expected.shape)}"
        return Agreement(actual.shape, math.inf, math.inf, actual.size, actual.size, note, atol, rtol)
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
                     int(ok.size - np.count_nonzero(ok)), int(ok.size), "", atol, rtol)


def intermediate_tensors(model) -> tuple[str, ...]:
    """Every tensor a node of ``model`` (an onnx.ModelProto) writes that is not a graph output, in node order."""
    outputs = {o.name for o in model.graph.output}
    return tuple(out for node in model.graph.node for out in node.output if out and out not in outputs)


def first_divergence(order: Sequence[str], actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
                     atol: float | Tolerance, rtol: float | None = None) -> tuple[int, str | None, Agreement | None]:
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
