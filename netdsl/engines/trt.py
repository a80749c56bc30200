"""TensorRT engine: build (cached) and run optimised engines on NVIDIA GPUs.

Build: Builder -> strongly typed network -> OnnxParser -> builder config (workspace limit, one
optimisation profile min/opt/max over the dynamic batch, a persistent timing cache, a progress
monitor) -> ``build_serialized_network``. Precision is decided by the ONNX model itself (TensorRT 11
is strongly typed): ``--precision fp16`` compiles the network with ``--dtype fp16`` (fp32 inputs and
outputs) before building. Datacenter ``tensorrt`` builds for the GPU present; ``tensorrt_rtx``
(TensorRT for RTX) builds a portable engine on the CPU, without a GPU and without a timing cache.

Run: ``execute_async_v3`` on device buffers from cuda-python (``cuda.bindings.runtime``), with
``set_tensor_address``; timing with CUDA events; optionally replayed as a CUDA graph.

Cache: engines live in ``$NETDSL_CACHE_DIR/trt`` (default ``~/.cache/netdsl/trt``), keyed by a hash
of the ONNX bytes, precision, profile, TensorRT version and target (GPU name and compute capability,
or "portable"). Each entry is ``<key>.plan`` plus ``<key>.json``, which records that key material and
the plan's size and sha256. Nothing in the folder is trusted: an entry is used only when its record
matches the engine asked for and the plan matches its record (size first, from ``fstat``, then the
hash), so a foreign, truncated or corrupt entry is rebuilt; cache files are opened without following
symlinks or blocking on FIFOs, and anything but a regular file is removed or bypassed with a warning.
Files are replaced atomically, and a per-key lock file makes a second process that wants the same
engine wait for the first instead of building it twice. A read-only cache still serves its entries.
Everything in this module that does not need a GPU (keys, profiles, cache
validation, locking, error messages, and real builds with TensorRT for RTX) is tested on machines
without one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache import CacheStore, OddEntry, evict, read_regular
from ..errors import EngineError, NetdslError, UsageError
from ..files import atomic_open
from ..lazy import first_available, lazy_import
from ..machine import cache_home, no_gpu
from ..text import plain
from ..version import __version__
from . import Bound, Engine, EngineOptions, ModelSource, Runner, TensorSpec, with_extra_outputs

INSTALL_HINT = ("TensorRT is not installed. To build portable engines (no GPU needed) and run them on RTX-class "
                "GPUs: pip install \"netdsl[trt-rtx]\" (TensorRT for RTX). For datacenter GPUs such as the H100: "
                "pip install tensorrt-cu13 cuda-python (its libraries come from NVIDIA's package index). "
                "docs/tensorrt.md has the details; run `netdsl doctor` to see what is found")
DEFAULT_WORKSPACE = 4 << 30
DEFAULT_PROFILE = (1, 1, 32)

# ONNX ops TensorRT's ONNX parser supports (onnx-tensorrt docs/operators.md, TensorRT 8.5+, opsets <= 17),
# restricted to the op types netdsl can emit; tests pin netdsl's lowering against this set.
TRT_SUPPORTED_OPS = frozenset({
    "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Conv", "Div", "Erf", "Flatten",
    "Gather", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "HardSigmoid", "HardSwish", "Identity", "LeakyRelu",
    "LRN", "MaxPool", "Mean", "Mul", "Pad", "Pow", "ReduceMean", "Relu", "Reshape", "Resize", "Sigmoid", "Slice",
    "Softmax", "Split", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze",
    "Elu", "Greater", "InstanceNormalization", "LayerNormalization", "Mish", "PRelu", "Softplus", "Sqrt", "Where",
})
# Emitted only at opsets where TensorRT 10+ documents support (Gelu is opset 20; GroupNormalization with a
# scale per channel is opset 21, below which netdsl decomposes it).
TRT_SUPPORTED_NEW_OPS = frozenset({"Gelu", "GroupNormalization"})


# ----------------------------------------------------------------------------- profiles
@dataclass(frozen=True, slots=True)
class Profile:
    """The dynamic-batch range an engine is built for."""

    min: int
    opt: int
    max: int

    def __str__(self) -> str:
        return f"{self.min}..{self.max} (opt {self.opt})"

    def check(self, batch: int) -> None:
        if not self.min <= batch <= self.max:
            raise EngineError(f"batch {batch} is outside the engine's profile: it was built for batch "
                              f"{self.min}..{self.max}; rebuild with --batch {min(self.min, batch)}.."
                              f"{max(self.max, batch)}")


def parse_profile(spec: str | None, opt: int | None = None) -> Profile:
    """``1..64`` (with ``opt``), ``32`` (a fixed batch), or ``1,8,32`` (min..max of a list; opt = the largest)."""
    if spec is None:
        lo, hi, default_opt = DEFAULT_PROFILE[0], DEFAULT_PROFILE[2], DEFAULT_PROFILE[2]
    else:
        try:
            if ".." in spec:
                a, b = spec.split("..", 1)
                lo, hi = int(a), int(b)
            else:
                values = [int(v) for v in spec.split(",")]
                lo, hi = min(values), max(values)
        except ValueError:
            raise UsageError(f"--batch {spec!r}: expected N, MIN..MAX or a comma list") from None
        default_opt = hi
    opt = default_opt if opt is None else opt
    if lo < 1 or hi < lo:
        raise UsageError(f"--batch {spec}: need 1 <= MIN <= MAX")
    if not lo <= opt <= hi:
        raise UsageError(f"--opt-batch {opt} must lie within --batch {lo}..{hi}")
    return Profile(lo, opt, hi)


# ----------------------------------------------------------------------------- cache
def cache_dir(explicit: str | None = None) -> Path:
    return Path(explicit or cache_home()) / "trt"


def key_material(onnx_bytes: bytes, precision: str, profile: Profile, trt_version: str, gpu: str,
                 compute_capability: str, workspace: int = DEFAULT_WORKSPACE) -> dict:
    """Everything an engine depends on, as recorded in its cache entry and checked before the entry is used."""
    return {"onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(), "precision": precision,
            "profile": [profile.min, profile.opt, profile.max], "trt": trt_version, "gpu": gpu,
            "cc": compute_capability, "workspace": workspace, "netdsl": __version__}


def cache_key(onnx_bytes: bytes, precision: str, profile: Profile, trt_version: str, gpu: str,
              compute_capability: str, workspace: int = DEFAULT_WORKSPACE) -> str:
    """Everything an engine depends on; any change gives a new key (and so a rebuild)."""
    material = key_material(onnx_bytes, precision, profile, trt_version, gpu, compute_capability, workspace)
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


MAX_TIMING_CACHE = 1 << 28
_OddEntry = OddEntry


class EngineCache(CacheStore):
    """Serialized engines on disk (:class:`netdsl.cache.CacheStore`): atomic writes, verified entries,
    one builder per key at a time, plus TensorRT's timing cache.

    Nothing found in the cache folder is trusted: an entry is used only when its record matches
    the engine asked for (:func:`key_material`) and the plan matches the record's size and sha256.
    Anything else at an entry's paths (damaged or foreign files, FIFOs, folders, symlinks) is
    removed, or bypassed when it cannot be, with a warning, and the engine is rebuilt. A cache
    folder that cannot be written still serves the entries it holds; engines built then are used
    without being cached. No state of the folder makes a build hang or fail.
    """

    suffix = ".plan"
    label = "engine"

    @property
    def timing_cache_path(self) -> Path:
        return self.dir / "timing.cache"

    def read_timing_cache(self) -> bytes:
        """TensorRT's timing cache, or nothing when absent or not a regular file (TensorRT then starts afresh)."""
        try:
            return read_regular(self.timing_cache_path, MAX_TIMING_CACHE) or b""
        except (_OddEntry, OSError):
            return b""

    def write_timing_cache(self, data: bytes) -> None:
        with self.lock("timing"):
            try:
                if not self._clear(self.timing_cache_path):
                    return
                with atomic_open(self.timing_cache_path) as f:
                    f.write(data)
            except (OSError, NetdslError) as e:
                self._cannot_write("storing the timing cache", e)


# ----------------------------------------------------------------------------- lazy imports
def import_tensorrt():
    """``tensorrt`` (datacenter) or ``tensorrt_rtx`` (TensorRT for RTX): the same API family."""
    return first_available("tensorrt", "tensorrt_rtx", message=INSTALL_HINT)


def is_rtx(trt) -> bool:
    """TensorRT for RTX: builds portable engines ahead of time on the CPU, specialises them at run time."""
    return trt.__name__.split(".")[0] == "tensorrt_rtx"


def describe_trt(trt) -> str:
    return f"{'TensorRT for RTX' if is_rtx(trt) else 'TensorRT'} {trt.__version__}"


def import_cudart():
    return lazy_import("cuda.bindings.runtime", message="the TensorRT engine needs cuda-python for device memory: "
                       "pip install cuda-python (cuda-bindings 13 for CUDA 13)")


def _check(result, what: str):
    """Unpack a cuda-python call's (err, *values) and raise on error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EngineError(f"CUDA error in {what}: {_error_name(err)}")
    return values[0] if len(values) == 1 else values


def _error_name(err) -> str:
    return getattr(err, "name", None) or str(err)


def gpu_identity(cudart) -> tuple[str, str]:
    """(GPU name, compute capability) of device 0; EngineError naming the reason when no GPU is usable."""
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count < 1:
        why = f"cudaGetDeviceCount returned {_error_name(err)}" if int(err) != 0 else "no device found"
        raise EngineError(f"no usable NVIDIA GPU ({why}): running a TensorRT engine, or building one with "
                          "datacenter TensorRT, needs an NVIDIA GPU and its driver. `netdsl build` works without "
                          "one with TensorRT for RTX, which builds portable engines on the CPU "
                          "(pip install \"netdsl[trt-rtx]\")")
    prop = _check(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace").rstrip("\0") if isinstance(prop.name, bytes) else str(prop.name)
    return name, f"{prop.major}.{prop.minor}"


@dataclass(frozen=True, slots=True)
class Target:
    """What an engine is built for: the GPU at hand (TensorRT) or, with TensorRT for RTX, a portable engine."""

    gpu: str
    cc: str
    portable: bool = False

    def __str__(self) -> str:
        return "portable (any GPU that TensorRT for RTX supports)" if self.portable else f"{self.gpu} (sm {self.cc})"


PORTABLE = Target("portable", "tensorrt-rtx-default", portable=True)


def build_target(trt, gpu: tuple[str, str] | None = None) -> Target:
    """TensorRT for RTX builds portable engines without a GPU; datacenter TensorRT builds for the GPU present
    (``gpu``: its name and compute capability, when the caller already has them)."""
    if is_rtx(trt):
        return PORTABLE
    return Target(*(gpu or gpu_identity(import_cudart())))


# ----------------------------------------------------------------------------- building
def build_engine(trt, onnx_bytes: bytes, profile: Profile, cache: EngineCache, workspace: int = DEFAULT_WORKSPACE,
                 progress: bool = False, monitor=None) -> tuple[bytes, float]:
    """Build a serialized engine; returns (plan bytes, build seconds).

    Datacenter TensorRT reuses and updates the persistent timing cache. TensorRT for RTX does not use
    one: there it has no effect on the engine and would make the CPU-only build query for a GPU.
    ``monitor``: an IProgressMonitor to use instead of the progress bar (tests observe the phases).
    """
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly is not None:
        flags |= 1 << int(strongly)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [plain(parser.get_error(i), 300) for i in range(parser.num_errors)]  # they quote the model
        raise EngineError("TensorRT's ONNX parser rejected the model: " + "; ".join(errors[:5]))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    prof = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        dims = list(t.shape)[1:]
        prof.set_shape(t.name, [profile.min, *dims], [profile.opt, *dims], [profile.max, *dims])
    config.add_optimization_profile(prof)
    timing = not is_rtx(trt)
    if timing:
        config.set_timing_cache(config.create_timing_cache(cache.read_timing_cache()), ignore_mismatch=False)
    if monitor is None and progress:
        monitor = progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor
    start = time.perf_counter()
    try:
        plan = builder.build_serialized_network(network, config)
    finally:
        if monitor is not None:
            monitor.close()
    seconds = time.perf_counter() - start
    if plan is None:
        raise EngineError("TensorRT failed to build the engine (see the messages above)")
    if timing:
        cache.write_timing_cache(bytes(config.get_timing_cache().serialize()))
    return bytes(plan), seconds


def progress_monitor(trt, show: bool = True):
    """TensorRT's IProgressMonitor feeding a rich progress bar (phases nest; one bar per phase).

    It also records the phases it saw (``phases``) and the steps completed (``steps``). ``show=False``
    records without drawing.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.phases: list[str] = []
            self.steps = 0
            self.tasks = {}
            self.bar = None
            if show:
                self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), transient=True)
                self.bar.start()

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.phases.append(phase_name)
            if self.bar is not None:
                depth = 1 if parent_phase else 0
                self.tasks[phase_name] = self.bar.add_task("  " * depth + phase_name, total=max(num_steps, 1))

        def step_complete(self, phase_name, step):
            self.steps += 1
            if phase_name in self.tasks:
                self.bar.update(self.tasks[phase_name], completed=step + 1)
            return True  # keep building

        def phase_finish(self, phase_name):
            task = self.tasks.pop(phase_name, None)
            if task is not None:
                self.bar.remove_task(task)

        def close(self):
            if self.bar is not None:
                self.bar.stop()

    return Monitor()


# ----------------------------------------------------------------------------- cached plans
@dataclass(frozen=True)
class Plan:
    """A serialized engine and where it came from (``build_seconds`` is None for a cache hit)."""

    data: bytes
    key: str
    target: Target
    profile: Profile
    trt: str  # "TensorRT 11.4.0" / "TensorRT for RTX 1.7.1"
    build_seconds: float | None

    @property
    def cached(self) -> bool:
        return self.build_seconds is None


def cached_plan(trt, model: ModelSource, options: EngineOptions, target: Target,
                deserialize: Callable[[bytes], object] | None = None) -> tuple[Plan, object]:
    """The engine for ``model`` from the cache, or built and cached; with ``deserialize``, also the engine.

    Everything happens under the key's lock, so a second process wanting the same engine waits and then
    reads the first one's plan. A cached plan that ``deserialize`` rejects (None: stale despite its key,
    e.g. after a driver change) is discarded and rebuilt.
    """
    profile = Profile(*options.batch_range) if options.batch_range else Profile(*DEFAULT_PROFILE)
    if options.extra_outputs:  # compare --per-layer: intermediate tensors become outputs too
        model = with_extra_outputs(model, options.extra_outputs)
    onnx_bytes = model.read_bytes()
    version = describe_trt(trt)
    material = key_material(onnx_bytes, options.precision, profile, version, target.gpu, target.cc)
    key = cache_key(onnx_bytes, options.precision, profile, version, target.gpu, target.cc)
    cache = EngineCache(cache_dir(options.cache_dir))
    engine = None
    built_seconds = None
    with cache.lock(key):
        data = cache.load(key, expect=material)
        if data is not None and deserialize is not None:
            engine = deserialize(data)
            if engine is None:
                cache.discard(key, "holds a plan this TensorRT cannot load")
                data = None
        if data is None:
            data, built_seconds = build_engine(trt, onnx_bytes, profile, cache, progress=options.progress)
            if cache.store(key, data, {"model": plain(model.name), **material}):
                evict(cache.dir.parent, keep=key)  # the cache's size cap, least recently used first
            if deserialize is not None:
                engine = deserialize(data)
                if engine is None:
                    raise EngineError("TensorRT could not deserialize the engine it just built")
    return Plan(data, key, target, profile, version, built_seconds), engine


def build(model: ModelSource, options: EngineOptions) -> Plan:
    """Build (or fetch from the cache) the engine for ``model``: what ``netdsl build`` writes.

    With TensorRT for RTX this needs no GPU (a portable engine); datacenter TensorRT builds for the GPU present.
    """
    trt = import_tensorrt()
    plan, _ = cached_plan(trt, model, options, build_target(trt))
    return plan


# ----------------------------------------------------------------------------- the engine
class TrtEngine(Engine):
    name = "trt"

    def prepare(self, model: ModelSource, device: str, options: EngineOptions) -> Runner:
        if device != "cuda":
            raise UsageError("the TensorRT engine runs on --device cuda")
        trt = import_tensorrt()
        cudart = import_cudart()
        gpu, cc = gpu_identity(cudart)  # fail before building when there is nothing to run on
        target = build_target(trt, (gpu, cc))
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        plan, engine = cached_plan(trt, model, options, target, deserialize=runtime.deserialize_cuda_engine)
        return TrtRunner(trt, cudart, runtime, engine, plan, gpu, cc)

    @classmethod
    def doctor(cls) -> dict:
        try:
            trt = import_tensorrt()
        except EngineError as e:
            return {"installed": False, "message": str(e)}
        return {"installed": True, "module": trt.__name__, "version": trt.__version__,
                "builds_without_gpu": is_rtx(trt)}

    @classmethod
    def doctor_pairs(cls, machine: dict) -> dict[str, dict]:
        trt, trt_rtx, cuda_python = machine["tensorrt"], machine.get("tensorrt_rtx") or {}, machine["cuda-python"]
        missing, fix = [], []
        any_trt = trt["installed"] or bool(trt_rtx.get("installed"))
        if not any_trt:
            missing.append("the tensorrt package")
            fix.append("pip install tensorrt (tensorrt-cu12 or tensorrt-cu13 to match the CUDA version)")
        if not cuda_python["installed"]:
            missing.append("cuda-python (device memory for the TensorRT engine)")
            fix.append("pip install cuda-python")
        gpu_missing, gpu_fix = no_gpu(machine["gpu"])
        missing += gpu_missing
        fix += gpu_fix
        info = cls.doctor()
        if not info.get("installed") and info.get("message"):
            hint = re.sub(r"\s*Run `netdsl doctor`.*$", "", re.sub(r"^netdsl: error: ", "", info["message"].strip()))
            fix = [hint if f.startswith("pip install tensorrt") else f for f in fix]
        pairs = {"trt:cuda": {"missing": missing, "fix": fix,
                              "probe": "run" if machine["gpu"]["present"] and any_trt else None}}
        # building plans (netdsl build): TensorRT for RTX needs no GPU, datacenter TensorRT builds on the GPU present
        if any_trt:
            pairs["trt:build"] = {"probe": "build"}
        else:
            pairs["trt:build"] = {"missing": ["the tensorrt or tensorrt_rtx package"],
                                  "fix": ['pip install "netdsl[trt-rtx]" (TensorRT for RTX builds without a GPU)']}
        return pairs


class TrtRunner(Runner):
    def __init__(self, trt, cudart, runtime, engine, plan: Plan, gpu: str, cc: str):
        self.trt, self.cudart, self.engine, self.plan = trt, cudart, engine, plan
        self.runtime = runtime  # kept: the runtime must outlive the engines it deserialised
        self.profile, self.gpu, self.cc = plan.profile, gpu, cc
        self.context = engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._shapes = {n: tuple(engine.get_tensor_shape(n))[1:] for n in names}
        self.inputs = tuple(TensorSpec(n, (None, *self._shapes[n]), self._dtypes[n]) for n in names if is_input[n])
        self.outputs = tuple(TensorSpec(n, (None, *self._shapes[n]), self._dtypes[n])
                             for n in names if not is_input[n])
        self._buffers = {}
        for n in names:  # device buffers sized for the profile's largest batch, reused by every run
            size = int(np.prod((self.profile.max, *self._shapes[n]))) * self._dtypes[n].itemsize
            ptr = _check(cudart.cudaMalloc(max(size, 1)), "cudaMalloc")
            self._buffers[n] = ptr
            self.context.set_tensor_address(n, ptr)

    def __del__(self):
        with contextlib.suppress(Exception):
            for ptr in self._buffers.values():
                self.cudart.cudaFree(ptr)
            self.cudart.cudaStreamDestroy(self.stream)

    def bind(self, feeds: dict[str, np.ndarray]) -> Bound:
        return TrtBound(self, feeds)

    def describe(self) -> dict:
        return {"engine": "trt", "engine_version": self.trt.__version__, "engine_module": self.trt.__name__,
                "device": "cuda", "device_name": self.gpu,
                "compute_capability": self.cc, "profile": [self.profile.min, self.profile.opt, self.profile.max],
                "built_for": str(self.plan.target), "cache_key": self.plan.key,
                "build_seconds": self.plan.build_seconds, "cached": self.plan.cached}


class TrtBound(Bound):
    """Feeds copied to the device once; ``run`` only enqueues the engine (optionally as a CUDA graph)."""

    def __init__(self, runner: TrtRunner, feeds: dict[str, np.ndarray]):
        self.r = runner
        cudart = runner.cudart
        batches = {v.shape[0] for v in feeds.values()}
        if len(batches) != 1:
            raise EngineError("all inputs must have the same batch size")
        self.batch = batches.pop()
        runner.profile.check(self.batch)
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        for name, value in feeds.items():
            value = np.ascontiguousarray(value, dtype=runner._dtypes[name])
            runner.context.set_input_shape(name, value.shape)
            _check(cudart.cudaMemcpyAsync(runner._buffers[name], value.ctypes.data, value.nbytes, h2d, runner.stream),
                   "cudaMemcpyAsync")
        _check(cudart.cudaStreamSynchronize(runner.stream), "cudaStreamSynchronize")
        self.graph_exec = None

    def run(self) -> None:
        if self.graph_exec is not None:
            _check(self.r.cudart.cudaGraphLaunch(self.graph_exec, self.r.stream), "cudaGraphLaunch")
        elif not self.r.context.execute_async_v3(int(self.r.stream)):
            raise EngineError("TensorRT execute_async_v3 failed")

    def capture_graph(self) -> None:
        """Record one execution as a CUDA graph; later ``run`` calls replay it (bench --cuda-graph)."""
        cudart = self.r.cudart
        self.run()  # TensorRT needs one run after shape changes before capture
        self.synchronize()
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        _check(cudart.cudaStreamBeginCapture(self.r.stream, mode), "cudaStreamBeginCapture")
        self.r.context.execute_async_v3(int(self.r.stream))
        graph = _check(cudart.cudaStreamEndCapture(self.r.stream), "cudaStreamEndCapture")
        self.graph_exec = _check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")

    def synchronize(self) -> None:
        _check(self.r.cudart.cudaStreamSynchronize(self.r.stream), "cudaStreamSynchronize")

    def fetch(self) -> dict[str, np.ndarray]:
        cudart = self.r.cudart
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        out = {}
        for spec in self.r.outputs:
            shape = tuple(self.r.context.get_tensor_shape(spec.name))
            host = np.empty(shape, dtype=spec.dtype)
            _check(cudart.cudaMemcpyAsync(host.ctypes.data, self.r._buffers[spec.name], host.nbytes, d2h,
                                          self.r.stream), "cudaMemcpyAsync")
            out[spec.name] = host
        self.synchronize()
        return out

    def device_time_ms(self, iterations: int) -> float:
        """Mean GPU time of ``iterations`` back-to-back runs, measured with CUDA events."""
        cudart = self.r.cudart
        start = _check(cudart.cudaEventCreate(), "cudaEventCreate")
        end = _check(cudart.cudaEventCreate(), "cudaEventCreate")
        _check(cudart.cudaEventRecord(start, self.r.stream), "cudaEventRecord")
        for _ in range(iterations):
            self.run()
        _check(cudart.cudaEventRecord(end, self.r.stream), "cudaEventRecord")
        _check(cudart.cudaEventSynchronize(end), "cudaEventSynchronize")
        ms = _check(cudart.cudaEventElapsedTime(start, end), "cudaEventElapsedTime")
        cudart.cudaEventDestroy(start)
        cudart.cudaEventDestroy(end)
        return float(ms) / max(iterations, 1)
