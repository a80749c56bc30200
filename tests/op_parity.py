"""Helpers for the tests of single ops against references (``from op_parity import ...``).

* ``check(model)``: the full ONNX checker, and ONNX Runtime produces every shape the model declares.
* ``run(net, x, opset, weights)``: a network's output on ONNX Runtime for the input array ``x``.
* ``close(actual, expected)``: within 1e-5 of the expected output's largest magnitude.
* ``torch_parity(module, source, shape, tmp_path, opsets)``: a torch module with random parameters and a
  netdsl network that loads the module's ``state_dict`` (through a .safetensors file, so that names and
  shapes are checked too) compute the same output on random inputs, at every opset given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from helpers import actual_shapes, dedent, run_onnx

import netdsl
from netdsl.lower import DEFAULT_OPSET

TOLERANCE = 1e-5  # relative to the largest |value| of the expected output


def check(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    declared = {vi.name: tuple(d.dim_value for d in vi.type.tensor_type.shape.dim[1:])
                for vi in (*model.graph.value_info, *model.graph.output)}
    actual = actual_shapes(model)
    assert {k: actual[k][1:] for k in declared} == declared


def run(net: netdsl.Network, x: np.ndarray, opset: int = DEFAULT_OPSET,
        weights: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    model = net.to_onnx(opset=opset, weights=weights)
    check(model)
    (out,) = run_onnx(model, {net.graph.inputs[0].name: x}).values()
    return out


def close(actual: np.ndarray, expected: np.ndarray, tolerance: float = TOLERANCE) -> None:
    assert actual.shape == expected.shape
    scale = float(np.abs(expected).max())
    err = float(np.abs(actual.astype(np.float64) - expected).max())
    assert err <= tolerance * scale, f"max error {err:.3g} > {tolerance:g} * {scale:.3g}"


def random_input(shape: tuple[int, ...], seed: int = 0, scale: float = 2.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((2, *shape)) * scale).astype(np.float32)


def torch_parity(module, source: str, shape: tuple[int, ...], tmp_path, opsets: Iterable[int] = (DEFAULT_OPSET,),
                 scale: float = 2.0) -> None:
    import torch
    from safetensors.numpy import save_file

    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p))
    module.eval()
    state = {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    net = netdsl.load(dedent(source))
    weights = net.load_weights(path)  # strict: every key and shape must match
    assert set(weights) == set(state)
    x = random_input(shape, scale=scale)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    for opset in opsets:
        close(run(net, x, opset, weights), expected)
