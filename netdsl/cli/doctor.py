"""`netdsl doctor`: what the runtime engines need, and what this machine has (:mod:`netdsl.doctor` finds out).

It reports the Python packages, the ONNX Runtime distribution(s) and providers, the GPU, the
CUDA/cuDNN/TensorRT libraries the dynamic loader finds, and for each engine/device pair whether it
works (by running a one-layer model through the engine seam) and, if not, what is missing and how to
install it. It always exits 0: it is a report.
"""

from __future__ import annotations

import argparse

from ..doctor import doctor_report, plain
from .common import print_json


def cmd_doctor(args: argparse.Namespace) -> int:
    try:
        report = doctor_report()
    except Exception as e:  # noqa: BLE001 - doctor reports; it does not fail
        report = {"error": f"netdsl doctor could not finish: {type(e).__name__}: {e}"}
    if args.json:
        print_json(report, default=str)
    else:
        _print_doctor(report)
    return 0


def _print_doctor(r: dict) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)

    def line(*parts: tuple[str, str] | str, indent: int = 2) -> None:
        text = Text(" " * indent)
        for part in parts:
            text.append(*(part if isinstance(part, tuple) else (part,)))
        console.print(text)

    def head(title: str) -> None:
        console.print(Text(title, style="bold"))

    def have(name: str, info: dict, extra: str = "") -> None:
        if info.get("installed"):
            line(f"{name} ", (str(info.get("version") or "installed"), "green"), extra)
        else:
            hint = f" ({info['for']})" if info.get("for") else ""
            line(f"{name} ", ("missing", "yellow"), hint + (f"; {info['install']}" if info.get("install") else ""))

    if "error" in r and len(r) == 1:
        line((r["error"], "red"), indent=0)
        return
    head("netdsl")
    line(f"netdsl {r['netdsl']['version']} ({r['netdsl']['path']})")
    line(f"Python {r['python']['version']} ({r['python']['executable']}), {r['python']['platform']}")
    head("packages")
    for name, info in r["packages"].items():
        have(name, info)
    cpu = r.get("cpu")
    if cpu:
        head("CPU")
        vnni = {True: "yes (" + ", ".join(cpu["flags"]) + "): int8 runs on fast u8s8 kernels", False: "no",
                None: "unknown (not an x86 CPU, or /proc/cpuinfo unreadable)"}[cpu["vnni"]]
        line(f"{plain(cpu['name'])} ({cpu['arch']}); int8 dot products (VNNI): {vnni}")
        if cpu.get("warning"):
            line(("warning: ", "yellow bold"), cpu["warning"])
    head("ONNX Runtime")
    ort = r["onnxruntime"]
    if ort.get("installed"):
        dists = ", ".join(f"{d['name']} {d['version']}" for d in ort.get("all_distributions", [])) or "unknown"
        build = f"GPU build for CUDA {ort['cuda_build']}" if ort.get("cuda_build") else "CPU build"
        line(f"onnxruntime {ort.get('version')} ({build}); installed from: {dists}")
        line(f"providers: {', '.join(ort.get('providers', []))}")
    else:
        line(("missing", "red"), f": {plain(ort.get('message') or ort.get('error', ''))}")
    if ort.get("problem"):
        line(("problem: ", "red bold"), ort["problem"])
    head("GPU")
    gpu = r["gpu"]
    for d in gpu["devices"]:
        line(f"{d['name']} ({d['memory']}), driver {gpu['driver']}, CUDA {gpu.get('cuda_driver_api') or '?'}")
    if not gpu["devices"]:
        found = "found" if gpu["nvidia_smi"] else "not found"
        line("no NVIDIA GPU visible" if not gpu["present"] else "a GPU is visible to the CUDA driver",
             f" (nvidia-smi {found}; libcuda.so.1 {'found' if gpu['libcuda']['found'] else 'not found'})")
    if gpu.get("CUDA_VISIBLE_DEVICES") is not None:
        line(f"CUDA_VISIBLE_DEVICES={gpu['CUDA_VISIBLE_DEVICES']!r}")
    head("CUDA, cuDNN and TensorRT libraries (as the dynamic loader finds them)")
    for name, info in r["libraries"].items():
        if info["found"]:
            version = f" {info['version']}" if info.get("version") else ""
            line(f"{name:<20}", ("found", "green"), f"{version}  {info.get('path') or ''}")
        elif info.get("pip_copy"):
            line(f"{name:<20}", ("not on the loader path", "yellow"), f"; a pip copy: {info['pip_copy']}")
        else:
            line(f"{name:<20}", ("missing", "yellow"))
    head("TensorRT")
    for name, info in r["tensorrt"].items():
        have(name, info, "")
    head("engines")
    width = max(len(k) for k in r["engines"])
    for name, pair in r["engines"].items():
        if pair["usable"]:
            check = pair.get("check", {})
            if "target" in check:
                how = f" built a one-layer plan with {check['engine']}, target {check['target']}"
            else:
                how = f" ran a one-layer model ({', '.join(check.get('providers') or [])})" if check else ""
            line(f"{name:<{width}}  ", ("usable", "green bold"), how)
        else:
            line(f"{name:<{width}}  ", ("not usable", "red bold"))
            for m in pair["missing"]:
                line("missing: ", m, indent=width + 4)
            for f in pair["fix"]:
                line(("fix: ", "cyan"), f, indent=width + 4)
            for log in pair.get("check", {}).get("runtime_log", []):
                line("runtime said: ", log, indent=width + 4)
        if pair.get("note"):
            line(("note: ", "yellow"), pair["note"], indent=width + 4)


def register(sub) -> None:
    p = sub.add_parser("doctor", help="report runtimes, GPU, CUDA/cuDNN/TensorRT and what each engine is missing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_doctor)
