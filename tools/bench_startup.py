"""Start-up cost of netdsl, whole process, as a user types the commands; and the import time of each heavy
dependency. A dependency release that slows every command down shows up here the day it is installed.

    python tools/bench_startup.py                      # medians of 5 runs, a table and a JSON object
    python tools/bench_startup.py --runs 9 --json startup.json
    python tools/bench_startup.py --before-env PYTHONPATH=/tmp/mld7 --before-env NETDSL_CACHE=off

Every row is timed with each column in turn, run after run (side by side, so a machine busy with other
work slows both alike). ``--before-env KEY=VALUE`` adds a column run with those environment variables,
e.g. an older dependency put first on the path (``pip install --target DIR ml_dtypes==0.7.0``) and the
compiled-model cache off: the state before a change, measured in the same run.

Commands (the network is networks/resnet50.net unless --net is given; its .onnx is compiled once into a
temporary folder, which also holds the cache and the byte-compiled modules, so nothing outside it is written;
every command and import runs once untimed first):
check, summary, --help, compile, run of the .onnx, a repeated run of the .net (the cache warmed by one run
beforehand), and tools/ort_minimal.py, the least a program can do to load the .onnx and run one batch.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from netdsl.machine import cpu_name

ROOT = Path(__file__).resolve().parent.parent
MODULES = ("numpy", "ml_dtypes", "onnx", "onnxruntime", "rich", "lark", "safetensors")
VERSIONS = ("netdsl", "onnx", "ml_dtypes", "numpy", "onnxruntime")



def netdsl_command() -> list[str]:
    script = Path(sys.executable).parent / "netdsl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "netdsl"]


def commands(net: Path, onnx: Path, out: Path) -> dict[str, list[str]]:
    nd = netdsl_command()
    return {
        f"netdsl check {net.name} -q": nd + ["check", str(net), "-q"],
        f"netdsl summary {net.name}": nd + ["summary", str(net)],
        "netdsl --help": nd + ["--help"],
        f"netdsl compile {net.name}": nd + ["compile", str(net), "-o", str(out), "-q"],
        f"netdsl run {onnx.name}": nd + ["run", str(onnx)],
        f"netdsl run {net.name} (repeated)": nd + ["run", str(net)],
        f"tools/ort_minimal.py {onnx.name}": [sys.executable, str(ROOT / "tools" / "ort_minimal.py"), str(onnx)],
    }


def wall(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def import_seconds(module: str, env: dict) -> float:
    """Cumulative import time of ``module`` (its dependencies included), from ``python -X importtime``."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        return float("nan")
    for line in reversed(done.stderr.splitlines()):
        m = re.match(r"import time:\s*\d+\s*\|\s*(\d+)\s*\|\s*(\S+)$", line)
        if m and m.group(2) == module:
            return int(m.group(1)) / 1e6
    return float("nan")


def versions(env: dict) -> dict:
    code = ("import importlib.metadata as m, json, sys\nout = {'python': sys.version.split()[0]}\n"
            f"for d in {VERSIONS!r}:\n    try: out[d] = m.version(d)\n    except m.PackageNotFoundError: "
            "out[d] = None\nprint(json.dumps(out))")
    return json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                     check=True).stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="runs per row and column; medians are reported (default 5)")
    p.add_argument("--net", default=str(ROOT / "networks" / "resnet50.net"), help="the .net file")
    p.add_argument("--before-env", action="append", default=[], metavar="KEY=VALUE",
                   help="add a `before` column run with these environment variables (repeatable)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="netdsl-startup-"))
    try:
        # modules are byte-compiled once, as an installed package's are, into the temporary folder: with
        # PYTHONDONTWRITEBYTECODE set, every process would compile netdsl's sources again
        base = {**os.environ, "NETDSL_CACHE_DIR": str(work / "cache"), "PYTHONPYCACHEPREFIX": str(work / "pycache")}
        base.pop("NETDSL_CACHE", None)
        base.pop("PYTHONDONTWRITEBYTECODE", None)
        columns = {"now": base}
        if args.before_env:
            before = dict(base)
            for item in args.before_env:
                key, _, value = item.partition("=")
                before[key] = value
            columns = {"before": before, "now": base}
        net = Path(args.net).resolve()
        onnx = work / f"{net.stem}.onnx"
        subprocess.run(netdsl_command() + ["compile", str(net), "-o", str(onnx), "-q"], env=base, check=True)
        rows = commands(net, onnx, work / "out.onnx")
        for env in columns.values():  # warm the file cache, the bytecode, and the compiled-model cache where it is on
            for m in MODULES:
                import_seconds(m, env)
            for argv in rows.values():
                wall(argv, env)
        samples = {c: {**{f"import {m}": [] for m in MODULES}, **{r: [] for r in rows}} for c in columns}
        for i in range(args.runs):
            for m in MODULES:
                for c, env in columns.items():
                    samples[c][f"import {m}"].append(import_seconds(m, env))
            for r, argv in rows.items():
                for c, env in columns.items():
                    samples[c][r].append(wall(argv, env))
            print(f"run {i + 1}/{args.runs} done", file=sys.stderr)
        medians = {c: {r: statistics.median(v) for r, v in s.items()} for c, s in samples.items()}
        now = medians["now"]
        run_net, run_onnx = now[f"netdsl run {net.name} (repeated)"], now[f"netdsl run {onnx.name}"]
        ratios = {"run .net (repeated) / run .onnx": run_net / run_onnx,
                  "run .onnx / ort_minimal.py": run_onnx / now[f"tools/ort_minimal.py {onnx.name}"]}
        result = {"cpu": cpu_name(), "cores": os.cpu_count(), "runs": args.runs, "statistic": "median seconds",
                  "versions": {c: versions(env) for c, env in columns.items()},
                  "environment": {c: {k: v for k, v in env.items()
                                      if os.environ.get(k) != v and k != "NETDSL_CACHE_DIR"}
                                  for c, env in columns.items()},
                  "medians": medians, "ratios_now": ratios, "samples": samples}
        names = list(columns)
        width = max(len(r) for r in medians["now"]) + 2
        print(f"{'':{width}}" + "".join(f"{c:>10}" for c in names))
        for r in medians["now"]:
            print(f"{r:{width}}" + "".join(f"{medians[c][r]:>9.3f}s" for c in names))
        for name, value in ratios.items():
            print(f"{name}: {value:.2f}x")
        print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
