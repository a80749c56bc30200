"""Stage 6: execution engines behind one small seam.

An :class:`Engine` turns a compiled model into a :class:`Runner` for one device (``prepare``);
a runner executes feeds (``run``), can keep feeds on the device for timing (``bind``), and says
what it is (``describe``). The CLI and the :class:`netdsl.Session` API see nothing else, so a new
engine plugs in by adding a module here and a line to :data:`ENGINES`.

Engines import their heavy packages (onnxruntime, tensorrt, cuda-python) lazily, inside ``prepare``
or ``describe``, so ``netdsl check`` never pays for them and a missing package is a clear
:class:`~netdsl.errors.EngineError` that says how to install it.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from ..errors import EngineError, UsageError
from ..lazy import install_hint
from ..machine import cpu_name, logical_cpus, physical_cores  # noqa: F401 - re-exported for the engines
from ..text import plain

# name -> (module, class, devices, one-line description)
ENGINES: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "ort": ("netdsl.engines.ort", "OrtEngine", ("cpu", "cuda", "tensorrt"), "ONNX Runtime"),
    "trt": ("netdsl.engines.trt", "TrtEngine", ("cuda",), "TensorRT"),
}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """An input or output of a compiled model; ``None`` in the shape is the dynamic batch."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype

    def describe(self) -> str:
        """``name: Nx3x224x224 float32``; the name (which may come from an untrusted file) made plain."""
        dims = "x".join("N" if d is None else str(d) for d in self.shape)
        return f"{plain(self.name, 200)}: {dims} {np.dtype(self.dtype).name}"


@dataclass(frozen=True)
class ModelSource:
    """A compiled ONNX model handed to an engine: in-memory bytes or a path (needed for external data)."""

    name: str
    onnx_bytes: bytes | None = None
    path: str | None = None
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    net_locations: dict[str, str] = field(default_factory=dict)  # ONNX tensor name -> .net source location
    held: object = field(default=None, repr=False, compare=False)  # what keeps ``path`` valid (an open cache file)

    def __getstate__(self) -> dict:
        """Pickled (for another process: Ray's object store) with its bytes when its path names a descriptor
        open in this process only (a cache entry held open)."""
        state = dict(self.__dict__)
        if state.get("held") is not None:
            state.update(onnx_bytes=self.read_bytes(), path=None, held=None)
        return state

    def read_bytes(self) -> bytes:
        if self.onnx_bytes is not None:
            return self.onnx_bytes
        assert self.path is not None
        with open(self.path, "rb") as f:
            return f.read()


@dataclass(frozen=True)
class EngineOptions:
    """Options every engine understands; engines ignore what does not apply to them."""

    threads: int | None = None  # intra-op threads; None: the machine's physical cores
    opt_level: str = "all"  # graph optimisation: disable, basic, extended, all
    save_optimized: str | None = None  # write the engine's optimised model here
    precision: str = "fp32"
    extra_outputs: tuple[str, ...] = ()  # also return these intermediate tensors (compare --per-layer)
    batch_range: tuple[int, int, int] | None = None  # min, opt, max (TensorRT profiles)
    cache_dir: str | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if self.threads is not None:
            limit = logical_cpus()
            if isinstance(self.threads, bool) or not isinstance(self.threads, int) or not 1 <= self.threads <= limit:
                raise UsageError(f"threads must be 1..{limit} (the logical CPUs of this machine), got "
                                 f"{plain(repr(self.threads), 40)}")


class Bound(ABC):
    """Feeds placed where the engine computes (device memory for GPUs), ready to run repeatedly."""

    @abstractmethod
    def run(self) -> None:
        """Execute once on the bound feeds; outputs stay on the device."""

    @abstractmethod
    def fetch(self) -> dict[str, np.ndarray]:
        """Copy the outputs of the last run to host memory."""

    def synchronize(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Wait for queued device work (no-op on the CPU)."""

    def capture_graph(self) -> None:
        """Record one run as a CUDA graph that later ``run`` calls replay (``bench --cuda-graph``)."""
        raise UsageError("--cuda-graph: this engine cannot replay runs as CUDA graphs (use --engine trt)")

    def device_time_ms(self, iterations: int) -> float | None:
        """Mean device time of ``iterations`` back-to-back runs from device events; None without such a clock."""
        return None


class Runner(ABC):
    """A model prepared for one device."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Execute on host arrays and return host arrays, by output name (by default: bind, run, fetch)."""
        bound = self.bind(feeds)
        bound.run()
        return bound.fetch()

    @abstractmethod
    def bind(self, feeds: dict[str, np.ndarray]) -> Bound:
        """Place feeds for repeated timed runs (IO binding on GPUs)."""

    @abstractmethod
    def describe(self) -> dict:
        """Engine, versions, device, threads, optimisation level: what a figure needs to be reproduced."""


class Engine(ABC):
    name: str = ""

    @abstractmethod
    def prepare(self, model: ModelSource, device: str, options: EngineOptions) -> Runner:
        """Load/build the model for ``device``; raises EngineError when that cannot be done."""

    @classmethod
    def doctor(cls) -> dict:
        """What this engine finds installed (package, version, ...), for ``netdsl doctor``."""
        return {}

    @classmethod
    def doctor_pairs(cls, machine: dict) -> dict[str, dict]:
        """For each ``engine:device`` pair, what this machine lacks for it (``netdsl doctor``).

        ``machine``: the facts :func:`netdsl.doctor.doctor_report` gathered (:mod:`netdsl.machine`). Each answer
        holds ``missing`` and ``fix`` (lists of sentences), optionally a ``note``, and ``probe``: ``"run"``
        to have the doctor run a one-layer model on the pair, ``"build"`` to build one (TensorRT plans), or
        None when the pair cannot work as things stand. By default every device of the engine is probed.
        """
        devices = ENGINES[cls.name][2] if cls.name in ENGINES else ()
        return {f"{cls.name}:{device}": {"probe": "run"} for device in devices}


def get_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise UsageError(f"unknown engine `{name}`; choose one of: " + ", ".join(ENGINES))
    module, cls, _, _ = ENGINES[name]
    return getattr(importlib.import_module(module), cls)()


def check_device(engine: str, device: str) -> None:
    if engine not in ENGINES:
        raise UsageError(f"unknown engine `{engine}`; choose one of: " + ", ".join(ENGINES))
    devices = ENGINES[engine][2]
    if device not in devices:
        raise UsageError(f"engine `{engine}` runs on: {', '.join(devices)}; got --device {device}")


def missing(package: str, extra: str, what: str) -> EngineError:
    return EngineError(install_hint(package, extra, what))


def with_extra_outputs(model: ModelSource, names: tuple[str, ...]) -> ModelSource:
    """``model`` with the intermediate tensors ``names`` made graph outputs too (``EngineOptions.extra_outputs``).

    Engines call this in ``prepare`` so a runner returns those tensors after the model's own outputs.
    Each new output keeps the tensor's value_info (type and shape) when the model has one. Raises
    EngineError for a name that no node of the model produces. Marking a tensor as an output can
    stop a runtime from fusing away the node that writes it, as with any per-layer comparison tool.
    """
    import dataclasses

    import onnx
    from onnx import helper

    proto = onnx.load_from_string(model.onnx_bytes) if model.onnx_bytes is not None else onnx.load(model.path)
    produced = {out for node in proto.graph.node for out in node.output if out}
    info = {v.name: v for v in proto.graph.value_info}
    present = {o.name for o in proto.graph.output}
    for name in names:
        if name in present:
            continue
        if name not in produced:
            raise EngineError(f"the model has no intermediate tensor `{plain(name, 200)}` to return as an extra output")
        proto.graph.output.append(info[name] if name in info else helper.make_empty_tensor_value_info(name))
        present.add(name)
    if proto.ByteSize() >= 2**31:
        raise EngineError(f"{plain(model.name)}: extra outputs are not supported on models over 2 GB")
    return dataclasses.replace(model, onnx_bytes=proto.SerializeToString(), path=None)
