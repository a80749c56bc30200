"""``netdsl.Session``: the runtime :class:`~netdsl.session.Session` that also compiles .net paths and source.

The runtime side (:mod:`netdsl.session`, :mod:`netdsl.engines`) never imports the compiler; this module
joins the two for the public API by handing :func:`netdsl.load` to the session as its loader, and compiles
networks through the compiled-model cache (:mod:`netdsl.cache`).
"""

from __future__ import annotations

import os

from . import session
from .network import Network, load


class Session(session.Session):
    __doc__ = session.Session.__doc__

    def __init__(self, model, engine: str = "ort", device: str = "cpu", **options):
        options.setdefault("loader", load)
        if isinstance(model, (str, os.PathLike)) and not str(model).endswith(".onnx") \
                and options.get("weights") is None:
            model = options["loader"](model, network=options.pop("network", None), args=options.pop("args", None))
        if isinstance(model, Network):  # compiled through the compiled-model cache (netdsl.cache)
            model = model.compiled_for(options)
        super().__init__(model, engine, device, **options)
