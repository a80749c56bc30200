"""`netdsl batch` on a real local Ray instance (started once for the module): a few hundred generated images through
Ray Data, compared with `netdsl run` on the same files; an unreadable image; an .npy input; an actor killed mid-run.

Needs Ray (the `ray` extra, part of the `test` extra); without it only the missing-Ray message is checked.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_IMAGES, dedent, hide_modules, netdsl_main, run_netdsl

# heavier per image, so that a run lasts long enough to kill an actor in the middle of it
SLOW = dedent("""
    network slow(classes=10) {
        input image: 3x64x64
        c1: conv 64 3x3 pad 1 -> relu
        c2: conv 64 3x3 pad 1 -> relu
        c3: conv 64 3x3 pad 1 -> relu
        c4: conv 64 3x3 pad 1 -> relu
        pool: avgpool 64x64 -> flatten
        fc: fc classes
        output logits
    }
""")
IMAGES = 240
ACTOR_TITLE = b"ray::MapWorker("  # the process title Ray gives a Ray Data actor


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray", reason="netdsl batch needs Ray (optional: the ray extra)")
    pytest.importorskip("pyarrow", reason="netdsl batch needs pyarrow (optional: the ray extra)")
    ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """IMAGES small PNGs of several sizes in nested folders, one file that is no image, the network."""
    from PIL import Image

    root = tmp_path_factory.mktemp("batch")
    rng = np.random.default_rng(7)
    for i in range(IMAGES):
        folder = root / "images" / f"part{i % 3}" / ("deep" if i % 7 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        h, w = (32, 32) if i % 2 else (40, 48)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i:04d}.png")
    (root / "images" / "part0" / "broken.png").write_bytes(b"\x89PNG but not really an image")
    (root / "tiny.net").write_text(TINY_IMAGES)
    (root / "slow.net").write_text(SLOW)
    return root


def read_output(folder: Path) -> dict[str, dict]:
    import pyarrow.dataset as pads

    rows = pads.dataset(folder, format="parquet").to_table().to_pylist()
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)), "an input appears more than once"
    return {r["path"]: r for r in rows}


def run_reference(tmp: Path, net: Path, paths: list[str]) -> np.ndarray:
    """`netdsl run` on the same image files: its logits, row by row in the order of ``paths``."""
    rc, _, err = netdsl_main("run", net, "--input", ",".join(paths), "--save", tmp / "ref.npz")
    assert rc == 0, err
    with np.load(tmp / "ref.npz") as z:
        return z["logits"]


def test_batch_equals_run_and_records_the_unreadable_image(ray, data, tmp_path):
    out = tmp_path / "scores"
    rc, _, err = netdsl_main("batch", data / "tiny.net", "--input", data / "images", "--output", out, "--raw",
                             "--batch", "16", "--actors", "2")
    assert rc == 0, err
    assert f"{IMAGES + 1} inputs ({IMAGES} scored, 1 unreadable" in err
    rows = read_output(out)
    every = sorted(str(p.resolve()) for p in (data / "images").rglob("*.png"))
    assert sorted(rows) == every  # each input exactly once, the nested folders included
    broken = str((data / "images" / "part0" / "broken.png").resolve())
    assert "not a readable image" in rows[broken]["error"] and rows[broken]["logits"] is None
    good = [p for p in every if p != broken]
    assert all(rows[p]["error"] is None for p in good)
    expected = run_reference(tmp_path, data / "tiny.net", good)
    got = np.array([rows[p]["logits"] for p in good], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_topk_with_labels_and_a_list_file(ray, data, tmp_path):
    paths = sorted(str(p) for p in (data / "images" / "part1").rglob("*.png"))[:40]
    listing = tmp_path / "inputs.txt"
    listing.write_text("# the images to score\n" + "\n".join(os.path.relpath(p, tmp_path) for p in paths) + "\n")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    out = tmp_path / "top"
    rc, _, err = netdsl_main("batch", data / "tiny.net", "--input", listing, "--output", out, "--topk", "3",
                             "--labels", labels, "--batch", "8")
    assert rc == 0, err
    rows = read_output(out)
    assert sorted(rows) == sorted(str(Path(p).resolve()) for p in paths)
    logits = run_reference(tmp_path, data / "tiny.net", paths)
    for i, path in enumerate(paths):
        row = rows[str(Path(path).resolve())]
        best = np.argsort(-logits[i], kind="stable")[:3]
        assert row["index"] == best.tolist()
        assert row["label"] == [f"class{j}" for j in best]
        np.testing.assert_allclose(row["score"], logits[i][best], rtol=1e-5, atol=1e-5)
        probs = np.exp(logits[i] - logits[i].max())
        np.testing.assert_allclose(row["probability"], (probs / probs.sum())[best], rtol=1e-4, atol=1e-6)


def test_npy_input_and_rerun_replaces_the_output(ray, data, tmp_path):
    import netdsl

    x = np.random.default_rng(3).standard_normal((37, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "raw"
    for _ in range(2):  # the second run replaces the first's folder of parquet files
        rc, _, err = netdsl_main("batch", data / "tiny.net", "--input", tmp_path / "x.npy", "--output", out,
                                 "--raw", "--batch", "10")
        assert rc == 0, err
    rows = read_output(out)
    location = str((tmp_path / "x.npy").resolve())
    assert sorted(rows) == sorted(f"{location}[{i}]" for i in range(37))
    expected = netdsl.Session(netdsl.load(data / "tiny.net")).run(image=x)["logits"]
    got = np.array([rows[f"{location}[{i}]"]["logits"] for i in range(37)], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_parquet_input_of_paths_and_of_arrays(ray, data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    import netdsl

    paths = sorted(str(p.resolve()) for p in (data / "images" / "part2").rglob("*.png"))[:24]
    pq.write_table(pa.table({"path": paths}), tmp_path / "paths.parquet")
    rc, _, err = netdsl_main("batch", data / "tiny.net", "--input", tmp_path / "paths.parquet", "--output",
                             tmp_path / "a", "--raw", "--batch", "8")
    assert rc == 0, err
    rows = read_output(tmp_path / "a")
    assert sorted(rows) == paths
    expected = run_reference(tmp_path, data / "tiny.net", paths)
    np.testing.assert_allclose(np.array([rows[p]["logits"] for p in paths], dtype=np.float32), expected,
                               rtol=1e-5, atol=1e-5)
    # arrays under the input's name (flattened lists), one of them of the wrong size
    x = np.random.default_rng(5).standard_normal((6, 3, 32, 32)).astype(np.float32)
    values = [row.ravel().tolist() for row in x] + [[1.0, 2.0]]
    names = [f"sample{i}" for i in range(7)]
    pq.write_table(pa.table({"path": names, "image": values}), tmp_path / "arrays.parquet")
    rc, _, err = netdsl_main("batch", data / "tiny.net", "--input", tmp_path / "arrays.parquet", "--output",
                             tmp_path / "b", "--raw")
    assert rc == 0, err
    assert "7 inputs (6 scored, 1 unreadable" in err
    rows = read_output(tmp_path / "b")
    assert "holds 2 values" in rows["sample6"]["error"]
    expected = netdsl.Session(netdsl.load(data / "tiny.net")).run(image=x)["logits"]
    np.testing.assert_allclose(np.array([rows[n]["logits"] for n in names[:6]], dtype=np.float32), expected,
                               rtol=1e-5, atol=1e-5)


def _actor_pids() -> dict[int, bytes]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(ACTOR_TITLE):
                found[int(entry.name)] = title
    return found


def test_a_killed_actor_is_restarted_and_every_input_scored_once(ray, data, tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(11)
    for i in range(96):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"x{i:03d}.png")
    out = tmp_path / "killed"
    before = set(_actor_pids())
    result: dict = {}

    def job():
        result["run"] = netdsl_main("batch", data / "slow.net", "--input", folder, "--output", out, "--raw",
                                    "--batch", "2", "--actors", "1")

    thread = threading.Thread(target=job)
    thread.start()
    killed, seen = None, set()
    deadline = time.monotonic() + 240
    while thread.is_alive() and time.monotonic() < deadline:
        actors = {pid: t for pid, t in _actor_pids().items() if pid not in before}
        seen |= set(actors)
        busy = [pid for pid, t in actors.items() if b".submit" in t]  # running a batch right now
        if killed is None and busy:
            os.kill(busy[0], signal.SIGKILL)
            killed = busy[0]
        time.sleep(0.02)
    thread.join(timeout=5)
    assert not thread.is_alive(), "the batch job did not finish"
    assert killed is not None, "no actor was seen running a batch"
    assert seen - {killed}, "no actor replaced the killed one"
    rc, _, err = result["run"]
    assert rc == 0, err
    rows = read_output(out)
    paths = sorted(str(p.resolve()) for p in folder.iterdir())
    assert sorted(rows) == paths
    expected = run_reference(tmp_path, data / "slow.net", paths)
    got = np.array([rows[p]["logits"] for p in paths], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_usage_errors_before_any_work(data, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    rc, _, err = netdsl_main("batch", data / "tiny.net", "--input", data / "images", "--output", busy)
    assert rc == 2 and "holds files other than parquet" in err
    assert (busy / "notes.txt").read_text() == "keep me"
    rc, _, err = netdsl_main("batch", data / "tiny.net", "--input", tmp_path / "none", "--output", tmp_path / "o")
    assert rc == 1 and "no such file or folder" in err
    rc, _, err = netdsl_main("batch", data / "tiny.net", "--input", data / "images", "--output", tmp_path / "o",
                             "--gpus-per-actor", "1")
    assert rc == 2 and "--gpus-per-actor needs --device cuda" in err
    features = tmp_path / "features.net"  # its output is a feature map, not class scores
    features.write_text(dedent("""
        network features {
            input image: 3x32x32
            conv: conv 4 3x3 pad 1
            output out
        }
    """))
    rc, _, err = netdsl_main("batch", features, "--input", data / "images", "--output", tmp_path / "o")
    assert rc == 2 and "not one batch of class scores" in err and "use --raw" in err
    assert not (tmp_path / "o").exists()


def test_missing_ray_is_one_clear_message(data, tmp_path):
    (tmp_path / "hidden").mkdir()
    hidden = hide_modules(tmp_path / "hidden", "ray")
    rc, _, err = run_netdsl("batch", data / "tiny.net", "--input", data / "images", "--output", tmp_path / "o",
                            pythonpath=hidden)
    assert rc == 1
    assert 'pip install "netdsl[ray]"' in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
