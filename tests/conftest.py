"""Fixtures of the core test suite (plain helpers live in helpers.py).

* ``compile_net(source, ...)``: .net source text -> (checked Network, ONNX ModelProto).
* ``run_onnx(model, feeds=None)``: run a model with ONNX Runtime (CPU); random inputs unless given.
* ``run_net(source, ...)``: both at once, returns (network, model, {output name: array}).
* ``run_cli(*args, cwd=None)``: ``netdsl ARGS`` in this process with its streams captured -> (rc, stdout,
  stderr); ``helpers.run_netdsl`` runs ``python -m netdsl`` in a subprocess where the process is the point.
* ``write_net(name, text)``: a file in the test's temporary directory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import compile_net as _compile_net
from helpers import dedent, netdsl_main
from helpers import run_onnx as _run_onnx

import netdsl


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


@pytest.fixture
def run_cli() -> Callable[..., tuple[int, str, str]]:
    return netdsl_main


@pytest.fixture
def write_net(tmp_path: Path) -> Callable[[str, str], Path]:
    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture(autouse=True)
def _cache_folder(tmp_path_factory, monkeypatch):
    """Each test gets an empty cache folder of its own (compiled models, engines), removed afterwards:
    the suite never writes the user's cache, and no test sees another's entries."""
    import shutil

    folder = tmp_path_factory.mktemp("netdsl-cache")
    monkeypatch.setenv("NETDSL_CACHE_DIR", str(folder))
    monkeypatch.delenv("NETDSL_CACHE", raising=False)
    monkeypatch.delenv("NETDSL_CACHE_MAX", raising=False)
    yield
    shutil.rmtree(folder, ignore_errors=True)
