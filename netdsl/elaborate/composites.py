"""Composites: ``residual< >``, ``inception< >``, ``scale< >``, ``mean< >``, ``fractal< >`` and ``seq< >``, one
function each, in a table keyed by kind (like the op table). Each expands its branches through the
:class:`Expander` it is given and joins them with a merge op."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .. import syntax as S
from ..errors import DiagnosticBag, Span
from ..graph import Node
from ..ops import MERGES, OPS, ArgValue, Attrs, Op, fmt_shape
from .scopes import Scope


class Expander(Protocol):
    """What a composite needs from the elaborator: the graph so far, and expanding and adding to it."""

    bag: DiagnosticBag
    nodes: list[Node]
    fractal_joins: set[int]  # the tensors made by ``fractal< >`` joins
    absorbed: set[int]  # fractal joins whose inputs a later join took over; dropped from the graph if unused

    def sequence(self, seq: S.Sequence, scope: Scope, flow: int | None) -> int | None:
        """Expand a branch from the tensor ``flow``; its output tensor, or None after an error."""

    def apply(self, op: Op, attrs: Attrs, inputs: tuple[int | None, ...], scope: Scope, name: str,
              span: Span) -> int | None:
        """Add one layer to the graph; its output tensor, or None after an error."""


Composite = Callable[[Expander, S.Composite, Scope, int | None], int | None]


def seq(el: Expander, comp: S.Composite, scope: Scope, flow: int | None) -> int | None:
    """A plain chain; unlabelled, it numbers its layers in the enclosing scope."""
    if len(comp.branches) != 1:
        el.bag.error("seq< > takes one branch", comp.span, scope.trace)
        return None
    return el.sequence(comp.branches[0], scope, flow)


def inception(el: Expander, comp: S.Composite, scope: Scope, flow: int | None) -> int | None:
    """Branches from one input, concatenated along channels."""
    outs = [el.sequence(b, scope, flow) for b in comp.branches]
    if any(o is None for o in outs):
        return None
    shapes = [el.nodes[o].shape for o in outs]
    if any(len(s) != 3 for s in shapes) or len({s[1:] for s in shapes}) > 1:
        desc = ", ".join(f"{_branch_name(b, i)} {fmt_shape(s[1:])}"
                         for i, (b, s) in enumerate(zip(comp.branches, shapes, strict=True)))
        el.bag.error(f"inception branches disagree on spatial size: {desc}", comp.span, scope.trace)
        return None
    return el.apply(MERGES["concat"], Attrs(), tuple(outs), scope, scope.unique("concat"), comp.span)


def mean(el: Expander, comp: S.Composite, scope: Scope, flow: int | None) -> int | None:
    """Branches from one input, averaged element by element; every branch gives one shape."""
    return _average(el, comp, scope, flow, flat=False)


def fractal(el: Expander, comp: S.Composite, scope: Scope, flow: int | None) -> int | None:
    """FractalNet's join: ``mean< >``, except that a branch ending in a ``fractal< >`` join brings that join's
    inputs instead of their mean, so each join averages every column that meets there (Larsson et al. 2017).
    The join so taken over leaves the graph unless something else reads it."""
    return _average(el, comp, scope, flow, flat=True)


def _average(el: Expander, comp: S.Composite, scope: Scope, flow: int | None, flat: bool) -> int | None:
    outs, names = [], []
    for i, branch in enumerate(comp.branches):
        before = len(el.nodes)
        out = el.sequence(branch, scope, flow)
        if out is None:
            return None
        if out == flow and len(el.nodes) == before and _conditional(branch):
            continue  # every element of the branch is absent (`if` false): no branch
        outs.append(out)
        names.append(_branch_name(branch, i))
    if not outs:
        el.bag.error(f"every branch of {comp.kind}< > is absent (each `if` is false): there is nothing to join",
                     comp.span, scope.trace)
        return None
    shapes = [el.nodes[o].shape for o in outs]
    if len(set(shapes)) > 1:
        desc = ", ".join(f"{n} {fmt_shape(s)}" for n, s in zip(names, shapes, strict=True))
        el.bag.error(f"{comp.kind} branches disagree on shape: {desc}", comp.span, scope.trace)
        return None
    if len(outs) == 1:
        return outs[0]
    inputs: list[int] = []
    for o in outs:
        if flat and o in el.fractal_joins:
            inputs.extend(el.nodes[o].inputs)
            el.absorbed.add(o)
        else:
            inputs.append(o)
    out = el.apply(MERGES["mean"], Attrs(), tuple(inputs), scope, scope.unique("join" if flat else "mean"),
                   comp.span)
    if flat and out is not None:
        el.fractal_joins.add(out)
    return out


def scale(el: Expander, comp: S.Composite, scope: Scope, flow: int | None) -> int | None:
    """The input times a gate computed from it (squeeze-and-excitation)."""
    if len(comp.branches) != 1:
        el.bag.error("scale< > takes one branch (the gate)", comp.span, scope.trace)
        return None
    gate = el.sequence(comp.branches[0], scope, flow)
    if gate is None or flow is None:
        return None
    xs, gs = el.nodes[flow].shape, el.nodes[gate].shape
    if gs != xs and gs != (xs[0],) + (1,) * (len(xs) - 1):
        el.bag.error(f"scale gate outputs {fmt_shape(gs)} but must be {fmt_shape((xs[0], 1, 1))} or "
                     f"{fmt_shape(xs)} to scale its input {fmt_shape(xs)}", comp.span, scope.trace)
        return None
    return el.apply(MERGES["mul"], Attrs(), (flow, gate), scope, scope.unique("mul"), comp.span)


def residual(el: Expander, comp: S.Composite, scope: Scope, flow: int | None) -> int | None:
    """Body plus shortcut: the given one, the input itself, or a projection when the body changes the shape."""
    if len(comp.branches) > 2:
        el.bag.error("residual< body | shortcut > takes at most two branches", comp.span, scope.trace)
        return None
    body = el.sequence(comp.branches[0], scope, flow)
    if len(comp.branches) == 2:
        short = el.sequence(comp.branches[1], scope, flow)
        if body is None or short is None:
            return None
        bs, ss = el.nodes[body].shape, el.nodes[short].shape
        if bs != ss:
            el.bag.error(f"residual body outputs {fmt_shape(bs)} but its shortcut outputs {fmt_shape(ss)}",
                         comp.span, scope.trace)
            return None
    else:
        if body is None or flow is None:
            return None
        bs, xs = el.nodes[body].shape, el.nodes[flow].shape
        short = flow
        if bs != xs:
            stride = _projection_stride(xs, bs)
            if stride is None:
                why = (f"a 1x1 conv of any stride cannot turn {fmt_shape(xs[1:])} into {fmt_shape(bs[1:])}"
                       if len(xs) == 3 == len(bs) else "a projection needs CxHxW tensors")
                el.bag.error(f"residual body outputs {fmt_shape(bs)} but its input is {fmt_shape(xs)}, and "
                             f"no projection shortcut can match them ({why}); give the shortcut: "
                             f"residual< body | shortcut >", comp.span, scope.trace)
                return None
            short = projection(el, scope, flow, bs[0], stride, comp.span)
    return el.apply(MERGES["add"], Attrs(), (body, short), scope, scope.unique("add"), comp.span)


def projection(el: Expander, scope: Scope, x: int, channels: int, stride: tuple[int, int],
               span: Span) -> int | None:
    """torchvision's projection shortcut: downsample.0 = conv 1x1 /stride nobias, downsample.1 = bn."""
    inner = scope.child(scope.unique("downsample"))
    conv, bn = OPS["conv"], OPS["bn"]
    args = [ArgValue("value", channels, span), ArgValue("value", 1, span), ArgValue("stride", stride, span),
            ArgValue("word", "nobias", span)]
    y = el.apply(conv, conv.bind(args), (x,), inner, "0", span)
    return el.apply(bn, bn.bind([]), (y,), inner, "1", span)


COMPOSITES: dict[str, Composite] = {"residual": residual, "inception": inception, "scale": scale, "mean": mean,
                                    "fractal": fractal, "seq": seq}


def _projection_stride(x: tuple[int, ...], y: tuple[int, ...]) -> tuple[int, int] | None:
    if len(x) != 3 or len(y) != 3:
        return None
    stride = []
    for n, m in zip(x[1:], y[1:], strict=True):
        s = next((s for s in range(1, n + 1) if (n - 1) // s + 1 == m), None)
        if s is None:
            return None
        stride.append(s)
    return (stride[0], stride[1])


def _conditional(seq: S.Sequence) -> bool:
    """Whether every element of the branch has an ``if`` (so a branch that added nothing was absent)."""
    return all(e.condition is not None for ch in seq.chains for e in ch.elements)


def _branch_name(seq: S.Sequence, i: int) -> str:
    first = seq.chains[0].elements[0] if seq.chains and seq.chains[0].elements else None
    return first.label.text if first is not None and first.label else f"branch {i + 1}"
