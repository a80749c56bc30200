"""netdsl's overhead in ``Session.run`` over the raw ``onnxruntime.InferenceSession.run`` call.

    python tools/bench_overhead.py                     # resnet50 and lenet5 at batch 1, markdown table
    python tools/bench_overhead.py --rounds 40 --json  # more rounds, machine-readable

Both sides call the *same* InferenceSession (the one netdsl prepared), so the session options, thread
pools and memory arenas are identical and the difference is exactly what ``Session.run`` adds: the feed
checks (names, dtypes, shapes), the keyword/dict handling and the output dict. In one process the two
calls alternate one by one (A, B, A, B, ...; the order flips every round of ``--runs`` pairs), so drift
in clock speed or background load hits both alike. Reported per network: the median latency of each
side, the ratio of the medians, the median of the paired differences (A - B of neighbouring calls: the
overhead itself, in µs, and as a fraction of the raw median), and the cost of the feed checks alone.
The overhead is a fixed cost per call (it depends on the number of inputs and outputs, not on the
network), so the small network, whose calls take tens of µs, resolves it precisely; on resnet50 the
same microseconds disappear in the run-to-run noise of a 30 ms call.

Target: ratio below 1.02 at batch 1 on resnet50.
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
import timeit
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import netdsl  # noqa: E402
from netdsl.engines import cpu_name, physical_cores  # noqa: E402

NETWORKS = {"resnet50": ROOT / "networks" / "resnet50.net", "lenet5": ROOT / "networks" / "lenet5.net"}


def _paired(first, second, runs: int) -> tuple[list[float], list[float]]:
    """``runs`` pairs of calls, ``first()`` then ``second()``, each timed on its own."""
    clock = time.perf_counter
    a, b = [], []
    for _ in range(runs):
        t0 = clock()
        first()
        t1 = clock()
        second()
        t2 = clock()
        a.append(t1 - t0)
        b.append(t2 - t1)
    return a, b


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
        per_call = min(_paired(raw_run, raw_run, 5)[0])
        runs = max(5, min(2000, int(0.3 / max(per_call, 1e-6))))
    a_all: list[float] = []
    b_all: list[float] = []
    diffs: list[float] = []
    gc.disable()
    try:
        for r in range(rounds):  # calls alternate A, B, A, B ...; the order flips every round
            if r % 2 == 0:
                a, b = _paired(netdsl_run, raw_run, runs)
            else:
                b, a = _paired(raw_run, netdsl_run, runs)
            a_all += a
            b_all += b
            diffs += [x - y for x, y in zip(a, b, strict=True)]
    finally:
        gc.enable()
    # the feed checks of Session.run alone, without inference (best of 7 blocks, as timeit advises)
    f = {input_name: x}
    checks = min(timeit.repeat(lambda: session.check_feeds(f), number=2000, repeat=7)) / 2000
    med_a, med_b = statistics.median(a_all), statistics.median(b_all)
    overhead = statistics.median(diffs)
    return {"network": name, "batch": batch, "threads": session.runner.threads, "rounds": rounds, "runs": runs,
            "raw_ms": med_b * 1e3, "netdsl_ms": med_a * 1e3, "ratio": med_a / med_b,
            "paired_overhead_us": overhead * 1e6, "paired_overhead_fraction": overhead / med_b,
            "feed_checks_us": checks * 1e6}


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
    print("| network | batch | threads | calls per side | raw ORT median (ms) | Session.run median (ms) "
          "| ratio of medians | paired overhead, median (µs) | overhead / raw median | feed checks alone (µs) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['network']} | {r['batch']} | {r['threads']} | {r['rounds'] * r['runs']} | {r['raw_ms']:.4f} "
              f"| {r['netdsl_ms']:.4f} | {r['ratio']:.4f} | {r['paired_overhead_us']:.2f} "
              f"| {r['paired_overhead_fraction'] * 100:.3f}% | {r['feed_checks_us']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
