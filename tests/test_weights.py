"""Weight import and export (netdsl.checkpoint, netdsl.precision, `netdsl weights`), without torch.

* round trips: `weights export` -> `compile --weights` gives the same bytes as compiling with the same seed;
  export -> import -> export gives the same bytes (safetensors and npz);
* every reader: .safetensors (float16 and bfloat16 widened to float32), .npz, an .onnx model's initializers;
* strict binding: missing, unexpected, mismatched and invalid entries in one error, messages pinned;
  unreadable, truncated and empty files of each format; --allow-missing; --weights-map;
* `netdsl weights list|export`;
* --dtype fp16 (checker, ONNX Runtime, closeness to fp32, --fp32-io) and its overflow/underflow report;
* PyTorch checkpoints: weights-only loading and the refusal of pickled code (needs torch, optional), and
  the clear message when PyTorch is absent (simulated in a subprocess, so it runs everywhere).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import REPO, dedent, ort_session

import netdsl
from netdsl.checkpoint import read_checkpoint, write_checkpoint
from netdsl.errors import UsageError, WeightsError
from netdsl.precision import FP16_MAX, fp16_report

SMALL = """\
# a small network for the weights tests: a block, a bn, and relu6 and channel_shuffle (they add constants)
block unit(c) {
    conv: conv c 3x3 pad 1 nobias
    bn: bn -> relu6
}

network small(classes=4) {
    input image: 3x8x8
    stem: unit(8)
    channel_shuffle 2
    pool: maxpool 2x2 /2 -> flatten
    fc: fc classes
    output logits
}
"""
NAMES = ["stem.conv.weight", "stem.bn.weight", "stem.bn.bias", "stem.bn.running_mean", "stem.bn.running_var",
         "fc.weight", "fc.bias"]


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """small.net in the test's directory; CLI calls run there, so diagnostics say `small.net:LINE:COL`."""
    path = tmp_path / "small.net"
    path.write_text(SMALL, encoding="utf-8")
    return path


@pytest.fixture
def cli(run_cli, tmp_path):
    """`netdsl ...` run in the test's directory."""
    return lambda *args: run_cli(*args, cwd=tmp_path)


def trained(seed: int = 1) -> dict[str, np.ndarray]:
    """Weights unlike the seeded initialisation (bn statistics included), in graph order."""
    rng = np.random.default_rng(seed)
    shapes = {n: s.shape for n, s, _ in netdsl.load(SMALL).graph.weight_specs()}
    out = {n: rng.standard_normal(shape).astype(np.float32) for n, shape in shapes.items()}
    out["stem.bn.running_var"] = rng.uniform(0.5, 2.0, 8).astype(np.float32)
    return out


def initializers(path_or_model) -> dict[str, np.ndarray]:
    model = path_or_model if isinstance(path_or_model, onnx.ModelProto) else onnx.load(str(path_or_model))
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


def write_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]]) -> None:
    """A .safetensors file written by hand from the format: an 8-byte little-endian header length, a JSON
    header {name: {dtype, shape, data_offsets}} padded with spaces to 8 bytes, then the raw data."""
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def assert_clean_failure(rc: int, err: str, code: int = 1) -> None:
    assert rc == code, err
    assert "Traceback" not in err and "internal error" not in err, err


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_export_then_compile_gives_the_bytes_of_the_seeded_compile(cli, small, suffix):
    rc, out, err = cli("weights", "export", "small.net", "-o", f"init{suffix}", "--seed", "3")
    assert rc == 0, err
    assert out == f"wrote init{suffix}: 7 tensors of network small\n"
    assert cli("compile", "small.net", "--seed", "3", "-o", "seeded.onnx", "-q")[0] == 0
    rc, _, err = cli("compile", "small.net", "--weights", f"init{suffix}", "-o", "loaded.onnx", "-q")
    assert rc == 0, err
    assert err == ""
    seeded = (small.parent / "seeded.onnx").read_bytes()
    assert (small.parent / "loaded.onnx").read_bytes() == seeded
    assert cli("compile", "small.net", "-o", "seed0.onnx", "-q")[0] == 0
    assert (small.parent / "seed0.onnx").read_bytes() != seeded  # the seed matters, so the check above does


def test_compiled_onnx_is_a_weight_file_for_the_same_network(cli, small):
    """netdsl's own .onnx gives its weights back; its lowering constants (relu6 bounds, reshape targets) are
    not weights and are skipped."""
    assert cli("compile", "small.net", "--seed", "4", "-o", "model.onnx", "-q")[0] == 0
    assert {k for k in initializers(small.parent / "model.onnx") if k.startswith("const.")}
    assert list(read_checkpoint(small.parent / "model.onnx")) == NAMES
    rc, _, err = cli("compile", "small.net", "--weights", "model.onnx", "-o", "again.onnx", "-q")
    assert rc == 0, err
    assert (small.parent / "again.onnx").read_bytes() == (small.parent / "model.onnx").read_bytes()


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_export_import_export_is_the_identity(cli, small, tmp_path, suffix):
    write_checkpoint(tmp_path / f"trained{suffix}", trained())
    rc, _, err = cli("weights", "export", "small.net", "--weights", f"trained{suffix}", "-o", f"again{suffix}")
    assert rc == 0, err
    assert (tmp_path / f"again{suffix}").read_bytes() == (tmp_path / f"trained{suffix}").read_bytes()
    # the other format holds the same tensors, and converting back gives the same bytes again
    other = ".npz" if suffix == ".safetensors" else ".safetensors"
    assert cli("weights", "export", "small.net", "--weights", f"trained{suffix}", "-o", f"other{other}")[0] == 0
    assert cli("weights", "export", "small.net", "--weights", f"other{other}", "-o", f"back{suffix}")[0] == 0
    assert (tmp_path / f"back{suffix}").read_bytes() == (tmp_path / f"trained{suffix}").read_bytes()


def test_export_is_reproducible_and_holds_float32_by_name(cli, small, tmp_path):
    for name in ("a", "b"):
        assert cli("weights", "export", "small.net", "-o", f"{name}.safetensors")[0] == 0
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "a.safetensors"), framework="np") as f:
        assert f.metadata() == {"format": "pt"}  # safetensors.torch.load_file accepts the file
        assert sorted(f.keys()) == sorted(NAMES)
        assert f.get_tensor("stem.conv.weight").dtype == np.float32
    net = netdsl.load(SMALL)
    for name, value in net.initial_weights().items():
        np.testing.assert_array_equal(read_checkpoint(tmp_path / "a.safetensors")[name], value)


# ----------------------------------------------------------------------------- reading each format
def test_trained_weights_reach_the_model_from_every_format(tmp_path):
    net = netdsl.load(SMALL)
    weights = trained()
    write_checkpoint(tmp_path / "w.safetensors", weights)
    write_checkpoint(tmp_path / "w.npz", weights)
    net.save(tmp_path / "w.onnx", weights=weights)
    for suffix in (".safetensors", ".npz", ".onnx"):
        loaded = net.load_weights(tmp_path / f"w{suffix}")
        assert list(loaded) == NAMES
        for name in NAMES:
            np.testing.assert_array_equal(loaded[name], weights[name], err_msg=f"{suffix} {name}")
        got = initializers(net.to_onnx(weights=loaded))
        np.testing.assert_array_equal(got["fc.weight"], weights["fc.weight"])


def test_float16_safetensors_are_widened_to_float32(tmp_path):
    from safetensors.numpy import save_file

    weights = trained()
    save_file({k: v.astype(np.float16) for k, v in weights.items()}, str(tmp_path / "half.safetensors"))
    loaded = netdsl.load(SMALL).load_weights(tmp_path / "half.safetensors")
    for name, value in weights.items():
        assert loaded[name].dtype == np.float32
        np.testing.assert_array_equal(loaded[name], value.astype(np.float16).astype(np.float32))


def _bf16(values: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The bfloat16 bytes of float32 ``values`` (truncated) and the float32 values they stand for."""
    bits = (np.ascontiguousarray(values, np.float32).view(np.uint32) >> 16).astype("<u2")
    return bits.tobytes(), (bits.astype(np.uint32) << 16).view(np.float32)


def test_bfloat16_safetensors_written_by_hand_are_widened_to_float32(tmp_path):
    weights = trained()
    tensors, want = {}, {}
    for name, value in weights.items():
        raw, want[name] = _bf16(value)
        tensors[name] = ("BF16", value.shape, raw)
    write_safetensors(tmp_path / "bf16.safetensors", tensors)
    loaded = netdsl.load(SMALL).load_weights(tmp_path / "bf16.safetensors")
    for name in NAMES:
        assert loaded[name].dtype == np.float32 and loaded[name].shape == weights[name].shape
        np.testing.assert_array_equal(loaded[name], want[name])
        np.testing.assert_allclose(loaded[name], weights[name], rtol=2**-7)  # bf16 keeps 8 significant bits


def test_bfloat16_from_safetensors_numpy(tmp_path):
    """safetensors.numpy writes bfloat16 through ml_dtypes (a dependency of onnx); the reader widens it."""
    import ml_dtypes
    from safetensors.numpy import save_file

    weights = trained()
    save_file({k: v.astype(ml_dtypes.bfloat16) for k, v in weights.items()}, str(tmp_path / "bf.safetensors"))
    loaded = read_checkpoint(tmp_path / "bf.safetensors")
    for name, value in weights.items():
        np.testing.assert_array_equal(loaded[name], value.astype(ml_dtypes.bfloat16).astype(np.float32))


def test_integer_tensors_count_as_numbers(tmp_path):
    weights = trained()
    weights["fc.bias"] = np.array([1, -2, 3, 0], np.int64)
    write_checkpoint(tmp_path / "w.npz", weights)
    loaded = netdsl.load(SMALL).load_weights(tmp_path / "w.npz")
    assert loaded["fc.bias"].dtype == np.float32 and loaded["fc.bias"].tolist() == [1, -2, 3, 0]


def test_num_batches_tracked_is_ignored(tmp_path, cli, small):
    weights = trained()
    np.savez(tmp_path / "w.npz", **weights, **{"stem.bn.num_batches_tracked": np.array(100, np.int64)})
    assert list(netdsl.load(SMALL).load_weights(tmp_path / "w.npz")) == NAMES
    rc, _, err = cli("compile", "small.net", "--weights", "w.npz", "-o", "m.onnx", "-q")
    assert rc == 0 and err == "", err
    assert "stem.bn.num_batches_tracked" not in initializers(tmp_path / "m.onnx")


# ----------------------------------------------------------------------------- strict binding
MISMATCH = """\
netdsl: error: bad.npz and network `small` disagree: 1 missing, 2 unexpected, 1 mismatched, 0 invalid
note: --allow-missing (allow_missing=True in Python) accepts a checkpoint that lacks weights; they keep their \
initial values
small.net:4:9: error: missing `stem.bn.running_var` (shape 8) for bn `stem.bn`
    4 |     bn: bn -> relu6
      |         ^^
note: in block `unit` called from small.net:9:11
small.net:12:9: error: `fc.weight` has shape 5x128, but fc `fc` wants 4x128
   12 |     fc: fc classes
      |         ^^^^^^^^^^
netdsl: error: unexpected `head.weight` (shape 4x2): the network has no such weight
netdsl: error: unexpected `stem.norm.running_var` (shape 8): the network has no such weight; did you mean \
`stem.bn.running_var`?
"""


def test_missing_unexpected_and_mismatched_are_one_error(cli, small, tmp_path):
    weights = trained()
    del weights["stem.bn.running_var"]
    weights["fc.weight"] = np.zeros((5, 128), np.float32)
    weights["head.weight"] = np.zeros((4, 2), np.float32)
    weights["stem.norm.running_var"] = np.ones(8, np.float32)
    np.savez(tmp_path / "bad.npz", **weights)
    rc, out, err = cli("compile", "small.net", "--weights", "bad.npz", "-o", "m.onnx")
    assert_clean_failure(rc, err)
    assert err == MISMATCH
    assert out == "" and not (tmp_path / "m.onnx").exists()


def test_every_missing_weight_is_listed_with_shape_and_location(cli, small, tmp_path):
    write_checkpoint(tmp_path / "few.safetensors", {"fc.weight": trained()["fc.weight"]})
    rc, _, err = cli("compile", "small.net", "--weights", "few.safetensors")
    assert_clean_failure(rc, err)
    assert err.splitlines()[0] == ("netdsl: error: few.safetensors and network `small` disagree: 6 missing, "
                                   "0 unexpected, 0 mismatched, 0 invalid")
    located = [line for line in err.splitlines() if ": error: missing" in line]
    assert located == [
        "small.net:3:11: error: missing `stem.conv.weight` (shape 8x3x3x3) for conv `stem.conv`",
        "small.net:4:9: error: missing `stem.bn.weight` (shape 8) for bn `stem.bn`",
        "small.net:4:9: error: missing `stem.bn.bias` (shape 8) for bn `stem.bn`",
        "small.net:4:9: error: missing `stem.bn.running_mean` (shape 8) for bn `stem.bn`",
        "small.net:4:9: error: missing `stem.bn.running_var` (shape 8) for bn `stem.bn`",
        "small.net:12:9: error: missing `fc.bias` (shape 4) for fc `fc`",
    ]


@pytest.mark.parametrize(("value", "message"), [
    (np.array([1, np.nan, 0, 0], np.float32), "`fc.bias` holds NaN or infinite values (or values beyond float32's "
                                              "range)"),
    (np.array([1, -np.inf, 0, 0], np.float32), "`fc.bias` holds NaN or infinite values (or values beyond float32's "
                                               "range)"),
    (np.array([1, 1e300, 0, 0], np.float64), "`fc.bias` holds NaN or infinite values (or values beyond float32's "
                                             "range)"),
    (np.array([True, False, True, True]), "`fc.bias` has dtype bool, not a real number type"),
    (np.array([1j, 0, 0, 0]), "`fc.bias` has dtype complex128, not a real number type"),
    (np.array(["a", "b", "c", "d"]), "`fc.bias` has dtype <U1, not a real number type"),
])
def test_invalid_values(cli, small, tmp_path, value, message):
    np.savez(tmp_path / "w.npz", **{**trained(), "fc.bias": value})
    rc, _, err = cli("compile", "small.net", "--weights", "w.npz")
    assert_clean_failure(rc, err)
    assert err.splitlines()[:2] == [
        "netdsl: error: w.npz and network `small` disagree: 0 missing, 0 unexpected, 0 mismatched, 1 invalid",
        f"small.net:12:9: error: {message}"]


def test_to_onnx_and_save_with_wrong_weights_raise_weights_error(tmp_path):
    net = netdsl.load(SMALL)
    weights = trained()
    del weights["fc.bias"]
    for call in (lambda: net.to_onnx(weights=weights), lambda: net.save(tmp_path / "m.onnx", weights=weights),
                 lambda: net.to_onnx(weights={**trained(), "fc.bias": np.zeros(3)}, dtype="fp16")):
        with pytest.raises(WeightsError) as e:
            call()
        assert "the weights given and network `small` disagree" in str(e.value)
    assert not (tmp_path / "m.onnx").exists()
    # float64 arrays are taken as float32: the model stays valid
    model = net.to_onnx(weights={k: v.astype(np.float64) for k, v in trained().items()})
    onnx.checker.check_model(model, full_check=True)


# ----------------------------------------------------------------------------- unreadable files
def _corrupt(kind: str, suffix: str, tmp_path: Path) -> Path:
    """A damaged weight file: `garbage` text, `truncated` (the first half of a good file), or `empty`."""
    good = tmp_path / f"good{suffix}"
    if suffix == ".onnx":
        netdsl.load(SMALL).save(good)
    else:
        write_checkpoint(good, trained())
    path = tmp_path / f"{kind}{suffix}"
    data = {"garbage": b"this is not a weight file\n", "truncated": good.read_bytes()[:good.stat().st_size // 2],
            "empty": b""}[kind]
    path.write_bytes(data)
    return path


CORRUPT = {  # the library's own words follow in parentheses; they vary with its version, so only their type is pinned
    ("garbage", ".safetensors"): "garbage.safetensors: not a readable safetensors file: its header declares "
                                 "2338328219631577204 bytes, but the file holds 18 after it\n",
    ("truncated", ".safetensors"): "truncated.safetensors: not a readable safetensors file: `fc.weight` lies at "
                                   "bytes 16..2064, beyond the 1252 bytes of data\n",
    ("empty", ".safetensors"): "empty.safetensors: not a readable safetensors file: 0 bytes, shorter than a "
                               "safetensors header\n",
    ("garbage", ".npz"): "garbage.npz: not an .npz archive (a zip file of .npy arrays, as numpy.savez writes)\n",
    ("truncated", ".npz"): "truncated.npz: not an .npz archive (a zip file of .npy arrays, as numpy.savez writes)\n",
    ("empty", ".npz"): "empty.npz: not an .npz archive (a zip file of .npy arrays, as numpy.savez writes)\n",
    ("garbage", ".onnx"): "garbage.onnx: not a readable onnx file (DecodeError: ",
    ("truncated", ".onnx"): "truncated.onnx: not a readable onnx file (DecodeError: ",
    ("empty", ".onnx"): "empty.onnx: not an ONNX model with weights (it has no initializers)\n",
}


@pytest.mark.parametrize(("kind", "suffix"), list(CORRUPT))
def test_unreadable_files_are_a_clean_error(cli, small, tmp_path, kind, suffix):
    _corrupt(kind, suffix, tmp_path)
    rc, out, err = cli("compile", "small.net", "--weights", f"{kind}{suffix}")
    assert_clean_failure(rc, err)
    assert err.startswith("netdsl: error: " + CORRUPT[kind, suffix]), err
    assert err.count("\n") == 1 and out == ""


def test_npz_with_pickled_objects_is_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", **{"fc.bias": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(WeightsError, match=r"obj\.npz: refused: it holds pickled Python objects, and loading them "
                                           r"could run code from the file; save plain numeric arrays"):
        read_checkpoint(tmp_path / "obj.npz")


@pytest.mark.parametrize(("name", "message"), [
    ("nothere.safetensors", "nothere.safetensors: no such file"),
    ("weights.txt", "weights.txt: unknown weight format `.txt`; use one of .bin, .ckpt, .npz, .onnx, .pt, .pth, "
                    ".safetensors"),
    ("weights", "weights: unknown weight format `(no suffix)`; use one of .bin, .ckpt, .npz, .onnx, .pt, .pth, "
                ".safetensors"),
    ("folder.npz", "folder.npz: not a file"),
])
def test_missing_file_and_unknown_format(cli, small, tmp_path, name, message):
    (tmp_path / "folder.npz").mkdir()
    (tmp_path / "weights.txt").write_text("1 2 3")
    rc, _, err = cli("compile", "small.net", "--weights", name)
    assert_clean_failure(rc, err)
    assert err == f"netdsl: error: {message}\n"


# ----------------------------------------------------------------------------- --allow-missing
def test_allow_missing_loads_what_is_there_and_warns(cli, small, tmp_path):
    weights = trained()
    partial = {k: v for k, v in weights.items() if not k.startswith("fc.")}
    write_checkpoint(tmp_path / "backbone.safetensors", partial)
    rc, _, err = cli("compile", "small.net", "--weights", "backbone.safetensors", "-o", "strict.onnx")
    assert_clean_failure(rc, err)
    rc, _, err = cli("compile", "small.net", "--weights", "backbone.safetensors", "--allow-missing", "--seed", "2",
                     "-o", "m.onnx", "-q")
    assert rc == 0, err
    assert err == ("netdsl: warning: backbone.safetensors lacks 2 weight(s), initialised from seed 2: "
                   "fc.weight, fc.bias\n")
    got = initializers(tmp_path / "m.onnx")
    for name, value in partial.items():
        np.testing.assert_array_equal(got[name], value)
    seeded = netdsl.load(SMALL).initial_weights(seed=2)
    for name in ("fc.weight", "fc.bias"):
        np.testing.assert_array_equal(got[name], seeded[name])
    # the API: the same values, in graph order
    loaded = netdsl.load(small).load_weights(tmp_path / "backbone.safetensors", allow_missing=True, seed=2)
    assert list(loaded) == NAMES
    np.testing.assert_array_equal(loaded["fc.weight"], seeded["fc.weight"])


def test_allow_missing_still_rejects_unexpected_and_mismatched(cli, small, tmp_path):
    weights = {k: v for k, v in trained().items() if k != "fc.bias"}
    weights["fc.weight"] = np.zeros((4, 3), np.float32)
    weights["extra"] = np.zeros(1, np.float32)
    np.savez(tmp_path / "w.npz", **weights)
    rc, _, err = cli("compile", "small.net", "--weights", "w.npz", "--allow-missing")
    assert_clean_failure(rc, err)
    assert err.splitlines()[0] == ("netdsl: error: w.npz and network `small` disagree: 0 missing, 1 unexpected, "
                                   "1 mismatched, 0 invalid")
    assert "missing `fc.bias`" not in err


def test_many_missing_names_are_summarised_in_the_warning(cli, tmp_path):
    body = "".join(f"    fc{i}: fc 4\n" for i in range(6))
    (tmp_path / "deep.net").write_text(f"network deep {{\n    input x: 4\n{body}    output y\n}}\n")
    write_checkpoint(tmp_path / "none.npz", {})
    rc, _, err = cli("compile", "deep.net", "--weights", "none.npz", "--allow-missing", "-q")
    assert rc == 0, err
    assert err == ("netdsl: warning: none.npz lacks 12 weight(s), initialised from seed 0: fc0.weight, fc0.bias, "
                   "fc1.weight, fc1.bias, fc2.weight, fc2.bias, fc3.weight, fc3.bias (and 4 more)\n")


@pytest.mark.parametrize("option", ["--allow-missing", "--weights-map=strip:module."])
def test_weight_options_need_weights(cli, small, option):
    rc, _, err = cli("compile", "small.net", option)
    assert_clean_failure(rc, err, code=2)
    assert err == f"netdsl: error: {option.split('=')[0]} needs --weights\n"


# ----------------------------------------------------------------------------- --weights-map
def test_strip_prefix(cli, small, tmp_path):
    write_checkpoint(tmp_path / "dp.safetensors", {f"module.{k}": v for k, v in trained().items()})
    rc, _, err = cli("compile", "small.net", "--weights", "dp.safetensors", "-o", "m.onnx")
    assert_clean_failure(rc, err)
    assert err.splitlines()[:3] == [
        "netdsl: error: dp.safetensors and network `small` disagree: 7 missing, 7 unexpected, 0 mismatched, 0 invalid",
        "note: 7 checkpoint keys start with `module.`; try --weights-map strip:module.",
        "note: --allow-missing (allow_missing=True in Python) accepts a checkpoint that lacks weights; they keep "
        "their initial values"]
    assert ("netdsl: error: unexpected `module.fc.bias` (shape 4): the network has no such weight; did you mean "
            "`fc.bias`?") in err.splitlines()
    rc, _, err = cli("compile", "small.net", "--weights", "dp.safetensors", "--weights-map", "strip:module.",
                     "-o", "m.onnx")
    assert rc == 0, err
    for name, value in trained().items():
        np.testing.assert_array_equal(initializers(tmp_path / "m.onnx")[name], value)


def test_missing_prefix_hint(tmp_path):
    write_checkpoint(tmp_path / "w.npz", {k.removeprefix("stem."): v for k, v in trained().items()})
    with pytest.raises(WeightsError) as e:
        netdsl.load(SMALL).load_weights(tmp_path / "w.npz")
    assert "note: 5 checkpoint keys lack the prefix `stem.`; try --weights-map '^=>stem.'" in str(e.value)
    loaded = netdsl.load(SMALL).load_weights(tmp_path / "w.npz", rules=(r"^(conv|bn)\.=>stem.\1.",))
    np.testing.assert_array_equal(loaded["stem.conv.weight"], trained()["stem.conv.weight"])


def test_regex_renames_apply_in_order(cli, small, tmp_path):
    theirs = {k.replace("stem.conv", "features.0").replace("stem.bn", "features.1").replace("fc.", "classifier."): v
              for k, v in trained().items()}
    write_checkpoint(tmp_path / "theirs.npz", theirs)
    rc, _, err = cli("compile", "small.net", "--weights", "theirs.npz", "-o", "m.onnx", "-q",
                     "--weights-map", r"^features\.0\.=>stem.conv.", "--weights-map", r"^features\.1\.=>stem.bn.",
                     "--weights-map", "^classifier=>fc")
    assert rc == 0, err
    got = initializers(tmp_path / "m.onnx")
    for name, value in trained().items():
        np.testing.assert_array_equal(got[name], value)


def test_drop_leaves_out_the_keys_it_matches(cli, small, tmp_path):
    """A training-only head (torchvision's inception_v3 AuxLogits, say) is left out only when asked."""
    weights = trained()
    extra = {"AuxLogits.fc.weight": np.zeros((4, 8), np.float32), "AuxLogits.fc.bias": np.zeros(4, np.float32)}
    write_checkpoint(tmp_path / "aux.npz", {**weights, **extra})
    rc, _, err = cli("compile", "small.net", "--weights", "aux.npz", "-o", "m.onnx")
    assert_clean_failure(rc, err)
    assert "0 missing, 2 unexpected, 0 mismatched, 0 invalid" in err
    rc, _, err = cli("compile", "small.net", "--weights", "aux.npz", "--weights-map", r"drop:^AuxLogits\.",
                     "-o", "m.onnx")
    assert rc == 0, err
    assert set(initializers(tmp_path / "m.onnx")) >= set(NAMES)
    # rules apply in order: a key renamed first is dropped by its new name
    from netdsl.checkpoint import rename

    got = rename({"module.a": 1, "module.b": 2, "c": 3}, ["strip:module.", "drop:^a$"])
    assert got == {"b": 2, "c": 3}


def test_rename_collision(cli, small, tmp_path):
    weights = trained()
    write_checkpoint(tmp_path / "both.npz", {**weights, "module.fc.bias": weights["fc.bias"]})
    rc, _, err = cli("compile", "small.net", "--weights", "both.npz", "--weights-map", "strip:module.")
    assert_clean_failure(rc, err)
    assert err == "netdsl: error: --weights-map maps both `fc.bias` and `module.fc.bias` to `fc.bias`\n"


@pytest.mark.parametrize(("rule", "message"), [
    ("module.", "--weights-map 'module.': expected strip:PREFIX, drop:REGEX or REGEX=>REPLACEMENT"),
    ("strip:", "--weights-map 'strip:': strip: needs a prefix, e.g. strip:module."),
    ("drop:", "--weights-map 'drop:': drop: needs a regex, e.g. drop:^aux"),
    ("drop:(", "--weights-map 'drop:(': bad regular expression (missing ), unterminated subpattern at position 0)"),
    ("(=>x", "--weights-map '(=>x': bad regular expression (missing ), unterminated subpattern at position 0)"),
    ("a=>\\2", "--weights-map 'a=>\\\\2': bad regular expression (invalid group reference 2 at position 1)"),
])
def test_malformed_rules_are_usage_errors(cli, small, tmp_path, rule, message):
    write_checkpoint(tmp_path / "w.npz", trained())
    rc, _, err = cli("compile", "small.net", "--weights", "w.npz", "--weights-map", rule)
    assert_clean_failure(rc, err, code=2)
    assert err == f"netdsl: error: {message}\n"
    with pytest.raises(UsageError):
        netdsl.load(SMALL).load_weights(tmp_path / "w.npz", rules=(rule,))


# ----------------------------------------------------------------------------- netdsl weights list / export
def test_weights_list_json(cli, small):
    rc, out, err = cli("weights", "list", "small.net", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    conv = ["stem.conv", "conv", "small.net:3:11"]
    bn = ["stem.bn", "bn", "small.net:4:9"]
    fc = ["fc", "fc", "small.net:12:9"]
    want = [("stem.conv.weight", [8, 3, 3, 3], "param", conv), ("stem.bn.weight", [8], "param", bn),
            ("stem.bn.bias", [8], "param", bn), ("stem.bn.running_mean", [8], "buffer", bn),
            ("stem.bn.running_var", [8], "buffer", bn), ("fc.weight", [4, 128], "param", fc),
            ("fc.bias", [4], "param", fc)]
    assert doc == {"network": "small", "weights": [
        {"name": n, "shape": s, "dtype": "float32", "kind": k, "layer": layer, "op": op, "location": loc}
        for n, s, k, (layer, op, loc) in want]}


def test_weights_list_table(cli, small):
    rc, out, err = cli("weights", "list", "small.net", "--arg", "classes=10")
    assert rc == 0, err
    head = [[cell.strip() for cell in line.strip("┃ ").split("┃")] for line in out.splitlines() if "┃" in line]
    assert head == [["name", "shape", "dtype", "kind", "source"]]
    rows = [None] + [[cell.strip() for cell in line.strip("│ ").split("│")] for line in out.splitlines() if "│" in line]
    assert rows[1] == ["stem.conv.weight", "8x3x3x3", "float32", "param", "small.net:3:11"]
    assert rows[4] == ["stem.bn.running_mean", "8", "float32", "buffer", "small.net:4:9"]
    assert rows[6] == ["fc.weight", "10x128", "float32", "param", "small.net:12:9"]
    assert [r[0] for r in rows[1:]] == NAMES
    assert out.splitlines()[-1] == "7 tensors (5 parameters, 2 buffers)"


def test_weights_export_errors(cli, small, tmp_path):
    rc, _, err = cli("weights", "export", "small.net", "-o", "w.pt")
    assert_clean_failure(rc, err, code=2)
    assert err == "netdsl: error: w.pt: weights are exported as .safetensors or .npz\n"
    rc, _, err = cli("weights", "export", "small.net", "-o", "nodir/w.npz")
    assert_clean_failure(rc, err)
    assert "does not exist" in err
    rc, _, err = cli("weights", "export", "small.net", "--weights", "nothere.npz", "-o", "w.npz")
    assert_clean_failure(rc, err)
    assert err == "netdsl: error: nothere.npz: no such file\n"
    assert not (tmp_path / "w.npz").exists() and not (tmp_path / "w.pt").exists()


# ----------------------------------------------------------------------------- fp16
def test_fp16_model_is_valid_and_close_to_fp32(cli, small, tmp_path):
    write_checkpoint(tmp_path / "w.safetensors", trained())
    for dtype, extra in (("fp32", ()), ("fp16", ()), ("fp16", ("--fp32-io",))):
        name = f"{dtype}{''.join(extra)}.onnx"
        rc, _, err = cli("compile", "small.net", "--weights", "w.safetensors", "--dtype", dtype, *extra, "-o", name,
                         "-q")
        assert rc == 0 and err == "", err
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref = ort_session(onnx.load(str(tmp_path / "fp32.onnx"))).run(None, {"image": x})[0]
    for name, io in (("fp16.onnx", np.float16), ("fp16--fp32-io.onnx", np.float32)):
        model = onnx.load(str(tmp_path / name))
        onnx.checker.check_model(model, full_check=True)
        types = {t.data_type for t in model.graph.initializer if not t.name.startswith("const.0.shape")}
        assert types == {onnx.TensorProto.FLOAT16}, name  # weights and relu6's bounds; shape targets are int64
        elem = onnx.helper.tensor_dtype_to_np_dtype
        assert [elem(v.type.tensor_type.elem_type) for v in (*model.graph.input, *model.graph.output)] == [io, io]
        props = {p.key: p.value for p in model.metadata_props}
        assert props["netdsl.dtype"] == ("fp16+fp32-io" if io == np.float32 else "fp16")
        out = ort_session(model).run(None, {"image": x.astype(io)})[0]
        assert out.dtype == io
        scale = float(np.abs(ref).max())
        assert float(np.abs(out.astype(np.float64) - ref).max()) <= 1e-2 * scale, name
        assert float(np.abs(out.astype(np.float64) - ref).max()) > 0  # really computed in fp16


def test_fp32_io_with_an_output_that_later_layers_consume(run_onnx):
    net = netdsl.load(dedent("""
        network two {
            input image: 3x8x8
            f: conv 4 3x3 pad 1 -> relu
            g: conv 4 3x3 pad 1 -> flatten
            fc: fc 3
            output feat = @f
            output logits
        }
        """))
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref = run_onnx(net.to_onnx(), {"image": x})
    model = net.to_onnx(dtype="fp16", keep_io_fp32=True)
    onnx.checker.check_model(model, full_check=True)
    out = run_onnx(model, {"image": x})
    for name in ("feat", "logits"):
        assert out[name].dtype == np.float32
        np.testing.assert_allclose(out[name], ref[name], atol=1e-2 * float(np.abs(ref[name]).max()))


def test_fp16_of_a_foreign_model_with_constants_and_casts(run_onnx):
    """Models exported by frameworks hold float Constant nodes and Casts to float; Resize's scales stay float32."""
    from onnx import TensorProto, helper

    from netdsl.precision import to_fp16

    nodes = [
        helper.make_node("Constant", [], ["two"], value=helper.make_tensor("v", TensorProto.FLOAT, [], [2.0])),
        helper.make_node("Mul", ["x", "two"], ["doubled"]),
        helper.make_node("Constant", [], ["scales"],
                         value=helper.make_tensor("s", TensorProto.FLOAT, [4], [1.0, 1.0, 2.0, 2.0])),
        helper.make_node("Resize", ["doubled", "", "scales"], ["big"], mode="nearest"),
        helper.make_node("Shape", ["big"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["shape_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["shape_f"], ["total"], keepdims=1),
        helper.make_node("Add", ["big", "total"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "foreign", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(2).standard_normal((1, 2, 3, 3)).astype(np.float32)
    want = run_onnx(model, {"x": x})["y"]
    for keep_io in (False, True):
        half = to_fp16(model, keep_io_fp32=keep_io)
        onnx.checker.check_model(half, full_check=True)
        got = run_onnx(half, {"x": x if keep_io else x.astype(np.float16)})["y"]
        assert got.dtype == (np.float32 if keep_io else np.float16)
        np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-3, atol=1e-3)


def test_fp16_weights_are_the_same_whether_stored_as_raw_bytes_or_float_data():
    """to_fp16 converts raw_data initializers in place of bytes and the rest through numpy: same values either
    way, the input model untouched, every other field copied."""
    from onnx import TensorProto, helper, numpy_helper

    from netdsl.precision import to_fp16

    w = np.array([[1.0, -2.5e-8, 7e4], [3.14159, -0.0, 1e-3]], dtype=np.float32)
    raw = numpy_helper.from_array(w, "raw")
    listed = helper.make_tensor("listed", TensorProto.FLOAT, w.shape, w.ravel().tolist())
    assert raw.HasField("raw_data") and not listed.HasField("raw_data")
    nodes = [helper.make_node("Add", ["raw", "listed"], ["s"]), helper.make_node("Add", ["x", "s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [raw, listed],
                              doc_string="kept")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], doc_string="kept too")
    before = model.SerializeToString()
    half = to_fp16(model)
    assert model.SerializeToString() == before
    got = {t.name: numpy_helper.to_array(t) for t in half.graph.initializer}
    assert list(got) == ["raw", "listed"]
    with np.errstate(over="ignore"):
        for name in got:
            assert got[name].dtype == np.float16 and np.array_equal(got[name], w.astype(np.float16), equal_nan=True)
    assert half.doc_string == "kept too" and half.graph.doc_string == "kept" and half.graph.name == "g"
    assert [n.op_type for n in half.graph.node] == ["Add", "Add"]


def test_fp32_io_needs_fp16(cli, small):
    rc, _, err = cli("compile", "small.net", "--fp32-io")
    assert_clean_failure(rc, err, code=2)
    assert err == "netdsl: error: --fp32-io only applies with --dtype fp16\n"


def test_fp16_report_names_the_layers(cli, small, tmp_path):
    weights = trained()
    weights["fc.weight"][0, :3] = [1e6, -7e4, 65504.0]  # two overflow; 65504 is fp16's largest value
    weights["stem.conv.weight"] *= np.float32(1e-9)  # every value below fp16's smallest subnormal
    write_checkpoint(tmp_path / "w.safetensors", weights)
    rc, _, err = cli("compile", "small.net", "--weights", "w.safetensors", "--dtype", "fp16", "-o", "m.onnx", "-q")
    assert rc == 0, err
    assert err.splitlines() == [
        "small.net:3:11: warning: fp16: `stem.conv.weight` of conv `stem.conv`: 216 of 216 non-zero value(s) "
        "underflow to 0 (|x| < 2^-24)",
        "    3 |     conv: conv c 3x3 pad 1 nobias",
        "      |           ^^^^^^^^^^^^^^^^^^^^^^^",
        "note: in block `unit` called from small.net:9:11",
        "small.net:12:9: warning: fp16: `fc.weight` of fc `fc`: 2 value(s) overflow to inf (max |x| = 1e+06 > 65504)",
        "   12 |     fc: fc classes",
        "      |         ^^^^^^^^^^"]
    assert cli("compile", "small.net", "--weights", "w.safetensors", "-o", "m32.onnx", "-q") == (0, "", "")


def test_fp16_report_ignores_a_few_tiny_values():
    """Normally distributed weights (as trained ones are, near zero) hold a handful of values below 2**-24: no
    report. A tensor where more than UNDERFLOW_SHARE of the values vanish is reported."""
    rng = np.random.default_rng(0)
    weights = {name: (rng.standard_normal(w.shape) * 0.05).astype(np.float32)
               for name, w in netdsl.load(REPO / "networks" / "resnet18.net").initial_weights().items()}
    tiny = sum(int(((np.abs(w) > 0) & (np.abs(w) < 2**-24)).sum()) for w in weights.values())
    assert tiny > 0  # there are some, and they do not matter
    assert fp16_report(weights) == []
    w = np.ones(1000, np.float32)
    w[:1] = 1e-9  # 0.1% of the values: not more than UNDERFLOW_SHARE
    assert fp16_report({"a": w}) == []
    w[:5] = 1e-9
    (issue,) = fp16_report({"a": w, "b": np.array([FP16_MAX, 0], np.float32)})
    assert (issue.weight, issue.overflow, issue.underflow, issue.nonzero) == ("a", 0, 5, 1000)


# ----------------------------------------------------------------------------- PyTorch checkpoints
class Unpicklable:
    """A custom class instance: weights-only loading must refuse a checkpoint that pickles it."""

    def __init__(self):
        self.lr = 0.1


class RunsCode:
    """Unpickling this runs a shell command (the classic malicious checkpoint)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _torch():
    return pytest.importorskip("torch", reason="needs torch (optional)")


def test_plain_state_dict_pt_loads(cli, small, tmp_path):
    torch = _torch()
    weights = trained()
    state = {k: torch.from_numpy(v) for k, v in weights.items()}
    state["stem.bn.num_batches_tracked"] = torch.tensor(7)
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "ckpt.pth")
    torch.save({k: v.to(torch.bfloat16) for k, v in state.items()}, tmp_path / "bf16.pt")
    write_checkpoint(tmp_path / "w.safetensors", weights)
    assert cli("compile", "small.net", "--weights", "w.safetensors", "-o", "want.onnx", "-q")[0] == 0
    for name, extra in (("plain.pt", ()), ("ckpt.pth", ("--weights-map", "strip:module."))):
        rc, _, err = cli("compile", "small.net", "--weights", name, *extra, "-o", "got.onnx", "-q")
        assert rc == 0 and err == "", err
        assert (tmp_path / "got.onnx").read_bytes() == (tmp_path / "want.onnx").read_bytes()
    loaded = netdsl.load(SMALL).load_weights(tmp_path / "bf16.pt")
    for name, value in weights.items():
        assert loaded[name].dtype == np.float32
        np.testing.assert_array_equal(loaded[name], torch.from_numpy(value).to(torch.bfloat16).float().numpy())


def test_pt_that_would_run_code_is_refused(cli, small, tmp_path):
    torch = _torch()
    marker = tmp_path / "pwned"
    torch.save({"fc.bias": torch.zeros(4), "payload": RunsCode(marker)}, tmp_path / "evil.pt")
    rc, out, err = cli("compile", "small.net", "--weights", "evil.pt")
    assert_clean_failure(rc, err)
    assert err == ("netdsl: error: evil.pt: refused: the checkpoint pickles `posix.system`, a Python object beyond "
                   "tensors, and loading it could run code from the file. Save only the state_dict "
                   "(torch.save(model.state_dict(), path)), or convert it to safetensors where you trust it\n")
    assert not marker.exists()
    torch.save({"fc.bias": torch.zeros(4), "config": Unpicklable()}, tmp_path / "custom.pt")
    with pytest.raises(WeightsError, match=r"custom\.pt: refused: the checkpoint pickles `test_weights\.Unpicklable`"):
        read_checkpoint(tmp_path / "custom.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(WeightsError, match=r"refused: the checkpoint pickles `torch\.nn\.modules\.linear\.Linear`"):
        read_checkpoint(tmp_path / "module.pt")


def test_pt_that_is_not_a_state_dict(tmp_path):
    torch = _torch()
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    torch.save({"fc.bias": torch.zeros(4), "epoch": 3}, tmp_path / "mixed.pt")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "empty.pt")
    cases = {"list.pt": "list.pt: holds a list, not a state_dict (a mapping of names to tensors)",
             "mixed.pt": "mixed.pt: entries that are not tensors: `epoch` (int); save only the model's state_dict",
             "empty.pt": "empty.pt: holds no tensors at its top level (entries: `epoch` (int), `lr` (float)); save "
                         "the model's state_dict, or nest it under `state_dict`"}
    for name, message in cases.items():
        with pytest.raises(WeightsError) as e:
            read_checkpoint(tmp_path / name)
        assert str(e.value) == f"netdsl: error: {tmp_path / message}"
    (tmp_path / "cut.pt").write_bytes((tmp_path / "list.pt").read_bytes()[:100])
    with pytest.raises(WeightsError, match=r"cut\.pt: not a readable torch file \("):
        read_checkpoint(tmp_path / "cut.pt")


def test_pt_without_pytorch_is_a_clear_message(small, tmp_path):
    """Runs everywhere: `torch` is made unimportable in the subprocess (as when PyTorch is not installed)."""
    (tmp_path / "model.pt").write_bytes(b"whatever")
    code = "import sys; sys.modules['torch'] = None; from netdsl.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    env.pop("NETDSL_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", code, "compile", "small.net", "--weights", "model.pt"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert_clean_failure(proc.returncode, proc.stderr)
    assert proc.stderr == ("netdsl: error: model.pt: reading PyTorch checkpoints needs PyTorch (pip install torch); "
                           "or convert it where PyTorch is installed: safetensors.torch.save_file(state_dict, "
                           "'model.safetensors')\n")


def test_initial_normals_are_standard_and_do_not_depend_on_chunking():
    """netdsl.weights.standard_normal: 65,536 equiprobable levels (the normal's quantiles), mean 0 and variance
    about 1 over a large draw, and the values of a tensor larger than one chunk are those of one long draw."""
    from netdsl import weights as w

    levels = w._normal_levels()
    assert levels.shape == (65536,) and np.all(np.diff(levels) > 0)
    np.testing.assert_array_equal(levels, -levels[::-1])  # symmetric about 0
    n = 3 * w._CHUNK + 6
    x = w.standard_normal(np.random.default_rng(5), (n,))
    assert x.dtype == np.float32 and np.isin(x, levels).all()
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1) < 0.01
    raw = np.random.default_rng(5).bit_generator.random_raw((n + 3) // 4).astype("<u8")
    np.testing.assert_array_equal(x, levels[raw.view("<u2")[:n]])
