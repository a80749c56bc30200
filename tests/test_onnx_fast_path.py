"""A plain ``.onnx`` file on ONNX Runtime is read and described by ONNX Runtime itself (its inputs, outputs,
graph name and metadata), without importing onnx; everything it says and checks is what the ModelProto path
says and checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import REPO, cli_env, netdsl_main
from onnx import TensorProto, helper

import netdsl
from netdsl.preprocess import InputError
from netdsl.session import Session, model_source

LENET = str(REPO / "networks" / "lenet5.net")

PROBE = """
import json, sys
from netdsl.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as e:
    rc = e.code
print(json.dumps([rc, sorted(m for m in sys.modules if m.split(".")[0] in ("onnx", "ml_dtypes"))]), file=sys.stderr)
"""


def probe(*argv: str) -> tuple[int, str, str, list[str]]:
    """``netdsl ARGV`` in a fresh process -> (exit code, stdout, stderr, the onnx modules it loaded)."""
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], env=cli_env(), capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    *lines, last = proc.stderr.strip().splitlines()
    rc, modules = json.loads(last)
    return rc, proc.stdout, "\n".join(lines), modules


def lenet_onnx(tmp_path: Path, metadata: str | None = "keep", name: str = "lenet5.onnx") -> Path:
    model = netdsl.load(LENET).to_onnx()
    if metadata != "keep":
        props = {p.key: p.value for p in model.metadata_props if p.key != "netdsl.inputs"}
        if metadata is not None:
            props["netdsl.inputs"] = metadata
        del model.metadata_props[:]
        helper.set_model_props(model, props)
    path = tmp_path / name
    onnx.save(model, path)
    return path


def test_run_of_an_onnx_file_imports_no_onnx(tmp_path):
    path = lenet_onnx(tmp_path)
    rc, out, err, modules = probe("run", str(path), "--json")
    assert rc == 0, err
    assert modules == []
    assert json.loads(out)["model"] == "lenet5"


def test_bench_of_an_onnx_file_imports_no_onnx(tmp_path):
    path = lenet_onnx(tmp_path)
    rc, _, err, modules = probe("bench", str(path), "--duration", "0.05", "--warmup", "0", "--min-iterations", "1",
                                "--json")
    assert rc == 0, err
    assert modules == []


def test_an_option_that_needs_the_model_proto_still_loads_it(tmp_path):
    """The probe is sound: fp16 conversion of an .onnx needs the ModelProto, and the probe sees onnx then."""
    rc, _, err, modules = probe("run", str(lenet_onnx(tmp_path)), "--dtype", "fp16", "--json")
    assert rc == 0, err
    assert "onnx" in modules


def test_session_describes_the_model_as_the_model_proto_does(tmp_path):
    path = lenet_onnx(tmp_path)
    fast = Session(str(path)).source
    proto = model_source(str(path))  # the ModelProto path: onnx parses the file
    assert fast.onnx_bytes is None and fast.path == str(path)
    assert (fast.name, fast.inputs, fast.outputs, fast.metadata) == \
        (proto.name, proto.inputs, proto.outputs, proto.metadata)
    assert "netdsl.inputs" in fast.metadata


def test_run_gives_what_the_model_proto_path_gives(tmp_path):
    path = lenet_onnx(tmp_path)
    fast = Session(str(path), threads=1)
    slow = Session(onnx.load(path), threads=1)
    feeds = fast.random_feeds(batch=3, seed=5)
    assert feeds.keys() == slow.random_feeds(batch=3, seed=5).keys()
    a, b = fast.run(feeds), slow.run(feeds)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    rc, out, err = netdsl_main("run", path, "--json", "--threads", "1", "--batch", "3", "--seed", "5")
    assert rc == 0, err
    report = json.loads(out)
    assert report["model"] == "lenet5"
    (logits,) = report["outputs"].values()
    assert logits["shape"] == [3, 10] and logits["mean"] == pytest.approx(float(a["logits"].mean()), rel=1e-6)


def test_malformed_metadata_is_named_on_the_fast_path(tmp_path):
    path = lenet_onnx(tmp_path, '[{"name": "image", "shape": 5}]')
    with pytest.raises(InputError, match="lenet5: the model's `netdsl.inputs` metadata is malformed: input `image` "
                                         "has the shape 5, not a list of positive integers"):
        Session(str(path)).preprocessing()


def test_malformed_metadata_from_the_command_line_without_onnx(tmp_path):
    pil = pytest.importorskip("PIL.Image", reason="reading images needs the optional package Pillow")
    pil.new("L", (32, 32), 128).save(tmp_path / "digit.png")
    path = lenet_onnx(tmp_path, "{not json")
    rc, _, err, modules = probe("run", str(path), "--input", f"image={tmp_path / 'digit.png'}")
    assert rc == 1
    assert "lenet5: the model's `netdsl.inputs` metadata is malformed: not valid JSON" in err
    assert "internal error" not in err and "Traceback" not in err
    assert modules == []


def test_wrong_input_names_dtypes_and_shapes_on_the_fast_path(tmp_path):
    sess = Session(str(lenet_onnx(tmp_path)))
    good = np.zeros((2, 1, 32, 32), np.float32)
    with pytest.raises(InputError, match=r"unknown input `picture`; the model expects image: Nx1x32x32 float32$"):
        sess.run(picture=good)
    with pytest.raises(InputError, match=r"input `image` has dtype float64, expected image: Nx1x32x32 float32"):
        sess.run(image=good.astype(np.float64))
    with pytest.raises(InputError, match=r"input `image` has shape 2x1x28x28, expected image: Nx1x32x32 float32"):
        sess.run(image=np.zeros((2, 1, 28, 28), np.float32))


def test_wrong_input_name_from_the_command_line(tmp_path):
    path = lenet_onnx(tmp_path)
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 32, 32), np.float32))
    rc, _, err, modules = probe("run", str(path), "--input", f"picture={tmp_path / 'x.npy'}")
    assert rc == 1
    assert "the model has no input `picture`; it expects image: Nx1x32x32 float32" in err
    assert modules == []


def _symbolic_model(tmp_path: Path) -> Path:
    """y = x + 1 with a named batch (``batch``), an unnamed dynamic dimension, and a fixed one."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None, 4])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "plus_one", [x], [y], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "plus_one.onnx"
    onnx.save(model, path)
    return path


def test_symbolic_dimensions(tmp_path):
    path = _symbolic_model(tmp_path)
    sess = Session(str(path))
    assert sess.name == "plus_one"
    assert sess.source.inputs == model_source(str(path)).inputs
    (spec,) = sess.inputs
    assert spec.shape == (None, None, 4) and spec.dtype == np.float32
    x = np.arange(3 * 5 * 4, dtype=np.float32).reshape(3, 5, 4)
    np.testing.assert_array_equal(sess.run(x=x)["y"], x + 1)
    with pytest.raises(InputError, match=r"input `x` has shape 3x5x3, expected x: NxNx4 float32"):
        sess.run(x=np.zeros((3, 5, 3), np.float32))
    with pytest.raises(InputError, match="holds no samples"):
        sess.run(x=np.zeros((0, 5, 4), np.float32))
    rc, out, err, modules = probe("run", str(path), "--batch", "2", "--json")
    assert rc == 0, err
    assert modules == [] and json.loads(out)["inputs"]["x"]["shape"][0] == 2


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file"),
    (b"this is not a protobuf \xff\xff\xff", "not a readable ONNX model"),
])
def test_unreadable_files_say_what_they_said(tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        Session(str(path))
    rc, _, err = netdsl_main("run", path)
    assert rc == 1 and message in err and "internal error" not in err


def test_save_optimized_on_the_fast_path(tmp_path):
    out = tmp_path / "optimized.onnx"
    rc, _, err, modules = probe("run", str(lenet_onnx(tmp_path)), "--save-optimized", str(out), "--json")
    assert rc == 0, err
    assert modules == [] and out.stat().st_size > 0
    onnx.checker.check_model(onnx.load(out))


def test_names_from_the_file_are_shown_plain(tmp_path):
    model = onnx.load(lenet_onnx(tmp_path))
    model.graph.name = "\x1b]0;pwned\x07evil"
    path = tmp_path / "evil.onnx"
    onnx.save(model, path)
    assert "\x1b" not in Session(str(path)).name
    assert Session(str(path)).name == model_source(str(path)).name
