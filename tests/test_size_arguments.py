"""Sizes as values: a block argument or parameter default may be a size literal such as ``1x7``.

A block passes it on to a layer argument that takes a size (kernel, pad, stride, adaptive), so one block covers
square and rectangular kernels (Inception v3's BasicConv2d with ``kernel_size=(1, 7), padding=(0, 3)`` is
``basic_conv(c7, 1x7, p=0x3)``). A size is not a number: arithmetic, comparisons and number-only arguments
reject it with an error that says so.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import dedent

import netdsl
from netdsl.errors import SemanticError

BLOCK = """
    block basic_conv(channels, k=1, p=0, s=1) {
        conv: conv channels k /s pad p nobias -> bn: bn eps 0.001 -> relu
    }
    block pooled(size=2x2) {
        avgpool adaptive size
    }
    network n {
        input x: 3x16x12
        a: basic_conv(8, 1x7, p=0x3)
        b: basic_conv(8, 7x1, p=3x0, s=2x1)
        c: basic_conv(8, 3, p=1)
        d: pooled(4x3)
        e: pooled()
    }
"""


def test_sizes_reach_the_layers(run_net):
    net, model, outs = run_net(BLOCK)
    conv = {n.name: n for n in net.graph.nodes if n.op.name == "conv"}
    assert (conv["a.conv"].attrs.kernel, conv["a.conv"].attrs.pads) == ((1, 7), (0, 3, 0, 3))
    assert (conv["b.conv"].attrs.kernel, conv["b.conv"].attrs.stride) == ((7, 1), (2, 1))
    assert conv["c.conv"].attrs.kernel == (3, 3)
    shapes = {n.name: n.shape for n in net.graph.nodes}
    assert conv["b.conv"].shape == (8, 8, 12) and shapes["d.0"] == (8, 4, 3) and shapes["e.0"] == (8, 2, 2)
    assert net.graph.params == 8 * 3 * 7 + 16 + 8 * 8 * 7 + 16 + 8 * 8 * 9 + 16
    (y,) = outs.values()
    assert y.shape == (2, 8, 2, 2) and np.isfinite(y).all()


@pytest.mark.parametrize(("call", "message"), [
    ("basic_conv(1x7)", "conv's number of output channels must be an integer, got 1x7 (from `channels` = 1x7)"),
    ("basic_conv(8, 1x7 * 2)", None),  # not an expression: a syntax error
])
def test_a_size_is_not_a_number(call, message):
    src = dedent(BLOCK).replace("basic_conv(8, 3, p=1)", call)
    with pytest.raises(netdsl.NetdslError) as info:
        netdsl.load(src)
    if message:
        assert message in str(info.value)


def test_arithmetic_on_a_size_is_an_error():
    src = dedent("""
        block b(k) {
            conv 4 k * 2
        }
        network n {
            input x: 3x16x16
            b(3x3)
        }
    """)
    with pytest.raises(SemanticError, match=r"3x3 is a size, not a number: it can only be passed on to a layer "
                                            r"argument that takes a size"):
        netdsl.load(src)
