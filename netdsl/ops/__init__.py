"""The op table: every layer kind of the language, registered in one place (the bottom of this file).

Each op is one class (see :class:`~netdsl.ops.base.Op`) stating its arguments, shape rule, weights,
MACs, receptive-field effect and ONNX lowering. The classes live by family:

* :mod:`netdsl.ops.base`: arguments, the ``Op`` base, the ``Lowering`` interface ops lower through;
* :mod:`netdsl.ops.windowed`: the ``Windowed`` base (sliding windows) and ``Conv``;
* :mod:`netdsl.ops.pool`: ``Pool`` (a ``Windowed``), ``MaxPool``, ``AvgPool``;
* :mod:`netdsl.ops.layers`: ``Fc`` (also per position), ``BatchNorm``, ``Lrn``, ``LayerScale``, ``PRelu``;
* :mod:`netdsl.ops.norm`: ``LayerNorm``, ``GroupNorm``, ``InstanceNorm``;
* :mod:`netdsl.ops.pointwise`: the ``Pointwise`` base, activations, softmax, dropout, identity;
* :mod:`netdsl.ops.reshape`: flatten, channel shuffle, slice, upsample;
* :mod:`netdsl.ops.merge`: the ``Merge`` base, ``Elementwise`` (add, mul), ``Concat`` and ``Mean``.

Adding an op means adding one class to its family's module and one ``register`` line below.
"""

from __future__ import annotations

from .base import (
    MERGES,
    OPS,
    ArgValue,
    Attrs,
    LayerNode,
    Lowering,
    Op,
    OpError,
    Option,
    Pair,
    Shape,
    WeightSpec,
    fmt_shape,
    register,
    register_merge,
    weight_name,
)
from .layers import BatchNorm, Fc, LayerScale, Lrn, PRelu
from .merge import Concat, Elementwise, Mean, Merge
from .norm import GroupNorm, InstanceNorm, LayerNorm
from .pointwise import (
    Activation,
    Dropout,
    Elu,
    Hardtanh,
    Identity,
    Mish,
    Pointwise,
    Softmax,
    Softplus,
    gelu,
    hardswish,
    silu,
    simple,
)
from .pool import AvgPool, MaxPool, Pool, adaptive_windows
from .reshape import ChannelShuffle, Flatten, Slice, Upsample
from .windowed import Conv, Windowed

__all__ = [
    "MERGES", "OPS", "Activation", "ArgValue", "Attrs", "AvgPool", "BatchNorm", "ChannelShuffle", "Concat", "Conv",
    "Dropout", "Elementwise", "Elu", "Fc", "Flatten", "GroupNorm", "Hardtanh", "Identity", "InstanceNorm",
    "LayerNode", "LayerNorm", "LayerScale", "Lowering", "Lrn", "MaxPool", "Mean", "Merge", "Mish", "Op", "OpError",
    "Option", "PRelu", "Pair", "Pointwise", "Pool", "Shape", "Slice", "Softmax", "Softplus", "Upsample",
    "WeightSpec", "Windowed", "adaptive_windows", "all_onnx_ops", "fmt_shape", "register", "register_merge",
    "weight_name",
]

# ----------------------------------------------------------------------------- the table
register(Conv())
register(Fc())
register(BatchNorm())
register(Lrn())
register(MaxPool())
register(AvgPool())
register(Activation("relu", "max(x, 0)", simple("Relu"), ("Relu",)))
register(Activation("leaky_relu", "leaky ReLU: leaky_relu [SLOPE] (default 0.01)",
                    lambda b, n, x: b.emit("LeakyRelu", [x], alpha=n.attrs.slope), ("LeakyRelu",),
                    (Option("slope", "float", 0.01, positional=True),), aliases=("leakyrelu",)))
register(Activation("relu6", "min(max(x, 0), 6)",
                    lambda b, n, x: b.emit("Clip", [x, b.const("zero", 0.0, "float32"),
                                                    b.const("six", 6.0, "float32")]), ("Clip",)))
register(Activation("sigmoid", "1 / (1 + exp(-x))", simple("Sigmoid"), ("Sigmoid",)))
register(Activation("tanh", "hyperbolic tangent", simple("Tanh"), ("Tanh",)))
register(Activation("hardswish", "x * relu6(x + 3) / 6", hardswish, ("HardSwish", "HardSigmoid", "Mul")))
register(Activation("hardsigmoid", "relu6(x + 3) / 6 (PyTorch's constants)",
                    simple("HardSigmoid", alpha=1.0 / 6, beta=0.5), ("HardSigmoid",)))
register(Activation("silu", "x * sigmoid(x)", silu, ("Sigmoid", "Mul"), aliases=("swish",)))
register(Activation("gelu", "exact GELU: x * Phi(x)", gelu, ("Gelu", "Div", "Erf", "Add", "Mul")))
register(Softmax())
register(Dropout())
register(Identity())
register(Flatten())
register(ChannelShuffle())
register(Slice())
register(Upsample())
# normalisations, learned scales and slopes, and more activations (norm.py, layers.py, pointwise.py)
register(LayerNorm())
register(GroupNorm())
register(InstanceNorm())
register(LayerScale())
register(PRelu())
register(Elu())
register(Mish())
register(Softplus())
register(Hardtanh())

register_merge(Elementwise("add", "Add", "elementwise sum: add(@a, @b, ...)"))
register_merge(Elementwise("mul", "Mul", "elementwise product, Cx1x1 broadcast over CxHxW: mul(@a, @b)"))
register_merge(Concat())
register_merge(Mean())


def all_onnx_ops() -> set[str]:
    """Every ONNX op type the lowering can emit (for the TensorRT support test)."""
    out = set()
    for op in list(OPS.values()) + list(MERGES.values()):
        out.update(op.onnx_ops)
    return out | {"Identity"}
