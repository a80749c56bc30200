"""Golden files beyond diagnostics: the lowering of small networks as ONNX text, and ``netdsl summary`` output.

* tests/golden/lowering/<case>.net (small networks written for this) and networks/lenet5.net -> <case>.txt:
  ``onnx.printer.to_text`` of the lowered model, with the values of tensors over 16 elements left out (their
  names, types and shapes stay) and the source hash and version in the metadata replaced by placeholders.
* tests/golden/summary/<network>.txt and <network>.json: ``netdsl summary`` and ``netdsl summary --json`` for a
  few zoo networks, run from the repository root.

A mismatch fails with a unified diff. To accept new output after a deliberate change:
``NETDSL_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py``, then review the diff of the golden files.
"""

from __future__ import annotations

import json

import onnx
import onnx.printer
import pytest
from helpers import GOLDEN, NETWORKS, REPO, check_golden, netdsl_main

import netdsl

LOWERING = GOLDEN / "lowering"
SUMMARY = GOLDEN / "summary"
LOWERING_CASES = {p.stem: p for p in sorted(LOWERING.glob("*.net"))} | {"lenet5": NETWORKS / "lenet5.net"}
SUMMARY_NETWORKS = ["lenet5", "resnet18", "googlenet", "mobilenet_v2"]


def onnx_text(model: onnx.ModelProto) -> str:
    """The model as ``onnx.printer`` text, without bulk weight values or build-specific metadata."""
    shown = onnx.ModelProto()
    shown.CopyFrom(model)
    for tensor in shown.graph.initializer:
        size = 1
        for d in tensor.dims:
            size *= d
        if size > 16:
            for field in ("raw_data", "float_data", "int64_data", "int32_data", "double_data"):
                tensor.ClearField(field)
    shown.producer_version = "VERSION"
    for prop in shown.metadata_props:
        if prop.key == "netdsl.version":
            prop.value = "VERSION"
        elif prop.key == "netdsl.source_sha256":
            prop.value = "SHA256"
    return onnx.printer.to_text(shown) + "\n"


def test_there_are_cases():
    assert {"lenet5", "resnet_block", "inception_module"} <= set(LOWERING_CASES)


@pytest.mark.parametrize("case", sorted(LOWERING_CASES))
def test_lowering_golden(case):
    model = netdsl.load(LOWERING_CASES[case]).to_onnx(seed=0)
    check_golden(LOWERING / f"{case}.txt", onnx_text(model))


def test_lowering_text_shows_a_change(tmp_path, monkeypatch):
    """The golden comparison can fail: a different stride changes the text, and the diff shows it."""
    monkeypatch.delenv("NETDSL_UPDATE_GOLDEN", raising=False)
    source = (LOWERING / "resnet_block.net").read_text(encoding="utf-8")
    golden = tmp_path / "resnet_block.txt"
    golden.write_text(onnx_text(netdsl.load(source).to_onnx(seed=0)), encoding="utf-8")
    changed = onnx_text(netdsl.load(source.replace("stride=2", "stride=1")).to_onnx(seed=0))
    shown = r"(?s)differs.*\n-.*strides: ints = \[2, 2\].*\n\+.*strides: ints = \[1, 1\]"
    with pytest.raises(AssertionError, match=shown):
        check_golden(golden, changed)


@pytest.mark.parametrize("name", SUMMARY_NETWORKS)
def test_summary_table_golden(name):
    rc, out, err = netdsl_main("summary", f"networks/{name}.net", cwd=REPO)
    assert rc == 0 and err == "", err
    check_golden(SUMMARY / f"{name}.txt", out)


@pytest.mark.parametrize("name", SUMMARY_NETWORKS)
def test_summary_json_golden(name):
    rc, out, err = netdsl_main("summary", "--json", f"networks/{name}.net", cwd=REPO)
    assert rc == 0 and err == "", err
    json.loads(out)
    check_golden(SUMMARY / f"{name}.json", out)
