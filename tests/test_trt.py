"""The TensorRT engine's GPU-free parts: profiles, cache keys, the on-disk cache, op support, errors.

The GPU paths (building, running, benchmarking) run in tools/gpu_selftest.py on a GPU machine; the
tests here that need TensorRT and a GPU skip cleanly without them.
"""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import pytest

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
    concat(@d, @b) -> avgpool adaptive 4x4 -> maxpool global -> flatten -> fc 10 -> softmax
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
def _cli(*args, cwd=None):
    import subprocess

    r = subprocess.run([sys.executable, "-m", "netdsl", *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.skipif(HAS_TRT, reason="checks the message shown when TensorRT is absent")
@pytest.mark.parametrize("command", [["build", "networks/lenet5.net"],
                                     ["run", "networks/lenet5.net", "--engine", "trt", "--device", "cuda"]])
def test_missing_tensorrt_is_explained(command):
    rc, out, err = _cli(*command, cwd=ROOT)
    assert rc == 1
    assert "TensorRT is not installed" in err and "pip install" in err and "netdsl doctor" in err
    assert "Traceback" not in err


def test_trt_engine_only_runs_on_cuda():
    rc, out, err = _cli("run", "networks/lenet5.net", "--engine", "trt", "--device", "cpu", cwd=ROOT)
    assert rc == 2
    assert "engine `trt` runs on: cuda" in err
    assert "Traceback" not in err


def test_build_rejects_a_bad_profile_before_anything_else():
    rc, out, err = _cli("build", "networks/lenet5.net", "--batch", "8..2", cwd=ROOT)
    assert rc == 2 and "need 1 <= MIN <= MAX" in err and "Traceback" not in err


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT and an NVIDIA GPU")
def test_trt_matches_onnxruntime_on_lenet(tmp_path):
    import numpy as np

    net = netdsl.load(ROOT / "networks" / "lenet5.net")
    x = np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(np.float32)
    ref = net.session().run(image=x)
    out = net.session(engine="trt", device="cuda", cache_dir=str(tmp_path), batch_range=(1, 4, 8)).run(image=x)
    for k in ref:
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-3, atol=1e-3)
