"""Each engine answers its own doctor questions (Engine.doctor_pairs); netdsl.doctor only runs the probes."""

from __future__ import annotations

import sys
import types

from netdsl import doctor
from netdsl.engines import ENGINES, Engine
from netdsl.engines.ort import OrtEngine
from netdsl.engines.trt import TrtEngine

NO_GPU = {"present": False, "nvidia_smi": None, "libcuda": {"found": False}, "devices": []}
BARE = {"onnxruntime": {"installed": False}, "gpu": NO_GPU, "libraries": {}, "cuda_major": None,
        "tensorrt": {"installed": False}, "tensorrt_rtx": {"installed": False}, "cuda-python": {"installed": False}}


def test_onnxruntime_missing():
    pairs = OrtEngine.doctor_pairs(BARE)
    assert list(pairs) == ["ort:cpu", "ort:cuda", "ort:tensorrt"]
    assert pairs["ort:cpu"]["missing"] == ["the onnxruntime package"]
    assert pairs["ort:cuda"]["fix"] == ['pip install "netdsl[gpu]"']
    assert not any(p.get("probe") for p in pairs.values())


def test_cpu_build_of_onnxruntime_without_a_gpu():
    machine = {**BARE, "onnxruntime": {"installed": True, "version": "1.2.3", "providers": ["CPUExecutionProvider"],
                                       "all_distributions": [{"name": "onnxruntime", "version": "1.2.3"}]}}
    pairs = OrtEngine.doctor_pairs(machine)
    assert pairs["ort:cpu"]["probe"] == "run"
    cuda = pairs["ort:cuda"]
    assert cuda["probe"] is None
    assert cuda["missing"][0] == "CUDAExecutionProvider: the installed onnxruntime 1.2.3 is the CPU build"
    assert any(m.startswith("an NVIDIA GPU with its driver") for m in cuda["missing"])


def test_tensorrt_missing():
    pairs = TrtEngine.doctor_pairs(BARE)
    assert pairs["trt:cuda"]["missing"][:2] == ["the tensorrt package",
                                                "cuda-python (device memory for the TensorRT engine)"]
    assert pairs["trt:cuda"]["probe"] is None
    assert pairs["trt:build"]["missing"] == ["the tensorrt or tensorrt_rtx package"]


def test_the_report_asks_every_registered_engine(monkeypatch):
    class FakeEngine(Engine):
        def prepare(self, model, device, options):
            raise NotImplementedError

        @classmethod
        def doctor_pairs(cls, machine):
            return {"fake:cpu": {"missing": ["a fake accelerator"], "fix": ["install one"],
                                 "note": "gpu present" if machine["gpu"]["present"] else "no gpu"}}

    module = types.ModuleType("netdsl_test_fake_engine")
    module.FakeEngine = FakeEngine
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(ENGINES, "fake", (module.__name__, "FakeEngine", ("cpu",), "Fake"))
    monkeypatch.setitem(ENGINES, "gone", ("netdsl_test_missing_engine", "GoneEngine", ("cpu",), "Gone"))
    monkeypatch.delitem(ENGINES, "ort")
    monkeypatch.delitem(ENGINES, "trt")
    pairs = doctor.engine_pairs(BARE)
    assert pairs["fake:cpu"] == {"usable": False, "missing": ["a fake accelerator"], "fix": ["install one"],
                                 "note": "no gpu"}
    assert pairs["gone:cpu"]["missing"] == [
        "netdsl's Gone engine (netdsl_test_missing_engine) is not part of this netdsl installation"]
    assert list(pairs) == ["fake:cpu", "gone:cpu"]
