"""``netdsl.Session``: the runtime :class:`~netdsl.session.Session` that also compiles .net paths and source.

The runtime side (:mod:`netdsl.session`, :mod:`netdsl.engines`) never imports the compiler; this module
joins the two for the public API by handing :func:`netdsl.load` to the session as its loader.
"""

from __future__ import annotations

from . import session
from .network import load


class Session(session.Session):
    __doc__ = session.Session.__doc__

    def __init__(self, model, engine: str = "ort", device: str = "cpu", **options):
        options.setdefault("loader", load)
        super().__init__(model, engine, device, **options)
