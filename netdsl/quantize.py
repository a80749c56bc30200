"""INT8: calibrated post-training quantization of a compiled model, around ``onnxruntime.quantization``.

Requires: an fp32 ONNX model (netdsl's own or any other) and calibration data. Guarantees: a QDQ model
(QuantizeLinear/DequantizeLinear pairs around the quantized ops, made by ``quantize_static``), with int8
weights quantized per output channel and symmetrically, for one of two targets:

* ``ort-cpu``: ONNX Runtime's x86 CPU kernels. Activations are uint8 (asymmetric), weights int8 (u8s8),
  the combination that ORT fuses into ``QLinearConv`` / ``QGemm`` / ``MatMulInteger`` kernels using VNNI;
  symmetric int8 activations (s8s8) measured slower (docs/quantization.md has the figures and command).
* ``trt``: what TensorRT's strongly typed networks accept: int8 activations and weights, symmetric (zero
  point 0), weights per channel on the output-channel axis, biases left in fp32 (no DequantizeLinear on an
  int32 bias), and only the ops TensorRT runs in int8 quantized (convolutions, matrix products, the pooling
  ops and the inputs of residual adds and concats); Softmax and the rest stay fp32.

The quantizer is ``onnxruntime.quantization`` (``quant_pre_process``, ``quantize_static`` in QDQ format,
``CalibrationDataReader``); what this module adds is the network knowledge around it: batch norms folded
first (:func:`netdsl.optimize.fold_batchnorm`, so a conv and its bn become one quantized layer), calibration
data read with the input's declared preprocessing and checked (shape, finiteness), layers kept fp32 by
label or glob, a per-layer error report that names each layer's ``.net`` location, an automatic error budget,
and the quantization recorded in the model's metadata (``netdsl.quantization``, JSON).
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import json
import logging
import math
import statistics
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import NetdslError, UsageError
from .lazy import lazy_import
from .preprocess import InputError, image_files, is_image
from .text import plain

if TYPE_CHECKING:
    import onnx

TARGETS = ("ort-cpu", "trt")
METHODS = ("minmax", "entropy", "percentile")
DEFAULT_SAMPLES = 32  # calibration samples used when --samples is not given
RANDOM_SAMPLES = 8
CALIBRATION_BATCH = 8  # samples per calibration run
REPORT_SAMPLES = 16  # samples the per-layer error report runs both models on
MAX_BUDGET_STEPS = 64
SPEED_ROUNDS = 7  # --fastest: interleaved timing rounds
SPEED_ROUND_SECONDS = 0.1  # --fastest: at least this long (and 3 runs) per candidate per round
# --fastest keeps int8 only when it is at least this much faster than fp32: a smaller gain is within the timing's
# noise (run to run, a network's ratio moves by 10-20%) and not worth the accuracy int8 costs
SPEED_MARGIN = 1.1
RANDOM_NOTE = "random inputs: the ranges, and any accuracy figure, mean nothing for real data"
# the ops TensorRT runs in int8 from explicit Q/DQ; everything else stays fp32 for the trt target
TRT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Concat", "MaxPool", "AveragePool",
           "GlobalAveragePool")
# the layers that --fastest's int8-partial candidate may keep in fp32
LAYERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# ops that leave a quantized tensor quantized without an int8 kernel: ONNX Runtime removes them or reads shapes
PASSED_THROUGH = ("Identity", "Dropout", "Shape")
# ops whose output error the report ranks (a layer that computes something, not a reshape)
LAYER_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Concat", "Mul", "AveragePool",
             "GlobalAveragePool", "MaxPool", "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Softmax",
             "Resize", "Tanh", "LeakyRelu"}


class QuantizeError(NetdslError):
    """Quantization could not be done with the data or options given."""


def _quantization():
    return lazy_import("onnxruntime.quantization", error=QuantizeError,
                       message='quantization needs ONNX Runtime: pip install "netdsl[quantize]"')


# ----------------------------------------------------------------------------- calibration data
@dataclass(frozen=True)
class Calibration:
    """Calibration feeds, one dict per batch, and where they came from."""

    batches: tuple[dict[str, np.ndarray], ...]
    source: str
    random: bool = False

    @property
    def samples(self) -> int:
        return sum(next(iter(b.values())).shape[0] for b in self.batches)

    def head(self, samples: int) -> tuple[dict[str, np.ndarray], ...]:
        """The first ``samples`` samples, as batches."""
        out, left = [], samples
        for b in self.batches:
            if left <= 0:
                break
            out.append({k: v[:left] for k, v in b.items()})
            left -= next(iter(b.values())).shape[0]
        return tuple(out)


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | None, ...]  # None: a dynamic dimension (the batch)


def model_inputs(model: onnx.ModelProto) -> tuple[InputSpec, ...]:
    init = {t.name for t in model.graph.initializer}
    out = []
    for v in model.graph.input:
        if v.name in init:
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim)
        out.append(InputSpec(v.name, dims))
    return tuple(out)


def calibration_data(data, model: onnx.ModelProto, samples: int | None = None, seed: int = 0) -> Calibration:
    """Calibration feeds for ``model`` from ``data``: ``"random"``, an image folder or image file (read with the
    preprocessing the model's ``netdsl.inputs`` metadata declares), an ``.npy`` or ``.npz`` file, a numpy array
    or a mapping of input name to array. At most ``samples`` samples are used. Anything that does not fit the
    model's inputs (wrong shape, NaN or infinite values, no samples, a file that is neither) is an InputError."""
    inputs = model_inputs(model)
    if not inputs:
        raise InputError("the model has no inputs to calibrate")
    if samples is not None and samples < 1:
        raise UsageError("--samples must be at least 1")
    if isinstance(data, Calibration):
        return data
    if isinstance(data, np.ndarray):
        if len(inputs) != 1:
            raise InputError(f"an array feeds one input; the model has {len(inputs)}: pass a mapping of name to array")
        arrays, source = {inputs[0].name: data}, "an array"
    elif isinstance(data, Mapping):
        arrays, source = dict(data), "arrays"
    else:
        spec = str(data)
        if spec == "random":
            return _random(inputs, samples or RANDOM_SAMPLES, seed)
        arrays, source = _read(spec, inputs, model, samples), plain(spec, 200)
    return _batches(arrays, inputs, samples or DEFAULT_SAMPLES, source)


def _random(inputs: Sequence[InputSpec], samples: int, seed: int) -> Calibration:
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in inputs:
        if any(d is None for d in spec.shape[1:]):
            raise InputError(f"input `{plain(spec.name, 200)}` has dynamic sizes besides the batch; "
                             "random calibration needs fixed ones")
        arrays[spec.name] = rng.standard_normal((samples, *spec.shape[1:])).astype(np.float32)
    cal = _batches(arrays, inputs, samples, "random")
    return replace(cal, random=True)


def _read(spec: str, inputs: Sequence[InputSpec], model, samples: int | None) -> dict[str, np.ndarray]:
    path = Path(spec)
    if not path.exists():
        raise InputError(f"{plain(spec, 200)}: no such file or folder (calibration data: an image folder, "
                         ".npy, .npz or `random`)")
    if path.is_file() and spec.endswith(".npy"):
        if len(inputs) != 1:
            raise InputError(f"{plain(spec, 200)}: an .npy file feeds one input; the model has {len(inputs)}: "
                             "use an .npz with one array per input")
        return {inputs[0].name: _load_array(lambda: np.load(path, allow_pickle=False), spec)}
    if path.is_file() and spec.endswith(".npz"):
        def load_npz():
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        arrays = _load_array(load_npz, spec)
        if len(inputs) == 1 and len(arrays) == 1:
            return {inputs[0].name: next(iter(arrays.values()))}
        missing = [s.name for s in inputs if s.name not in arrays]
        if missing:
            raise InputError(f"{plain(spec, 200)}: holds no array named `{plain(missing[0], 200)}` "
                             f"(it holds {', '.join(plain(k, 60) for k in arrays) or 'nothing'})")
        return {s.name: arrays[s.name] for s in inputs}
    if path.is_file() and not is_image(path.name):
        raise InputError(f"{plain(spec, 200)}: not an image, .npy or .npz file")
    from .preprocess import Preprocess, declared_preprocessing

    images = [i for i in inputs if len(i.shape) == 4 and None not in i.shape[1:]]
    if len(inputs) != 1 or not images:
        raise InputError(f"{plain(spec, 200)}: images calibrate a model with one image input (NxCxHxW); "
                         "use an .npz with one array per input")
    name = images[0].name
    meta = {p.key: p.value for p in model.metadata_props}
    prep = declared_preprocessing(meta.get("netdsl.inputs"), model.graph.name or "the model",
                                  {i.name: i.shape[1:] for i in inputs}).get(name) or Preprocess(*images[0].shape[1:])
    files = image_files(spec)[: samples or DEFAULT_SAMPLES]
    return {name: np.stack([prep.load(f) for f in files])}


def _load_array(load, spec: str):
    try:
        return load()
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{plain(spec, 200)}: not a readable numpy file ({plain(e, 200)})") from None


def _batches(arrays: Mapping[str, np.ndarray], inputs: Sequence[InputSpec], samples: int, source: str) -> Calibration:
    """Check ``arrays`` against the inputs and cut them into calibration batches of at most ``samples`` in all."""
    names = [s.name for s in inputs]
    unknown = sorted(set(arrays) - set(names))
    if unknown:
        raise InputError(f"{source}: the model has no input `{plain(unknown[0], 200)}`; inputs: {', '.join(names)}")
    checked = {}
    count = None
    for spec in inputs:
        if spec.name not in arrays:
            raise InputError(f"{source}: no calibration data for input `{plain(spec.name, 200)}`")
        a = np.asarray(arrays[spec.name])
        want = "x".join("N" if d is None else str(d) for d in spec.shape)
        if a.dtype.kind not in "fiu":
            raise InputError(f"{source}: input `{plain(spec.name, 200)}` data has dtype {a.dtype}, not numbers")
        if a.ndim != len(spec.shape) or any(d is not None and d != v for d, v in zip(spec.shape[1:], a.shape[1:],
                                                                                     strict=True)):
            raise InputError(f"{source}: input `{plain(spec.name, 200)}` data has shape "
                             f"{'x'.join(map(str, a.shape))}, expected {want}")
        if a.shape[0] == 0:
            raise InputError(f"{source}: input `{plain(spec.name, 200)}` data holds no samples")
        a = a[:samples].astype(np.float32)
        bad = int(np.count_nonzero(~np.isfinite(a)))
        if bad:
            raise InputError(f"{source}: input `{plain(spec.name, 200)}` data holds {bad} NaN or infinite value(s)")
        if count is not None and a.shape[0] != count:
            raise InputError(f"{source}: the inputs hold different numbers of samples ({count} and {a.shape[0]})")
        count = a.shape[0]
        checked[spec.name] = a
    assert count is not None
    batches = tuple({k: np.ascontiguousarray(v[i:i + CALIBRATION_BATCH]) for k, v in checked.items()}
                    for i in range(0, count, CALIBRATION_BATCH))
    return Calibration(batches, source)


@contextlib.contextmanager
def _quiet():
    """onnxruntime.quantization logs its warnings through the root logger (e.g. that a batch norm's rank-1 weight
    has no channel axis); they say nothing a user can act on, so they are held back while it runs."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _reader(batches: Sequence[dict[str, np.ndarray]]):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over ``batches``."""
    q = _quantization()

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            return next(self._it, None)

        def rewind(self):
            self._it = iter(batches)

    return Reader()


# ----------------------------------------------------------------------------- the report
@dataclass(frozen=True)
class LayerError:
    """How far one layer's output is from fp32 on the calibration data."""

    label: str  # the ONNX node's name: the .net layer's label
    op: str
    tensor: str
    location: str | None  # path:line:col in the .net source, when the model records it
    error: float  # ||int8 - fp32|| / ||fp32|| over the report samples
    added: float  # error minus the largest error among its inputs: what this layer itself adds

    def to_json(self) -> dict:
        return {"label": self.label, "op": self.op, "tensor": self.tensor, "location": self.location,
                "error": _num(self.error), "added": _num(self.added), "sqnr_db": _num(sqnr_db(self.error))}


@dataclass(frozen=True)
class Speed:
    """What ``fastest`` measured on this CPU: each candidate's median latency at batch 1 and the one kept (the
    faster int8 candidate when it is at least SPEED_MARGIN times as fast as fp32, else fp32).

    Candidates: ``int8`` (the quantized model), ``int8-partial`` (int8 with the layers that feed or read an op
    ONNX Runtime has no int8 kernel for kept in fp32; only when there is such an op) and ``fp32``."""

    median_ms: dict[str, float]
    chosen: str
    threads: int
    runs: int  # the fewest timed runs of a candidate

    def speedup(self, name: str) -> float:
        """fp32's latency over ``name``'s: above 1, ``name`` is faster than fp32."""
        return self.median_ms["fp32"] / self.median_ms[name]

    def to_json(self) -> dict:
        return {"batch": 1, "threads": self.threads, "runs": self.runs, "chosen": self.chosen,
                "median_ms": {k: round(v, 4) for k, v in self.median_ms.items()}}


@dataclass(frozen=True)
class Quantized:
    """The result of :func:`quantize`: the model, its per-layer error report (worst first) and the settings."""

    model: onnx.ModelProto
    target: str
    method: str
    activations: str
    samples: int
    calibration: str
    random: bool
    excluded: tuple[str, ...]  # labels kept in fp32 (given and chosen by the budget)
    budget_excluded: tuple[str, ...]  # those the budget chose
    output_error: float  # relative error of the outputs over the report samples
    top1_agreement: float | None  # share of samples whose argmax agrees with fp32 (rank-2 outputs), else None
    layers: tuple[LayerError, ...] = field(default=())
    budget: float | None = None
    speed: Speed | None = None  # what ``fastest`` measured; None without it
    speed_excluded: tuple[str, ...] = ()  # the layers the int8-partial candidate kept in fp32, when chosen

    @property
    def kept_fp32(self) -> bool:
        """``fastest`` found no int8 candidate SPEED_MARGIN times as fast as fp32: the model is the fp32 one."""
        return self.speed is not None and self.speed.chosen == "fp32"

    @functools.cached_property
    def float_ops(self) -> dict[str, int]:
        """ort-cpu: :func:`float_islands` of the model (computed when first asked: it builds an ONNX Runtime
        session); empty for the trt target and for a model kept in fp32."""
        return float_islands(self.model) if self.target == "ort-cpu" and not self.kept_fp32 else {}

    @property
    def within_budget(self) -> bool:
        return self.budget is None or self.output_error <= self.budget

    def record(self) -> dict:
        """What the model's ``netdsl.quantization`` metadata holds."""
        out = {"target": self.target, "method": self.method, "activations": self.activations,
               "weights": "int8 per-channel symmetric", "samples": self.samples, "calibration": self.calibration,
               "random": self.random, "excluded": list(self.excluded),
               "output_error": None if math.isnan(self.output_error) else _num(self.output_error)}
        if self.speed is not None:
            out["speed"] = self.speed.to_json()
        return out

    def to_json(self) -> dict:
        out = {**self.record(), "budget": self.budget, "budget_excluded": list(self.budget_excluded),
               "within_budget": self.within_budget, "top1_agreement": self.top1_agreement,
               "output_sqnr_db": _num(sqnr_db(self.output_error)), "layers": [x.to_json() for x in self.layers],
               "float_ops": dict(self.float_ops)}
        if self.random:
            out["note"] = RANDOM_NOTE
        return out


def sqnr_db(rel: float) -> float:
    """Signal-to-quantization-noise ratio in dB from a relative error ||e|| / ||x||."""
    return math.inf if rel == 0 else -20.0 * math.log10(rel)


def _num(x):
    return x if x is None or math.isfinite(x) else str(x)


# ----------------------------------------------------------------------------- quantizing
def is_quantized(model: onnx.ModelProto) -> bool:
    """Whether ``model`` has been through the quantizer: it holds quantized ops, or records a quantization (a
    model ``fastest`` kept in fp32 holds none, and is not to be quantized again)."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv") for n in model.graph.node) \
        or quantization_record(model) is not None


def prepare_fp32(model: onnx.ModelProto) -> onnx.ModelProto:
    """The fp32 model the quantizer starts from: batch norms folded into convs by netdsl (each conv keeps its
    name and ``.net`` location), then ``quant_pre_process``'s shape inference, without its ONNX Runtime
    optimisation (the folding is done, and the layers must keep the names the report and --exclude use)."""
    from onnx import TensorProto

    from .optimize import fold_batchnorm

    if is_quantized(model):
        speed = (quantization_record(model) or {}).get("speed")
        kept = isinstance(speed, dict) and speed.get("chosen") == "fp32"
        raise QuantizeError("the model is quantized already" + (" (netdsl quantize --fastest wrote it, and kept it "
                                                                 "in fp32 as the faster)" if kept else ""))
    floats = [v.name for v in model.graph.input if v.type.tensor_type.elem_type not in (TensorProto.FLOAT, 0)]
    if any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer) or floats:
        raise QuantizeError("quantization starts from an fp32 model (this one has other input or weight types)")
    model = fold_batchnorm(model).model
    q = _quantization()
    import onnx

    with tempfile.TemporaryDirectory(prefix="netdsl-quant.") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "pre.onnx"
        onnx.save(model, src)
        with _quiet():
            try:
                q.quant_pre_process(str(src), str(dst), skip_optimization=True, skip_symbolic_shape=False)
            except Exception:  # noqa: BLE001 - symbolic shape inference gives up on some graphs; ONNX's is enough
                q.quant_pre_process(str(src), str(dst), skip_optimization=True, skip_symbolic_shape=True)
        return onnx.load(dst)


def float_islands(model: onnx.ModelProto) -> dict[str, int]:
    """The ops ONNX Runtime's CPU provider runs in float inside the int8 ``model``, by type: in its optimised
    graph, the ops (other than shape arithmetic) that read a dequantized activation. ONNX Runtime has int8
    kernels for convs, matrix products, adds, muls, pools, sigmoid, concat and a few more, and fuses their
    Q/DQ pairs; any other op (hard-swish, tanh, a resize, ...) costs a dequantize, the float op and a quantize
    on every call, which is how an int8 model ends up slower than fp32. Empty when everything fused."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="netdsl-quant.") as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        graph = onnx.load(so.optimized_model_filepath, load_external_data=False).graph
    constants = {t.name for t in graph.initializer}
    dequantized = {n.output[0] for n in graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] not in constants}
    counts: dict[str, int] = {}
    for n in graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear", "Shape") and dequantized.intersection(n.input):
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def around_float_ops(prepared: onnx.ModelProto) -> tuple[str, ...]:
    """The layers (convs and matrix products) of the fp32 ``prepared`` model that feed or read an op ONNX
    Runtime has no int8 kernel for (hard-swish, tanh, ...; the quantizer's QDQ and QLinear registries list those
    it has): what the ``int8-partial`` candidate of ``fastest`` keeps in fp32, so that such an op is computed
    in fp32 next to its producer (into which ONNX Runtime fuses it) instead of between a dequantize and a
    quantize."""
    from onnxruntime.quantization import registry

    int8_ops = {*registry.QLinearOpsRegistry, *registry.QDQRegistry, *PASSED_THROUGH}
    producer = {o: n for n in prepared.graph.node for o in n.output}
    keep: list[str] = []
    for n in prepared.graph.node:
        if n.op_type in int8_ops:
            continue
        feeding = [producer[i] for i in n.input if i in producer and producer[i].op_type in LAYERS]
        reading = [m for m in prepared.graph.node if m.op_type in LAYERS and set(m.input) & set(n.output)]
        keep.extend(x.name for x in (*feeding, *reading) if x.name and x.name not in keep)
    return tuple(keep)


def time_models(models: Mapping[str, onnx.ModelProto], feeds: Mapping[str, np.ndarray], threads: int | None,
                rounds: int = SPEED_ROUNDS, seconds: float = SPEED_ROUND_SECONDS, min_runs: int = 3
                ) -> tuple[dict[str, float], int, int]:
    """Each model's median latency (ms) on ``feeds`` as ``netdsl run`` runs it (ONNX Runtime's CPU engine,
    ``threads`` intra-op threads, default the physical cores), the fewest timed runs of a model, and the threads
    used. The models are timed in ``rounds`` interleaved rounds (each starting one model further along), so a
    drift in the machine's load falls on all of them alike; in each round a model runs once untimed (the run
    after another model's pays for the caches that one used), then for at least ``seconds`` and ``min_runs``
    timed runs (:func:`netdsl.benchmark.time_calls`)."""
    from .benchmark import time_calls
    from .engines import EngineOptions, ModelSource, get_engine

    engine, options = get_engine("ort"), EngineOptions(threads=threads)
    runners = {k: engine.prepare(ModelSource(m.graph.name, m.SerializeToString(), None), "cpu", options)
               for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in runners}
    names = list(runners)
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            run = functools.partial(runners[k].run, dict(feeds))
            run()  # the other models' runs have had the caches
            times[k] += time_calls(run, seconds, min_runs)[0]
    threads_used = next(iter(runners.values())).threads
    return ({k: statistics.median(t) * 1e3 for k, t in times.items()}, min(len(t) for t in times.values()),
            threads_used)


def resolve_exclusions(model: onnx.ModelProto, patterns: Iterable[str]) -> tuple[str, ...]:
    """The node names that ``patterns`` (labels or globs, e.g. ``fc``, ``layer4.*``) match; a pattern that
    matches no layer is a UsageError."""
    names = [n.name for n in model.graph.node if n.name]
    out: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern) or n.startswith(pattern + ".")]
        if not hits:
            raise UsageError(f"--exclude {plain(pattern, 200)}: no layer has that label (labels look like "
                             f"{', '.join(plain(n, 40) for n in names[:3])})")
        out.extend(h for h in hits if h not in out)
    return tuple(out)


def _settings(target: str, activations: str | None = None):
    q = _quantization()
    if target == "ort-cpu" and activations == "int8":  # s8s8: measured slower on ORT's x86 kernels
        return dict(activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8, op_types_to_quantize=None,
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": True}), "int8 symmetric"
    if target == "ort-cpu":
        return dict(activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8, op_types_to_quantize=None,
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False}), "uint8"
    return dict(activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8, op_types_to_quantize=list(TRT_OPS),
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": True, "QuantizeBias": False,
                               "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}}), "int8 symmetric"


def _method(method: str):
    q = _quantization()
    return {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
            "percentile": q.CalibrationMethod.Percentile}[method]


def _quantize_once(prepared: onnx.ModelProto, cal: Calibration, target: str, method: str,
                   exclude: Sequence[str], cache: Path, activations: str | None) -> onnx.ModelProto:
    import onnx

    q = _quantization()
    options, _ = _settings(target, activations)
    with tempfile.TemporaryDirectory(prefix="netdsl-quant.") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(prepared, src)
        try:
            with _quiet():
                q.quantize_static(str(src), str(dst), _reader(cal.batches), quant_format=q.QuantFormat.QDQ,
                                  per_channel=True, reduce_range=False, calibrate_method=_method(method),
                                  nodes_to_exclude=list(exclude), **_cache_option(q, cache), **options)
        except (ValueError, RuntimeError) as e:
            raise QuantizeError(f"quantization failed: {plain(str(e).splitlines()[0] if str(e) else e, 300)}") \
                from None
        return onnx.load(dst)


def _cache_option(q, cache: Path) -> dict:
    """``calibration_cache_path`` where this ONNX Runtime has it (1.32+): calibration then runs once, and the
    budget's re-quantizations reuse its ranges."""
    import inspect

    return {"calibration_cache_path": str(cache)} \
        if "calibration_cache_path" in inspect.signature(q.quantize_static).parameters else {}


def quantize(model: onnx.ModelProto, calibration, *, target: str = "ort-cpu", method: str = "minmax",
             samples: int | None = None, exclude: Sequence[str] = (), budget: float | None = None,
             seed: int = 0, report: bool = True, activations: str | None = None, fastest: bool = False,
             threads: int | None = None) -> Quantized:
    """Quantize the fp32 ``model`` to int8 with ``calibration`` (see :func:`calibration_data`).

    ``target``: ``ort-cpu`` or ``trt`` (module docstring). ``method``: the calibration method (minmax, entropy,
    percentile). ``exclude``: labels or globs of layers kept fp32. ``budget``: keep the layers that add the
    most error in fp32, one at a time, until the outputs' relative error is at most ``budget``. ``report``:
    measure each layer's error (always on with a budget). ``activations``: ``"int8"`` makes the ort-cpu
    target's activations symmetric int8 (s8s8) instead of uint8, for measuring the two (docs/quantization.md).
    ``fastest`` (ort-cpu): time the int8 model, the int8 model with the layers around ops that have no int8
    kernel kept fp32 (when there are such ops) and the fp32 model on this CPU (batch 1, ``threads`` intra-op
    threads, default the physical cores, as ``netdsl run``) and keep the faster int8 one if it runs at least
    SPEED_MARGIN times as fast as fp32, else the fp32 model (``.speed``).
    """
    if target not in TARGETS:
        raise UsageError(f"--target must be one of {', '.join(TARGETS)}, got {plain(target, 40)}")
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {plain(method, 40)}")
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise UsageError("--budget must be a positive number (a relative error, e.g. 0.05)")
    if fastest and target != "ort-cpu":
        raise UsageError("--fastest times ONNX Runtime on this CPU: it applies to --target ort-cpu")
    if threads is not None and threads < 1:
        raise UsageError("--threads must be at least 1")
    if fastest:
        from .engines import EngineOptions

        EngineOptions(threads=threads)  # --threads checked against this machine before anything is computed
    cal = calibration_data(calibration, model, samples, seed)
    prepared = prepare_fp32(model)
    excluded = resolve_exclusions(prepared, exclude)
    _, act_name = _settings(target, activations)
    chosen: list[str] = []
    with tempfile.TemporaryDirectory(prefix="netdsl-quant.") as tmp:
        cache = Path(tmp) / "ranges.json"  # calibration runs once; the budget's re-quantizations reuse it
        qmodel = _quantize_once(prepared, cal, target, method, excluded, cache, activations)
        layers, out_err, top1 = (), math.nan, None
        if report or budget is not None:
            layers, out_err, top1 = layer_errors(prepared, qmodel, cal.head(REPORT_SAMPLES), excluded)
            while budget is not None and out_err > budget and len(chosen) < MAX_BUDGET_STEPS:
                worst = next((x for x in layers if x.label not in excluded and x.label not in chosen
                              and x.op not in ("Relu", "MaxPool")), None)
                if worst is None:
                    break
                chosen.append(worst.label)
                qmodel = _quantize_once(prepared, cal, target, method, (*excluded, *chosen), cache, activations)
                layers, out_err, top1 = layer_errors(prepared, qmodel, cal.head(REPORT_SAMPLES), (*excluded, *chosen))
        speed, partial = None, ()
        if fastest:
            kept = (*excluded, *chosen)
            speed, qmodel, partial = _fastest(prepared, qmodel, kept, threads,
                                              lambda more: _quantize_once(prepared, cal, target, method, (*kept, *more),
                                                                          cache, activations),
                                              {k: v[:1] for k, v in cal.batches[0].items()})
            if speed.chosen == "int8-partial" and (report or budget is not None):
                layers, out_err, top1 = layer_errors(prepared, qmodel, cal.head(REPORT_SAMPLES), (*kept, *partial))
            elif speed.chosen == "fp32":  # the model written is the fp32 one: nothing of it is quantized
                layers, out_err, top1 = (), 0.0, None
    result = Quantized(qmodel, target, method, act_name, cal.samples, cal.source, cal.random,
                       (*excluded, *chosen, *partial), tuple(chosen), out_err, top1, layers, budget, speed, partial)
    _record(qmodel, result)
    return result


def _fastest(prepared: onnx.ModelProto, int8: onnx.ModelProto, kept: Sequence[str], threads: int | None,
             requantize, feeds: Mapping[str, np.ndarray]) -> tuple[Speed, onnx.ModelProto, tuple[str, ...]]:
    """``quantize(fastest=True)``'s choice: the candidates (``int8``; ``int8-partial``, ``requantize`` keeping
    :func:`around_float_ops` in fp32 too, when there are such layers and some other layer is left to quantize;
    ``fp32``, the ``prepared`` model) timed on ``feeds`` by :func:`time_models`; returns what was measured, the
    model kept (the faster int8 one when it is SPEED_MARGIN times as fast as fp32, else a copy of ``prepared``)
    and the layers int8-partial kept in fp32 when it was chosen."""
    partial = tuple(x for x in around_float_ops(prepared) if x not in kept)
    layers_left = {n.name for n in prepared.graph.node if n.op_type in LAYERS} - {*kept, *partial}
    candidates = {"int8": int8}
    if partial and layers_left:  # (keeping every layer in fp32 is the fp32 candidate)
        candidates["int8-partial"] = requantize(partial)
    candidates["fp32"] = prepared
    medians, runs, threads = time_models(candidates, feeds, threads)
    best = min((k for k in medians if k != "fp32"), key=medians.__getitem__)
    chosen = best if medians["fp32"] >= SPEED_MARGIN * medians[best] else "fp32"
    model = _copy(prepared) if chosen == "fp32" else candidates[chosen]
    return Speed(medians, chosen, threads, runs), model, partial if chosen == "int8-partial" else ()


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _record(model: onnx.ModelProto, result: Quantized) -> None:
    from onnx import helper

    props = {p.key: p.value for p in model.metadata_props}
    if not result.kept_fp32:
        props["netdsl.dtype"] = "int8"
    props["netdsl.quantization"] = json.dumps(result.record(), sort_keys=True)
    del model.metadata_props[:]
    helper.set_model_props(model, props)


def layer_errors(fp32: onnx.ModelProto, int8: onnx.ModelProto, batches: Sequence[dict[str, np.ndarray]],
                 excluded: Iterable[str] = ()) -> tuple[tuple[LayerError, ...], float, float | None]:
    """Each quantized layer's output error against fp32 on ``batches`` (ranked: most added error first; the
    ``excluded`` layers, kept fp32, are not listed), the outputs' relative error, and the top-1 agreement of
    rank-2 outputs (None without one)."""
    # Layers are the int8 model's nodes that read DequantizeLinear outputs. A node's output keeps its fp32 name
    # (an activation the quantizer removed, e.g. a Relu, hands its output name to the conv before it, whose
    # value is then that of the conv and its activation in both models); its inputs are traced back through
    # DequantizeLinear and QuantizeLinear to the fp32 tensors they quantize.
    producer = {o: n for n in int8.graph.node for o in n.output}
    fp32_tensors = {o for n in fp32.graph.node for o in n.output}
    where = {n.name: n.doc_string.split("\n", 1)[0] or None for n in fp32.graph.node}

    def origin(name: str) -> str:
        for _ in range(2):  # DequantizeLinear <- QuantizeLinear <- the fp32 tensor
            n = producer.get(name)
            if n is None or n.op_type not in ("DequantizeLinear", "QuantizeLinear"):
                break
            name = n.input[0]
        return name

    # the int8 value of a tensor is what the next layer reads: its QuantizeLinear -> DequantizeLinear output
    # (which is also where a removed Relu's clamp happens); a graph output is written by that DequantizeLinear
    q_of = {n.input[0]: n.output[0] for n in int8.graph.node if n.op_type == "QuantizeLinear"}
    dq_of = {n.input[0]: n.output[0] for n in int8.graph.node if n.op_type == "DequantizeLinear"}

    def seen(name: str) -> str:
        return dq_of.get(q_of.get(name, ""), name)

    def fp32_name(name: str) -> str | None:
        return name if name in fp32_tensors else seen(name) if seen(name) in fp32_tensors else None

    dq = set(dq_of.values())
    nodes = [(n, fp32_name(n.output[0])) for n in int8.graph.node
             if n.op_type in LAYER_OPS and any(i in dq for i in n.input) and n.output]
    skip = set(excluded)
    nodes = [(n, t) for n, t in nodes if t is not None and n.name not in skip]
    outputs = [o.name for o in fp32.graph.output]
    wanted = tuple(t for t in dict.fromkeys(t for n, out in nodes for t in (out, *map(origin, n.input)))
                   if t in fp32_tensors and t in producer and t not in outputs)
    pairs = {t: seen(t) for t in (*wanted, *outputs)}
    ref = _run(fp32, batches, wanted)
    got = _run(int8, batches, tuple(dict.fromkeys(pairs.values())))
    err = {t: _rel(got[pairs[t]], ref[t]) for t in pairs if pairs[t] in got and t in ref}
    layers = []
    for n, out in nodes:
        if out not in err:
            continue
        before = max((err[t] for t in map(origin, n.input) if t in err), default=0.0)
        layers.append(LayerError(n.name, n.op_type, out, where.get(n.name), err[out], err[out] - before))
    layers.sort(key=lambda x: (-x.added, x.label))
    out_err = max(err[o] for o in outputs)
    top1 = None
    ranked = [o for o in outputs if ref[o].ndim == 2 and ref[o].shape[1] > 1]
    if ranked:
        o = ranked[0]
        top1 = float(np.mean(np.argmax(ref[o], 1) == np.argmax(got[pairs[o]], 1)))
    return tuple(layers), out_err, top1


def _run(model: onnx.ModelProto, batches: Sequence[dict[str, np.ndarray]], extra: Sequence[str]
         ) -> dict[str, np.ndarray]:
    """Run ``model`` on every batch with ``extra`` intermediate tensors as outputs; results concatenated."""
    import onnx
    import onnxruntime as ort

    m = _copy(model)
    have = {o.name for o in m.graph.output}
    for name in extra:
        if name not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # every tensor stays observable
    so.intra_op_num_threads = 0
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feeds in batches:
        for n, v in zip(names, sess.run(names, feeds), strict=True):
            parts[n].append(np.asarray(v, dtype=np.float32))
    return {n: np.concatenate(v) for n, v in parts.items() if v}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return math.inf
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref = float(np.linalg.norm(b64))
    diff = float(np.linalg.norm(a64 - b64))
    return diff / ref if ref > 0 else (0.0 if diff == 0 else math.inf)


def int8_model(data: bytes | None, path: str | None, engine: str, calibration=None) -> onnx.ModelProto | None:
    """The model in ``data`` (or the file ``path``) quantized for ``engine`` (``trt``: the trt target, else
    ort-cpu) with ``calibration`` (default ``"random"``); None when it is quantized already."""
    import onnx

    model = onnx.load_from_string(data) if data is not None else onnx.load(path)
    if is_quantized(model):
        return None
    return quantize(model, "random" if calibration is None else calibration,
                    target="trt" if engine == "trt" else "ort-cpu", report=False).model


# ----------------------------------------------------------------------------- inspecting a quantized model
def quantization_record(model: onnx.ModelProto) -> dict | None:
    """The ``netdsl.quantization`` metadata of a model, or None."""
    for p in model.metadata_props:
        if p.key == "netdsl.quantization":
            try:
                value = json.loads(p.value)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def weight_bytes(model: onnx.ModelProto) -> dict[str, int]:
    """Bytes of the model's initializers by element type (``int8``, ``float32``, ...)."""
    from onnx import helper

    out: dict[str, int] = {}
    for t in model.graph.initializer:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
        size = int(np.prod(t.dims, dtype=np.int64)) * dtype.itemsize
        out[dtype.name] = out.get(dtype.name, 0) + size
    return out


__all__ = ["Calibration", "LayerError", "Quantized", "QuantizeError", "Speed", "around_float_ops", "time_models",
           "calibration_data", "quantize", "int8_model", "is_quantized", "layer_errors", "quantization_record",
           "weight_bytes", "TARGETS", "METHODS"]
