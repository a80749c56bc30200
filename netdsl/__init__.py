"""netdsl: a declarative network compiler for convolutional networks.

Pipeline: grammar (grammars/netdsl.lark) -> syntax tree (syntax) -> checked graph (elaborate)
-> analysis -> ONNX (lower) -> engines. ``netdsl.load`` is the entry point.

``load`` and ``Network`` (the compiler) and ``Session`` (compiler and runtime) are imported on first
use, so ``import netdsl.session`` or ``netdsl.engines`` loads the runtime without the compiler.
"""

from __future__ import annotations

from .errors import (
    EngineError,
    NetdslError,
    NetdslSyntaxError,
    SemanticError,
    UsageError,
    WeightsError,
)
from .version import __version__

_LAZY = ("load", "Network", "Session")


def __getattr__(name: str):
    if name in ("load", "Network"):
        from . import network as module
    elif name == "Session":
        from . import api as module
    else:
        raise AttributeError(f"module 'netdsl' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["load", "Network", "NetdslError", "NetdslSyntaxError", "SemanticError", "WeightsError", "EngineError",
           "UsageError", "Session", "__version__"]
