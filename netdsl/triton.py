"""Triton Inference Server model repositories from compiled models.

A repository holds one folder per model: ``REPO/<name>/config.pbtxt`` (the model configuration, protobuf text
format, schema ``inference.ModelConfig``) and ``REPO/<name>/<version>/model.onnx`` (platform
``onnxruntime_onnx``) or ``model.plan`` (``tensorrt_plan``). The configuration is derived from the model's
own inputs and outputs, so names, data types and dimensions cannot disagree with it:

* with ``max_batch`` > 0 the first dimension of every input and output is Triton's batch dimension: it must
  be dynamic in the model and is left out of ``dims``; with ``max_batch`` 0 the full shapes are written, a
  dynamic dimension as -1;
* dynamic batching (a queue delay and preferred batch sizes), instance groups (count and kind);
* for ONNX Runtime on a GPU, optionally ONNX Runtime's TensorRT accelerator with its engine cache enabled
  (without the cache Triton's ONNX Runtime backend builds the TensorRT engines again for every instance on
  every load).

Only text is produced here; :func:`check_config` parses it with Triton's own protobuf schema when the optional
``tritonclient`` package is installed.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import NetdslError

if TYPE_CHECKING:
    from .engines import ModelSource, TensorSpec

PLATFORMS = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}
KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}
# numpy dtype name -> Triton's DataType
DATA_TYPES = {"bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
              "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
              "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
              "bfloat16": "TYPE_BF16"}
TRT_PRECISIONS = {"fp32": "FP32", "fp16": "FP16"}
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


class TritonError(NetdslError):
    """A model that Triton cannot serve as asked (a fixed batch dimension, an unsupported data type...)."""


@dataclass(frozen=True)
class TritonOptions:
    """What ``netdsl export triton`` writes besides the model (see the module docstring)."""

    platform: str = "onnxruntime_onnx"
    max_batch: int = 8
    instances: int = 1
    kind: str = "auto"
    dynamic_batching: bool = True
    max_queue_delay_us: int = 100
    preferred_batch: tuple[int, ...] = ()
    trt_accelerator: str | None = None  # ONNX Runtime's TensorRT accelerator at this precision (fp32, fp16)
    trt_cache_path: str | None = None  # where that accelerator keeps its engines (on the server)
    labels: str | None = None  # a label file's name in the model folder, for the first output
    version: int = 1
    notes: tuple[str, ...] = field(default=(), compare=False)

    def validate(self) -> None:
        if self.platform not in PLATFORMS:
            raise TritonError(f"unknown platform `{self.platform}` (choose {' or '.join(PLATFORMS)})")
        if self.kind not in KINDS:
            raise TritonError(f"unknown instance kind `{self.kind}` (choose {', '.join(KINDS)})")
        if self.max_batch < 0:
            raise TritonError(f"--max-batch must be 0 (no batching) or more, got {self.max_batch}")
        if self.instances < 1:
            raise TritonError(f"--instances must be at least 1, got {self.instances}")
        if self.version < 1:
            raise TritonError(f"--version must be at least 1, got {self.version}")
        if self.max_queue_delay_us < 0:
            raise TritonError(f"the dynamic batching delay must be 0 or more microseconds, got "
                              f"{self.max_queue_delay_us}")
        if self.dynamic_batching and self.max_batch == 0:
            raise TritonError("dynamic batching needs a batch dimension: give --max-batch N (N >= 1) or "
                              "--no-dynamic-batching")
        for b in self.preferred_batch:
            if not 1 <= b <= self.max_batch:
                raise TritonError(f"preferred batch size {b} is outside 1..{self.max_batch} (--max-batch)")
        if self.trt_accelerator is not None:
            if self.platform != "onnxruntime_onnx":
                raise TritonError("--trt-accelerator applies to --platform onnxruntime_onnx (a TensorRT plan "
                                  "is TensorRT already)")
            if self.trt_accelerator not in TRT_PRECISIONS:
                raise TritonError(f"--trt-accelerator takes {' or '.join(TRT_PRECISIONS)}, got "
                                  f"`{self.trt_accelerator}`")
            if self.kind == "cpu":
                raise TritonError("ONNX Runtime's TensorRT accelerator runs on GPU instances, not --kind cpu")


def check_model_name(name: str) -> str:
    """A model's name is its folder in the repository: letters, digits, ``_``, ``.`` and ``-``, at most 100,
    not starting with ``.`` or ``-``."""
    if not _MODEL_NAME.fullmatch(name):
        raise TritonError(f"model name {quote(name)} must be 1-100 letters, digits, `_`, `.` or `-`, starting "
                          f"with a letter, digit or `_` (it names the model's folder)")
    return name


# ----------------------------------------------------------------------------- the configuration text
def quote(text: str) -> str:
    """A protobuf text-format string literal: printable ASCII as is, everything else escaped."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= byte < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _dims(spec: TensorSpec, batched: bool) -> list[int]:
    dims = list(spec.shape)
    if batched:
        if not dims or isinstance(dims[0], int):
            fixed = "no dimensions" if not dims else f"a fixed first dimension ({dims[0]})"
            raise TritonError(f"tensor {quote(spec.name)} has {fixed}, so it has no batch dimension for "
                              f"Triton to batch on; export with --max-batch 0")
        dims = dims[1:]
    return [d if isinstance(d, int) else -1 for d in dims]


def _data_type(spec: TensorSpec) -> str:
    name = spec.dtype.name
    if name not in DATA_TYPES:
        raise TritonError(f"tensor {quote(spec.name)} has data type {name}, which Triton has no type for")
    return DATA_TYPES[name]


def _tensor(spec: TensorSpec, batched: bool, label_file: str | None = None) -> list[str]:
    dims = ", ".join(str(d) for d in _dims(spec, batched))
    lines = ["  {", f"    name: {quote(spec.name)}", f"    data_type: {_data_type(spec)}", f"    dims: [ {dims} ]"]
    if label_file:
        lines.append(f"    label_filename: {quote(label_file)}")
    return [*lines, "  }"]


def _tensors(field_name: str, specs: Sequence[TensorSpec], batched: bool, label_file: str | None = None) -> list[str]:
    lines = [f"{field_name} ["]
    for i, spec in enumerate(specs):
        if i:
            lines[-1] += ","
        lines += _tensor(spec, batched, label_file if i == 0 else None)
    return [*lines, "]"]


def model_config(source: ModelSource, name: str, options: TritonOptions) -> str:
    """The ``config.pbtxt`` text for ``source`` served as ``name``."""
    options.validate()
    batched = options.max_batch > 0
    lines = [f"# Triton model configuration written by netdsl for network {quote(source.name)}",
             f"name: {quote(name)}", f"platform: {quote(options.platform)}",
             f"max_batch_size: {options.max_batch}"]
    lines += _tensors("input", source.inputs, batched)
    lines += _tensors("output", source.outputs, batched, options.labels)
    lines += ["instance_group [", "  {", f"    count: {options.instances}", f"    kind: {KINDS[options.kind]}",
              "  }", "]"]
    if options.dynamic_batching:
        lines.append("dynamic_batching {")
        if options.preferred_batch:
            lines.append(f"  preferred_batch_size: [ {', '.join(map(str, options.preferred_batch))} ]")
        lines += [f"  max_queue_delay_microseconds: {options.max_queue_delay_us}", "}"]
    if options.trt_accelerator is not None:
        params = [("precision_mode", TRT_PRECISIONS[options.trt_accelerator]), ("trt_engine_cache_enable", "1"),
                  ("trt_engine_cache_path", options.trt_cache_path or trt_cache_default(name))]
        lines += ["optimization {", "  execution_accelerators {", "    gpu_execution_accelerator: [", "      {",
                  '        name: "tensorrt"']
        lines += [f"        parameters {{ key: {quote(k)} value: {quote(v)} }}" for k, v in params]
        lines += ["      }", "    ]", "  }", "}"]
    return "\n".join(lines) + "\n"


def trt_cache_default(name: str) -> str:
    """Where ONNX Runtime's TensorRT accelerator keeps a model's engines on the server, by default."""
    return f"/tmp/triton-trt-cache/{name}"


def check_config(text: str):
    """Parse ``text`` with Triton's own schema (``tritonclient``'s ``model_config_pb2.ModelConfig``).

    Returns the parsed message, or None when tritonclient is not installed. A text the schema rejects raises
    :class:`TritonError`."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return None
    message = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        raise TritonError(f"the model configuration does not parse with Triton's schema: {e}") from None
    return message


# ----------------------------------------------------------------------------- the repository
@dataclass(frozen=True)
class Written:
    folder: Path
    config: Path
    model: Path
    labels: Path | None


def write_repository(repo: str | os.PathLike, name: str, model_data: bytes, config: str,
                     options: TritonOptions, labels: str | os.PathLike | None = None) -> Written:
    """Write one model into the repository ``repo`` (created if needed): its configuration, the model file in
    its version folder and, with ``labels``, a copy of the label file. Each file is replaced atomically; other
    versions and files in the model's folder are left alone."""
    from .files import OutputError, atomic_open, write_bytes, write_errors

    folder = Path(repo) / check_model_name(name)
    version = folder / str(options.version)
    for path in (Path(repo), folder, version):
        if path.exists() and not path.is_dir():
            raise OutputError(f"{path} exists and is not a folder")
    try:
        version.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {version}: {e.strerror or e}") from None
    model = version / PLATFORMS[options.platform]
    write_bytes(model, model_data)
    copied = None
    if labels is not None:
        copied = folder / (options.labels or Path(labels).name)
        with write_errors(copied), open(labels, "rb") as src, atomic_open(copied) as dst:
            shutil.copyfileobj(src, dst)
    config_path = folder / "config.pbtxt"  # last: a folder with a configuration is a complete model
    with write_errors(config_path), atomic_open(config_path, "w") as f:
        f.write(config)
    return Written(folder, config_path, model, copied)
