"""The mean join (``mean(@a, @b)``, ``mean< >``, FractalNet's flat ``fractal< >``) and networks/fractalnet.net,
checked against an independent PyTorch implementation of the paper's layout written here (skipped without torch).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from helpers import FIXTURES, compile_net, netdsl_main, parity_input, parity_weights, run_onnx, update_golden

import netdsl

ROOT = Path(__file__).resolve().parent.parent
FRACTALNET = ROOT / "networks" / "fractalnet.net"
HAS_TORCH = importlib.util.find_spec("torch") is not None
REFERENCE = FIXTURES / "fractalnet_logits.npz"
WEIGHT_SEED, INPUT_SEED = 3, 4


def _x(shape=(2, 4, 5, 5), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _run(source: str, x: np.ndarray) -> np.ndarray:
    _, model = compile_net(source)
    (out,) = run_onnx(model, {model.graph.input[0].name: x}).values()
    return out


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _relu(x):
    return np.maximum(x, 0)


# ----------------------------------------------------------------------------- the merge
def test_mean_merge_averages_its_inputs_in_one_onnx_node():
    src = """
        network t {
            input x: 4x5x5
            a: relu
            @x -> b: sigmoid
            @x -> c: tanh
            mean(@a, @b, @c)
        }
    """
    net, model = compile_net(src)
    assert [n.op_type for n in model.graph.node if n.op_type == "Mean"] == ["Mean"]
    assert net.summary().layers[-1].params == 0 and net.summary().layers[-1].macs == 0
    x = _x()
    np.testing.assert_allclose(_run(src, x), (_relu(x) + _sigmoid(x) + np.tanh(x)) / 3, rtol=1e-6, atol=1e-6)


def test_mean_merge_does_not_broadcast():
    with pytest.raises(netdsl.SemanticError, match=r"mean needs inputs of one shape, got 4x5x5, 4x1x1"):
        netdsl.load("network t {\n    input x: 4x5x5\n    a: relu\n    b: avgpool global\n    mean(@a, @b)\n}\n")
    with pytest.raises(netdsl.SemanticError, match=r"mean branches disagree on shape: branch 1 4x5x5, branch 2 4x1x1"):
        netdsl.load("network t {\n    input x: 4x5x5\n    mean< relu | avgpool global >\n}\n")


def test_mean_receptive_field_is_the_largest_branch():
    net = netdsl.load("network t {\n    input x: 4x9x9\n    mean< conv 4 3x3 pad 1 | conv 4 5x5 pad 2 >\n}\n")
    assert net.summary().layers[-1].op == "mean"
    assert net.summary().layers[-1].receptive_field == (5, 5)


# ----------------------------------------------------------------------------- the composites
def test_mean_composite_nests_and_fractal_composite_flattens():
    """mean< mean< a | b > | c > is ((a + b) / 2 + c) / 2; fractal< fractal< a | b > | c > is (a + b + c) / 3."""
    x = _x()
    a, b, c = _relu(x), _sigmoid(x), np.tanh(x)
    nested = _run("network t {\n    input x: 4x5x5\n    mean< mean< relu | sigmoid > | tanh >\n}\n", x)
    np.testing.assert_allclose(nested, ((a + b) / 2 + c) / 2, rtol=1e-6, atol=1e-6)
    flat = _run("network t {\n    input x: 4x5x5\n    fractal< fractal< relu | sigmoid > | tanh >\n}\n", x)
    np.testing.assert_allclose(flat, (a + b + c) / 3, rtol=1e-6, atol=1e-6)
    net = netdsl.load("network t {\n    input x: 4x5x5\n    fractal< fractal< relu | sigmoid > | tanh >\n}\n")
    joins = [n for n in net.graph.nodes if n.op.name == "mean"]
    assert [len(n.inputs) for n in joins] == [3]  # the inner join was taken over and left the graph


def test_a_fractal_join_read_elsewhere_stays():
    src = """
        network t {
            input x: 4x5x5
            f: fractal< inner: fractal< relu | sigmoid > | tanh >
            add(@f, @f.inner)
        }
    """
    x = _x()
    a, b, c = _relu(x), _sigmoid(x), np.tanh(x)
    np.testing.assert_allclose(_run(src, x), (a + b + c) / 3 + (a + b) / 2, rtol=1e-6, atol=1e-6)


def test_an_absent_branch_takes_no_part_in_the_join():
    x = _x()
    src = "network t(n=1) {\n    input x: 4x5x5\n    mean< relu if (n > 1) | sigmoid | tanh >\n}\n"
    np.testing.assert_allclose(_run(src, x), (_sigmoid(x) + np.tanh(x)) / 2, rtol=1e-6, atol=1e-6)
    one = netdsl.load("network t(n=1) {\n    input x: 4x5x5\n    fractal< relu if (n > 1) | sigmoid >\n}\n")
    assert [n.op.name for n in one.graph.nodes] == ["input", "sigmoid"]  # one branch left: no join
    with pytest.raises(netdsl.SemanticError, match=r"every branch of mean< > is absent"):
        netdsl.load("network t(n=1) {\n    input x: 4x5x5\n    mean< relu if (n > 1) | tanh if (n > 1) >\n}\n")


def test_comparison_without_parentheses_inside_a_composite_shows_the_fix():
    src = "network t(n=2) {\n    input x: 4x5x5\n    mean< relu if n > 1 | tanh >\n}\n"
    with pytest.raises(netdsl.NetdslSyntaxError) as err:
        netdsl.load(src)
    assert "a comparison inside a composite's `<...>` needs parentheses: write `if (n > 1)`" in str(err.value)
    span = err.value.diagnostics[0].span
    assert (span.line, span.column, span.end_column) == (3, 19, 24)  # `n > 1`
    netdsl.load(src.replace("if n > 1", "if (n > 1)"))  # the fix it shows is accepted


# ----------------------------------------------------------------------------- networks/fractalnet.net
def test_fractalnet_joins_are_flat():
    """Each 4-column block joins 2, 3, 2 and 4 columns at depths 2, 4, 6 and 8, as in the paper's figure 1."""
    net = netdsl.load(FRACTALNET)
    for b in range(1, 6):
        joins = [n for n in net.graph.nodes if n.op.name == "mean" and n.name.startswith(f"block{b}.")]
        assert [len(n.inputs) for n in joins] == [2, 3, 2, 4]
        convs = [n for n in net.graph.nodes if n.op.name == "conv" and n.name.startswith(f"block{b}.")]
        assert len(convs) == 15
    three = netdsl.load(FRACTALNET, args={"cols": 3})
    assert [len(n.inputs) for n in three.graph.nodes if n.op.name == "mean"] == [2, 3] * 5


@pytest.mark.parametrize("depth", ["1", "2"])
def test_fractalnet_summary_shows_the_blocks(depth):
    rc, out, err = netdsl_main("summary", str(FRACTALNET), "--depth", depth)
    assert rc == 0, err
    for b in range(1, 6):
        assert f"block{b} " in out if depth == "1" else f"block{b}.deep " in out and f"block{b}.join " in out
    assert "76,106,634" in out


def _column_unit_name(cols: int, column: int, i: int) -> str:
    """netdsl's name for unit ``i`` of ``column`` (0: the shallowest, one unit; column k has 2^k) of a block of
    ``cols`` columns: column k of f_C is column k-1 of the first f_C-1 (``deep.0``), then of the second."""
    if column == 0:
        return "shallow"
    half = 2 ** (column - 1)
    if i < half:
        return "deep.0." + _column_unit_name(cols - 1, column - 1, i)
    return "deep.1." + _column_unit_name(cols - 1, column - 1, i - half)


def _torch_fractalnet(torch, cols: int, classes: int, channels=(64, 128, 256, 512, 512)):
    """FractalNet for CIFAR written from the paper, column by column as its Caffe implementation lays it out:
    column k of a block has 2^k conv units, each spanning 2^(C-1-k) of the block's 2^(C-1) depth steps; at every
    depth the columns whose unit ends there are averaged, and that mean is the input of their next units."""
    nn = torch.nn

    class Unit(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(cout)

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x)))

    class Block(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.columns = nn.ModuleList(
                nn.ModuleList(Unit(cin if i == 0 else cout, cout) for i in range(2 ** k)) for k in range(cols))

        def forward(self, x):
            state = [x] * cols
            depth = 2 ** (cols - 1)
            for d in range(1, depth + 1):
                ending = [k for k in range(cols) if d % 2 ** (cols - 1 - k) == 0]
                outs = [self.columns[k][d // 2 ** (cols - 1 - k) - 1](state[k]) for k in ending]
                joined = torch.stack(outs).mean(0)
                for k in ending:
                    state[k] = joined
            return joined

    class FractalNet(nn.Module):
        def __init__(self):
            super().__init__()
            ins = (3, *channels[:-1])
            self.blocks = nn.ModuleList(Block(cin, cout) for cin, cout in zip(ins, channels, strict=True))
            self.fc = nn.Linear(channels[-1], classes)

        def forward(self, x):
            for block in self.blocks:
                x = nn.functional.max_pool2d(block(x), 2, 2)
            return self.fc(torch.flatten(x, 1))

    return FractalNet()


def _load_by_name(torch, model, weights: dict[str, np.ndarray], cols: int) -> set[str]:
    """Copy netdsl's weights into the PyTorch model by netdsl name; the names used."""
    used = set()

    def take(name):
        used.add(name)
        return torch.from_numpy(np.ascontiguousarray(weights[name]))

    with torch.no_grad():
        for b, block in enumerate(model.blocks, start=1):
            for k, column in enumerate(block.columns):
                for i, unit in enumerate(column):
                    name = f"block{b}.{_column_unit_name(cols, k, i)}"
                    unit.conv.weight.copy_(take(f"{name}.conv.weight"))
                    for suffix in ("weight", "bias", "running_mean", "running_var"):
                        getattr(unit.bn, suffix).copy_(take(f"{name}.bn.{suffix}"))
        model.fc.weight.copy_(take("classifier.weight"))
        model.fc.bias.copy_(take("classifier.bias"))
    return used


def _netdsl_logits(net: netdsl.Network, weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    model = net.to_onnx(weights=weights)
    (out,) = run_onnx(model, {model.graph.input[0].name: x}).values()
    return out


def _assert_close(out: np.ndarray, expected: np.ndarray) -> None:
    """max |difference| <= 1e-5 x max |logit|."""
    assert out.shape == expected.shape
    scale = float(np.abs(expected).max())
    diff = float(np.abs(out.astype(np.float64) - expected).max())
    assert scale > 0 and np.ptp(expected) > 0
    assert diff <= 1e-5 * scale, f"max diff {diff:.3g} > 1e-5 x max logit {scale:.3g}"


@pytest.mark.torch
@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("cols", [4, 2])
def test_fractalnet_matches_an_independent_pytorch_implementation(cols):
    import torch

    net = netdsl.load(FRACTALNET, args={"cols": cols})
    weights = parity_weights(net, WEIGHT_SEED)  # random weights, random batch-norm statistics and affine parameters
    reference = _torch_fractalnet(torch, cols, classes=10).eval()
    used = _load_by_name(torch, reference, weights, cols)
    assert used == set(weights), "netdsl weights the PyTorch model has no place for"
    assert sum(p.numel() for p in reference.parameters()) == net.summary().params
    x = parity_input((2, 3, 32, 32), INPUT_SEED)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    _assert_close(_netdsl_logits(net, weights, x), expected)
    if cols == 4:  # the stored logits the test below checks without torch are the PyTorch model's
        assert net.summary().params == 76_106_634
        if update_golden():
            np.savez(REFERENCE, logits=expected)
        with np.load(REFERENCE, allow_pickle=False) as data:
            _assert_close(data["logits"], expected)


def test_fractalnet_matches_stored_pytorch_logits():
    """The independent PyTorch implementation's logits, stored (tests/fixtures/fractalnet_logits.npz, rewritten by
    the test above with NETDSL_UPDATE_GOLDEN=1), checked where torch is absent."""
    net = netdsl.load(FRACTALNET)
    with np.load(REFERENCE, allow_pickle=False) as data:
        expected = data["logits"]
    out = _netdsl_logits(net, parity_weights(net, WEIGHT_SEED), parity_input((2, 3, 32, 32), INPUT_SEED))
    _assert_close(out, expected)
    weights = parity_weights(net, WEIGHT_SEED)  # the comparison can fail: nested joins would not pass
    with pytest.raises(AssertionError, match="max diff"):
        _assert_close(_netdsl_logits(netdsl.load(FRACTALNET.read_text().replace("fractal<", "mean<")), weights,
                                     parity_input((2, 3, 32, 32), INPUT_SEED)), expected)


def test_the_fractalnet_example_of_the_language_reference():
    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    (example,) = [b for b in text.split("```netdsl\n")[1:] if "fractal<" in b.split("```")[0]]
    net = netdsl.load(example.split("```")[0])
    assert [len(n.inputs) for n in net.graph.nodes if n.op.name == "mean"] == [2, 3, 2, 4] * 2
    names = {name for name, _, _ in net.graph.weight_specs()}
    assert {"block1.shallow.conv.weight", "block1.deep.1.deep.0.shallow.conv.weight"} <= names
