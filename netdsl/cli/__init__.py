"""The command line: a thin layer over the Python API.

This package holds the entry point (:func:`main`, :func:`entry`), the exit codes and the command
registry; :mod:`netdsl.cli.common` the options, loading and compile sequence every command shares; and
one module per command family (``compile``: check/summary/compile, ``run``, ``weights``, ``compare``,
``build``, ``bench``, ``doctor``, ``cache``, ``export``...). Library code never imports from here.

Exit codes: 0 success, 1 the input has errors (diagnostics on stderr), 2 command-line usage error,
130 interrupted. No input, however malformed, produces a Python traceback (set NETDSL_DEBUG=1 to
see one for an internal error).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from ..errors import NetdslError, UsageError
from ..text import plain
from ..version import __version__
from .common import print_diagnostics, sigterm_as_interrupt

# Each command module defines ``register(subparsers)``; modules beyond the first are imported only
# to declare their options, and import their heavy dependencies lazily when run.
COMMAND_MODULES = ("netdsl.cli.compile", "netdsl.cli.run", "netdsl.cli.weights", "netdsl.cli.compare",
                   "netdsl.cli.build", "netdsl.cli.bench", "netdsl.cli.doctor", "netdsl.cli.view",
                   "netdsl.cli.cache", "netdsl.cli.fmt", "netdsl.cli.lsp", "netdsl.cli.ops",
                   "netdsl.cli.quantize", "netdsl.cli.export", "netdsl.cli.batch", "netdsl.cli.serve")
FAST_COMMANDS = ("check", "summary", "compile")  # registered by COMMAND_MODULES[0] alone
# the module that registers each command: a command given by name loads its own module only
MODULE_OF = {**dict.fromkeys(FAST_COMMANDS, COMMAND_MODULES[0]),
             **{name.rsplit(".", 1)[1]: name for name in COMMAND_MODULES[1:]}}
EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


# ----------------------------------------------------------------------------- entry point
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors: exit 2 with a one-line hint
        self.print_usage(sys.stderr)
        print(f"netdsl: error: {plain(message)}", file=sys.stderr)  # it may quote any argument
        raise SystemExit(EXIT_USAGE)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="netdsl", description="netdsl: a declarative network compiler for CNNs.")
    parser.add_argument("--version", action="version", version=f"netdsl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    # `netdsl check` must start fast: for a command named on the command line the other command
    # modules, and whatever they import, are not loaded at all (`--help` and typos load them all).
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    wanted = MODULE_OF.get(words[0]) if words else None
    for name in (wanted,) if wanted else COMMAND_MODULES:
        importlib.import_module(name).register(sub)
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
        print(f"netdsl: internal error: {type(e).__name__}: {plain(e)}\n"
              f"note: this is a bug in netdsl; rerun with NETDSL_DEBUG=1 for a traceback and report it",
              file=sys.stderr)
        return EXIT_INTERNAL


def entry() -> None:
    import signal

    sigterm_as_interrupt()
    try:
        code = main()
    except KeyboardInterrupt:  # a signal that arrived outside the command itself (parsing options, returning)
        print("netdsl: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # nothing of netdsl's is left to clean up while Python exits
    if code == EXIT_INTERRUPTED:
        _forget_interrupt()
    sys.exit(code)


def _forget_interrupt() -> None:
    """Let an interrupt that was handled end the process with exit 130. CPython notes a KeyboardInterrupt that
    leaves code run from a string (``eval``/``exec`` of text, as ``collections.namedtuple`` does during an import)
    as unhandled, even when a caller catches it, and under ``python -m`` then ends the process by SIGINT instead
    of its exit status; the note is cleared whenever such code starts, so running an empty one clears it."""
    exec("None")  # noqa: S102 - a constant text: what clears the note
