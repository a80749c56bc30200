"""Benchmark `netdsl check` and `netdsl compile` as whole processes, as a user runs them.

Measures, side by side in one run and interleaved (every repetition runs every case once, in turn, so
that a change in the machine's load hits all cases alike):

- ``python -c pass``: the interpreter's start-up, the floor under any command-line tool;
- ``netdsl check`` and ``netdsl compile`` of networks/resnet50.net;
- the same for ResNet-50 made 10x and 100x deeper by tools/gen_deep.py (the 100x one with widths
  divided by 8; see that script), to show that cost grows linearly with the number of layers;
- with ``--torch-python``: torchvision's resnet50() exported by torch.onnx.export, the route netdsl
  replaces (``--torch-exporter legacy`` is ``dynamo=False``, the TorchScript exporter; ``dynamo`` is the
  torch.export-based one, which needs onnxscript).

Each case runs once untimed first (page cache, bytecode and grammar caches warm, as on a developer's
machine), then ``--reps`` times. Wall time is measured around each process; peak memory is the
process's maximum resident set size (``os.wait4``'s rusage). Prints a markdown table of min / median /
max, start-up-corrected medians, time per layer, and the torch/netdsl ratios.

Usage:
    python tools/bench_compile.py
    python tools/bench_compile.py --reps 7 --torch-python /path/to/venv-with-torch/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from gen_deep import generate, network_name  # noqa: E402

TORCH_EXPORT = """\
import sys, torch, torchvision
out, exporter = sys.argv[1], sys.argv[2]
model = torchvision.models.resnet50().eval()  # random initialisation, as netdsl compile's
x = torch.randn(1, 3, 224, 224)
kw = dict(input_names=["image"], output_names=["logits"], opset_version=17, dynamo=exporter == "dynamo")
if exporter == "dynamo":
    kw["dynamic_shapes"] = {"x": {0: torch.export.Dim("batch")}}
else:
    kw["dynamic_axes"] = {"image": {0: "batch"}, "logits": {0: "batch"}}
torch.onnx.export(model, (x,), out, **kw)
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

    def med(self) -> float:
        return statistics.median(self.walls)


def run_once(argv: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, peak RSS bytes) of one process; raises if it fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}\n{err[-2000:]}")
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
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        mem_text = f", {mem:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        mem_text = ""
    return f"{cpus} CPUs usable ({model}){mem_text}, {platform.system()} {platform.release()}"


def versions(torch_python: str | None) -> str:
    import numpy
    import onnx

    import netdsl

    parts = [f"Python {platform.python_version()}", f"netdsl {netdsl.__version__}", f"onnx {onnx.__version__}",
             f"numpy {numpy.__version__}"]
    if torch_python:
        out = subprocess.run([torch_python, "-c", "import torch, torchvision; print(torch.__version__, "
                              "torchvision.__version__)"], capture_output=True, text=True)
        if out.returncode == 0:
            t, tv = out.stdout.split()
            parts.append(f"torch {t}, torchvision {tv} (for the torch route)")
    return ", ".join(parts)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "n/a"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


def fmt_params(n: int | None) -> str:
    if n is None:
        return ""
    return f"{n / 1e6:,.1f} M"


def build_cases(args: argparse.Namespace, work: Path) -> list[Case]:
    import netdsl

    nets = [("resnet50", ROOT / "networks" / "resnet50.net")]
    for depth, divisor in ((10, 1), (100, args.width_divisor_100)):
        path = work / f"{network_name(depth, divisor)}.net"
        path.write_text(generate(depth, divisor), encoding="utf-8")
        nets.append((path.stem, path))
    cli = netdsl_command()
    cases = [Case("python -c pass (start-up)", [sys.executable, "-c", "pass"])]
    compiles = []
    for label, path in nets:
        summary = netdsl.load(str(path)).summary()
        layers, params = len(summary.layers), summary.params
        cases.append(Case(f"netdsl check {label}", [*cli, "check", "-q", str(path)], layers, params))
        compiles.append(Case(f"netdsl compile {label}", [*cli, "compile", "-q", str(path), "-o",
                                                         str(work / f"{label}.onnx")], layers, params))
    cases += compiles
    if args.torch_python:
        cases.append(Case(f"torchvision resnet50 + torch.onnx.export ({args.torch_exporter})",
                          [args.torch_python, "-c", TORCH_EXPORT, str(work / "torch_resnet50.onnx"),
                           args.torch_exporter], cases[1].layers, cases[1].params))
    return cases


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of each case (default 5)")
    p.add_argument("--torch-python", metavar="PYTHON",
                   help="a Python with torch and torchvision: also time torchvision resnet50 + torch.onnx.export")
    p.add_argument("--torch-exporter", choices=("legacy", "dynamo"), default="legacy",
                   help="torch.onnx.export(dynamo=False) (legacy, default) or dynamo=True (needs onnxscript)")
    p.add_argument("--width-divisor-100", type=int, default=8, help="width divisor of the 100x network (default 8)")
    p.add_argument("--json", metavar="FILE", help="also write every measurement as JSON")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="netdsl-bench-") as tmp:
        work = Path(tmp)
        cases = build_cases(args, work)
        load_before = load_average()
        for c in cases:  # warm-up, untimed
            run_once(c.argv)
        for _ in range(args.reps):
            for c in cases:
                wall, cpu, rss = run_once(c.argv)
                c.walls.append(wall)
                c.cpus.append(cpu)
                c.rss.append(rss)
        load_after = load_average()

    startup = cases[0].med()
    print(f"Machine: {machine()}")
    print(f"Software: {versions(args.torch_python)}")
    print(f"Command: python tools/bench_compile.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"Repetitions: {args.reps} per case, interleaved, after one untimed warm-up run each; "
          f"load average before {load_before}, after {load_after}")
    print()
    print("| case | layers | params | wall min | wall median | wall max | median − start-up | per layer | "
          "CPU median | peak RSS (max) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in cases:
        net = c.med() - startup
        per_layer = f"{net / c.layers * 1e6:,.0f} µs" if c.layers and c is not cases[0] else ""
        beyond = "" if c is cases[0] else f"{ms(net)} ms"
        print(f"| {c.name} | {c.layers or ''} | {fmt_params(c.params)} | {ms(min(c.walls))} ms | "
              f"{ms(c.med())} ms | {ms(max(c.walls))} ms | {beyond} | {per_layer} | "
              f"{ms(statistics.median(c.cpus))} ms | {max(c.rss) / 2**20:,.0f} MiB |")
    print()
    by_name = {c.name: c for c in cases}
    compile50 = by_name["netdsl compile resnet50"]
    check50 = by_name["netdsl check resnet50"]
    print(f"- netdsl check resnet50: median {ms(check50.med())} ms, {ms(check50.med() - startup)} ms beyond "
          f"start-up ({ms(startup)} ms)")
    print(f"- netdsl compile resnet50: median {ms(compile50.med())} ms, peak {max(compile50.rss) / 2**20:,.0f} MiB")
    for kind in ("check", "compile"):
        base = by_name[f"netdsl {kind} resnet50"]
        for c in cases:
            if c.name.startswith(f"netdsl {kind} resnet50_"):
                layers = c.layers / base.layers
                time_ratio = (c.med() - startup) / (base.med() - startup)
                print(f"- {c.name}: {layers:.1f}x the layers, {time_ratio:.1f}x the time beyond start-up "
                      f"({time_ratio / layers:.2f}x the time per layer)")
    if args.torch_python:
        torch_case = cases[-1]
        print(f"- {torch_case.name}: median {ms(torch_case.med())} ms, peak {max(torch_case.rss) / 2**20:,.0f} MiB; "
              f"{torch_case.med() / compile50.med():.1f}x netdsl compile's wall time, "
              f"{max(torch_case.rss) / max(compile50.rss):.1f}x its peak memory")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": machine(), "load_before": load_before, "load_after": load_after, "reps": args.reps,
            "cases": [{"name": c.name, "argv": c.argv, "layers": c.layers, "params": c.params, "wall_s": c.walls,
                       "cpu_s": c.cpus, "peak_rss_bytes": c.rss} for c in cases]}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
