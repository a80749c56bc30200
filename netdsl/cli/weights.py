"""`netdsl weights list|export`: the weights a network expects, and writing them to a checkpoint."""

from __future__ import annotations

import argparse
import sys

from ..text import plain, rich_safe
from .common import add_network_options, add_weight_options, load_network, print_json, resolve_weights


# ----------------------------------------------------------------------------- netdsl weights ...
def cmd_list(args: argparse.Namespace) -> int:
    net = load_network(args)
    rows = net.weight_table()
    if args.json:
        print_json({"network": net.name, "weights": rows})
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"weights of network {rich_safe(net.name)}", title_justify="left")
    for col in ("name", "shape", "dtype", "kind", "source"):
        table.add_column(col)
    for r in rows:  # the source column holds the file's path: shown literally
        table.add_row(rich_safe(r["name"]), "x".join(map(str, r["shape"])), r["dtype"], r["kind"],
                      rich_safe(r["location"]))
    Console(highlight=False, width=160 if not sys.stdout.isatty() else None).print(table)
    params = sum(1 for r in rows if r["kind"] == "param")
    print(f"{len(rows)} tensors ({params} parameters, {len(rows) - params} buffers)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..checkpoint import write_checkpoint
    from ..files import refuse_overwrite

    refuse_overwrite(args.output, (args.file, args.weights))
    net = load_network(args)
    weights = resolve_weights(net, args)
    if weights is None:
        weights = net.initial_weights(args.seed)
    write_checkpoint(args.output, weights)
    print(f"wrote {plain(args.output)}: {len(weights)} tensors of network {net.name}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("weights", help="list the weights a network expects, or export them")
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    wsub.required = True
    q = wsub.add_parser("list", help="expected weight names, shapes, dtypes and source locations")
    add_network_options(q)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_list)
    q = wsub.add_parser("export", help="write the network's weights (seeded init, or converted --weights)")
    add_network_options(q)
    q.add_argument("-o", "--output", required=True, metavar="FILE", help="output .safetensors or .npz")
    q.add_argument("--seed", type=int, default=0, help="seed of the initialisation (default 0)")
    add_weight_options(q, dtype=False)
    q.set_defaults(func=cmd_export)
