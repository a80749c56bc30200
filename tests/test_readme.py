"""README.md's claims that are generated from the code: the zoo table (tools/update_zoo_table.py)."""

from __future__ import annotations

import importlib.util

from helpers import REPO


def _tool():
    spec = importlib.util.spec_from_file_location("update_zoo_table", REPO / "tools" / "update_zoo_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zoo_table_is_up_to_date():
    tool = _tool()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert tool.START in readme and tool.END in readme
    current = readme[readme.index(tool.START): readme.index(tool.END) + len(tool.END)]
    expected = tool.table()
    assert current == expected, ("README.md's zoo table is out of date: run python tools/update_zoo_table.py\n"
                                 + "\n".join(f"- {a}\n+ {b}" for a, b in zip(current.splitlines(),
                                                                               expected.splitlines(), strict=False)
                                             if a != b))


def test_zoo_table_lists_every_network():
    tool = _tool()
    rows = tool.rows()[2:]
    assert len(rows) == len(list((REPO / "networks").glob("*.net"))) >= 29
    resnet18 = next(r for r in rows if "`resnet18.net`" in r)
    assert resnet18 == ("| [`resnet18.net`](networks/resnet18.net) | ResNet-18 | 3x224x224 | 11,689,512 | "
                        "1,814,073,344 | matches |")
