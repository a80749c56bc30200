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

__all__ = ["load", "Network", "NetdslError", "NetdslSyntaxError", "SemanticError", "WeightsError", "EngineError",
           "UsageError", "__version__"]
