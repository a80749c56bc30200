"""ONNX Runtime engine: CPU, CUDA (with IO binding) and ONNX Runtime's TensorRT execution provider.

Never falls back silently: when ``--device cuda`` is asked for and ONNX Runtime cannot provide the
CUDA execution provider (CPU-only wheel, no GPU, missing CUDA/cuDNN libraries), it says so and stops.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np

from ..errors import EngineError
from ..lazy import lazy_import
from ..machine import cuda_needs, gpu_name, ld_fix, missing_libraries, no_gpu
from . import (
    Bound,
    Engine,
    EngineOptions,
    ModelSource,
    Runner,
    TensorSpec,
    cpu_name,
    physical_cores,
    with_extra_outputs,
)

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
OPT_LEVELS = ("disable", "basic", "extended", "all")

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
           "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8}


def _ort():
    return lazy_import("onnxruntime", extra="cpu", purpose="the ONNX Runtime engine (--engine ort)")


class OrtEngine(Engine):
    name = "ort"

    def prepare(self, model: ModelSource, device: str, options: EngineOptions) -> Runner:
        ort = _ort()
        provider = PROVIDERS[device]
        if device != "cpu" and hasattr(ort, "preload_dlls"):
            # CUDA/cuDNN from pip packages (nvidia-*-cu12/13) are not on the loader path by default
            with contextlib.suppress(Exception):
                ort.preload_dlls()
        available = ort.get_available_providers()
        if provider not in available:
            raise EngineError(_why_unavailable(ort, device, available))
        so = ort.SessionOptions()
        if options.opt_level not in OPT_LEVELS:
            raise EngineError(f"--opt-level must be one of {', '.join(OPT_LEVELS)}")
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[options.opt_level]
        threads = options.threads or physical_cores()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # warnings from the runtime are not ours to print
        if options.save_optimized:
            so.optimized_model_filepath = options.save_optimized
        providers = [provider] if device == "cpu" else [provider, "CPUExecutionProvider"]
        if options.extra_outputs:
            model = with_extra_outputs(model, options.extra_outputs)
        source = model.path if model.path is not None and model.onnx_bytes is None else model.read_bytes()
        start = time.perf_counter()
        try:
            session = ort.InferenceSession(source, sess_options=so, providers=providers)
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types from C++
            raise EngineError(f"ONNX Runtime could not load the model: {str(e).strip().splitlines()[0]}") from None
        if device != "cpu" and provider not in session.get_providers():
            raise EngineError(_why_unavailable(ort, device, session.get_providers()))
        return OrtRunner(session, device, threads, options, time.perf_counter() - start)

    @classmethod
    def doctor(cls) -> dict:
        try:
            ort = _ort()
        except EngineError as e:
            return {"installed": False, "message": str(e)}
        import importlib.metadata as md

        dists = [d for d in ("onnxruntime", "onnxruntime-gpu") if _has_dist(md, d)]
        info = {"installed": True, "version": ort.__version__, "distributions": dists,
                "providers": ort.get_available_providers(), "device": ort.get_device()}
        if len(dists) > 1:
            info["problem"] = ("both onnxruntime and onnxruntime-gpu are installed and shadow each other: "
                               "pip uninstall -y onnxruntime onnxruntime-gpu, then install one of them")
        return info

    @classmethod
    def doctor_pairs(cls, machine: dict) -> dict[str, dict]:
        ort, gpu, libs = machine["onnxruntime"], machine["gpu"], machine["libraries"]
        if not ort.get("installed"):
            gpu_package = {"missing": ["the onnxruntime-gpu package"], "fix": ['pip install "netdsl[gpu]"']}
            return {"ort:cpu": {"missing": ["the onnxruntime package"], "fix": ['pip install "netdsl[cpu]"']},
                    "ort:cuda": gpu_package, "ort:tensorrt": gpu_package}
        conflict = ort.get("problem")
        providers = ort.get("providers", [])
        pairs = {"ort:cpu": {"probe": "run", "note": conflict}}
        gpu_missing, gpu_fix = no_gpu(gpu)
        cuda_missing, cuda_fix = cuda_needs(libs, machine.get("cuda_major"))
        gpu_build = ("onnxruntime-gpu" in {d["name"] for d in ort.get("all_distributions", [])}
                     or "CUDAExecutionProvider" in providers)
        for device in ("cuda", "tensorrt"):
            provider = PROVIDERS[device]
            missing, fix = [], []
            if provider not in providers:
                if gpu_build:
                    missing.append(f"{provider} (this onnxruntime {ort['version']} does not offer it)")
                    fix.append('pip uninstall -y onnxruntime onnxruntime-gpu && pip install "netdsl[gpu]"')
                else:
                    missing.append(f"{provider}: the installed onnxruntime {ort['version']} is the CPU build")
                    fix.append('pip uninstall -y onnxruntime && pip install "netdsl[gpu]" '
                               "(never keep onnxruntime and onnxruntime-gpu installed together)")
            missing += gpu_missing + cuda_missing
            fix += gpu_fix + cuda_fix
            if device == "tensorrt":
                trt_libs, folders = missing_libraries(libs, ["libnvinfer.so.10", "libnvinfer.so.11"])
                if len(trt_libs) == 2:
                    missing.append("TensorRT libraries (libnvinfer.so.10 or .11) not found by the loader")
                    fix.append(ld_fix(folders) if folders else
                               "pip install tensorrt-cu12 (or tensorrt-cu13, matching CUDA), then add "
                               "site-packages/tensorrt_libs to LD_LIBRARY_PATH")
            pairs[f"ort:{device}"] = {"missing": missing, "fix": list(dict.fromkeys(fix)), "note": conflict,
                                      "probe": "run" if provider in providers and gpu["present"] else None}
        return pairs


def _has_dist(md, name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def _why_unavailable(ort, device: str, available: list[str]) -> str:
    provider = PROVIDERS[device]
    base = (f"--device {device} needs ONNX Runtime's {provider}, but this onnxruntime {ort.__version__} offers only "
            f"{', '.join(available)}")
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return base + ("; the installed wheel is the CPU build. Install the GPU build instead: "
                           "pip uninstall -y onnxruntime && pip install \"netdsl[gpu]\"")
        return base + ("; the CUDA provider failed to load (no NVIDIA GPU visible, or CUDA 12/13 and cuDNN 9 "
                       "libraries missing); run `netdsl doctor` for details")
    return base + "; the TensorRT provider needs onnxruntime-gpu and TensorRT libraries"


class OrtRunner(Runner):
    def __init__(self, session, device: str, threads: int, options: EngineOptions, load_seconds: float):
        self.session, self.device, self.threads, self.options = session, device, threads, options
        self.load_seconds = load_seconds
        self.inputs = tuple(_spec(i) for i in session.get_inputs())
        self.outputs = tuple(_spec(o) for o in session.get_outputs())
        self._output_names = [o.name for o in self.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.device == "cpu":
            values = self.session.run(self._output_names, feeds)
            return dict(zip(self._output_names, values, strict=True))
        return super().run(feeds)  # GPU: through IO binding

    def bind(self, feeds: dict[str, np.ndarray]) -> Bound:
        return OrtBound(self, feeds)

    def describe(self) -> dict:
        ort = _ort()

        level = self.options.opt_level
        out = {"engine": "ort", "engine_version": ort.__version__, "device": self.device,
               "providers": self.session.get_providers(), "threads": self.threads, "opt_level": level}
        out["device_name"] = cpu_name() if self.device == "cpu" else gpu_name()
        return out


class OrtBound(Bound):
    """IO binding: on CUDA, inputs are copied to the GPU once and outputs stay there between runs."""

    def __init__(self, runner: OrtRunner, feeds: dict[str, np.ndarray]):
        ort = _ort()

        self.runner = runner
        self.binding = runner.session.io_binding()
        self._values = []
        if runner.device == "cpu":
            for name, value in feeds.items():
                self.binding.bind_cpu_input(name, value)
            for name in runner._output_names:
                self.binding.bind_output(name)
        else:
            for name, value in feeds.items():
                v = ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0)
                self._values.append(v)  # keep device buffers alive
                self.binding.bind_ortvalue_input(name, v)
            for name in runner._output_names:
                self.binding.bind_output(name, "cuda", 0)

    def run(self) -> None:
        self.runner.session.run_with_iobinding(self.binding)

    def synchronize(self) -> None:
        if self.runner.device != "cpu":
            self.binding.synchronize_outputs()

    def fetch(self) -> dict[str, np.ndarray]:
        values = self.binding.copy_outputs_to_cpu()
        return dict(zip(self.runner._output_names, values, strict=True))


def _spec(arg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    return TensorSpec(arg.name, shape, np.dtype(_DTYPES.get(arg.type, np.float32)))
