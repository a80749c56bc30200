"""Writing outputs safely: atomic replacement, and ONNX external data for large models.

A crash or Ctrl-C never leaves a truncated file at the target path: data goes to a temporary file
in the same directory, is flushed to disk, and replaces the target with ``os.replace``.

A :class:`~netdsl.lower.LoweredModel` is streamed to its file: its weights are computed while it is
written, and no serialized copy of the whole model is ever held in memory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from .errors import NetdslError
from .lower import LoweredModel

if TYPE_CHECKING:
    import onnx

PROTOBUF_LIMIT = 2**31 - 1
EXTERNAL_THRESHOLD = 1_900_000_000  # bytes of initializers above which external data is used ("auto")


class OutputError(NetdslError):
    """An output file could not be written."""


def output_directory(path: str | os.PathLike) -> Path:
    """The folder ``path`` is to be written in; OutputError when it does not exist (check before long work)."""
    parent = Path(path).parent
    directory = parent if str(parent) else Path(".")
    if not directory.is_dir():
        raise OutputError(f"{path}: directory {directory} does not exist")
    return directory


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary sibling of ``path``; on success it atomically replaces ``path``."""
    target = Path(path)
    directory = output_directory(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except FileNotFoundError:
        raise OutputError(f"{path}: directory {directory} does not exist") from None
    except OSError as e:
        raise OutputError(f"{path}: cannot write: {e.strerror}") from None
    try:
        with os.fdopen(fd, mode, buffering=1 << 20) as f:  # large buffer: models are written in many pieces
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
    write_with(path, lambda f: f.write(data))


def write_with(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Atomically write ``path`` by calling ``write(file)``; OS failures become :class:`OutputError`."""
    try:
        with atomic_open(path) as f:
            write(f)
    except IsADirectoryError:
        raise OutputError(f"{path}: is a directory") from None
    except OSError as e:
        if isinstance(e, OutputError):
            raise
        raise OutputError(f"{path}: cannot write: {e.strerror or e}") from None


def initializer_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def save_model(model: onnx.ModelProto | LoweredModel, path: str | os.PathLike,
               external_data: str | bool = "auto") -> list[str]:
    """Write ``model`` atomically; returns the files written.

    ``external_data``: ``"auto"`` (only when the model would pass the 2 GB protobuf limit), True or False.
    External data goes to ``<name>.data`` beside the model, written atomically before the model.
    Both kinds of model give the same bytes for the same content.
    """
    path = Path(path)
    if isinstance(model, LoweredModel):
        return _save_lowered(model, path, external_data)
    import onnx
    from onnx import external_data_helper

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


def _save_lowered(model: LoweredModel, path: Path, external_data: str | bool) -> list[str]:
    """:func:`save_model` for a model whose weights are computed as they are written."""
    use_external = external_data is True or (external_data == "auto" and
                                             model.initializer_bytes() > EXTERNAL_THRESHOLD)
    if not use_external:
        if model.serialized_size() > PROTOBUF_LIMIT:
            raise OutputError(f"{path}: model is over the 2 GB protobuf limit; use external data")
        write_with(path, model.write)
        return [str(path)]
    location = path.name + ".data"
    with_references: list[onnx.ModelProto] = []
    write_with(path.parent / location, lambda f: with_references.append(model.external(f, location)))
    write_bytes(path, with_references[0].SerializeToString())
    return [str(path.parent / location), str(path)]
