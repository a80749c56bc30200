"""Weight files: reading checkpoints, binding them strictly to a network, and writing them.

Formats (chosen by suffix): ``.safetensors`` (recommended), ``.npz``, ``.onnx`` (its initializers),
and PyTorch ``.pt``/``.pth``/``.bin`` checkpoints, read with ``torch.load(weights_only=True)`` so a
file that tries to run code is refused (PyTorch is an optional extra: ``pip install "netdsl[torch]"``).

Binding is strict: missing, unexpected and shape-mismatched entries are all listed in one error,
each with the expected shape and the .net location of the layer that wants it. Nothing is silently
re-initialised; ``allow_missing`` makes partial loading explicit (missing tensors keep their
deterministic initial values and are listed as warnings).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import Diagnostic, WeightsError
from .graph import Graph
from .ops import fmt_shape
from .weights import initial_weights

IGNORED_SUFFIXES = (".num_batches_tracked",)
FORMATS = {".safetensors": "safetensors", ".npz": "npz", ".onnx": "onnx", ".pt": "torch", ".pth": "torch",
           ".bin": "torch", ".ckpt": "torch"}


# ----------------------------------------------------------------------------- reading
def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a weight file, by name, as numpy arrays. Raises WeightsError."""
    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise WeightsError(f"{path}: unknown weight format `{p.suffix}`; use one of "
                           + ", ".join(sorted(FORMATS)))
    if not p.is_file():
        raise WeightsError(f"{path}: no such file" if not p.exists() else f"{path}: not a file")
    try:
        return {"safetensors": _read_safetensors, "npz": _read_npz, "onnx": _read_onnx, "torch": _read_torch}[fmt](p)
    except WeightsError:
        raise
    except MemoryError:
        raise WeightsError(f"{path}: out of memory while reading") from None
    except Exception as e:  # noqa: BLE001 - each reader's library raises its own types for corrupt files
        raise WeightsError(f"{path}: not a readable {fmt} file ({type(e).__name__}: {str(e)[:200]})") from None


def _read_safetensors(p: Path) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise WeightsError("reading .safetensors needs the `safetensors` package: pip install safetensors") from None
    try:
        return dict(load_file(str(p)))
    except (TypeError, ValueError) as e:
        if "bfloat16" in str(e) or "bf16" in str(e).lower():
            return _read_safetensors_bf16(p)
        raise


def _read_safetensors_bf16(p: Path) -> dict[str, np.ndarray]:
    """bfloat16 tensors have no numpy dtype: widen them to float32 through the raw header."""
    import json
    import struct

    with open(p, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            f.seek(base + start)
            raw = f.read(end - start)
            dtype = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "BF16": "<u2",
                     "U8": "u1", "I8": "i1", "BOOL": "?"}[info["dtype"]]
            arr = np.frombuffer(raw, dtype=dtype).reshape(info["shape"])
            if info["dtype"] == "BF16":
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            out[name] = arr
        return out


def _read_npz(p: Path) -> dict[str, np.ndarray]:
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _read_onnx(p: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(p), load_external_data=True)
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _read_torch(p: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise WeightsError(f"{p}: reading PyTorch checkpoints needs PyTorch (pip install \"netdsl[torch]\"); or "
                           "convert it where PyTorch is installed: safetensors.torch.save_file(state_dict, "
                           "'model.safetensors')") from None
    import pickle

    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(f"{p}: refused: the checkpoint holds Python objects beyond tensors, and loading it "
                           f"would run code from the file ({str(e).splitlines()[0][:160]}). Save only the "
                           "state_dict, or convert it to safetensors where you trust it") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{p}: holds a {type(obj).__name__}, not a state_dict of tensors")
    out = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu()
            out[str(k)] = (v.float() if v.dtype == torch.bfloat16 else v).numpy()
    return out


# ----------------------------------------------------------------------------- renaming
@dataclass(frozen=True)
class Rename:
    """One ``--weights-map`` rule: ``strip:PREFIX`` or a regex ``FROM=>TO`` applied to checkpoint keys."""

    pattern: re.Pattern
    replacement: str
    text: str

    @classmethod
    def parse(cls, rule: str) -> Rename:
        if rule.startswith("strip:"):
            return cls(re.compile("^" + re.escape(rule[6:])), "", rule)
        src, sep, dst = rule.partition("=>")
        if not sep:
            raise WeightsError(f"--weights-map {rule!r}: expected strip:PREFIX or REGEX=>REPLACEMENT")
        try:
            return cls(re.compile(src), dst, rule)
        except re.error as e:
            raise WeightsError(f"--weights-map {rule!r}: bad regular expression ({e})") from None

    def apply(self, key: str) -> str:
        return self.pattern.sub(self.replacement, key)


def rename(tensors: Mapping[str, np.ndarray], rules: Sequence[Rename | str]) -> dict[str, np.ndarray]:
    parsed = [r if isinstance(r, Rename) else Rename.parse(r) for r in rules]
    out: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    for key, value in tensors.items():
        new = key
        for r in parsed:
            new = r.apply(new)
        if new in out:
            raise WeightsError(f"--weights-map maps both `{origin[new]}` and `{key}` to `{new}`")
        out[new], origin[new] = value, key
    return out


# ----------------------------------------------------------------------------- binding
@dataclass(frozen=True)
class BindResult:
    weights: dict[str, np.ndarray]
    missing: tuple[str, ...]  # initialised from the seed because allow_missing was given
    ignored: tuple[str, ...]  # e.g. num_batches_tracked


def bind(graph: Graph, tensors: Mapping[str, np.ndarray], *, allow_missing: bool = False, seed: int = 0,
         source: str = "checkpoint") -> BindResult:
    """Match checkpoint tensors to the network's weights, strictly. Raises WeightsError listing every problem."""
    problems: list[Diagnostic] = []
    specs = graph.weight_specs()
    expected = {name: (spec, node) for name, spec, node in specs}
    ignored = tuple(k for k in tensors if k.endswith(IGNORED_SUFFIXES) and k not in expected)
    out: dict[str, np.ndarray] = {}
    missing, mismatched = [], 0
    for name, (spec, node) in expected.items():
        where = f"{node.op.name} `{node.name}`"
        if name not in tensors:
            missing.append(name)
            if not allow_missing:
                problems.append(Diagnostic("error", f"missing `{name}` ({fmt_shape(spec.shape)}) for {where}",
                                           node.span, node.trace[:1]))
            continue
        value = np.asarray(tensors[name])
        problem = None
        if tuple(value.shape) != spec.shape:
            problem = f"`{name}` is {fmt_shape(value.shape) or 'a scalar'}, but {where} wants {fmt_shape(spec.shape)}"
        elif value.dtype.kind not in "fiu":
            problem = f"`{name}` has dtype {value.dtype}, not a number type"
        elif value.dtype.kind == "f" and not np.isfinite(value).all():
            problem = f"`{name}` holds NaN or infinite values"
        if problem:
            mismatched += 1
            problems.append(Diagnostic("error", problem, node.span, node.trace[:1]))
            continue
        out[name] = np.ascontiguousarray(value, dtype=np.float32)
    unexpected = sorted(k for k in tensors if k not in expected and k not in ignored)
    for k in unexpected:
        shape = fmt_shape(np.shape(tensors[k])) or "scalar"
        problems.append(Diagnostic("error", f"unexpected `{k}` ({shape}): the network has no such weight"
                                   + _closest(k, list(expected)), None))
    if problems:
        n_missing = 0 if allow_missing else len(missing)
        head = Diagnostic("error", f"{source} and network `{graph.name}` disagree: {n_missing} missing, "
                                   f"{len(unexpected)} unexpected, {mismatched} mismatched"
                                   + ("" if allow_missing or not missing else " (--allow-missing accepts missing)"))
        raise WeightsError(diagnostics=[head, *problems])
    if missing:
        init = initial_weights_for(graph, missing, seed)
        out.update(init)
    return BindResult(out, tuple(missing), ignored)


def initial_weights_for(graph: Graph, names: Sequence[str], seed: int) -> dict[str, np.ndarray]:
    wanted = set(names)
    return {k: v for k, v in initial_weights(graph, seed).items() if k in wanted}


def _closest(name: str, candidates: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.8)
    return f"; did you mean `{close[0]}`? (--weights-map renames keys)" if close else ""


def load_weights(graph: Graph, path: str | os.PathLike, *, rules: Sequence[str] = (), allow_missing: bool = False,
                 seed: int = 0) -> BindResult:
    """Read ``path``, rename its keys by ``rules``, and bind it strictly to ``graph``."""
    tensors = read_checkpoint(path)
    if rules:
        tensors = rename(tensors, rules)
    return bind(graph, tensors, allow_missing=allow_missing, seed=seed, source=str(path))


# ----------------------------------------------------------------------------- writing
def write_checkpoint(path: str | os.PathLike, tensors: Mapping[str, np.ndarray]) -> None:
    """Write tensors atomically as .safetensors (default) or .npz, by suffix."""
    from .files import atomic_open

    p = Path(path)
    suffix = p.suffix.lower()
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    if suffix == ".npz":
        with atomic_open(p) as f:
            np.savez(f, **arrays)
        return
    if suffix != ".safetensors":
        raise WeightsError(f"{path}: weights are exported as .safetensors or .npz")
    from safetensors.numpy import save

    data = save(arrays, metadata={"format": "pt"})  # "pt": torch's safetensors loaders accept it unchanged
    with atomic_open(p) as f:
        f.write(data)
