"""One lazy-import helper (netdsl.lazy): a missing optional package is a NetdslError that says how to install it."""

from __future__ import annotations

import sys

import pytest

from netdsl.errors import EngineError, WeightsError
from netdsl.lazy import first_available, lazy_import


def test_a_missing_package_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(EngineError) as e:
        lazy_import("onnxruntime", extra="cpu", purpose="the ONNX Runtime engine (--engine ort)")
    assert str(e.value.diagnostics[0].message) == (
        "the ONNX Runtime engine (--engine ort) needs the Python package `onnxruntime`, which is not installed; "
        'install it with: pip install "netdsl[cpu]"')


def test_a_given_message_and_error_class_are_used():
    with pytest.raises(WeightsError, match="reading checkpoints needs PyTorch"):
        lazy_import("netdsl_test_no_such_package", message="reading checkpoints needs PyTorch", error=WeightsError)


def test_an_installed_package_is_returned():
    assert lazy_import("json") is sys.modules["json"]
    assert first_available("netdsl_test_no_such_package", "json", message="none") is sys.modules["json"]


def test_none_of_the_alternatives():
    with pytest.raises(EngineError, match="TensorRT is not installed"):
        first_available("netdsl_test_no_a", "netdsl_test_no_b", message="TensorRT is not installed")


def test_the_onnxruntime_engine_uses_it(monkeypatch):
    from netdsl.engines.ort import OrtEngine

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert OrtEngine.doctor() == {"installed": False, "message": (
        "netdsl: error: the ONNX Runtime engine (--engine ort) needs the Python package `onnxruntime`, "
        'which is not installed; install it with: pip install "netdsl[cpu]"')}
