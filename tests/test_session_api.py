"""netdsl.Session compiles .net paths; the runtime Session (netdsl.session) takes a loader instead of
importing the compiler."""

from __future__ import annotations

import numpy as np
import pytest

import netdsl
from netdsl import session
from netdsl.errors import UsageError

NET = """
network s(classes=3) {
    input image: 3x8x8
    c: conv 4 3x3 pad 1 -> relu
    avgpool global -> flatten
    head: fc classes
    output logits
}
"""


def test_public_session_loads_net_source_and_paths(tmp_path):
    path = tmp_path / "s.net"
    path.write_text(NET)
    x = np.ones((1, 3, 8, 8), np.float32)
    by_path = netdsl.Session(str(path), threads=1).run(image=x)["logits"]
    by_text = netdsl.Session(NET, threads=1).run(image=x)["logits"]
    by_net = netdsl.load(NET).session(threads=1).run(image=x)["logits"]
    np.testing.assert_array_equal(by_path, by_net)
    np.testing.assert_array_equal(by_text, by_net)
    assert isinstance(netdsl.Session(NET, threads=1), session.Session)


def test_runtime_session_needs_a_loader_for_net_source():
    with pytest.raises(UsageError, match="a .net model is compiled by netdsl.Session"):
        session.Session(NET, threads=1)
    x = np.ones((1, 3, 8, 8), np.float32)
    loaded = session.Session(NET, threads=1, loader=netdsl.load).run(image=x)["logits"]
    np.testing.assert_array_equal(loaded, netdsl.load(NET).session(threads=1).run(image=x)["logits"])
