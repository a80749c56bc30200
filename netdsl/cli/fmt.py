"""`netdsl fmt`: rewrite .net sources in the canonical layout (netdsl.fmt), check it, or show the diff."""

from __future__ import annotations

import argparse
import difflib
import os
import sys

from ..errors import NetdslError, UsageError
from ..text import plain
from . import EXIT_INPUT, EXIT_OK
from .common import print_diagnostics

STDIN = "-"


def cmd_fmt(args: argparse.Namespace) -> int:
    from ..fmt import format_source

    files = args.files or [STDIN]
    if STDIN in files and len(files) > 1:
        raise UsageError("`-` (standard input) cannot be given with other files")
    if files == [STDIN]:
        return _stdin(args, format_source)
    failed = changed = 0
    for path in _sources(files):
        try:
            text = _read(path)
            out = format_source(text, path)
        except NetdslError as exc:  # a syntax error, an unreadable file: reported, the file left as it is
            print_diagnostics(exc.diagnostics)
            failed += 1
            continue
        if out == text:
            continue
        changed += 1
        if args.diff:
            sys.stdout.write(_diff(text, out, path))
        if args.check:
            print(f"would reformat {plain(path)}", file=sys.stderr)
        elif not args.diff:
            from ..files import write_bytes

            try:
                write_bytes(path, out.encode("utf-8"))
            except NetdslError as exc:
                print_diagnostics(exc.diagnostics)
                failed += 1
                continue
            if not args.quiet:
                print(f"reformatted {plain(path)}", file=sys.stderr)
    if failed or args.check and changed:
        return EXIT_INPUT
    return EXIT_OK


def _stdin(args: argparse.Namespace, format_source) -> int:
    from ..syntax import decode_source

    text = decode_source(sys.stdin.buffer.read(), "<stdin>")
    out = format_source(text, "<stdin>")  # a syntax error: reported by main, nothing written
    if args.diff:
        sys.stdout.write(_diff(text, out, "<stdin>"))
    elif not args.check:
        sys.stdout.write(out)
    if args.check and out != text:
        print("would reformat <stdin>", file=sys.stderr)
        return EXIT_INPUT
    return EXIT_OK


def _sources(files: list[str]) -> list[str]:
    """The files named, a folder standing for the .net files under it (in name order)."""
    found: list[str] = []
    for f in files:
        if os.path.isdir(f):
            for root, dirs, names in os.walk(f):
                dirs.sort()
                found.extend(os.path.join(root, n) for n in sorted(names) if n.endswith(".net")
                             and os.path.isfile(os.path.join(root, n)))
        else:
            found.append(f)
    return found


def _read(path: str) -> str:
    from ..syntax import read_source

    return read_source(path)


def _diff(before: str, after: str, path: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        fromfile=path, tofile=path))


def register(sub) -> None:
    p = sub.add_parser("fmt", help="rewrite .net sources in the canonical layout (comments kept, meaning unchanged)")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="a .net file or a folder of them (default, or `-`: read standard input, write standard "
                        "output)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; name the files that would change and exit 1 if any would")
    p.add_argument("--diff", action="store_true", help="write nothing; print a unified diff of the changes")
    p.add_argument("-q", "--quiet", action="store_true", help="do not name the files rewritten")
    p.set_defaults(func=cmd_fmt)
