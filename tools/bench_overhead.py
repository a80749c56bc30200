"""netdsl's overhead in ``Session.run`` over the raw ``onnxruntime.InferenceSession.run`` call.

    python tools/bench_overhead.py                     # resnet50 and lenet5 at batch 1, markdown table
    python tools/bench_overhead.py --rounds 40 --json  # more rounds, machine-readable

Both sides call the *same* InferenceSession (the one netdsl prepared), so the session options, thread
pools and memory arenas are identical and the difference is exactly what ``Session.run`` adds: the feed
checks (names, dtypes, shapes), the keyword/dict handling and the output dict. In one process the two
calls alternate in rounds (A then B, then B then A, ...), each round timing ``--runs`` calls of each,
so drift in clock speed or background load hits both alike. Reported per network: the median latency
of each side over all calls, the ratio of the medians, the median of the per-round ratios, and the
Python-side cost of ``Session.run`` measured directly (``check_feeds`` + dicts, no inference), which
is the overhead free of inference noise.

Target (issue 3): ratio below 1.02 at batch 1 on resnet50.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import netdsl  # noqa: E402
from netdsl.engines import cpu_name, physical_cores  # noqa: E402

NETWORKS = {"resnet50": ROOT / "networks" / "resnet50.net", "lenet5": ROOT / "networks" / "lenet5.net"}


def _timed(fn, runs: int) -> list[float]:
    clock = time.perf_counter
    out = []
    for _ in range(runs):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def measure(name: str, rounds: int, runs: int | None, threads: int | None, batch: int) -> dict:
    session = netdsl.Session(netdsl.load(NETWORKS[name]), threads=threads)
    raw = session.runner.session  # the onnxruntime.InferenceSession netdsl prepared
    feeds = session.random_feeds(batch)
    (input_name,) = feeds
    x = feeds[input_name]

    def netdsl_run():
        return session.run(**{input_name: x})

    def raw_run():
        return raw.run(None, {input_name: x})

    np.testing.assert_array_equal(netdsl_run()[session.outputs[0].name], raw_run()[0])
    for _ in range(3):  # warm-up: arenas, caches
        netdsl_run()
        raw_run()
    if runs is None:  # about 0.3 s per side per round
        per_call = min(_timed(raw_run, 5))
        runs = max(5, min(2000, int(0.3 / max(per_call, 1e-6))))
    a_all: list[float] = []
    b_all: list[float] = []
    ratios = []
    gc.disable()
    try:
        for r in range(rounds):
            if r % 2 == 0:
                a, b = _timed(netdsl_run, runs), _timed(raw_run, runs)
            else:
                b, a = _timed(raw_run, runs), _timed(netdsl_run, runs)
            a_all += a
            b_all += b
            ratios.append(statistics.median(a) / statistics.median(b))
    finally:
        gc.enable()
    # the Python-side work of Session.run, without inference: feed checks and dict handling
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        f = {input_name: x}
        session.check_feeds(f)
    python_side = (time.perf_counter() - t0) / n
    med_a, med_b = statistics.median(a_all), statistics.median(b_all)
    return {"network": name, "batch": batch, "threads": session.runner.threads, "rounds": rounds, "runs": runs,
            "raw_ms": med_b * 1e3, "netdsl_ms": med_a * 1e3, "ratio": med_a / med_b,
            "median_round_ratio": statistics.median(ratios), "python_side_us": python_side * 1e6,
            "python_side_fraction": python_side / med_b}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--networks", default="resnet50,lenet5", help="comma list of: " + ", ".join(NETWORKS))
    p.add_argument("--rounds", type=int, default=20, help="interleaved A/B rounds (default 20)")
    p.add_argument("--runs", type=int, help="calls per side per round (default: about 0.3 s worth)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: netdsl's, the physical cores)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import onnxruntime

    results = [measure(n.strip(), args.rounds, args.runs, args.threads, args.batch)
               for n in args.networks.split(",")]
    env = {"cpu": cpu_name(), "physical_cores": physical_cores(), "logical_cores": os.cpu_count(),
           "python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
           "netdsl": netdsl.__version__}
    if args.json:
        print(json.dumps({"environment": env, "results": results}, indent=1))
        return 0
    print(f"{env['cpu']}, {env['physical_cores']} physical cores; Python {env['python']}, onnxruntime "
          f"{env['onnxruntime']}, numpy {env['numpy']}, netdsl {env['netdsl']}\n")
    print("| network | batch | threads | rounds x runs | raw ORT median (ms) | Session.run median (ms) | ratio "
          "| median of round ratios | Session.run Python side (µs) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['network']} | {r['batch']} | {r['threads']} | {r['rounds']} x {r['runs']} | {r['raw_ms']:.4f} "
              f"| {r['netdsl_ms']:.4f} | {r['ratio']:.4f} | {r['median_round_ratio']:.4f} "
              f"| {r['python_side_us']:.2f} ({r['python_side_fraction'] * 100:.3f}%) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
