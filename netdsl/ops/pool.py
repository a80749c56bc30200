"""Pooling: max and average, over a kernel, globally, or adaptively (PyTorch's uneven windows included)."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Attrs, OpError, Option, Pair, Shape, _need_rank, fmt_shape
from .windowed import Windowed, _onnx_pads, _out_size


class Pool(Windowed):
    """Base of max and average pooling: a kernel (``maxpool 3x3 /2``), ``global``, or ``adaptive HxW``.

    A subclass sets ``name``, ``summary``, ``onnx_op`` (the ONNX pool it lowers to) and ``onnx_ops``, and may
    add ``options`` and ONNX attributes (:meth:`onnx_attrs`).
    """

    padding_below_kernel = True
    onnx_op: str = ""
    options = (Option("kernel", "pair", None, positional=True), Option("stride", "pair", None),
               Option("pad", "pad", (0, 0), aliases=("padding",)), Option("ceil", "flag"),
               Option("floor", "flag"), Option("global", "flag"), Option("adaptive", "pair", None))

    def onnx_attrs(self, a: Attrs) -> dict[str, object]:
        """ONNX attributes of the pool beyond kernel, strides, pads and ceil_mode."""
        return {}

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
        hw, pads = self._spatial(a, x, ceil=a.ceil)
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
        return None if a["global"] or a.adaptive is not None else super().dropped(a, inputs)

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
        extra = self.onnx_attrs(a)
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


_SUMMARY = "pooling: {name} KxK [/S] [pad P] [ceil|floor] | {name} global | {name} adaptive HxW"
_LOWERED_WITH = ("Identity", "Slice", "Concat", "Gather")  # adaptive pooling with uneven windows, ceil crops


class MaxPool(Pool):
    name = "maxpool"
    summary = _SUMMARY.format(name=name)
    onnx_op = "MaxPool"
    onnx_ops = ("MaxPool", "GlobalMaxPool", *_LOWERED_WITH)


class AvgPool(Pool):
    name = "avgpool"
    summary = _SUMMARY.format(name=name)
    onnx_op = "AveragePool"
    onnx_ops = ("AveragePool", "GlobalAveragePool", *_LOWERED_WITH)
    options = (*Pool.options, Option("exclude_pad", "flag"))

    def onnx_attrs(self, a):
        return {"count_include_pad": 0 if a.get("exclude_pad") else 1}  # PyTorch counts padding by default


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
