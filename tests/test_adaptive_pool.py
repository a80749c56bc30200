"""Adaptive pooling with any output size (PyTorch's semantics), checked numerically against numpy.

PyTorch's ``adaptive_{avg,max}_pool2d`` gives output cell ``i`` the input window
``[floor(i * in / out), ceil((i + 1) * in / out))`` per axis. When ``out`` does not divide ``in`` the windows
overlap and may differ in size (GoogLeNet's aux heads: 14 -> 4). netdsl lowers that exactly; these tests run the
ONNX model in ONNX Runtime and compare with a direct numpy implementation of the definition.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import ort_session
from hypothesis import given, settings
from hypothesis import strategies as st

import netdsl
from netdsl.errors import SemanticError
from netdsl.ops import adaptive_windows


def numpy_adaptive(x: np.ndarray, out_hw: tuple[int, int], op: str) -> np.ndarray:
    """The definition, cell by cell, in float64."""
    n, c, h, w = x.shape
    oh, ow = out_hw
    y = np.empty((n, c, oh, ow))
    for i in range(oh):
        r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
        for j in range(ow):
            c0, c1 = (j * w) // ow, -(-((j + 1) * w) // ow)
            window = x[:, :, r0:r1, c0:c1].astype(np.float64)
            y[:, :, i, j] = window.mean(axis=(2, 3)) if op == "avgpool" else window.max(axis=(2, 3))
    return y


def pooled(op: str, in_chw: tuple[int, int, int], out_hw: tuple[int, int], opset: int = 17, dtype: str = "fp32",
           seed: int = 0) -> tuple[netdsl.Network, onnx.ModelProto, np.ndarray, np.ndarray]:
    """(network, model, input, ONNX Runtime's output) of a one-layer network."""
    c, h, w = in_chw
    net = netdsl.load(f"network p {{\n    input x: {c}x{h}x{w}\n    {op} adaptive {out_hw[0]}x{out_hw[1]}\n"
                      f"    output y\n}}\n")
    model = net.to_onnx(opset=opset, dtype=dtype, keep_io_fp32=True)
    x = np.random.default_rng(seed).standard_normal((2, c, h, w)).astype(np.float32)
    (y,) = ort_session(model).run(None, {"x": x})
    return net, model, x, y


def test_windows_are_pytorchs():
    assert adaptive_windows(14, 4) == ((0, 4), (3, 7), (7, 11), (10, 14))  # GoogLeNet's aux heads
    assert adaptive_windows(5, 3) == ((0, 2), (1, 4), (3, 5))  # sizes 2, 3, 2
    assert adaptive_windows(14, 7) == tuple((2 * i, 2 * i + 2) for i in range(7))  # divisible: a plain pool
    assert adaptive_windows(2, 4) == ((0, 1), (0, 1), (1, 2), (1, 2))  # more cells than inputs: repeats


@pytest.mark.parametrize("n_out", range(1, 20))
@pytest.mark.parametrize("n_in", [1, 2, 5, 7, 13, 14, 17])
def test_windows_cover_the_axis_in_order(n_in, n_out):
    w = adaptive_windows(n_in, n_out)
    assert len(w) == n_out and w[0][0] == 0 and w[-1][1] == n_in
    assert all(0 <= s < e <= n_in for s, e in w)
    assert all(a[0] <= b[0] and a[1] <= b[1] and b[0] <= a[1] for a, b in zip(w, w[1:], strict=False))
    assert len({e - s for s, e in w}) <= 2  # at most two window sizes: what the lowering relies on


CASES = [  # (C, H, W), (oh, ow)
    ((3, 14, 14), (4, 4)),  # uniform size 4, stride 3.5: pool + gather per axis
    ((2, 5, 7), (3, 3)),  # rows: sizes 2, 3, 2 (concat of two pools); columns: a plain 3 /2 pool
    ((2, 7, 7), (3, 2)),  # rows 3 /2, columns 4 /3: one ordinary pool
    ((2, 2, 3), (4, 5)),  # more cells than inputs
    ((2, 6, 6), (4, 3)),  # rows uneven, columns divisible
    ((2, 1, 5), (3, 2)),
    ((2, 9, 4), (9, 3)),  # rows unchanged
    ((2, 8, 8), (2, 2)),  # divisible
    ((2, 8, 8), (1, 1)),
    ((2, 13, 11), (6, 5)),
]


@pytest.mark.parametrize("opset", [13, 17, 21])
@pytest.mark.parametrize("op", ["avgpool", "maxpool"])
@pytest.mark.parametrize(("in_chw", "out_hw"), CASES, ids=[f"{c[0][1]}x{c[0][2]}to{c[1][0]}x{c[1][1]}" for c in CASES])
def test_matches_numpy(op, in_chw, out_hw, opset):
    net, model, x, y = pooled(op, in_chw, out_hw, opset)
    onnx.checker.check_model(model, full_check=True)
    assert net.summary().outputs == (("y", (in_chw[0], *out_hw)),)
    assert y.shape == (2, in_chw[0], *out_hw)
    np.testing.assert_allclose(y, numpy_adaptive(x, out_hw, op), rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 16), w=st.integers(1, 16), oh=st.integers(1, 16), ow=st.integers(1, 16),
       op=st.sampled_from(["avgpool", "maxpool"]))
def test_matches_numpy_for_any_sizes(h, w, oh, ow, op):
    _, _, x, y = pooled(op, (2, h, w), (oh, ow))
    np.testing.assert_allclose(y, numpy_adaptive(x, (oh, ow), op), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["avgpool", "maxpool"])
def test_fp16(op):
    _, model, x, y = pooled(op, (4, 14, 14), (4, 4), dtype="fp16")
    assert model.graph.initializer  # the gather indices stay int64 in an fp16 model
    assert all(t.data_type == onnx.TensorProto.INT64 for t in model.graph.initializer)
    np.testing.assert_allclose(y, numpy_adaptive(x, (4, 4), op), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize(("in_chw", "out_hw", "ops"), [
    ((2, 14, 14), (7, 7), ["AveragePool"]),  # divisible: one pool, as before
    ((2, 7, 7), (3, 2), ["AveragePool"]),  # uneven but still one ordinary pool (3 /2 and 4 /3)
    ((2, 6, 6), (6, 6), ["Identity"]),
    ((2, 14, 14), (4, 4), ["AveragePool", "Gather", "AveragePool", "Gather"]),
    ((2, 5, 7), (3, 3), ["AveragePool", "AveragePool", "Concat", "Gather", "AveragePool"]),
    ((2, 9, 4), (9, 3), ["AveragePool"]),  # columns [0,2) [1,3) [2,4): a 2 /1 pool
    ((2, 9, 5), (9, 3), ["AveragePool", "AveragePool", "Concat", "Gather"]),  # rows left alone
])
def test_lowering_uses_the_simplest_exact_form(in_chw, out_hw, ops):
    _, model, _, _ = pooled("avgpool", in_chw, out_hw)
    assert [n.op_type for n in model.graph.node] == ops


def test_receptive_field_is_the_largest_window():
    net = netdsl.load("network p {\n    input x: 1x14x14\n    avgpool adaptive 4x4\n}\n")
    assert net.summary().layers[0].receptive_field == (4, 4)
    net = netdsl.load("network p {\n    input x: 1x5x7\n    maxpool adaptive 3x3\n    conv 1 2x2\n}\n")
    pool, conv = net.summary().layers
    assert pool.receptive_field == (3, 3)  # rows: windows of 2, 3, 2; columns: 3 /2
    assert conv.receptive_field == (3 + 5 / 3, 3 + 2)  # the next layer steps by the mean stride (5/3 rows, 2)


def test_zero_output_size_is_an_error():
    with pytest.raises(SemanticError, match=r"adaptive output size must be positive, got 0x4"):
        netdsl.load("network p {\n    input x: 1x14x14\n    avgpool adaptive 0x4\n}\n")
