"""`netdsl lsp`: the language server for editors, on stdin and stdout (needs ``pip install "netdsl[lsp]"``)."""

from __future__ import annotations

import argparse

from . import EXIT_OK


def cmd_lsp(args: argparse.Namespace) -> int:
    from ..lsp.server import main  # pygls is imported here, with a clear message when it is missing

    main()
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lsp", help="run the language server (stdio) for editors",
                       description="Serve the Language Server Protocol on stdin/stdout: diagnostics, shapes as "
                                   "inlay hints, hover, go to definition, references, rename, completion, "
                                   "formatting. Needs the `lsp` extra: pip install \"netdsl[lsp]\".")
    p.add_argument("--stdio", action="store_true", help="serve on stdin/stdout (the default; accepted for editors "
                                                        "that pass it)")
    p.set_defaults(func=cmd_lsp)
