"""The command line, run as a user runs it: ``netdsl.cli.main`` in-process with captured streams, and
``python -m netdsl ...`` in a subprocess where the process is the point (exit codes, malformed input).

Exit codes: 0 success, 1 errors in the input, 2 usage errors. No input, however malformed, may
produce a Python traceback.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import onnx
import pytest
from helpers import ort_session, random_feeds, run_netdsl

from netdsl.lower import MIN_OPSET, max_opset

SMALL = """
# a small network for the command line
block unit(c, stride=1) {
    conv c 3x3 /stride pad 1 nobias -> bn -> relu
}

network small(classes=10) {
    input image: 3x16x16
    stem: unit(8)
    layer1: unit(16, stride=2) x 2
    avgpool global -> flatten
    fc: fc classes
    output logits
}
"""

TWO = """
network first {
    input image: 3x8x8
    conv 4 3x3
}

network second(width=2) {
    input image: 3x8x8
    conv width 1x1 -> relu
}
"""


@pytest.fixture
def small(write_net):
    return write_net("small.net", SMALL)


def no_traceback(err: str) -> None:
    assert "Traceback" not in err and "internal error" not in err, err


# ----------------------------------------------------------------------------- check / summary
def test_check_ok(run_cli, small):
    rc, out, err = run_cli("check", small)
    assert rc == 0 and err == ""
    assert out == f"{small}: ok: network small, 12 layers, 3,922 params, 166,048 MACs (conv+fc), 0 warning(s)\n"
    rc, out, err = run_cli("check", "-q", small)
    assert (rc, out, err) == (0, "", "")


def test_check_prints_warnings_and_succeeds(run_cli, write_net):
    path = write_net("w.net", "network w {\n    input image: 3x7x7\n    conv 8 3x3 /3\n}\n")
    rc, out, err = run_cli("check", path.name, cwd=path.parent)
    assert rc == 0 and "1 warning(s)" in out
    assert err.startswith("w.net:3:5: warning: conv 3x3 /3 does not tile the input 7x7")


def test_summary_table(run_cli, small):
    rc, out, err = run_cli("summary", small)
    assert rc == 0 and err == "", err
    for text in ("network small", "stem.0", "layer1.1.2", "conv 3x3 /2 pad 1", "16x4x4", "3,922", "166,048",
                 "inputs: image 3x16x16   outputs: logits 10"):
        assert text in out, text


def test_summary_json_schema(run_cli, small):
    rc, out, err = run_cli("summary", "--json", small)
    assert rc == 0 and err == ""
    doc = json.loads(out)
    assert doc["network"] == "small"
    assert doc["inputs"] == [{"name": "image", "shape": [3, 16, 16]}]
    assert doc["outputs"] == [{"name": "logits", "shape": [10]}]
    assert set(doc["total"]) == {"params", "macs", "activation_bytes"}
    layers = doc["layers"]
    assert [layer["name"] for layer in layers][:4] == ["stem.0", "stem.1", "stem.2", "layer1.0.0"]
    for layer in layers:
        assert {"name", "op", "output_shape", "params", "macs", "receptive_field"} <= set(layer)
        assert all(isinstance(d, int) and d > 0 for d in layer["output_shape"])
    assert [(layer["op"], layer["receptive_field"]) for layer in layers] == [
        ("conv", 3), ("bn", 3), ("relu", 3), ("conv", 5), ("bn", 5), ("relu", 5), ("conv", 9), ("bn", 9),
        ("relu", 9), ("avgpool", 21), ("flatten", 21), ("fc", 21)]
    assert doc["total"]["params"] == sum(layer["params"] for layer in layers) == 3_922
    assert doc["total"]["macs"] == sum(layer["macs"] for layer in layers) == 166_048
    assert doc["total"]["activation_bytes"] == sum(4 * np.prod(layer["output_shape"]) for layer in layers)
    stem = layers[0]
    assert stem == {**stem, "op": "conv", "output_shape": [8, 16, 16], "params": 8 * 3 * 9,
                    "macs": 8 * 16 * 16 * 27, "receptive_field": 3}
    assert layers[-1]["name"] == "fc" and layers[-1]["params"] == 16 * 10 + 10


def test_summary_depth(run_cli, small):
    full = json.loads(run_cli("summary", "--json", small)[1])
    rc, out, _ = run_cli("summary", "--json", "--depth", "1", small)
    assert rc == 0
    rolled = json.loads(out)
    assert [layer["name"] for layer in rolled["layers"]] == ["stem", "layer1", "0", "1", "fc"]
    assert rolled["total"] == full["total"]
    layer1 = rolled["layers"][1]
    assert layer1["params"] == sum(x["params"] for x in full["layers"] if x["name"].startswith("layer1."))
    assert layer1["output_shape"] == [16, 4, 4]
    rc, out, _ = run_cli("summary", "--json", "--depth", "2", small)
    assert [x["name"] for x in json.loads(out)["layers"]][:3] == ["stem.0", "stem.1", "stem.2"]
    assert "layer1.0" in [x["name"] for x in json.loads(out)["layers"]]
    rc, _, err = run_cli("summary", "--depth", "0", small)
    assert rc == 2 and "--depth must be at least 1" in err


# ----------------------------------------------------------------------------- compile
def test_compile_default_output_in_cwd(run_cli, small, tmp_path):
    rc, out, err = run_cli("compile", small.name, cwd=tmp_path)
    assert rc == 0 and err == ""
    assert out == "wrote small.onnx: network small, opset 17, 3,922 params\n"
    model = onnx.load(tmp_path / "small.onnx")
    onnx.checker.check_model(model, full_check=True)
    (y,) = ort_session(model).run(None, random_feeds(model, batch=3))
    assert y.shape == (3, 10)


def test_compile_output_option_and_quiet(run_cli, small, tmp_path):
    (tmp_path / "out").mkdir()
    rc, out, err = run_cli("compile", small, "-o", tmp_path / "out" / "model.onnx", "-q")
    assert (rc, out, err) == (0, "", "")
    assert sorted(os.listdir(tmp_path / "out")) == ["model.onnx"]
    rc, _, err = run_cli("compile", small, "-o", tmp_path / "out")
    assert rc == 2 and "is a directory" in err
    rc, _, err = run_cli("compile", small, "-o", tmp_path / "missing" / "model.onnx")
    assert rc == 1 and "does not exist" in err
    no_traceback(err)


@pytest.mark.parametrize("opset", [MIN_OPSET, max_opset()])
def test_compile_opset_bounds(run_cli, small, tmp_path, opset):
    target = tmp_path / f"m{opset}.onnx"
    rc, _, err = run_cli("compile", small, "--opset", str(opset), "-o", target)
    assert rc == 0, err
    model = onnx.load(target)
    assert model.opset_import[0].version == opset
    onnx.checker.check_model(model, full_check=True)
    ort_session(model).run(None, random_feeds(model))


@pytest.mark.parametrize("opset", [MIN_OPSET - 1, max_opset() + 1, 0])
def test_compile_opset_out_of_range(run_cli, small, tmp_path, opset):
    rc, out, err = run_cli("compile", small, "--opset", str(opset), "-o", tmp_path / "m.onnx")
    assert rc == 2 and out == ""
    assert f"--opset must be between {MIN_OPSET} and {max_opset()}" in err
    assert not (tmp_path / "m.onnx").exists()
    no_traceback(err)


def test_several_networks(run_cli, write_net, tmp_path):
    path = write_net("two.net", TWO)
    rc, _, err = run_cli("compile", path.name, cwd=tmp_path)
    assert rc == 2 and "holds several networks (first, second); pick one with --network NAME" in err
    rc, out, err = run_cli("compile", path.name, "--network", "second", cwd=tmp_path)
    assert rc == 0, err
    assert out.startswith("wrote second.onnx: network second")
    assert onnx.load(tmp_path / "second.onnx").graph.name == "second"
    rc, _, err = run_cli("check", path.name, "--network", "third", cwd=tmp_path)
    assert rc == 2 and "no network named `third` (networks in this file: first, second)" in err


def test_network_arguments(run_cli, small, tmp_path):
    rc, out, err = run_cli("summary", "--json", small, "--arg", "classes=3")
    assert rc == 0, err
    assert json.loads(out)["outputs"] == [{"name": "logits", "shape": [3]}]
    rc, _, err = run_cli("compile", small, "--arg", "classes=3", "-o", tmp_path / "c3.onnx")
    model = onnx.load(tmp_path / "c3.onnx")
    assert rc == 0 and model.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 3
    for bad, message in [("clases=3", "has no parameter `clases`; did you mean `classes`?"),
                         ("classes=ten", "'ten' is not a number"), ("classes", "expects NAME=VALUE")]:
        rc, _, err = run_cli("check", small, "--arg", bad)
        assert rc == 2 and message in err, (bad, err)
        no_traceback(err)


# ----------------------------------------------------------------------------- exit codes
def test_exit_codes(small, write_net):
    broken = write_net("broken.net", "network b {\n    input image: 3x8x8\n    conv 4 9x9\n}\n")
    assert run_netdsl("check", small)[0] == 0
    rc, _, err = run_netdsl("check", broken)
    assert rc == 1 and "error: conv kernel 9x9 is larger than its input 8x8" in err
    for usage in (["check"], ["frobnicate", small], ["check", small, "--no-such-option"], [],
                  ["compile", small, "--seed", "-1"], ["compile", small, "--opset", "seventeen"]):
        rc, _, err = run_netdsl(*usage)
        assert rc == 2, (usage, err)
        no_traceback(err)
    rc, out, _ = run_netdsl("--version")
    assert rc == 0 and out.startswith("netdsl ")


# ----------------------------------------------------------------------------- malformed input
def _nested(n: int) -> str:
    return "network t {\n    input image: 3x8x8\n    " + "(" * n + "relu" + ")" * n + "\n}\n"


MALFORMED = {
    "empty": (b"", "defines no `network`"),
    "binary": (bytes(range(256)) * 4, "file is not UTF-8 text"),
    "not_utf8": (b"network t {\n    input image: 3x8x8\n    relu  # caf\xe9\n}\n", "3:16: error: file is not UTF-8"),
    "nul_bytes": (b"network t {\x00\x00}\n", "unexpected character"),
    "parens": (_nested(5000).encode(), "nesting is too deep"),
    "paren_expr": (("network t {\n    input image: 3x8x8\n    conv " + "(" * 5000 + "4" + ")" * 5000
                    + " 1x1\n}\n").encode(), "error:"),
    "open_parens": (("network t {\n    input image: 3x8x8\n    " + "(" * 5000 + "\n").encode(), "error:"),
    "huge_repetition": (b"network t {\n    input image: 3x8x8\n    relu x 99999999999999999999999999999\n}\n",
                        "is over the limit of 10,000"),
    "huge_channels": (b"network t {\n    input image: 3x8x8\n    conv 99999999999999999999 1x1\n}\n", "error:"),
    "huge_input": (b"network t {\n    input image: 99999x99999x99999\n}\n", "more than 2,147,483,647 elements"),
    "zero_input": (b"network t {\n    input image: 0x8x8\n    relu\n}\n", "must be a positive integer, got 0"),
    "deep_blocks": (b"block a(n) {\n    a(n)\n}\nnetwork t {\n    input image: 3x8x8\n    a(1)\n}\n",
                    "blocks call each other more than 64 deep"),
    "only_comment": (b"# nothing here\n", "defines no `network`"),
    "unbalanced": (b"network t {\n    input image: 3x8x8\n    residual< relu | relu | >\n}}}\n", "error:"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_never_tracebacks(tmp_path, case):
    data, message = MALFORMED[case]
    path = tmp_path / f"{case}.net"
    path.write_bytes(data)
    rc, out, err = run_netdsl("check", path.name, cwd=tmp_path)
    no_traceback(err)
    assert rc == 1, (rc, err)
    assert message in err, err
    assert out == ""


def test_directory_and_missing_file(run_cli, tmp_path):
    (tmp_path / "dir.net").mkdir()
    for name, message in [("dir.net", "dir.net: is a directory, not a .net file"),
                          ("missing.net", "missing.net: no such file")]:
        rc, out, err = run_cli("check", name, cwd=tmp_path)
        assert rc == 1 and err == f"netdsl: error: {message}\n" and out == ""


def test_long_chain(run_cli, tmp_path):
    path = tmp_path / "long.net"
    path.write_text("network t {\n    input image: 3x8x8\n" + "    relu\n" * 10_000 + "}\n")
    rc, out, err = run_cli("check", path.name, cwd=tmp_path)
    assert rc == 0 and "10000 layers" in out, err
    path.write_text("network t {\n    input image: 3x8x8\n    relu" + " -> relu" * 10_000 + "\n}\n")
    rc, out, err = run_cli("check", path.name, cwd=tmp_path)
    assert rc == 0 and "10001 layers" in out, err


# ----------------------------------------------------------------------------- files
def test_failed_compile_leaves_the_target_untouched(run_cli, small, write_net, tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous model")
    broken = write_net("broken.net", SMALL.replace("fc: fc classes", "fc: fc classes -> conv 3 3x3"))
    before = sorted(os.listdir(tmp_path))
    rc, _, err = run_cli("compile", broken, "-o", target)
    assert rc == 1 and "conv expects a CxHxW input, got 10" in err
    rc, _, err = run_cli("compile", small, "--opset", "5", "-o", target)
    assert rc == 2
    assert target.read_bytes() == b"previous model"
    assert sorted(os.listdir(tmp_path)) == before  # no temporary files left behind
    rc, _, _ = run_cli("compile", small, "-o", target, "-q")
    assert rc == 0 and target.read_bytes() != b"previous model"
    assert sorted(os.listdir(tmp_path)) == before


def test_recompilation_is_byte_identical(run_cli, small, tmp_path):
    for name in ("a.onnx", "b.onnx"):
        assert run_cli("compile", small, "-o", tmp_path / name)[0] == 0
    assert run_cli("compile", small, "--seed", "7", "-o", tmp_path / "c.onnx")[0] == 0
    a, b, c = ((tmp_path / n).read_bytes() for n in ("a.onnx", "b.onnx", "c.onnx"))
    assert a == b
    assert a != c and len(a) == len(c)


def test_external_data_always(run_cli, small, tmp_path):
    rc, out, err = run_cli("compile", small, "--external-data", "always", "-o", tmp_path / "ext.onnx")
    assert rc == 0, err
    names = sorted(os.listdir(tmp_path))
    assert names[0] == "ext.onnx" and re.fullmatch(r"ext\.onnx\.[0-9a-f]{16}\.data", names[1]), names
    assert names[2:] == ["small.net"] and names[1] in out
    assert run_cli("compile", small, "-o", tmp_path / "inline.onnx")[0] == 0
    assert (tmp_path / "ext.onnx").stat().st_size < (tmp_path / "inline.onnx").stat().st_size
    external = onnx.load(tmp_path / "ext.onnx", load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in external.graph.initializer)
    model = onnx.load(tmp_path / "ext.onnx")  # pulls the weights in from ext.onnx.<hash>.data
    onnx.checker.check_model(str(tmp_path / "ext.onnx"), full_check=True)
    inline = onnx.load(tmp_path / "inline.onnx")
    feeds = random_feeds(inline)
    expected = ort_session(inline).run(None, feeds)[0]
    np.testing.assert_array_equal(ort_session(model).run(None, feeds)[0], expected)
    import onnxruntime as ort  # a session from the path reads the .data file itself

    by_path = ort.InferenceSession(str(tmp_path / "ext.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(by_path.run(None, feeds)[0], expected)
