"""The command line under hostile and unlucky inputs: names and labels that carry terminal escapes and rich
markup, default output names taken from inside a model, outputs that are the command's own inputs, absurd
``--arg`` and tolerance values, output paths that cannot be written, and non-finite numbers in ``--json``.

Every case ends in exit 0 with the text shown literally, or in a netdsl message with exit 1 or 2: never a
traceback, an "internal error", an escape sequence on the terminal or a file written where it should not be.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import NETWORKS, netdsl_main
from onnx import TensorProto, helper

from netdsl.errors import UsageError

OSC = "\x1b]8;;http://x\x07"  # an OSC 8 hyperlink: an escape sequence a terminal acts on
HOSTILE = f"{OSC}[bold]x[/]"  # ... followed by rich markup, and the closing tag rich fails on when unopened
LENET = NETWORKS / "lenet5.net"


def save_model(path: Path, *, graph: str = "g", inputs: str = "x", output: str = "y", op: str = "Relu",
               width: int = 4) -> Path:
    """A one-node model ``output = op(inputs)`` on float [N, width], with the names given."""
    x = helper.make_tensor_value_info(inputs, TensorProto.FLOAT, ["N", width])
    y = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", width])
    model = helper.make_model(helper.make_graph([helper.make_node(op, [inputs], [output])], graph, [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture
def hostile(tmp_path) -> Path:
    """An .onnx whose graph, input and output names carry an escape sequence and rich markup."""
    return save_model(tmp_path / "hostile.onnx", graph="net" + HOSTILE, inputs="in" + HOSTILE, output="out" + HOSTILE)


def shown_safely(rc: int, out: str, err: str) -> None:
    assert rc == 0, err
    text = out + err
    assert "\x1b" not in text and "\x07" not in text, text
    assert "Traceback" not in text and "internal error" not in text, text


def strict_json(text: str):
    """JSON as RFC 8259 defines it: bare NaN and Infinity are refused."""
    def refuse(constant: str):
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


# ----------------------------------------------------------------------------- escapes and markup
def test_run_shows_names_and_labels_from_files_literally(hostile, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{OSC}[link=http://x]class{i}[/link] [/]\n" for i in range(4)), encoding="utf-8")
    rc, out, err = netdsl_main("run", hostile, "--labels", labels, "--batch", "2", "--topk", "4")
    shown_safely(rc, out, err)
    assert "net\\x1b]8;;http://x\\x07[bold]x[/] on ort:cpu" in out, out
    assert "out\\x1b]8;;http://x\\x07[bold]x[/] [0]: top 4" in out, out
    assert "[link=http://x]class0[/link] [/]" in out, out


def test_run_json_quotes_names_as_json_strings(hostile):
    rc, out, err = netdsl_main("run", hostile, "--json")
    assert rc == 0, err
    report = strict_json(out)
    assert "\x1b" not in out and list(report["outputs"]) == ["out" + HOSTILE]


def test_run_shows_untopped_output_names_and_the_save_path_literally(tmp_path):
    model = save_model(tmp_path / "m.onnx", output="out" + HOSTILE, width=1)  # one column: no top-k table
    rc, out, err = netdsl_main("run", model, "--save", "[bold]saved[link=x].npz", cwd=tmp_path)
    shown_safely(rc, out, err)
    assert "out\\x1b]8;;http://x\\x07[bold]x[/]: 1x1 float32" in out, out
    assert "saved every output to [bold]saved[link=x].npz" in out, out


def test_compare_shows_names_from_the_model_literally(hostile):
    rc, out, err = netdsl_main("compare", hostile, "--engines", "ort:cpu,ort:cpu+opt=disable")
    shown_safely(rc, out, err)
    assert "net\\x1b]8;;http://x\\x07[bold]x[/]: inputs in\\x1b]8;;http://x\\x07[bold]x[/] 1x4" in out, out
    assert "out\\x1b]8;;http://x\\x07[bold]x[/]" in out and "PASS" in out, out


def test_bench_shows_the_model_name_literally(hostile):
    rc, out, err = netdsl_main("bench", hostile, "--duration", "0.01", "--warmup", "0", "--min-iterations", "1",
                               "--threads", "1")
    shown_safely(rc, out, err)
    assert "net\\x1b]8;;http://x\\x07[bold]x[/] on ort:cpu" in out, out


def test_file_names_are_shown_plain_and_literally(tmp_path):
    name = "e\x1b]0;title\x07[bold]x[link=y].net"  # a file name cannot hold "/", so no "[/]" here
    (tmp_path / name).write_bytes(LENET.read_bytes())
    shown = "e\\x1b]0;title\\x07[bold]x[link=y].net"
    for args in (("check",), ("summary",), ("weights", "list"), ("compile",)):
        rc, out, err = netdsl_main(*args, name, cwd=tmp_path)
        shown_safely(rc, out, err)
        if args in (("check",), ("weights", "list")):
            assert shown in out, (args, out)
    rc, out, err = netdsl_main("weights", "export", name, "-o", "w[bold].npz", cwd=tmp_path)
    shown_safely(rc, out, err)
    assert out == "wrote w[bold].npz: 10 tensors of network lenet5\n", out


def test_usage_errors_quote_arguments_plain():
    rc, out, err = netdsl_main("check", LENET, OSC + "extra")
    assert rc == 2 and "\x1b" not in err and "\x07" not in err, err
    assert "netdsl: error: unrecognized arguments: \\x1b]8;;http://x\\x07extra" in err, err


def test_diagnostics_about_a_hostile_model_are_plain(hostile, tmp_path):
    feed = tmp_path / "f.npy"
    np.save(feed, np.zeros((1, 3), np.float32))
    rc, out, err = netdsl_main("run", hostile, "--input", feed)
    assert rc == 1 and "\x1b" not in out + err and "Traceback" not in err, err
    assert "in\\x1b]8;;http://x\\x07[bold]x[/]" in err, err


# ----------------------------------------------------------------------------- default output names
@pytest.fixture
def fake_build(monkeypatch):
    """``netdsl build`` with TensorRT's build replaced by a plan of known bytes (the output name is the point)."""
    from netdsl.engines import trt

    def build(source, options):
        return trt.Plan(b"PLAN:" + source.name.encode(), "key", trt.PORTABLE, trt.parse_profile(None, None),
                        "TensorRT (test)", 0.0)

    monkeypatch.setattr(trt, "build", build)


@pytest.mark.parametrize("graph", ["../victim/prod", "/abs/dir/prod", "prod", "..", ""])
def test_build_names_its_default_output_after_the_model_file(fake_build, tmp_path, graph):
    (tmp_path / "work").mkdir()
    (tmp_path / "victim").mkdir()
    victim = tmp_path / "victim" / "prod.plan"
    victim.write_bytes(b"precious")
    if graph.startswith("/abs"):
        graph = str(tmp_path / "victim" / "prod")
    save_model(tmp_path / "model.v2.onnx", graph=graph)
    rc, out, err = netdsl_main("build", "../model.v2.onnx", cwd=tmp_path / "work")
    assert rc == 0, err
    assert sorted(os.listdir(tmp_path / "work")) == ["model.v2.plan"], out
    assert victim.read_bytes() == b"precious"
    assert out.startswith("wrote model.v2.plan: ")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                    reason="needs TensorRT for RTX (optional package tensorrt-rtx-cu13)")
def test_a_real_build_of_a_model_named_like_a_path_writes_in_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NETDSL_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "work").mkdir()
    save_model(tmp_path / "work" / "m.onnx", graph="../victim/prod")
    rc, out, err = netdsl_main("build", "m.onnx", "--batch", "1..2", cwd=tmp_path / "work")
    assert rc == 0, err
    assert sorted(os.listdir(tmp_path / "work")) == ["m.onnx", "m.plan"] and not (tmp_path / "victim").exists()
    assert "wrote m.plan: ../victim/prod, fp32" in out, out


def test_build_default_output_of_a_net_is_the_network_name(fake_build, tmp_path):
    rc, out, err = netdsl_main("build", LENET, cwd=tmp_path)
    assert rc == 0, err
    assert os.listdir(tmp_path) == ["lenet5.plan"] and (tmp_path / "lenet5.plan").read_bytes() == b"PLAN:lenet5"


@pytest.mark.parametrize(("given", "default"), [
    ("model.onnx", "model.plan"),
    ("dir/My Model.onnx", "My_Model.plan"),
    (".onnx", "onnx.plan"),
    ("-rf.onnx", "_rf.plan"),
    ("e\x1b[31m.onnx", "e_31m.plan"),
    ("..onnx", "model.plan"),
])
def test_default_output_names_are_sanitised_file_stems(given, default):
    from netdsl.cli.common import default_output

    assert default_output(given, ".plan") == default


def test_compile_default_output_is_the_network_name_in_the_current_folder(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.net").write_bytes(LENET.read_bytes())
    rc, out, err = netdsl_main("compile", "src/x.net", cwd=tmp_path)
    assert rc == 0, err
    assert (tmp_path / "lenet5.onnx").is_file() and sorted(os.listdir(tmp_path / "src")) == ["x.net"]


# ----------------------------------------------------------------------------- inputs are never outputs
def test_run_refuses_to_save_the_optimized_model_over_its_input(tmp_path):
    model = save_model(tmp_path / "m.onnx")
    before = model.read_bytes()
    for command in ("run", "bench"):
        rc, out, err = netdsl_main(command, "m.onnx", "--save-optimized", "m.onnx", cwd=tmp_path)
        assert rc == 2 and err == "netdsl: error: --save-optimized m.onnx: that is the input m.onnx; refusing to " \
                                  "write over it\n", (command, err)
    assert model.read_bytes() == before


def test_build_refuses_to_write_its_plan_over_its_model(fake_build, tmp_path):
    model = save_model(tmp_path / "m.onnx")
    before = model.read_bytes()
    rc, out, err = netdsl_main("build", "m.onnx", "-o", "m.onnx", cwd=tmp_path)
    assert rc == 2 and err == "netdsl: error: -o m.onnx: that is the input m.onnx; refusing to write over it\n", err
    assert model.read_bytes() == before


def test_run_refuses_to_save_outputs_over_any_of_its_inputs(tmp_path):
    save_model(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    (tmp_path / "labels.txt").write_text("a\nb\nc\nd\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for target, extra in (("m.onnx", ()), ("x.npy", ("--input", "x.npy")), ("x.npy", ("--input", "x=x.npy")),
                          ("labels.txt", ("--labels", "labels.txt"))):
        rc, out, err = netdsl_main("run", "m.onnx", *extra, "--save", target, cwd=tmp_path)
        assert rc == 2 and f"--save {target}: that is the input" in err, (target, err)
    rc, out, err = netdsl_main("run", "m.onnx", "--save", "o.onnx", "--save-optimized", "o.onnx", cwd=tmp_path)
    assert rc == 2 and "--save-optimized o.onnx: --save writes that file too" in err, err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_run_refuses_to_save_over_an_image_of_an_input_folder(tmp_path):
    pil = pytest.importorskip("PIL.Image", reason="reading images needs the optional package Pillow")
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 8, 8])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["image"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    (tmp_path / "photos").mkdir()
    pil.new("RGB", (8, 8)).save(tmp_path / "photos" / "a.png")
    before = (tmp_path / "photos" / "a.png").read_bytes()
    rc, out, err = netdsl_main("run", "m.onnx", "--input", "photos", "--save", "photos/a.png", cwd=tmp_path)
    assert rc == 2 and "--save photos/a.png: that is the input photos/a.png" in err, err
    assert (tmp_path / "photos" / "a.png").read_bytes() == before
    rc, out, err = netdsl_main("run", "m.onnx", "--input", "photos", "--save", "photos/out.npz", cwd=tmp_path)
    assert rc == 0 and sorted(os.listdir(tmp_path / "photos")) == ["a.png", "out.npz"], err


def test_run_refuses_to_save_over_its_weights(tmp_path):
    (tmp_path / "w.npz").write_bytes(b"")
    assert netdsl_main("weights", "export", LENET, "-o", "w.npz", cwd=tmp_path)[0] == 0
    before = (tmp_path / "w.npz").read_bytes()
    rc, out, err = netdsl_main("run", LENET, "--weights", "w.npz", "--save", "w.npz", cwd=tmp_path)
    assert rc == 2 and "--save w.npz: that is the input w.npz" in err, err
    assert (tmp_path / "w.npz").read_bytes() == before


# ----------------------------------------------------------------------------- --arg values
@pytest.mark.parametrize(("value", "message"), [
    ("9" * 5000, "--arg classes: an integer of 5,000 digits is too large (at most 100 digits)"),
    ("-" + "1" * 101, "--arg classes: an integer of 101 digits is too large (at most 100 digits)"),
    ("1e400", "--arg classes: '1e400' is not a finite number"),
    ("inf", "--arg classes: 'inf' is not a finite number"),
    ("-Infinity", "--arg classes: '-Infinity' is not a finite number"),
    ("nan", "--arg classes: 'nan' is not a finite number"),
])
def test_arg_values_that_are_not_finite_numbers_are_usage_errors(value, message):
    rc, out, err = netdsl_main("check", LENET, "--arg", f"classes={value}")
    assert rc == 2 and err == f"netdsl: error: {message}\n", err
    assert "got inf" not in err


def test_arg_values_in_range_still_work():
    from netdsl.cli.common import parse_args_kv

    assert parse_args_kv(["a=1_000", "b=" + "9" * 100, "c=2.5", "d=-3", "e=1e3"]) == \
        {"a": 1000, "b": int("9" * 100), "c": 2.5, "d": -3, "e": 1000.0}
    with pytest.raises(UsageError, match="is not a number"):
        parse_args_kv(["a=0x10"])


# ----------------------------------------------------------------------------- writes that fail
def test_run_save_write_failures_are_messages(tmp_path):
    save_model(tmp_path / "m.onnx")
    os.symlink("/dev/full", tmp_path / "full.npz")  # every write: ENOSPC, as on a full disk
    rc, out, err = netdsl_main("run", "m.onnx", "--save", "full.npz", cwd=tmp_path)
    assert rc == 1 and err == "netdsl: error: full.npz: cannot write: No space left on device\n", err
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    (tmp_path / "folder.npz").mkdir()
    rc, out, err = netdsl_main("run", "m.onnx", "--save", "folder.npz", cwd=tmp_path)
    assert rc == 1 and err == "netdsl: error: --save folder.npz: is a directory\n", err
    rc, out, err = netdsl_main("run", "m.onnx", "--save", "no/such/o.npz", cwd=tmp_path)
    assert rc == 1 and err == "netdsl: error: --save no/such/o.npz: directory no/such does not exist\n", err
    assert sorted(os.listdir(tmp_path)) == ["folder.npz", "full.npz", "m.onnx"]


def test_save_optimized_write_failures_are_messages(tmp_path):
    save_model(tmp_path / "m.onnx")
    (tmp_path / "folder.onnx").mkdir()
    os.symlink("/dev/full", tmp_path / "full.onnx")
    for target, message in (("folder.onnx", "--save-optimized folder.onnx: is a directory"),
                            ("no/such/o.onnx", "--save-optimized no/such/o.onnx: directory no/such does not exist"),
                            ("full.onnx", "full.onnx: cannot write: No space left on device")):
        rc, out, err = netdsl_main("run", "m.onnx", "--save-optimized", target, cwd=tmp_path)
        assert rc == 1 and err == f"netdsl: error: {message}\n", (target, err)
        assert "SystemError" not in err and "could not load" not in err
    assert sorted(os.listdir(tmp_path)) == ["folder.onnx", "full.onnx", "m.onnx"]


def test_save_optimized_writes_the_runtimes_model_atomically(tmp_path):
    save_model(tmp_path / "m.onnx")
    (tmp_path / "o.onnx").write_bytes(b"old")
    os.chmod(tmp_path / "o.onnx", 0o600)
    rc, out, err = netdsl_main("run", "m.onnx", "--save-optimized", "o.onnx", cwd=tmp_path)
    assert rc == 0, err
    onnx.checker.check_model(onnx.load(tmp_path / "o.onnx"))
    assert stat.S_IMODE(os.stat(tmp_path / "o.onnx").st_mode) == 0o600  # replaced as every netdsl output is
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "o.onnx"]


# ----------------------------------------------------------------------------- tolerances and JSON
@pytest.mark.parametrize("option", ["--atol", "--rtol"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1", "x"])
def test_compare_refuses_tolerances_that_are_not_finite_and_non_negative(option, value, hostile):
    rc, out, err = netdsl_main("compare", hostile, "--engines", "ort:cpu,ort:cpu", option, value)
    assert rc == 2 and f"argument {option}: expected a finite number, zero or more; got '{value}'" in err, err


def test_json_sanitiser_writes_non_finite_numbers_as_null():
    from netdsl.cli.common import json_text

    value = {"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5, np.float64("nan")], "c": (1, "NaN"),
             "d": {"e": None, "f": True}}
    assert strict_json(json_text(value)) == {"a": None, "b": [None, None, 1.5, None], "c": [1, "NaN"],
                                             "d": {"e": None, "f": True}}


def test_run_json_writes_non_finite_outputs_as_null(tmp_path):
    model = save_model(tmp_path / "m.onnx", op="Log")
    feed = tmp_path / "x.npy"
    np.save(feed, np.array([[-1.0, 0.0, 1.0, 2.0]], np.float32))  # log: nan, -inf, 0, 0.69
    rc, out, err = netdsl_main("run", model, "--input", feed, "--json")
    assert rc == 0, err
    rep = strict_json(out)["outputs"]["y"]
    assert rep["min"] is None and rep["max"] is None and rep["mean"] is None


def test_compare_json_is_strict_when_outputs_are_not_finite(tmp_path):
    model = save_model(tmp_path / "m.onnx", op="Log")
    feed = tmp_path / "x.npy"
    np.save(feed, np.array([[-1.0, 0.0, 1.0, 2.0]], np.float32))
    rc, out, err = netdsl_main("compare", model, "--engines", "ort:cpu,ort:cpu+opt=disable", "--input", feed,
                               "--json")
    assert rc == 0, err
    report = strict_json(out)
    assert report["pass"] is True


def test_doctor_and_summary_json_write_non_finite_numbers_as_null(monkeypatch):
    import netdsl.analysis
    import netdsl.cli.doctor

    monkeypatch.setattr(netdsl.cli.doctor, "doctor_report", lambda: {"probe_ms": float("nan")})
    rc, out, err = netdsl_main("doctor", "--json")
    assert rc == 0 and strict_json(out) == {"probe_ms": None}, out
    monkeypatch.setattr(netdsl.analysis.Summary, "to_json", lambda self: {"macs": float("inf")})
    rc, out, err = netdsl_main("summary", LENET, "--json")
    assert rc == 0 and strict_json(out) == {"macs": None}, out


def test_bench_json_writes_non_finite_numbers_as_null(hostile, monkeypatch):
    import netdsl.cli.bench

    real = netdsl.cli.bench.bench_batch

    def bench_batch(*args, **kwargs):
        return {**real(*args, **kwargs), "throughput_ips": float("inf")}

    monkeypatch.setattr(netdsl.cli.bench, "bench_batch", bench_batch)
    rc, out, err = netdsl_main("bench", hostile, "--duration", "0.01", "--warmup", "0", "--min-iterations", "1",
                               "--threads", "1", "--json")
    assert rc == 0, err
    assert strict_json(out)["results"][0]["throughput_ips"] is None


# ----------------------------------------------------------------------------- .npy and .npz inputs
def small_file_declaring(path: Path, shape: tuple[int, ...]) -> Path:
    """An .npy header declaring ``shape`` (float32), followed by 64 bytes."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(b"\0" * 64)
    return path


def test_npy_and_npz_inputs_declaring_huge_arrays_are_refused_from_their_headers(tmp_path):
    import zipfile

    save_model(tmp_path / "m.onnx")
    small_file_declaring(tmp_path / "big.npy", (10**10, 4))
    with zipfile.ZipFile(tmp_path / "big.npz", "w") as z:
        z.write(tmp_path / "big.npy", "x.npy")
    rc, out, err = netdsl_main("run", "m.onnx", "--input", "big.npy", cwd=tmp_path)
    assert rc == 1 and err == "netdsl: error: big.npy: not a readable .npy file: it declares 160,000,000,000 bytes " \
                              "of data (10000000000x4 float32) but holds 64\n", err
    rc, out, err = netdsl_main("run", "m.onnx", "--input", "big.npz", cwd=tmp_path)
    assert rc == 1 and "big.npz: not a readable npz file: member `x.npy` declares 160000000000 bytes" in err, err
    assert "out of memory" not in err


def test_valid_npy_and_npz_inputs_still_run(tmp_path):
    save_model(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.ones((3, 4), np.float32))
    np.savez_compressed(tmp_path / "x.npz", x=np.ones((2, 4), np.float32), other=np.zeros(1))
    rc, out, err = netdsl_main("run", "m.onnx", "--input", "x.npy", "--input", "x.npz", "--json", cwd=tmp_path)
    assert rc == 0, err
    assert strict_json(out)["inputs"]["x"]["shape"] == [5, 4]


def test_quoted_labels_in_a_net_file_cannot_carry_markup_or_escapes(tmp_path):
    """Layer and weight names, which reports show, are letters, digits, `_` and `-` only."""
    (tmp_path / "evil.net").write_text(f'network evil {{\n    input image: 1x8x8\n    "{HOSTILE}": conv 2 3x3\n}}\n',
                                       encoding="utf-8")
    for args in (("check",), ("summary",), ("weights", "list")):
        rc, out, err = netdsl_main(*args, "evil.net", cwd=tmp_path)
        assert rc == 1 and out == "" and "\x1b" not in err, (args, err)
        assert err.startswith("evil.net:3:5: error: a name may hold letters, digits, `_` and `-`, got "), err
