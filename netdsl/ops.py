"""The op table: every layer kind of the language, defined in one place.

An :class:`Op` states, for its layer kind:

* its arguments (positional slots, keyword options, flags, defaults: PyTorch's where it has one),
* its shape rule (:meth:`Op.infer`), which also resolves derived attributes such as ``pad same``,
* its weights (names, shapes, initialisation) and hence its parameter count,
* its multiply-accumulate count (conv and fc only; everything else is 0 by convention),
* its receptive-field effect,
* its ONNX lowering.

Adding an op means adding one class and one ``register`` line at the bottom of this file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .graph import Node
    from .lower import OnnxBuilder

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
    ``bool`` (``true``/``false``/0/1).
    """

    name: str
    kind: str
    default: object = None
    positional: bool = False
    required: bool = False
    aliases: tuple[str, ...] = ()
    help: str = ""


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
    """One tensor a layer owns. ``kind`` is ``param`` (trainable, counted) or ``buffer`` (BN statistics)."""

    suffix: str
    shape: Shape
    kind: str
    init: str  # he_normal, zeros, ones
    fan_in: int = 1


@dataclass(frozen=True, slots=True)
class ArgValue:
    """A layer argument after evaluation: a number, a size, a stride, or a bare word."""

    kind: str  # value, dims, stride, word
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
    if opt.kind == "bool":
        if v in (0, 1, True, False):
            return bool(v)
        raise OpError(f"`{opt.name}` must be true or false, got {_show(v)}")
    raise AssertionError(opt.kind)


def _show(v: object) -> str:
    return fmt_shape(v) if isinstance(v, tuple) else str(v)


# ----------------------------------------------------------------------------- base op
class Op:
    """Base class of all layer kinds; see the module docstring."""

    name: str = ""
    aliases: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()
    summary: str = ""
    onnx_ops: tuple[str, ...] = ()  # ONNX op types the lowering may emit

    # -- arguments
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
                if nxt.kind == "word":
                    if opt.kind == "pad" and value == "same" or opt.kind == "bool" and value in ("true", "false"):
                        value = {"true": True, "false": False}.get(value, value)
                    else:
                        takes = {"int": "an integer", "float": "a number", "pair": "N or HxW",
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

    def lower(self, b: OnnxBuilder, node: Node) -> None:
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


# ----------------------------------------------------------------------------- sliding windows
def _pads(size: Pair, kernel: Pair, stride: Pair, pad, dilation: Pair) -> tuple[int, int, int, int]:
    """(top, left, bottom, right). ``same`` pads like TensorFlow/PyTorch: output = ceil(in/stride), extra at the end."""
    if pad == "same":
        out = []
        for n, k, s, d in zip(size, kernel, stride, dilation, strict=True):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            out.append((total // 2, total - total // 2))
        return (out[0][0], out[1][0], out[0][1], out[1][1])
    return (pad[0], pad[1], pad[0], pad[1])


def _out_size(n: int, k: int, s: int, lo: int, hi: int, d: int, ceil: bool) -> int:
    eff = (k - 1) * d + 1
    span = n + lo + hi - eff
    if span < 0:
        return 0
    if not ceil:
        return span // s + 1
    out = -(-span // s) + 1
    if (out - 1) * s >= n + lo:  # PyTorch: the last window must start inside the input or left padding
        out -= 1
    return out


class Windowed(Op):
    """Shared rule of conv and pooling: floor((W - F + 2P) / S) + 1 per spatial axis."""

    def _spatial(self, attrs: Attrs, x: Shape, ceil: bool = False) -> tuple[Pair, tuple[int, int, int, int]]:
        kernel, stride, dil = attrs.kernel, attrs.stride, attrs.get("dilation") or (1, 1)
        pads = _pads(x[1:], kernel, stride, attrs.pad, dil)
        if pads[0] >= (kernel[0] - 1) * dil[0] + 1 and attrs.pad != "same" and self.name.endswith("pool") \
                or pads[1] >= (kernel[1] - 1) * dil[1] + 1 and attrs.pad != "same" and self.name.endswith("pool"):
            raise OpError(f"padding {attrs.pad[0]}x{attrs.pad[1]} must be smaller than the kernel "
                          f"{fmt_shape(kernel)} for pooling")
        hw = tuple(_out_size(n, k, s, lo, hi, d, ceil)
                   for n, k, s, lo, hi, d in zip(x[1:], kernel, stride, pads[:2], pads[2:], dil, strict=True))
        if min(hw) <= 0:
            eff = tuple((k - 1) * d + 1 for k, d in zip(kernel, dil, strict=True))
            dilated = " (dilated)" if tuple(dil) != (1, 1) else ""
            padded = f" padded by {pads[0]}x{pads[1]}" if any(pads) else ""
            raise OpError(f"{self.name} kernel {fmt_shape(eff)}{dilated} is larger than its input "
                          f"{fmt_shape(x[1:])}{padded}")
        return hw, pads

    def window(self, attrs, inputs):
        dil = attrs.get("dilation") or (1, 1)
        return tuple((k - 1) * d + 1 for k, d in zip(attrs.kernel, dil, strict=True)), attrs.stride

    def dropped(self, attrs, inputs):
        if attrs.get("ceil") or attrs.get("floor") or attrs.pad == "same":  # `floor`: the drop is intended
            return None
        x = inputs[0]
        dil = attrs.get("dilation") or (1, 1)
        lost = []
        for axis, n, k, s, d, lo, hi in zip(("rows", "columns"), x[1:], attrs.kernel, attrs.stride, dil,
                                            attrs.pads[:2], attrs.pads[2:], strict=True):
            eff = (k - 1) * d + 1
            if (n + lo + hi - eff) % s == 0 or s > eff:
                continue  # fits exactly, or the stride skips inputs everywhere by design
            out = (n + lo + hi - eff) // s + 1
            unread = (n + lo + hi) - ((out - 1) * s + eff) - hi  # trailing real inputs no window reads
            if unread > 0:
                lost.append(f"the last {unread} input {axis if unread > 1 else axis[:-1]}")
        if not lost:
            return None
        return (f"{self.name} {fmt_shape(attrs.kernel)} /{_stride_text(attrs.stride)} does not tile the input "
                f"{fmt_shape(x[1:])} (W - F + 2P is not divisible by the stride): "
                + " and ".join(lost) + " are dropped")


def _stride_text(s: Pair) -> str:
    return str(s[0]) if s[0] == s[1] else fmt_shape(s)


def _onnx_pads(p: tuple[int, int, int, int]) -> list[int]:
    return list(p)


# ----------------------------------------------------------------------------- conv, fc, norms
class Conv(Op):
    name = "conv"
    summary = "2-D convolution: conv OUT KxK [/S] [pad P|same] [dilation D] [groups G|depthwise] [nobias] [floor]"
    onnx_ops = ("Conv",)
    options = (
        Option("out", "int", positional=True, required=True, help="the number of output channels"),
        Option("kernel", "pair", positional=True, required=True, help="a kernel size such as 3x3"),
        Option("stride", "pair", (1, 1)),
        Option("pad", "pad", (0, 0), aliases=("padding",)),
        Option("dilation", "pair", (1, 1), aliases=("dil",)),
        Option("groups", "int", 1),
        Option("depthwise", "flag"),
        Option("bias", "bool", True),
        Option("nobias", "flag"),
        Option("floor", "flag", help="output sizes round down on purpose: no warning for unread rows/columns"),
    )

    def validate(self, a):
        if a.out <= 0:
            raise OpError(f"conv needs a positive number of output channels, got {a.out}")
        for what in ("kernel", "stride", "dilation"):
            if min(a[what]) <= 0:
                raise OpError(f"conv {what} must be positive, got {fmt_shape(a[what])}")
        if a.pad != "same" and min(a.pad) < 0:
            raise OpError(f"conv padding must not be negative, got {fmt_shape(a.pad)}")
        if a.groups <= 0:
            raise OpError(f"conv groups must be positive, got {a.groups}")
        if a.nobias:
            a["bias"] = False

    def infer(self, a, inputs):
        (x,) = inputs
        _need_rank("conv", x, 3)
        groups = x[0] if a.depthwise else a.groups
        if x[0] % groups or a.out % groups:
            raise OpError(f"groups {groups} must divide both the input channels ({x[0]}) "
                          f"and the output channels ({a.out})")
        a = a.with_(groups=groups, in_channels=x[0])
        hw, pads = Windowed._spatial(self, a, x)
        return (a.out, *hw), a.with_(pads=pads)

    def weights(self, a, inputs):
        fan_in = a.in_channels // a.groups * a.kernel[0] * a.kernel[1]
        w = [WeightSpec("weight", (a.out, a.in_channels // a.groups, *a.kernel), "param", "he_normal", fan_in)]
        if a.bias:
            w.append(WeightSpec("bias", (a.out,), "param", "zeros"))
        return w

    def macs(self, a, inputs, out):
        return out[0] * out[1] * out[2] * (a.in_channels // a.groups) * a.kernel[0] * a.kernel[1]

    window = Windowed.window
    dropped = Windowed.dropped

    def lower(self, b, node):
        a = node.attrs
        ins = [b.input(node, 0), b.weight(node, "weight")] + ([b.weight(node, "bias")] if a.bias else [])
        b.emit("Conv", ins, kernel_shape=list(a.kernel), strides=list(a.stride), pads=_onnx_pads(a.pads),
               dilations=list(a.dilation), group=a.groups)


class Fc(Op):
    name = "fc"
    aliases = ("linear",)
    summary = "fully connected layer: fc OUT [nobias]; the input must be flat (use flatten)"
    onnx_ops = ("Gemm",)
    options = (
        Option("out", "int", positional=True, required=True, help="the number of output features"),
        Option("bias", "bool", True),
        Option("nobias", "flag"),
    )

    def validate(self, a):
        if a.out <= 0:
            raise OpError(f"fc needs a positive number of outputs, got {a.out}")
        if a.nobias:
            a["bias"] = False

    def infer(self, a, inputs):
        (x,) = inputs
        _need_rank("fc", x, 1, "add `flatten` before it")
        return (a.out,), a.with_(in_features=x[0])

    def weights(self, a, inputs):
        w = [WeightSpec("weight", (a.out, a.in_features), "param", "he_normal", a.in_features)]
        if a.bias:
            w.append(WeightSpec("bias", (a.out,), "param", "zeros"))
        return w

    def macs(self, a, inputs, out):
        return a.in_features * a.out

    def lower(self, b, node):
        ins = [b.input(node, 0), b.weight(node, "weight")]
        if node.attrs.bias:
            ins.append(b.weight(node, "bias"))
        b.emit("Gemm", ins, transB=1)


class BatchNorm(Op):
    name = "bn"
    aliases = ("batchnorm",)
    summary = "batch normalisation (inference: running statistics): bn [eps E] [momentum M]"
    onnx_ops = ("BatchNormalization",)
    options = (Option("eps", "float", 1e-5), Option("momentum", "float", 0.1))

    def infer(self, a, inputs):
        (x,) = inputs
        if len(x) not in (1, 3):
            raise OpError(f"bn expects a CxHxW or flat input, got {fmt_shape(x)}")
        return x, a.with_(channels=x[0])

    def weights(self, a, inputs):
        c = (a.channels,)
        return [WeightSpec("weight", c, "param", "ones"), WeightSpec("bias", c, "param", "zeros"),
                WeightSpec("running_mean", c, "buffer", "zeros"), WeightSpec("running_var", c, "buffer", "ones")]

    def lower(self, b, node):
        ins = [b.input(node, 0)] + [b.weight(node, s) for s in ("weight", "bias", "running_mean", "running_var")]
        b.emit("BatchNormalization", ins, epsilon=node.attrs.eps)


class Lrn(Op):
    name = "lrn"
    summary = "local response normalisation across channels (AlexNet): lrn SIZE [alpha A] [beta B] [k K]"
    onnx_ops = ("LRN", "Mul", "Unsqueeze", "Pad", "AveragePool", "Squeeze", "Add", "Pow", "Div")
    options = (Option("size", "int", 5, positional=True), Option("alpha", "float", 1e-4),
               Option("beta", "float", 0.75), Option("k", "float", 1.0, aliases=("bias",)))

    def validate(self, a):
        if a.size <= 0:
            raise OpError(f"lrn size must be positive, got {a.size}")

    def infer(self, a, inputs):
        _need_rank("lrn", inputs[0], 3)
        return inputs[0], a

    def lower(self, b, node):
        a = node.attrs  # PyTorch's LocalResponseNorm and ONNX's LRN both divide alpha by size
        x = b.input(node, 0)
        if a.size % 2:
            b.emit("LRN", [x], size=a.size, alpha=a.alpha, beta=a.beta, bias=a.k)
            return
        # Even sizes: ONNX Runtime's LRN accepts odd sizes only, and ONNX centres an even window one channel
        # later than PyTorch. PyTorch's formula spelled out: x / (k + alpha * mean(x^2 over channels
        # c - size//2 .. c + (size-1)//2, zero-padded)) ** beta.
        c, h, w = node.in_shapes[0]
        n = a.size
        sq = b.emit("Mul", [x, x], out=b.tmp(node, "square"))
        sq5 = b.emit("Unsqueeze", [sq, b.const("axes1", [1], "int64")], out=b.tmp(node, "square5", (1, c, h, w)))
        pad = b.const(f"{node.name}.pads", [0, 0, n // 2, 0, 0, 0, 0, (n - 1) // 2, 0, 0], "int64")
        padded = b.emit("Pad", [sq5, pad], out=b.tmp(node, "padded", (1, c + n - 1, h, w)))
        mean5 = b.emit("AveragePool", [padded], kernel_shape=[n, 1, 1], out=b.tmp(node, "mean5", (1, c, h, w)))
        mean = b.emit("Squeeze", [mean5, b.const("axes1", [1], "int64")], out=b.tmp(node, "mean"))
        scaled = b.emit("Mul", [mean, b.const(f"{node.name}.alpha", a.alpha, "float32")], out=b.tmp(node, "scaled"))
        base = b.emit("Add", [scaled, b.const(f"{node.name}.k", a.k, "float32")], out=b.tmp(node, "base"))
        div = b.emit("Pow", [base, b.const(f"{node.name}.beta", a.beta, "float32")], out=b.tmp(node, "divisor"))
        b.emit("Div", [x, div])


# ----------------------------------------------------------------------------- pooling
class Pool(Op):
    summary = "pooling: {name} KxK [/S] [pad P] [ceil|floor] | {name} global | {name} adaptive HxW"
    onnx_ops = ()

    def __init__(self, name: str, onnx_op: str):
        self.name = name
        self.onnx_op = onnx_op
        self.onnx_ops = (onnx_op, "Global" + onnx_op, "Identity", "Slice", "Concat", "Gather")
        self.summary = Pool.summary.format(name=name)
        opts = [Option("kernel", "pair", None, positional=True), Option("stride", "pair", None),
                Option("pad", "pad", (0, 0), aliases=("padding",)), Option("ceil", "flag"),
                Option("floor", "flag"), Option("global", "flag"), Option("adaptive", "pair", None)]
        if name == "avgpool":
            opts.append(Option("exclude_pad", "flag"))
        self.options = tuple(opts)

    def validate(self, a):
        if a.ceil and a.floor:
            raise OpError(f"{self.name} takes `ceil` or `floor`, not both")
        modes = sum([a.kernel is not None, a["global"], a.adaptive is not None])
        if modes != 1:
            raise OpError(f"{self.name} needs exactly one of a kernel size, `global` or `adaptive HxW`")
        if a.kernel is not None:
            if a.stride is None:
                a["stride"] = a.kernel  # PyTorch: stride defaults to the kernel size
            for what in ("kernel", "stride"):
                if min(a[what]) <= 0:
                    raise OpError(f"{self.name} {what} must be positive, got {fmt_shape(a[what])}")
            if a.pad != "same" and min(a.pad) < 0:
                raise OpError(f"padding must not be negative, got {fmt_shape(a.pad)}")
        if a.adaptive is not None and min(a.adaptive) <= 0:
            raise OpError(f"{self.name} adaptive output size must be positive, got {fmt_shape(a.adaptive)}")

    def infer(self, a, inputs):
        (x,) = inputs
        _need_rank(self.name, x, 3)
        if a["global"]:
            return (x[0], 1, 1), a
        if a.adaptive is not None:  # any output size, as PyTorch (windows may be uneven and overlap)
            oh, ow = a.adaptive
            windows = (adaptive_windows(x[1], oh), adaptive_windows(x[2], ow))
            a = a.with_(windows=windows, pads=(0, 0, 0, 0))
            fixed = [_fixed_pool(w) for w in windows]
            if fixed[0] and fixed[1]:  # one ordinary pool computes it (always so when the output divides the input)
                a = a.with_(kernel=(fixed[0][0], fixed[1][0]), stride=(fixed[0][1], fixed[1][1]))
            return (x[0], oh, ow), a
        hw, pads = Windowed._spatial(self, a, x, ceil=a.ceil)
        return (x[0], *hw), a.with_(pads=pads)

    def window(self, a, inputs):
        if a["global"]:
            return tuple(inputs[0][1:]), (1, 1)
        if a.adaptive is not None:  # the largest window; the mean step between windows when they are uneven
            kernel = tuple(max(end - start for start, end in w) for w in a.windows)
            stride = tuple(f[1] if f else n / len(w)
                           for f, n, w in zip(map(_fixed_pool, a.windows), inputs[0][1:], a.windows, strict=True))
            return kernel, stride
        return a.kernel, a.stride

    def dropped(self, a, inputs):
        return None if a["global"] or a.adaptive is not None else Windowed.dropped(self, a, inputs)

    def lower(self, b, node):
        a = node.attrs
        if a["global"]:
            b.emit("Global" + self.onnx_op, [b.input(node, 0)])
            return
        if a.adaptive is not None and a.kernel is None:
            self._lower_uneven(b, node)
            return
        if a.adaptive is not None and a.kernel == (1, 1) and a.stride == (1, 1):
            b.emit("Identity", [b.input(node, 0)])
            return
        extra = {}
        if self.onnx_op == "AveragePool":
            extra["count_include_pad"] = 0 if a.get("exclude_pad") else 1  # PyTorch counts padding by default
        x = b.input(node, 0)
        pads, ceil_mode, crop = _ceil_pads(a, node.in_shapes[0], node.shape)
        if crop is not None:  # drop trailing rows/columns no window reads (see _ceil_pads)
            c = node.in_shapes[0][0]
            x = b.emit("Slice", [x, b.const("zeros2", [0, 0], "int64"),
                                 b.const(f"{node.name}.crop_ends", list(crop), "int64"),
                                 b.const("axes_hw", [2, 3], "int64")],
                       out=b.tmp(node, "cropped", (c, *crop)))
        b.emit(self.onnx_op, [x], kernel_shape=list(a.kernel), strides=list(a.stride),
               pads=_onnx_pads(pads), ceil_mode=ceil_mode, **extra)

    def _lower_uneven(self, b, node):
        """Adaptive pooling that no single pool computes, one spatial axis at a time (a window is rows x columns,
        and both the mean and the max over it are the mean/max over columns of the mean/max over rows). Per
        axis: an ordinary pool when its windows are one; otherwise a stride-1 pool of each window size that
        occurs (at most two: ceil(in/out) and one more), concatenated along the axis, then a Gather of each output
        cell's window start in that concatenation. Exact: every cell averages (or maxes) exactly its window."""
        shape = list(node.in_shapes[0])
        steps = [(axis, w) for axis, w, n in zip((2, 3), node.attrs.windows, shape[1:], strict=True)
                 if w != tuple((i, i + 1) for i in range(n))]  # an axis whose windows are single cells: as is
        x = b.input(node, 0)
        for i, (axis, windows) in enumerate(steps):
            final = i == len(steps) - 1
            side = "rows" if axis == 2 else "columns"
            fixed = _fixed_pool(windows)
            shape[axis - 1] = len(windows)
            if fixed:
                k, s = fixed
                x = b.emit(self.onnx_op, [x], kernel_shape=[k, 1] if axis == 2 else [1, k],
                           strides=[s, 1] if axis == 2 else [1, s],
                           out=None if final else b.tmp(node, f"pooled_{side}", tuple(shape)))
                continue
            n = node.in_shapes[0][axis - 1]
            parts, offset, index = [], 0, {}
            for size in sorted({end - start for start, end in windows}):
                index[size] = offset
                offset += n - size + 1
                if size == 1:  # a window of one: the input itself
                    parts.append(x)
                    continue
                pooled = list(shape)
                pooled[axis - 1] = n - size + 1
                parts.append(b.emit(self.onnx_op, [x], kernel_shape=[size, 1] if axis == 2 else [1, size],
                                    strides=[1, 1], out=b.tmp(node, f"{side}_window{size}", tuple(pooled))))
            if len(parts) > 1:
                stacked = list(shape)
                stacked[axis - 1] = offset
                source = b.emit("Concat", parts, axis=axis, out=b.tmp(node, f"{side}_windows", tuple(stacked)))
            else:
                source = parts[0]
            starts = [index[end - start] + start for start, end in windows]
            x = b.emit("Gather", [source, b.const(f"{node.name}.{side}", starts, "int64")], axis=axis,
                       out=None if final else b.tmp(node, f"pooled_{side}", tuple(shape)))


def adaptive_windows(n_in: int, n_out: int) -> tuple[Pair, ...]:
    """PyTorch's adaptive pooling windows along one axis: ``[start, end)`` of each of ``n_out`` cells, with
    start = floor(i * n_in / n_out) and end = ceil((i + 1) * n_in / n_out). When ``n_out`` does not divide
    ``n_in`` they overlap and may differ in size: 14 -> 4 gives [0,4) [3,7) [7,11) [10,14)."""
    return tuple((i * n_in // n_out, -(-(i + 1) * n_in // n_out)) for i in range(n_out))


def _fixed_pool(windows: Sequence[Pair]) -> Pair | None:
    """(kernel, stride) of the ordinary pool whose windows these are (one size, starts 0, s, 2s, ...), else None."""
    k = windows[0][1] - windows[0][0]
    s = windows[1][0] - windows[0][0] if len(windows) > 1 else k
    if s > 0 and all(end - start == k and start == i * s for i, (start, end) in enumerate(windows)):
        return k, s
    return None


def _ceil_pads(a: Attrs, x: Shape, out: Shape) -> tuple[tuple[int, int, int, int], int, Pair | None]:
    """ONNX pads, ceil_mode and an optional input crop (H, W) that give PyTorch's pooled size under every
    opset's shape inference.

    PyTorch's ceil mode drops a last window that would start in the right padding; ONNX shape inference
    before opset 22 does not, and would contradict the declared shape (onnx.checker full_check fails).
    Where ceil mode changes no size, floor mode is used. Otherwise, on an axis where that rule applied, the end
    pad is trimmed (or, if that is not enough, the unread trailing input cropped) so that the older formula
    lands on the same size. The windows, hence the values, are unchanged.
    """
    lo, hi = a.pads[:2], a.pads[2:]
    floor = [_out_size(n, k, s, p, q, 1, False) for n, k, s, p, q in zip(x[1:], a.kernel, a.stride, lo, hi,
                                                                          strict=True)]
    if not a.ceil or floor == list(out[1:]):
        return a.pads, 0, None
    # end pad at which the last window ends exactly at the padded edge (negative: it ends inside the input)
    exact = [(o - 1) * s + k - n - p for n, k, s, p, o in zip(x[1:], a.kernel, a.stride, lo, out[1:], strict=True)]
    ends = [q if f != o else e for q, f, o, e in zip(hi, floor, out[1:], exact, strict=True)]
    if min(ends) >= 0:
        return (lo[0], lo[1], ends[0], ends[1]), 1, None
    crop = (x[1] + min(ends[0], 0), x[2] + min(ends[1], 0))
    return (lo[0], lo[1], max(ends[0], 0), max(ends[1], 0)), 1, crop


# ----------------------------------------------------------------------------- pointwise activations
class Pointwise(Op):
    """An elementwise op: shape unchanged, no weights; lowered by a function of the builder."""

    def __init__(self, name: str, summary: str, lower: Callable, onnx_ops: tuple[str, ...],
                 options: tuple[Option, ...] = (), aliases: tuple[str, ...] = ()):
        self.name, self.summary, self._lower = name, summary, lower
        self.onnx_ops, self.options, self.aliases = onnx_ops, options, aliases

    def lower(self, b, node):
        self._lower(b, node, b.input(node, 0))


def _hardswish(b, node, x):
    if b.opset >= 14:
        b.emit("HardSwish", [x])
    else:
        hs = b.emit("HardSigmoid", [x], alpha=1.0 / 6, beta=0.5, out=b.tmp(node, "hardsigmoid"))
        b.emit("Mul", [x, hs])


def _silu(b, node, x):
    s = b.emit("Sigmoid", [x], out=b.tmp(node, "sigmoid"))
    b.emit("Mul", [x, s])


def _gelu(b, node, x):
    if b.opset >= 20:
        b.emit("Gelu", [x])
        return
    # 0.5 * x * (1 + erf(x / sqrt(2))), PyTorch's exact GELU
    t = b.emit("Div", [x, b.const("sqrt2", math.sqrt(2.0), "float32")], out=b.tmp(node, "scaled"))
    e = b.emit("Erf", [t], out=b.tmp(node, "erf"))
    p = b.emit("Add", [e, b.const("one", 1.0, "float32")], out=b.tmp(node, "erf_plus_1"))
    h = b.emit("Mul", [x, b.const("half", 0.5, "float32")], out=b.tmp(node, "half_x"))
    b.emit("Mul", [h, p])


class Softmax(Op):
    name = "softmax"
    summary = "softmax over the channel axis"
    onnx_ops = ("Softmax",)

    def lower(self, b, node):
        b.emit("Softmax", [b.input(node, 0)], axis=1)


class Dropout(Op):
    name = "dropout"
    aliases = ("droppath", "stochastic_depth")
    summary = "dropout / stochastic depth: identity at inference (dropout P)"
    onnx_ops = ("Identity",)
    options = (Option("p", "float", 0.5, positional=True),)

    def validate(self, a):
        if not 0.0 <= a.p <= 1.0:
            raise OpError(f"dropout probability must be in [0, 1], got {a.p}")

    def lower(self, b, node):
        b.emit("Identity", [b.input(node, 0)])


class Identity(Op):
    name = "identity"
    summary = "passes its input through"
    onnx_ops = ("Identity",)

    def lower(self, b, node):
        b.emit("Identity", [b.input(node, 0)])


class Flatten(Op):
    name = "flatten"
    summary = "CxHxW -> C*H*W"
    onnx_ops = ("Flatten",)

    def infer(self, a, inputs):
        (x,) = inputs
        return (math.prod(x),), a

    def window(self, a, inputs):
        x = inputs[0]
        return (tuple(x[1:]), (1, 1)) if len(x) == 3 else None

    def lower(self, b, node):
        b.emit("Flatten", [b.input(node, 0)], axis=1)


class ChannelShuffle(Op):
    name = "channel_shuffle"
    summary = "ShuffleNet's channel shuffle: channel_shuffle GROUPS"
    onnx_ops = ("Reshape", "Transpose")
    options = (Option("groups", "int", positional=True, required=True, help="the number of groups"),)

    def infer(self, a, inputs):
        (x,) = inputs
        _need_rank("channel_shuffle", x, 3)
        if a.groups <= 0 or x[0] % a.groups:
            raise OpError(f"channel_shuffle groups {a.groups} must divide the channels ({x[0]})")
        return x, a

    def lower(self, b, node):
        c, h, w = node.in_shapes[0]
        g = node.attrs.groups
        r = b.emit("Reshape", [b.input(node, 0), b.const(f"{node.name}.shape5", [-1, g, c // g, h, w], "int64")],
                   out=b.tmp(node, "grouped", (g, c // g, h, w)))
        t = b.emit("Transpose", [r], perm=[0, 2, 1, 3, 4], out=b.tmp(node, "transposed", (c // g, g, h, w)))
        b.emit("Reshape", [t, b.const(f"{node.name}.shape4", [-1, c, h, w], "int64")])


class Slice(Op):
    """A contiguous range of channels, PyTorch's ``x[:, start:end]``: ShuffleNet v2's channel split is
    ``slice 0 c // 2`` for one half and ``slice c // 2 c`` for the other (``torch.chunk(x, 2, dim=1)``)."""

    name = "slice"
    summary = "channels START..END-1 of the input: slice START END (PyTorch's x[:, START:END])"
    onnx_ops = ("Slice",)
    options = (Option("start", "int", positional=True, required=True, help="the first channel (from 0)"),
               Option("end", "int", positional=True, required=True, help="the end channel (exclusive)"))

    def infer(self, a, inputs):
        (x,) = inputs
        if not 0 <= a.start < a.end <= x[0]:
            raise OpError(f"slice {a.start} {a.end} must select a non-empty range of the {x[0]} channels "
                          f"(0 <= START < END <= {x[0]})")
        return (a.end - a.start, *x[1:]), a

    def lower(self, b, node):
        a = node.attrs
        b.emit("Slice", [b.input(node, 0), b.const(f"int64.{a.start}", [a.start], "int64"),
                         b.const(f"int64.{a.end}", [a.end], "int64"), b.const("int64.1", [1], "int64")])


class Upsample(Op):
    name = "upsample"
    summary = "nearest-neighbour upsampling by an integer factor: upsample 2"
    onnx_ops = ("Resize",)
    options = (Option("scale", "int", 2, positional=True),)

    def infer(self, a, inputs):
        (x,) = inputs
        _need_rank("upsample", x, 3)
        if a.scale <= 0:
            raise OpError(f"upsample scale must be positive, got {a.scale}")
        return (x[0], x[1] * a.scale, x[2] * a.scale), a

    def window(self, a, inputs):
        return (1, 1), (1 / a.scale, 1 / a.scale)

    def lower(self, b, node):
        s = float(node.attrs.scale)
        scales = b.const(f"{node.name}.scales", [1.0, 1.0, s, s], "float32")
        b.emit("Resize", [b.input(node, 0), "", scales], mode="nearest", nearest_mode="floor",
               coordinate_transformation_mode="asymmetric")


# ----------------------------------------------------------------------------- merges (several inputs)
class Merge(Op):
    """add / mul / concat of several tensors (residual sums, SE scaling, inception and dense concats)."""

    def __init__(self, name: str, onnx_op: str, summary: str):
        self.name, self.onnx_op, self.summary, self.onnx_ops = name, onnx_op, summary, (onnx_op,)

    def infer(self, a, inputs):
        if len(inputs) < 2:
            raise OpError(f"{self.name} needs at least two tensors, got {len(inputs)}")
        first = inputs[0]
        if self.name == "concat":
            if any(len(s) != len(first) or s[1:] != first[1:] for s in inputs):
                raise OpError("concat needs the same spatial size on every input, got "
                              + ", ".join(fmt_shape(s) for s in inputs))
            return (sum(s[0] for s in inputs), *first[1:]), a
        out = _broadcast(inputs)
        if out is None:
            raise OpError(f"{self.name} needs inputs of one shape (or Cx1x1 against CxHxW), got "
                          + ", ".join(fmt_shape(s) for s in inputs))
        return out, a

    def lower(self, b, node):
        ins = [b.input(node, i) for i in range(len(node.inputs))]
        if self.onnx_op == "Concat":
            b.emit("Concat", ins, axis=1)
            return
        acc = ins[0]
        for i, other in enumerate(ins[1:], start=1):
            last = i == len(ins) - 1
            acc = b.emit(self.onnx_op, [acc, other], out=None if last else b.tmp(node, f"partial{i}"))


def _broadcast(shapes: list[Shape]) -> Shape | None:
    out = max(shapes, key=lambda s: math.prod(s))
    for s in shapes:
        if len(s) != len(out) or any(d != o and d != 1 for d, o in zip(s, out, strict=True)):
            return None
    return out


# ----------------------------------------------------------------------------- registry
OPS: dict[str, Op] = {}
MERGES: dict[str, Merge] = {}


def register(op: Op) -> Op:
    for name in (op.name, *op.aliases):
        OPS[name] = op
    return op


def _simple(onnx_op: str, **attrs):
    return lambda b, node, x: b.emit(onnx_op, [x], **attrs)


register(Conv())
register(Fc())
register(BatchNorm())
register(Lrn())
register(Pool("maxpool", "MaxPool"))
register(Pool("avgpool", "AveragePool"))
register(Pointwise("relu", "max(x, 0)", _simple("Relu"), ("Relu",)))
register(Pointwise("leaky_relu", "leaky ReLU: leaky_relu [SLOPE] (default 0.01)",
                   lambda b, n, x: b.emit("LeakyRelu", [x], alpha=n.attrs.slope), ("LeakyRelu",),
                   (Option("slope", "float", 0.01, positional=True),), aliases=("leakyrelu",)))
register(Pointwise("relu6", "min(max(x, 0), 6)",
                   lambda b, n, x: b.emit("Clip", [x, b.const("zero", 0.0, "float32"),
                                                   b.const("six", 6.0, "float32")]), ("Clip",)))
register(Pointwise("sigmoid", "1 / (1 + exp(-x))", _simple("Sigmoid"), ("Sigmoid",)))
register(Pointwise("tanh", "hyperbolic tangent", _simple("Tanh"), ("Tanh",)))
register(Pointwise("hardswish", "x * relu6(x + 3) / 6", _hardswish, ("HardSwish", "HardSigmoid", "Mul")))
register(Pointwise("hardsigmoid", "relu6(x + 3) / 6 (PyTorch's constants)",
                   _simple("HardSigmoid", alpha=1.0 / 6, beta=0.5), ("HardSigmoid",)))
register(Pointwise("silu", "x * sigmoid(x)", _silu, ("Sigmoid", "Mul"), aliases=("swish",)))
register(Pointwise("gelu", "exact GELU: x * Phi(x)", _gelu, ("Gelu", "Div", "Erf", "Add", "Mul")))
register(Softmax())
register(Dropout())
register(Identity())
register(Flatten())
register(ChannelShuffle())
register(Slice())
register(Upsample())

for _m in (Merge("add", "Add", "elementwise sum: add(@a, @b, ...)"),
           Merge("mul", "Mul", "elementwise product, Cx1x1 broadcast over CxHxW: mul(@a, @b)"),
           Merge("concat", "Concat", "channel concatenation: concat(@a, @b, ...)")):
    MERGES[_m.name] = _m


def all_onnx_ops() -> set[str]:
    """Every ONNX op type the lowering can emit (for the TensorRT support test)."""
    out = set()
    for op in list(OPS.values()) + list(MERGES.values()):
        out.update(op.onnx_ops)
    return out | {"Identity"}
