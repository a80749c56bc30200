"""Benchmark `netdsl check` and `netdsl compile` as whole processes, exactly as a user runs them.

Measures, side by side in one run and interleaved (every repetition runs every case once, in turn, so
a change in the machine's load hits all cases alike):

- ``python -c pass``: the interpreter's start-up, the floor under any Python command-line tool;
- ``netdsl check FILE`` and ``netdsl compile FILE`` (writing ``<network>.onnx`` in a scratch
  directory) for networks/resnet50.net;
- the same for ResNet-50 made deeper by tools/gen_deep.py: by default 10x at ResNet-50's widths, and
  1x, 10x and 100x at 1/8 of its widths (a series with the same widths, so time per layer can be compared
  along it; 100x at full width would be 2.1 G parameters, see tools/gen_deep.py);
- with ``--baseline-src DIR``: check and compile of resnet50 by the netdsl source tree in DIR (for
  example an older commit, extracted with ``git archive``), to compare before and after a change;
- with ``--torch-python``: torchvision's resnet50() exported with torch.onnx.export, the route netdsl
  replaces (``--torch-exporter legacy``, the default, is ``dynamo=False``, the TorchScript exporter;
  ``dynamo`` is the torch.export-based one, which needs onnxscript).

Each case runs once untimed first (page cache, Python bytecode cache and netdsl's grammar cache warm,
as on a developer's machine or after ``pip install``, which compiles bytecode; the bytecode cache goes
to the scratch directory, whatever PYTHONDONTWRITEBYTECODE says), then ``--reps`` times. Wall time is
taken around each process. Peak memory is the process's maximum resident set size, read by GNU time
(``/usr/bin/time``) where present, because Linux charges a child the memory of the process that
started it until it executes another program, which would put a floor of this script's own size under
every figure; without GNU time it comes from ``os.wait4`` and the output says so. CPU time is user +
system time of the process and its threads.

Prints a markdown table (min / median / max wall time, median beyond start-up, CPU, peak memory) and
the derived figures: time beyond start-up, time per added layer along each series, and the
torch/netdsl ratios.

Usage:
    python tools/bench_compile.py
    python tools/bench_compile.py --reps 7 --torch-python /path/to/venv-with-torch/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Nothing heavy is imported here: this process's size would otherwise show in the children's figures.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from gen_deep import generate, network_name  # noqa: E402

GNU_TIME = "/usr/bin/time"

TORCH_EXPORT = """\
import sys, torch, torchvision
out, exporter = sys.argv[1], sys.argv[2]
model = torchvision.models.resnet50().eval()  # random initialisation, like netdsl compile's
x = torch.randn(1, 3, 224, 224)
kw = dict(input_names=["image"], output_names=["logits"], opset_version=17, dynamo=exporter == "dynamo")
if exporter == "dynamo":
    kw["dynamic_shapes"] = {"x": {0: torch.export.Dim("batch")}}
else:
    kw["dynamic_axes"] = {"image": {0: "batch"}, "logits": {0: "batch"}}
torch.onnx.export(model, (x,), out, **kw)
"""

# Run in a separate process, so that this one stays small.
INFO = """\
import json, sys, numpy, onnx, netdsl
nets = {}
for path in sys.argv[1:]:
    s = netdsl.load(path).summary()
    nets[path] = {"layers": len(s.layers), "params": s.params}
print(json.dumps({"nets": nets, "versions": f"netdsl {netdsl.__version__}, onnx {onnx.__version__}, "
                                            f"numpy {numpy.__version__}"}))
"""


@dataclass
class Case:
    name: str
    argv: list[str]
    layers: int | None = None
    params: int | None = None
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)  # bytes
    env: dict[str, str] = field(default_factory=dict)  # added to the environment

    def median(self) -> float:
        return statistics.median(self.walls)


class Runner:
    """Runs one process and measures it; see the module docstring for how."""

    def __init__(self, work: Path):
        self.work = work
        self.gnu_time = shutil.which(GNU_TIME) is not None and self._gnu_time_works()
        # Bytecode caches on, as for an installed package (pip compiles .pyc files when it installs),
        # kept in the scratch directory so that nothing else is written; the warm-up runs fill them.
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")

    def _gnu_time_works(self) -> bool:
        out = self.work / ".probe"
        r = subprocess.run([GNU_TIME, "-f", "%M", "-o", str(out), "true"], capture_output=True)
        return r.returncode == 0 and out.exists() and out.read_text().strip().isdigit()

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int]:
        """(wall seconds, CPU seconds, peak RSS bytes) of one process; exits if it fails."""
        rss_file = self.work / ".rss"
        full = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *argv] if self.gnu_time else argv
        start = time.perf_counter()
        proc = subprocess.Popen(full, cwd=self.work, env={**self.env, **(env or {})}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise SystemExit(f"failed (exit {code}): {' '.join(argv)}\n{err[-2000:]}")
        if self.gnu_time:
            rss = int(rss_file.read_text().split()[-1]) * 1024
        else:
            rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        return wall, usage.ru_utime + usage.ru_stime, rss


def netdsl_command() -> list[str]:
    """The `netdsl` console script beside this interpreter (what users run), else `python -m netdsl`."""
    script = Path(sys.executable).with_name("netdsl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "netdsl"]


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        mem = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        mem = ""
    return f"{cpus} CPU cores usable ({model}){mem}, {platform.system()} {platform.release()}"


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "n/a"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def parse_series(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        depth, _, divisor = item.partition(":")
        out.append((int(depth), int(divisor or 1)))
    return out


def build_cases(args: argparse.Namespace, work: Path) -> tuple[list[Case], str]:
    nets = [("resnet50", ROOT / "networks" / "resnet50.net")]
    for depth, divisor in parse_series(args.deep):
        path = work / f"{network_name(depth, divisor)}.net"
        path.write_text(generate(depth, divisor), encoding="utf-8")
        nets.append((path.stem, path))
    info = subprocess.run([sys.executable, "-c", INFO, *(str(p) for _, p in nets)], capture_output=True, text=True)
    if info.returncode != 0:
        raise SystemExit(f"cannot load the networks:\n{info.stderr[-2000:]}")
    data = json.loads(info.stdout)
    cli = netdsl_command()
    cases = [Case("python -c pass (start-up)", [sys.executable, "-c", "pass"])]
    compiles = []
    for label, path in nets:
        n = data["nets"][str(path)]
        cases.append(Case(f"netdsl check {label}", [*cli, "check", str(path)], n["layers"], n["params"]))
        compiles.append(Case(f"netdsl compile {label}", [*cli, "compile", str(path)], n["layers"], n["params"]))
    cases += compiles
    if args.baseline_src:
        # what the console script runs, with the baseline tree first on the path
        entry = [sys.executable, "-c", "import sys; from netdsl.cli import entry; sys.argv[0] = 'netdsl'; entry()"]
        env = {"PYTHONPATH": str(Path(args.baseline_src).resolve())}
        r50 = data["nets"][str(nets[0][1])]
        for kind in ("check", "compile"):
            cases.append(Case(f"netdsl {kind} resnet50 (baseline)", [*entry, kind, str(nets[0][1])],
                              r50["layers"], r50["params"], env=env))
    if args.torch_python:
        cases.append(Case(f"torchvision resnet50 + torch.onnx.export ({args.torch_exporter})",
                          [args.torch_python, "-c", TORCH_EXPORT, str(work / "torch_resnet50.onnx"),
                           args.torch_exporter]))
    versions = f"Python {platform.python_version()}, {data['versions']}"
    if args.torch_python:
        tv = subprocess.run([args.torch_python, "-c", "import torch, torchvision; print(torch.__version__, "
                             "torchvision.__version__)"], capture_output=True, text=True)
        if tv.returncode == 0:
            versions += ", torch {} and torchvision {} for the torch route".format(*tv.stdout.split())
    return cases, versions


def report(cases: list[Case], args: argparse.Namespace, runner: Runner, versions: str, loads: tuple[str, str],
           argv: list[str]) -> None:
    startup = cases[0].median()
    by_name = {c.name: c for c in cases}
    print(f"Machine: {machine()}")
    print(f"Software: {versions}")
    print(f"Command: python tools/bench_compile.py {' '.join(argv)}".rstrip())
    print(f"Repetitions: {args.reps} timed per case, interleaved, after one untimed warm-up each; "
          f"load average (1 / 5 / 15 min) before {loads[0]}, after {loads[1]}")
    print("Peak memory: " + ("maximum resident set size, by GNU time" if runner.gnu_time else
                             "maximum resident set size by os.wait4 (includes this script's own ~10 MiB)"))
    print("Caches: Python bytecode caches on (in the scratch directory), netdsl's grammar cache on; "
          "both filled by the warm-up runs")
    print()
    print("| case | layers | params | wall min | wall median | wall max | median − start-up | CPU median "
          "| peak memory |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in cases:
        beyond = "" if c is cases[0] else ms(c.median() - startup)
        print(f"| `{c.name}` | {c.layers if c.layers else ''} | {f'{c.params / 1e6:,.1f} M' if c.params else ''} "
              f"| {ms(min(c.walls))} | {ms(c.median())} | {ms(max(c.walls))} | {beyond} "
              f"| {ms(statistics.median(c.cpus))} | {max(c.rss) / 2**20:,.0f} MiB |")
    print()
    check50, compile50 = by_name["netdsl check resnet50"], by_name["netdsl compile resnet50"]
    print(f"- `netdsl check resnet50`: median {ms(check50.median())}, {ms(check50.median() - startup)} beyond "
          f"interpreter start-up ({ms(startup)}); peak {max(check50.rss) / 2**20:,.0f} MiB")
    print(f"- `netdsl compile resnet50`: median {ms(compile50.median())}; peak {max(compile50.rss) / 2**20:,.0f} MiB")
    # Linear growth: along each series of equal widths, the time each added layer costs.
    for kind in ("check", "compile"):
        series: dict[str, list[Case]] = {}
        for c in cases:
            if c.name.startswith(f"netdsl {kind} resnet50") and not c.name.endswith("(baseline)"):
                width = c.name.rpartition("_w")[2] if "_w" in c.name else "1"
                series.setdefault(width, []).append(c)
        for width, members in series.items():
            members.sort(key=lambda c: c.layers or 0)
            steps = []
            for a, b in zip(members, members[1:], strict=False):
                per_layer = (b.median() - a.median()) / (b.layers - a.layers)
                steps.append(f"{a.name.split()[-1]} → {b.name.split()[-1]}: {per_layer * 1e6:,.0f} µs per added layer "
                             f"({b.layers / a.layers:.1f}x the layers, {b.median() / a.median():.1f}x the time)")
            if steps:
                label = "ResNet-50 widths" if width == "1" else f"1/{width} of ResNet-50's widths"
                print(f"- `netdsl {kind}`, {label}: " + "; ".join(steps))
    for kind in ("check", "compile"):
        base = by_name.get(f"netdsl {kind} resnet50 (baseline)")
        if base:
            now = by_name[f"netdsl {kind} resnet50"]
            print(f"- `netdsl {kind} resnet50`, baseline → now: {ms(base.median())} → {ms(now.median())} "
                  f"({base.median() / now.median():.1f}x faster), peak {max(base.rss) / 2**20:,.0f} → "
                  f"{max(now.rss) / 2**20:,.0f} MiB")
    if args.torch_python:
        t = cases[-1]
        print(f"- `{t.name}`: median {ms(t.median())}, peak {max(t.rss) / 2**20:,.0f} MiB: "
              f"{t.median() / compile50.median():.1f}x the wall time and {max(t.rss) / max(compile50.rss):.1f}x "
              f"the peak memory of `netdsl compile resnet50`")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of each case (default 5)")
    p.add_argument("--deep", default="10:1,1:8,10:8,100:8", metavar="DEPTH:DIVISOR,...",
                   help="generated networks: depth multiplier and width divisor (default 10:1,1:8,10:8,100:8)")
    p.add_argument("--torch-python", metavar="PYTHON",
                   help="a Python with torch and torchvision: also time torchvision resnet50 + torch.onnx.export")
    p.add_argument("--torch-exporter", choices=("legacy", "dynamo"), default="legacy",
                   help="torch.onnx.export(dynamo=False) (legacy, default) or dynamo=True (needs onnxscript)")
    p.add_argument("--baseline-src", metavar="DIR",
                   help="also time check and compile of resnet50 by the netdsl source tree in DIR (before/after)")
    p.add_argument("--json", metavar="FILE", help="also write every measurement as JSON")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="netdsl-bench-") as tmp:
        work = Path(tmp)
        runner = Runner(work)
        cases, versions = build_cases(args, work)
        before = load_average()
        for c in cases:  # warm-up, untimed
            runner.run(c.argv, c.env)
        for _ in range(args.reps):
            for c in cases:
                wall, cpu, rss = runner.run(c.argv, c.env)
                c.walls.append(wall)
                c.cpus.append(cpu)
                c.rss.append(rss)
        after = load_average()
    report(cases, args, runner, versions, (before, after), argv)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": machine(), "versions": versions, "load_before": before, "load_after": after,
            "reps": args.reps, "gnu_time": runner.gnu_time,
            "cases": [{"name": c.name, "argv": c.argv, "layers": c.layers, "params": c.params, "wall_s": c.walls,
                       "cpu_s": c.cpus, "peak_rss_bytes": c.rss} for c in cases]}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
