"""Doctor: what the runtime engines need, and what this machine has (``netdsl doctor``, as a library).

:func:`doctor_report` gathers the Python packages, the ONNX Runtime distribution(s) and providers, the
GPU and the CUDA/cuDNN/TensorRT libraries the dynamic loader finds (:mod:`netdsl.machine`), then asks
each engine of :data:`netdsl.engines.ENGINES` what its engine:device pairs lack on this machine
(``Engine.doctor_pairs``) and runs a one-layer model through the engine seam where nothing is missing
(:func:`probe`). Nothing here raises: it is a report.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

from .machine import cuda_libraries, cuda_python, dist_version, gpu_report, import_status, ort_distributions


@contextlib.contextmanager
def captured_stderr():
    """Capture file descriptor 2 (where ONNX Runtime's C++ logger writes) into a list of one string."""
    captured: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read().decode("utf-8", "replace"))


def probe_source():
    """A one-layer ONNX model (Relu on Nx8) to run through an engine."""
    from onnx import TensorProto, helper

    from .session import model_source

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "netdsl_doctor_probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # old enough for every supported runtime
    return model_source(model)


def probe(engine: str, device: str) -> dict:
    """Prepare and run the probe model on ``engine:device`` through the engine seam; never raises."""
    from .engines import EngineOptions, get_engine

    def run() -> dict:
        x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
        runner = get_engine(engine).prepare(probe_source(), device, EngineOptions(threads=1))
        ok = bool(np.array_equal(runner.run({"x": x})["y"], np.maximum(x, 0)))
        result = {"ran": ok, "providers": runner.describe().get("providers")}
        if not ok:
            result["error"] = "the probe model ran but returned wrong values"
        return result

    return probed(run)


def probe_build() -> dict:
    """Build the probe model's TensorRT plan in a throw-away cache (``netdsl build``'s path); never raises."""
    from .engines import EngineOptions
    from .engines.trt import build

    def run() -> dict:
        with tempfile.TemporaryDirectory() as cache:
            plan = build(probe_source(), EngineOptions(batch_range=(1, 2, 2), cache_dir=cache))
        return {"ran": bool(plan.data), "target": str(plan.target), "engine": plan.trt}

    return probed(run)


def probed(run: Callable[[], dict]) -> dict:
    """``run()``'s record (``ran`` and details) with its time, any exception as ``error``, and the error lines
    the runtime printed to stderr meanwhile (``runtime_log``); never raises."""
    start = time.perf_counter()
    with captured_stderr() as log:
        try:
            result = run()
        except Exception as e:  # noqa: BLE001 - a report, not a crash: record whatever went wrong
            result = {"ran": False, "error": (str(e) or type(e).__name__).strip()}
    out = {"ran": bool(result.get("ran")), "seconds": round(time.perf_counter() - start, 3)}
    out.update((k, v) for k, v in result.items() if k != "ran" and v)
    runtime_log = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in (log[0] if log else "").splitlines()]
    runtime_log = [line for line in runtime_log if line and re.search(r"error|fail|cannot|unable", line, re.I)]
    if runtime_log:
        out["runtime_log"] = runtime_log[:4]
    return out


# ============================================================================= engine/device pairs
def pair(missing: list[str], fix: list[str], check: dict | None, note: str | None = None) -> dict:
    usable = bool(check and check.get("ran"))
    if check and not check.get("ran") and not missing:
        missing = [f"the engine could not run a one-layer model: {check.get('error', 'unknown error')}"]
    out = {"usable": usable, "missing": [] if usable else missing, "fix": [] if usable else fix}
    if check is not None:
        out["check"] = check
    if note:
        out["note"] = note
    return out




def engine_pairs(machine: dict) -> dict:
    """For each engine:device pair: usable (it ran a one-layer model), else what is missing and the fix.

    ``machine`` holds the facts :func:`doctor_report` gathered (keys ``onnxruntime``, ``gpu``, ``libraries``,
    ``cuda_major``, ``tensorrt``, ``tensorrt_rtx``, ``cuda-python``). Each engine says what its pairs lack
    (``Engine.doctor_pairs``) and which can be probed; the probes run here.
    """
    from .engines import ENGINES

    pairs: dict[str, dict] = {}
    for name, (module, cls_name, devices, title) in ENGINES.items():
        try:
            engine_cls = getattr(importlib.import_module(module), cls_name)
        except Exception as e:  # noqa: BLE001 - report a broken engine module, do not crash the report
            if isinstance(e, ModuleNotFoundError) and e.name == module:
                why = f"netdsl's {title} engine ({module}) is not part of this netdsl installation"
            else:
                why = f"importing {module} failed: {type(e).__name__}: {e}"
            pairs.update((f"{name}:{d}", pair([why], [], None)) for d in devices)
            continue
        try:
            answers = engine_cls.doctor_pairs(machine)
        except Exception as e:  # noqa: BLE001
            answers = {f"{name}:{d}": {"missing": [f"the {title} engine's doctor failed: {type(e).__name__}: {e}"]}
                       for d in devices}
        for key, answer in answers.items():
            kind = answer.get("probe")
            check = probe(name, key.partition(":")[2]) if kind == "run" else probe_build() if kind == "build" else None
            pairs[key] = pair(list(answer.get("missing", [])), list(answer.get("fix", [])), check, answer.get("note"))
    return pairs


def plain(message: str) -> str:
    """An error's text without the ``netdsl: error:`` a rendered diagnostic starts with."""
    return re.sub(r"^netdsl: error: ", "", message.strip())


def call_doctor(engine_cls) -> dict:
    try:
        info = engine_cls.doctor()
        return info if isinstance(info, dict) else {}
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"}


def doctor_report() -> dict:
    """Everything `netdsl doctor` prints, as one JSON-able dict."""
    from .engines.ort import OrtEngine
    from .version import __version__

    ort = call_doctor(OrtEngine)
    dists = ort_distributions()
    ort["all_distributions"] = dists
    if len(dists) > 1:
        names = [d["name"] for d in dists]
        ort["problem"] = (f"{' and '.join(names)} are all installed; they share the `onnxruntime` folder and "
                          f"overwrite each other's files. Fix: pip uninstall -y {' '.join(names)}, then install "
                          'exactly one: pip install "netdsl[cpu]" or pip install "netdsl[gpu]"')
    cuda_build = None
    if ort.get("installed"):
        with contextlib.suppress(Exception):
            import onnxruntime

            cuda_build = getattr(onnxruntime, "cuda_version", "") or None
        ort["cuda_build"] = cuda_build
    cuda_major = int(cuda_build.split(".")[0]) if cuda_build and cuda_build.split(".")[0].isdigit() else None
    packages = {
        "numpy": {"installed": True, "version": np.__version__},
        "onnx": import_status("onnx"),
        "pillow": {**import_status("PIL"), "for": "image inputs", "install": 'pip install "netdsl[image]"'},
        "torch": {"installed": dist_version("torch") is not None, "version": dist_version("torch"),
                  "for": "optional: parity tests against torchvision", "install": "pip install torch"},
        "torchvision": {"installed": dist_version("torchvision") is not None,
                        "version": dist_version("torchvision"), "for": "optional: parity tests",
                        "install": "pip install torchvision"},
    }
    trt = {**import_status("tensorrt"), "install": "pip install tensorrt (tensorrt-cu12 / tensorrt-cu13 to match CUDA)"}
    trt_rtx = {**import_status("tensorrt_rtx"),
               "install": 'pip install "netdsl[trt-rtx]" (TensorRT for RTX: builds without a GPU)'}
    cudapy = {**cuda_python(), "install": "pip install cuda-python"}
    gpu = gpu_report()
    libs = cuda_libraries(cuda_major)
    report = {
        "netdsl": {"version": __version__, "path": os.path.dirname(os.path.abspath(__file__))},
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "platform": platform.platform()},
        "packages": packages,
        "onnxruntime": ort,
        "gpu": gpu,
        "libraries": libs,
        "LD_LIBRARY_PATH": os.environ.get("LD_LIBRARY_PATH"),
        "tensorrt": {"tensorrt": trt, "tensorrt_rtx": trt_rtx, "cuda-python": cudapy},
    }
    machine = {"onnxruntime": ort, "gpu": gpu, "libraries": libs, "cuda_major": cuda_major, "tensorrt": trt,
               "tensorrt_rtx": trt_rtx, "cuda-python": cudapy}
    from .machine import NO_VNNI_WARNING, cpu_int8, cpu_name

    report["cpu"] = {"name": cpu_name(), **cpu_int8()}
    if report["cpu"]["vnni"] is False:
        report["cpu"]["warning"] = NO_VNNI_WARNING
    report["engines"] = engine_pairs(machine)
    report["problems"] = [ort["problem"]] if ort.get("problem") else []
    return report

