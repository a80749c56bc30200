"""`netdsl view`: the network as an interactive diagram in one self-contained HTML file, or in Netron."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from ..errors import UsageError
from ..text import plain
from . import EXIT_OK
from .common import add_network_options, default_output, load_network


def cmd_view(args: argparse.Namespace) -> int:
    if args.depth < 1:
        raise UsageError("--depth must be at least 1")
    if args.netron:
        return _netron(args)
    out = args.output or default_output(args.file, ".html")
    if os.path.isdir(out):
        raise UsageError(f"-o {out}: is a directory; give the path of the .html file to write")
    from ..files import check_output, refuse_overwrite, write_bytes

    refuse_overwrite(out, (args.file,))
    check_output(out)
    net = load_network(args)
    from ..view import render_html, structure

    page = render_html(structure(net.graph, net.summary()), depth=args.depth)
    write_bytes(out, page.encode("utf-8"))
    if not args.quiet:
        print(f"wrote {plain(out)}: network {net.name}, {len(page.encode('utf-8')):,} bytes")
    if args.open:
        import webbrowser

        if not webbrowser.open(Path(out).resolve().as_uri()):
            print(f"netdsl: warning: no web browser found; open {plain(out)} yourself", file=sys.stderr)
    return EXIT_OK


def _netron(args: argparse.Namespace) -> int:
    from ..lazy import lazy_import

    netron = lazy_import("netron", extra="netron", purpose="netdsl view --netron")
    net = load_network(args)
    with tempfile.TemporaryDirectory(prefix="netdsl-view-") as folder:
        path = os.path.join(folder, f"{net.name}.onnx")  # a network name is an identifier
        net.save(path, opset=args.opset)
        if not args.quiet:
            print(f"compiled {plain(net.name)} to {plain(path)}; serving it with Netron (Ctrl-C stops)")
        netron.start(path, browse=True)
        netron.wait()
    return EXIT_OK


def register(sub) -> None:
    from ..lower import DEFAULT_OPSET

    p = sub.add_parser("view", help="write an interactive HTML diagram of the network (blocks, shapes, costs, source)")
    add_network_options(p)
    p.add_argument("-o", "--output", metavar="PATH", help="the .html file to write (default: <file stem>.html)")
    p.add_argument("--depth", type=int, default=1, metavar="N",
                   help="open the blocks down to N name components (default 1: top-level blocks closed)")
    p.add_argument("--open", action="store_true", help="open the page in the web browser when written")
    p.add_argument("--netron", action="store_true",
                   help="compile to ONNX and open it in Netron instead (needs the `netron` extra); nodes carry "
                        "their block path as metadata_props['namespace'] from opset 21 (ONNX IR 10)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset for --netron (default {DEFAULT_OPSET})")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=cmd_view)
