"""Writing outputs safely: atomic replacement, and ONNX external data for large models.

A crash or Ctrl-C never leaves a truncated file at the target path: data goes to a temporary file
in the same directory, is flushed to disk, and replaces the target with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import external_data_helper

from .errors import NetdslError

PROTOBUF_LIMIT = 2**31 - 1
EXTERNAL_THRESHOLD = 1_900_000_000  # bytes of initializers above which external data is used ("auto")


class OutputError(NetdslError):
    """An output file could not be written."""


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary sibling of ``path``; on success it atomically replaces ``path``."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except FileNotFoundError:
        raise OutputError(f"{path}: directory {directory} does not exist") from None
    except OSError as e:
        raise OutputError(f"{path}: cannot write: {e.strerror}") from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    try:
        with atomic_open(path) as f:
            f.write(data)
    except IsADirectoryError:
        raise OutputError(f"{path}: is a directory") from None
    except OSError as e:
        if isinstance(e, OutputError):
            raise
        raise OutputError(f"{path}: cannot write: {e.strerror or e}") from None


def initializer_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def save_model(model: onnx.ModelProto, path: str | os.PathLike, external_data: str | bool = "auto") -> list[str]:
    """Write ``model`` atomically; returns the files written.

    ``external_data``: ``"auto"`` (only when the model would pass the 2 GB protobuf limit), True or False.
    External data goes to ``<name>.data`` beside the model, written atomically before the model.
    """
    path = Path(path)
    use_external = external_data is True or (external_data == "auto" and initializer_bytes(model) > EXTERNAL_THRESHOLD)
    if not use_external:
        data = model.SerializeToString()
        if len(data) > PROTOBUF_LIMIT:  # pragma: no cover - guarded by the threshold above
            raise OutputError(f"{path}: model is over the 2 GB protobuf limit; use external data")
        write_bytes(path, data)
        return [str(path)]
    location = path.name + ".data"
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the caller's model keeps its in-memory weights
    model = copy
    offset = 0
    try:
        with atomic_open(path.parent / location) as f:
            for t in model.graph.initializer:
                if len(t.raw_data) < 1024:
                    continue
                pad = (-offset) % 4096  # page-aligned so runtimes can mmap the tensors
                f.write(b"\0" * pad)
                offset += pad
                raw = t.raw_data
                f.write(raw)
                external_data_helper.set_external_data(t, location=location, offset=offset, length=len(raw))
                t.ClearField("raw_data")
                t.data_location = onnx.TensorProto.EXTERNAL
                offset += len(raw)
    except OSError as e:
        if isinstance(e, OutputError):
            raise
        raise OutputError(f"{path.parent / location}: cannot write: {e.strerror or e}") from None
    write_bytes(path, model.SerializeToString())
    return [str(path.parent / location), str(path)]
