"""What a write leaves at an output path (netdsl.files), whatever sits there and however the writer ends.

* links are written through, devices and pipes stay what they are, folders and sockets are refused;
* permissions: an existing file keeps its mode, a new one gets 0666 less the umask;
* a model with external data and its data file are replaced together: killed at any step, the path holds the
  complete old model or the complete new one;
* SIGTERM removes the temporary file; temporaries a killed writer left are swept by the next write;
* outputs never overwrite the command's inputs; write failures (a full disk, a folder) are clean errors.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, SMALL

import netdsl
from netdsl.errors import UsageError
from netdsl.files import TEMPORARY, OutputError, refuse_overwrite, save_model, sweep_temporaries, write_bytes

DEAD_PID = 4194305  # above Linux's largest pid_max (2**22): never a live process


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "small.net"
    path.write_text(SMALL, encoding="utf-8")
    return path


def temporaries(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if TEMPORARY.fullmatch(n))


# ----------------------------------------------------------------------------- what sits at the path
def test_a_symlinked_output_is_written_through(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "model.bin"
    target.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    write_bytes(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path / "real") == ["model.bin"]


def test_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.bin"
    link.symlink_to(tmp_path / "made.bin")
    write_bytes(link, b"new")
    assert link.is_symlink() and (tmp_path / "made.bin").read_bytes() == b"new"


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o666, 0o751])
def test_an_existing_file_keeps_its_mode(tmp_path, mode):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    os.chmod(path, mode)
    old = os.umask(0o022)
    try:
        write_bytes(path, b"new")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert path.read_bytes() == b"new"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664), (0o000, 0o666)])
def test_a_new_file_honours_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_bytes(tmp_path / "out.bin", b"new")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == mode


def test_a_character_device_stays_a_device():
    write_bytes("/dev/null", b"written through")  # as root, a replace would have made it a regular file
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_pipe_is_written_through_and_stays_a_pipe(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(Path(fifo).read_bytes()))
    reader.start()
    write_bytes(fifo, b"through the pipe")
    reader.join(10)
    assert got == [b"through the pipe"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_socket_and_a_folder_are_refused(tmp_path):
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        with pytest.raises(OutputError, match=r"sock: not a regular file, a character device or a pipe"):
            write_bytes(path, b"x")
        assert stat.S_ISSOCK(os.stat(path).st_mode)
    (tmp_path / "folder").mkdir()
    with pytest.raises(OutputError, match=r"folder: is a directory"):
        write_bytes(tmp_path / "folder", b"x")
    assert temporaries(tmp_path) == []


def test_external_data_onto_a_pipe_is_refused(small, tmp_path):
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match=r"pipe.onnx: external data needs a regular file"):
        netdsl.load(small).save(fifo, external_data=True)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["pipe.onnx", "small.net"]


# ----------------------------------------------------------------------------- external data pairs
KILL_AT_STEP = """
import os, sys
import numpy, onnx, onnx.external_data_helper, netdsl, netdsl.files
step, out, seed, source = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
net = netdsl.load(open(source).read())
calls = 0

def killed_at_step(function):
    def call(*args, **kwargs):
        global calls
        calls += 1
        if calls == step:
            os._exit(9)  # no clean-up runs, as after SIGKILL
        return function(*args, **kwargs)
    return call

for name in ("open", "fsync", "fchmod", "replace", "unlink"):
    setattr(os, name, killed_at_step(getattr(os, name)))
net.save(out, seed=seed, external_data=True)
"""


def _outputs(path: Path, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_a_model_and_its_external_data_are_replaced_together_at_every_step(small, tmp_path):
    out = tmp_path / "m.onnx"
    net = netdsl.load(small)
    feeds = {"image": np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    old_files = net.save(out, seed=1, external_data=True)
    old = _outputs(out, feeds)
    new = netdsl.load(small).to_onnx(seed=2)
    from helpers import ort_session

    new = ort_session(new).run(None, feeds)[0]
    assert not np.allclose(old, new)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    seen = []
    for step in range(1, 60):
        for f in os.listdir(tmp_path):  # start each step from the complete old pair
            if f != "small.net":
                os.unlink(tmp_path / f)
        net.save(out, seed=1, external_data=True)
        proc = subprocess.run([sys.executable, "-c", KILL_AT_STEP, str(step), str(out), "2", str(small)], env=env,
                              capture_output=True, text=True, timeout=120)
        got = _outputs(out, feeds)
        state = "old" if np.array_equal(got, old) else "new" if np.array_equal(got, new) else "mixed"
        assert state != "mixed", f"killed at step {step}: the model reads data it was not written with"
        seen.append(state)
        if proc.returncode == 0:
            break
        assert proc.returncode == 9, proc.stderr
    else:
        pytest.fail("the save never completed")
    assert seen[0] == "old" and seen[-1] == "new" and len(seen) >= 6, seen
    data = sorted(f for f in os.listdir(tmp_path) if f.endswith(".data"))
    assert data == [Path(f).name for f in netdsl.load(small).save(out, seed=2, external_data=True)
                    if f.endswith(".data")]
    assert Path(old_files[0]).name not in data  # the old pair's data is removed once the new model is in place


def test_a_model_saved_without_external_data_removes_the_old_data_file(small, tmp_path):
    net = netdsl.load(small)
    data, model = net.save(tmp_path / "m.onnx", seed=1, external_data=True)
    (tmp_path / "m.onnx.notours.data").write_bytes(b"a user's file")
    net.save(tmp_path / "m.onnx", seed=1, external_data=False)
    assert not os.path.exists(data)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.notours.data", "small.net"]


def test_the_data_file_name_depends_on_the_content_only(small, tmp_path):
    net = netdsl.load(small)
    a = net.save(tmp_path / "a.onnx", seed=3, external_data=True)
    b = save_model(net.to_onnx(seed=3), tmp_path / "b.onnx", external_data=True)
    assert Path(a[0]).name[len("a.onnx"):] == Path(b[0]).name[len("b.onnx"):]
    assert Path(a[0]).read_bytes() == Path(b[0]).read_bytes()


def test_writing_files_does_not_need_the_compiler():
    code = ("import sys, netdsl\n"
            "sys.modules['netdsl.lower'] = None  # importing it now fails\n"
            "import netdsl.files\n"
            "print('loaded')")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "loaded\n", proc.stderr


# ----------------------------------------------------------------------------- temporary files
BIG = """
network big {
    input x: 1024
    fc1: fc 8192
    fc2: fc 1024
    output y
}
"""


def test_sigterm_during_a_write_leaves_no_temporary_file(tmp_path):
    (tmp_path / "big.net").write_text(BIG)
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    for _ in range(5):  # on a loaded machine the write may complete between seeing its temporary and the signal
        proc = subprocess.Popen([sys.executable, "-m", "netdsl", "compile", "big.net", "-o", "big.onnx"],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not temporaries(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert temporaries(tmp_path), "the write finished before it could be interrupted"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        if not (tmp_path / "big.onnx").exists():
            break
        (tmp_path / "big.onnx").unlink()  # the signal came too late to interrupt the write: try again
    assert proc.returncode == 130, err
    assert err.decode() == "netdsl: interrupted\n"
    assert sorted(os.listdir(tmp_path)) == ["big.net"]


INTERRUPTED_IN_EVAL = """
import os
from netdsl import cli

def main(argv=None):  # the signal arrives while code run from a string is running, as in namedtuple's eval
    eval("os.kill(os.getpid(), 15) or os.pause()")

cli.main = main
cli.entry()
"""


def test_an_interrupt_inside_code_run_from_a_string_still_exits_130(tmp_path):
    # CPython notes such an interrupt as unhandled even when entry() catches it, and under `python -m` would
    # then end the process by SIGINT (-2) after printing "interrupted"
    (tmp_path / "interrupted_in_eval.py").write_text(INTERRUPTED_IN_EVAL)
    proc = subprocess.run([sys.executable, "-m", "interrupted_in_eval"], cwd=tmp_path, capture_output=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    assert (proc.returncode, proc.stderr.decode()) == (130, "netdsl: interrupted\n")


def test_stale_temporaries_are_swept_by_the_next_write(tmp_path):
    an_hour_ago = time.time() - 3600
    stale = tmp_path / f".model.onnx.{DEAD_PID}.0123abcd.tmp"  # its writer was killed
    live = tmp_path / f".model.onnx.{os.getpid()}.4567cdef.tmp"  # another writer, still at work
    fresh = tmp_path / f".other.onnx.{DEAD_PID}.89abcdef.tmp"  # just left: may be another machine's, on NFS
    others = [tmp_path / ".model.onnx.tmp", tmp_path / f"model.onnx.{DEAD_PID}.0123abcd.tmp"]  # not our names
    for path in (stale, live, *others):
        path.write_bytes(b"partial")
        os.utime(path, (an_hour_ago, an_hour_ago))
    fresh.write_bytes(b"partial")
    write_bytes(tmp_path / "unrelated.bin", b"x")
    assert not stale.exists()
    assert live.exists() and fresh.exists() and all(p.exists() for p in others)
    a_week_ago = time.time() - 7 * 86400
    os.utime(live, (a_week_ago, a_week_ago))  # untouched for days: abandoned, whoever has its pid now
    assert sweep_temporaries(tmp_path) == [live.name]


# ----------------------------------------------------------------------------- inputs and write failures
def test_refuse_overwrite_sees_links_and_hard_links(tmp_path):
    source = tmp_path / "x.net"
    source.write_text("network n {}")
    (tmp_path / "sym.net").symlink_to(source)
    os.link(source, tmp_path / "hard.net")
    for output in (source, tmp_path / "sym.net", tmp_path / "hard.net", tmp_path / "." / "x.net"):
        with pytest.raises(UsageError, match="that is the input .*x.net; refusing to write over it"):
            refuse_overwrite(output, [tmp_path / "w.npz", source])
    refuse_overwrite(tmp_path / "other.onnx", [source, None])


def test_compile_refuses_to_write_over_its_source(run_cli, small, tmp_path):
    before = small.read_bytes()
    os.link(small, tmp_path / "same.net")
    for output in ("small.net", "same.net"):
        rc, out, err = run_cli("compile", "small.net", "-o", output, cwd=tmp_path)
        assert rc == 2 and err == f"netdsl: error: -o {output}: that is the input small.net; refusing to write " \
                                  "over it\n", err
    assert small.read_bytes() == before


def test_weights_export_refuses_to_write_over_its_inputs(run_cli, small, tmp_path):
    assert run_cli("weights", "export", "small.net", "-o", "w.npz", cwd=tmp_path)[0] == 0
    before = (tmp_path / "w.npz").read_bytes()
    rc, _, err = run_cli("weights", "export", "small.net", "--weights", "w.npz", "-o", "w.npz", cwd=tmp_path)
    assert rc == 2 and "that is the input w.npz; refusing to write over it" in err, err
    assert (tmp_path / "w.npz").read_bytes() == before


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_weights_export_write_failures_are_clean_errors(run_cli, small, tmp_path, suffix):
    os.symlink("/dev/full", tmp_path / f"full{suffix}")  # every write: ENOSPC, as on a full disk
    rc, out, err = run_cli("weights", "export", "small.net", "-o", f"full{suffix}", cwd=tmp_path)
    assert rc == 1 and err == f"netdsl: error: full{suffix}: cannot write: No space left on device\n", err
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    (tmp_path / f"folder{suffix}").mkdir()
    rc, out, err = run_cli("weights", "export", "small.net", "-o", f"folder{suffix}", cwd=tmp_path)
    assert rc == 1 and err == f"netdsl: error: folder{suffix}: is a directory\n", err
    assert temporaries(tmp_path) == []
