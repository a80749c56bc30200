"""`netdsl bench`: honest latency figures per batch size (the timing itself is :mod:`netdsl.benchmark`).

``netdsl bench MODEL --batch 1,8,32 --duration 10`` opens one :class:`netdsl.Session` (compilation and
engine preparation are timed on their own and never enter a latency figure), then per batch size runs
:func:`netdsl.benchmark.bench_batch`: a warm-up and a tight timed loop.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time

from ..benchmark import bench_batch, check_batches, host, versions
from ..errors import UsageError
from .common import add_model_options, open_session, print_json


# ============================================================================= argument types
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


def cmd_bench(args: argparse.Namespace) -> int:
    if args.cuda_graph and args.device == "cpu":
        raise UsageError("--cuda-graph applies to GPU devices only")
    show_bar = not args.json and sys.stderr.isatty()
    start = time.perf_counter()
    # batch_range: the TensorRT optimisation profile covering every timed batch (other engines ignore it)
    session = open_session(args, progress=show_bar,
                           batch_range=(min(args.batch), max(args.batch), max(args.batch)))
    opened = time.perf_counter() - start
    check_batches(session, args.batch)
    description = session.describe()
    on_device = session.device != "cpu"
    report = {
        "model": session.name, "source": args.model, **description,
        "versions": versions(description, session.engine),
        "host": host(description, on_device),
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
        print_json(report)
    else:
        _print_bench(report, on_device)
    return 0



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
