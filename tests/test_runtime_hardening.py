"""The runtime under hostile and unlucky inputs: absurd thread counts, empty and huge batches, malformed
metadata in an ``.onnx``, and ONNX Runtime's own output, which must not reach the user's terminal.

Every case ends in a netdsl message and exit 1 or 2, never a hang, a traceback or "internal error".
Memory failures are provoked in a subprocess under an address-space limit.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import cli_env
from onnx import TensorProto, helper, numpy_helper

import netdsl
from netdsl.engines import EngineOptions
from netdsl.errors import UsageError
from netdsl.preprocess import InputError, Preprocess

ROOT = Path(__file__).resolve().parent.parent
LENET = str(ROOT / "networks" / "lenet5.net")
HOSTILE = "\x1b]0;pwned\x07[bold]x[/]"  # an OSC title sequence and rich markup, as names in a crafted .onnx


def netdsl_cli(*args, env: dict[str, str] | None = None, memory: int | None = None,
               timeout: float = 120) -> tuple[int, str, str]:
    """``python -m netdsl ARGS`` with extra environment variables and, optionally, an address-space limit (bytes).

    One thread everywhere, so the limit measures the batch and not the machine's core count.
    """
    full = {**cli_env(), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **(env or {})}
    full = {k: v for k, v in full.items() if v is not None}

    def limit():
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    proc = subprocess.run([sys.executable, "-m", "netdsl", *map(str, args)], cwd=ROOT, env=full,
                          capture_output=True, timeout=timeout, preexec_fn=limit)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


# ----------------------------------------------------------------------------- threads
def test_thread_counts_beyond_the_machine_are_refused():
    for bad in (100_000, (os.cpu_count() or 1) + 1, 0, -1):
        with pytest.raises(UsageError, match=r"threads must be 1\.\.\d+ \(the logical CPUs of this machine\)"):
            EngineOptions(threads=bad)
    assert EngineOptions(threads=os.cpu_count()).threads == os.cpu_count()


def test_a_session_with_absurd_threads_is_refused_before_onnx_runtime_starts():
    """In a subprocess under a memory limit: unbounded, ONNX Runtime grew by 40 MB/s for as long as it was let."""
    code = ("import netdsl, sys\n"
            "try:\n    netdsl.Session(sys.argv[1], threads=100_000)\n"
            "except netdsl.errors.UsageError as e:\n    print(e)\n")

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    proc = subprocess.run([sys.executable, "-c", code, LENET], capture_output=True, text=True, timeout=120,
                          env=cli_env(), preexec_fn=limit)
    assert proc.returncode == 0, proc.stderr
    assert "threads must be 1.." in proc.stdout


@pytest.mark.parametrize("command", [["run", LENET, "--threads", "100000"],
                                     ["compare", LENET, "--engines", "ort:cpu,ort:cpu+threads=100000"]])
def test_the_cli_refuses_absurd_threads(command):
    rc, out, err = netdsl_cli(*command, memory=2 << 30)  # unbounded, ONNX Runtime grew until the limit killed it
    assert rc == 2, err
    assert "threads must be 1.." in err and "internal error" not in err


# ----------------------------------------------------------------------------- batches
def test_an_empty_batch_is_an_input_error(tmp_path):
    sess = netdsl.Session(LENET)
    with pytest.raises(InputError, match=r"input `image` holds no samples \(batch 0\); feed at least one"):
        sess.run(image=np.zeros((0, 1, 32, 32), np.float32))
    np.save(tmp_path / "empty.npy", np.zeros((0, 1, 32, 32), np.float32))
    rc, out, err = netdsl_cli("run", LENET, "--input", f"image={tmp_path / 'empty.npy'}")
    assert rc == 1, err
    assert "input `image` holds no samples (batch 0)" in err and "internal error" not in err


@pytest.mark.parametrize("command", ["run", "bench"])
def test_running_out_of_memory_names_the_batch(command):
    """One LeNet-5 activation at batch 20,000 is 1 GB (6x28x28 floats each): more than the process may map."""
    extra = ("--duration", "0.1", "--warmup", "0", "--min-iterations", "1") if command == "bench" else ()
    rc, out, err = netdsl_cli(command, LENET, "--batch", "20000", "--threads", "1", *extra, memory=1 << 30)
    assert rc == 1, err
    assert "out of memory at batch 20000; try a smaller --batch" in err
    assert "internal error" not in err and "\x1b" not in err


# ----------------------------------------------------------------------------- metadata from an .onnx
def _lenet_onnx(tmp_path: Path, inputs_metadata: str | None) -> Path:
    model = netdsl.load(LENET).to_onnx()
    props = {p.key: p.value for p in model.metadata_props if p.key != "netdsl.inputs"}
    if inputs_metadata is not None:
        props["netdsl.inputs"] = inputs_metadata
    del model.metadata_props[:]
    helper.set_model_props(model, props)
    path = tmp_path / "lenet5.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(("metadata", "why"), [
    ('[{"name": "image", "shape": 5}]', "input `image` has the shape 5, not a list of positive integers"),
    ('[{"name": "image", "shape": ["1", "32", "32"]}]', 'has the shape ["1", "32", "32"], not a list of positive'),
    ('[{"name": ["image"], "shape": [1, 32, 32]}]', 'record 0 has the name ["image"], not a string'),
    ("{not json", "not valid JSON"),
    ('{"name": "image", "shape": [1, 32, 32]}', "expected a list of input records"),
    ('["image"]', 'record 0 is "image", not an object'),
    ('[{"name": "image", "shape": [3, 9999, 9999]}]', "shape [3, 9999, 9999], but the model's input is 1x32x32"),
    ('[{"name": "image", "shape": [1, 32, 32], "mean": "abc"}]', "input `image`: mean needs 1 or 1 numbers"),
    ('[{"name": "other", "shape": [1, 32, 32]}]', "input `other` is not an input of the model"),
])
def test_malformed_input_metadata_is_named(tmp_path, metadata, why):
    sess = netdsl.Session(str(_lenet_onnx(tmp_path, metadata)))
    with pytest.raises(InputError) as info:
        sess.preprocessing()
    message = str(info.value)
    assert "lenet5: the model's `netdsl.inputs` metadata is malformed: " in message
    assert why in message, message


def test_input_metadata_names_are_shown_plain(tmp_path):
    sess = netdsl.Session(str(_lenet_onnx(tmp_path, json.dumps([{"name": HOSTILE, "shape": [1, 32, 32]}]))))
    with pytest.raises(InputError) as info:
        sess.preprocessing()
    assert "\x1b" not in str(info.value) and "\\x1b]0;pwned\\x07" in str(info.value)


def test_well_formed_or_absent_input_metadata_still_works(tmp_path):
    record = json.dumps([{"name": "image", "shape": [1, 32, 32], "scale": 2.0}])
    assert netdsl.Session(str(_lenet_onnx(tmp_path, record))).preprocessing() == {
        "image": Preprocess(1, 32, 32, scale=2.0)}
    assert netdsl.Session(str(_lenet_onnx(tmp_path, None))).preprocessing() == {"image": Preprocess(1, 32, 32)}


def test_netdsl_run_with_an_image_and_malformed_metadata(tmp_path):
    pil = pytest.importorskip("PIL.Image", reason="reading images needs the optional package Pillow")
    pil.new("L", (32, 32), 128).save(tmp_path / "digit.png")
    path = _lenet_onnx(tmp_path, '[{"name": "image", "shape": 5}]')
    rc, out, err = netdsl_cli("run", path, "--input", f"image={tmp_path / 'digit.png'}")
    assert rc == 1, err
    assert "`netdsl.inputs` metadata is malformed" in err and "internal error" not in err


# ----------------------------------------------------------------------------- ONNX Runtime's own output
def _failing_model(tmp_path: Path) -> Path:
    """A model ONNX Runtime loads (warning about an unused initializer) and then fails to run at batch 2 (a Reshape
    to a fixed 1x4), with a node name that holds a terminal escape and rich markup."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    shape = numpy_helper.from_array(np.array([1, 4], np.int64), "shape")
    unused = numpy_helper.from_array(np.zeros(3, np.float32), "unused")
    node = helper.make_node("Reshape", ["x", "shape"], ["y"], name=HOSTILE)
    graph = helper.make_graph([node], "reshape" + HOSTILE, [x], [y], [shape, unused])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "reshape.onnx"
    onnx.save(model, path)
    return path


def test_onnx_runtime_failures_are_messages_without_its_log_or_colours(tmp_path):
    rc, out, err = netdsl_cli("run", _failing_model(tmp_path), "--batch", "2")
    assert rc == 1, err
    assert "netdsl: error: ONNX Runtime failed to run the model: " in err
    assert "\x1b" not in out + err
    assert "[E:onnxruntime" not in err and "[W:onnxruntime" not in err
    assert "Name:'\\x1b]0;pwned\\x07[bold]x[/]'" in err  # the node name, shown as what it is


def test_netdsl_debug_shows_onnx_runtime_warnings_but_no_colour_under_no_color(tmp_path):
    path = _failing_model(tmp_path)
    rc, out, err = netdsl_cli("run", path, "--batch", "2", env={"NETDSL_DEBUG": "1", "NO_COLOR": None})
    assert rc == 1 and "[W:onnxruntime" in err and "Removing initializer 'unused'" in err
    rc, out, err = netdsl_cli("run", path, "--batch", "2", env={"NETDSL_DEBUG": "1", "NO_COLOR": "1"})
    assert rc == 1 and "\x1b" not in err and "ONNX Runtime failed to run the model" in err


def test_provider_fallback_notes_printed_by_onnx_runtime_are_kept_off_stdout(monkeypatch, capsys):
    """ONNX Runtime prints "EP Error ... Falling back" to stdout itself when a GPU provider fails to start."""
    import onnxruntime as ort

    real = ort.InferenceSession

    def noisy(*args, **kwargs):
        print("*************** EP Error ***************\nEP Error \x1b[31m when using ['CUDAExecutionProvider']")
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", noisy)
    monkeypatch.delenv("NETDSL_DEBUG", raising=False)
    sess = netdsl.Session(LENET)
    assert sess.run(image=np.zeros((1, 1, 32, 32), np.float32))["logits"].shape == (1, 10)
    captured = capsys.readouterr()
    assert "EP Error" not in captured.out + captured.err


# ----------------------------------------------------------------------------- names from the file
def test_names_from_an_onnx_file_reach_messages_plain(tmp_path):
    x = helper.make_tensor_value_info(HOSTILE, TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Relu", [HOSTILE], ["y"])], "net" + HOSTILE, [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    sess = netdsl.Session(str(tmp_path / "m.onnx"))
    assert "\x1b" not in sess.name and sess.name.startswith("net\\x1b]0;pwned")
    with pytest.raises(InputError) as info:
        sess.run({HOSTILE: np.zeros((2, 4), np.float64)})
    assert "\x1b" not in str(info.value) and "\\x1b]0;pwned\\x07[bold]x[/]: Nx4 float32" in str(info.value)
    assert sess.run({HOSTILE: np.ones((2, 4), np.float32)})["y"].shape == (2, 4)
