"""Weight files: reading checkpoints, binding them strictly to a network, and writing them.

Formats (chosen by suffix): ``.safetensors`` (recommended), ``.npz``, ``.onnx`` (its initializers),
and PyTorch ``.pt``/``.pth``/``.bin``/``.ckpt`` checkpoints, read with ``torch.load(weights_only=True)``
so a file that tries to run code is refused (PyTorch is optional: without it, reading a ``.pt`` is a
clear error). Readers return float16/bfloat16/float8 tensors widened to float32; other dtypes are
returned as stored and judged by :func:`bind`.

Binding is strict: missing, unexpected, shape-mismatched and invalid (NaN/inf, non-numeric) entries are
all listed in one error, each with the expected shape and the .net location of the layer that wants
it. Nothing is silently re-initialised; ``allow_missing`` makes partial loading explicit (missing
tensors keep their deterministic initial values and are returned in :attr:`BindResult.missing`).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import Diagnostic, UsageError, WeightsError
from .graph import Graph
from .lazy import lazy_import
from .ops import fmt_shape
from .weights import initial_value

IGNORED_SUFFIXES = (".num_batches_tracked",)  # PyTorch's BN step counter: no part of inference
FORMATS = {".safetensors": "safetensors", ".npz": "npz", ".onnx": "onnx", ".pt": "torch", ".pth": "torch",
           ".bin": "torch", ".ckpt": "torch"}
WRITABLE = (".safetensors", ".npz")
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")  # where training checkpoints nest the weights
NETDSL_CONSTANT_PREFIX = "const."  # lowering constants in netdsl's own .onnx files (reshape targets, clip bounds)
_NARROW_FLOATS = ("bfloat16", "float8", "float6", "float4")  # ml_dtypes types numpy cannot compute with


# ----------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class TensorHeader:
    """What a weight file declares about one tensor, read before its data: shape, dtype (as numpy reads it; narrow
    floats as float32) and the bytes its data takes in the file."""

    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int


def read_headers(path: str | os.PathLike) -> dict[str, TensorHeader] | None:
    """Every tensor's name, shape and dtype, read from the file's headers without reading any tensor data, after
    checking that the sizes they declare agree with the file (so reading it takes memory in proportion to what it
    declares, and no more). None for PyTorch checkpoints, whose shapes are known only by unpickling (their archive
    is checked against the file's size). WeightsError for a file that is damaged or not of its format.
    """
    p, fmt = _weight_file(path)
    reader = {"safetensors": _headers_safetensors, "npz": _headers_npz, "onnx": _headers_onnx,
              "torch": _check_torch_archive}[fmt]
    return _reading(p, fmt, lambda: reader(p))


def read_checkpoint(path: str | os.PathLike, names: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """Every tensor of a weight file (or those in ``names``), by name, as numpy arrays (narrow floats widened to
    float32). The headers are checked first (:func:`read_headers`).

    Raises WeightsError for an unknown suffix, a missing, unreadable or damaged file, and a refused checkpoint.
    """
    p, fmt = _weight_file(path)
    headers = read_headers(p)
    reader = {"safetensors": _read_safetensors, "npz": _read_npz, "onnx": _read_onnx, "torch": _read_torch}[fmt]
    tensors = _reading(p, fmt, lambda: reader(p, None if names is None else set(names)))
    out = {}
    for name, value in tensors.items():
        value = _widened(value)
        if headers is not None and name in headers and tuple(value.shape) != headers[name].shape:  # pragma: no cover
            raise WeightsError(f"{path}: `{name}` holds shape {value.shape}, not the {headers[name].shape} declared")
        out[name] = value
    return out


def _weight_file(path: str | os.PathLike) -> tuple[Path, str]:
    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise WeightsError(f"{path}: unknown weight format `{p.suffix or '(no suffix)'}`; use one of "
                           + ", ".join(sorted(FORMATS)))
    if not p.exists():
        raise WeightsError(f"{path}: no such file")
    if not p.is_file():
        raise WeightsError(f"{path}: not a file")
    return p, fmt


def _reading(p: Path, fmt: str, read):
    """``read()``, its failures as WeightsError."""
    try:
        return read()
    except WeightsError:
        raise
    except MemoryError:
        raise WeightsError(f"{p}: out of memory while reading") from None
    except PermissionError as e:
        raise WeightsError(f"{p}: cannot read: {e.strerror}") from None
    except RecursionError:
        raise WeightsError(f"{p}: not a readable {fmt} file (nested too deeply)") from None
    except Exception as e:  # noqa: BLE001 - each reader's library raises its own types for corrupt files
        detail = " ".join(str(e).split())[:200]
        raise WeightsError(f"{p}: not a readable {fmt} file ({type(e).__name__}: {detail})") from None


def _damaged(p: Path, what: str) -> WeightsError:
    return WeightsError(f"{p}: not a readable {FORMATS[p.suffix.lower()]} file: {what}")


def _widened(value: np.ndarray) -> np.ndarray:
    """bfloat16/float8 arrays (ml_dtypes types, as safetensors and onnx return them) as float32."""
    if value.dtype.kind == "V" and value.dtype.names is None and value.dtype.name.startswith(_NARROW_FLOATS):
        return value.astype(np.float32)
    return value


_SAFETENSORS_DTYPES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16",
                       "F16": "float16", "I32": "int32", "U32": "uint32", "F32": "float32", "F64": "float64",
                       "I64": "int64", "U64": "uint64", "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
_SAFETENSORS_HEADER_MAX = 100_000_000  # the safetensors library's own limit


def _headers_safetensors(p: Path) -> dict[str, TensorHeader]:
    """The safetensors header: an 8-byte little-endian length, then JSON {name: {dtype, shape, data_offsets}}."""
    import json
    import math

    size = p.stat().st_size
    with open(p, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _damaged(p, f"{size} bytes, shorter than a safetensors header")
        n = int.from_bytes(prefix, "little")
        if n > min(size - 8, _SAFETENSORS_HEADER_MAX):
            raise _damaged(p, f"its header declares {n} bytes, but the file holds {size - 8} after it")
        text = f.read(n)
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise _damaged(p, "its header is not JSON") from None
    if not isinstance(header, dict):
        raise _damaged(p, "its header is not a JSON object")
    data_size = size - 8 - n
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("shape"), list)
                and all(type(d) is int and d >= 0 for d in entry["shape"])
                and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
                and all(type(o) is int for o in entry["data_offsets"])):
            raise _damaged(p, f"the header entry of `{name}` is not {{dtype, shape, data_offsets}}")
        kind = _SAFETENSORS_DTYPES.get(entry.get("dtype"))
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        if not 0 <= begin <= end <= data_size:
            raise _damaged(p, f"`{name}` lies at bytes {begin}..{end}, beyond the {data_size} bytes of data")
        if kind is not None:
            itemsize = kind if isinstance(kind, int) else np.dtype(kind).itemsize
            if math.prod(shape) * itemsize != end - begin:
                raise _damaged(p, f"`{name}` declares {math.prod(shape) * itemsize} bytes ({fmt_shape(shape)} "
                                  f"{entry['dtype']}) but takes {end - begin}")
        dtype = np.dtype(kind) if isinstance(kind, str) else np.dtype(np.float32)
        out[name] = TensorHeader(shape, dtype, end - begin)
    return out


def _read_safetensors(p: Path, names: set[str] | None) -> dict[str, np.ndarray]:
    try:
        from safetensors import safe_open
    except ImportError:
        raise WeightsError(f"{p}: reading .safetensors needs the `safetensors` package: pip install safetensors"
                           ) from None
    try:  # safetensors asks numpy for "bfloat16"/"float8_*" by name: ml_dtypes (an onnx dependency) defines them
        import ml_dtypes  # noqa: F401
    except ImportError:
        pass
    try:
        with safe_open(str(p), framework="numpy") as f:
            return {name: f.get_tensor(name) for name in f.keys() if names is None or name in names}  # noqa: SIM118
    except (KeyError, TypeError) as e:  # no numpy type for BF16 / F8_* (old safetensors, or no ml_dtypes)
        if not re.search(r"bf16|bfloat16|f8|float8", str(e), re.I):
            raise
        raise WeightsError(f"{p}: this safetensors installation cannot read its bfloat16/float8 tensors "
                           f"({' '.join(str(e).split())[:80]}): pip install -U safetensors ml_dtypes") from None


_DEFLATE_MAX_RATIO = 1032  # deflate expands data at most about 1032 times


def _archive_members(p: Path):
    """The members of a zip archive, each checked to take no more than its compressed size can hold."""
    import zipfile

    try:
        with zipfile.ZipFile(p) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as e:
        raise _damaged(p, f"not a readable zip archive ({' '.join(str(e).split())[:100]})") from None
    for info in members:
        stored = info.compress_type == zipfile.ZIP_STORED
        if (stored and info.file_size != info.compress_size) or \
                info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 1024:
            raise _damaged(p, f"member `{info.filename}` declares {info.file_size} bytes, more than its "
                              f"{info.compress_size} stored bytes can hold")
    return members


def _headers_npz(p: Path) -> dict[str, TensorHeader]:
    import math
    import zipfile

    if not zipfile.is_zipfile(p):
        raise WeightsError(f"{p}: not an .npz archive (a zip file of .npy arrays, as numpy.savez writes)")
    fmt = np.lib.format
    out = {}
    with zipfile.ZipFile(p) as z:
        for info in _archive_members(p):
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            with z.open(info) as member:
                try:
                    version = fmt.read_magic(member)
                except ValueError:
                    raise WeightsError(f"{p}: member `{info.filename}` is not a .npy array; an .npz holds only the "
                                       "arrays numpy.savez writes") from None
                try:
                    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                    shape, _, dtype = read(member)
                except (ValueError, SyntaxError, TypeError) as e:
                    raise _damaged(p, f"member `{info.filename}` has a malformed .npy header "
                                      f"({' '.join(str(e).split())[:80]})") from None
                start = member.tell()
            if dtype.hasobject:
                raise WeightsError(f"{p}: refused: it holds pickled Python objects, and loading them could run "
                                   "code from the file; save plain numeric arrays")
            nbytes = math.prod(shape) * dtype.itemsize
            if start + nbytes != info.file_size:
                raise _damaged(p, f"member `{info.filename}` declares {nbytes} bytes of data ({fmt_shape(shape)} "
                                  f"{dtype}) but holds {info.file_size - start}")
            out[name] = TensorHeader(tuple(shape), dtype, nbytes)
    return out


def _read_npz(p: Path, names: set[str] | None) -> dict[str, np.ndarray]:
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files if names is None or k in names}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise WeightsError(f"{p}: refused: it holds pickled Python objects, and loading them could run code "
                               "from the file; save plain numeric arrays") from None
        raise


def _onnx_initializers(p: Path):
    import onnx

    model = onnx.load(str(p), load_external_data=False)
    if not model.graph.initializer:
        raise WeightsError(f"{p}: not an ONNX model with weights (it has no initializers)")
    own = model.producer_name == "netdsl"
    return [t for t in model.graph.initializer if not (own and t.name.startswith(NETDSL_CONSTANT_PREFIX))]


def _headers_onnx(p: Path) -> dict[str, TensorHeader]:
    import math

    import onnx
    from onnx import helper

    out = {}
    for t in _onnx_initializers(p):
        shape = tuple(t.dims)
        if any(d < 0 for d in shape):
            raise _damaged(p, f"initializer `{t.name}` has a negative dimension")
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
        except (KeyError, TypeError, ValueError):
            raise _damaged(p, f"initializer `{t.name}` has an unknown data type {t.data_type}") from None
        nbytes = math.prod(shape) * dtype.itemsize
        if t.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in t.external_data}
            try:
                offset, length = int(info.get("offset", 0)), int(info.get("length", nbytes))
            except ValueError:
                raise _damaged(p, f"initializer `{t.name}` has a malformed external data entry") from None
            data = p.parent / info.get("location", "")
            size = data.stat().st_size if data.is_file() else 0
            if length != nbytes or offset < 0 or offset + length > size:
                raise _damaged(p, f"initializer `{t.name}` declares {nbytes} bytes at {info.get('location')!r}, "
                                  f"whose {size} bytes do not hold them")
        elif t.HasField("raw_data") and len(t.raw_data) != nbytes:
            raise _damaged(p, f"initializer `{t.name}` declares {nbytes} bytes ({fmt_shape(shape)} {dtype}) but "
                              f"holds {len(t.raw_data)}")
        if dtype.name.startswith(_NARROW_FLOATS) or dtype.kind == "V":
            dtype = np.dtype(np.float32)
        out[t.name] = TensorHeader(shape, dtype, nbytes)
    return out


def _read_onnx(p: Path, names: set[str] | None) -> dict[str, np.ndarray]:
    """The initializers of an ONNX model; netdsl's own lowering constants are skipped."""
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t, base_dir=str(p.parent)) for t in _onnx_initializers(p)
            if names is None or t.name in names}


def _check_torch_archive(p: Path) -> None:
    """A PyTorch zip checkpoint's members must fit in the file (torch.save stores them uncompressed)."""
    import zipfile

    if zipfile.is_zipfile(p):
        declared, size = sum(info.file_size for info in _archive_members(p)), p.stat().st_size
        if declared > size:
            raise _damaged(p, f"its members declare {declared} bytes, more than the file's {size}; PyTorch stores "
                              "checkpoints uncompressed")
    return None


def _read_torch(p: Path, names: set[str] | None) -> dict[str, np.ndarray]:
    torch = lazy_import("torch", error=WeightsError, message=(
        f"{p}: reading PyTorch checkpoints needs PyTorch (pip install torch); or convert it where PyTorch is "
        "installed: safetensors.torch.save_file(state_dict, 'model.safetensors')"))
    import pickle

    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        blocked = re.search(r"GLOBAL ([\w.]+)", str(e))
        if blocked is None:  # a damaged pickle, not a refusal
            raise WeightsError(f"{p}: not a readable torch file ({' '.join(str(e).split())[:200]})") from None
        raise WeightsError(f"{p}: refused: the checkpoint pickles `{blocked.group(1)}`, a Python object beyond "
                           "tensors, and loading it could run code from the file. Save only the state_dict "
                           "(torch.save(model.state_dict(), path)), or convert it to safetensors where you trust "
                           "it") from None
    return {name: _tensor_to_numpy(torch, value) for name, value in _state_dict_of(obj, p, torch).items()
            if names is None or name in names}


def _state_dict_of(obj: object, p: Path, torch) -> Mapping[str, object]:
    """The state_dict in a loaded checkpoint: the object itself or one nested under STATE_DICT_KEYS."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{p}: holds a {type(obj).__name__}, not a state_dict (a mapping of names to tensors)")
    if not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                return _state_dict_of(obj[key], p, torch)
        entries = ", ".join(f"`{k}` ({type(v).__name__})" for k, v in list(obj.items())[:8])
        raise WeightsError(f"{p}: holds no tensors at its top level (entries: {entries or 'none'}); save the "
                           "model's state_dict, or nest it under `state_dict`")
    others = [f"`{k}` ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise WeightsError(f"{p}: entries that are not tensors: {', '.join(others[:8])}"
                           + (" ..." if len(others) > 8 else "") + "; save only the model's state_dict")
    return obj


def _tensor_to_numpy(torch, value) -> np.ndarray:
    value = value.detach().cpu()
    if value.is_floating_point() and value.dtype not in (torch.float16, torch.float32, torch.float64):
        value = value.float()  # bfloat16 and float8 have no numpy type
    return value.numpy()


# ----------------------------------------------------------------------------- renaming
@dataclass(frozen=True)
class Rename:
    """One ``--weights-map`` rule, applied to checkpoint keys: ``strip:PREFIX`` removes a leading prefix,
    ``FROM=>TO`` is :func:`re.sub` (every match is replaced; ``\\1`` refers to groups), and ``drop:REGEX``
    leaves out the keys it matches (:func:`re.search`), e.g. a training-only head.
    """

    pattern: re.Pattern
    replacement: str | None  # None: drop the keys that match
    text: str

    @classmethod
    def parse(cls, rule: str) -> Rename:
        """Raises UsageError for a malformed rule."""
        kind, colon, rest = rule.partition(":")
        if colon and kind in ("strip", "drop") and "=>" not in rule:
            if not rest:
                raise UsageError(f"--weights-map {rule!r}: {kind}: needs a "
                                 + ("prefix, e.g. strip:module." if kind == "strip" else "regex, e.g. drop:^aux"))
            src, dst = (re.escape(rest), "") if kind == "strip" else (rest, None)
            return cls(_compiled(rule, "^" + src if kind == "strip" else src, dst), dst, rule)
        src, sep, dst = rule.partition("=>")
        if not sep:
            raise UsageError(f"--weights-map {rule!r}: expected strip:PREFIX, drop:REGEX or REGEX=>REPLACEMENT")
        return cls(_compiled(rule, src, dst), dst, rule)

    def apply(self, key: str) -> str | None:
        """The renamed key, or None when the rule drops it."""
        if self.replacement is None:
            return None if self.pattern.search(key) else key
        return self.pattern.sub(self.replacement, key)


def _compiled(rule: str, src: str, dst: str | None) -> re.Pattern:
    try:
        pattern = re.compile(src)
        if dst is not None:
            pattern.sub(dst, "")  # a bad group reference in the replacement fails here, not mid-checkpoint
    except re.error as e:
        raise UsageError(f"--weights-map {rule!r}: bad regular expression ({e})") from None
    return pattern


def rename(tensors: Mapping[str, np.ndarray], rules: Sequence[Rename | str]) -> dict[str, np.ndarray]:
    """Checkpoint keys renamed (or dropped) by ``rules``, each applied in order. Two keys renamed alike are an
    error."""
    parsed = [r if isinstance(r, Rename) else Rename.parse(r) for r in rules]
    out: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    for key, value in tensors.items():
        new: str | None = key
        for r in parsed:
            new = r.apply(new)
            if new is None:
                break
        if new is None:
            continue
        if new in out:
            raise WeightsError(f"--weights-map maps both `{origin[new]}` and `{key}` to `{new}`")
        out[new], origin[new] = value, key
    return out


# ----------------------------------------------------------------------------- binding
@dataclass(frozen=True)
class BindResult:
    weights: dict[str, np.ndarray]  # every weight of the network, float32, in graph order
    missing: tuple[str, ...]  # initialised from the seed because allow_missing was given
    ignored: tuple[str, ...]  # e.g. num_batches_tracked


def bind(graph: Graph, tensors: Mapping[str, np.ndarray], *, allow_missing: bool = False, seed: int = 0,
         source: str = "checkpoint") -> BindResult:
    """Match checkpoint tensors to the network's weights, strictly.

    Requires: ``tensors`` maps names to arrays (anything ``np.asarray`` accepts). Guarantees: the result
    holds every weight of ``graph`` as a finite, C-contiguous float32 array of its expected shape, or a
    WeightsError lists every missing, unexpected, mismatched and invalid entry at once.
    """
    specs = graph.weight_specs()
    expected = {name: (spec, node) for name, spec, node in specs}
    ignored = tuple(k for k in tensors if k.endswith(IGNORED_SUFFIXES) and k not in expected)
    unexpected = sorted(k for k in tensors if k not in expected and k not in ignored)
    missing = [name for name in expected if name not in tensors]
    problems: list[Diagnostic] = []
    mismatched = invalid = 0
    out: dict[str, np.ndarray] = {}
    for name, (spec, node) in expected.items():
        where = f"{node.op.name} `{node.name}`"
        if name not in tensors:
            if not allow_missing:
                problems.append(Diagnostic("error", f"missing `{name}` (shape {fmt_shape(spec.shape) or 'scalar'}) "
                                           f"for {where}", node.span, node.trace[:1]))
            continue
        value = np.asarray(tensors[name])
        problem = None
        if tuple(value.shape) != spec.shape:
            mismatched += 1
            problem = (f"`{name}` has shape {fmt_shape(value.shape) or '() (a scalar)'}, but {where} wants "
                       f"{fmt_shape(spec.shape)}")
        elif value.dtype.kind not in "fiu":
            invalid += 1
            problem = f"`{name}` has dtype {value.dtype}, not a real number type"
        else:
            with np.errstate(over="ignore"):
                value = np.ascontiguousarray(value, dtype=np.float32)
            if not np.isfinite(value).all():
                invalid += 1
                problem = f"`{name}` holds NaN or infinite values (or values beyond float32's range)"
        if problem:
            problems.append(Diagnostic("error", problem, node.span, node.trace[:1]))
        else:
            out[name] = value
    if unexpected:
        suggested = _suggestions({k: np.shape(tensors[k]) for k in unexpected},
                                 {name: expected[name][0].shape for name in missing})
        for k in unexpected:
            shape = fmt_shape(np.shape(tensors[k])) or "scalar"
            hint = f"; did you mean `{suggested[k]}`?" if k in suggested else ""
            problems.append(Diagnostic("error", f"unexpected `{k}` (shape {shape}): the network has no such weight"
                                       + hint, None))
    if problems:
        n_missing = 0 if allow_missing else len(missing)
        notes = _prefix_hint(unexpected, missing)
        if n_missing:
            notes += ("--allow-missing (allow_missing=True in Python) accepts a checkpoint that lacks weights; "
                      "they keep their initial values",)
        head = Diagnostic("error", f"{source} and network `{graph.name}` disagree: {n_missing} missing, "
                                   f"{len(unexpected)} unexpected, {mismatched} mismatched, {invalid} invalid",
                          None, notes)
        raise WeightsError(diagnostics=[head, *problems])
    if missing:
        init = initial_weights_for(graph, missing, seed)
        out = {name: out[name] if name in out else init[name] for name in expected}
    return BindResult(out, tuple(missing), ignored)


def initial_weights_for(graph: Graph, names: Sequence[str], seed: int) -> dict[str, np.ndarray]:
    """The seeded initial values of the weights ``names`` (only those are computed)."""
    specs = {name: spec for name, spec, _ in graph.weight_specs()}
    return {name: initial_value(name, specs[name], seed) for name in names}


def _prefix_changes(unexpected: Sequence[str], missing: Sequence[str]) -> Counter:
    """(prefix the checkpoint adds, prefix it lacks) -> how many keys that one change would fix."""
    wanted, extra = set(missing), set(unexpected)
    changes: Counter = Counter()
    for key in unexpected:
        for i, ch in enumerate(key):
            if ch == "." and key[i + 1:] in wanted:
                changes[(key[:i + 1], "")] += 1
    for name in missing:
        for i, ch in enumerate(name):
            if ch == "." and name[i + 1:] in extra:
                changes[("", name[:i + 1])] += 1
    return changes


def _suggestions(unexpected: Mapping[str, tuple[int, ...]], missing: Mapping[str, tuple[int, ...]]
                 ) -> dict[str, str]:
    """For unexpected keys, the missing name each probably means (both given with their shapes).

    A key that the most common prefix change turns into a missing name maps to it; otherwise a missing
    name of the same shape that differs in exactly one dotted component (``bn1`` for ``norm1``, a typo)
    is suggested, the closest such component by :mod:`difflib`'s ratio. Linear in the number of names.
    """
    import difflib

    out: dict[str, str] = {}
    changes = _prefix_changes(list(unexpected), list(missing))
    if changes:
        (extra, lacking), _ = changes.most_common(1)[0]
        for key in unexpected:
            if key.startswith(extra) and lacking + key[len(extra):] in missing:
                out[key] = lacking + key[len(extra):]
    index: dict[tuple[str, ...], list[str]] = {}
    for name in missing:
        parts = name.split(".")
        for i in range(len(parts)):
            index.setdefault((str(i), *parts[:i], "*", *parts[i + 1:]), []).append(name)
    for key, shape in unexpected.items():
        if key in out:
            continue
        parts = key.split(".")
        best, best_ratio = None, 0.0
        for i, part in enumerate(parts):
            for name in index.get((str(i), *parts[:i], "*", *parts[i + 1:]), ()):
                if missing[name] != tuple(shape):
                    continue
                ratio = difflib.SequenceMatcher(None, part, name.split(".")[i]).ratio()
                if ratio > best_ratio:
                    best, best_ratio = name, ratio
        if best is not None:
            out[key] = best
    return out


def _prefix_hint(unexpected: Sequence[str], missing: Sequence[str]) -> tuple[str, ...]:
    """A --weights-map rule when one prefix change explains at least half of the unexpected keys."""
    changes = _prefix_changes(unexpected, missing)
    if not changes:
        return ()
    (extra, lacking), count = changes.most_common(1)[0]
    if count * 2 < len(unexpected) or count < 2:
        return ()
    rule = f"strip:{extra}" if extra else f"'^=>{lacking}'"
    what = f"start with `{extra}`" if extra else f"lack the prefix `{lacking}`"
    return (f"{count} checkpoint keys {what}; try --weights-map {rule}",)


def load_weights(graph: Graph, path: str | os.PathLike, *, rules: Sequence[str] = (), allow_missing: bool = False,
                 seed: int = 0) -> BindResult:
    """Read ``path``, rename its keys by ``rules``, and bind it strictly to ``graph``.

    Names, shapes and dtypes are checked from the file's headers first: a file that disagrees with the network is
    reported without reading any tensor data, and only the tensors the network uses are read.
    """
    parsed = [Rename.parse(r) for r in rules]  # a malformed rule is reported before the file is read
    headers = read_headers(path)
    if headers is None:
        tensors = read_checkpoint(path)
        return bind(graph, rename(tensors, parsed) if parsed else tensors, allow_missing=allow_missing, seed=seed,
                    source=str(path))
    declared = rename({name: (name, h) for name, h in headers.items()}, parsed)
    expected = {name: spec for name, spec, _ in graph.weight_specs()}
    placeholders = {new: np.broadcast_to(np.zeros((), h.dtype), h.shape) for new, (_, h) in declared.items()}
    if any(new not in expected and not new.endswith(IGNORED_SUFFIXES) for new in declared) or \
            any(h.shape != expected[new].shape or h.dtype.kind not in "fiu"
                for new, (_, h) in declared.items() if new in expected) or \
            (not allow_missing and any(name not in declared for name in expected)):
        bind(graph, placeholders, allow_missing=allow_missing, seed=seed, source=str(path))  # raises the report
    wanted = {old: new for new, (old, _) in declared.items() if new in expected}
    values = read_checkpoint(path, names=set(wanted))
    tensors = {new: values[old] if old in values else placeholders[new] for new, (old, _) in declared.items()}
    return bind(graph, tensors, allow_missing=allow_missing, seed=seed, source=str(path))


# ----------------------------------------------------------------------------- writing
def write_checkpoint(path: str | os.PathLike, tensors: Mapping[str, np.ndarray]) -> None:
    """Write tensors atomically as .safetensors (default) or .npz, by suffix.

    The bytes depend only on the tensors (names, dtypes, shapes, values) and their order.
    """
    from .files import write_bytes, write_with

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in WRITABLE:
        raise UsageError(f"{path}: weights are exported as .safetensors or .npz")
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    if suffix == ".npz":  # numpy stamps every member with a fixed date: the bytes are reproducible
        write_with(p, lambda f: np.savez(f, **arrays))
        return
    try:
        from safetensors.numpy import save
    except ImportError:
        raise WeightsError(f"{path}: writing .safetensors needs the `safetensors` package: pip install "
                           "safetensors (or export .npz)") from None
    data = save(arrays, metadata={"format": "pt"})  # "pt": torch's safetensors loaders accept it unchanged
    write_bytes(p, data)
