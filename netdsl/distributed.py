"""Beyond one process: batch inference on Ray Data and an HTTP service on Ray Serve.

``netdsl batch`` and ``netdsl serve`` drive Ray; this module is what they share and what runs inside Ray's
workers. Ray is an optional extra (``pip install "netdsl[ray]"``), imported here lazily, so importing this
module costs nothing and a missing Ray is one clear message.

* :func:`connect`: join the Ray cluster at an address (``auto``, ``ray://host:port``) or start a local one
  sized to the machine; a Ray already initialised in the process is used as it is.
* :func:`list_inputs` / :func:`read_dataset`: the inputs of a batch job (a folder or a glob of images, searched
  recursively; a text file listing paths; an ``.npy`` array; a parquet dataset) as a Ray dataset with a ``path``
  column. Images are opened and preprocessed by :func:`decode`, a Ray Data stage, with the network's declared
  preprocessing (:meth:`netdsl.preprocess.Preprocess.load`, exactly what ``netdsl run`` does); an image that
  cannot be read gets its message in the ``error`` column instead of failing the job.
* :class:`Scorer`: the stateful stage, one per Ray actor, holding a :class:`netdsl.Session` built from the model
  compiled once on the driver (shipped through the object store). Ray Data restarts an actor that dies and
  retries its batches, so the output holds every input exactly once.
* :func:`run_batch`: the whole job, written as a folder of parquet files.
* :func:`start_service`: a Ray Serve deployment (:func:`server_class`) answering
  ``POST /v1/models/<name>:predict`` with dynamic batching (``@serve.batch``), ``GET /v1/models/<name>``
  and ``GET /healthz``.

Library code: it never imports the command line.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import NetdslError, UsageError
from .lazy import lazy_import
from .preprocess import IMAGE_SUFFIXES, InputError, Preprocess, declared_preprocessing, is_image
from .text import plain

if TYPE_CHECKING:
    import numpy as np

    from .engines import ModelSource, TensorSpec

RAY_PURPOSE = "`netdsl batch` and `netdsl serve` (Ray Data and Ray Serve)"
MAX_BODY = 32 * 2**20  # bytes of one request body `netdsl serve` accepts by default


class RayError(NetdslError):
    """Ray is missing, or the cluster cannot be reached or refuses the job."""


def ray_module():
    """``ray``, or RayError saying how to install it."""
    return lazy_import("ray", extra="ray", purpose=RAY_PURPOSE, error=RayError)


def ray_data():
    ray_module()
    return lazy_import("ray.data", extra="ray", purpose="`netdsl batch` (Ray Data)", error=RayError)


def ray_serve():
    ray_module()
    return lazy_import("ray.serve", extra="ray", purpose="`netdsl serve` (Ray Serve)", error=RayError)


def connect(address: str | None) -> bool:
    """Make this process a Ray driver: join the cluster at ``address`` (``auto``: the one started on this machine
    with ``ray start --head``; ``ray://host:port``: through Ray Client), or with None start a local instance sized
    to the machine. True when this call started Ray (the caller shuts it down); a Ray already initialised in
    the process is used as it is."""
    import logging

    ray = ray_module()
    if ray.is_initialized():
        return False
    try:
        if address is None:
            ray.init(include_dashboard=False, logging_level=logging.ERROR, configure_logging=True)
        else:
            ray.init(address=address, logging_level=logging.ERROR)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as e:
        where = f"--ray {plain(address, 200)}" if address else "a local Ray instance"
        first = " ".join(str(e).split())[:300]
        raise RayError(f"{where}: cannot start or join Ray ({type(e).__name__}: {first})") from None
    return True


def preprocessing_of(source: ModelSource) -> dict[str, Preprocess]:
    """Each image input's declared preprocessing, as :meth:`netdsl.Session.preprocessing` reads it (from the
    model's ``netdsl.inputs`` metadata; an input it does not describe is resized to its HxW)."""
    out = declared_preprocessing(source.metadata.get("netdsl.inputs"), source.name,
                                 {s.name: s.shape[1:] for s in source.inputs})
    for spec in source.inputs:
        if spec.name not in out and len(spec.shape) == 4 and None not in spec.shape[1:]:
            out[spec.name] = Preprocess(*spec.shape[1:])
    return out


class NamedBytes(io.BytesIO):
    """An uploaded file's bytes that name themselves in messages as ``name`` (Pillow opens it like a file)."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.label = name

    def __str__(self) -> str:
        return self.label

    def __repr__(self) -> str:
        return repr(self.label)


# ----------------------------------------------------------------------------- top-k
def softmax_rows(v: np.ndarray) -> np.ndarray:
    """Each row's softmax, unless the row already is a probability distribution (non-negative, sums to 1)."""
    import numpy as np

    v = v.astype(np.float64, copy=False)
    e = np.exp(v - v.max(axis=1, keepdims=True))
    soft = e / e.sum(axis=1, keepdims=True)
    already = (v.min(axis=1) >= 0) & np.isclose(v.sum(axis=1), 1.0, atol=1e-3)
    return np.where(already[:, None], v, soft)


def top_k(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class indices, probabilities, scores) of each row's ``k`` best classes, best first (stable on ties)."""
    import numpy as np

    probs = softmax_rows(values)
    k = min(k, values.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return (order.astype(np.int64), np.take_along_axis(probs, order, 1).astype(np.float32),
            np.take_along_axis(values, order, 1).astype(np.float32))


def classifier_output(outputs: tuple[TensorSpec, ...]) -> str | None:
    """The output top-k applies to: the model's only output, when it is a batch of class scores (N x classes)."""
    if len(outputs) == 1 and len(outputs[0].shape) == 2 and (outputs[0].shape[1] or 2) > 1:
        return outputs[0].name
    return None


# ----------------------------------------------------------------------------- batch: inputs
@dataclass(frozen=True)
class Inputs:
    """What a batch job reads: ``kind`` is ``images`` (``paths``, absolute), ``npy`` or ``parquet`` (``location``)."""

    kind: str
    paths: tuple[str, ...] = ()
    location: str = ""


def list_inputs(spec: str) -> Inputs:
    """The inputs ``--input SPEC`` names: a folder (its images, recursively), a glob (``**`` recurses), an
    ``.npy`` file, a parquet file or folder of parquet files, an image, or a text file listing image paths one a
    line (relative ones from the list's folder; blank lines and ``#`` comments skipped). Paths are made absolute,
    so Ray's workers, whatever their working folder, read the same files."""
    if spec.endswith(".npy"):
        if not Path(spec).is_file():
            raise InputError(f"--input {spec}: no such file")
        return Inputs("npy", location=os.path.abspath(spec))
    if "://" in spec or spec.endswith(".parquet"):
        if "://" not in spec and not Path(spec).exists():
            raise InputError(f"--input {spec}: no such file or folder")
        return Inputs("parquet", location=spec if "://" in spec else os.path.abspath(spec))
    if any(c in spec for c in "*?["):
        found = sorted(p for p in glob.glob(spec, recursive=True) if is_image(p) and os.path.isfile(p))
        if not found:
            raise InputError(f"--input {spec}: the pattern matches no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...)")
        return Inputs("images", tuple(os.path.abspath(p) for p in found))
    path = Path(spec)
    if path.is_dir():
        found = sorted(str(p) for p in path.rglob("*") if is_image(p.name) and p.is_file())
        if found:
            return Inputs("images", tuple(os.path.abspath(p) for p in found))
        if any(path.rglob("*.parquet")):
            return Inputs("parquet", location=os.path.abspath(spec))
        raise InputError(f"--input {spec}: the folder holds no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...) "
                         "and no parquet files")
    if not path.is_file():
        raise InputError(f"--input {spec}: no such file or folder")
    if is_image(spec):
        return Inputs("images", (os.path.abspath(spec),))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--input {spec}: neither an image, .npy or parquet nor a readable list of paths ({e})") \
            from None
    base = path.parent
    paths = [os.path.abspath(base / line.strip()) for line in lines if line.strip() and not line.startswith("#")]
    if not paths:
        raise InputError(f"--input {spec}: the list names no files")
    return Inputs("images", tuple(paths))


def _load_array(path: str, spec: TensorSpec) -> np.ndarray:
    """An ``.npy`` input, mapped rather than read (no pickled objects), checked against the model's input."""
    import numpy as np

    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{path}: not a readable .npy file ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{path}: not a single .npy array")
    if arr.dtype != spec.dtype:
        raise InputError(f"{path}: has dtype {arr.dtype}, expected {spec.describe()}")
    if arr.ndim != len(spec.shape) or any(d is not None and d != v for d, v in zip(spec.shape, arr.shape,
                                                                                  strict=True)):
        raise InputError(f"{path}: has shape {'x'.join(map(str, arr.shape))}, expected {spec.describe()} "
                         "(the first dimension counts the samples)")
    if arr.shape[0] == 0:
        raise InputError(f"{path}: holds no samples")
    return arr


def read_dataset(inputs: Inputs, spec: TensorSpec, prep: Preprocess | None, batch: int, blocks: int):
    """The inputs as a Ray dataset with columns ``path`` (str), ``error`` (str, empty when fine) and the input's
    name (one sample per row, zeros where ``error`` is set). Images are decoded by a Ray Data stage."""

    rd = ray_data()
    if inputs.kind == "images":
        if prep is None:
            raise InputError(f"input `{plain(spec.name, 200)}` ({spec.describe()}) is not an image input; feed an "
                             ".npy file or parquet")
        n = len(inputs.paths)
        ds = rd.from_items([{"path": p} for p in inputs.paths], override_num_blocks=max(1, min(blocks, n)))
        return ds.map_batches(decode, fn_kwargs={"prep": prep, "spec": spec}, batch_size=batch,
                              batch_format="numpy", compute=rd.TaskPoolStrategy())
    if inputs.kind == "npy":  # checked here; the stage maps the file and takes its rows
        n = _load_array(inputs.location, spec).shape[0]
        ds = rd.from_items([{"path": f"{inputs.location}[{i}]", "row": i} for i in range(n)],
                           override_num_blocks=max(1, min(blocks, n)))
        return ds.map_batches(decode, fn_kwargs={"prep": None, "spec": spec, "npy": inputs.location},
                              batch_size=batch, batch_format="numpy", compute=rd.TaskPoolStrategy())
    try:
        ds = rd.read_parquet(inputs.location)
        names = ds.schema().names
    except Exception as e:  # noqa: BLE001 - pyarrow and fsspec raise many kinds
        raise InputError(f"--input {inputs.location}: not a readable parquet dataset "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    if "path" not in names:
        raise InputError(f"--input {inputs.location}: the parquet has no `path` column (columns: "
                         f"{', '.join(plain(n, 40) for n in names[:10])})")
    if spec.name in names:
        return ds.select_columns(["path", spec.name]).map_batches(
            decode, fn_kwargs={"prep": None, "spec": spec}, batch_size=batch, batch_format="numpy",
            compute=rd.TaskPoolStrategy())
    if prep is None:
        raise InputError(f"--input {inputs.location}: the parquet has no column `{plain(spec.name, 200)}` holding "
                         "arrays for the model's input, and the input is not an image input")
    return ds.select_columns(["path"]).map_batches(
        decode, fn_kwargs={"prep": prep, "spec": spec}, batch_size=batch, batch_format="numpy",
        compute=rd.TaskPoolStrategy())


def decode(batch: Mapping[str, np.ndarray], prep: Preprocess | None, spec: TensorSpec,
           npy: str | None = None) -> dict[str, np.ndarray]:
    """A Ray Data stage: each row's image file opened and preprocessed as declared (with ``npy``, its row of the
    mapped array; with neither, its array checked and reshaped to the input); a row that fails gets its one-line
    reason in ``error`` and zeros as its sample."""
    import numpy as np

    sample = tuple(spec.shape[1:])
    array = _load_array(npy, spec) if npy else None  # mapped: only the rows taken are read
    paths = [str(p) for p in batch["path"]]
    out = np.zeros((len(paths), *sample), dtype=spec.dtype)
    errors = [""] * len(paths)  # "": read fine (a column of all None would not stay a column of strings)
    for i, path in enumerate(paths):
        try:
            if array is not None:
                out[i] = array[int(batch["row"][i])]
            elif prep is not None:
                out[i] = prep.load(path).astype(spec.dtype, copy=False)
            else:
                value = np.asarray(batch[spec.name][i])
                if value.size != out[i].size:
                    raise InputError(f"{path}: the array holds {value.size} values, the input takes "
                                     f"{'x'.join(map(str, sample))}")
                out[i] = value.reshape(sample)
        except InputError as e:
            errors[i] = e.diagnostics[0].message
        except (OSError, ValueError, TypeError) as e:  # anything else a damaged file throws
            errors[i] = f"{path}: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
    return {"path": np.array(paths, dtype=object), "error": np.array(errors, dtype=object), spec.name: out}


# ----------------------------------------------------------------------------- batch: the model stage
class Scorer:
    """A Ray Data actor stage: a :class:`netdsl.Session` on the model compiled by the driver, run on each batch.

    Output columns: ``path``, ``error``, and either the top ``topk`` classes of the model's class scores
    (``index``: list of int64, ``probability`` and ``score``: list of float32, and ``label`` with ``labels``) or,
    with ``topk`` 0, every output flattened to a list of float32 under its own name (``raw``)."""

    def __init__(self, source: list, input_name: str, engine: str = "ort", device: str = "cpu",
                 threads: int | None = None, opt_level: str = "all", precision: str = "fp32", topk: int = 5,
                 labels: list[str] | None = None):
        from .session import Session

        source = ray_module().get(source[0])  # the compiled model, through the object store
        self.session = Session(source, engine=engine, device=device, threads=threads, opt_level=opt_level,
                               precision=precision)
        self.input, self.topk, self.labels = input_name, topk, labels
        self.schema = output_schema(self.session.outputs, topk, labels is not None)

    def __call__(self, batch: Mapping[str, np.ndarray]):
        import numpy as np
        import pyarrow as pa

        errors = [str(e) if isinstance(e, str) and e else None for e in batch["error"]]
        good = np.array([e is None for e in errors], dtype=bool)
        n = len(errors)
        columns: dict[str, list] = {"path": [str(p) for p in batch["path"]], "error": errors}
        outputs = self.session.run({self.input: np.ascontiguousarray(batch[self.input][good])}) if good.any() else {}
        rows = np.cumsum(good) - 1  # each good row's index among the good rows
        if self.topk:
            name = self.session.outputs[0].name
            if outputs:
                index, prob, score = top_k(outputs[name], self.topk)
            for key in ("index", "probability", "score") + (("label",) if self.labels is not None else ()):
                columns[key] = [None] * n
            for i in range(n):
                if good[i]:
                    r = rows[i]
                    columns["index"][i] = index[r].tolist()
                    columns["probability"][i] = prob[r].tolist()
                    columns["score"][i] = score[r].tolist()
                    if self.labels is not None:
                        columns["label"][i] = [self.labels[j] if j < len(self.labels) else None for j in index[r]]
        else:
            for spec in self.session.outputs:
                flat = outputs[spec.name].reshape(int(good.sum()), -1).astype(np.float32) if outputs else None
                columns[spec.name] = [flat[rows[i]].tolist() if good[i] else None for i in range(n)]
        return pa.Table.from_pydict(columns, schema=self.schema)


def output_schema(outputs: tuple[TensorSpec, ...], topk: int, labels: bool):
    import pyarrow as pa

    fields = [("path", pa.string()), ("error", pa.string())]
    if topk:
        fields += [("index", pa.list_(pa.int64())), ("probability", pa.list_(pa.float32())),
                   ("score", pa.list_(pa.float32()))]
        if labels:
            fields.append(("label", pa.list_(pa.string())))
    else:
        fields += [(spec.name, pa.list_(pa.float32())) for spec in outputs]
    return pa.schema(fields)


# ----------------------------------------------------------------------------- batch: the job
@dataclass(frozen=True)
class BatchOptions:
    """How to run a batch job: ``actors`` Ray actors of ``cpus`` CPUs (ONNX Runtime's intra-op threads) and
    ``gpus`` GPUs each, ``batch`` inputs per model call, the top ``topk`` classes (0: raw outputs)."""

    actors: int = 1
    cpus: float = 1.0
    gpus: float = 0.0
    batch: int = 32
    topk: int = 5
    labels: list[str] | None = None
    engine: str = "ort"
    device: str = "cpu"
    opt_level: str = "all"
    precision: str = "fp32"


@dataclass(frozen=True)
class BatchResult:
    rows: int  # rows written
    errors: int  # rows whose input could not be read
    expected: int | None  # inputs listed (None: a parquet dataset or an .npy counted by Ray)
    seconds: float
    duplicates: int  # paths written more than once (0 unless something is badly wrong)


def check_batch_model(source: ModelSource, topk: int) -> None:
    """UsageError unless a batch job can feed the model (one input) and, with ``topk``, rank its outputs."""
    if len(source.inputs) != 1:
        raise UsageError(f"`netdsl batch` feeds models of one input; {plain(source.name, 200)} has "
                         f"{len(source.inputs)}: {', '.join(s.describe() for s in source.inputs)}")
    if topk and classifier_output(source.outputs) is None:
        raise UsageError(f"{plain(source.name, 200)}'s outputs are not one batch of class scores "
                         f"({', '.join(s.describe() for s in source.outputs)}); use --raw")


def run_batch(source: ModelSource, inputs: Inputs, dest: str, options: BatchOptions) -> BatchResult:
    """Score every input with the model on the connected Ray cluster and write DEST, a folder of parquet files
    (one row per input). A local DEST is written to a hidden folder beside it and moved into place at the end,
    so an interrupted job leaves no partial output."""
    check_batch_model(source, options.topk)
    ray = ray_module()
    rd = ray_data()
    spec = source.inputs[0]
    prep = preprocessing_of(source).get(spec.name)
    blocks = max(1, min(math.ceil(len(inputs.paths) / options.batch) if inputs.paths else 64, 1000))
    start = time.perf_counter()
    ds = read_dataset(inputs, spec, prep, options.batch, blocks)
    scored = ds.map_batches(
        Scorer, batch_size=options.batch, batch_format="numpy", compute=rd.ActorPoolStrategy(size=options.actors),
        num_cpus=options.cpus, num_gpus=options.gpus or None,
        fn_constructor_kwargs={"source": [ray.put(source)], "input_name": spec.name, "engine": options.engine,
                               "device": options.device, "threads": max(1, int(options.cpus)),
                               "opt_level": options.opt_level, "precision": options.precision,
                               "topk": options.topk, "labels": options.labels})
    local = "://" not in dest
    target = _staging(dest) if local else dest
    try:
        try:
            # the writers reserve no CPU (the actors may hold every CPU, and output waiting for a writer that waits
            # for a CPU would stall them), so their number is bounded instead
            scored.write_parquet(target, ray_remote_args={"num_cpus": 0}, concurrency=max(2, options.actors))
        except KeyboardInterrupt:
            raise
        except NetdslError:
            raise
        except Exception as e:  # noqa: BLE001 - a failed Ray job: its first line, not a traceback
            raise RayError(f"the batch job failed: {_first_line(e)}") from None
        seconds = time.perf_counter() - start
        rows, errors, duplicates = _count(target)
        if local:
            _install(target, dest)
    finally:
        if local and os.path.isdir(target):
            shutil.rmtree(target, ignore_errors=True)
    return BatchResult(rows, errors, len(inputs.paths) or None, seconds, duplicates)


def _first_line(e: BaseException) -> str:
    """A Ray task failure's own message: the innermost error's last line, on one line."""
    text = str(e).strip().splitlines()
    last = next((line for line in reversed(text) if line.strip()), type(e).__name__)
    return plain(" ".join(last.split()), 300)


def check_destination(dest: str) -> None:
    """DEST may be a new path, an empty folder, or a folder of parquet files (an earlier output, replaced)."""
    if "://" in dest:
        return
    path = Path(dest)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output {dest}: exists and is not a folder; the output is a folder of parquet files")
    if path.is_dir() and any(not p.name.endswith(".parquet") for p in path.iterdir()):
        raise UsageError(f"--output {dest}: the folder holds files other than parquet; name a new or empty folder")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise UsageError(f"--output {dest}: folder {parent} does not exist")


def _staging(dest: str) -> str:
    path = Path(dest).absolute()
    return str(path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _install(staged: str, dest: str) -> None:
    """Move the finished output into place; an earlier output there is replaced."""
    path = Path(dest)
    old = None
    if path.is_dir():
        old = _staging(dest)
        os.replace(path, old)
    os.replace(staged, path)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _count(location: str) -> tuple[int, int, int]:
    """(rows, rows with an error, paths seen more than once) of a written output, read back from its files."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    table = pads.dataset(location, format="parquet").to_table(columns=["path", "error"])
    rows = table.num_rows
    errors = rows - table.column("error").null_count
    unique = len(pc.unique(table.column("path")))
    return rows, errors, rows - unique


# ----------------------------------------------------------------------------- serve
@dataclass(frozen=True)
class ServeOptions:
    port: int = 8000
    host: str = "127.0.0.1"
    replicas: int = 1
    max_batch: int = 8
    batch_wait_ms: float = 10.0
    labels: list[str] | None = None
    topk: int = 5
    engine: str = "ort"
    device: str = "cpu"
    threads: int | None = None
    cpus: float = 1.0
    gpus: float = 0.0
    opt_level: str = "all"
    precision: str = "fp32"
    max_body: int = MAX_BODY


class RequestError(Exception):
    """A request the service refuses: ``status`` and a one-line reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def parse_body(body: bytes, content_type: str, spec: TensorSpec, prep: Preprocess | None) -> np.ndarray:
    """One request's samples (N x the input's shape, N >= 1) from its body: a ``.npy`` array, JSON (a nested list,
    or ``{"inputs": ...}`` holding one, or ``{"inputs": {name: ...}}``) or an image file. RequestError otherwise."""
    import numpy as np

    ctype = content_type.split(";")[0].strip().lower()
    if not body:
        raise RequestError(400, "empty body: send an image, a .npy array or JSON arrays")
    if body.startswith(b"\x93NUMPY"):
        try:
            value = np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise RequestError(400, f"not a readable .npy array ({' '.join(str(e).split())[:150]})") from None
        if not isinstance(value, np.ndarray):
            raise RequestError(400, "not a single .npy array")
        if value.dtype != spec.dtype:
            raise RequestError(400, f"the array has dtype {value.dtype}, expected {spec.describe()}")
    elif ctype == "application/json" or body[:1] in (b"[", b"{"):
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise RequestError(400, "the body is not valid JSON") from None
        if isinstance(data, dict):
            data = data.get("inputs", data.get("instances"))
            if isinstance(data, dict):
                if spec.name not in data:
                    raise RequestError(400, f"the JSON names no input `{plain(spec.name, 100)}`")
                data = data[spec.name]
        if not isinstance(data, list):
            raise RequestError(400, "the JSON must be an array of numbers, or {\"inputs\": array}")
        try:
            value = np.asarray(data, dtype=spec.dtype)
        except (ValueError, TypeError, RecursionError):
            raise RequestError(400, "the JSON arrays must be numbers of one rectangular shape, for "
                                    f"{spec.describe()}") from None
    else:
        if prep is None:
            raise RequestError(415, f"input `{plain(spec.name, 100)}` is not an image input; send .npy or JSON")
        try:
            value = prep.load(NamedBytes(body, "the body"))[None].astype(spec.dtype, copy=False)
        except InputError as e:
            raise RequestError(415, e.diagnostics[0].message) from None
    sample = tuple(spec.shape[1:])
    if value.ndim == len(sample):
        value = value[None]
    if value.ndim != len(spec.shape) or tuple(value.shape[1:]) != sample or value.shape[0] == 0:
        raise RequestError(400, f"the input has shape {'x'.join(map(str, value.shape))}, expected "
                                f"{spec.describe()} (one sample, or N of them)")
    return np.ascontiguousarray(value)


def server_class():
    """The Ray Serve deployment class (defined on first use: it needs ``ray.serve``'s ``batch`` decorator)."""
    serve = ray_serve()
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    class ModelServer:
        """One replica: a Session, the HTTP routes, and ``@serve.batch`` gathering concurrent requests."""

        def __init__(self, source: ModelSource, options: ServeOptions):
            from collections import Counter

            from .session import Session

            self.session = Session(source, engine=options.engine, device=options.device, threads=options.threads,
                                   opt_level=options.opt_level, precision=options.precision)
            self.options = options
            self.spec = self.session.inputs[0]
            self.prep = self.session.preprocessing().get(self.spec.name)
            self.name = source.name
            self.classifier = classifier_output(self.session.outputs)
            self.batches: Counter[int] = Counter()  # requests per model call -> calls
            self.predict.set_max_batch_size(options.max_batch)
            self.predict.set_batch_wait_timeout_s(options.batch_wait_ms / 1000)

        def describe(self) -> dict:
            return {"name": self.name,
                    "inputs": [_spec_json(s) for s in self.session.inputs],
                    "outputs": [_spec_json(s) for s in self.session.outputs],
                    "preprocessing": {k: {"shape": [p.channels, p.height, p.width], **p.to_json()}
                                      for k, p in self.session.preprocessing().items()},
                    "engine": self.session.describe(),
                    "max_batch": self.options.max_batch, "batch_wait_ms": self.options.batch_wait_ms,
                    "batches": {str(k): v for k, v in sorted(self.batches.items())},
                    "replica_pid": os.getpid()}

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
        async def predict(self, arrays: list[np.ndarray]) -> list[dict]:
            import asyncio

            import numpy as np

            counts = [a.shape[0] for a in arrays]
            joined = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
            outputs = await asyncio.to_thread(self.session.run, {self.spec.name: joined})
            self.batches[len(arrays)] += 1
            results, start = [], 0
            for count in counts:
                part = {k: v[start:start + count] for k, v in outputs.items()}
                start += count
                results.append(self._answer(part, len(arrays)))
            return results

        def _answer(self, outputs: dict[str, np.ndarray], batched: int) -> dict:
            answer: dict = {"model": self.name, "batch": batched}
            if self.options.labels is not None and self.classifier:
                index, prob, score = top_k(outputs[self.classifier], self.options.topk)
                labels = self.options.labels
                answer["topk"] = [[{"index": int(i), "label": labels[i] if i < len(labels) else None,
                                    "probability": float(p), "score": float(s)}
                                   for i, p, s in zip(ri, rp, rs, strict=True)]
                                  for ri, rp, rs in zip(index, prob, score, strict=True)]
            else:
                answer["outputs"] = {k: v.astype("float64").tolist() for k, v in outputs.items()}
            return answer

        async def __call__(self, request: Request):
            path = request.url.path.rstrip("/")
            base = f"/v1/models/{self.name}"
            try:
                if path == "/healthz":
                    return JSONResponse({"status": "ok"})
                if path == base:
                    if request.method != "GET":
                        raise RequestError(405, f"{request.method} {path}: use GET")
                    return JSONResponse(self.describe())
                if path == base + ":predict":
                    if request.method != "POST":
                        raise RequestError(405, f"{request.method} {path}: use POST")
                    body = await self._body(request)
                    value = parse_body(body, request.headers.get("content-type", ""), self.spec, self.prep)
                    return JSONResponse(await self.predict(value))
                raise RequestError(404, f"no route {plain(path, 100)}; the model is at {base} and {base}:predict")
            except RequestError as e:
                return JSONResponse({"error": e.reason}, status_code=e.status)

        async def _body(self, request: Request) -> bytes:
            limit = self.options.max_body
            declared = request.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise RequestError(413, f"the body is too large ({int(declared):,} bytes; at most {limit:,})")
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestError(413, f"the body is too large (over {limit:,} bytes)")
                chunks.append(chunk)
            return b"".join(chunks)

    return ModelServer


def _spec_json(spec: TensorSpec) -> dict:
    return {"name": spec.name, "shape": [d if d is not None else -1 for d in spec.shape], "dtype": spec.dtype.name}


def start_service(source: ModelSource, options: ServeOptions, app_name: str) -> str:
    """Deploy the model as a Ray Serve application on the connected cluster and return its URL. Serve's HTTP
    proxy listens on ``options.host:options.port`` (started here unless Serve already runs in the cluster)."""
    serve = ray_serve()
    if len(source.inputs) != 1:
        raise UsageError(f"`netdsl serve` serves models of one input; {plain(source.name, 200)} has "
                         f"{len(source.inputs)}")
    try:
        serve.start(http_options={"host": options.host, "port": options.port})
        deployment = serve.deployment(server_class(), name="netdsl").options(
            num_replicas=options.replicas, max_ongoing_requests=max(2 * options.max_batch, 8),
            ray_actor_options={"num_cpus": options.cpus, "num_gpus": options.gpus})
        serve.run(deployment.bind(source, options), name=app_name, route_prefix="/", blocking=False)
    except NetdslError:
        raise
    except Exception as e:  # noqa: BLE001 - Serve reports a failed deployment in many ways
        raise RayError(f"the service failed to start: {_first_line(e)}") from None
    return f"http://{options.host}:{options.port}/v1/models/{source.name}"


def stop_service(app_name: str, *, shutdown: bool) -> None:
    """Remove the application; with ``shutdown`` stop Serve itself (its controller and HTTP proxies) too."""
    serve = ray_serve()
    try:
        serve.delete(app_name)
    finally:
        if shutdown:
            serve.shutdown()
