"""Writing outputs safely: atomic replacement, and ONNX external data for large models.

What sits at an output path after a write:

* A regular file (or nothing) is replaced atomically: data goes to a temporary file in the same folder, is
  flushed to disk, and replaces the target with ``os.replace``. A crash, Ctrl-C or SIGTERM never leaves a
  truncated file at the target. The new file keeps the old one's permission bits (and, where the process may,
  its owner); a new file gets ``0666`` less the umask, as ``open()`` would create it.
* A symbolic link is followed: the file it points to is replaced, and the link stays a link.
* A character device or a pipe (``/dev/null``, ``/dev/stdout``, a FIFO) is written through, as ``cp`` does;
  it stays what it was. A folder, a socket or a block device is refused.

Temporary files are named ``.<name>.<pid>.<random>.tmp``. One that a killed process left behind (its pid gone
and untouched for a minute, or untouched for a day) is removed by the next write to the same folder.

External data (``save_model(..., external_data=True)``) goes to ``<name>.<hash>.data``, where ``<hash>`` is
taken from the data's content and recorded in the model. The data file is moved into place first, the model
last, and only then are other ``<name>.<hash>.data`` files removed. So at every moment the model at the path
reads the data it was written with: an interrupted write leaves the complete old pair, or the complete new one.

This module does not import the compiler: a model whose weights are computed while it is written (a
:class:`StreamedModel`, e.g. :class:`netdsl.lower.LoweredModel`) is written through its methods, and no
serialized copy of the whole model is ever held in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from .errors import NetdslError, UsageError

if TYPE_CHECKING:
    import onnx

PROTOBUF_LIMIT = 2**31 - 1
EXTERNAL_THRESHOLD = 1_900_000_000  # bytes of initializers above which external data is used ("auto")
EXTERNAL_MIN_TENSOR = 1024  # smaller initializers stay inside the model
EXTERNAL_ALIGN = 4096  # page-aligned offsets, so runtimes can map the tensors
TEMPORARY = re.compile(r"\..+\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")
STALE_DEAD_S = 60  # a temporary of a process that is gone, untouched this long, is removed
STALE_ANY_S = 86400  # ... and any temporary untouched this long (pids are reused)


class OutputError(NetdslError):
    """An output file could not be written."""


class StreamedModel(Protocol):
    """An ONNX model whose initializers are computed as they are written (:class:`netdsl.lower.LoweredModel`)."""

    def initializer_bytes(self) -> int: ...
    def serialized_size(self) -> int: ...
    def write(self, f: BinaryIO) -> int: ...
    def tensors(self) -> Iterator[onnx.TensorProto]: ...
    def assemble(self, tensors: Iterable[onnx.TensorProto]) -> onnx.ModelProto: ...


# ----------------------------------------------------------------------------- paths
def output_directory(path: str | os.PathLike) -> Path:
    """The folder ``path`` is to be written in; OutputError when it does not exist (check before long work)."""
    parent = Path(path).parent
    directory = parent if str(parent) else Path(".")
    if not directory.is_dir():
        raise OutputError(f"{path}: directory {directory} does not exist")
    return directory


def _resolved(path: str | os.PathLike) -> tuple[Path, os.stat_result | None]:
    """The file a write to ``path`` replaces (symbolic links followed) and its status (None: none yet)."""
    target = Path(os.path.realpath(path))
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputError(f"{path}: cannot write: {e.strerror}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{path}: is a directory")
    if not target.parent.is_dir():
        raise OutputError(f"{path}: directory {Path(path).parent} does not exist")
    return target, st


def _written_through(path: str | os.PathLike, st: os.stat_result | None) -> bool:
    """Whether the file of status ``st`` is written in place (a device or a pipe, as ``cp`` does) rather than
    replaced; OutputError for a kind of file that is neither."""
    if st is None or stat.S_ISREG(st.st_mode):
        return False
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return True
    raise OutputError(f"{path}: not a regular file, a character device or a pipe; refusing to write it")


def check_output(path: str | os.PathLike) -> None:
    """OutputError when a write to ``path`` is bound to fail, as far as can be told before writing: a folder, a
    missing folder, a kind of file that is not written (see the module docstring), no permission. For checks
    before long work, and before handing a path to a library that would fail with a worse message."""
    target, st = _resolved(path)
    if _written_through(path, st):
        if not os.access(target, os.W_OK):
            raise OutputError(f"{path}: cannot write: permission denied")
    elif not os.access(target.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot write in directory {target.parent}: permission denied")


def refuse_overwrite(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None],
                     option: str = "-o") -> None:
    """UsageError when ``output`` is one of ``inputs`` (the same file, also through a link or a hard link)."""
    for source in inputs:
        if source is None:
            continue
        try:
            same = os.path.samefile(output, source)
        except (OSError, ValueError):
            same = False
        if same or os.path.realpath(output) == os.path.realpath(source):
            raise UsageError(f"{option} {output}: that is the input {source}; refusing to write over it")


# ----------------------------------------------------------------------------- temporary files
def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_temporaries(directory: str | os.PathLike, now: float | None = None) -> list[str]:
    """Remove temporary files of netdsl's naming that a killed writer left in ``directory``; returns their names.

    A temporary of a live process is kept however old it is, unless untouched for :data:`STALE_ANY_S`.
    """
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        m = TEMPORARY.fullmatch(entry.name)
        if m is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        age = now - st.st_mtime
        if not stat.S_ISREG(st.st_mode):
            continue
        if age > STALE_ANY_S or (age > STALE_DEAD_S and not _alive(int(m["pid"]))):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(entry.name)
    return removed


class _Temporary:
    """A new file beside its target, with the target's permissions (or the umask's); :meth:`commit` moves it into
    place, :meth:`discard` removes it if it was not."""

    def __init__(self, directory: Path, name: str, like: os.stat_result | None, mode: str = "wb"):
        self.like = like
        create = stat.S_IMODE(like.st_mode) & 0o777 if like is not None else 0o666  # os.open applies the umask
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        while True:
            path = directory / f".{name[:100]}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            try:
                fd = os.open(path, flags, create)
                break
            except FileExistsError:  # pragma: no cover - 32 random bits
                continue
        self.path: Path | None = path
        try:
            self.file = os.fdopen(fd, mode, buffering=1 << 20)  # large buffer: models are written in many pieces
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise

    def commit(self, target: Path) -> None:
        f = self.file
        f.flush()
        os.fsync(f.fileno())
        if self.like is not None:
            like = self.like
            if (like.st_uid, like.st_gid) != (os.geteuid(), os.getegid()):
                with contextlib.suppress(OSError):  # only root (or a member of the group) may
                    os.fchown(f.fileno(), like.st_uid, like.st_gid)
            os.fchmod(f.fileno(), stat.S_IMODE(like.st_mode))  # the umask may have narrowed it at creation
        f.close()
        os.replace(self.path, target)
        self.path = None

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.path = None


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """A file to write ``path`` through; on success it atomically replaces the file at ``path`` (see the module
    docstring for links, devices and pipes). OutputError for a folder or another kind of special file."""
    target, st = _resolved(path)
    if _written_through(path, st):
        with open(target, mode) as f:
            yield f
        return
    sweep_temporaries(target.parent)
    tmp = _Temporary(target.parent, target.name, st, mode)
    try:
        yield tmp.file
        tmp.commit(target)
    finally:
        tmp.discard()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    write_with(path, lambda f: f.write(data))


@contextlib.contextmanager
def write_errors(path: str | os.PathLike) -> Iterator[None]:
    """OS failures of writing ``path`` as :class:`OutputError` (a folder, a full disk, no permission)."""
    try:
        yield
    except OutputError:
        raise
    except IsADirectoryError:
        raise OutputError(f"{path}: is a directory") from None
    except OSError as e:
        raise OutputError(f"{path}: cannot write: {e.strerror or e}") from None


def write_with(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Atomically write ``path`` by calling ``write(file)``; OS failures become :class:`OutputError`."""
    with write_errors(path), atomic_open(path) as f:
        write(f)


# ----------------------------------------------------------------------------- ONNX models
def initializer_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def save_model(model: onnx.ModelProto | StreamedModel, path: str | os.PathLike,
               external_data: str | bool = "auto") -> list[str]:
    """Write ``model`` atomically; returns the files written.

    ``external_data``: ``"auto"`` (only when the model would pass the 2 GB protobuf limit), True or False.
    External data goes to ``<name>.<hash>.data`` beside the model (see the module docstring). A model written
    without external data removes the data files of an earlier one at the same path. Both kinds of model give
    the same bytes for the same content.
    """
    path = Path(path)
    proto = hasattr(model, "SerializeToString")
    size = initializer_bytes(model) if proto else model.initializer_bytes()
    if external_data is True or (external_data == "auto" and size > EXTERNAL_THRESHOLD):
        return _save_external(model, path, proto)
    if proto:
        data = model.SerializeToString()
        if len(data) > PROTOBUF_LIMIT:  # pragma: no cover - guarded by the threshold above
            raise OutputError(f"{path}: model is over the 2 GB protobuf limit; use external data")
        write_bytes(path, data)
    else:
        if model.serialized_size() > PROTOBUF_LIMIT:
            raise OutputError(f"{path}: model is over the 2 GB protobuf limit; use external data")
        write_with(path, model.write)
    target, st = _resolved(path)
    if st is not None and stat.S_ISREG(st.st_mode):
        with _directory_lock(target.parent):
            _remove_data_files(target, keep=None)
    return [str(path)]


def _data_files(target: Path) -> re.Pattern:
    return re.compile(re.escape(target.name) + r"\.[0-9a-f]{16}\.data")


def _remove_data_files(target: Path, keep: str | None) -> None:
    """Remove the external data files of earlier writes of ``target``, but ``keep``."""
    pattern = _data_files(target)
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent):
            if entry.name != keep and pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """Serialises the final renames of netdsl writers in one folder (so one never removes another's new data)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class _Hashing:
    """A file wrapper that hashes what is written through it."""

    def __init__(self, f: BinaryIO):
        self.f, self.digest = f, hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.f.write(data)


def _externalized(tensors: Iterable[onnx.TensorProto], f: _Hashing, location: str) -> Iterator[onnx.TensorProto]:
    """Each tensor, the data of those of :data:`EXTERNAL_MIN_TENSOR` bytes or more moved to ``f`` (at offsets that
    are multiples of :data:`EXTERNAL_ALIGN`) and referred to as ONNX external data at ``location``."""
    import onnx
    from onnx import external_data_helper

    offset = 0
    for tensor in tensors:
        raw = tensor.raw_data
        if len(raw) >= EXTERNAL_MIN_TENSOR:
            pad = (-offset) % EXTERNAL_ALIGN
            f.write(b"\0" * pad)
            offset += pad
            f.write(raw)
            external_data_helper.set_external_data(tensor, location=location, offset=offset, length=len(raw))
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            offset += len(raw)
        yield tensor


def _save_external(model, path: Path, proto: bool) -> list[str]:
    target, st = _resolved(path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{path}: external data needs a regular file as the model's output")
    if target.parent != Path(os.path.abspath(path)).parent:
        raise OutputError(f"{path}: a link to another folder; give the model's real path with external data "
                          "(runtimes look for the data beside the path they are given)")
    directory = target.parent
    data = model_file = None
    try:
        with write_errors(path):
            sweep_temporaries(directory)
            data = _Temporary(directory, target.name + ".data", st)
            hashing = _Hashing(data.file)
            pending = target.name + ".pending.data"
            if proto:
                import onnx

                copy = onnx.ModelProto()
                copy.CopyFrom(model)  # the caller's model keeps its in-memory weights
                tensors = list(_externalized(copy.graph.initializer, hashing, pending))
                del copy.graph.initializer[:]
                copy.graph.initializer.extend(tensors)
                with_references = copy
            else:
                with_references = model.assemble(_externalized(model.tensors(), hashing, pending))
            location = f"{target.name}.{hashing.digest.hexdigest()[:16]}.data"
            for tensor in with_references.graph.initializer:
                for entry in tensor.external_data:
                    if entry.key == "location":
                        entry.value = location
            model_file = _Temporary(directory, target.name, st)
            model_file.file.write(with_references.SerializeToString())
            with _directory_lock(directory):
                data.commit(directory / location)  # a new name: the model now at the path does not read it
                model_file.commit(target)
                _remove_data_files(target, keep=location)
            return [str(path.parent / location), str(path)]
    finally:
        for tmp in (data, model_file):
            if tmp is not None:
                tmp.discard()

