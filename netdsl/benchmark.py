"""Benchmarking as a library: honest latency statistics of an engine call (``netdsl bench`` prints them).

Per batch size, :func:`bench_batch` runs a warm-up and then one tight timed loop (:func:`time_calls`):
``time.perf_counter`` around the engine call and nothing else, with the garbage collector paused as
:mod:`timeit` does. On the CPU the call is ``Runner.run`` (host arrays in, host arrays out). On a GPU
the feeds are bound once (``Runner.bind``: inputs in device memory, outputs left there) and the loop
times ``Bound.run`` + ``synchronize``: the device compute; round trips are then timed by the same
loop, each split into host-to-device (``bind``), compute and device-to-host (``fetch``), so copies are
reported beside the compute and never hidden in it. Compilation and engine preparation never enter
a latency figure.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from .errors import UsageError
from .preprocess import InputError

# ============================================================================= statistics


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ascending ``sorted_values``.

    Linear interpolation between the closest ranks (Hyndman & Fan type 7, numpy's default), so p50 is
    the median and p0/p100 are the min/max. With few samples the high percentiles are interpolated
    between the slowest runs: read them together with the iteration count.
    """
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of an empty sample")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    position = (n - 1) * q / 100
    lo = math.floor(position)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (position - lo)


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Latency of repeated calls, in milliseconds (``std`` is the population standard deviation)."""

    iterations: int
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> LatencyStats:
        """Statistics of per-call durations given in seconds; raises ValueError on an empty sample."""
        if not seconds:
            raise ValueError("no timed calls")
        ms = sorted(s * 1000.0 for s in seconds)
        n = len(ms)
        mean = math.fsum(ms) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in ms) / n)
        return cls(n, mean, std, ms[0], percentile(ms, 50), percentile(ms, 90), percentile(ms, 99), ms[-1])

    def throughput(self, batch: int) -> float:
        """Images (samples) per second at this mean latency."""
        return batch / (self.mean / 1000.0) if self.mean > 0 else math.inf

    def to_json(self) -> dict:
        return asdict(self)


# ============================================================================= timed loops
Progress = Callable[[float, int], None]  # (seconds elapsed in this phase, calls so far)
_REPORT_EVERY = 0.2  # seconds between progress updates; updates happen outside the timed window


def warm_up(fn: Callable[[], object], seconds: float, progress: Progress | None = None) -> tuple[int, float]:
    """Call ``fn`` once, then again until ``seconds`` have passed; returns (calls, seconds of the first call).

    The first call often pays for lazy initialisation (memory arenas, cuDNN algorithm search), so it is
    reported on its own and never counted as a latency sample.
    """
    clock = time.perf_counter
    start = clock()
    fn()
    first = clock() - start
    calls = 1
    deadline = start + seconds
    next_report = start + _REPORT_EVERY
    now = clock()
    while now < deadline:
        fn()
        calls += 1
        now = clock()
        if progress is not None and now >= next_report:
            progress(now - start, calls)
            next_report = now + _REPORT_EVERY
    return calls, first



def time_calls(fn: Callable[[], object], duration: float, min_iterations: int,
               progress: Progress | None = None) -> tuple[list[float], float]:
    """Seconds taken by each call of ``fn()``, for at least ``duration`` seconds and ``min_iterations`` calls.

    The one timed loop of netdsl. Only ``fn()`` sits between the two ``perf_counter`` reads; the garbage
    collector is paused while the loop runs. Returns the samples and the wall time of the whole loop.
    """
    clock = time.perf_counter
    samples: list[float] = []
    append = samples.append
    with _gc_paused():
        start = clock()
        deadline = start + duration
        next_report = start + _REPORT_EVERY
        while True:
            t0 = clock()
            fn()
            t1 = clock()
            append(t1 - t0)
            if t1 >= deadline and len(samples) >= min_iterations:
                break
            if progress is not None and t1 >= next_report:
                progress(t1 - start, len(samples))
                next_report = clock() + _REPORT_EVERY
        wall = clock() - start
    return samples, wall


def time_round_trips(runner, feeds: dict[str, np.ndarray], duration: float, min_iterations: int,
                     progress: Progress | None = None) -> tuple[dict[str, list[float]], float]:
    """Host-to-device (``bind``), compute (``run`` + ``synchronize``) and device-to-host (``fetch``) per call.

    :func:`time_calls` runs the round trips; each phase is timed on its own inside every one, and
    ``total`` is their span as measured end to end. ``bind`` also sets up the binding, so the
    host-to-device figure is an upper bound of the copy itself.
    """
    clock = time.perf_counter
    phases: dict[str, list[float]] = {"h2d": [], "compute": [], "d2h": [], "total": []}
    h2d, compute, d2h, total = (phases[k].append for k in ("h2d", "compute", "d2h", "total"))

    def round_trip() -> None:
        t0 = clock()
        bound = runner.bind(feeds)
        bound.synchronize()
        t1 = clock()
        bound.run()
        bound.synchronize()
        t2 = clock()
        bound.fetch()
        t3 = clock()
        h2d(t1 - t0)
        compute(t2 - t1)
        d2h(t3 - t2)
        total(t3 - t0)

    _, wall = time_calls(round_trip, duration, min_iterations, progress)
    return phases, wall


@contextlib.contextmanager
def _gc_paused():
    """The garbage collector off for a timed loop (as :mod:`timeit` does), restored afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ============================================================================= bench
_ENGINE_PACKAGES = {"ort": "onnxruntime", "trt": "tensorrt"}


class ProgressBar(Protocol):
    """Where :func:`bench_batch` reports progress (the CLI's bar on stderr): a phase, then updates."""

    def phase(self, description: str, total: float) -> None: ...

    def update(self, elapsed: float, calls: int) -> None: ...


def check_batches(session, batches: tuple[int, ...]) -> None:
    for spec in session.inputs:
        fixed = spec.shape[0] if spec.shape else None
        if fixed is not None and any(b != fixed for b in batches):
            raise UsageError(f"input `{spec.name}` has a fixed batch size of {fixed} ({spec.describe()}); "
                             f"use --batch {fixed}")


def _feeds(session, batch: int, seed: int) -> dict[str, np.ndarray]:
    try:
        feeds = session.random_feeds(batch, seed)
    except (MemoryError, ValueError) as e:
        raise InputError(f"--batch {batch}: cannot allocate the input batch ({type(e).__name__}: {e})") from None
    session.check_feeds(feeds)
    return feeds


def bench_batch(session, batch: int, *, warmup: float, duration: float, min_iterations: int, seed: int,
                bar: ProgressBar | None = None, bound: bool | None = None, cuda_graph: bool = False) -> dict:
    """Warm up and time one batch size; returns its JSON record (latencies in ms, throughput in images/s).

    ``bound``: time IO-bound runs plus round trips with copies (the GPU method); None chooses it for
    every device but the CPU. ``cuda_graph``: replay the bound run as a CUDA graph (``Bound.capture_graph``;
    engines that cannot say so).
    """
    runner = session.runner
    feeds = _feeds(session, batch, seed)
    on_device = session.device != "cpu" if bound is None else bound
    record: dict = {"batch": batch}

    def progress(phase: str, total: float) -> Progress | None:
        if bar is None:
            return None
        bar.phase(f"batch {batch}: {phase}", total)
        return bar.update

    if not on_device:
        if cuda_graph:
            raise UsageError("--cuda-graph applies to GPU devices only")
        call = functools.partial(runner.run, feeds)
        warm_calls, first = warm_up(call, warmup, progress("warm-up", warmup))
        samples, wall = time_calls(call, duration, min_iterations, progress("timing", duration))
        stats = LatencyStats.of(samples)
        record.update(iterations=stats.iterations, warmup_iterations=warm_calls, first_run_ms=first * 1000,
                      timed_seconds=wall, latency_ms=stats.to_json(), throughput_ips=stats.throughput(batch))
        return record

    # GPU: device compute on bound feeds, then round trips with the copies timed on their own.
    half = duration / 2
    record.update(_time_bound(runner.bind(feeds), batch, warmup, half, min_iterations, progress, cuda_graph))
    phases, trip_wall = time_round_trips(runner, feeds, half, min_iterations, progress("with copies", half))
    total = LatencyStats.of(phases["total"])
    record["with_copies"] = {"iterations": total.iterations, "timed_seconds": trip_wall,
                             "latency_ms": total.to_json(), "throughput_ips": total.throughput(batch),
                             "h2d_ms": LatencyStats.of(phases["h2d"]).to_json(),
                             "compute_ms": LatencyStats.of(phases["compute"]).to_json(),
                             "d2h_ms": LatencyStats.of(phases["d2h"]).to_json()}
    return record


def _time_bound(bound, batch: int, warmup: float, duration: float, min_iterations: int,
                progress: Callable[[str, float], Progress | None], cuda_graph: bool) -> dict:
    """Warm up and time ``bound.run()`` + ``synchronize()``; the device buffers are freed on return.

    ``cuda_graph`` uses ``Bound.capture_graph()``; ``Bound.device_time_ms(n)`` (GPU time of n back-to-back
    runs from CUDA events, None for engines without such a clock) is reported beside the host clock.
    """
    if cuda_graph:
        bound.capture_graph()
    run, synchronize = bound.run, bound.synchronize

    def step() -> None:
        run()
        synchronize()

    warm_calls, first = warm_up(step, warmup, progress("warm-up", warmup))
    samples, wall = time_calls(step, duration, min_iterations, progress("device compute", duration))
    stats = LatencyStats.of(samples)
    out = {"iterations": stats.iterations, "warmup_iterations": warm_calls, "first_run_ms": first * 1000,
           "timed_seconds": wall, "latency_ms": stats.to_json(), "throughput_ips": stats.throughput(batch)}
    device_ms = bound.device_time_ms(min(max(stats.iterations, 10), 1000))
    if device_ms is not None:
        out["device_event_ms"] = float(device_ms)
    return out

def versions(description: dict, engine: str) -> dict:
    """The versions a benchmark figure depends on: netdsl, Python, numpy, onnx and the engine's package."""
    from .machine import dist_version
    from .version import __version__

    out = {"netdsl": __version__, "python": platform.python_version(), "numpy": np.__version__}
    onnx_version = dist_version("onnx")  # from its installed metadata: a benchmark of a .onnx never imports onnx
    if onnx_version is not None:
        out["onnx"] = onnx_version
    package = _ENGINE_PACKAGES.get(engine, engine)
    out[package] = description.get("engine_version")
    if engine == "ort":
        from .machine import ort_distributions

        out["onnxruntime_distribution"] = ", ".join(d["name"] for d in ort_distributions()) or None
    return out


def host(description: dict, on_device: bool) -> dict:
    """The machine a benchmark ran on: CPU (or the device's name on the CPU), platform and core counts."""
    from .machine import available_cpus, cpu_name, physical_cores

    return {"cpu": description.get("device_name") if not on_device else cpu_name(), "platform": platform.platform(),
            "physical_cores": physical_cores(), "logical_cores": available_cpus()}
