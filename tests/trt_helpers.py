"""Real TensorRT builds in tests: TensorRT for RTX builds portable engines without a GPU.

The tests that use these import ``tensorrt_rtx`` explicitly (``pytest.importorskip``): datacenter
TensorRT, when also installed, builds only for a GPU that is present.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from netdsl.engines.trt import EngineCache, Profile, build_engine

SMALL = Profile(1, 2, 4)


def build_plan(model: onnx.ModelProto, tmp_path: Path, profile: Profile = SMALL, monitor=None) -> bytes:
    """The serialized engine TensorRT for RTX builds from ``model`` (EngineError when it rejects it)."""
    import tensorrt_rtx

    data = model.SerializeToString()
    plan, _ = build_engine(tensorrt_rtx, data, profile, EngineCache(tmp_path / "trt"), monitor=monitor)
    return plan
