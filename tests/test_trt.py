"""The TensorRT engine without a GPU: profiles, cache keys, the on-disk cache, op support, errors, and
real engine builds.

TensorRT for RTX (in the ``test`` extra on Linux x86-64) builds portable engines on the CPU, so the
build path runs here for real: TensorRT's ONNX parser, the strongly typed builder, optimisation
profiles, the progress monitor, ``netdsl build``, the engine cache under concurrent builders and
corruption. Running engines needs an NVIDIA GPU: tools/gpu_selftest.py does that on a GPU machine,
and the tests here that need one skip cleanly without it.
"""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import pytest
from helpers import cli_env, hide_modules, run_netdsl

import netdsl
from netdsl.engines.trt import (
    TRT_SUPPORTED_NEW_OPS,
    TRT_SUPPORTED_OPS,
    EngineCache,
    Profile,
    cache_key,
    parse_profile,
)
from netdsl.errors import EngineError, UsageError
from netdsl.ops import all_onnx_ops

ROOT = Path(__file__).resolve().parent.parent
HAS_TRT = any(importlib.util.find_spec(m) is not None for m in ("tensorrt", "tensorrt_rtx"))
HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
NEEDS_RTX = pytest.mark.skipif(not HAS_RTX, reason="needs TensorRT for RTX (optional package tensorrt-rtx-cu13)")


def _cuda_gpu() -> bool:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return False
    err, count = cudart.cudaGetDeviceCount()
    return int(err) == 0 and count > 0


@pytest.fixture(scope="module")
def gpu() -> bool:
    """TensorRT, cuda-python and an NVIDIA GPU are all here (probed when a test asks, not at import)."""
    return HAS_TRT and _cuda_gpu()


# ----------------------------------------------------------------------------- profiles
@pytest.mark.parametrize(("spec", "opt", "want"), [
    ("1..64", 32, Profile(1, 32, 64)),
    ("1..64", None, Profile(1, 64, 64)),
    ("8", None, Profile(8, 8, 8)),
    ("1,32,256", None, Profile(1, 256, 256)),
    (None, None, Profile(1, 32, 32)),
])
def test_parse_profile(spec, opt, want):
    assert parse_profile(spec, opt) == want


@pytest.mark.parametrize(("spec", "opt", "message"), [
    ("64..1", None, "need 1 <= MIN <= MAX"),
    ("0..4", None, "need 1 <= MIN <= MAX"),
    ("1..8", 16, "--opt-batch 16 must lie within --batch 1..8"),
    ("a..b", None, "expected N, MIN..MAX or a comma list"),
])
def test_parse_profile_errors(spec, opt, message):
    with pytest.raises(UsageError, match=message.replace(".", r"\.")):
        parse_profile(spec, opt)


def test_batch_outside_profile_names_the_built_range():
    p = Profile(1, 32, 64)
    p.check(1)
    p.check(64)
    with pytest.raises(EngineError) as e:
        p.check(128)
    assert "batch 128 is outside the engine's profile: it was built for batch 1..64" in str(e.value)
    assert "--batch 1..128" in str(e.value)


# ----------------------------------------------------------------------------- cache keys
def test_cache_key_depends_on_everything_the_engine_depends_on():
    base = dict(onnx_bytes=b"model", precision="fp32", profile=Profile(1, 32, 64), trt_version="11.4.0",
                gpu="NVIDIA H100", compute_capability="9.0")
    k = cache_key(**base)
    assert k == cache_key(**base)  # deterministic
    variants = [dict(onnx_bytes=b"model2"), dict(precision="fp16"), dict(profile=Profile(1, 16, 64)),
                dict(profile=Profile(1, 32, 128)), dict(trt_version="11.5.0"), dict(gpu="NVIDIA H200"),
                dict(compute_capability="8.9")]
    keys = {cache_key(**{**base, **v}) for v in variants}
    assert len(keys) == len(variants) and k not in keys


# ----------------------------------------------------------------------------- the on-disk cache
def test_cache_roundtrip_and_atomic_files(tmp_path):
    cache = EngineCache(tmp_path / "trt")
    with cache.lock("k"):
        assert cache.load("k") is None
        cache.store("k", b"PLAN" * 100, {"model": "m"})
    assert cache.load("k") == b"PLAN" * 100
    leftovers = [p.name for p in (tmp_path / "trt").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.parametrize("damage", ["truncate", "flip", "drop_meta", "garbage_meta"])
def test_corrupt_cache_entries_are_detected_and_removed(tmp_path, damage):
    cache = EngineCache(tmp_path)
    with cache.lock("k"):
        cache.store("k", bytes(range(256)) * 10, {})
    plan, meta = tmp_path / "k.plan", tmp_path / "k.json"
    if damage == "truncate":
        plan.write_bytes(plan.read_bytes()[:100])
    elif damage == "flip":
        data = bytearray(plan.read_bytes())
        data[7] ^= 0xFF
        plan.write_bytes(bytes(data))
    elif damage == "drop_meta":
        meta.unlink()
    else:
        meta.write_text("{not json")
    assert cache.load("k") is None
    assert not plan.exists() and not meta.exists()


def test_timing_cache_persists(tmp_path):
    cache = EngineCache(tmp_path)
    assert cache.read_timing_cache() == b""
    cache.write_timing_cache(b"timings")
    assert EngineCache(tmp_path).read_timing_cache() == b"timings"


def _build_under_lock(directory: str, key: str, log: str, delay: float) -> None:
    cache = EngineCache(Path(directory))
    with cache.lock(key):
        if cache.load(key) is None:  # only the first process builds
            with open(log, "a") as f:
                f.write(f"build {os.getpid()}\n")
            time.sleep(delay)
            cache.store(key, b"X" * 1_000_000, {})
        assert cache.load(key) == b"X" * 1_000_000


def test_concurrent_builders_build_once_and_never_see_a_partial_plan(tmp_path):
    log = tmp_path / "log"
    ctx = mp.get_context("fork" if sys.platform != "win32" else "spawn")
    procs = [ctx.Process(target=_build_under_lock, args=(str(tmp_path / "c"), "same", str(log), 0.3))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log.read_text().count("build") == 1


# ----------------------------------------------------------------------------- ONNX op support
def test_every_op_the_lowering_can_emit_is_supported_by_tensorrt():
    emitted = all_onnx_ops() - TRT_SUPPORTED_NEW_OPS
    assert emitted <= TRT_SUPPORTED_OPS, sorted(emitted - TRT_SUPPORTED_OPS)


def _op_types(model) -> set[str]:
    return {n.op_type for n in model.graph.node}


EVERY_OP = """
network every_op {
    input x: 8x16x16
    conv 8 3x3 pad 1 -> bn -> relu -> leaky_relu -> relu6 -> sigmoid -> tanh -> hardswish -> hardsigmoid
    silu -> gelu -> lrn 3 -> dropout -> identity -> channel_shuffle 2 -> upsample 2 -> maxpool 2x2 /2
    slice 0 8
    a: avgpool 3x3 /1 pad 1 ceil
    b: conv 8 3x3 pad 1 groups 2 -> scale< avgpool global -> conv 8 1x1 -> sigmoid >
    c: add(@a, @b)
    d: mul(@a, @c)
    e: mean(@d, @a)
    concat(@e, @b) -> avgpool adaptive 4x4 -> maxpool global -> flatten -> fc 10 -> softmax
    @c -> layernorm -> fc 8 per_position -> groupnorm 2 -> instancenorm -> layer_scale -> prelu -> elu -> mish
    softplus -> hardtanh -> flatten -> layernorm
}
"""


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_a_network_with_every_op_uses_only_tensorrt_supported_ops(dtype):
    net = netdsl.load(EVERY_OP)
    used = {n.op.name for n in net.graph.nodes}
    every = {op.name for op in netdsl.ops.OPS.values()} | set(netdsl.ops.MERGES)
    assert used >= every, f"add the new op(s) {sorted(every - used)} to EVERY_OP"
    ops = _op_types(net.to_onnx(dtype=dtype, keep_io_fp32=True))
    assert ops <= TRT_SUPPORTED_OPS, sorted(ops - TRT_SUPPORTED_OPS)


# ----------------------------------------------------------------------------- error paths without TensorRT
def _cli(*args, cwd=ROOT, pythonpath=None):
    return run_netdsl(*args, cwd=cwd, pythonpath=pythonpath, timeout=300)


@pytest.mark.parametrize("command", [["build", "networks/lenet5.net"],
                                     ["run", "networks/lenet5.net", "--engine", "trt", "--device", "cuda"]])
def test_missing_tensorrt_is_explained(command, tmp_path):
    rc, out, err = _cli(*command, pythonpath=hide_modules(tmp_path, "tensorrt", "tensorrt_rtx"))
    assert rc == 1
    assert "TensorRT is not installed" in err and 'pip install "netdsl[trt-rtx]"' in err and "netdsl doctor" in err
    assert "Traceback" not in err


def test_trt_engine_only_runs_on_cuda():
    rc, out, err = _cli("run", "networks/lenet5.net", "--engine", "trt", "--device", "cpu")
    assert rc == 2
    assert "engine `trt` runs on: cuda" in err
    assert "Traceback" not in err


def test_build_checks_the_output_folder_before_building(tmp_path):
    rc, out, err = _cli("build", "networks/lenet5.net", "--cache-dir", tmp_path, "-o", tmp_path / "no" / "x.plan")
    assert rc == 1 and "directory" in err and "does not exist" in err and "Traceback" not in err, err
    assert not (tmp_path / "trt").exists()  # nothing was built


def test_build_rejects_a_bad_profile_before_anything_else():
    rc, out, err = _cli("build", "networks/lenet5.net", "--batch", "8..2")
    assert rc == 2 and "need 1 <= MIN <= MAX" in err and "Traceback" not in err


@pytest.mark.gpu
def test_trt_matches_onnxruntime_on_lenet(tmp_path, gpu):
    if not gpu:
        pytest.skip("needs TensorRT, cuda-python and an NVIDIA GPU")
    import numpy as np

    net = netdsl.load(ROOT / "networks" / "lenet5.net")
    x = np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(np.float32)
    ref = net.session().run(image=x)
    out = net.session(engine="trt", device="cuda", cache_dir=str(tmp_path), batch_range=(1, 4, 8)).run(image=x)
    assert list(ref) == ["logits"] and set(out) == set(ref)
    for k in ref:
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------- real builds (TensorRT for RTX, no GPU)
@NEEDS_RTX
@pytest.mark.parametrize("opset", [13, None])
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_tensorrt_parses_and_builds_every_op(dtype, opset, tmp_path):
    """TensorRT's real ONNX parser and builder take every op netdsl lowers, at the oldest and newest opset."""
    from trt_helpers import build_plan

    net = netdsl.load(EVERY_OP)
    model = net.to_onnx(dtype=dtype, keep_io_fp32=True, **({"opset": opset} if opset else {}))
    assert len(build_plan(model, tmp_path)) > 0


@NEEDS_RTX
def test_the_progress_monitor_sees_the_build_phases(tmp_path):
    import tensorrt_rtx
    from trt_helpers import build_plan

    from netdsl.engines.trt import progress_monitor

    monitor = progress_monitor(tensorrt_rtx, show=False)
    build_plan(netdsl.load(ROOT / "networks" / "lenet5.net").to_onnx(), tmp_path, monitor=monitor)
    assert monitor.phases and monitor.steps > 0, (monitor.phases, monitor.steps)


@NEEDS_RTX
def test_a_model_the_parser_rejects_gets_a_clear_error(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("FrobnicateX", ["x"], ["y"], domain="com.example")], "odd",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    path = tmp_path / "odd.onnx"
    path.write_bytes(model.SerializeToString())
    rc, out, err = _cli("build", path, "--cache-dir", tmp_path / "cache", "-o", tmp_path / "odd.plan")
    assert rc == 1, err
    assert "TensorRT's ONNX parser rejected the model" in err and "FrobnicateX" in err
    assert "Traceback" not in err and not (tmp_path / "odd.plan").exists()


def _built(out: str) -> bool:
    assert "wrote " in out, out
    return "built in" in out


@NEEDS_RTX
def test_netdsl_build_without_a_gpu_then_from_the_cache(tmp_path):
    cache, plan = tmp_path / "cache", tmp_path / "r18.plan"
    args = ("build", "networks/resnet18.net", "--precision", "fp16", "--batch", "1..64", "--opt-batch", "32",
            "--cache-dir", cache, "-o", plan)
    rc, out, err = _cli(*args)
    assert rc == 0, err
    assert _built(out) and "TensorRT for RTX" in out and "batch 1..64 (opt 32)" in out and "portable" in out
    first = plan.read_bytes()
    entries = sorted(p.suffix for p in (cache / "trt").iterdir())
    assert entries == [".json", ".lock", ".plan"], entries
    rc, out, err = _cli(*args)
    assert rc == 0, err
    assert not _built(out) and "from the cache" in out
    assert plan.read_bytes() == first
    # another profile or precision is another engine
    rc, out, err = _cli("build", "networks/resnet18.net", "--batch", "1..8", "--cache-dir", cache, "-o", plan)
    assert rc == 0 and _built(out) and "fp32" in out, err
    assert len(list((cache / "trt").glob("*.plan"))) == 2


@NEEDS_RTX
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_corrupt_cached_engine_is_rebuilt(tmp_path, damage):
    cache, plan = tmp_path / "cache", tmp_path / "lenet.plan"
    args = ("build", "networks/lenet5.net", "--cache-dir", cache, "-o", plan)
    rc, out, err = _cli(*args)
    assert rc == 0 and _built(out), err
    good = plan.read_bytes()
    (cached,) = (cache / "trt").glob("*.plan")
    data = bytearray(cached.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) // 3:]
    cached.write_bytes(bytes(data))
    rc, out, err = _cli(*args)
    assert rc == 0 and _built(out), (out, err)
    assert cached.read_bytes() == plan.read_bytes()
    assert len(plan.read_bytes()) == len(good)


@NEEDS_RTX
def test_concurrent_netdsl_builds_build_once(tmp_path):
    """Three processes ask for the same engine at once: one builds, the others wait and read its plan."""
    import subprocess

    env = cli_env()
    procs = [subprocess.Popen([sys.executable, "-m", "netdsl", "build", "networks/resnet18.net", "--cache-dir",
                               str(tmp_path / "cache"), "-o", str(tmp_path / f"{i}.plan")], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    results = [(p.wait(300), *p.communicate()) for p in procs]
    assert [rc for rc, _, _ in results] == [0, 0, 0], [err for _, _, err in results]
    assert sum(_built(out) for _, out, _ in results) == 1, [out for _, out, _ in results]
    plans = {(tmp_path / f"{i}.plan").read_bytes() for i in range(3)}
    assert len(plans) == 1
    assert [p.name for p in (tmp_path / "cache" / "trt").iterdir() if p.name.endswith(".tmp")] == []


@NEEDS_RTX
def test_running_without_a_gpu_is_explained(gpu):
    if gpu:
        pytest.skip("checks the message shown on a machine without an NVIDIA GPU")
    pytest.importorskip("cuda.bindings", reason="needs cuda-python (optional package cuda-bindings)")
    rc, out, err = _cli("run", "networks/lenet5.net", "--engine", "trt", "--device", "cuda")
    assert rc == 1, err
    assert "no usable NVIDIA GPU" in err and "netdsl build" in err and "Traceback" not in err


@NEEDS_RTX
def test_every_tensorrt_and_cuda_call_the_engine_makes_exists():
    """The runtime half cannot run without a GPU; at least every API it calls must exist in the installed packages.

    Collects ``trt.X``, ``cudart.X`` and the methods called on engines and execution contexts in
    netdsl/engines/trt.py, and looks each up on tensorrt_rtx / cuda.bindings.runtime.
    """
    import ast

    import tensorrt_rtx

    cudart = pytest.importorskip("cuda.bindings.runtime", reason="needs cuda-python (optional package cuda-bindings)")
    tree = ast.parse((ROOT / "netdsl" / "engines" / "trt.py").read_text())
    receivers = {"trt": tensorrt_rtx, "cudart": cudart, "engine": tensorrt_rtx.ICudaEngine,
                 "context": tensorrt_rtx.IExecutionContext, "config": tensorrt_rtx.IBuilderConfig,
                 "builder": tensorrt_rtx.Builder, "network": tensorrt_rtx.INetworkDefinition,
                 "parser": tensorrt_rtx.OnnxParser, "prof": tensorrt_rtx.IOptimizationProfile,
                 "runtime": tensorrt_rtx.Runtime}
    checked, absent = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = node.value
            name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
            if name in receivers:
                checked.add(f"{name}.{node.attr}")
                if not hasattr(receivers[name], node.attr):
                    absent.append(f"{name}.{node.attr}")
    assert {"cudart.cudaMemcpyAsync", "context.execute_async_v3", "engine.get_tensor_shape",
            "trt.OnnxParser"} <= checked, sorted(checked)
    assert absent == [], absent
