"""`netdsl bench`: the CLI as a user runs it (in-process with captured streams, a subprocess for the terminal;
CPU, tiny networks, short durations), the statistics it reports, and the timing loops it is built on."""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import pty
import subprocess
import sys

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper

import netdsl
from netdsl.benchmark import LatencyStats, bench_batch, percentile, time_calls, warm_up
from netdsl.cli.bench import _print_bench, batch_list
from netdsl.doctor import probe

TINY = """
network tiny(classes=4) {
    input image: 3x16x16
    conv 8 3x3 pad 1 -> relu
    maxpool 2x2 /2
    avgpool global -> flatten
    fc classes
    output logits
}
"""
SHORT = ("--duration", "0.2", "--warmup", "0.05", "--threads", "1")
STAT_KEYS = {"iterations", "mean", "std", "min", "p50", "p90", "p99", "max"}


@pytest.fixture(scope="module")
def cuda() -> bool:
    """Whether ONNX Runtime runs a model on CUDA here (probed when a test asks, not at import)."""
    return bool(probe("ort", "cuda")["ran"])


@pytest.fixture
def tiny(write_net):
    return write_net("tiny.net", TINY)


def _check_stats(lat: dict) -> None:
    assert set(lat) == STAT_KEYS
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"]
    assert lat["std"] >= 0


# ----------------------------------------------------------------------------- the CLI
def test_json_report_has_sane_figures_per_batch(tiny, run_cli):
    rc, out, err = run_cli("bench", tiny, "--batch", "1,4", *SHORT, "--json")
    assert rc == 0, err
    assert err == ""  # no progress bar with --json
    r = json.loads(out)
    assert r["model"] == "tiny" and r["engine"] == "ort" and r["device"] == "cpu"
    assert r["threads"] == 1 and r["opt_level"] == "all" and r["providers"] == ["CPUExecutionProvider"]
    import onnxruntime

    assert r["versions"]["netdsl"] == netdsl.__version__
    assert r["versions"]["numpy"] == np.__version__
    assert r["versions"]["onnx"] == onnx.__version__
    assert r["versions"]["onnxruntime"] == onnxruntime.__version__
    assert r["device_name"] and r["host"]["physical_cores"] >= 1
    assert r["settings"]["batches"] == [1, 4] and r["settings"]["duration_seconds"] == 0.2
    # compilation and engine preparation are reported on their own, not per batch
    assert r["compile_seconds"] > 0 and r["prepare_seconds"] > 0
    assert [x["batch"] for x in r["results"]] == [1, 4]
    for x in r["results"]:
        lat = x["latency_ms"]
        _check_stats(lat)
        assert x["iterations"] == lat["iterations"] >= 10
        assert x["timed_seconds"] >= 0.2
        # samples time the call alone: together they fit in the loop's wall time
        assert lat["mean"] * lat["iterations"] / 1000 <= x["timed_seconds"]
        # ... and engine preparation (tens of ms) is not in them
        assert lat["min"] < r["prepare_seconds"] * 1000
        assert x["throughput_ips"] == pytest.approx(x["batch"] / (lat["mean"] / 1000), rel=1e-9)
        assert x["first_run_ms"] > 0 and x["warmup_iterations"] >= 1
        assert not {"compile_seconds", "prepare_seconds", "with_copies"} & set(x)


def test_table_output_and_no_progress_bar_without_a_terminal(tiny, run_cli):
    rc, out, err = run_cli("bench", tiny, "--batch", "2", *SHORT, "--opt-level", "basic")
    assert rc == 0, err
    assert err == ""
    for text in ("tiny on ort:cpu", "1 threads", "optimisation level basic", "latency (ms)", "p50", "p90",
                 "p99", "images/s", f"netdsl {netdsl.__version__}", "onnxruntime", "compile", "engine preparation"):
        assert text in out, text
    row = [line for line in out.splitlines() if line.strip("│ ").startswith("2 ")]
    assert row, out


def test_progress_bar_goes_to_a_terminal_stderr_only(tiny):
    from helpers import cli_env

    def run(*extra: str) -> tuple[int, str, str]:
        master, slave = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "netdsl", "bench", str(tiny), "--duration", "0.5",
                                 "--warmup", "0.3", "--threads", "1", *extra], stdout=subprocess.PIPE,
                                stderr=slave, env={**cli_env(), "TERM": "xterm"})
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        out = proc.stdout.read().decode()
        proc.wait(timeout=60)
        os.close(master)
        return proc.returncode, out, b"".join(chunks).decode("utf-8", "replace")

    rc, out, tty = run()
    assert rc == 0, tty
    assert "batch 1: timing" in tty or "batch 1: warm-up" in tty, tty
    assert "latency (ms)" in out and "batch 1" not in out, out
    rc, out, tty = run("--json")
    assert rc == 0 and tty == "", tty
    assert json.loads(out)["results"][0]["batch"] == 1


def test_a_compiled_onnx_model_benches_too(tiny, tmp_path, run_cli):
    onnx_path = tmp_path / "tiny.onnx"
    assert run_cli("compile", tiny, "-o", onnx_path, "-q")[0] == 0
    rc, out, err = run_cli("bench", onnx_path, "--batch", "3", *SHORT, "--json")
    assert rc == 0, err
    r = json.loads(out)
    assert r["results"][0]["batch"] == 3 and r["results"][0]["iterations"] >= 10


def test_a_fixed_batch_model_names_the_batch_it_accepts(tmp_path, run_cli):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "fixed",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "fixed.onnx"
    onnx.save(model, path)
    rc, out, err = run_cli("bench", path, "--batch", "1,2", *SHORT)
    assert rc == 2 and out == ""
    assert "fixed batch size of 1" in err and "--batch 1" in err and "Traceback" not in err
    rc, out, err = run_cli("bench", path, "--batch", "1", *SHORT, "--json")
    assert rc == 0, err


@pytest.mark.parametrize("args, message", [
    (["--batch", "0"], "positive integers"),
    (["--batch", "1,x"], "positive integers"),
    (["--batch", "1,,8"], "positive integers"),
    (["--duration", "0"], "more than zero"),
    (["--duration", "nan"], "more than zero"),
    (["--warmup", "-0.5"], "zero or more"),
    (["--min-iterations", "0"], "positive integer"),
    (["--threads", "0"], "--threads"),
    (["--device", "gpu"], "runs on"),
    (["--engine", "nope"], "unknown engine"),
    (["--cuda-graph"], "--cuda-graph"),
])
def test_bad_options_exit_2_without_a_traceback(tiny, run_cli, args, message):
    rc, out, err = run_cli("bench", tiny, "--duration", "0.1", *args)
    assert rc == 2, err
    assert message in err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("device, provider", [("cuda", "CUDAExecutionProvider"),
                                              ("tensorrt", "TensorrtExecutionProvider")])
def test_gpu_device_without_cuda_stops_instead_of_falling_back(tiny, run_cli, device, provider, cuda):
    if cuda:
        pytest.skip("CUDA works here; this checks the refusal on machines without it")
    rc, out, err = run_cli("bench", tiny, "--device", device, *SHORT)
    assert rc == 1
    assert f"--device {device} needs ONNX Runtime's {provider}" in err
    assert "Traceback" not in err
    assert out == ""  # no figures measured on the CPU instead


# ----------------------------------------------------------------------------- the GPU method, on any device
def test_bound_timing_splits_round_trips_into_copies_and_compute():
    """The GPU path (IO binding, copies timed apart) run through ONNX Runtime's CPU IO binding."""
    session = netdsl.Session(netdsl.load(TINY.strip()), threads=1)
    r = bench_batch(session, 2, warmup=0.02, duration=0.2, min_iterations=5, seed=0, bound=True)
    _check_stats(r["latency_ms"])
    w = r["with_copies"]
    for key in ("latency_ms", "h2d_ms", "compute_ms", "d2h_ms"):
        _check_stats(w[key])
        assert w[key]["iterations"] == w["iterations"] >= 5
    # each round trip is exactly bind + run + fetch, so the means add up
    parts = w["h2d_ms"]["mean"] + w["compute_ms"]["mean"] + w["d2h_ms"]["mean"]
    assert w["latency_ms"]["mean"] == pytest.approx(parts, rel=1e-6)
    assert w["throughput_ips"] == pytest.approx(2 / (w["latency_ms"]["mean"] / 1000), rel=1e-9)
    assert r["latency_ms"]["min"] <= w["latency_ms"]["p50"]
    assert "device_event_ms" not in r  # ONNX Runtime has no device clock to report


def test_cuda_graphs_on_an_engine_without_them_is_a_usage_error():
    from netdsl.errors import UsageError

    session = netdsl.Session(netdsl.load(TINY.strip()), threads=1)
    with pytest.raises(UsageError, match="cannot replay runs as CUDA graphs"):
        bench_batch(session, 2, warmup=0.01, duration=0.05, min_iterations=2, seed=0, bound=True, cuda_graph=True)


def test_the_table_of_a_gpu_report_shows_copies_apart(capsys):
    session = netdsl.Session(netdsl.load(TINY.strip()), threads=1)
    result = bench_batch(session, 1, warmup=0.01, duration=0.05, min_iterations=3, seed=0, bound=True)
    report = {"model": "tiny", "engine": "ort", "device": "cuda", "device_name": "some GPU", "threads": 1,
              "opt_level": "all", "versions": {"netdsl": netdsl.__version__}, "compile_seconds": 0.1,
              "prepare_seconds": 0.2, "timing": "Bound.run", "results": [result],
              "settings": {"warmup_seconds": 0.01, "duration_seconds": 0.05, "min_iterations": 3, "dtype": "fp32"}}
    _print_bench(report, on_device=True)
    out = capsys.readouterr().out
    assert "device compute (ms)" in out and "with host copies" in out
    assert "h2d" in out and "d2h" in out


@pytest.mark.gpu
def test_cuda_bench_reports_device_compute_and_copies(tiny, run_cli, cuda):
    if not cuda:
        pytest.skip("needs an NVIDIA GPU")
    rc, out, err = run_cli("bench", tiny, "--device", "cuda", "--batch", "1,8", "--duration", "0.4",
                           "--warmup", "0.2", "--json")
    assert rc == 0, err
    r = json.loads(out)
    assert "CUDAExecutionProvider" in r["providers"][0] and "IO binding" in r["timing"]
    assert [x["batch"] for x in r["results"]] == [1, 8]
    for x in r["results"]:
        _check_stats(x["latency_ms"])
        w = x["with_copies"]
        for key in ("latency_ms", "h2d_ms", "compute_ms", "d2h_ms"):
            _check_stats(w[key])
        assert x["latency_ms"]["p50"] <= w["latency_ms"]["p50"] * 1.5


# ----------------------------------------------------------------------------- statistics
def test_percentile_known_values():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0 and percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([7.0], 90) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


@given(st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=200), st.floats(0, 100))
def test_percentile_agrees_with_numpy(values, q):
    ordered = sorted(values)
    assert percentile(ordered, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-9)


def test_latency_stats_convert_seconds_to_milliseconds():
    s = LatencyStats.of([0.003, 0.001, 0.002])
    assert (s.iterations, s.min, s.p50, s.max) == (3, 1.0, 2.0, 3.0)
    assert s.mean == pytest.approx(2.0) and s.std == pytest.approx(math.sqrt(2 / 3))
    assert s.p90 == pytest.approx(2.8) and s.p99 == pytest.approx(2.98)
    assert s.throughput(8) == pytest.approx(4000.0)
    assert set(s.to_json()) == STAT_KEYS
    with pytest.raises(ValueError):
        LatencyStats.of([])


def test_batch_list_parsing():
    assert batch_list("1,8,32") == (1, 8, 32)
    assert batch_list(" 4 , 2 ") == (4, 2)
    assert batch_list("8,1,8") == (8, 1)
    for bad in ("", "0", "1,-1", "a", "1,,2", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            batch_list(bad)


# ----------------------------------------------------------------------------- timing loops
def test_time_calls_runs_for_the_duration_and_the_minimum_count():
    calls = []
    samples, wall = time_calls(lambda: calls.append(1), 1e-6, 7)
    assert len(samples) == len(calls) == 7
    samples, wall = time_calls(lambda: sum(range(100)), 0.05, 1)
    assert wall >= 0.05 and all(s >= 0 for s in samples)
    assert math.fsum(samples) <= wall
    assert gc.isenabled()


def test_time_calls_reports_progress_outside_the_timed_window():
    seen = []
    time_calls(lambda: sum(range(1000)), 0.5, 1, progress=lambda t, n: seen.append((t, n)))
    assert seen and all(t > 0 for t, _ in seen)  # no upper bound: a loaded machine may pause the loop anywhere
    assert [t for t, _ in seen] == sorted(t for t, _ in seen)
    assert [n for _, n in seen] == sorted(n for _, n in seen)


def test_warm_up_runs_at_least_once():
    calls = []
    n, first = warm_up(lambda: calls.append(1), 0)
    assert n == len(calls) == 1 and first >= 0
    n, _ = warm_up(lambda: calls.append(1), 0.02)
    assert n >= 1
