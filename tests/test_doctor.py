"""`netdsl doctor`: a report that always exits 0, names what each engine/device pair is missing and how
to install it, and catches two ONNX Runtime distributions installed over each other."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
import pytest
from helpers import hide_modules, run_netdsl

import netdsl
from netdsl.doctor import probe
from netdsl.engines import ENGINES
from netdsl.machine import find_library, ort_distributions

PAIRS = {f"{engine}:{device}" for engine, (_, _, devices, _) in ENGINES.items() for device in devices} | {"trt:build"}


@pytest.fixture(scope="module")
def cuda() -> bool:
    """Whether ONNX Runtime runs a model on CUDA here (probed when a test asks, not at import)."""
    return bool(probe("ort", "cuda")["ran"])


def importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _doctor(*args: str, pythonpath: str | None = None) -> tuple[int, str, str]:
    return run_netdsl("doctor", *args, pythonpath=pythonpath, timeout=300)


@pytest.fixture(scope="module")
def report() -> dict:
    rc, out, err = _doctor("--json")
    assert rc == 0, err
    return json.loads(out)


def test_versions_and_runtime(report):
    import onnx
    import onnxruntime

    assert report["netdsl"]["version"] == netdsl.__version__
    assert report["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert report["packages"]["numpy"]["version"] == np.__version__
    assert report["packages"]["onnx"]["version"] == onnx.__version__
    ort = report["onnxruntime"]
    assert ort["installed"] and ort["version"] == onnxruntime.__version__
    assert ort["providers"] == onnxruntime.get_available_providers()
    assert [d["name"] for d in ort["all_distributions"]] == [d["name"] for d in ort_distributions()]
    assert "problem" not in ort and report["problems"] == []


def test_optional_packages_are_reported_with_their_install_hint(report):
    pillow = report["packages"]["pillow"]
    try:
        import PIL

        assert pillow["installed"] and pillow["version"] == PIL.__version__
    except ImportError:
        assert not pillow["installed"]
    assert "netdsl[image]" in pillow["install"]
    for name in ("torch", "torchvision"):
        assert report["packages"][name]["installed"] == importable(name), name
    for name, found in (("tensorrt", importable("tensorrt")), ("tensorrt_rtx", importable("tensorrt_rtx")),
                        ("cuda-python", importable("cuda.bindings") or importable("cuda.cudart"))):
        info = report["tensorrt"][name]
        assert info["installed"] == found and "pip install" in info["install"], name


def test_every_engine_device_pair_is_judged(report):
    engines = report["engines"]
    assert set(engines) == PAIRS
    for name, pair in engines.items():
        ran = bool(pair.get("check", {}).get("ran"))  # usable means: it ran a one-layer model
        assert pair["usable"] is ran, name
        if not pair["usable"]:
            assert pair["missing"] and pair["fix"], name  # what is missing, and how to install it
        else:
            assert pair["missing"] == [] and pair["fix"] == [], name
    cpu = engines["ort:cpu"]
    assert cpu["usable"] and cpu["check"]["ran"] and cpu["check"]["providers"] == ["CPUExecutionProvider"]


def test_trt_build_is_judged_by_building_a_plan(report, tmp_path):
    """TensorRT for RTX builds without a GPU, so `trt:build` is usable wherever it is installed."""
    build = report["engines"]["trt:build"]
    if report["tensorrt"]["tensorrt_rtx"]["installed"] and not report["tensorrt"]["tensorrt"]["installed"]:
        assert build["usable"] and build["check"]["ran"], build
        assert "portable" in build["check"]["target"] and "TensorRT for RTX" in build["check"]["engine"]
    rc, out, err = _doctor("--json", pythonpath=hide_modules(tmp_path, "tensorrt", "tensorrt_rtx"))  # without either
    assert rc == 0, err
    hidden = json.loads(out)["engines"]["trt:build"]
    assert not hidden["usable"] and any('netdsl[trt-rtx]' in f for f in hidden["fix"]), hidden


def test_libraries_are_looked_up(report):
    libs = report["libraries"]
    assert "libcudnn.so.9" in libs and any(n.startswith("libcudart.so.") for n in libs)
    for name, info in libs.items():
        assert info["name"] == name
        if info["found"]:  # the path the dynamic loader mapped it from
            assert os.path.basename(info["path"]).startswith(name) and os.path.isfile(info["path"]), info
        else:
            assert info["error"], info


def test_missing_cuda_is_explained(report, cuda):
    if cuda:
        pytest.skip("CUDA works here; this checks the report on machines without it")
    import onnxruntime

    cuda = report["engines"]["ort:cuda"]
    assert not cuda["usable"]
    text = " ".join(cuda["missing"] + cuda["fix"])
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert "CPU build" in text and 'pip install "netdsl[gpu]"' in text and "pip uninstall -y onnxruntime" in text
    if not report["gpu"]["present"]:
        assert "NVIDIA GPU" in text


def test_human_report_exits_0(cuda):
    rc, out, err = _doctor()
    assert rc == 0, err
    assert "Traceback" not in err
    for text in ("ONNX Runtime", "providers:", "GPU", "libcudnn.so.9", "engines", "ort:cpu", "ort:cuda",
                 "trt:cuda"):
        assert text in out, text
    line = next(line for line in out.splitlines() if line.strip().startswith("ort:cpu"))
    assert "usable" in line and "not usable" not in line
    if not cuda:
        assert "fix:" in out


def test_two_onnxruntime_distributions_are_named_with_the_fix(tmp_path):
    """A second distribution that writes the same onnxruntime/ folder (as onnxruntime-gpu does)."""
    installed = {d["name"] for d in ort_distributions()}
    other = "onnxruntime-gpu" if "onnxruntime-gpu" not in installed else "onnxruntime"
    info = tmp_path / f"{other.replace('-', '_')}-1.99.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {other}\nVersion: 1.99.0\n")
    (info / "RECORD").write_text("onnxruntime/__init__.py,,\nonnxruntime/capi/_pybind_state.py,,\n")
    rc, out, err = _doctor("--json", pythonpath=str(tmp_path))
    assert rc == 0, err
    r = json.loads(out)
    names = {d["name"] for d in r["onnxruntime"]["all_distributions"]}
    assert names == installed | {other}
    problem = r["onnxruntime"]["problem"]
    assert other in problem and "pip uninstall -y" in problem and "exactly one" in problem
    assert r["problems"] == [problem]
    rc, out, err = _doctor(pythonpath=str(tmp_path))
    assert rc == 0 and "problem:" in out and other in out


def test_a_missing_onnxruntime_is_reported_not_raised(tmp_path):
    shadow = tmp_path / "onnxruntime"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('onnxruntime hidden by the test')\n")
    rc, out, err = _doctor("--json", pythonpath=str(tmp_path))
    assert rc == 0, err
    r = json.loads(out)
    assert not r["onnxruntime"]["installed"]
    cpu = r["engines"]["ort:cpu"]
    assert not cpu["usable"] and 'pip install "netdsl[cpu]"' in cpu["fix"]
    assert 'pip install "netdsl[gpu]"' in r["engines"]["ort:cuda"]["fix"]


def test_find_library():
    libc = find_library("libc.so.6")
    assert libc["found"] and os.path.basename(libc["path"]).startswith("libc.so.6"), libc
    assert os.path.isfile(libc["path"])
    nothing = find_library("libnetdsl_no_such_library.so.1")
    assert not nothing["found"] and nothing["error"]


@pytest.mark.gpu
def test_gpu_is_found_and_cuda_usable(report, cuda):
    if not cuda:
        pytest.skip("needs an NVIDIA GPU")
    assert report["gpu"]["present"]
    assert report["gpu"]["devices"] or report["gpu"].get("cuda_devices")
    assert report["engines"]["ort:cuda"]["usable"]
    assert report["engines"]["ort:cuda"]["check"]["providers"][0] == "CUDAExecutionProvider"
