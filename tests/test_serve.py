"""`netdsl serve` answering real HTTP on 127.0.0.1: the command runs as a user runs it (a subprocess), joined to
the Ray instance this module starts once; predictions are compared with a Session run in the test, bad bodies get
4xx with a reason while the replica keeps serving, concurrent requests are batched, SIGTERM stops it cleanly.

Needs Ray (the `ray` extra, part of the `test` extra).
"""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import REPO, TINY_IMAGES, cli_env, hide_modules, run_netdsl

MAX_BATCH = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray", reason="netdsl serve needs Ray (optional: the ray extra)")
    pytest.importorskip("ray.serve", reason="netdsl serve needs Ray Serve (optional: the ray extra)")
    ray.init(num_cpus=2, object_store_memory=150 * 2**20, include_dashboard=False, logging_level="ERROR")
    yield ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def service(ray, tmp_path_factory):
    """`netdsl serve` in a subprocess, joined to the module's Ray; yields (base URL, process, the network file)."""
    root = tmp_path_factory.mktemp("serve")
    net = root / "tiny.net"
    net.write_text(TINY_IMAGES)
    (root / "labels.txt").write_text("".join(f"class{i}\n" for i in range(10)))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "netdsl", "serve", str(net), "--ray", ray.get_runtime_context().gcs_address,
         "--port", str(port), "--max-batch", str(MAX_BATCH), "--batch-wait-ms", "250", "--max-body-mb", "1"],
        cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True).start()  # never let the pipe fill
    # The command says where it listens once the application is running; Ray may print log lines before that.
    before: list[str] = []
    for line in proc.stdout:
        if "netdsl serve:" in line:
            break
        before.append(line)
    else:
        line = ""
    if "netdsl serve:" not in line:
        proc.kill()
        pytest.fail(f"netdsl serve did not start: {''.join(before)[-2000:]!r} {''.join(stderr)[-3000:]}")
    base = f"http://127.0.0.1:{port}"
    assert f"{base}/v1/models/tiny" in line
    state = {"proc": proc, "stderr": stderr, "net": net}
    yield base, state
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def request(url: str, data: bytes | None = None, ctype: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers={"content-type": ctype} if ctype else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def png(seed: int, size=(40, 48)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def session(service):
    import netdsl

    return netdsl.Session(netdsl.load(service[1]["net"]))


def test_health_and_description(service):
    base, _ = service
    assert request(f"{base}/healthz") == (200, {"status": "ok"})
    status, desc = request(f"{base}/v1/models/tiny")
    assert status == 200
    assert desc["inputs"] == [{"name": "image", "shape": [-1, 3, 32, 32], "dtype": "float32"}]
    assert desc["outputs"] == [{"name": "logits", "shape": [-1, 10], "dtype": "float32"}]
    assert desc["preprocessing"]["image"]["resize"] == 36
    assert desc["preprocessing"]["image"]["mean"] == pytest.approx([0.5, 0.4, 0.3])
    assert desc["engine"]["engine"] == "ort" and desc["max_batch"] == MAX_BATCH


def test_predictions_equal_a_session_run(service, session):
    base, _ = service
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    expected = session.run(image=x)["logits"]
    status, answer = request(f"{base}/v1/models/tiny:predict", npy(x), "application/x-npy")
    assert status == 200, answer
    np.testing.assert_allclose(np.array(answer["outputs"]["logits"]), expected, rtol=1e-5, atol=1e-5)
    # JSON arrays: one sample, without the batch dimension
    status, answer = request(f"{base}/v1/models/tiny:predict", json.dumps({"inputs": x[0].tolist()}).encode(),
                             "application/json")
    assert status == 200, answer
    np.testing.assert_allclose(np.array(answer["outputs"]["logits"]), expected[:1], rtol=1e-5, atol=1e-5)
    # an image upload, preprocessed as declared (what `netdsl run` does with the same file)
    image = png(5)
    from netdsl.distributed import NamedBytes

    feed = session.preprocessing()["image"].load(NamedBytes(image, "upload"))[None]
    status, answer = request(f"{base}/v1/models/tiny:predict", image, "image/png")
    assert status == 200, answer
    np.testing.assert_allclose(np.array(answer["outputs"]["logits"]), session.run(image=feed)["logits"],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("body", "ctype", "status", "reason"), [
    (npy(np.zeros((2, 3, 16, 16), np.float32)), "application/x-npy", 400, "has shape 2x3x16x16"),
    (npy(np.zeros((1, 3, 32, 32), np.float64)), "application/x-npy", 400, "dtype float64"),
    (b"\x89PNG not an image at all", "image/png", 415, "not a readable image"),
    (b'{"inputs": [[1, 2], [3]]}', "application/json", 400, "rectangular"),
    (b"[1, 2", "application/json", 400, "not valid JSON"),
    (b"", "application/x-npy", 400, "empty body"),
    (bytes(2 * 2**20), "application/octet-stream", 413, "too large"),
])
def test_bad_requests_get_a_reason_and_the_replica_keeps_serving(service, body, ctype, status, reason):
    base, _ = service
    got, answer = request(f"{base}/v1/models/tiny:predict", body, ctype)
    assert got == status and reason in answer["error"] and "\n" not in answer["error"], answer
    ok, _ = request(f"{base}/v1/models/tiny:predict", npy(np.zeros((1, 3, 32, 32), np.float32)), "application/x-npy")
    assert ok == 200


def test_concurrent_requests_are_batched(service, session):
    base, _ = service
    xs = [np.random.default_rng(100 + i).standard_normal((1, 3, 32, 32)).astype(np.float32) for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda x: request(f"{base}/v1/models/tiny:predict", npy(x), "application/x-npy"), xs))
    assert all(status == 200 for status, _ in answers)
    batches = [answer["batch"] for _, answer in answers]
    assert max(batches) > 1 and max(batches) <= MAX_BATCH
    for x, (_, answer) in zip(xs, answers, strict=True):  # each answer is its own request's, not a neighbour's
        np.testing.assert_allclose(np.array(answer["outputs"]["logits"]), session.run(image=x)["logits"],
                                   rtol=1e-5, atol=1e-5)
    _, desc = request(f"{base}/v1/models/tiny")
    assert any(int(size) > 1 for size in desc["batches"])


def test_sigterm_stops_the_service_cleanly(service):  # last: it ends the module's service
    base, state = service
    proc = state["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 0, "".join(state["stderr"])[-3000:]
    assert "netdsl serve: stopped" in "".join(state["stderr"])
    assert "Traceback" not in "".join(state["stderr"])
    try:
        status, _ = request(f"{base}/v1/models/tiny")
    except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
        return  # nothing listens any more
    assert status == 404  # or Serve's proxy is up and the application is gone


def test_missing_ray_is_one_clear_message(tmp_path):
    (tmp_path / "tiny.net").write_text(TINY_IMAGES)
    (tmp_path / "hidden").mkdir()
    rc, out, err = run_netdsl("serve", tmp_path / "tiny.net", "--port", str(free_port()),
                              pythonpath=hide_modules(tmp_path / "hidden", "ray"))
    assert rc == 1 and out == ""
    assert 'pip install "netdsl[ray]"' in err and "Traceback" not in err
