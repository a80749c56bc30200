"""Hostile and damaged weight files (netdsl.checkpoint): headers are checked before any data is read.

* a sparse safetensors declaring a 3 GB tensor and an .npz zip bomb are refused from their headers, in a
  process whose address space is capped below what reading them would take;
* a compressed PyTorch archive that declares more than the file holds is refused before torch is asked;
* an .npz member that is not an array, and a tiny .npz declaring a huge array, are clear errors, exit 1;
* only the tensors the network uses are read.
"""

from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, SMALL

import netdsl
from netdsl.checkpoint import load_weights, read_checkpoint, read_headers, write_checkpoint
from netdsl.errors import WeightsError

ADDRESS_SPACE = 1 << 30  # netdsl compile with a small network needs well under 600 MB of address space


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "small.net"
    path.write_text(SMALL, encoding="utf-8")
    return path


def capped_cli(*args: str, cwd: Path) -> tuple[int, str]:
    """``netdsl ARGS`` with its address space capped at :data:`ADDRESS_SPACE` -> (exit code, stderr)."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    env.pop("NETDSL_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "netdsl", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, preexec_fn=cap)
    return proc.returncode, proc.stderr


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue()


def test_a_sparse_safetensors_declaring_3_gb_is_refused_from_its_header(small, tmp_path):
    good = tmp_path / "good.safetensors"
    write_checkpoint(good, netdsl.load(small).initial_weights(0))
    n = 3 * 2**30 // 4
    header = json.loads(good.read_bytes()[8:8 + struct.unpack("<Q", good.read_bytes()[:8])[0]])
    header["fc.weight"] = {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}
    for name in [k for k in header if k not in ("fc.weight", "__metadata__")]:
        del header[name]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path = tmp_path / "sparse.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(8 + len(text) + 4 * n)  # 3 GB long, a few KB on disk
    rc, err = capped_cli("compile", "small.net", "--weights", path.name, "-o", "m.onnx", cwd=tmp_path)
    assert rc == 1, err
    assert "`fc.weight` has shape 805306368, but fc `fc` wants 10x128" in err, err
    assert "out of memory" not in err and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_an_npz_zip_bomb_is_refused_from_its_headers(small, tmp_path):
    path = tmp_path / "bomb.npz"
    n = 2**30 // 4  # 1 GiB of zeros, about 4 MB compressed
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("fc.weight.npy", "w", force_zip64=True) as m:
            m.write(npy_header((n,)))
            chunk = bytes(1 << 24)
            for _ in range(4 * n // len(chunk)):
                m.write(chunk)
    assert path.stat().st_size < 8 * 2**20
    rc, err = capped_cli("compile", "small.net", "--weights", path.name, "-o", "m.onnx", cwd=tmp_path)
    assert rc == 1, err
    assert "`fc.weight` has shape 268435456, but fc `fc` wants 10x128" in err, err
    assert "out of memory" not in err and "Traceback" not in err


def test_a_compressed_pytorch_archive_larger_than_its_file_is_refused_before_torch(small, tmp_path):
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("archive/data/0", bytes(64 * 2**20))
    rc, err = capped_cli("compile", "small.net", "--weights", path.name, cwd=tmp_path)
    assert rc == 1 and "Traceback" not in err, err
    assert err.startswith(f"netdsl: error: {path.name}: not a readable torch file: its members declare 67108870 "
                          f"bytes, more than the file's {path.stat().st_size}"), err


def test_an_npz_member_that_is_not_an_array_is_a_clear_error(small, tmp_path):
    path = tmp_path / "odd.npz"
    np.savez(path, **{"fc.bias": np.zeros(10, np.float32)})
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("notes.txt", "trained for 3 epochs")
    rc, err = capped_cli("compile", "small.net", "--weights", path.name, cwd=tmp_path)
    assert rc == 1, err
    assert err == (f"netdsl: error: {path.name}: member `notes.txt` is not a .npy array; an .npz holds only the "
                   "arrays numpy.savez writes\n")


def test_a_tiny_npz_declaring_a_huge_array_is_called_damaged(small, tmp_path):
    path = tmp_path / "tiny.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("fc.bias.npy", npy_header((10**12,)) + b"\0" * 16)
    assert path.stat().st_size < 300
    rc, err = capped_cli("compile", "small.net", "--weights", path.name, cwd=tmp_path)
    assert rc == 1, err
    assert err == (f"netdsl: error: {path.name}: not a readable npz file: member `fc.bias.npy` declares "
                   "4000000000000 bytes of data (1000000000000 float32) but holds 16\n")


def test_an_object_array_in_an_npz_is_refused_from_its_header(tmp_path):
    np.savez(tmp_path / "obj.npz", **{"fc.bias": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(WeightsError, match=r"obj\.npz: refused: it holds pickled Python objects"):
        read_headers(tmp_path / "obj.npz")


def test_only_the_tensors_the_network_uses_are_read(small, tmp_path, monkeypatch):
    net = netdsl.load(small)
    weights = net.initial_weights(0)
    write_checkpoint(tmp_path / "w.safetensors", {**weights, "head.num_batches_tracked": np.zeros(1, np.int64)})
    import netdsl.checkpoint as checkpoint

    asked = []
    real = checkpoint._read_safetensors
    monkeypatch.setattr(checkpoint, "_read_safetensors", lambda p, names: asked.append(names) or real(p, names))
    result = load_weights(net.graph, tmp_path / "w.safetensors")
    assert asked == [set(weights)]
    assert result.ignored == ("head.num_batches_tracked",)
    for name, value in weights.items():
        np.testing.assert_array_equal(result.weights[name], value)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".onnx"])
def test_headers_agree_with_the_data(small, tmp_path, suffix):
    net = netdsl.load(small)
    path = tmp_path / f"w{suffix}"
    if suffix == ".onnx":
        net.save(path)
    else:
        write_checkpoint(path, net.initial_weights(0))
    headers = read_headers(path)
    data = read_checkpoint(path)
    assert list(headers) == list(data)
    assert {k: (h.shape, h.nbytes) for k, h in headers.items()} == {k: (v.shape, v.nbytes) for k, v in data.items()}
