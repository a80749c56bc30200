"""The TensorRT engine cache trusts nothing it finds on disk.

An entry is used only when its record names the engine asked for and its plan matches the record;
FIFOs, folders, symlinks, sparse giants and read-only folders at any of the cache's paths are
repaired or bypassed with a warning, never a hang and never an internal error. Tests that could hang
on a FIFO before the cache was hardened run under a deadline. Real builds use TensorRT for RTX, which
builds on the CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli_env, run_netdsl

from netdsl.engines.trt import EngineCache, Profile, key_material

ROOT = Path(__file__).resolve().parent.parent
HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
NEEDS_RTX = pytest.mark.skipif(not HAS_RTX, reason="needs TensorRT for RTX (optional package tensorrt-rtx-cu13)")
LENET = ("build", "networks/lenet5.net", "--batch", "1..4")


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging) when the block takes longer than ``seconds``: a blocking open of a FIFO is
    interrupted by the alarm."""

    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def material(**change) -> dict:
    base = key_material(b"model", "fp32", Profile(1, 4, 8), "TensorRT for RTX 1.7", "portable", "rtx")
    return {**base, **change}


def stored(directory: Path, data: bytes = b"PLAN" * 64, info: dict | None = None) -> EngineCache:
    warnings: list[str] = []
    cache = EngineCache(directory, warn=warnings.append)
    cache.warnings = warnings
    assert cache.store("k", data, material() if info is None else info)
    return cache


# ----------------------------------------------------------------------------- whose entry is it
def test_an_entry_is_used_only_for_the_engine_its_record_names(tmp_path):
    cache = stored(tmp_path)
    assert cache.load("k", expect=material()) == b"PLAN" * 64
    assert cache.warnings == []
    for field, value in [("onnx_sha256", hashlib.sha256(b"other").hexdigest()), ("precision", "fp16"),
                         ("profile", [1, 8, 8]), ("trt", "TensorRT 10.0"), ("gpu", "NVIDIA H100"), ("cc", "9.0")]:
        cache = stored(tmp_path)
        assert cache.load("k", expect=material(**{field: value})) is None, field
        assert not (tmp_path / "k.plan").exists() and not (tmp_path / "k.json").exists()
        assert f"`{field}` differs" in cache.warnings[0]


def test_a_record_without_key_material_is_not_trusted(tmp_path):
    cache = stored(tmp_path, info={})  # an entry written without (or stripped of) its key material
    assert cache.load("k", expect=material()) is None
    assert "differs" in cache.warnings[0]


def test_a_symlinked_plan_is_not_followed_and_its_target_is_left_alone(tmp_path):
    cache = stored(tmp_path / "c")
    target = tmp_path / "elsewhere.bin"
    (tmp_path / "c" / "k.plan").rename(target)
    (tmp_path / "c" / "k.plan").symlink_to(target)
    assert cache.load("k", expect=material()) is None
    assert "symbolic link" in cache.warnings[0]
    assert not os.path.lexists(tmp_path / "c" / "k.plan")
    assert target.read_bytes() == b"PLAN" * 64


# ----------------------------------------------------------------------------- files in odd states
def test_a_fifo_record_is_removed_not_read(tmp_path):
    cache = stored(tmp_path)
    (tmp_path / "k.json").unlink()
    os.mkfifo(tmp_path / "k.json")
    with deadline(20):
        assert cache.load("k", expect=material()) is None
    assert "FIFO" in cache.warnings[0]
    assert not os.path.lexists(tmp_path / "k.json")


def test_a_fifo_plan_is_removed_not_read(tmp_path):
    cache = stored(tmp_path)
    (tmp_path / "k.plan").unlink()
    os.mkfifo(tmp_path / "k.plan")
    with deadline(20):
        assert cache.load("k", expect=material()) is None
    assert "FIFO" in cache.warnings[0]
    assert not os.path.lexists(tmp_path / "k.plan")


def test_a_fifo_lock_file_is_replaced(tmp_path):
    warnings: list[str] = []
    cache = EngineCache(tmp_path, warn=warnings.append)
    os.mkfifo(tmp_path / "k.lock")
    with deadline(20), cache.lock("k"):
        assert cache.store("k", b"PLAN", material())
    assert "FIFO" in warnings[0]
    assert (tmp_path / "k.lock").is_file()
    assert cache.load("k", expect=material()) == b"PLAN"


def test_a_fifo_timing_cache_is_ignored(tmp_path):
    os.mkfifo(tmp_path / "timing.cache")
    cache = EngineCache(tmp_path, warn=lambda message: None)
    with deadline(20):
        assert cache.read_timing_cache() == b""
        cache.write_timing_cache(b"timings")
    assert cache.read_timing_cache() == b"timings"


def test_a_sparse_giant_plan_is_rejected_by_its_size_before_it_is_read(tmp_path):
    """A 3 GB plan (sparse: nothing on disk) whose record says 1 byte: checked in a process that could not even
    hold it in memory."""
    stored(tmp_path, data=b"P")
    with open(tmp_path / "k.plan", "r+b") as f:
        f.truncate(3 << 30)
    code = ("import sys; from pathlib import Path; from netdsl.engines.trt import EngineCache; "
            "c = EngineCache(Path(sys.argv[1]), warn=print); print(c.load('k') is None)")

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env=cli_env(), preexec_fn=limit_memory)
    assert proc.returncode == 0, proc.stderr
    assert "holds 3,221,225,472 bytes, not the 1 its record says" in proc.stdout
    assert proc.stdout.strip().endswith("True")
    assert not (tmp_path / "k.plan").exists()


def test_an_empty_folder_at_the_plan_path_is_removed(tmp_path):
    cache = stored(tmp_path)
    (tmp_path / "k.plan").unlink()
    (tmp_path / "k.plan").mkdir()
    assert cache.load("k", expect=material()) is None
    assert "folder" in cache.warnings[0]
    assert cache.store("k", b"NEW", material())
    assert cache.load("k", expect=material()) == b"NEW"


def test_a_folder_with_files_at_the_plan_path_is_bypassed(tmp_path):
    cache = stored(tmp_path)
    (tmp_path / "k.plan").unlink()
    (tmp_path / "k.plan").mkdir()
    (tmp_path / "k.plan" / "keep.txt").write_text("not the cache's to delete")
    assert cache.load("k", expect=material()) is None
    assert not cache.store("k", b"NEW", material())
    assert (tmp_path / "k.plan" / "keep.txt").read_text() == "not the cache's to delete"
    assert any("not empty" in w for w in cache.warnings), cache.warnings


def test_an_oversized_record_is_not_read(tmp_path):
    cache = stored(tmp_path)
    with open(tmp_path / "k.json", "r+b") as f:
        f.truncate(1 << 30)
    assert cache.load("k", expect=material()) is None
    assert "more than" in cache.warnings[0]


# ----------------------------------------------------------------------------- netdsl build, for real
def _built(out: str) -> bool:
    assert "wrote " in out, out
    return "built in" in out


@NEEDS_RTX
def test_an_engine_copied_to_another_models_key_is_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    rc, out, err = run_netdsl(*LENET, "--cache-dir", cache, "-o", tmp_path / "ten.plan", cwd=ROOT, timeout=300)
    assert rc == 0 and _built(out), err
    ten = {p.suffix: p for p in (cache / "trt").iterdir()}
    three = ("--arg", "classes=3", "--cache-dir", cache, "-o", tmp_path / "three.plan")
    rc, out, err = run_netdsl(*LENET, *three, cwd=ROOT, timeout=300)
    assert rc == 0 and _built(out), err
    good = (tmp_path / "three.plan").read_bytes()
    (plan3,) = [p for p in (cache / "trt").glob("*.plan") if p != ten[".plan"]]
    key3 = plan3.stem
    shutil.copyfile(ten[".plan"], cache / "trt" / f"{key3}.plan")  # the 10-class engine under the 3-class key
    shutil.copyfile(ten[".json"], cache / "trt" / f"{key3}.json")
    rc, out, err = run_netdsl(*LENET, *three, cwd=ROOT, timeout=300)
    assert rc == 0 and _built(out), (out, err)
    assert "was recorded for another engine (its `onnx_sha256` differs)" in err
    # TensorRT's plans are not byte-for-byte reproducible; the 3-class engine is smaller than the 10-class one
    assert len((tmp_path / "three.plan").read_bytes()) == len(good) != ten[".plan"].stat().st_size
    record = json.loads((cache / "trt" / f"{key3}.json").read_text())
    assert record["onnx_sha256"] != json.loads(ten[".json"].read_text())["onnx_sha256"]


def _odd_cache(tmp_path: Path, state: str) -> Path:
    """A cache folder holding lenet5's entry with one of its files replaced by something odd."""
    cache = tmp_path / "cache"
    rc, out, err = run_netdsl(*LENET, "--cache-dir", cache, "-o", tmp_path / "first.plan", cwd=ROOT, timeout=300)
    assert rc == 0, err
    (plan,) = (cache / "trt").glob("*.plan")
    record, lock = plan.with_suffix(".json"), plan.with_suffix(".lock")
    if state == "fifo_record":
        record.unlink()
        os.mkfifo(record)
    elif state == "fifo_lock":
        lock.unlink()
        os.mkfifo(lock)
    elif state == "folder_plan":
        plan.unlink()
        plan.mkdir()
        (plan / "x").write_text("x")
    elif state == "sparse_plan":
        with open(plan, "r+b") as f:
            f.truncate(3 << 30)
    return cache


@NEEDS_RTX
@pytest.mark.parametrize("state", ["fifo_record", "fifo_lock", "folder_plan", "sparse_plan"])
def test_netdsl_build_gets_past_odd_cache_files(tmp_path, state):
    cache = _odd_cache(tmp_path, state)
    rc, out, err = run_netdsl(*LENET, "--cache-dir", cache, "-o", tmp_path / "again.plan", cwd=ROOT, timeout=120)
    assert rc == 0, err
    assert "netdsl: warning:" in err and "internal error" not in err
    assert (tmp_path / "again.plan").stat().st_size == (tmp_path / "first.plan").stat().st_size
    if state == "fifo_lock":  # the lock was replaced; the entry itself was fine
        assert not _built(out)
    else:
        assert _built(out)


# ----------------------------------------------------------------------------- a read-only cache
def _as_unprivileged() -> list[str]:
    """A command prefix under which the test's folders can be made read-only: none for a normal user; for root
    (which writes to read-only folders) a user namespace in which it is an ordinary user."""
    if os.geteuid() != 0:
        return []
    prefix = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
    try:
        ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    assert ok, "running as root without user namespaces (unshare): no folder can be made read-only to root"
    return prefix


def _build_read_only(cache: Path, out: Path) -> tuple[int, str, str]:
    """``netdsl build`` with ``cache`` and everything in it read-only (``chmod -R a-w``)."""
    prefix = _as_unprivileged()
    paths = [cache, *cache.rglob("*")]
    for p in paths:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        proc = subprocess.run([*prefix, sys.executable, "-m", "netdsl", *LENET, "--cache-dir", str(cache), "-o",
                               str(out)], cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=300)
    finally:
        for p in paths:
            p.chmod(0o755 if p.is_dir() else 0o644)
    return proc.returncode, proc.stdout, proc.stderr


@NEEDS_RTX
def test_a_read_only_cache_still_serves_its_entries(tmp_path):
    cache = tmp_path / "cache"
    rc, out, err = run_netdsl(*LENET, "--cache-dir", cache, "-o", tmp_path / "first.plan", cwd=ROOT, timeout=300)
    assert rc == 0, err
    before = sorted(p.name for p in (cache / "trt").iterdir())
    rc, out, err = _build_read_only(cache, tmp_path / "again.plan")
    assert rc == 0, err
    assert not _built(out) and "from the cache" in out
    assert "warning" not in err
    assert (tmp_path / "again.plan").read_bytes() == (tmp_path / "first.plan").read_bytes()
    assert sorted(p.name for p in (cache / "trt").iterdir()) == before


@NEEDS_RTX
def test_a_read_only_cache_builds_without_caching(tmp_path):
    cache = tmp_path / "cache"
    (cache / "trt").mkdir(parents=True)
    rc, out, err = _build_read_only(cache, tmp_path / "out.plan")
    assert rc == 0, err
    assert _built(out)
    assert "cannot write the engine cache" in err and "used without being cached" in err
    assert (tmp_path / "out.plan").stat().st_size > 0
    assert list((cache / "trt").iterdir()) == []


@NEEDS_RTX
def test_a_cache_folder_that_cannot_be_created_builds_without_caching(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    rc, out, err = run_netdsl(*LENET, "--cache-dir", blocker, "-o", tmp_path / "out.plan", cwd=ROOT, timeout=300)
    assert rc == 0, err
    assert _built(out) and "cannot write the engine cache" in err
    assert blocker.read_text() == "a file where the cache folder would go"
