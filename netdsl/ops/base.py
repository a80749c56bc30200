"""What every op is made of: arguments, the :class:`Op` base class, and the op table it is registered in.

An :class:`Op` states, for its layer kind:

* its arguments (positional slots, keyword options, flags, defaults: PyTorch's where it has one),
* its shape rule (:meth:`Op.infer`), which also resolves derived attributes such as ``pad same``,
* its weights (names, shapes, initialisation) and hence its parameter count,
* its multiply-accumulate count (conv and fc only; everything else is 0 by convention),
* its receptive-field effect,
* its ONNX lowering, written against the small :class:`Lowering` interface that
  :class:`netdsl.lower.OnnxBuilder` implements (so the ops never import the lowering or the graph).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

Shape = tuple[int, ...]
Pair = tuple[int, int]


class OpError(Exception):
    """A problem with one layer's arguments or input shapes; the caller adds the location."""


def fmt_shape(shape: Sequence[int] | None) -> str:
    """Shapes as users write them: 64x56x56."""
    return "?" if shape is None else "x".join(str(d) for d in shape)


# ----------------------------------------------------------------------------- arguments
@dataclass(frozen=True, slots=True)
class Option:
    """One argument of an op.

    kind: ``int``, ``float``, ``pair`` (an int or HxW), ``pad`` (a pair or ``same``), ``flag`` (no value),
    ``bool`` (``true``/``false``/0/1), ``ref`` (a tensor reference ``@name``, which becomes the layer's second
    graph input: ``resize like @image``), ``number`` (an int or a float, kept as given).
    """

    name: str
    kind: str
    default: object = None
    positional: bool = False
    required: bool = False
    aliases: tuple[str, ...] = ()
    help: str = ""


# the value a keyword option takes, by kind, as a syntax line shows it (:meth:`Op.syntax`)
OPTION_VALUES = {"int": "N", "float": "X", "pair": "N|HxW", "pad": "N|HxW|same", "bool": "true|false",
                 "ref": "@REF"}


class Attrs(dict):
    """A layer's bound arguments. Read as attributes: ``attrs.kernel``."""

    __slots__ = ()

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def with_(self, **updates) -> Attrs:
        out = Attrs(self)
        out.update(updates)
        return out


@dataclass(frozen=True, slots=True)
class WeightSpec:
    """One tensor a layer owns. ``kind`` is ``param`` (trainable, counted) or ``buffer`` (BN statistics).

    Its full name is :func:`weight_name` of the layer's path and ``suffix``; an empty suffix names the
    tensor by the layer's path itself (``layer_scale``: PyTorch's ``features.1.0.layer_scale``).
    """

    suffix: str
    shape: Shape
    kind: str
    init: str  # kaiming_fan_out, small_normal, he_normal, zeros, ones, fill (netdsl.weights.initial_value)
    fan_in: int = 1
    fan_out: int = 1
    fill: float = 0.0  # every value, for init ``fill``


def weight_name(layer: str, suffix: str) -> str:
    """The full name of a layer's weight: ``<layer path>.<suffix>``, or the path itself when the suffix is empty."""
    return f"{layer}.{suffix}" if suffix else layer


@dataclass(frozen=True, slots=True)
class TensorRef:
    """A tensor reference given as a layer argument (``@name``), resolved to its tensor index."""

    name: str
    tensor: int


@dataclass(frozen=True, slots=True)
class ArgValue:
    """A layer argument after evaluation: a number, a size, a stride, a bare word, or a tensor reference
    (kind ``ref``, value a :class:`TensorRef`)."""

    kind: str  # value, dims, stride, word, ref
    value: object
    span: object


def _as_pair(v: object, what: str) -> Pair:
    if isinstance(v, tuple):
        if len(v) == 1:
            return (v[0], v[0])
        if len(v) != 2:
            raise OpError(f"{what} must be N or HxW, got {fmt_shape(v)}")
        return (int(v[0]), int(v[1]))
    if isinstance(v, bool) or not isinstance(v, int):
        raise OpError(f"{what} must be an integer N or a size HxW, got {v!r}")
    return (v, v)


def _coerce(opt: Option, v: object) -> object:
    if opt.kind == "int":
        if isinstance(v, tuple) or isinstance(v, float) or not isinstance(v, int):
            raise OpError(f"`{opt.name}` must be an integer, got {_show(v)}")
        return v
    if opt.kind == "float":
        if isinstance(v, tuple) or not isinstance(v, (int, float)):
            raise OpError(f"`{opt.name}` must be a number, got {_show(v)}")
        return float(v)
    if opt.kind == "pair":
        return _as_pair(v, f"`{opt.name}`")
    if opt.kind == "pad":
        if v == "same":
            return "same"
        return _as_pair(v, "`pad`")
    if opt.kind == "number":
        if isinstance(v, tuple) or isinstance(v, bool) or not isinstance(v, (int, float)):
            raise OpError(f"`{opt.name}` must be a number, got {_show(v)}")
        return v
    if opt.kind == "ref":
        if not isinstance(v, TensorRef):
            raise OpError(f"`{opt.name}` takes a tensor reference such as @image, got {_show(v)}")
        return f"@{v.name}"
    if opt.kind == "bool":
        if v in (0, 1, True, False):
            return bool(v)
        raise OpError(f"`{opt.name}` must be true or false, got {_show(v)}")
    raise AssertionError(opt.kind)


def _show(v: object) -> str:
    if isinstance(v, TensorRef):
        return f"@{v.name}"
    return fmt_shape(v) if isinstance(v, tuple) else str(v)


# ----------------------------------------------------------------------------- what a lowering sees
class LayerNode(Protocol):
    """The parts of a graph node (:class:`netdsl.graph.Node`) an op's lowering reads."""

    name: str
    attrs: Attrs
    inputs: tuple[int, ...]
    in_shapes: tuple[Shape, ...]
    shape: Shape


class Lowering(Protocol):
    """What an op's lowering may do; :class:`netdsl.lower.OnnxBuilder` implements it."""

    opset: int

    def input(self, node: LayerNode, i: int) -> str:
        """The ONNX tensor name of the node's ``i``-th input."""

    def weight(self, node: LayerNode, suffix: str) -> str:
        """The initializer of the node's weight ``suffix`` (``weight``, ``bias``, ...; ``""``: the weight named
        by the layer's path itself, see :func:`weight_name`)."""

    def const(self, key: str, value, dtype: str | None = None) -> str:
        """A shared constant initializer."""

    def tmp(self, node: LayerNode, suffix: str, shape: Shape | None = None) -> str:
        """An intermediate tensor inside the node's lowering."""

    def emit(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        """Add one ONNX node; without ``out`` it writes the layer's output."""


# ----------------------------------------------------------------------------- base op
class Op:
    """Base class of all layer kinds; see the module docstring."""

    name: str = ""
    aliases: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()
    summary: str = ""
    onnx_ops: tuple[str, ...] = ()  # ONNX op types the lowering may emit

    @property
    def takes_ref(self) -> bool:
        """Whether a layer argument may be a tensor reference (an option of kind ``ref``). Such a tensor is the
        layer's second graph input and gives only a size: the layer's values come from its first input."""
        return any(o.kind == "ref" for o in self.options)

    # -- arguments
    def syntax(self) -> str:
        """``conv OUT KERNEL [/STRIDE] [pad N|HxW|same] ...``: how a layer of this op is written, generated from
        its options (``netdsl ops``, the language server's completion and hover)."""
        parts = [self.name]
        for opt in self.options:
            if opt.positional:
                word = opt.name.upper()
                parts.append(word if opt.required else f"[{word}]")
            elif opt.name == "stride":
                parts.append("[/STRIDE]")
            elif opt.kind == "flag":
                parts.append(f"[{opt.name}]")
            else:
                value = OPTION_VALUES.get(opt.kind, opt.name.upper())
                parts.append(f"{opt.name} {value}" if opt.required else f"[{opt.name} {value}]")
        return " ".join(parts)

    def bind(self, args: Sequence[ArgValue]) -> Attrs:
        """Bind evaluated layer arguments to this op's options; raises OpError with the offending span."""
        by_name = {}
        for opt in self.options:
            by_name[opt.name] = opt
            for a in opt.aliases:
                by_name[a] = opt
        positional = [o for o in self.options if o.positional]
        attrs = Attrs()
        i = 0
        while i < len(args):
            arg = args[i]
            if arg.kind == "word" and arg.value in by_name:
                opt = by_name[arg.value]
                if opt.name in attrs:
                    raise _located(f"`{opt.name}` given twice", arg.span)
                if opt.kind == "flag":
                    attrs[opt.name] = True
                    i += 1
                    continue
                if i + 1 >= len(args) or (args[i + 1].kind == "word" and args[i + 1].value in by_name):
                    raise _located(f"`{arg.value}` needs a value", arg.span)
                nxt = args[i + 1]
                value = nxt.value
                if (nxt.kind == "ref") != (opt.kind == "ref"):
                    raise _located(f"`{arg.value}` needs a tensor reference such as @image" if opt.kind == "ref"
                                   else f"`{arg.value}` takes a value, not a tensor reference", nxt.span)
                if nxt.kind == "word":
                    if opt.kind == "pad" and value == "same" or opt.kind == "bool" and value in ("true", "false"):
                        value = {"true": True, "false": False}.get(value, value)
                    else:
                        takes = {"int": "an integer", "float": "a number", "number": "a number", "pair": "N or HxW",
                                 "pad": "N, HxW or `same`", "bool": "true or false"}[opt.kind]
                        raise _located(f"unknown name `{value}` (`{opt.name}` takes {takes})", nxt.span)
                attrs[opt.name] = _coerce_at(opt, value, nxt.span)
                i += 2
                continue
            if arg.kind == "word":
                if arg.value in OPS:  # `conv 8 3x3 relu`: a forgotten arrow
                    raise _located(f"`{arg.value}` is a layer, not an argument of {self.name}: "
                                   f"separate layers with `->`", arg.span)
                known = ", ".join(sorted(o.name for o in self.options if not o.positional))
                if not known:
                    raise _located(f"unknown name `{arg.value}` ({self.name} has no options)", arg.span)
                raise _located(f"unknown name `{arg.value}` (options of {self.name}: {known})", arg.span)
            if arg.kind == "ref":
                ref_opts = [o.name for o in self.options if o.kind == "ref"]
                raise _located(f"a tensor reference is written after `{ref_opts[0]}`: `{self.name} {ref_opts[0]} "
                               f"@{arg.value.name}`" if ref_opts else f"{self.name} takes no tensor reference",
                               arg.span)
            if arg.kind == "stride":
                if "stride" not in by_name:
                    raise _located(f"{self.name} takes no stride", arg.span)
                if "stride" in attrs:
                    raise _located("`stride` given twice", arg.span)
                attrs["stride"] = _coerce_at(by_name["stride"], arg.value, arg.span)
                i += 1
                continue
            slot = next((o for o in positional if o.name not in attrs), None)
            if slot is None:
                raise _located(f"too many arguments for {self.name}", arg.span)
            attrs[slot.name] = _coerce_at(slot, arg.value, arg.span)
            i += 1
        for opt in self.options:
            if opt.name not in attrs:
                if opt.required:
                    raise OpError(f"{self.name} needs {opt.help or opt.name}")
                attrs[opt.name] = False if opt.kind == "flag" else opt.default
        self.validate(attrs)
        return attrs

    def validate(self, attrs: Attrs) -> None:
        """Check argument values that need no input shape."""

    # -- rules
    def infer(self, attrs: Attrs, inputs: list[Shape]) -> tuple[Shape, Attrs]:
        """Output shape (batch excluded) and attrs with derived values resolved. Raises OpError."""
        (x,) = inputs
        return x, attrs

    def weights(self, attrs: Attrs, inputs: list[Shape]) -> list[WeightSpec]:
        return []

    def macs(self, attrs: Attrs, inputs: list[Shape], out: Shape) -> int:
        return 0

    def window(self, attrs: Attrs, inputs: list[Shape]) -> tuple[Pair, Pair] | None:
        """Receptive-field effect: (effective kernel, stride), or None when the op is pointwise."""
        return None

    def dropped(self, attrs: Attrs, inputs: list[Shape]) -> str | None:
        """A warning when the op silently ignores input rows/columns, else None."""
        return None

    def lower(self, b: Lowering, node: LayerNode) -> None:
        """Emit this layer's ONNX nodes through ``b`` (see :class:`Lowering`)."""
        raise NotImplementedError


def _located(msg: str, span) -> OpError:
    err = OpError(msg)
    err.span = span
    return err


def _coerce_at(opt: Option, value: object, span) -> object:
    try:
        return _coerce(opt, value)
    except OpError as e:
        raise _located(str(e), span) from None


def _need_rank(op: str, x: Shape, rank: int, hint: str = "") -> None:
    if len(x) != rank:
        want = {3: "a CxHxW input", 1: "a flat input"}[rank]
        raise OpError(f"{op} expects {want}, got {fmt_shape(x)}" + (f"; {hint}" if hint else ""))


# ----------------------------------------------------------------------------- the op table
OPS: dict[str, Op] = {}  # layer name or alias -> op; filled in netdsl/ops/__init__.py
MERGES: dict[str, Op] = {}  # merge name -> op (add, mul, concat); filled in netdsl/ops/__init__.py


def register(op: Op) -> Op:
    """Enter ``op`` in the op table under its name and aliases."""
    for name in (op.name, *op.aliases):
        OPS[name] = op
    return op


def register_merge(op: Op) -> Op:
    """Enter a merge op (called with tensor references: ``add(@a, @b)``) in the merge table."""
    MERGES[op.name] = op
    return op
