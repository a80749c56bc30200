#!/usr/bin/env python3
"""Regenerate README.md's zoo table (between ``<!-- zoo table ... -->`` and ``<!-- end of zoo table -->``).

One row per ``networks/*.net``: the model (the file's first comment line, up to its first parenthesis), the
input, the parameter and MAC counts netdsl computes (``netdsl summary --json``), and "matches" in the
torchvision column where the file names its torchvision counterpart (``# torchvision: ...``) and a stored
reference (tests/fixtures/parity/<name>.npz, checked by tests/test_parity_reference.py) guards the claim.

    python tools/update_zoo_table.py          # rewrite README.md
    python tools/update_zoo_table.py --check  # exit 1 if README.md's table is out of date

tests/test_readme.py fails when the table in README.md differs from the regenerated one.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
START = "<!-- zoo table: generated from `netdsl summary --json networks/*.net` -->"
END = "<!-- end of zoo table -->"


def model_name(text: str) -> str:
    first = text.splitlines()[0].removeprefix("#").strip()
    return first.split(" (", 1)[0].strip()


def rows() -> list[str]:
    sys.path.insert(0, str(REPO))
    import netdsl

    out = ["| file | model | input | params | MACs (conv+fc) | torchvision |", "|---|---|---|---:|---:|---|"]
    for path in sorted((REPO / "networks").glob("*.net")):
        text = path.read_text(encoding="utf-8")
        summary = netdsl.load(path).summary().to_json()
        shape = "x".join(str(d) for d in summary["inputs"][0]["shape"])
        named = re.search(r"^# torchvision: *\w+\(.*\)\s*$", text[:3000], re.M)
        fixture = REPO / "tests" / "fixtures" / "parity" / f"{path.stem}.npz"
        tv = "matches" if named and fixture.exists() else "—"
        out.append(f"| [`{path.name}`](networks/{path.name}) | {model_name(text)} | {shape} | "
                   f"{summary['total']['params']:,} | {summary['total']['macs']:,} | {tv} |")
    return out


def table() -> str:
    return "\n".join([START, *rows(), END])


def replaced(readme: str, new_table: str) -> str:
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{README}: the zoo table markers are missing")
    return readme[:start] + new_table + readme[end + len(END):]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if README.md is out of date")
    args = parser.parse_args(argv)
    readme = README.read_text(encoding="utf-8")
    new = replaced(readme, table())
    if args.check:
        if new != readme:
            print("README.md's zoo table is out of date: run python tools/update_zoo_table.py", file=sys.stderr)
            return 1
        return 0
    if new != readme:
        README.write_text(new, encoding="utf-8")
        print("README.md: zoo table updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
