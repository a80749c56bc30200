"""`netdsl run`: compile (or load) a network, feed it, and show what it predicts.

Also reading ``--input NAME=FILE`` values (.npy, .npz, images, folders of images), which `netdsl compare`
shares.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..preprocess import InputError, image_files, is_image
from ..text import rich_safe
from .common import add_model_options, open_session, print_json


def read_inputs(session, specs: list[str] | None, batch: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds from ``--input`` values, or a seeded random batch of ``batch`` when none are given."""
    if not specs:
        return session.random_feeds(batch or 1, seed)
    names = [s.name for s in session.inputs]
    grouped: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            if len(names) != 1:
                raise UsageError(f"--input {spec}: say which input it feeds (NAME=FILE); inputs: {', '.join(names)}")
            name, path = names[0], spec
        if name not in names:
            raise InputError(f"--input {spec}: the model has no input `{name}`; it expects "
                             + ", ".join(s.describe() for s in session.inputs))
        grouped.setdefault(name, []).append(path)
    feeds = {}
    prep = None
    for name, paths in grouped.items():
        arrays = []
        for path in paths:
            if path.endswith(".npy"):
                arrays.append(_load_npy(path))
            elif path.endswith(".npz"):
                arrays.append(_load_npz(path, name))
            else:
                prep = prep or session.preprocessing()
                if name not in prep:
                    raise InputError(f"--input {name}={path}: `{name}` is not an image input")
                files = image_files(path)
                for f in files:
                    if not is_image(str(f)) and not f.is_dir():
                        raise InputError(f"{f}: not an .npy, .npz or image file")
                arrays.append(np.stack([prep[name].load(f) for f in files]))
        feeds[name] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    if batch is not None:
        for name, value in feeds.items():
            if value.shape[0] != batch:
                raise UsageError(f"--batch {batch} disagrees with --input {name}, which holds {value.shape[0]}")
    missing = [s.describe() for s in session.inputs if s.name not in feeds]
    if missing:
        raise InputError("no --input for " + ", ".join(missing))
    return feeds


def _load_npy(path: str) -> np.ndarray:
    """An ``.npy`` input; its header is checked against the file's size before any data is read (so a small
    file cannot declare a huge array), and pickled objects are refused."""
    import math

    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            try:
                version = fmt.read_magic(f)
                read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, _, dtype = read(f)
            except (ValueError, SyntaxError, TypeError, EOFError) as e:
                raise InputError(f"{path}: not a readable .npy file ({' '.join(str(e).split())[:100]})") from None
            if dtype.hasobject:
                raise InputError(f"{path}: refused: it holds pickled Python objects; save a numeric array")
            declared = math.prod(shape) * dtype.itemsize
            held = os.fstat(f.fileno()).st_size - f.tell()
            if declared != held:
                raise InputError(f"{path}: not a readable .npy file: it declares {declared:,} bytes of data "
                                 f"({'x'.join(map(str, shape))} {dtype}) but holds {held:,}")
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not an .npy file") from None
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{path}: not a readable .npy file ({e})") from None


def _load_npz(path: str, name: str) -> np.ndarray:
    """One array of an ``.npz`` input: the one named ``name``, or its only one. The archive's headers are checked
    first, as a weight file's are (:func:`netdsl.checkpoint.read_headers`)."""
    from ..checkpoint import read_headers

    read_headers(path)  # zip members and .npy headers agree with the file's size; no pickled objects
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if name in keys:
                return z[name]
            if len(keys) == 1:
                return z[keys[0]]
            raise InputError(f"{path}: holds {', '.join(keys) or 'no arrays'}; none is named `{name}`")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{path}: not a readable .npz file ({e})") from None


# ----------------------------------------------------------------------------- run
def output_report(name: str, value: np.ndarray, topk: int, labels: list[str] | None) -> dict:
    v = value.astype(np.float64, copy=False)
    rep = {"shape": list(value.shape), "dtype": str(value.dtype)}
    if value.size:
        rep.update(min=float(v.min()), max=float(v.max()), mean=float(v.mean()), std=float(v.std()))
    if value.ndim == 2 and value.shape[1] > 1 and topk > 0:
        probs = v if _is_probability(v) else _softmax(v)
        k = min(topk, value.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        rep["topk"] = [[{"index": int(i), "label": labels[i] if labels and i < len(labels) else None,
                         "probability": float(probs[n, i]), "score": float(v[n, i])} for i in row]
                       for n, row in enumerate(order)]
    return rep


def _is_probability(v: np.ndarray) -> bool:
    return bool(v.min() >= 0 and np.allclose(v.sum(axis=1), 1.0, atol=1e-3))


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def read_labels(path: str | None) -> list[str] | None:
    if path is None:
        return None
    try:
        return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise InputError(f"--labels {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--labels {path}: cannot read ({e})") from None


def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` as every netdsl output is written (:mod:`netdsl.files`); OutputError when it
    cannot be written (a folder, a full disk)."""
    from ..files import write_with

    write_with(path, lambda f: np.savez(f, **arrays))


def cmd_run(args: argparse.Namespace) -> int:
    if args.batch is not None and args.batch < 1:
        raise UsageError("--batch must be at least 1")
    labels = read_labels(args.labels)
    session = open_session(args)
    feeds = read_inputs(session, args.input, args.batch, args.seed)
    outputs = session.run(feeds)
    if args.save:
        save_npz(args.save, outputs)
    report = {"model": session.name, **session.describe(),
              "compile_seconds": session.compile_seconds, "prepare_seconds": session.prepare_seconds,
              "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feeds.items()},
              "outputs": {k: output_report(k, v, args.topk, labels) for k, v in outputs.items()}}
    if args.json:
        print_json(report)
        return 0
    _print_run(report, args.save)
    return 0


def _print_run(report: dict, saved: str | None) -> None:
    """The report as text; what comes from files (the model's names, labels, paths) is shown literally."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    console.print(f"{rich_safe(report['model'])} on {report['engine']}:{report['device']} "
                  f"({rich_safe(report['device_name'])}), prepared in {report['prepare_seconds'] * 1000:.0f} ms")
    for name, rep in report["outputs"].items():
        shape = "x".join(map(str, rep["shape"]))
        if "topk" in rep:
            for n, row in enumerate(rep["topk"]):
                table = Table(title=f"{rich_safe(name)} [{n}]: top {len(row)}", title_justify="left")
                table.add_column("rank", justify="right")
                table.add_column("class", justify="right")
                table.add_column("label")
                table.add_column("probability", justify="right")
                table.add_column("logit", justify="right")
                for r, item in enumerate(row, 1):
                    table.add_row(str(r), str(item["index"]), rich_safe(item["label"] or ""),
                                  f"{item['probability']:.4f}", f"{item['score']:.4f}")
                console.print(table)
        else:
            stats = "" if "min" not in rep else (f"min {rep['min']:.4g}  max {rep['max']:.4g}  "
                                                  f"mean {rep['mean']:.4g}  std {rep['std']:.4g}")
            console.print(f"{rich_safe(name)}: {shape} {rep['dtype']}  {stats}")
    if saved:
        console.print(f"saved every output to {rich_safe(saved)}")


def register(sub) -> None:
    p = sub.add_parser("run", help="run a network on inputs (images, .npy, .npz) or a random batch")
    add_model_options(p)
    p.add_argument("--input", action="append", metavar="NAME=FILE",
                   help="an input: .npy, .npz, an image, a folder of images, or a comma list (repeatable)")
    p.add_argument("--batch", type=int, metavar="N", help="batch size of the random input (default 1)")
    p.add_argument("--topk", type=int, default=5, help="classes to show for classifier outputs (default 5)")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line")
    p.add_argument("--save", metavar="OUT.npz", help="write every output to an .npz file")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_run)
