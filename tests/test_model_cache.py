"""The compiled-model cache (netdsl.cache): keyed by source and options, byte-identical to a fresh compile,
verified on use, safe under concurrent use, bounded in size, shown and cleared by `netdsl cache`."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import cli_env, netdsl_main

import netdsl
from netdsl import cache
from netdsl.network import Network

BLOCKS = """
block unit(c) {
    conv c 3x3 pad 1 -> relu
}
"""
MAIN = """
import "blocks.net"

network small(classes=10) {
    input image: 3x16x16
    unit(8)
    avgpool global -> flatten -> fc classes
    output logits
}
"""


@pytest.fixture
def program(tmp_path) -> Path:
    (tmp_path / "blocks.net").write_text(BLOCKS)
    (tmp_path / "main.net").write_text(MAIN)
    return tmp_path / "main.net"


def models_folder() -> Path:
    return Path(os.environ["NETDSL_CACHE_DIR"]) / "models"


def model_files() -> list[Path]:
    folder = models_folder()
    return sorted(folder.glob("*.onnx")) if folder.is_dir() else []


def fresh_bytes(path: Path, seed: int = 0, **options) -> bytes:
    return netdsl.load(path).to_onnx(seed=seed, **options).SerializeToString()


def no_compiling(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("compiled although the cache holds the model")

    monkeypatch.setattr(Network, "to_onnx", refuse)


def test_run_caches_the_model_byte_identical_and_reuses_it(program, monkeypatch):
    rc, out, err = netdsl_main("run", program, "--json")
    assert rc == 0, err
    [entry] = model_files()
    assert entry.read_bytes() == fresh_bytes(program)
    no_compiling(monkeypatch)
    rc, again, err = netdsl_main("run", program, "--json")
    assert rc == 0, err
    assert [line for line in again.splitlines() if "logits" in line] == \
        [line for line in out.splitlines() if "logits" in line]


@pytest.mark.parametrize("change", ["import", "arg", "seed", "dtype", "network", "path", "directory"])
def test_everything_the_model_depends_on_is_in_the_key(program, change, monkeypatch):
    monkeypatch.chdir(program.parent.parent)
    assert netdsl_main("run", program)[0] == 0
    argv = ["run", program]
    if change == "import":  # the imported file, not the one named on the command line
        (program.parent / "blocks.net").write_text(BLOCKS.replace("conv c 3x3 pad 1", "conv c 1x1"))
    elif change == "arg":
        argv += ["--arg", "classes=5"]
    elif change == "seed":
        argv += ["--seed", "3"]
    elif change == "dtype":
        argv += ["--dtype", "fp16"]
    elif change == "path":  # source locations in the model name the file as given
        argv = ["run", "main.net"]
    elif change == "directory":  # ... and its imports as seen from the working directory
        monkeypatch.chdir(program.parent)
    else:
        argv += ["--network", "small"]
    rc, _, err = netdsl_main(*argv, cwd=program.parent if change == "path" else None)
    assert rc == 0, err
    if change == "import":  # found by the main file, then refused: its import's text differs; replaced
        [entry] = model_files()
        assert entry.read_bytes() == fresh_bytes(program)
        assert b"conv c 1x1" not in entry.read_bytes()
    else:
        assert len(model_files()) == 2


def test_weights_file_contents_are_in_the_key(program, tmp_path):
    weights = netdsl.load(program).initial_weights(seed=5)
    np.savez(tmp_path / "w.npz", **weights)
    assert netdsl_main("run", program, "--weights", tmp_path / "w.npz")[0] == 0
    [first] = model_files()
    assert first.read_bytes() == netdsl.load(program).to_onnx(weights=weights).SerializeToString()
    np.savez(tmp_path / "w.npz", **{k: v + 1 for k, v in weights.items()})  # same file name, new contents
    assert netdsl_main("run", program, "--weights", tmp_path / "w.npz")[0] == 0
    assert len(model_files()) == 2


def test_warnings_of_a_compile_are_printed_again_on_a_hit(program, tmp_path, monkeypatch):
    weights = netdsl.load(program).initial_weights(seed=1)
    weights.pop("fc.bias", None) or weights.pop(next(k for k in weights if k.endswith("bias")))
    np.savez(tmp_path / "w.npz", **weights)
    argv = ("run", program, "--weights", tmp_path / "w.npz", "--allow-missing")
    rc, _, err = netdsl_main(*argv)
    assert rc == 0 and "lacks 1 weight(s)" in err
    no_compiling(monkeypatch)
    rc, _, again = netdsl_main(*argv)
    assert rc == 0 and "lacks 1 weight(s)" in again


@pytest.mark.parametrize("damage", ["truncated", "garbage", "record"])
def test_a_damaged_entry_is_detected_and_rebuilt(program, damage):
    assert netdsl_main("run", program)[0] == 0
    [entry] = model_files()
    good = entry.read_bytes()
    if damage == "truncated":
        entry.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":  # the same size, so only the recorded sha256 tells
        entry.write_bytes(bytes(b ^ 0x5A for b in good))
    else:
        entry.with_suffix(".json").write_text("{not json")
    rc, _, err = netdsl_main("run", program)
    assert rc == 0, err
    assert "model cache entry" in err and "rebuilding" in err
    assert entry.read_bytes() == good
    rc, _, err = netdsl_main("run", program)
    assert rc == 0 and "warning" not in err  # repaired: used silently


def test_concurrent_processes_share_the_cache(program, monkeypatch):
    argv = [sys.executable, "-m", "netdsl", "run", "main.net", "--json"]
    procs = [subprocess.Popen(argv, env=cli_env(), cwd=program.parent, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert [rc for rc, _, _ in results] == [0] * 4, [err for _, _, err in results]
    assert all("warning" not in err for _, _, err in results)
    assert len({out for _, out, _ in results if out}) >= 1
    [entry] = model_files()
    monkeypatch.chdir(program.parent)
    assert entry.read_bytes() == fresh_bytes(Path("main.net"))
    assert not [p for p in models_folder().iterdir() if p.suffix not in (".onnx", ".json", ".lock")]


def test_cache_off_writes_nothing(program, monkeypatch, tmp_path):
    monkeypatch.setenv("NETDSL_CACHE", "off")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert netdsl_main("run", program, cwd=tmp_path)[0] == 0
    assert not Path(os.environ["NETDSL_CACHE_DIR"], "models").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_nothing_is_written_outside_the_cache_folder(program, tmp_path):
    """A subprocess with its own HOME: after `run`, netdsl's files exist only in the cache folder (ONNX
    Runtime keeps a file of its own under ~/.cache/Microsoft, as any program using it does)."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {**cli_env(), "HOME": str(home), "NETDSL_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("XDG_CACHE_HOME", None)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run([sys.executable, "-m", "netdsl", "run", str(program)], env=env, cwd=work,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [p for p in home.rglob("*") if "netdsl" in p.name] == [] and list(work.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "cache"])
    assert [p.parent.name for p in (tmp_path / "cache").rglob("*.onnx")] == ["models"]


def test_least_recently_used_entries_are_evicted_past_the_cap(program, monkeypatch):
    assert netdsl_main("run", program, "--seed", "0")[0] == 0
    [one] = model_files()
    size = one.stat().st_size + one.with_suffix(".json").stat().st_size
    monkeypatch.setenv("NETDSL_CACHE_MAX", str(int(size * 2.5)))  # room for two entries
    assert netdsl_main("run", program, "--seed", "1")[0] == 0
    seed1 = (set(model_files()) - {one}).pop()
    os.utime(one.with_suffix(".json"), (1, 1))  # seed 0 long unused ...
    os.utime(seed1.with_suffix(".json"), (2, 2))
    assert netdsl_main("run", program, "--seed", "0")[0] == 0  # ... and used again now
    assert netdsl_main("run", program, "--seed", "2")[0] == 0
    assert seed1 not in model_files() and one in model_files() and len(model_files()) == 2
    assert not seed1.with_suffix(".json").exists()


def test_max_size_setting():
    os.environ["NETDSL_CACHE_MAX"] = "500M"
    try:
        assert cache.max_bytes() == 500 << 20
        os.environ["NETDSL_CACHE_MAX"] = "0"
        assert cache.max_bytes() == 0
        os.environ["NETDSL_CACHE_MAX"] = "lots"
        assert cache.max_bytes() == cache.DEFAULT_MAX_BYTES
    finally:
        del os.environ["NETDSL_CACHE_MAX"]


def test_cache_command_shows_and_clears(program):
    root = Path(os.environ["NETDSL_CACHE_DIR"])
    assert netdsl_main("run", program)[0] == 0
    (root / "trt").mkdir()
    (root / "trt" / "k.plan").write_bytes(b"PLAN")
    (root / "trt" / "k.json").write_text("{}")
    rc, out, _ = netdsl_main("cache")
    assert rc == 0
    assert str(root) in out and "compiled models:   1 entry" in out and "TensorRT engines:  1 entry" in out
    assert netdsl_main("cache", "info")[1] == out
    rc, out, _ = netdsl_main("cache", "clear", "--engines")
    assert rc == 0 and "removed 2 file(s)" in out
    assert model_files() and not list((root / "trt").iterdir())
    rc, out, _ = netdsl_main("cache", "clear", "--models")
    assert rc == 0 and not model_files()
    assert netdsl_main("cache", "clear", "--models", "--engines")[0] == 2


def test_session_api_uses_the_cache(program, monkeypatch):
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    fresh = netdsl.Session(netdsl.load(program).to_onnx()).run(image=x)["logits"]
    first = netdsl.Session(str(program)).run(image=x)["logits"]
    [entry] = model_files()
    assert entry.read_bytes() == fresh_bytes(program)
    net = netdsl.load(program)
    no_compiling(monkeypatch)
    np.testing.assert_array_equal(netdsl.Session(str(program)).run(image=x)["logits"], first)
    np.testing.assert_array_equal(net.session().run(image=x)["logits"], fresh)
    np.testing.assert_array_equal(netdsl.Session(net).run(image=x)["logits"], fresh)


def test_compare_takes_its_model_from_the_cache(program, monkeypatch):
    rc, out, err = netdsl_main("compare", program, "--engines", "ort:cpu,ort:cpu")
    assert rc == 0, err
    [entry] = model_files()
    assert entry.read_bytes() == fresh_bytes(program)
    no_compiling(monkeypatch)
    rc, again, err = netdsl_main("compare", program, "--engines", "ort:cpu,ort:cpu")
    assert rc == 0, err


def test_build_takes_its_model_from_the_cache_and_shares_the_folder(program, tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX is not installed (optional: netdsl[trt-rtx])")
    rc, _, err = netdsl_main("build", program, "--batch", "1", "-o", tmp_path / "m.plan")
    assert rc == 0, err
    [entry] = model_files()
    assert entry.read_bytes() == fresh_bytes(program)
    root = Path(os.environ["NETDSL_CACHE_DIR"])
    assert {e.kind for e in cache.entries(root)} == {"models", "trt"}
    rc, out, _ = netdsl_main("cache")
    assert "compiled models:   1 entry" in out and "TensorRT engines:  1 entry" in out


def test_a_cached_model_reaches_the_runtime_without_onnx_or_the_parser(program):
    """On a hit neither the source is parsed (lark) nor onnx imported: that is what makes a repeated run fast."""
    probe = ("import json, sys\nfrom netdsl.cli import main\nrc = main(sys.argv[1:])\n"
             "print(json.dumps([rc, sorted(m for m in ('onnx', 'lark', 'ml_dtypes', 'netdsl.network') "
             "if m in sys.modules)]), file=sys.stderr)")
    argv = [sys.executable, "-c", probe, "run", str(program)]
    first = subprocess.run(argv, env=cli_env(), capture_output=True, text=True, timeout=300)
    second = subprocess.run(argv, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert first.stderr.splitlines()[-1] == '[0, ["lark", "ml_dtypes", "netdsl.network", "onnx"]]'
    assert second.stderr.splitlines()[-1] == "[0, []]"
    assert second.stdout.splitlines()[1:] == first.stdout.splitlines()[1:]  # the first line times the engine


def _hashed_sizes(monkeypatch) -> list[int]:
    """The sizes of the buffers netdsl.cache hashes from now on."""
    import hashlib

    sizes, real = [], hashlib.sha256

    def sha256(data=b"", *args, **kwargs):
        sizes.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(cache.hashlib, "sha256", sha256)
    return sizes


def test_an_unchanged_entry_is_used_without_hashing_it_again(program, monkeypatch):
    assert netdsl_main("run", program)[0] == 0
    [entry] = model_files()
    sizes = _hashed_sizes(monkeypatch)
    rc, _, err = netdsl_main("run", program)
    assert rc == 0 and "warning" not in err
    assert entry.stat().st_size not in sizes  # the model file's fingerprint vouched for its bytes


def test_a_rewritten_entry_is_hashed_even_with_its_times_put_back(program, monkeypatch):
    """Same size, same modification time: the change time and inode still tell, and the sha256 decides."""
    assert netdsl_main("run", program)[0] == 0
    [entry] = model_files()
    good, st = entry.read_bytes(), entry.stat()
    entry.write_bytes(bytes(b ^ 0x5A for b in good))
    os.utime(entry, ns=(st.st_atime_ns, st.st_mtime_ns))
    rc, _, err = netdsl_main("run", program)
    assert rc == 0 and "sha256 differs" in err
    assert entry.read_bytes() == good


def test_an_entry_touched_but_not_changed_is_hashed_once(program, monkeypatch):
    assert netdsl_main("run", program)[0] == 0
    [entry] = model_files()
    entry.write_bytes(entry.read_bytes())  # same bytes, a new change time
    sizes = _hashed_sizes(monkeypatch)
    assert netdsl_main("run", program)[0] == 0
    assert sizes.count(entry.stat().st_size) == 1  # hashed, found good, fingerprint recorded again
    sizes.clear()
    rc, _, err = netdsl_main("run", program)
    assert rc == 0 and "warning" not in err
    assert entry.stat().st_size not in sizes


def test_an_unchanged_entry_reaches_the_runtime_through_the_descriptor_it_was_checked_by(program, monkeypatch):
    """A hit whose fingerprint vouches for the file is not read into memory: the source names the descriptor it
    was checked through, so the runtime reads that very file even if the entry is replaced or removed meanwhile;
    the descriptor is closed with the source. Where no /proc/self/fd exists (not Linux), the hit is its bytes."""
    import gc

    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    fresh = netdsl.load(program).compiled()  # compiled and cached
    assert fresh.onnx_bytes is not None
    expected = netdsl.Session(fresh).run(image=x)["logits"]
    sizes = _hashed_sizes(monkeypatch)
    held = netdsl.load(program).compiled()
    [entry] = model_files()
    if not cache.fd_paths():
        assert held.onnx_bytes == fresh.onnx_bytes and held.path is None and entry.stat().st_size not in sizes
        np.testing.assert_array_equal(netdsl.Session(held).run(image=x)["logits"], expected)
        return
    assert held.onnx_bytes is None and held.path.startswith("/proc/self/fd/")
    assert os.path.samefile(held.path, entry) and entry.stat().st_size not in sizes
    replacement = entry.with_name("replacement")
    replacement.write_bytes(b"\0" * entry.stat().st_size)
    os.replace(replacement, entry)  # an atomic replacement: a new file at the entry's name
    assert held.read_bytes() == fresh.onnx_bytes
    np.testing.assert_array_equal(netdsl.Session(held).run(image=x)["logits"], expected)
    shipped = pickle.loads(pickle.dumps(held))  # to another process (Ray): the bytes, not this process's descriptor
    assert shipped.onnx_bytes == fresh.onnx_bytes and shipped.path is None and shipped.held is None
    entry.unlink()
    np.testing.assert_array_equal(netdsl.Session(held).run(image=x)["logits"], expected)
    del held
    gc.collect()
    netdsl.load(program).compiled()  # cached again
    open_before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        netdsl.Session(netdsl.load(program).compiled()).run(image=x)
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == open_before


def test_without_reopenable_descriptors_an_unchanged_entry_comes_as_its_bytes(program, monkeypatch):
    """Where an open descriptor cannot be opened again by name (no /proc/self/fd), a hit is read as bytes, still
    without hashing an entry its fingerprint vouches for."""
    monkeypatch.setattr(cache, "fd_paths", lambda: False)
    fresh = netdsl.load(program).compiled()
    sizes = _hashed_sizes(monkeypatch)
    held = netdsl.load(program).compiled()
    [entry] = model_files()
    assert held.onnx_bytes == fresh.onnx_bytes and held.path is None and held.held is None
    assert entry.stat().st_size not in sizes
