"""The command line: a thin layer over the Python API.

Exit codes: 0 success, 1 the input has errors (diagnostics on stderr), 2 command-line usage error,
130 interrupted. No input, however malformed, produces a Python traceback (set NETDSL_DEBUG=1 to
see one for an internal error).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable

from . import __version__
from .errors import NetdslError, UsageError

# Each command module defines ``register(subparsers)``; modules beyond the core are imported only
# to declare their options, and import their heavy dependencies lazily when run.
COMMAND_MODULES = ("netdsl.cli", "netdsl.cli_runtime", "netdsl.cli_weights", "netdsl.cli_compare",
                   "netdsl.cli_build", "netdsl.cli_bench", "netdsl.cli_doctor")
EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _color(stream) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def print_diagnostics(diags, stream=None) -> None:
    stream = stream or sys.stderr
    color = _color(stream)
    for d in diags:
        print(d.render(color), file=stream)


def parse_args_kv(items: list[str] | None) -> dict[str, int | float]:
    """``--arg classes=10`` values as numbers."""
    out: dict[str, int | float] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"--arg expects NAME=VALUE, got {item!r}")
        try:
            out[name] = int(value)
        except ValueError:
            try:
                out[name] = float(value)
            except ValueError:
                raise UsageError(f"--arg {name}: {value!r} is not a number") from None
    return out


def add_network_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a .net source file")
    p.add_argument("--network", metavar="NAME", help="the network to use when the file holds several")
    p.add_argument("--arg", action="append", metavar="NAME=VALUE",
                   help="override a network parameter, e.g. --arg classes=10 (repeatable)")


def load_network(args: argparse.Namespace, *, quiet: bool = False):
    """Load and check the network named by the common options; prints its warnings to stderr."""
    from .network import load

    net = load(args.file if args.file.endswith(".net") or os.path.exists(args.file) else args.file,
               network=args.network, args=parse_args_kv(args.arg))
    if not quiet:
        print_diagnostics(net.warnings)
    return net


# ----------------------------------------------------------------------------- check / summary / compile
def cmd_check(args: argparse.Namespace) -> int:
    net = load_network(args)
    s = net.summary()
    if not args.quiet:
        print(f"{net.path}: ok: network {net.name}, {len(s.layers)} layers, {s.params:,} params, "
              f"{s.macs:,} MACs (conv+fc), {len(net.warnings)} warning(s)")
    return EXIT_OK


def cmd_summary(args: argparse.Namespace) -> int:
    net = load_network(args)
    s = net.summary()
    if args.depth is not None:
        if args.depth < 1:
            raise UsageError("--depth must be at least 1")
        s = s.rolled_up(args.depth)
    if args.json:
        print(json.dumps(s.to_json(), indent=1))
    else:
        from .analysis import render_table

        width = None
        try:
            width = os.get_terminal_size().columns if sys.stdout.isatty() else 140
        except OSError:
            width = 140
        sys.stdout.write(render_table(s, color=_color(sys.stdout), width=width))
    return EXIT_OK


def cmd_compile(args: argparse.Namespace) -> int:
    net = load_network(args)
    if args.seed < 0:
        raise UsageError("--seed must be a non-negative integer")
    out = args.output or f"{net.name}.onnx"
    if os.path.isdir(out):
        raise UsageError(f"-o {out}: is a directory; give the path of the .onnx file to write")
    from .files import refuse_overwrite

    refuse_overwrite(out, (args.file, args.weights))
    external = {"auto": "auto", "always": True, "never": False}[args.external_data]
    from .cli_weights import dtype_options, report_fp16, resolve_weights

    options = {**dtype_options(args), "fold_bn": args.fold_bn}
    weights = resolve_weights(net, args)
    report_fp16(net, weights, args)
    files = net.save(out, opset=args.opset, seed=args.seed, weights=weights, external_data=external, **options)
    if not args.quiet:
        s = net.summary()
        print(f"wrote {' and '.join(files)}: network {net.name}, opset {args.opset}, {s.params:,} params")
    return EXIT_OK


def register(sub) -> None:
    from .lower import DEFAULT_OPSET

    p = sub.add_parser("check", help="parse and check a .net file (diagnostics only)")
    add_network_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("summary", help="layer table: shapes, params, MACs, memory, receptive field")
    add_network_options(p)
    p.add_argument("--depth", type=int, metavar="N", help="roll rows up to the first N name components")
    p.add_argument("--json", action="store_true", help="print a machine-readable JSON object")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("compile", help="compile to an ONNX model")
    add_network_options(p)
    p.add_argument("-o", "--output", metavar="PATH", help="output path (default: <network>.onnx)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--seed", type=int, default=0, help="seed of the deterministic weight initialisation")
    p.add_argument("--external-data", choices=("auto", "always", "never"), default="auto",
                   help="store weights in <output>.data (auto: only past the 2 GB protobuf limit)")
    p.add_argument("--fold-bn", action="store_true", help="fold each bn into the conv before it (netdsl.optimize)")
    from .cli_weights import add_weight_options

    add_weight_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=cmd_compile)


# ----------------------------------------------------------------------------- entry point
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors: exit 2 with a one-line hint
        self.print_usage(sys.stderr)
        print(f"netdsl: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="netdsl", description="netdsl: a declarative network compiler for CNNs.")
    parser.add_argument("--version", action="version", version=f"netdsl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    # `netdsl check` must start fast: for this module's own commands (check, summary, compile) the
    # other command modules, and whatever they import, are not loaded at all.
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    own = words[:1] in (["check"], ["summary"], ["compile"])
    for name in (__name__,) if own else COMMAND_MODULES:
        module = sys.modules[__name__] if name == __name__ else importlib.import_module(name)
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UsageError as e:
        print_diagnostics(e.diagnostics)
        return EXIT_USAGE
    except NetdslError as e:
        print_diagnostics(e.diagnostics)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("netdsl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `netdsl summary ... | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return EXIT_OK
    except RecursionError:
        print("netdsl: error: the input nests too deeply", file=sys.stderr)
        return EXIT_INPUT
    except MemoryError:
        print("netdsl: error: out of memory", file=sys.stderr)
        return EXIT_INPUT
    except Exception as e:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("NETDSL_DEBUG"):
            raise
        print(f"netdsl: internal error: {type(e).__name__}: {e}\n"
              f"note: this is a bug in netdsl; rerun with NETDSL_DEBUG=1 for a traceback and report it",
              file=sys.stderr)
        return EXIT_INTERNAL


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM ends the command as Ctrl-C does: temporary files are removed, exit 130


def entry() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminated)
    sys.exit(main())
