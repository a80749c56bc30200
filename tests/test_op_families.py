"""The op families (netdsl/ops/): behaviour comes from the base classes and their attributes, not from names."""

from __future__ import annotations

import pytest

from netdsl.ops import OPS, Concat, MaxPool, OpError, Pointwise


def _infer(op, args, shape):
    attrs = op.bind(args)
    return op.infer(attrs, [shape])


def _args(*values):
    from netdsl.ops import ArgValue

    out = []
    for v in values:
        kind = "word" if isinstance(v, str) else "dims" if isinstance(v, tuple) else "value"
        out.append(ArgValue(kind, v, None))
    return out


class Subsample(MaxPool):
    """A pooling op whose name does not say "pool"."""

    name = "subsample"


def test_a_pool_of_any_name_keeps_its_padding_below_the_kernel():
    with pytest.raises(OpError, match="must be smaller than the kernel"):
        _infer(Subsample(), _args((2, 2), "pad", 2), (3, 8, 8))
    shape, _ = _infer(Subsample(), _args((2, 2), "pad", 1), (3, 8, 8))
    assert shape == (3, 5, 5)


def test_conv_padding_may_exceed_its_kernel():
    shape, attrs = _infer(OPS["conv"], _args(4, (1, 1), "pad", 2), (3, 8, 8))
    assert shape == (4, 12, 12) and attrs.pads == (2, 2, 2, 2)


def test_concat_by_another_name_concatenates():
    class Cat(Concat):
        name = "cat"

    shape, _ = Cat().infer(Cat().bind([]), [(2, 4, 4), (3, 4, 4)])
    assert shape == (5, 4, 4)
    with pytest.raises(OpError, match="same spatial size"):
        Cat().infer(Cat().bind([]), [(2, 4, 4), (3, 2, 2)])


def test_a_pointwise_op_lowers_through_apply():
    emitted = []

    class Negate(Pointwise):
        name = "negate"

        def apply(self, b, node, x):
            b.emit("Neg", [x])

    class Builder:
        def input(self, node, i):
            return f"{node}:in{i}"

        def emit(self, op_type, inputs, out=None, **attrs):
            emitted.append((op_type, inputs))

    Negate().lower(Builder(), "n")
    assert emitted == [("Neg", ["n:in0"])]
    assert Negate().infer(Negate().bind([]), [(3, 4, 4)])[0] == (3, 4, 4)
