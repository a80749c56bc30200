"""Input preprocessing declared on a network's ``input`` and recorded in the ONNX metadata.

``input image: 3x224x224 preprocess=imagenet`` or explicit options::

    input image: 3x224x224 resize=256 mean=(0.485, 0.456, 0.406) std=(0.229, 0.224, 0.225) order=rgb

* ``resize=N``: scale the image so its shorter side is N (bilinear, as torchvision's ``Resize(N)`` on a
  PIL image), then centre-crop to the input's HxW. Without ``resize`` the image is resized to HxW directly.
* ``scale=S``: pixel values are divided by S (default 255), so they lie in [0, 1].
* ``mean=(...)``, ``std=(...)``: per-channel normalisation after scaling: (x / S - mean) / std.
* ``order=rgb|bgr``: channel order (default rgb). A 1-channel input reads images as grayscale.
* ``preprocess=imagenet``: resize = round(H * 256 / 224), ImageNet mean/std, rgb (torchvision's recipe).

The same record (``netdsl.inputs`` in the ONNX metadata, JSON) lets an app that embeds only the
``.onnx`` file reproduce the preprocessing. Read back from an ``.onnx`` file (which may come from
anywhere), a malformed record is an :class:`InputError` that names the metadata: it says how images
must be normalised, so guessing would give wrong predictions without a word.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import NetdslError
from .lazy import lazy_import
from .text import plain

if TYPE_CHECKING:  # numpy is imported by `load`: checking a network must not pay for it
    import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
OPTIONS = ("preprocess", "resize", "scale", "mean", "std", "order")


class InputError(NetdslError):
    """An input file or array does not fit the network's input."""


@dataclass(frozen=True, slots=True)
class Preprocess:
    """How to turn an image file into one CxHxW float32 array for an input."""

    channels: int
    height: int
    width: int
    resize: int | None = None
    scale: float = 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    order: str = "rgb"

    @classmethod
    def from_options(cls, shape: tuple[int, ...], options: dict[str, object]) -> Preprocess:
        """Validate a network input's options; raises ValueError with a user-facing message."""
        if len(shape) != 3:
            if options:
                raise ValueError("preprocessing options need an image input (CxHxW)")
            return cls(0, 0, 0)
        c, h, w = shape
        opts = dict(options)
        unknown = [k for k in opts if k not in OPTIONS]
        if unknown:
            raise ValueError(f"unknown input option `{unknown[0]}` (options: {', '.join(OPTIONS)})")
        kw: dict[str, object] = {}
        preset = opts.pop("preprocess", None)
        if preset is not None:
            if preset != "imagenet":
                raise ValueError(f"unknown preprocess preset `{preset}` (presets: imagenet)")
            if c != 3:
                raise ValueError("preprocess=imagenet needs a 3-channel input")
            kw.update(resize=round(min(h, w) * 256 / 224), mean=IMAGENET_MEAN, std=IMAGENET_STD)
        if "resize" in opts:
            r = opts.pop("resize")
            if not isinstance(r, int) or r < max(h, w) and r < min(h, w):
                raise ValueError(f"resize must be an integer at least the crop size {min(h, w)}, got {r}")
            kw["resize"] = r
        if "scale" in opts:
            s = opts.pop("scale")
            if not isinstance(s, (int, float)) or s <= 0:
                raise ValueError(f"scale must be a positive number, got {s}")
            kw["scale"] = float(s)
        for key in ("mean", "std"):
            if key in opts:
                v = opts.pop(key)
                v = (v,) if isinstance(v, (int, float)) else v
                if not isinstance(v, tuple) or len(v) not in (1, c) or not all(isinstance(x, (int, float)) for x in v):
                    raise ValueError(f"{key} needs 1 or {c} numbers, got {v}")
                if key == "std" and any(x == 0 for x in v):
                    raise ValueError("std must not contain 0")
                kw[key] = tuple(float(x) for x in v)
        if "order" in opts:
            o = opts.pop("order")
            if o not in ("rgb", "bgr"):
                raise ValueError(f"order must be rgb or bgr, got {o}")
            kw["order"] = o
        return cls(c, h, w, **kw)

    def to_json(self) -> dict:
        return {"resize": self.resize, "scale": self.scale, "mean": list(self.mean), "std": list(self.std),
                "order": self.order}

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """Read and preprocess one image file into a CxHxW float32 array."""
        import numpy as np

        Image = _pillow()
        try:
            with Image.open(path) as img:
                img = img.convert("L" if self.channels == 1 else "RGB")
                img.load()
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise InputError(f"{path}: not a readable image ({e})") from None
        if self.channels not in (1, 3):
            raise InputError(f"{path}: images can feed 1- or 3-channel inputs, this input has {self.channels}")
        if self.resize is not None:
            w0, h0 = img.size
            if w0 <= h0:  # torchvision: the shorter side becomes exactly `resize`, the other is truncated
                size = (self.resize, int(self.resize * h0 / w0))
            else:
                size = (int(self.resize * w0 / h0), self.resize)
            img = img.resize(size, Image.BILINEAR)
            img = _center_crop(img, self.height, self.width)
        else:
            img = img.resize((self.width, self.height), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        if self.order == "bgr":
            arr = arr[::-1]
        arr = arr / np.float32(self.scale)
        mean = np.asarray(self.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(-1, 1, 1)
        return np.ascontiguousarray((arr - mean) / std, dtype=np.float32)


def declared_preprocessing(text: str | None, model: str,
                           inputs: Mapping[str, tuple[int | None, ...]]) -> dict[str, Preprocess]:
    """The preprocessing an ``.onnx`` file's ``netdsl.inputs`` metadata (``text``) declares, by input name.

    ``inputs``: the model's inputs and their shapes without the batch dimension. No metadata: ``{}``.
    Anything malformed (not JSON, not a list of records, a name that is not a string or not an input of
    the model, a shape that is not a list of positive integers or disagrees with the input, an invalid
    option) raises InputError naming ``model`` and the metadata.
    """
    if text is None:
        return {}

    def malformed(why: str) -> InputError:
        return InputError(f"{plain(model, 200)}: the model's `netdsl.inputs` metadata is malformed: {why}. It "
                          "declares how images are preprocessed, so netdsl does not guess: fix or remove it, or "
                          "feed .npy or .npz arrays")

    def shown(value: object) -> str:
        return plain(json.dumps(value), 60)

    try:
        records = json.loads(text)
    except (ValueError, RecursionError):
        raise malformed("not valid JSON") from None
    if not isinstance(records, list):
        raise malformed(f"expected a list of input records, got {shown(records)}")
    out: dict[str, Preprocess] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise malformed(f"record {i} is {shown(rec)}, not an object")
        name, shape = rec.get("name"), rec.get("shape")
        if not isinstance(name, str):
            raise malformed(f"record {i} has the name {shown(name)}, not a string")
        where = f"input `{plain(name, 200)}`"
        if name not in inputs:
            raise malformed(f"{where} is not an input of the model")
        if not isinstance(shape, list) or not all(type(d) is int and d > 0 for d in shape):
            raise malformed(f"{where} has the shape {shown(shape)}, not a list of positive integers")
        want = inputs[name]
        if len(shape) != len(want) or any(d is not None and d != v for d, v in zip(want, shape, strict=True)):
            dims = "x".join("?" if d is None else str(d) for d in want)
            raise malformed(f"{where} has the shape {shown(shape)}, but the model's input is {dims}")
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in rec.items() if k not in ("name", "shape")}
        try:
            out[name] = Preprocess.from_options(tuple(shape), options)
        except (ValueError, TypeError) as e:
            raise malformed(f"{where}: {plain(e, 200)}") from None
    return out


def _center_crop(img, height: int, width: int):
    """torchvision's CenterCrop: offsets int(round((W - w) / 2.0)); pads with zeros when too small."""
    w0, h0 = img.size
    if w0 < width or h0 < height:
        Image = _pillow()
        canvas = Image.new(img.mode, (max(w0, width), max(h0, height)))
        canvas.paste(img, ((max(w0, width) - w0) // 2, (max(h0, height) - h0) // 2))
        img, (w0, h0) = canvas, canvas.size
    left = int(round((w0 - width) / 2.0))
    top = int(round((h0 - height) / 2.0))
    return img.crop((left, top, left + width, top + height))


def _pillow():
    return lazy_import("PIL.Image", error=InputError,
                       message="reading images needs Pillow: pip install \"netdsl[image]\"")


def is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_SUFFIXES)


def image_files(spec: str) -> list[Path]:
    """One image, a folder of images (sorted), or a comma-separated list."""
    out: list[Path] = []
    for part in spec.split(","):
        p = Path(part)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and is_image(q.name))
            if not found:
                raise InputError(f"{p}: folder holds no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...)")
            out.extend(found)
        else:
            out.append(p)
    return out
