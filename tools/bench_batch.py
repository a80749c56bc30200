"""Throughput of `netdsl batch` with 1 and 2 actors, and their ratio.

    python tools/bench_batch.py                               # resnet18, 480 images, 1 and 2 actors
    python tools/bench_batch.py --images 2048 --actors 1,2,4 --model networks/mobilenet_v2.net

Writes ``--images`` seeded random 256x256 PNGs to a temporary folder; then for each ``--actors`` value runs
``netdsl batch MODEL --input FOLDER --output OUT --actors N --cpus-per-actor C --batch B`` (each run starts its own
local Ray instance, sized to the machine) and reports the time and throughput its final line prints: from the
start of the Ray Data job to the last parquet file written, so it includes starting the actors, loading the model
in each and starting the writers (on a small busy machine, tens of seconds: use enough images that scoring
dominates). The ratio is each throughput over the first's.

The **ceiling** beside it: N plain processes, each a ``netdsl.Session`` with ``--cpus-per-actor`` threads running
batches of ``--batch`` seeded random inputs in a loop for ``--control-seconds``, no Ray, their rates summed. It is
what the machine offers at that moment; on a machine shared with other work it can be far below N x one process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import netdsl  # noqa: E402
from netdsl.machine import cpu_name, logical_cpus  # noqa: E402

CONTROL = """
import sys, time
import netdsl
session = netdsl.Session(netdsl.load(sys.argv[1]), threads=int(float(sys.argv[2])))
feeds = session.random_feeds(int(sys.argv[3]))
session.run(feeds)
start, done = time.perf_counter(), 0
while time.perf_counter() - start < float(sys.argv[4]):
    session.run(feeds)
    done += int(sys.argv[3])
print(done / (time.perf_counter() - start))
"""
FINAL = re.compile(r"netdsl batch: (\d+) inputs .* in ([\d.]+) s, ([\d.]+) inputs/s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "networks" / "resnet18.net"))
    p.add_argument("--images", type=int, default=480)
    p.add_argument("--actors", default="1,2", help="comma-separated actor counts (default 1,2)")
    p.add_argument("--cpus-per-actor", default="1")
    p.add_argument("--batch", default="16")
    p.add_argument("--control-seconds", type=float, default=15.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from PIL import Image

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")

        def ceiling(processes: int) -> float:
            cmd = [sys.executable, "-c", CONTROL, args.model, args.cpus_per_actor, args.batch,
                   str(args.control_seconds)]
            procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(processes)]
            return sum(float(p.communicate(timeout=600)[0]) for p in procs)

        for actors in (int(a) for a in args.actors.split(",")):
            plain = ceiling(actors)
            out = Path(tmp) / f"out{actors}"
            cmd = [sys.executable, "-m", "netdsl", "batch", args.model, "--input", str(folder), "--output", str(out),
                   "--actors", str(actors), "--cpus-per-actor", args.cpus_per_actor, "--batch", args.batch]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
            match = FINAL.search(proc.stderr)
            if proc.returncode or not match:
                raise SystemExit(f"netdsl batch failed ({proc.returncode}): {proc.stderr[-2000:]}")
            results.append({"actors": actors, "inputs": int(match[1]), "seconds": float(match[2]),
                            "throughput": float(match[3]), "ceiling": plain})
    for r in results:
        r["ratio"] = r["throughput"] / results[0]["throughput"]
        r["ceiling_ratio"] = r["ceiling"] / results[0]["ceiling"]
    import ray

    versions = {"netdsl": netdsl.__version__, "ray": ray.__version__, "python": platform.python_version(),
                "cpu": cpu_name(), "logical_cpus": logical_cpus(),
                "load_average_1min": round(os.getloadavg()[0], 1)}  # other work on the machine skews the figures
    if args.json:
        print(json.dumps({"model": Path(args.model).stem, "versions": versions, "results": results}, indent=1))
        return 0
    print(f"{Path(args.model).stem}, {args.images} PNG images 256x256, --cpus-per-actor "
          f"{args.cpus_per_actor}, "
          f"--batch {args.batch}; " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print()
    print("| actors | seconds | inputs/s | ratio | ceiling inputs/s | ceiling ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['actors']} | {r['seconds']:.1f} | {r['throughput']:.1f} | {r['ratio']:.2f} | {r['ceiling']:.1f} | "
              f"{r['ceiling_ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
