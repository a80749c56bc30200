"""Property: every weight reader, fed random bytes or a damaged valid file, either succeeds or raises a
NetdslError (exit 1 from the CLI), never another exception, and takes memory in proportion to the file."""

from __future__ import annotations

import functools
import importlib.util
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from helpers import dedent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netdsl
from netdsl.checkpoint import load_weights, read_checkpoint, write_checkpoint
from netdsl.errors import NetdslError

SMALL = dedent("""
    network small {
        input image: 3x8x8
        conv: conv 8 3x3 pad 1 -> bn -> relu
        pool: maxpool 2x2 /2 -> flatten
        fc: fc 10
        output logits
    }
""")
SUFFIXES = [".safetensors", ".npz", ".onnx", ".pt"]
MEMORY_LIMIT = 32 * 2**20  # the valid files are a few KB; no input may make a reader take more than this
HAS_TORCH = importlib.util.find_spec("torch") is not None
if HAS_TORCH:  # imported before any memory is measured
    import torch  # noqa: F401
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def network() -> netdsl.Network:
    return netdsl.load(SMALL)


@functools.cache
def valid_bytes(suffix: str) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"w{suffix}"
        weights = network().initial_weights(1)
        if suffix == ".onnx":
            network().save(path, seed=1)
        elif suffix == ".pt":
            import torch

            torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, path)
        else:
            write_checkpoint(path, weights)
        return path.read_bytes()


def read_every_way(suffix: str, data: bytes) -> None:
    """Read ``data`` as a ``suffix`` file with each reader; only NetdslError may come out, within the memory limit."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"w{suffix}"
        path.write_bytes(data)
        tracemalloc.start()
        try:
            for read in (lambda: read_checkpoint(path), lambda: load_weights(network().graph, path)):
                try:
                    read()
                except NetdslError as e:
                    assert str(e).strip(), "an error without a message"
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < MEMORY_LIMIT, f"reading {len(data)} bytes took {peak} bytes of memory"


@SETTINGS
@given(suffix=st.sampled_from(SUFFIXES), data=st.binary(max_size=2048))
def test_random_bytes_are_read_or_refused_cleanly(suffix, data):
    read_every_way(suffix, data)


@st.composite
def mutated(draw, suffix: str) -> bytes:
    """A valid file with some bytes overwritten, a slice cut out or repeated, and perhaps truncated."""
    data = bytearray(valid_bytes(suffix))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        a = draw(st.integers(0, len(data)))
        b = draw(st.integers(a, min(len(data), a + 64)))
        data[a:b] = data[a:b] * draw(st.sampled_from([0, 2]))
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))):]
    return bytes(data)


@pytest.mark.parametrize("suffix", SUFFIXES)
@SETTINGS
@given(data=st.data())
def test_damaged_valid_files_are_read_or_refused_cleanly(suffix, data):
    if suffix == ".pt" and not HAS_TORCH:
        pytest.skip("torch not installed")
    read_every_way(suffix, data.draw(mutated(suffix)))


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".onnx"])
def test_the_valid_files_load(suffix):
    read_every_way(suffix, valid_bytes(suffix))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"w{suffix}"
        path.write_bytes(valid_bytes(suffix))
        assert set(load_weights(network().graph, path).weights) == set(network().initial_weights(1))
