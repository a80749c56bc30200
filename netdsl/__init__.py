"""netdsl: a declarative network compiler for convolutional networks.

Pipeline: grammar (grammars/netdsl.lark) -> syntax tree (syntax) -> checked graph (elaborate)
-> analysis -> ONNX (lower) -> engines. ``netdsl.load`` is the entry point.

``load`` and ``Network`` (the compiler) and ``Session`` (compiler and runtime) are imported on first
use, so ``import netdsl.session`` or ``netdsl.engines`` loads the runtime without the compiler.
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

_LAZY = {"load": "netdsl.network", "Network": "netdsl.network", "Session": "netdsl.api"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'netdsl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["load", "Network", "NetdslError", "NetdslSyntaxError", "SemanticError", "WeightsError", "EngineError",
           "UsageError", "Session", "__version__"]
