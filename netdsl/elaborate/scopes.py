"""Scopes and naming: which names a statement sees, and the dotted names layers take.

Naming (chosen so torchvision state_dict keys match with no mapping):

* a label (``conv1:``) names an element; block calls, groups ``( ... )`` and labelled composites
  open a scope, so names nest into dotted paths (``layer1.0.conv1``);
* unlabelled elements are numbered by position in their scope, from 0, like ``nn.Sequential``;
* ``x N`` numbers the instances (``layer1.0``, ``layer1.1`` for a labelled repeat);
* unlabelled composites are transparent: their contents live in the enclosing scope;
* an automatic projection shortcut is ``downsample`` (a conv ``downsample.0`` and bn ``downsample.1``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import syntax as S
from ..errors import DiagnosticBag, Span
from .expressions import Evaluator, suggest


@dataclass
class Scope:
    path: str  # "" at the network root, else "layer1.0."
    env: dict[str, object]
    trace: tuple[str, ...]
    block_input: int | None = None
    names: dict[str, int | None] = field(default_factory=dict)
    label_spans: dict[str, Span] = field(default_factory=dict)
    counter: int = 0
    used: set[str] = field(default_factory=set)
    absent: dict[str, Span] = field(default_factory=dict)  # labels of elements skipped by a false `if`
    parent: Scope | None = None  # the enclosing scope whose names stay visible (None for a block body)
    has_input: bool = False  # `@input` means `block_input` here (a block body or a group)

    def child(self, name: str, env: dict[str, object] | None = None, trace: tuple[str, ...] | None = None,
              block_input: int | None = None, has_input: bool = False) -> Scope:
        """A nested naming scope. Groups and composites see the enclosing names; a block body (``env`` given)
        sees only its own names and parameters."""
        return Scope(self.path + name + ".", self.env if env is None else env,
                     self.trace if trace is None else trace, block_input,
                     parent=self if env is None else None, has_input=has_input)

    def next_index(self) -> str:
        i = self.counter
        self.counter += 1
        return str(i)

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.used or name in self.names:
            name = f"{base}_{k}"
            k += 1
        self.used.add(name)
        return name


class bound:
    """Bind a repetition's index variable (`x N as i`) in a scope for one instance."""

    def __init__(self, scope: Scope, var: str | None, value: int):
        self.scope, self.var, self.value = scope, var, value

    def __enter__(self):
        if self.var is not None:
            self.saved = self.scope.env
            self.scope.env = {**self.scope.env, self.var: self.value}

    def __exit__(self, *exc):
        if self.var is not None:
            self.scope.env = self.saved


def merge_names(parent: Scope, prefix: str, child: Scope) -> None:
    """Make ``child``'s names visible in ``parent`` as ``prefix.name`` (``@layer1.0.conv1``)."""
    for k, v in child.names.items():
        parent.names[f"{prefix}.{k}"] = v


class Namer:
    """Labels, name templates and ``@name`` lookups, reporting errors to ``bag``."""

    def __init__(self, bag: DiagnosticBag, evaluator: Evaluator):
        self.bag, self.evaluator = bag, evaluator

    def claim(self, scope: Scope, label: str, span: Span) -> str:
        """The name a labelled element takes: its label, or after a duplicate (reported here, once) a name that
        no source can spell, so that elaboration goes on and finds the independent errors after it."""
        if label in scope.label_spans:
            first = scope.label_spans[label]
            self.bag.error(f"name `{label}` is already used in this scope (first at {first})" if first != span else
                           f"this name template gives `{label}` more than once; make it unique, e.g. with the "
                           f"repetition index", span, scope.trace)
            return label + "#duplicate"
        return label

    def render_label(self, label: S.Label | None, scope: Scope) -> str | None:
        """A label's text, with a template's ``{expr}`` parts evaluated; None on error or no label."""
        if label is None:
            return None
        if not label.is_template:
            return label.text
        out = []
        for part in label.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            v = self.evaluator.eval(part, scope.env, scope.trace)
            if v is None:
                return None
            if not isinstance(v, int):
                self.bag.error(f"a name template needs integers, got {v}", part.span, scope.trace)
                return None
            out.append(str(v))
        return "".join(out)

    def bind_label(self, scope: Scope, label: str, tensor: int | None, span: Span) -> None:
        """Make ``@label`` refer to ``tensor`` in ``scope``."""
        if label in scope.label_spans:
            self.bag.error(f"name `{label}` is already used in this scope (first at {scope.label_spans[label]})",
                           span, scope.trace)
            return
        scope.label_spans[label] = span
        scope.names[label] = tensor

    def lookup(self, ref: S.Ref, scope: Scope) -> int | None:
        """The tensor a ``@name`` refers to: the innermost scope that binds it, then enclosing scopes up to the
        block body or network. ``@input`` is the input of the innermost block call or group."""
        visible: list[str] = []
        s: Scope | None = scope
        while s is not None:
            if ref.path in s.names:
                return s.names[ref.path]
            if ref.path == "input" and s.has_input:
                return s.block_input  # None only after an error already reported
            if ref.path in s.absent:
                self.bag.error(f"`@{ref.path}` does not exist here: its element (at {s.absent[ref.path]}) is "
                               f"skipped because its `if` condition is false", ref.span, scope.trace)
                return None
            visible.extend(s.names)
            s = s.parent
        if ref.path == "input":
            self.bag.error("`@input` is the input of a block or group; in a network use the input's name",
                           ref.span, scope.trace)
            return None
        self.bag.error(f"unknown tensor `@{ref.path}`" + suggest(ref.path, visible), ref.span, scope.trace)
        return None
