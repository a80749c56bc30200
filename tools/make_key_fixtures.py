#!/usr/bin/env python3
"""Developer tool: write the torchvision state_dict key fixtures that tests/test_zoo.py checks the zoo against.

Reads the reference dumps made by ``tools/torchvision_reference.py --out DIR`` (``DIR/<model>.json``) and writes
``tests/fixtures/torchvision_keys/<network>.json`` for every zoo network (``networks/<network>.net``) that has a
reference of the same name, or for the networks named on the command line (``resnet50`` or
``googlenet=googlenet_aux`` when the reference has another name). A fixture holds every state_dict key with its
shape, ``num_batches_tracked`` excluded (netdsl has no such tensor), so the tests need neither torch nor the
reference directory.

Usage::

    python tools/make_key_fixtures.py --ref /work/ref [NETWORK[=MODEL] ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ROOT / "networks"
FIXTURES = ROOT / "tests" / "fixtures" / "torchvision_keys"


def fixture(ref: dict) -> dict:
    """The fixture of one reference dump: key -> shape of every parameter and buffer, in state_dict order."""
    keys = {e["key"]: list(e["shape"]) for e in ref["state_dict"] if e["kind"] != "num_batches_tracked"}
    return {"model": ref["model"], "builder_kwargs": ref.get("builder_kwargs", {}),
            "input_shape": ref["input_shape"][1:], "params": ref["params"], "macs": ref["macs"], "keys": keys}


def render(data: dict) -> str:
    """JSON with one key per line, so a fixture's diff shows which tensors changed."""
    head = {k: v for k, v in data.items() if k != "keys"}
    lines = [json.dumps(head)[:-1] + ', "keys": {']
    items = list(data["keys"].items())
    for i, (key, shape) in enumerate(items):
        lines.append(f"  {json.dumps(key)}: {json.dumps(shape)}" + ("," if i < len(items) - 1 else ""))
    lines.append("}}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref", required=True, type=Path, help="directory of torchvision_reference.py dumps")
    parser.add_argument("--out", type=Path, default=FIXTURES, help=f"fixture directory (default {FIXTURES})")
    parser.add_argument("networks", nargs="*", help="NETWORK or NETWORK=MODEL (default: every zoo network "
                                                    "with a reference of the same name)")
    args = parser.parse_args(argv)
    if args.networks:
        pairs = [tuple(n.split("=", 1)) if "=" in n else (n, n) for n in args.networks]
    else:
        pairs = [(p.stem, p.stem) for p in sorted(NETWORKS.glob("*.net")) if (args.ref / f"{p.stem}.json").exists()]
    args.out.mkdir(parents=True, exist_ok=True)
    for network, model in pairs:
        src = args.ref / f"{model}.json"
        if not src.exists():
            print(f"error: no reference {src}", file=sys.stderr)
            return 1
        data = fixture(json.loads(src.read_text()))
        (args.out / f"{network}.json").write_text(render(data))
        print(f"{network}: {len(data['keys'])} keys from {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
