"""What this machine has: CPU cores, GPUs, shared libraries and installed packages.

Plain facts, gathered without importing any engine: :mod:`netdsl.doctor` and the engines' own
``doctor_pairs`` answers read them, the engines' ``describe`` uses the CPU and GPU names, and the ONNX
Runtime engine counts physical cores for its default thread count. Nothing here raises for a missing
package or library: absence is a fact to report.
"""

from __future__ import annotations

import ctypes
import glob
import importlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


# ============================================================================= CPU
def physical_cores() -> int:
    """Physical CPU cores (not hyper-threads) available to this process."""
    available = available_cpus()
    cores = set()
    try:
        with open("/proc/cpuinfo") as f:
            phys = core = None
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not line.strip():
                    if core is not None:
                        cores.add((phys, core))
                    phys = core = None
            if core is not None:
                cores.add((phys, core))
    except OSError:
        pass
    n = len(cores) or available
    return max(1, min(n, available))


def available_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask; all of them where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def logical_cpus() -> int:
    """The machine's logical CPUs: the most intra-op threads an engine is given (more never helps, and
    ONNX Runtime grows memory without bound for absurd counts)."""
    return os.cpu_count() or 1


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # /proc/cpuinfo flags of x86 int8 dot-product instructions
NO_VNNI_WARNING = ("this CPU has no VNNI (AVX512-VNNI or AVX-VNNI): int8 models (netdsl quantize, --precision int8) "
                   "can run slower than fp32 here, and ONNX Runtime's u8s8 kernels (uint8 activations, int8 weights) "
                   "can saturate without it and lose accuracy")


def cpu_int8(cpuinfo: str = "/proc/cpuinfo", arch: str | None = None) -> dict:
    """Whether the CPU has int8 dot-product instructions: ``{"arch", "vnni": bool | None, "flags": [...]}``
    (``vnni`` None where it cannot be told: not x86, or no ``cpuinfo`` file)."""
    import platform

    arch = (arch or platform.machine()).lower()
    flags: set[str] = set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    x86 = arch in ("x86_64", "amd64", "i686", "i386")
    found = sorted(f for f in VNNI_FLAGS if f in flags)
    return {"arch": arch, "vnni": bool(found) if x86 and flags else None, "flags": found}


# ============================================================================= cache
def cache_home() -> Path:
    """netdsl's cache directory: ``$NETDSL_CACHE_DIR``, else ``$XDG_CACHE_HOME/netdsl``, else ``~/.cache/netdsl``."""
    return Path(os.environ.get("NETDSL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "netdsl"))


# ============================================================================= GPU
def gpu_name() -> str:
    """The name of the first NVIDIA GPU as nvidia-smi reports it, or "unknown GPU"."""
    names = [d["name"] for d in _nvidia_smi_devices()[0]]
    return names[0] if names else "unknown GPU"


def _nvidia_smi_devices(smi: str | None = None) -> tuple[list[dict], str | None, str | None]:
    """(devices with name and memory, driver version, error) from ``nvidia-smi --query-gpu``."""
    smi = smi or shutil.which("nvidia-smi") or "nvidia-smi"
    devices: list[dict] = []
    driver = None
    try:
        q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return devices, driver, str(e)
    if q.returncode != 0:
        text = (q.stderr or q.stdout).strip()
        return devices, driver, text.splitlines()[0][:300] if text else f"exit {q.returncode}"
    for line in q.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            devices.append({"name": parts[0], "memory": parts[2]})
            driver = parts[1]
    return devices, driver, None


def gpu_report() -> dict:
    """NVIDIA GPUs as nvidia-smi and the driver library (libcuda.so.1) see them."""
    out: dict = {"nvidia_smi": shutil.which("nvidia-smi"), "devices": [], "driver": None, "cuda_driver_api": None,
                 "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if out["nvidia_smi"]:
        out["devices"], out["driver"], error = _nvidia_smi_devices(out["nvidia_smi"])
        if error:
            out["nvidia_smi_error"] = error
        try:
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


# ============================================================================= packages
def dist_version(name: str) -> str | None:
    import importlib.metadata as md  # here, not at the top: a run of a model never needs it

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def ort_distributions() -> list[dict]:
    """Every installed distribution that provides the ``onnxruntime`` import package.

    onnxruntime, onnxruntime-gpu, onnxruntime-directml, ort-nightly ... all install the same
    ``onnxruntime/`` folder: with two of them, whichever was installed last wins, file by file.
    """
    import importlib.metadata as md

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




def import_status(module: str) -> dict:
    try:
        m = importlib.import_module(module)
    except ImportError as e:
        return {"installed": False, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - a broken binary package raises all sorts of things on import
        return {"installed": False, "error": f"{type(e).__name__}: {e}"}
    return {"installed": True, "version": getattr(m, "__version__", None)}


def cuda_python() -> dict:
    for module in ("cuda.bindings.runtime", "cuda.cudart"):
        r = import_status(module)
        if r["installed"]:
            r["version"] = dist_version("cuda-python") or dist_version("cuda-bindings")
            r["module"] = module
            return r
    return {"installed": False, "error": "neither cuda.bindings nor cuda.cudart imports"}




# ============================================================================= shared libraries
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



def cuda_libraries(cuda_major: int | None) -> dict[str, dict]:
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


def missing_libraries(libs: dict[str, dict], names: list[str]) -> tuple[list[str], list[str]]:
    """(missing names, folders holding pip copies of them) for the libraries in ``names``."""
    missing = [n for n in names if not libs.get(n, {}).get("found")]
    folders = sorted({os.path.dirname(libs[n]["pip_copy"]) for n in missing if libs.get(n, {}).get("pip_copy")})
    return missing, folders


def ld_fix(folders: list[str]) -> str:
    return "export LD_LIBRARY_PATH=" + ":".join(folders) + ":$LD_LIBRARY_PATH"


def cuda_needs(libs: dict, cuda_major: int | None) -> tuple[list[str], list[str]]:
    """What ONNX Runtime's CUDA provider lacks among CUDA/cuDNN libraries, and how to fix it."""
    majors = [cuda_major] if cuda_major else [12, 13]
    best = None
    for m in majors:
        wanted = [f"libcudart.so.{m}", f"libcublasLt.so.{m}", f"libcublas.so.{m}", f"libcufft.so.{m - 1}",
                  "libcurand.so.10"]
        miss, folders = missing_libraries(libs, wanted)
        if best is None or len(miss) < len(best[1]):
            best = (m, miss, folders)
    m, miss, folders = best
    missing, fix = [], []
    if miss:
        which = f"CUDA {m}" if cuda_major else f"CUDA {m} (or whichever major the onnxruntime-gpu build needs)"
        missing.append(f"{which} runtime libraries not found by the loader: {', '.join(miss)}")
    cudnn, cudnn_folders = missing_libraries(libs, ["libcudnn.so.9"])
    if cudnn:
        missing.append("cuDNN 9 (libcudnn.so.9) not found by the loader")
    folders = sorted(set(folders) | set(cudnn_folders))
    if folders:
        fix.append(f"the libraries are installed as pip packages but not on the loader path: {ld_fix(folders)}")
    elif miss or cudnn:
        fix.append(f'pip install "onnxruntime-gpu[cuda,cudnn]" (CUDA {m} and cuDNN 9 as pip packages; then add '
                   "their site-packages/nvidia/*/lib folders to LD_LIBRARY_PATH), or install the CUDA "
                   f"{m} toolkit and cuDNN 9 system-wide")
    return missing, fix


def no_gpu(gpu: dict) -> tuple[list[str], list[str]]:
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
