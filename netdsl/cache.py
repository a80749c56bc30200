"""netdsl's cache folder: compiled models and TensorRT engines, one store and one housekeeping story.

The folder is :func:`netdsl.machine.cache_home` (``$NETDSL_CACHE_DIR``, else ``$XDG_CACHE_HOME/netdsl``,
else ``~/.cache/netdsl``). It holds ``models/`` (.net programs compiled to ONNX, reused by ``run``,
``bench``, ``compare``, ``build`` and ``Session``) and ``trt/`` (TensorRT engines). Each entry is a data
file plus a ``.json`` record of its key material, size and sha256; a per-key lock file makes a second
process wait for the first instead of doing the same work twice.

Nothing found in the folder is trusted: an entry is used only when its record matches what is asked for
and its data matches the record's size and sha256. The record also keeps the data file's fingerprint
(device, inode, size, modification and change times) from when it was written or last hashed; data read
from a file with that same fingerprint is not hashed again, since writing a file changes its change time.
Anything else at an entry's paths (damaged or foreign files, FIFOs, folders, symlinks) is removed, or
bypassed when it cannot be, with a warning, and the entry is rebuilt. Files are replaced atomically. A
folder that cannot be written still serves what it holds.

Housekeeping: using an entry refreshes its record's modification time; after each store the least
recently used entries of both kinds are removed until the folder holds at most ``$NETDSL_CACHE_MAX``
bytes (default 2 GiB; ``K``/``M``/``G`` suffixes, ``0`` for no limit). The folder also holds Lark's
analysed grammar (``grammar-*.lark``, :mod:`netdsl.syntax`), which housekeeping leaves alone.
``NETDSL_CACHE=off`` turns the compiled-model cache off (every command compiles afresh and writes no
model there). ``netdsl cache`` shows and clears the folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engines import ModelSource

from .errors import NetdslError
from .files import atomic_open
from .machine import cache_home
from .text import plain
from .version import __version__

MAX_RECORD = 1 << 16  # bytes of an entry's .json; a larger one is not ours
DEFAULT_MAX_BYTES = 2 << 30
KINDS = {"models": ".onnx", "trt": ".plan"}  # the cache's sub-folders and their entries' data suffix
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


# ----------------------------------------------------------------------------- settings
def enabled() -> bool:
    """False when ``NETDSL_CACHE`` is off, 0, no or false: compiled models are then neither read nor written."""
    return os.environ.get("NETDSL_CACHE", "").strip().lower() not in ("off", "0", "no", "false")


def max_bytes() -> int:
    """The size cap of the cache folder: ``$NETDSL_CACHE_MAX`` (bytes, K/M/G suffixes; 0: no cap)."""
    text = os.environ.get("NETDSL_CACHE_MAX", "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}.get(text[-1].lower(), 1)
    number = text[:-1] if scale > 1 else text
    try:
        value = int(float(number) * scale)
    except ValueError:
        value = -1
    if value < 0:
        print_warning(f"NETDSL_CACHE_MAX={plain(text, 40)} is not a size such as 2G or 500M; using 2G")
        return DEFAULT_MAX_BYTES
    return value


def print_warning(message: str) -> None:
    """How the cache reports what it repaired or bypassed (to stderr, like netdsl's other warnings)."""
    print(f"netdsl: warning: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------- reading files safely
class OddEntry(Exception):
    """A cache file that is not a regular file (a FIFO, folder, device or symlink), or is too large."""


def read_regular(path: Path, max_size: int, expect_size: int | None = None) -> bytes | None:
    """The bytes of the regular file ``path``, or None when it does not exist.

    Never follows a symlink, never blocks on a FIFO or device, and checks the size from ``fstat``
    (against ``max_size`` and ``expect_size``) before reading anything: a sparse multi-gigabyte
    file costs nothing. Raises OddEntry for anything else at ``path``, OSError when unreadable.
    """
    found = open_regular(path, max_size, expect_size)
    return None if found is None else read_closing(*found)


def fingerprint(st: os.stat_result) -> list[int]:
    """What identifies one version of a file: device, inode, size, modification and change times (ns).

    Writing a file's content changes its change time (ctime), which no unprivileged process can set back,
    and an atomic replacement is a new inode: a file whose fingerprint equals the one recorded when it was
    written (or last hashed) still holds the bytes it held then."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def open_regular(path: Path, max_size: int, expect_size: int | None = None) -> tuple[int, os.stat_result] | None:
    """A descriptor of the regular file ``path`` (blocking reads) and its ``fstat``, or None when it does not
    exist; checked as :func:`read_regular` says, before anything is read. The caller closes it."""
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OddEntry("is a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OddEntry(f"is {kind(st.st_mode)}, not a file")
        if expect_size is not None and st.st_size != expect_size:
            raise OddEntry(f"holds {st.st_size:,} bytes, not the {expect_size:,} its record says")
        if st.st_size > max_size:
            raise OddEntry(f"holds {st.st_size:,} bytes, more than the {max_size:,} expected")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_closing(fd: int, st: os.stat_result) -> bytes:
    """The bytes of the file open at ``fd`` whose ``fstat`` was ``st``, then the descriptor closed, whatever
    happened; OddEntry when the file changed meanwhile."""
    try:
        chunks, left = [], st.st_size + 1  # one byte more reveals a file that grew
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 30))  # one read, as a rule: no copy to join the pieces
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) != st.st_size or fingerprint(os.fstat(fd)) != fingerprint(st):
            raise OddEntry("changed while it was read")
        return data
    finally:
        os.close(fd)


class OpenEntry:
    """A verified entry's data file, held open: :attr:`path` (``/proc/self/fd/N``) names the open descriptor,
    so whoever opens that path (ONNX Runtime) reads the very file that was checked, whatever happens to the
    cache folder meanwhile. Closed when this object goes away."""

    def __init__(self, fd: int, size: int):
        self.fd, self.size = fd, size
        self.path = f"/proc/self/fd/{fd}"

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        self.close()


@functools.cache
def fd_paths() -> bool:
    """Whether an open descriptor can be opened again by name (``/proc/self/fd``: Linux)."""
    return sys.platform.startswith("linux") and os.path.isdir("/proc/self/fd")


def kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


# ----------------------------------------------------------------------------- the store
class CacheStore:
    """Entries ``<key><suffix>`` + ``<key>.json`` in one folder: atomic writes, verified reads, per-key locks.

    ``label`` names what is stored in warnings ("engine", "model"). A record whose key material differs
    from what is asked for, a data file whose size or sha256 differs from its record, or anything that is
    not a regular file is discarded (with a warning) and the entry rebuilt. A folder that cannot be
    written still serves the entries it holds; entries made then are used without being cached.
    """

    suffix = ".bin"
    label = "entry"
    max_record = MAX_RECORD

    def __init__(self, directory: Path, warn: Callable[[str], None] = print_warning):
        self.dir = Path(directory)
        self.warn = warn
        self._read_only_reported = False

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        return self.dir / f"{key}{self.suffix}", self.dir / f"{key}.json", self.dir / f"{key}.lock"

    def _cannot_write(self, what: str, error: BaseException) -> None:
        if not self._read_only_reported:
            self._read_only_reported = True
            reason = error.diagnostics[0].message if isinstance(error, NetdslError) else error.strerror or str(error)
            self.warn(f"cannot write the {self.label} cache {plain(self.dir)} ({what}: {plain(reason)}); "
                      f"{self.label}s built now are used without being cached")

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Exclusive per-key lock (a second process wanting the same entry waits here).

        Without a usable lock file (a read-only folder) the block runs unlocked: entries are
        replaced atomically and verified before use, so a reader never uses a half-written one.
        """
        fd = self._lock_fd(key)
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock

    def _lock_fd(self, key: str) -> int | None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._cannot_write(f"creating {plain(self.dir)}", e)
            return None
        path = self._paths(key)[2]
        for attempt in range(2):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o644)
            except OSError as e:
                if e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                    return self._read_only_lock(path)
                if e.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO) or attempt:
                    self.warn(f"cannot open the lock file {plain(path)} ({plain(e.strerror)}); building unlocked")
                    return None
                odd = "is a symbolic link" if e.errno == errno.ELOOP else f"cannot be opened ({e.strerror})"
            else:
                mode = os.fstat(fd).st_mode
                if stat.S_ISREG(mode):
                    return fd
                os.close(fd)
                odd = f"is {kind(mode)}, not a file"
            if attempt:
                self.warn(f"the lock file {plain(path)} {odd}; building unlocked")
                return None
            self.warn(f"the lock file {plain(path)} {odd}; replacing it")
            if not self._remove(path):
                return None
        return None  # pragma: no cover - the loop returns

    def _read_only_lock(self, path: Path) -> int | None:
        """A read-only folder: lock an existing lock file for reading (flock needs no write access)."""
        try:
            fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
        except OSError:
            return None
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        os.close(fd)
        return None

    def load(self, key: str, expect: dict | None = None) -> bytes | None:
        """The cached data, or None when there is no usable entry (a damaged or foreign one is removed).

        ``expect``: the entry's key material; an entry recorded for anything else is not used.
        """
        return (self.load_entry(key, expect) or (None, None))[0]

    def load_entry(self, key: str, expect: dict | None = None, *, held: bool = False) \
            -> tuple[bytes | OpenEntry, dict] | None:
        """(data, record) of a usable entry, or None; a use refreshes the record's time (least recently used).

        ``held``: where the platform allows, an entry unchanged since it was last hashed (its fingerprint is
        the recorded one) comes as an :class:`OpenEntry` instead of its bytes: nothing is read or hashed here,
        and the engine reads the file itself."""
        data_path, meta, _ = self._paths(key)
        try:
            raw = read_regular(meta, self.max_record)
            if raw is None:
                if os.path.lexists(data_path):
                    self.discard(key, f"has a {self.suffix} file but no record")
                return None
            try:
                record = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("size"), int) \
                    or not isinstance(record.get("sha256"), str):
                self.discard(key, "has an unreadable record")
                return None
            for field, want in (expect or {}).items():
                if record.get(field) != want:
                    self.discard(key, f"was recorded for another {self.label} (its `{field}` differs)")
                    return None
            try:
                opened = open_regular(data_path, max(record["size"], 0), expect_size=record["size"])
                if opened is None:
                    found = None
                elif held and fd_paths() and record.get("stat") == fingerprint(opened[1]):
                    found = OpenEntry(opened[0], opened[1].st_size), opened[1]
                else:
                    found = read_closing(*opened), opened[1]
            except OddEntry as e:
                self.discard(key, f"has a {self.suffix} file that {e}")
                return None
        except OddEntry as e:
            self.discard(key, f"has a record that {e}")
            return None
        except OSError as e:
            self.warn(f"cannot read the {self.label} cache entry {plain(data_path)} ({plain(e.strerror or e)}); "
                      "rebuilding")
            return None
        if found is None:
            self.discard(key, f"has a record but no {self.suffix} file")
            return None
        data, st = found
        if isinstance(data, bytes) and record.get("stat") != fingerprint(st):  # written or changed since hashed
            if hashlib.sha256(data).hexdigest() != record["sha256"]:
                self.discard(key, f"has a {self.suffix} file whose sha256 differs from its record")
                return None
            record = {**record, "stat": fingerprint(st)}
            self._write_record(meta, record)  # hashed now: the next use need not hash it again
        with contextlib.suppress(OSError):
            os.utime(meta)  # last used: what housekeeping evicts by
        return data, record

    def _write_record(self, meta: Path, record: dict) -> bool:
        try:
            if not self._clear(meta):
                return False
            with atomic_open(meta, "w") as f:
                json.dump(record, f, indent=1, sort_keys=True)
        except (OSError, NetdslError):
            return False  # a read-only folder: the entry is hashed again on its next use
        return True

    def store(self, key: str, data: bytes, info: dict) -> bool:
        """Cache ``data`` with its record; False (after a warning) when the folder cannot be written."""
        data_path, meta, _ = self._paths(key)
        record = {**info, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "created": time.time()}
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if not (self._clear(data_path) and self._clear(meta)):
                return False  # something that cannot be removed sits there (reported)
            with atomic_open(data_path) as f:
                f.write(data)
            record["stat"] = fingerprint(os.lstat(data_path))
            with atomic_open(meta, "w") as f:
                json.dump(record, f, indent=1, sort_keys=True)
        except (OSError, NetdslError) as e:
            self._cannot_write(f"storing {key}", e)
            return False
        return True

    def discard(self, key: str, why: str | None = None) -> None:
        """Remove the entry ``key`` (whatever sits at its paths), warning ``why`` it is not used."""
        if why:
            self.warn(f"{self.label} cache entry {key} in {plain(self.dir)} {why}; rebuilding")
        for path in self._paths(key)[:2]:
            self._remove(path)

    def _clear(self, path: Path) -> bool:
        """Before writing ``path``: remove anything there that is not a regular file (never written through)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return True
        return stat.S_ISREG(st.st_mode) or self._remove(path)

    def _remove(self, path: Path) -> bool:
        """Remove what sits at ``path`` (a file, link, FIFO or empty folder); False, after a warning, if it stays."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return True
        try:
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(path)
            else:
                os.unlink(path)
        except OSError as e:
            if stat.S_ISDIR(st.st_mode) and e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                self.warn(f"{plain(path)} is a folder that is not empty; netdsl leaves it alone and does not "
                          f"cache this {self.label} (remove the folder to cache it again)")
            else:
                self._cannot_write(f"removing {plain(path.name)}", e)
            return False
        return True


# ----------------------------------------------------------------------------- compiled models
class ModelCache(CacheStore):
    """Compiled .net programs (``models/<key>.onnx``), keyed by :func:`model_material`; the record also
    lists the program's files and the sha256 of their text, checked before the entry is used.

    Each record also describes the model (name, inputs, outputs, metadata, source locations), so a
    cached model reaches the runtime without onnx being imported, and keeps the warnings printed while
    it was compiled (weights left at their seeded values, fp16 range), which a later use prints again.
    Two processes compiling the same model at once both compile it; the entry is written atomically
    under the key's lock and is the same either way (a compile is deterministic).
    """

    suffix = ".onnx"
    label = "model"
    max_record = 1 << 24  # the source locations of a large network

    def __init__(self, root: Path | None = None, warn: Callable[[str], None] = print_warning):
        super().__init__(Path(root or cache_home()) / "models", warn)

    def get(self, material: dict) -> tuple[ModelSource, str] | None:
        """(the model, the warnings recorded with it) that ``material`` describes, or None. The entry is
        used only while every file of the program (its imports too) still has the text it was compiled from."""
        key = material_key(material)
        entry = self.load_entry(key, expect=material, held=True)
        if entry is None:
            return None
        record = entry[1]
        files = record.get("files")
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files) \
                or sources_sha256(files) != record.get("source_sha256"):
            return None  # an imported file changed since: compiled again, and this entry replaced
        try:
            return source_from_entry(*entry), str(record.get("messages") or "")
        except (KeyError, TypeError, ValueError):
            self.discard(key, "has a record that does not describe its model")
            return None

    def put(self, material: dict, data: bytes, source: ModelSource, messages: str = "", *,
            files: tuple[str, ...], source_sha256: str) -> bool:
        """Cache a compiled model (then enforce the folder's size cap); False when it could not be written,
        or when a file of the program changed while it was compiled (``source_sha256``: the text compiled)."""
        if not files or sources_sha256(files) != source_sha256:
            return False
        key = material_key(material)
        record = {**material, "files": list(files), "source_sha256": source_sha256,
                  "model": describe_source(source), "messages": messages}
        with self.lock(key):
            stored = self.store(key, data, record)
        if stored:
            evict(self.dir.parent, keep=key)
        return stored


def model_material(*, main: str, main_sha256: str, path: str, network: str | None, args: dict, seed: int,
                   opset: int, dtype: str = "fp32", keep_io_fp32: bool = False, fold_bn: bool = False,
                   weights_sha256: str | None = None, weights_rules: tuple[str, ...] = (),
                   allow_missing: bool = False) -> dict:
    """The key of a compiled model: the main file (its real path and the sha256 of its bytes), the path it
    is shown as and the working directory (source locations in the model name files as shown from
    there), the network and its arguments, the weights
    file's contents, every option that changes the ONNX, and the versions of netdsl and onnx. The files
    it imports are checked from the entry's record (:meth:`ModelCache.get`). Recorded in the entry and
    checked before it is used."""
    return {"main": main, "main_sha256": main_sha256, "path": path, "cwd": os.getcwd(), "network": network,
            "args": {k: args[k] for k in sorted(args)}, "seed": seed, "opset": opset, "dtype": dtype,
            "keep_io_fp32": bool(keep_io_fp32), "fold_bn": bool(fold_bn), "weights_sha256": weights_sha256,
            "weights_rules": list(weights_rules), "allow_missing": bool(allow_missing), "netdsl": __version__,
            "initialisation": "torchvision-rule-2",  # netdsl.weights' initial values; renamed when they change
            "onnx": _onnx_version()}


def sources_sha256(files) -> str | None:
    """The sha256 of a program's text as :mod:`netdsl.loader` computes it (every file, in load order,
    without a byte order mark), from the files as they are now; None when one cannot be read."""
    digest = hashlib.sha256()
    for name in files:
        try:
            with open(name, "rb") as f:
                digest.update(f.read().removeprefix(b"\xef\xbb\xbf"))
        except (OSError, ValueError):
            return None
    return digest.hexdigest()


def file_sha256_or_none(path: str | os.PathLike) -> str | None:
    try:
        return file_sha256(path)
    except (OSError, ValueError):
        return None


def material_key(material: dict) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


def _onnx_version() -> str:
    """The installed onnx's version, without importing onnx: from the name of the ``onnx-<version>.dist-info``
    folder beside the package where there is exactly one (as pip installs it; ~1 ms), else from
    ``importlib.metadata`` (~30 ms: it imports more and scans every distribution on the path)."""
    import importlib.util

    spec = importlib.util.find_spec("onnx")
    if spec is not None and spec.origin:
        site = Path(spec.origin).parent.parent
        found = [p.name for p in site.glob("onnx-*.dist-info")]
        if len(found) == 1:
            return found[0][len("onnx-"):-len(".dist-info")]
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onnx")
    except PackageNotFoundError:  # pragma: no cover - onnx is a dependency
        return "unknown"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def describe_source(source: ModelSource) -> dict:
    def specs(items) -> list:
        return [[s.name, list(s.shape), s.dtype.name] for s in items]

    return {"name": source.name, "inputs": specs(source.inputs), "outputs": specs(source.outputs),
            "metadata": dict(source.metadata), "locations": dict(source.net_locations)}


def source_from_entry(data: bytes | OpenEntry, record: dict) -> ModelSource:
    """The :class:`~netdsl.engines.ModelSource` of a cached model, from its record (onnx is not imported); an
    :class:`OpenEntry` becomes a source by path, which holds the entry open while it lives."""
    import numpy as np

    from .engines import ModelSource, TensorSpec

    model = record["model"]

    def specs(items) -> tuple:
        return tuple(TensorSpec(name, tuple(shape), np.dtype(dtype)) for name, shape, dtype in items)

    held = isinstance(data, OpenEntry)
    return ModelSource(model["name"], None if held else data, data.path if held else None, specs(model["inputs"]),
                       specs(model["outputs"]), dict(model["metadata"]), dict(model["locations"]),
                       held=data if held else None)


def replay(messages: str, stream=None) -> None:
    """Print again the warnings recorded when a cached model was compiled (colour only on a terminal)."""
    if not messages:
        return
    stream = stream or sys.stderr
    if not (stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"):
        import re

        messages = re.sub(r"\x1b\[[0-9;]*m", "", messages)
    stream.write(messages)


# ----------------------------------------------------------------------------- housekeeping
@dataclass(frozen=True)
class Entry:
    kind: str  # "models" or "trt"
    key: str
    size: int  # bytes on disk: data file and record
    last_used: float  # the record's modification time


def entries(root: Path | None = None) -> list[Entry]:
    """Every entry (a record with its data file) in the cache folder, least recently used first."""
    root = Path(root or cache_home())
    found = []
    for sub, suffix in KINDS.items():
        try:
            names = os.listdir(root / sub)
        except OSError:
            continue
        for name in names:
            if not name.endswith(".json"):
                continue
            key = name[:-5]
            try:
                meta = os.lstat(root / sub / name)
                data = os.lstat(root / sub / f"{key}{suffix}")
            except OSError:
                continue
            found.append(Entry(sub, key, meta.st_size + data.st_size, meta.st_mtime))
    return sorted(found, key=lambda e: e.last_used)


def folder_size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def evict(root: Path | None = None, limit: int | None = None, keep: str | None = None) -> list[Entry]:
    """Remove least recently used entries until those left total at most ``limit`` bytes (default
    :func:`max_bytes`; 0: no limit). ``keep`` (a key) is never removed; nor is an entry another process
    holds locked. Returns the entries removed."""
    root = Path(root or cache_home())
    limit = max_bytes() if limit is None else limit
    if limit <= 0:
        return []
    found = entries(root)
    total = sum(e.size for e in found)
    removed = []
    for entry in found:
        if total <= limit:
            break
        if entry.key == keep:
            continue
        if _remove_entry(root / entry.kind, entry.key, KINDS[entry.kind]):
            total -= entry.size
            removed.append(entry)
    return removed


def _remove_entry(folder: Path, key: str, suffix: str) -> bool:
    """Remove one entry unless a process holds its lock (it is being built or read)."""
    lock = folder / f"{key}.lock"
    fd = None
    try:
        fd = os.open(lock, os.O_RDWR | _OPEN_FLAGS)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    except OSError:
        if fd is not None:
            os.close(fd)
        fd = None  # no lock file: nobody is using it
    try:
        for path in (folder / f"{key}.json", folder / f"{key}{suffix}", lock):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        if fd is not None:
            os.close(fd)


def clear(root: Path | None = None, kinds: tuple[str, ...] = tuple(KINDS)) -> tuple[int, int]:
    """Remove every file of the ``kinds`` sub-folders; (files removed, bytes freed). Other files are left."""
    root = Path(root or cache_home())
    count = freed = 0
    for sub in kinds:
        folder = root / sub
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            path = folder / name
            try:
                st = os.lstat(path)
                if stat.S_ISDIR(st.st_mode):
                    continue
                os.unlink(path)
            except OSError:
                continue
            count += 1
            freed += st.st_size
    return count, freed
