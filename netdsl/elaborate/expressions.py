"""Expression evaluation: integers, floats and sizes (``1x7``) from parameters, with errors reported, not raised."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from .. import syntax as S
from ..errors import DiagnosticBag, Span
from ..ops import fmt_shape
from .limits import MAX_INT

Value = int | float | tuple[int, ...] | None  # a tuple is a size (`1x7`); None: unknown because of an earlier error
BUILTIN_NAMES = {"true": 1, "false": 0}


@dataclass(frozen=True, slots=True)
class TensorArg:
    """A block parameter bound to a tensor (``block(@skip)``); ``tensor`` is None after an error."""

    tensor: int | None


def suggest(name: str, candidates: list[str]) -> str:
    """``; did you mean `x`?`` for the closest of ``candidates``, or nothing."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.7)
    return f"; did you mean `{close[0]}`?" if close else ""


class Evaluator:
    """Evaluates expressions in an environment of names, reporting errors to ``bag``."""

    def __init__(self, bag: DiagnosticBag):
        self.bag = bag

    def eval(self, e, env: dict[str, object], trace: tuple[str, ...]) -> Value:
        """Evaluate an integer/float expression; reports errors and returns None for unknown values."""
        if isinstance(e, S.Num):
            return e.value
        if isinstance(e, S.Dims):  # a size such as 1x7, passed to a block and on to a layer's size argument
            return e.values
        if isinstance(e, S.Var):
            if e.name not in env:
                self.bag.error(f"unknown name `{e.name}`" + suggest(e.name, [k for k in env if k not in
                                                                              BUILTIN_NAMES]), e.span, trace)
                return None
            v = env[e.name]
            if isinstance(v, TensorArg):
                self.bag.error(f"`{e.name}` is a tensor; refer to it as `@{e.name}`", e.span, trace)
                return None
            return v
        if isinstance(e, S.Neg):
            v = self.eval(e.operand, env, trace)
            if isinstance(v, tuple):
                return self._size_as_number(v, e.span, trace)
            return None if v is None else -v
        if isinstance(e, S.BinOp):
            a, b = self.eval(e.left, env, trace), self.eval(e.right, env, trace)
            if a is None or b is None:
                return None
            if isinstance(a, tuple) or isinstance(b, tuple):
                return self._size_as_number(a if isinstance(a, tuple) else b, e.span, trace)
            if e.op in ("//", "%") and b == 0:
                self.bag.error("division by zero", e.span, trace)
                return None
            v = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "//": lambda: a // b,
                 "%": lambda: a % b, "==": lambda: int(a == b), "!=": lambda: int(a != b),
                 "<": lambda: int(a < b), "<=": lambda: int(a <= b), ">": lambda: int(a > b),
                 ">=": lambda: int(a >= b)}[e.op]()
            if isinstance(v, int) and abs(v) > MAX_INT:
                self.bag.error(f"integer {v} is too large", e.span, trace)
                return None
            return v
        raise AssertionError(e)

    def condition(self, expr: S.Expr, env: dict[str, object], trace: tuple[str, ...]) -> bool | None:
        """The value of an ``if`` condition: an integer, true when non-zero; None after an error."""
        v = self.eval(expr, env, trace)
        if v is None:
            return None
        if not isinstance(v, int):
            self.bag.error(f"an `if` condition must be an integer (0 is false), got {v}", expr.span, trace)
            return None
        return v != 0

    def _size_as_number(self, size: tuple[int, ...], span: Span, trace: tuple[str, ...]) -> None:
        self.bag.error(f"{fmt_shape(size)} is a size, not a number: it can only be passed on to a layer argument "
                       f"that takes a size (kernel, pad, stride, adaptive)", span, trace)
