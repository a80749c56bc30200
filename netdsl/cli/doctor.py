"""`netdsl doctor`: what the runtime engines need, and what this machine has.

It reports the Python packages, the ONNX Runtime distribution(s) and providers, the GPU, the
CUDA/cuDNN/TensorRT libraries the dynamic loader finds, and for each engine/device pair whether it
works (by running a one-layer model through the engine seam) and, if not, what is missing and how to
install it. It always exits 0: it is a report.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import glob
import importlib
import importlib.metadata as md
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np


# ============================================================================= doctor: probes
def _dist_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def ort_distributions() -> list[dict]:
    """Every installed distribution that provides the ``onnxruntime`` import package.

    onnxruntime, onnxruntime-gpu, onnxruntime-directml, ort-nightly ... all install the same
    ``onnxruntime/`` folder: with two of them, whichever was installed last wins, file by file.
    """
    found: dict[str, dict] = {}
    for dist in md.distributions():
        name = (dist.metadata["Name"] or "").strip()
        key = name.lower().replace("_", "-")
        if not (key == "onnxruntime" or key.startswith(("onnxruntime-", "ort-"))) or key in found:
            continue
        files = dist.files
        provides = (any(f.parts and f.parts[0] == "onnxruntime" for f in files) if files is not None
                    else key in ("onnxruntime", "onnxruntime-gpu"))
        if provides:
            found[key] = {"name": key, "version": dist.version}
    return list(found.values())


def find_library(name: str) -> dict:
    """Whether the dynamic loader finds shared library ``name`` (it is loaded to find out).

    When it does not, pip packages that ship it (nvidia-*, tensorrt-*, torch) are searched, so the
    report can say which folder to add to LD_LIBRARY_PATH.
    """
    try:
        ctypes.CDLL(name)
    except OSError as e:
        result: dict = {"name": name, "found": False, "error": str(e).split(":")[-1].strip() or str(e)}
        pip = _pip_copies(name)
        if pip:
            result["pip_copy"] = pip[0]
        return result
    return {"name": name, "found": True, "path": _loaded_path(name)}


def _loaded_path(name: str) -> str | None:
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rsplit(None, 1)[-1] if "/" in line else ""
                if os.path.basename(path).startswith(name):
                    return path
    except OSError:
        pass
    return None


def _pip_copies(name: str) -> list[str]:
    out = []
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        for pattern in ("nvidia/*/lib", "nvidia/*/lib64", "tensorrt_libs", "tensorrt_rtx_libs", "torch/lib"):
            out.extend(glob.glob(os.path.join(entry, pattern, name)))
    return out


def _library_version(name: str, symbol: str, decode: Callable[[int], str]) -> str | None:
    """Call ``int symbol(int*)``-style or ``size_t symbol(void)`` version functions of a loaded library."""
    try:
        lib = ctypes.CDLL(name)
        fn = getattr(lib, symbol)
    except (OSError, AttributeError):
        return None
    try:
        if symbol in ("cudaRuntimeGetVersion", "cuDriverGetVersion"):
            value = ctypes.c_int(0)
            if fn(ctypes.byref(value)) != 0:
                return None
            return decode(value.value)
        fn.restype = ctypes.c_size_t
        return decode(int(fn()))
    except Exception:  # noqa: BLE001 - a foreign library may misbehave; the version is a nicety
        return None


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def _cudnn_version(v: int) -> str:  # cuDNN 9: major*10000 + minor*100 + patch
    return f"{v // 10000}.{(v % 10000) // 100}.{v % 100}" if v >= 10000 else f"{v // 1000}.{(v % 1000) // 100}"


def _trt_version(v: int) -> str:  # TensorRT 10+: major*10000 + minor*100 + patch
    return f"{v // 10000}.{(v % 10000) // 100}.{v % 100}"


def gpu_report() -> dict:
    """NVIDIA GPUs as nvidia-smi and the driver library (libcuda.so.1) see them."""
    out: dict = {"nvidia_smi": shutil.which("nvidia-smi"), "devices": [], "driver": None, "cuda_driver_api": None,
                 "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if out["nvidia_smi"]:
        try:
            q = subprocess.run([out["nvidia_smi"], "--query-gpu=name,driver_version,memory.total",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            if q.returncode == 0:
                for line in q.stdout.strip().splitlines():
                    parts = [p.strip() for p in line.split(",")]
                    if len(parts) >= 3:
                        out["devices"].append({"name": parts[0], "memory": parts[2]})
                        out["driver"] = parts[1]
            else:
                out["nvidia_smi_error"] = (q.stderr or q.stdout).strip().splitlines()[0][:300] if (
                    q.stderr or q.stdout).strip() else f"exit {q.returncode}"
            head = subprocess.run([out["nvidia_smi"]], capture_output=True, text=True, timeout=20)
            m = re.search(r"CUDA Version:\s*([\d.]+)", head.stdout)
            if m:
                out["cuda_driver_api"] = m.group(1)
        except (OSError, subprocess.SubprocessError) as e:
            out["nvidia_smi_error"] = str(e)
    libcuda = find_library("libcuda.so.1")
    out["libcuda"] = libcuda
    if libcuda["found"]:
        out["cuda_driver_api"] = out["cuda_driver_api"] or _library_version("libcuda.so.1", "cuDriverGetVersion",
                                                                            _cuda_version)
        count = _cuda_device_count()
        out["cuda_devices"] = count
    out["present"] = bool(out["devices"]) or bool(out.get("cuda_devices"))
    return out


def _cuda_device_count() -> int | str:
    """Devices the CUDA driver API sees, or the cuInit error code as text."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        rc = lib.cuInit(0)
        if rc != 0:
            return f"cuInit failed with CUDA error {rc}" + (" (no CUDA-capable device)" if rc == 100 else "")
        n = ctypes.c_int(0)
        if lib.cuDeviceGetCount(ctypes.byref(n)) != 0:
            return "cuDeviceGetCount failed"
        return n.value
    except (OSError, AttributeError) as e:
        return str(e)


def _import(module: str) -> dict:
    try:
        m = importlib.import_module(module)
    except ImportError as e:
        return {"installed": False, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - a broken binary package raises all sorts of things on import
        return {"installed": False, "error": f"{type(e).__name__}: {e}"}
    return {"installed": True, "version": getattr(m, "__version__", None)}


def _cuda_python() -> dict:
    for module in ("cuda.bindings.runtime", "cuda.cudart"):
        r = _import(module)
        if r["installed"]:
            r["version"] = _dist_version("cuda-python") or _dist_version("cuda-bindings")
            r["module"] = module
            return r
    return {"installed": False, "error": "neither cuda.bindings nor cuda.cudart imports"}


@contextlib.contextmanager
def _captured_stderr():
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


def _probe_source():
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
        runner = get_engine(engine).prepare(_probe_source(), device, EngineOptions(threads=1))
        ok = bool(np.array_equal(runner.run({"x": x})["y"], np.maximum(x, 0)))
        result = {"ran": ok, "providers": runner.describe().get("providers")}
        if not ok:
            result["error"] = "the probe model ran but returned wrong values"
        return result

    return _probed(run)


def probe_build() -> dict:
    """Build the probe model's TensorRT plan in a throw-away cache (``netdsl build``'s path); never raises."""
    from .engines import EngineOptions
    from .engines.trt import build

    def run() -> dict:
        with tempfile.TemporaryDirectory() as cache:
            plan = build(_probe_source(), EngineOptions(batch_range=(1, 2, 2), cache_dir=cache))
        return {"ran": bool(plan.data), "target": str(plan.target), "engine": plan.trt}

    return _probed(run)


def _probed(run: Callable[[], dict]) -> dict:
    """``run()``'s record (``ran`` and details) with its time, any exception as ``error``, and the error lines
    the runtime printed to stderr meanwhile (``runtime_log``); never raises."""
    start = time.perf_counter()
    with _captured_stderr() as log:
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


# ============================================================================= doctor: engine/device pairs
def _cuda_libraries(cuda_major: int | None) -> dict[str, dict]:
    majors = [cuda_major] if cuda_major else [12, 13]
    names = []
    for m in majors:
        names += [f"libcudart.so.{m}", f"libcublasLt.so.{m}", f"libcublas.so.{m}", f"libcufft.so.{m - 1}"]
    names += ["libcurand.so.10", "libcudnn.so.9", "libnvinfer.so.10", "libnvinfer.so.11"]
    libs = {n: find_library(n) for n in names}
    for n, info in libs.items():
        if not info["found"]:
            continue
        if n.startswith("libcudart"):
            info["version"] = _library_version(n, "cudaRuntimeGetVersion", _cuda_version)
        elif n.startswith("libcudnn"):
            info["version"] = _library_version(n, "cudnnGetVersion", _cudnn_version)
        elif n.startswith("libnvinfer"):
            info["version"] = _library_version(n, "getInferLibVersion", _trt_version)
    return libs


def _missing_libraries(libs: dict[str, dict], names: list[str]) -> tuple[list[str], list[str]]:
    """(missing names, folders holding pip copies of them) for the libraries in ``names``."""
    missing = [n for n in names if not libs.get(n, {}).get("found")]
    folders = sorted({os.path.dirname(libs[n]["pip_copy"]) for n in missing if libs.get(n, {}).get("pip_copy")})
    return missing, folders


def _ld_fix(folders: list[str]) -> str:
    return "export LD_LIBRARY_PATH=" + ":".join(folders) + ":$LD_LIBRARY_PATH"


def _cuda_needs(libs: dict, cuda_major: int | None) -> tuple[list[str], list[str]]:
    """What ONNX Runtime's CUDA provider lacks among CUDA/cuDNN libraries, and how to fix it."""
    majors = [cuda_major] if cuda_major else [12, 13]
    best = None
    for m in majors:
        wanted = [f"libcudart.so.{m}", f"libcublasLt.so.{m}", f"libcublas.so.{m}", f"libcufft.so.{m - 1}",
                  "libcurand.so.10"]
        miss, folders = _missing_libraries(libs, wanted)
        if best is None or len(miss) < len(best[1]):
            best = (m, miss, folders)
    m, miss, folders = best
    missing, fix = [], []
    if miss:
        which = f"CUDA {m}" if cuda_major else f"CUDA {m} (or whichever major the onnxruntime-gpu build needs)"
        missing.append(f"{which} runtime libraries not found by the loader: {', '.join(miss)}")
    cudnn, cudnn_folders = _missing_libraries(libs, ["libcudnn.so.9"])
    if cudnn:
        missing.append("cuDNN 9 (libcudnn.so.9) not found by the loader")
    folders = sorted(set(folders) | set(cudnn_folders))
    if folders:
        fix.append(f"the libraries are installed as pip packages but not on the loader path: {_ld_fix(folders)}")
    elif miss or cudnn:
        fix.append(f'pip install "onnxruntime-gpu[cuda,cudnn]" (CUDA {m} and cuDNN 9 as pip packages; then add '
                   "their site-packages/nvidia/*/lib folders to LD_LIBRARY_PATH), or install the CUDA "
                   f"{m} toolkit and cuDNN 9 system-wide")
    return missing, fix


def _no_gpu(gpu: dict) -> tuple[list[str], list[str]]:
    if gpu["present"]:
        return [], []
    why = []
    why.append("nvidia-smi not found" if not gpu["nvidia_smi"] else
               f"nvidia-smi lists no GPU ({gpu.get('nvidia_smi_error', 'no output')})")
    if not gpu["libcuda"]["found"]:
        why.append("the driver library libcuda.so.1 is not found")
    elif isinstance(gpu.get("cuda_devices"), str):
        why.append(gpu["cuda_devices"])
    if gpu.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        why.append(f"CUDA_VISIBLE_DEVICES={gpu['CUDA_VISIBLE_DEVICES']!r} hides every GPU")
    return ([f"an NVIDIA GPU with its driver ({'; '.join(why)})"],
            ["install the NVIDIA driver (a container needs the GPU passed in, e.g. docker run --gpus all)"])


def _pair(missing: list[str], fix: list[str], check: dict | None, note: str | None = None) -> dict:
    usable = bool(check and check.get("ran"))
    if check and not check.get("ran") and not missing:
        missing = [f"the engine could not run a one-layer model: {check.get('error', 'unknown error')}"]
    out = {"usable": usable, "missing": [] if usable else missing, "fix": [] if usable else fix}
    if check is not None:
        out["check"] = check
    if note:
        out["note"] = note
    return out


def engine_pairs(ort: dict, gpu: dict, libs: dict, trt: dict, cuda_python: dict, cuda_major: int | None,
                 trt_rtx: dict | None = None) -> dict:
    """For each engine:device pair: usable (it ran a one-layer model), else what is missing and the fix."""
    from .engines import ENGINES

    pairs: dict[str, dict] = {}
    providers = ort.get("providers", []) if ort.get("installed") else []
    conflict = ort.get("problem")
    gpu_missing, gpu_fix = _no_gpu(gpu)
    cuda_missing, cuda_fix = _cuda_needs(libs, cuda_major)

    # ONNX Runtime
    if not ort.get("installed"):
        pairs["ort:cpu"] = _pair(["the onnxruntime package"], ['pip install "netdsl[cpu]"'], None)
        for device in ("cuda", "tensorrt"):
            pairs[f"ort:{device}"] = _pair(["the onnxruntime-gpu package"], ['pip install "netdsl[gpu]"'], None)
    else:
        pairs["ort:cpu"] = _pair([], [], probe("ort", "cpu"), conflict)
        gpu_build = ("onnxruntime-gpu" in {d["name"] for d in ort.get("all_distributions", [])}
                     or "CUDAExecutionProvider" in providers)
        for device, provider in (("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")):
            missing, fix = [], []
            if provider not in providers:
                if gpu_build:
                    missing.append(f"{provider} (this onnxruntime {ort['version']} does not offer it)")
                    fix.append('pip uninstall -y onnxruntime onnxruntime-gpu && pip install "netdsl[gpu]"')
                else:
                    missing.append(f"{provider}: the installed onnxruntime {ort['version']} is the CPU build")
                    fix.append('pip uninstall -y onnxruntime && pip install "netdsl[gpu]" '
                               "(never keep onnxruntime and onnxruntime-gpu installed together)")
            missing += gpu_missing
            fix += gpu_fix
            missing += cuda_missing
            fix += cuda_fix
            if device == "tensorrt":
                trt_libs, folders = _missing_libraries(libs, ["libnvinfer.so.10", "libnvinfer.so.11"])
                if len(trt_libs) == 2:
                    missing.append("TensorRT libraries (libnvinfer.so.10 or .11) not found by the loader")
                    fix.append(_ld_fix(folders) if folders else
                               "pip install tensorrt-cu12 (or tensorrt-cu13, matching CUDA), then add "
                               "site-packages/tensorrt_libs to LD_LIBRARY_PATH")
            check = probe("ort", device) if provider in providers and gpu["present"] else None
            pairs[f"ort:{device}"] = _pair(missing, list(dict.fromkeys(fix)), check, conflict)

    # TensorRT engine (netdsl/engines/trt.py): its own doctor() when it exists, else what we can see here.
    module = ENGINES["trt"][0]
    engine_error = None
    try:
        engine_cls = getattr(importlib.import_module(module), ENGINES["trt"][1])
    except ModuleNotFoundError as e:
        engine_cls = None
        if e.name != module:
            engine_error = f"importing {module} failed: {e}"
    except Exception as e:  # noqa: BLE001 - report a broken engine module, do not crash the report
        engine_cls, engine_error = None, f"importing {module} failed: {type(e).__name__}: {e}"
    missing, fix = [], []
    any_trt = trt["installed"] or bool(trt_rtx and trt_rtx.get("installed"))
    if not any_trt:
        missing.append("the tensorrt package")
        fix.append("pip install tensorrt (tensorrt-cu12 or tensorrt-cu13 to match the CUDA version)")
    if not cuda_python["installed"]:
        missing.append("cuda-python (device memory for the TensorRT engine)")
        fix.append("pip install cuda-python")
    missing += gpu_missing
    fix += gpu_fix
    if engine_cls is None:
        missing.append(engine_error or "netdsl's TensorRT engine (netdsl/engines/trt.py) is not part of this "
                       "netdsl version")
        pairs["trt:cuda"] = _pair(missing, fix, None)
    else:
        info = _call_doctor(engine_cls)
        own = info.get("devices", {}).get("cuda")
        if own:  # the engine knows its own requirements best
            missing, fix = list(own.get("missing", [])), list(own.get("fix", []))
        elif not info.get("installed") and info.get("message"):
            hint = re.sub(r"\s*Run `netdsl doctor`.*$", "", _plain(info["message"]))
            fix = [hint if f.startswith("pip install tensorrt") else f for f in fix]
        check = probe("trt", "cuda") if gpu["present"] and any_trt else None
        pairs["trt:cuda"] = _pair(missing, fix, check)
    # building plans (netdsl build): TensorRT for RTX needs no GPU, datacenter TensorRT builds on the GPU present
    if engine_cls is None or not any_trt:
        pairs["trt:build"] = _pair(missing[:1] if any_trt else ["the tensorrt or tensorrt_rtx package"],
                                   ['pip install "netdsl[trt-rtx]" (TensorRT for RTX builds without a GPU)'], None)
    else:
        pairs["trt:build"] = _pair([], [], probe_build())
    return pairs


def _plain(message: str) -> str:
    """An error's text without the ``netdsl: error:`` a rendered diagnostic starts with."""
    return re.sub(r"^netdsl: error: ", "", message.strip())


def _call_doctor(engine_cls) -> dict:
    try:
        info = engine_cls.doctor()
        return info if isinstance(info, dict) else {}
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"}


def doctor_report() -> dict:
    """Everything `netdsl doctor` prints, as one JSON-able dict."""
    from . import __version__
    from .engines.ort import OrtEngine

    ort = _call_doctor(OrtEngine)
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
        "onnx": _import("onnx"),
        "pillow": {**_import("PIL"), "for": "image inputs", "install": 'pip install "netdsl[image]"'},
        "torch": {"installed": _dist_version("torch") is not None, "version": _dist_version("torch"),
                  "for": "optional: parity tests against torchvision", "install": "pip install torch"},
        "torchvision": {"installed": _dist_version("torchvision") is not None,
                        "version": _dist_version("torchvision"), "for": "optional: parity tests",
                        "install": "pip install torchvision"},
    }
    trt = {**_import("tensorrt"), "install": "pip install tensorrt (tensorrt-cu12 / tensorrt-cu13 to match CUDA)"}
    trt_rtx = {**_import("tensorrt_rtx"),
               "install": 'pip install "netdsl[trt-rtx]" (TensorRT for RTX: builds without a GPU)'}
    cuda_python = {**_cuda_python(), "install": "pip install cuda-python"}
    gpu = gpu_report()
    libs = _cuda_libraries(cuda_major)
    report = {
        "netdsl": {"version": __version__, "path": os.path.dirname(os.path.abspath(__file__))},
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "platform": platform.platform()},
        "packages": packages,
        "onnxruntime": ort,
        "gpu": gpu,
        "libraries": libs,
        "LD_LIBRARY_PATH": os.environ.get("LD_LIBRARY_PATH"),
        "tensorrt": {"tensorrt": trt, "tensorrt_rtx": trt_rtx, "cuda-python": cuda_python},
    }
    report["engines"] = engine_pairs(ort, gpu, libs, trt, cuda_python, cuda_major, trt_rtx)
    report["problems"] = [ort["problem"]] if ort.get("problem") else []
    return report


def cmd_doctor(args: argparse.Namespace) -> int:
    try:
        report = doctor_report()
    except Exception as e:  # noqa: BLE001 - doctor reports; it does not fail
        report = {"error": f"netdsl doctor could not finish: {type(e).__name__}: {e}"}
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        _print_doctor(report)
    return 0


def _print_doctor(r: dict) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)

    def line(*parts: tuple[str, str] | str, indent: int = 2) -> None:
        text = Text(" " * indent)
        for part in parts:
            text.append(*(part if isinstance(part, tuple) else (part,)))
        console.print(text)

    def head(title: str) -> None:
        console.print(Text(title, style="bold"))

    def have(name: str, info: dict, extra: str = "") -> None:
        if info.get("installed"):
            line(f"{name} ", (str(info.get("version") or "installed"), "green"), extra)
        else:
            hint = f" ({info['for']})" if info.get("for") else ""
            line(f"{name} ", ("missing", "yellow"), hint + (f"; {info['install']}" if info.get("install") else ""))

    if "error" in r and len(r) == 1:
        line((r["error"], "red"), indent=0)
        return
    head("netdsl")
    line(f"netdsl {r['netdsl']['version']} ({r['netdsl']['path']})")
    line(f"Python {r['python']['version']} ({r['python']['executable']}), {r['python']['platform']}")
    head("packages")
    for name, info in r["packages"].items():
        have(name, info)
    head("ONNX Runtime")
    ort = r["onnxruntime"]
    if ort.get("installed"):
        dists = ", ".join(f"{d['name']} {d['version']}" for d in ort.get("all_distributions", [])) or "unknown"
        build = f"GPU build for CUDA {ort['cuda_build']}" if ort.get("cuda_build") else "CPU build"
        line(f"onnxruntime {ort.get('version')} ({build}); installed from: {dists}")
        line(f"providers: {', '.join(ort.get('providers', []))}")
    else:
        line(("missing", "red"), f": {_plain(ort.get('message') or ort.get('error', ''))}")
    if ort.get("problem"):
        line(("problem: ", "red bold"), ort["problem"])
    head("GPU")
    gpu = r["gpu"]
    for d in gpu["devices"]:
        line(f"{d['name']} ({d['memory']}), driver {gpu['driver']}, CUDA {gpu.get('cuda_driver_api') or '?'}")
    if not gpu["devices"]:
        found = "found" if gpu["nvidia_smi"] else "not found"
        line("no NVIDIA GPU visible" if not gpu["present"] else "a GPU is visible to the CUDA driver",
             f" (nvidia-smi {found}; libcuda.so.1 {'found' if gpu['libcuda']['found'] else 'not found'})")
    if gpu.get("CUDA_VISIBLE_DEVICES") is not None:
        line(f"CUDA_VISIBLE_DEVICES={gpu['CUDA_VISIBLE_DEVICES']!r}")
    head("CUDA, cuDNN and TensorRT libraries (as the dynamic loader finds them)")
    for name, info in r["libraries"].items():
        if info["found"]:
            version = f" {info['version']}" if info.get("version") else ""
            line(f"{name:<20}", ("found", "green"), f"{version}  {info.get('path') or ''}")
        elif info.get("pip_copy"):
            line(f"{name:<20}", ("not on the loader path", "yellow"), f"; a pip copy: {info['pip_copy']}")
        else:
            line(f"{name:<20}", ("missing", "yellow"))
    head("TensorRT")
    for name, info in r["tensorrt"].items():
        have(name, info, "")
    head("engines")
    width = max(len(k) for k in r["engines"])
    for name, pair in r["engines"].items():
        if pair["usable"]:
            check = pair.get("check", {})
            if "target" in check:
                how = f" built a one-layer plan with {check['engine']}, target {check['target']}"
            else:
                how = f" ran a one-layer model ({', '.join(check.get('providers') or [])})" if check else ""
            line(f"{name:<{width}}  ", ("usable", "green bold"), how)
        else:
            line(f"{name:<{width}}  ", ("not usable", "red bold"))
            for m in pair["missing"]:
                line("missing: ", m, indent=width + 4)
            for f in pair["fix"]:
                line(("fix: ", "cyan"), f, indent=width + 4)
            for log in pair.get("check", {}).get("runtime_log", []):
                line("runtime said: ", log, indent=width + 4)
        if pair.get("note"):
            line(("note: ", "yellow"), pair["note"], indent=width + 4)


def register(sub) -> None:
    p = sub.add_parser("doctor", help="report runtimes, GPU, CUDA/cuDNN/TensorRT and what each engine is missing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_doctor)
