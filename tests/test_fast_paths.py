"""The fast paths of compile and check keep their promises: same bytes, lean imports, robust caches."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

import netdsl

REPO = Path(__file__).resolve().parent.parent
NETWORKS = REPO / "networks"
SMALL = NETWORKS / "resnet18.net"


def test_streamed_save_equals_the_in_memory_model(tmp_path):
    net = netdsl.load(SMALL)
    net.save(tmp_path / "a.onnx", seed=3)
    assert (tmp_path / "a.onnx").read_bytes() == net.to_onnx(seed=3).SerializeToString()
    weights = {k: v * 0.5 for k, v in net.initial_weights(seed=1).items()}
    net.save(tmp_path / "b.onnx", weights=weights)
    assert (tmp_path / "b.onnx").read_bytes() == net.to_onnx(weights=weights).SerializeToString()


def test_external_data_round_trips_to_the_same_weights(tmp_path):
    net = netdsl.load(SMALL)
    files = net.save(tmp_path / "m.onnx", seed=2, external_data=True)
    names = sorted(os.path.basename(f) for f in files)
    assert names[0] == "m.onnx" and re.fullmatch(r"m\.onnx\.[0-9a-f]{16}\.data", names[1]), names
    model = onnx.load(str(tmp_path / "m.onnx"))  # loads the external data
    got = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    want = net.initial_weights(seed=2)
    assert set(got) == set(want) and want
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)


def _run_python(code: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_check_imports_neither_numpy_nor_onnx_nor_rich():
    code = ("import sys, netdsl.cli as c\n"
            f"rc = c.main(['check', '-q', {str(SMALL)!r}])\n"
            "print(rc, sorted(m for m in ('numpy', 'onnx', 'rich', 'onnxruntime') if m in sys.modules))")
    r = _run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0] == "0 []"


def test_a_corrupt_grammar_cache_is_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    check = f"import netdsl.cli as c; raise SystemExit(c.main(['check', '-q', {str(SMALL)!r}]))"
    first = _run_python(check, {"NETDSL_CACHE_DIR": str(cache / "netdsl")})
    assert first.returncode == 0, first.stderr
    files = list((cache / "netdsl").glob("grammar-*"))
    assert files, "the grammar cache was not written"
    for f in files:
        f.write_bytes(b"\x80\x04garbage, not a pickle")
    again = _run_python(check, {"NETDSL_CACHE_DIR": str(cache / "netdsl")})
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
