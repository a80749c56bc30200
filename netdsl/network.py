"""The public Python API: ``netdsl.load(...)`` returns a checked :class:`Network`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .analysis import Summary, summarize
from .elaborate import Elaborator
from .errors import Diagnostic, UsageError
from .graph import Graph
from .loader import choose_network, load_program, read
from .lower import DEFAULT_OPSET, MIN_OPSET, lower, lower_model, max_opset
from .version import __version__

if TYPE_CHECKING:  # numpy and onnx are imported when first needed: `netdsl check` never needs them
    import numpy as np
    import onnx


class Network:
    """A parsed and checked network: shapes inferred, names resolved, costs known."""

    def __init__(self, graph: Graph, path: str, args: Mapping[str, int | float] | None = None,
                 files: tuple[str, ...] = ()):
        self.graph = graph
        self.path = path
        # as loaded: the arguments and the files read (main file first), the compiled-model cache's key
        self.args = None if args is None else dict(args)
        self.files = tuple(files)

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def warnings(self) -> list[Diagnostic]:
        return list(self.graph.warnings)

    def summary(self) -> Summary:
        """Per-layer output shapes, parameters, MACs, activation memory and receptive fields."""
        return summarize(self.graph)

    def initial_weights(self, seed: int = 0) -> dict[str, np.ndarray]:
        from .weights import initial_weights

        return initial_weights(self.graph, seed)

    def to_onnx(self, opset: int = DEFAULT_OPSET, seed: int = 0,
                weights: Mapping[str, np.ndarray] | None = None, dtype: str = "fp32",
                keep_io_fp32: bool = False, fold_bn: bool = False) -> onnx.ModelProto:
        """Lower to an ONNX model.

        ``weights`` (e.g. from :meth:`load_weights`) defaults to the deterministic initialisation from
        ``seed``. ``dtype="fp16"`` emits a float16 model; ``keep_io_fp32`` keeps its inputs and outputs fp32.
        ``fold_bn`` folds each bn into the conv before it (:func:`netdsl.optimize.fold_batchnorm`, in fp32).
        """
        check_opset(opset)
        if dtype not in ("fp32", "fp16"):
            raise UsageError(f"--dtype must be fp32 or fp16, got {dtype}")
        if weights is None:
            model = lower_model(self.graph, opset, seed=seed, version=__version__).to_proto()
        else:
            from .checkpoint import bind

            # strict, like --weights: a missing, extra or misshapen tensor is an error, not a broken model
            weights = bind(self.graph, weights, source="the weights given").weights
            model = lower(self.graph, weights, opset, version=__version__)
        if fold_bn or dtype == "fp16":
            from .optimize import optimize

            model = optimize(model, fold_bn=fold_bn, fp16=dtype == "fp16", keep_io_fp32=keep_io_fp32)
        return model

    def quantize(self, calibration, *, weights: Mapping[str, np.ndarray] | None = None, seed: int = 0, **options):
        """Compile to fp32 and quantize to int8 with ``calibration`` (an image folder, .npy/.npz path, array,
        mapping of input name to array, or ``"random"``); ``options`` as :func:`netdsl.quantize.quantize`
        (``target``, ``method``, ``samples``, ``exclude``, ``budget``). Returns a
        :class:`netdsl.quantize.Quantized` (``.model``, ``.layers``, ``.output_error``, ...)."""
        from .quantize import quantize

        return quantize(self.to_onnx(seed=seed, weights=weights), calibration, seed=seed, **options)

    def load_weights(self, path: str | os.PathLike, rules: tuple[str, ...] = (), allow_missing: bool = False,
                     seed: int = 0) -> dict[str, np.ndarray]:
        """Read a checkpoint (.safetensors, .npz, .onnx, .pt) and bind it strictly to this network's weights."""
        from .checkpoint import load_weights

        return load_weights(self.graph, path, rules=rules, allow_missing=allow_missing, seed=seed).weights

    def weight_table(self) -> list[dict]:
        """Every weight the network expects: name, shape, dtype, kind (param/buffer), layer and location."""
        return [{"name": name, "shape": list(spec.shape), "dtype": "float32", "kind": spec.kind, "layer": node.name,
                 "op": node.op.name, "location": node.location} for name, spec, node in self.graph.weight_specs()]

    def session(self, engine: str = "ort", device: str = "cpu", **options):
        """Compile (or take from the compiled-model cache) and prepare on an engine:
        ``net.session().run(image=batch)``."""
        from .session import Session

        return Session(self.compiled_for(options), engine=engine, device=device, **options)

    def compiled(self, opset: int = DEFAULT_OPSET, seed: int = 0, **options):
        """The compiled model an engine prepares (a :class:`netdsl.engines.ModelSource`), taken from the
        compiled-model cache (:mod:`netdsl.cache`) when it holds it, else compiled and cached. ``options``
        as :meth:`to_onnx`; the result is byte for byte the serialised :meth:`to_onnx`."""
        from . import cache
        from .session import _from_proto

        material = None
        if cache.enabled() and self.args is not None and self.files:
            main = cache.file_sha256_or_none(self.files[0])
            if main is not None:
                material = cache.model_material(main=self.files[0], main_sha256=main, path=self.path,
                                                network=self.name, args=self.args, seed=seed, opset=opset, **options)
                hit = cache.ModelCache().get(material)
                if hit is not None:
                    return hit[0]
        proto = self.to_onnx(opset, seed, **options)
        data = proto.SerializeToString()
        source = _from_proto(proto, self.name, data=data)
        if material is not None:
            cache.ModelCache().put(material, data, source, files=self.files, source_sha256=self.graph.source_hash)
        return source

    def compiled_for(self, options: dict):
        """This network compiled for a Session given ``options`` (the compile ones are taken out of them);
        itself when weights are given in memory (compiled by the Session, not cached)."""
        if options.get("weights") is not None:
            return self
        opset = options.pop("opset", None) or DEFAULT_OPSET
        return self.compiled(opset, options.pop("seed", 0), **dict(options.pop("compile_options", None) or {}))

    def save(self, path: str | os.PathLike, opset: int = DEFAULT_OPSET, seed: int = 0,
             weights: Mapping[str, np.ndarray] | None = None, external_data: str | bool = "auto",
             **options) -> list[str]:
        """Compile and write the ONNX model atomically; returns the files written. ``options`` as :meth:`to_onnx`."""
        from .files import save_model

        if options.get("dtype", "fp32") == "fp32" and not options.get("fold_bn") and \
                set(options) <= {"dtype", "keep_io_fp32", "fold_bn"}:
            # Nothing rewrites the lowered model: stream it to the file, computing weights as they are written.
            check_opset(opset)
            if weights is not None:  # strict, as in to_onnx: a wrong tensor is an error, not a broken model
                from .checkpoint import bind

                weights = bind(self.graph, weights, source="the weights given").weights
            return save_model(lower_model(self.graph, opset, weights=weights, seed=seed, version=__version__),
                              path, external_data)
        return save_model(self.to_onnx(opset, seed, weights, **options), path, external_data)


def check_opset(opset: int) -> None:
    import onnx

    hi = max_opset()
    if not MIN_OPSET <= opset <= hi:
        raise UsageError(f"--opset must be between {MIN_OPSET} and {hi} (the newest this onnx {onnx.__version__} "
                         f"supports), got {opset}")


def load(path_or_source: str | os.PathLike, network: str | None = None,
         args: Mapping[str, int | float] | None = None) -> Network:
    """Parse, expand and check a .net program.

    ``path_or_source``: a path to a .net file, or .net source text. ``network`` picks one network
    when the file has several; ``args`` overrides network parameters (``{"classes": 10}``).
    Raises a :class:`~netdsl.errors.NetdslError` subclass listing every problem found.
    """
    text, shown, base = read(path_or_source)
    program = load_program(text, shown, base, keep_going=True)
    net = choose_network(program, network)
    graph = Elaborator(program.blocks, program).network(net, dict(args or {}), program.source_hash)
    return Network(graph, shown, dict(args or {}), program.files)
