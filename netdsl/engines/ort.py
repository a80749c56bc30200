"""ONNX Runtime engine: CPU, CUDA (with IO binding) and ONNX Runtime's TensorRT execution provider.

Never falls back silently: when ``--device cuda`` is asked for and ONNX Runtime cannot provide the
CUDA execution provider (CPU-only wheel, no GPU, missing CUDA/cuDNN libraries), it says so and stops.

ONNX Runtime's own log (which it colours itself, whatever the terminal) and the provider-fallback
notes it prints are kept off the user's terminal: failures reach the user as netdsl messages
(:class:`~netdsl.errors.EngineError`, with anything quoted from the model made plain), and an
allocation failure says "out of memory at batch N". ``NETDSL_DEBUG=1`` shows ONNX Runtime's warnings
again, unless ``NO_COLOR`` is set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import sys
import time
from collections.abc import Iterator

import numpy as np

from ..errors import EngineError
from ..lazy import lazy_import
from ..machine import cuda_needs, gpu_name, ld_fix, missing_libraries, no_gpu
from ..text import plain
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
           "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16, "tensor(int8)": np.int8,
           "tensor(uint64)": np.uint64, "tensor(uint32)": np.uint32, "tensor(uint16)": np.uint16,
           "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


# ONNX Runtime's log levels: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
_QUIET, _WARNINGS = 4, 2
# what ONNX Runtime's errors say when an allocation failed (its arena, the CPU allocator, std::bad_alloc)
_ALLOCATION_FAILED = re.compile(r"failed to allocate|bad_alloc|out of memory|cannot allocate", re.IGNORECASE)


def _ort():
    onnxruntime = lazy_import("onnxruntime", extra="cpu", purpose="the ONNX Runtime engine (--engine ort)")
    onnxruntime.set_default_logger_severity(log_severity())
    return onnxruntime


def debugging() -> bool:
    return bool(os.environ.get("NETDSL_DEBUG"))


def log_severity() -> int:
    """ONNX Runtime's log level for netdsl's sessions: only fatal messages, unless NETDSL_DEBUG asks for its
    warnings (not under NO_COLOR: ONNX Runtime colours its log lines itself and cannot be told not to)."""
    return _WARNINGS if debugging() and "NO_COLOR" not in os.environ else _QUIET


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return plain(lines[0] if lines else type(error).__name__, 500)


@contextlib.contextmanager
def run_errors(batch: int | None) -> Iterator[None]:
    """ONNX Runtime's failures while running, as netdsl messages; an allocation failure names the batch."""
    oom = (f"out of memory at batch {batch}; try a smaller --batch" if batch is not None
           else "out of memory; try a smaller batch")
    try:
        yield
    except MemoryError:
        raise EngineError(oom) from None
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types from C++
        if not type(e).__module__.startswith("onnxruntime"):
            raise
        if _ALLOCATION_FAILED.search(str(e)):
            raise EngineError(oom) from None
        raise EngineError(f"ONNX Runtime failed to run the model: {_first_line(e)}") from None


def _batch(feeds: dict[str, np.ndarray]) -> int | None:
    for value in feeds.values():
        return int(value.shape[0]) if getattr(value, "ndim", 0) else None
    return None


@contextlib.contextmanager
def _optimized_model(so, path: str | None) -> Iterator[None]:
    """With ``path``: ONNX Runtime writes its optimised model into a scratch folder, and on success the model is
    moved to ``path`` as every netdsl output is (:mod:`netdsl.files`: atomically, links and devices kept, write
    failures as messages). ``path`` is checked first: ONNX Runtime's own failure to write it reads as a failure
    to load the model ("SystemError : 2")."""
    if not path:
        yield
        return
    import shutil
    import tempfile

    from ..files import check_output, write_with

    check_output(path)
    scratch = tempfile.mkdtemp(prefix="netdsl-optimized-")
    try:
        written = os.path.join(scratch, "optimized.onnx")
        so.optimized_model_filepath = written
        yield
        with open(written, "rb") as f:
            write_with(path, lambda out: shutil.copyfileobj(f, out, 1 << 20))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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
        so.log_severity_level = log_severity()  # the runtime's log is not the user's to read (module docstring)
        providers = [provider] if device == "cpu" else [provider, "CPUExecutionProvider"]
        if options.extra_outputs:
            model = with_extra_outputs(model, options.extra_outputs)
        source = model.path if model.path is not None and model.onnx_bytes is None else model.read_bytes()
        start = time.perf_counter()
        printed = io.StringIO()  # ONNX Runtime prints "EP Error ... Falling back" notes to stdout itself
        with _optimized_model(so, options.save_optimized):
            try:
                with contextlib.redirect_stdout(printed):
                    session = ort.InferenceSession(source, sess_options=so, providers=providers)
            except MemoryError:
                raise EngineError("out of memory while loading the model") from None
            except Exception as e:  # noqa: BLE001 - ORT raises its own exception types from C++
                raise EngineError(f"ONNX Runtime could not load the model: {_first_line(e)}") from None
            finally:
                if debugging() and printed.getvalue():
                    sys.stderr.write(printed.getvalue())
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

    def described(self, model: ModelSource) -> ModelSource:
        """``model`` (a .onnx path the session read itself) with its name, inputs, outputs and metadata as ONNX
        Runtime read them: what :func:`netdsl.session.model_source` learns from the ModelProto, without onnx."""
        meta = self.session.get_modelmeta()
        name = plain(meta.graph_name or model.name, 200)  # a display name, from the file: never a terminal escape
        return dataclasses.replace(model, name=name, inputs=self.inputs, outputs=self.outputs,
                                   metadata=dict(meta.custom_metadata_map))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with run_errors(_batch(feeds)):
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
        self.batch = _batch(feeds)
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
        with run_errors(self.batch):
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
