"""Language constructs the mobile zoo networks need: comparisons, `slice`, and `floor`.

* Comparisons ``== != < <= > >=`` give 1 or 0. They appear inside parentheses, in call arguments and in
  parameter defaults (never bare where ``<``/``>`` could be a composite's bracket), so ``if (t != 1)`` makes a
  layer optional and ``res=(stride == 1) * (inp == oup)`` derives torchvision's ``use_res_connect``
  (networks/mobilenet_v2.net, mobilenet_v3_large.net, efficientnet_b0.net, regnet_y_400mf.net).
* ``slice START END`` keeps channels START..END-1 (PyTorch's ``x[:, START:END]``): ShuffleNet v2's channel split.
* ``floor`` on conv and pooling says that rounding the output size down is intended: no "does not tile" warning
  (torchvision's SqueezeNet stems read no last row and column).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import dedent

import netdsl
from netdsl.errors import NetdslSyntaxError, SemanticError


# ----------------------------------------------------------------------------- comparisons
@pytest.mark.parametrize(("expr", "value"), [
    ("3 == 3", 1), ("3 == 4", 0), ("3 != 4", 1), ("3 != 3", 0), ("2 < 3", 1), ("3 < 3", 0), ("3 <= 3", 1),
    ("4 <= 3", 0), ("4 > 3", 1), ("3 > 3", 0), ("3 >= 3", 1), ("2 >= 3", 0),
    ("1 + 2 == 3", 1),            # arithmetic binds tighter than a comparison
    ("(2 == 2) * (3 == 4)", 0),   # `and` of two conditions
    ("(2 == 2) + (3 == 4)", 1),
])
def test_comparison_values(expr, value):
    # the value becomes a channel count: 4 + 4 * (expr)
    net = netdsl.load(dedent(f"""
        block b(v) {{
            conv 4 + 4 * v 1x1
        }}
        network n {{
            input x: 3x4x4
            b({expr})
        }}
    """))
    assert net.graph.nodes[-1].shape == (4 + 4 * value, 4, 4)


def test_comparisons_make_layers_optional_and_derive_parameters():
    net = netdsl.load(dedent("""
        block unit(inp, oup, stride, t, res=(stride == 1) * (inp == oup)) {
            conv inp * t 1x1 if (t != 1)
            residual< conv oup 3x3 pad 1 > if res
            conv oup 3x3 /stride pad 1 if (res == 0)
        }
        network n {
            input x: 8x8x8
            a: unit(8, 8, 1, 1)     # residual, no expansion
            b: unit(8, 16, 2, 6)    # expansion, no residual
        }
    """))
    names = [n.name for n in net.graph.nodes]
    assert names == ["x", "a.0", "a.add", "b.0", "b.1"]
    assert net.graph.nodes[-1].shape == (16, 4, 4)
    assert net.graph.nodes[names.index("b.0")].shape == (48, 8, 8)


def test_a_bare_greater_than_is_not_a_comparison():
    # inside a composite, `>` closes it: a comparison must be parenthesised
    src = dedent("""
        network n(t=2) {
            input x: 3x4x4
            residual< relu if t > 1 >
        }
    """)
    with pytest.raises(NetdslSyntaxError):
        netdsl.load(src)
    ok = netdsl.load(src.replace("if t > 1", "if (t > 1)"))
    assert [n.op.name for n in ok.graph.nodes] == ["input", "relu", "add"]


# ----------------------------------------------------------------------------- slice
def test_slice_values_and_channel_split(run_net):
    x = np.arange(2 * 6 * 2 * 2, dtype=np.float32).reshape(2, 6, 2, 2)
    net, _, out = run_net("""
        network n {
            input x: 6x2x2
            inception< slice 0 2 | slice 2 6 -> channel_shuffle 2 >
        }
    """, feeds={"x": x})
    assert [n.shape for n in net.graph.nodes if n.op.name == "slice"] == [(2, 2, 2), (4, 2, 2)]
    rest = x[:, 2:6].reshape(2, 2, 2, 2, 2).transpose(0, 2, 1, 3, 4).reshape(2, 4, 2, 2)
    np.testing.assert_array_equal(out["output"], np.concatenate([x[:, 0:2], rest], axis=1))


def test_slice_of_a_flat_input_and_fp16(run_net):
    net, _, out = run_net("""
        network n {
            input x: 10
            slice 3 7
        }
    """, feeds={"x": np.arange(20, dtype=np.float32).reshape(2, 10)})
    np.testing.assert_array_equal(out["output"], [[3, 4, 5, 6], [13, 14, 15, 16]])
    half = netdsl.Session(net.to_onnx(dtype="fp16", keep_io_fp32=True))
    y = next(iter(half.run({"x": np.arange(20, dtype=np.float32).reshape(2, 10)}).values()))
    np.testing.assert_array_equal(y, [[3, 4, 5, 6], [13, 14, 15, 16]])


@pytest.mark.parametrize(("layer", "message"), [
    ("slice 2 2", "slice 2 2 must select a non-empty range of the 6 channels (0 <= START < END <= 6)"),
    ("slice 0 7", "slice 0 7 must select a non-empty range of the 6 channels"),
    ("slice 4 1", "must select a non-empty range"),
    ("slice 1", "slice needs the end channel (exclusive)"),
])
def test_slice_errors(layer, message):
    with pytest.raises(SemanticError, match=message.replace("(", r"\(").replace(")", r"\)")):
        netdsl.load(f"network n {{\n    input x: 6x4x4\n    {layer}\n}}\n")


# ----------------------------------------------------------------------------- floor
@pytest.mark.parametrize("layer", ["conv 8 3x3 /2", "maxpool 3x3 /2", "avgpool 3x3 /3"])
def test_floor_states_that_dropping_the_last_rows_is_intended(layer):
    plain = netdsl.load(f"network n {{\n    input x: 3x10x10\n    {layer}\n}}\n")
    assert len(plain.warnings) == 1 and "does not tile the input" in plain.warnings[0].message
    floored = netdsl.load(f"network n {{\n    input x: 3x10x10\n    {layer} floor\n}}\n")
    assert floored.warnings == []
    assert floored.graph.nodes[-1].shape == plain.graph.nodes[-1].shape


def test_floor_and_ceil_exclude_each_other():
    with pytest.raises(SemanticError, match="maxpool takes `ceil` or `floor`, not both"):
        netdsl.load("network n {\n    input x: 3x10x10\n    maxpool 3x3 /2 ceil floor\n}\n")
