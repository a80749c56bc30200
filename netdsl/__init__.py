"""netdsl: a declarative network compiler for convolutional networks.

Pipeline: grammar (grammars/netdsl.lark) -> syntax tree (syntax) -> checked graph (elaborate)
-> analysis -> ONNX (lower) -> engines. ``netdsl.load`` is the entry point.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    EngineError,
    NetdslError,
    NetdslSyntaxError,
    SemanticError,
    UsageError,
    WeightsError,
)
from .network import Network, load  # noqa: E402


def __getattr__(name: str):
    if name == "Session":  # imported lazily: engines are not needed to check a network
        from .session import Session

        return Session
    raise AttributeError(name)

__all__ = ["load", "Network", "NetdslError", "NetdslSyntaxError", "SemanticError", "WeightsError", "EngineError",
           "UsageError", "Session", "__version__"]
