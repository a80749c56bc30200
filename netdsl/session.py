"""The embedding API: a compiled network, prepared on one engine and device, that runs feeds.

    import netdsl
    net = netdsl.load("networks/resnet50.net")
    sess = net.session(engine="ort", device="cpu")        # or netdsl.Session("resnet50.onnx")
    logits = sess.run(image=batch)["logits"]

``Session.run`` checks the feeds (names, dtypes, ranks, fixed sizes) in a few microseconds and then
calls the engine directly: its overhead over the raw runtime call is measured by
``tools/bench_overhead.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from .engines import EngineOptions, ModelSource, TensorSpec, check_device, get_engine
from .errors import NetdslError, UsageError
from .preprocess import InputError, Preprocess, declared_preprocessing
from .text import plain


def model_source(model, *, network: str | None = None, args: Mapping | None = None, opset: int | None = None,
                 seed: int = 0, weights=None, compile_options: Mapping | None = None,
                 loader: Callable | None = None) -> ModelSource:
    """A :class:`ModelSource` from a ModelSource, a Network, a .onnx path, an onnx.ModelProto, or (with ``loader``, e.g.
    :func:`netdsl.load`) a .net path/source. The runtime never imports the compiler: a Network is anything
    with ``graph`` and ``to_onnx``, and .net text is loaded by the ``loader`` the caller passes."""
    if isinstance(model, ModelSource):  # compiled already (e.g. taken from the compiled-model cache)
        return model
    if isinstance(model, (str, os.PathLike)) and str(model).endswith(".onnx"):
        return _onnx_file(str(model))
    if not _is_network(model) and not _is_model_proto(model):
        if loader is None:
            raise UsageError(f"{model}: a .net model is compiled by netdsl.Session or net.session(); this runtime "
                             "Session takes a loaded Network, a .onnx path or an onnx.ModelProto")
        model = loader(model, network=network, args=args)
    if _is_network(model):
        kwargs = dict(compile_options or {})
        if opset is not None:
            kwargs["opset"] = opset
        proto = model.to_onnx(seed=seed, weights=weights, **kwargs)
        return _from_proto(proto, model.name)
    return _from_proto(model, model.graph.name)


def _is_network(obj) -> bool:
    return hasattr(obj, "to_onnx") and hasattr(obj, "graph")


def _is_model_proto(obj) -> bool:
    return type(obj).__name__ == "ModelProto"


def _from_proto(proto, name: str, path: str | None = None, data: bytes | None = None) -> ModelSource:
    from onnx import TensorProto, helper

    def spec(v) -> TensorSpec:
        t = v.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type) if t.elem_type else np.dtype(np.float32)
        return TensorSpec(v.name, shape, np.dtype(dtype))

    name = plain(name, 200)  # a display name, from the file: never a terminal escape
    init = {i.name for i in proto.graph.initializer}
    inputs = tuple(spec(v) for v in proto.graph.input if v.name not in init)
    outputs = tuple(spec(v) for v in proto.graph.output)
    meta = {p.key: p.value for p in proto.metadata_props}
    locations = {}
    for node in proto.graph.node:
        where = node.doc_string.split("\n", 1)[0]
        if where:
            for out in node.output:
                locations[out] = where
    del TensorProto
    if path is None and data is None:
        data = proto.SerializeToString()
    return ModelSource(name, data, path, inputs, outputs, meta, locations)


def load_onnx(path: str, load_external_data: bool = True):
    """An ``onnx.ModelProto`` from a file; a missing or unreadable file is an InputError, not a traceback."""
    import onnx

    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        return onnx.load(path, load_external_data=load_external_data)
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise InputError(f"{path}: not a readable ONNX model ({type(e).__name__}: {str(e)[:200]})") from None


def _onnx_path(path: str) -> ModelSource:
    """A .onnx file left for the engine to read and describe: the fast path of a plain ``.onnx`` on ONNX Runtime,
    which neither imports onnx nor parses the protobuf in Python. ``inputs``, ``outputs``, ``metadata`` and the
    graph's name are filled in from the engine's session (:meth:`netdsl.engines.ort.OrtRunner.described`)."""
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    return ModelSource(Path(path).stem, None, path)


def _onnx_file(path: str) -> ModelSource:
    """A .onnx file, read once: the same bytes are parsed here (for its inputs and outputs) and handed to
    the engine, unless its weights live in other files (external data), when the engine reads the path."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    try:
        data = p.read_bytes()
        proto = onnx.load_from_string(data)
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise InputError(f"{path}: not a readable ONNX model ({type(e).__name__}: {str(e)[:200]})") from None
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    return _from_proto(proto, proto.graph.name or p.stem, path=path if external else None,
                       data=None if external else data)


class Session:
    """A model prepared on an engine and device.

    ``model``: a :class:`~netdsl.Network`, a path to a .net or .onnx file, .net source text, or an
    ``onnx.ModelProto``. Engine options: ``threads`` (default: physical cores), ``opt_level``
    (disable/basic/extended/all), ``save_optimized`` (path for the engine's optimised model).
    ``precision="int8"`` quantizes an fp32 model for the engine (:mod:`netdsl.quantize`) with
    ``calibration`` data (default: random inputs, meaningless for accuracy).
    """

    def __init__(self, model, engine: str = "ort", device: str = "cpu", *, threads: int | None = None,
                 opt_level: str = "all", save_optimized: str | None = None, network: str | None = None,
                 args: Mapping | None = None, seed: int = 0, weights=None, opset: int | None = None,
                 compile_options: Mapping | None = None, loader: Callable | None = None, **engine_options):
        start = time.perf_counter()
        # a plain .onnx on ONNX Runtime, with nothing that needs the ModelProto: ONNX Runtime reads the file and
        # describes the model (its inputs, outputs and metadata), so onnx is neither imported nor run over it
        calibration = engine_options.pop("calibration", None)  # precision="int8": netdsl.quantize's data
        int8 = engine_options.get("precision") == "int8"
        fast = (engine == "ort" and isinstance(model, (str, os.PathLike)) and str(model).endswith(".onnx")
                and not engine_options.get("extra_outputs") and not int8)
        self.source = _onnx_path(str(model)) if fast else \
            model_source(model, network=network, args=args, opset=opset, seed=seed, weights=weights,
                         compile_options=compile_options, loader=loader)
        if int8:  # quantized for the engine unless it is already (lazily imported: the quantizer is optional)
            from .quantize import int8_model

            q = int8_model(self.source.onnx_bytes, self.source.path, engine, calibration)
            self.source = self.source if q is None else _from_proto(q, self.source.name)
        self.compile_seconds = time.perf_counter() - start
        check_device(engine, device)
        self.options = EngineOptions(threads=threads, opt_level=opt_level, save_optimized=save_optimized,
                                     **engine_options)
        start = time.perf_counter()
        try:
            self.runner = get_engine(engine).prepare(self.source, device, self.options)
        except NetdslError:
            if fast:  # a file that is no ONNX model at all says so, as the ModelProto path does
                _onnx_file(str(model))
            raise
        if fast:
            self.source = self.runner.described(self.source)
        self.prepare_seconds = time.perf_counter() - start
        self.engine, self.device = engine, device
        self._inputs = {s.name: s for s in self.runner.inputs}

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.runner.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.runner.outputs

    @property
    def name(self) -> str:
        return self.source.name

    def preprocessing(self) -> dict[str, Preprocess]:
        """Each image input's declared preprocessing (from the model's ``netdsl.inputs`` metadata).

        Malformed metadata is an InputError naming it (see :func:`~netdsl.preprocess.declared_preprocessing`);
        an input it does not describe is resized to the input's HxW, without normalisation.
        """
        out = declared_preprocessing(self.source.metadata.get("netdsl.inputs"), self.name,
                                     {s.name: s.shape[1:] for s in self.inputs})
        for spec in self.inputs:
            if spec.name not in out and len(spec.shape) == 4 and None not in spec.shape[1:]:
                out[spec.name] = Preprocess(*spec.shape[1:])  # plain resize to HxW, no normalisation
        return out

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Raise InputError unless ``feeds`` has exactly the inputs, with the right dtype and shape."""
        if feeds.keys() != self._inputs.keys():
            extra = sorted(set(feeds) - set(self._inputs))
            if extra:
                raise InputError(f"unknown input `{plain(extra[0], 200)}`; the model expects {self._expected()}")
            lacking = sorted(set(self._inputs) - set(feeds))
            raise InputError(f"missing input `{plain(lacking[0], 200)}`; the model expects {self._expected()}")
        for name, value in feeds.items():
            spec = self._inputs[name]
            if not isinstance(value, np.ndarray):
                raise InputError(f"input `{plain(name, 200)}` must be a numpy array, got {type(value).__name__}; "
                                 f"expected {spec.describe()}")
            if value.dtype != spec.dtype:
                raise InputError(f"input `{plain(name, 200)}` has dtype {value.dtype}, expected {spec.describe()} "
                                 f"(convert with .astype(np.{spec.dtype.name}))")
            if value.ndim != len(spec.shape) or any(d is not None and d != v
                                                    for d, v in zip(spec.shape, value.shape, strict=True)):
                raise InputError(f"input `{plain(name, 200)}` has shape {'x'.join(map(str, value.shape))}, expected "
                                 f"{spec.describe()}")
            if value.size == 0:
                what = "holds no samples (batch 0)" if value.ndim and value.shape[0] == 0 else \
                    f"is empty (shape {'x'.join(map(str, value.shape))})"
                raise InputError(f"input `{plain(name, 200)}` {what}; feed at least one sample")

    def _expected(self) -> str:
        return ", ".join(s.describe() for s in self.inputs)

    def run(self, feeds: Mapping[str, np.ndarray] | None = None, /, **named: np.ndarray) -> dict[str, np.ndarray]:
        """Run on host arrays: ``sess.run(image=batch)`` or ``sess.run({"image": batch})``."""
        all_feeds = dict(feeds) if feeds else {}
        all_feeds.update(named)
        self.check_feeds(all_feeds)
        return self.runner.run(all_feeds)

    def describe(self) -> dict:
        return self.runner.describe()

    def random_feeds(self, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
        """A seeded random batch for every input (standard normal)."""
        rng = np.random.default_rng(seed)
        feeds = {}
        for spec in self.inputs:
            shape = tuple(batch if d is None else d for d in spec.shape)
            try:
                feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
            except MemoryError:
                raise InputError(f"out of memory at batch {batch} making a random input; try a smaller --batch") \
                    from None
        return feeds


__all__ = ["Session", "model_source", "InputError", "NetdslError"]
