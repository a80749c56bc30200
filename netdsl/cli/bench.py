"""`netdsl bench`: honest latency figures (`netdsl doctor` lives in netdsl/cli_doctor.py).

``netdsl bench MODEL --batch 1,8,32 --duration 10`` opens one :class:`netdsl.Session` (compilation and
engine preparation are timed on their own and never enter a latency figure), then per batch size runs a
warm-up and a tight timed loop: ``time.perf_counter`` around the engine call and nothing else, with the
garbage collector paused as :mod:`timeit` does. On the CPU the call is ``Runner.run`` (host arrays in,
host arrays out). On a GPU the feeds are bound once (``Runner.bind``: inputs in device memory, outputs
left there) and the loop times ``Bound.run`` + ``synchronize``: the device compute; a second loop then
times round trips split into host-to-device (``bind``), compute and device-to-host (``fetch``), so copies
are reported beside the compute and never hidden in it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

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

    Only ``fn()`` sits between the two ``perf_counter`` reads; the garbage collector is paused while the
    loop runs. Returns the samples and the wall time of the whole loop.
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

    Each phase is timed on its own in every round trip; ``total`` is their sum as measured end to end.
    ``bind`` also sets up the binding, so the host-to-device figure is an upper bound of the copy itself.
    """
    clock = time.perf_counter
    phases: dict[str, list[float]] = {"h2d": [], "compute": [], "d2h": [], "total": []}
    h2d, compute, d2h, total = (phases[k].append for k in ("h2d", "compute", "d2h", "total"))
    with _gc_paused():
        start = clock()
        deadline = start + duration
        next_report = start + _REPORT_EVERY
        while True:
            t0 = clock()
            bound = runner.bind(feeds)
            bound.synchronize()
            t1 = clock()
            bound.run()
            bound.synchronize()
            t2 = clock()
            bound.fetch()
            t3 = clock()
            del bound
            h2d(t1 - t0)
            compute(t2 - t1)
            d2h(t3 - t2)
            total(t3 - t0)
            if t3 >= deadline and len(phases["total"]) >= min_iterations:
                break
            if progress is not None and t3 >= next_report:
                progress(t3 - start, len(phases["total"]))
                next_report = clock() + _REPORT_EVERY
        wall = clock() - start
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


def batch_list(text: str) -> tuple[int, ...]:
    """``"1,8,32"`` -> (1, 8, 32): positive integers, duplicates dropped, order kept (argparse type)."""
    items = [t.strip() for t in text.split(",")]
    hint = f"expected a comma-separated list of positive integers such as 1,8,32, got {text!r}"
    if not all(items):
        raise argparse.ArgumentTypeError(hint)
    try:
        values = [int(t) for t in items]
    except ValueError:
        raise argparse.ArgumentTypeError(hint) from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(hint)
    return tuple(dict.fromkeys(values))


def _seconds(text: str, *, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise argparse.ArgumentTypeError(f"expected a number of seconds, {bound}; got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    return _seconds(text, allow_zero=False)


def non_negative_seconds(text: str) -> float:
    return _seconds(text, allow_zero=True)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _check_batches(session, batches: tuple[int, ...]) -> None:
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
                bar: _Bar | None = None, bound: bool | None = None, cuda_graph: bool = False) -> dict:
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


class _Bar:
    """A rich progress bar on stderr, redrawn only between timed calls (no refresh thread)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[runs]}"),
                                  TimeRemainingColumn(), console=Console(stderr=True), transient=True,
                                  auto_refresh=False)
        self._task = None

    def __enter__(self) -> _Bar:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def phase(self, description: str, total: float) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(description, total=max(total, 1e-9), runs="")
        self._progress.refresh()

    def update(self, elapsed: float, calls: int) -> None:
        self._progress.update(self._task, completed=elapsed, runs=f"{calls} runs", refresh=True)


def _versions(description: dict, engine: str) -> dict:
    from . import __version__

    versions = {"netdsl": __version__, "python": platform.python_version(), "numpy": np.__version__}
    with contextlib.suppress(ImportError):
        import onnx

        versions["onnx"] = onnx.__version__
    package = _ENGINE_PACKAGES.get(engine, engine)
    versions[package] = description.get("engine_version")
    if engine == "ort":
        from .cli_doctor import ort_distributions

        versions["onnxruntime_distribution"] = ", ".join(d["name"] for d in ort_distributions()) or None
    return versions


def cmd_bench(args: argparse.Namespace) -> int:
    from .cli_runtime import open_session
    from .engines import physical_cores

    if args.cuda_graph and args.device == "cpu":
        raise UsageError("--cuda-graph applies to GPU devices only")
    show_bar = not args.json and sys.stderr.isatty()
    start = time.perf_counter()
    # batch_range: the TensorRT optimisation profile covering every timed batch (other engines ignore it)
    session = open_session(args, progress=show_bar,
                           batch_range=(min(args.batch), max(args.batch), max(args.batch)))
    opened = time.perf_counter() - start
    _check_batches(session, args.batch)
    description = session.describe()
    on_device = session.device != "cpu"
    report = {
        "model": session.name, "source": args.model, **description,
        "versions": _versions(description, session.engine),
        "host": {"cpu": description.get("device_name") if not on_device else _cpu(), "platform": platform.platform(),
                 "physical_cores": physical_cores(), "logical_cores": os.cpu_count()},
        # compile: .net parse, check and lowering to ONNX (reading the file for .onnx); prepare: the engine's
        # session creation / engine build. Neither enters any latency figure.
        "compile_seconds": max(0.0, opened - session.prepare_seconds),
        "prepare_seconds": session.prepare_seconds,
        "timing": ("Bound.run + synchronize on feeds bound to the device (IO binding), outputs left on the "
                   "device; copies timed separately in with_copies") if on_device else
                  "Runner.run: host arrays in, host arrays out",
        "settings": {"batches": list(args.batch), "warmup_seconds": args.warmup, "duration_seconds": args.duration,
                     "min_iterations": args.min_iterations, "seed": args.seed,
                     "dtype": getattr(args, "dtype", "fp32"), "cuda_graph": args.cuda_graph},
        "results": [],
    }
    with _Bar() if show_bar else contextlib.nullcontext() as bar:
        for batch in args.batch:
            report["results"].append(bench_batch(session, batch, warmup=args.warmup, duration=args.duration,
                                                 min_iterations=args.min_iterations, seed=args.seed, bar=bar,
                                                 cuda_graph=args.cuda_graph))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print_bench(report, on_device)
    return 0


def _cpu() -> str:
    from .engines import cpu_name

    return cpu_name()


def _print_bench(report: dict, on_device: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    v = report["versions"]
    s = report["settings"]
    setup = [f"{report['threads']} threads" if report.get("threads") else "",
             f"optimisation level {report['opt_level']}" if report.get("opt_level") else "",
             f"precision {s['dtype']}", "CUDA graphs" if s.get("cuda_graph") else ""]
    console.print(f"{report['model']} on {report['engine']}:{report['device']} ({report.get('device_name')}), "
                  + ", ".join(x for x in setup if x), markup=False)
    console.print(", ".join(f"{k} {val}" for k, val in v.items() if val and k != "onnxruntime_distribution")
                  + (f" ({v['onnxruntime_distribution']})" if v.get("onnxruntime_distribution") else ""),
                  markup=False)
    console.print(f"compile {report['compile_seconds'] * 1000:.0f} ms, engine preparation "
                  f"{report['prepare_seconds'] * 1000:.0f} ms (neither is in the latencies below)", markup=False)
    console.print(f"timed: {report['timing']}; warm-up {s['warmup_seconds']:g} s, then {s['duration_seconds']:g} s "
                  f"and at least {s['min_iterations']} runs per batch size", markup=False)
    table = Table(title="device compute (ms)" if on_device else "latency (ms)", title_justify="left")
    for col in ("batch", "runs", "mean", "p50", "p90", "p99", "min", "images/s", "first run"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        lat = r["latency_ms"]
        table.add_row(str(r["batch"]), str(r["iterations"]), *(_ms(lat[k]) for k in ("mean", "p50", "p90", "p99",
                                                                                  "min")),
                      f"{r['throughput_ips']:,.1f}", _ms(r["first_run_ms"]))
    console.print(table)
    if on_device:
        table = Table(title="with host copies (ms): host-to-device + compute + device-to-host", title_justify="left")
        for col in ("batch", "runs", "h2d", "compute", "d2h", "total mean", "total p50", "total p99", "images/s"):
            table.add_column(col, justify="right")
        for r in report["results"]:
            w = r["with_copies"]
            table.add_row(str(r["batch"]), str(w["iterations"]), _ms(w["h2d_ms"]["mean"]),
                          _ms(w["compute_ms"]["mean"]), _ms(w["d2h_ms"]["mean"]), _ms(w["latency_ms"]["mean"]),
                          _ms(w["latency_ms"]["p50"]), _ms(w["latency_ms"]["p99"]), f"{w['throughput_ips']:,.1f}")
        console.print(table)


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


# ============================================================================= commands
def register(sub) -> None:
    from .cli_runtime import add_model_options

    p = sub.add_parser("bench", help="latency and throughput per batch size (warm-up, then timed runs)",
                       description="Time a network on one engine and device: per batch size a warm-up, then "
                                   "timed runs; latency mean/p50/p90/p99/min and throughput. Compilation and "
                                   "engine preparation are reported separately, never in the latencies.")
    add_model_options(p)
    p.add_argument("--batch", type=batch_list, default=(1,), metavar="N[,N...]",
                   help="batch sizes to time, e.g. 1,8,32 (default 1)")
    p.add_argument("--duration", type=positive_seconds, default=10.0, metavar="SECONDS",
                   help="timed seconds per batch size, after the warm-up (default 10; on a GPU split evenly "
                        "between device compute and round trips with copies)")
    p.add_argument("--warmup", type=non_negative_seconds, default=2.0, metavar="SECONDS",
                   help="warm-up seconds per batch size, not timed (default 2; at least one run)")
    p.add_argument("--min-iterations", type=positive_int, default=10, metavar="N",
                   help="time at least N runs per batch size even past --duration (default 10)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="GPU: replay each run as a CUDA graph (engines that support it: trt)")
    p.add_argument("--json", action="store_true", help="print one JSON object (no progress bar)")
    p.set_defaults(func=cmd_bench)
