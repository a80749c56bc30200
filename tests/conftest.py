"""Shared fixtures of the core test suite.

* ``compile_net(source, ...)``: .net source text -> (checked Network, ONNX ModelProto).
* ``run_onnx(model, feeds=None)``: run a model with ONNX Runtime (CPU); random inputs unless given.
* ``run_net(source, ...)``: both at once, returns (network, model, {output name: array}).
* ``run_cli(*args, cwd=None)``: ``python -m netdsl ...`` in a subprocess -> (rc, stdout, stderr); the same
  as the plain function ``run_netdsl``, which also takes ``pythonpath`` (a folder to put first).
* ``hide_modules(folder, *names)``: a folder for ``pythonpath`` in which importing those modules fails.
* ``write_net(name, text)``: a file in the test's temporary directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx
import pytest

import netdsl

REPO = Path(__file__).resolve().parent.parent
NETWORKS = REPO / "networks"


def dedent(text: str) -> str:
    """Source text written indented inside a test, made flush-left."""
    return textwrap.dedent(text).lstrip("\n")


def ort_session(model: onnx.ModelProto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1  # CI has two cores; small models gain nothing from threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def random_feeds(model: onnx.ModelProto, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """A random float32 batch for every graph input (the batch dimension is symbolic)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def _run_onnx(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray] | None = None,
              batch: int = 2) -> dict[str, np.ndarray]:
    sess = ort_session(model)
    feeds = dict(feeds) if feeds is not None else random_feeds(model, batch)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def declared_shapes(model: onnx.ModelProto) -> dict[str, tuple[int | str, ...]]:
    """Shapes netdsl declared for every intermediate tensor and output (batch dimension included)."""
    out = {}
    for vi in list(model.graph.value_info) + list(model.graph.output):
        out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                             for d in vi.type.tensor_type.shape.dim)
    return out


def actual_shapes(model: onnx.ModelProto, batch: int = 2) -> dict[str, tuple[int, ...]]:
    """The shape ONNX Runtime actually produces for every tensor netdsl declared (value_info and outputs)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(vi for vi in model.graph.value_info if vi.name not in known)
    sess = ort_session(probe)
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, random_feeds(probe, batch))
    return {n: tuple(v.shape) for n, v in zip(names, values, strict=True)}


def _compile_net(source: str, opset: int | None = None, seed: int = 0, network: str | None = None,
                 args: Mapping[str, int | float] | None = None) -> tuple[netdsl.Network, onnx.ModelProto]:
    net = netdsl.load(dedent(source), network=network, args=args)
    model = net.to_onnx(opset=opset, seed=seed) if opset is not None else net.to_onnx(seed=seed)
    return net, model


@pytest.fixture
def compile_net() -> Callable[..., tuple[netdsl.Network, onnx.ModelProto]]:
    return _compile_net


@pytest.fixture
def run_onnx() -> Callable[..., dict[str, np.ndarray]]:
    return _run_onnx


@pytest.fixture
def run_net() -> Callable[..., tuple[netdsl.Network, onnx.ModelProto, dict[str, np.ndarray]]]:
    def run(source: str, feeds: Mapping[str, np.ndarray] | None = None, opset: int | None = None,
            batch: int = 2, **kw):
        net, model = _compile_net(source, opset=opset, **kw)
        return net, model, _run_onnx(model, feeds, batch)

    return run


def _cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NETDSL_DEBUG", None)
    env.update(NO_COLOR="1", PYTHONIOENCODING="utf-8", COLUMNS="160")
    # the subprocess imports this checkout even when netdsl is not installed
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_netdsl(*args: str | os.PathLike, cwd: str | os.PathLike | None = None, timeout: float = 120,
               stdin: bytes | None = None, pythonpath: str | os.PathLike | None = None) -> tuple[int, str, str]:
    """``python -m netdsl ARGS`` as a user runs it -> (exit code, stdout, stderr)."""
    env = _cli_env()
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath) + os.pathsep + env["PYTHONPATH"]
    proc = subprocess.run([sys.executable, "-m", "netdsl", *map(str, args)], cwd=cwd, env=env,
                          input=stdin, capture_output=True, timeout=timeout)
    return (proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))


@pytest.fixture
def run_cli() -> Callable[..., tuple[int, str, str]]:
    return run_netdsl


def hide_modules(folder: Path, *names: str) -> Path:
    """``folder`` holding packages ``names`` whose import fails, to put first on PYTHONPATH (a missing optional
    package, simulated where it is installed)."""
    for name in names:
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} hidden by the test')\n")
    return folder


@pytest.fixture
def write_net(tmp_path: Path) -> Callable[[str, str], Path]:
    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text), encoding="utf-8")
        return path

    return write
