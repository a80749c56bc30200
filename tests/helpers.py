"""Helpers shared by the test modules (``from helpers import ...``); conftest.py holds the fixtures.

* ``dedent(text)``: source text written indented inside a test, made flush-left.
* ``ort_session``, ``random_feeds``, ``run_onnx``: run a model with ONNX Runtime on the CPU.
* ``declared_shapes`` / ``actual_shapes``: the shapes netdsl declares and the ones ONNX Runtime produces.
* ``compile_net(source, ...)``: .net source text -> (checked Network, ONNX ModelProto).
* ``netdsl_main(*args, cwd=None)``: ``netdsl ARGS`` in this process, streams captured -> (exit code, stdout,
  stderr); the fast way to test a command when the process boundary is not the point.
* ``run_netdsl(*args, cwd=None, pythonpath=None)``: ``python -m netdsl ARGS`` in a subprocess -> (exit code,
  stdout, stderr); for what needs a real process: exit status, start-up imports, signals, a terminal.
* ``cli_env()``: the environment ``run_netdsl`` gives the subprocess.
* ``hide_modules(folder, *names)``: a folder for ``pythonpath`` in which importing those modules fails.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx
import pytest

import netdsl
from netdsl.weights import init_std

REPO = Path(__file__).resolve().parent.parent
NETWORKS = REPO / "networks"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
GOLDEN = Path(__file__).resolve().parent / "golden"


def dedent(text: str) -> str:
    """Source text written indented inside a test, made flush-left."""
    return textwrap.dedent(text).lstrip("\n")


# a small network with every kind of weight a checkpoint holds (conv, fc), for file-level tests
SMALL = dedent("""
    network small {
        input image: 3x8x8
        conv: conv 8 3x3 pad 1 -> relu
        pool: maxpool 2x2 /2 -> flatten
        fc: fc 10
        output logits
    }
""")


# a tiny image classifier with declared preprocessing (3x32x32 images, resized to a shorter side of 36 and
# centre-cropped, then normalised), for the batch and serve tests
TINY_IMAGES = dedent("""
    network tiny(classes=10) {
        input image: 3x32x32 resize=36 mean=(0.5, 0.4, 0.3) std=(0.2, 0.25, 0.3)
        conv: conv 8 3x3 pad 1 -> relu
        pool: maxpool 2x2 /2 -> flatten
        fc: fc classes
        output logits
    }
""")


def ort_session(model: onnx.ModelProto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1  # CI has two cores; small models gain nothing from threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def random_feeds(model: onnx.ModelProto, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """A random float32 batch for every graph input (the batch dimension is symbolic)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def run_onnx(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray] | None = None,
             batch: int = 2) -> dict[str, np.ndarray]:
    sess = ort_session(model)
    feeds = dict(feeds) if feeds is not None else random_feeds(model, batch)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def declared_shapes(model: onnx.ModelProto) -> dict[str, tuple[int | str, ...]]:
    """Shapes netdsl declared for every intermediate tensor and output (batch dimension included)."""
    out = {}
    for vi in list(model.graph.value_info) + list(model.graph.output):
        out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                             for d in vi.type.tensor_type.shape.dim)
    return out


def actual_shapes(model: onnx.ModelProto, batch: int = 2) -> dict[str, tuple[int, ...]]:
    """The shape ONNX Runtime actually produces for every tensor netdsl declared (value_info and outputs)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(vi for vi in model.graph.value_info if vi.name not in known)
    sess = ort_session(probe)
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, random_feeds(probe, batch))
    return {n: tuple(v.shape) for n, v in zip(names, values, strict=True)}


def compile_net(source: str, opset: int | None = None, seed: int = 0, network: str | None = None,
                args: Mapping[str, int | float] | None = None) -> tuple[netdsl.Network, onnx.ModelProto]:
    net = netdsl.load(dedent(source), network=network, args=args)
    model = net.to_onnx(opset=opset, seed=seed) if opset is not None else net.to_onnx(seed=seed)
    return net, model


# ----------------------------------------------------------------------------- the command line
def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NETDSL_DEBUG", None)
    env.update(NO_COLOR="1", PYTHONIOENCODING="utf-8", COLUMNS="160")
    # the subprocess imports this checkout even when netdsl is not installed
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_netdsl(*args: str | os.PathLike, cwd: str | os.PathLike | None = None, timeout: float = 120,
               stdin: bytes | None = None, pythonpath: str | os.PathLike | None = None) -> tuple[int, str, str]:
    """``python -m netdsl ARGS`` as a user runs it -> (exit code, stdout, stderr)."""
    env = cli_env()
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath) + os.pathsep + env["PYTHONPATH"]
    proc = subprocess.run([sys.executable, "-m", "netdsl", *map(str, args)], cwd=cwd, env=env,
                          input=stdin, capture_output=True, timeout=timeout)
    return (proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))


@contextlib.contextmanager
def _cwd(folder: str | os.PathLike | None) -> Iterator[None]:
    if folder is None:
        yield
        return
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _environment(**values: str | None) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def netdsl_main(*args: str | os.PathLike, cwd: str | os.PathLike | None = None) -> tuple[int, str, str]:
    """``netdsl ARGS`` run in this process through ``netdsl.cli.main`` with stdout and stderr captured
    -> (exit code, stdout, stderr), in the environment ``run_netdsl`` gives its subprocess."""
    from netdsl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with (_environment(NETDSL_DEBUG=None, NO_COLOR="1", COLUMNS="160"),
          _cwd(cwd),
          contextlib.redirect_stdout(out), contextlib.redirect_stderr(err)):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse: --help, --version and usage errors
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return rc, out.getvalue(), err.getvalue()


def hide_modules(folder: Path, *names: str) -> Path:
    """``folder`` holding packages ``names`` whose import fails, to put first on PYTHONPATH (a missing optional
    package, simulated where it is installed)."""
    for name in names:
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} hidden by the test')\n")
    return folder


# ----------------------------------------------------------------------------- golden files
def update_golden() -> bool:
    """``NETDSL_UPDATE_GOLDEN=1 python -m pytest ...`` rewrites the golden files instead of comparing."""
    return os.environ.get("NETDSL_UPDATE_GOLDEN") == "1"


def check_golden(path: Path, actual: str) -> None:
    """Compare ``actual`` with the golden file ``path`` (a unified diff on failure), or rewrite the file when
    golden updates are on."""
    if update_golden():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing; create it with NETDSL_UPDATE_GOLDEN=1"
    expected = path.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True), actual.splitlines(keepends=True),
                                            f"{path.name} (expected)", f"{path.name} (actual)"))
        raise AssertionError(f"{path} differs (rerun with NETDSL_UPDATE_GOLDEN=1 if the change is intended):\n"
                             f"{diff}")


# ----------------------------------------------------------------------------- parity with torchvision
PARITY = FIXTURES / "parity"
FP32_TOL, FP16_TOL = 1e-4, 2e-2  # max |difference| <= TOL * max |logit| (docs/parity.md)


def parity_cases() -> list[tuple[Path, str, tuple[int, ...]]]:
    """Every zoo network whose header names its torchvision counterpart (``# torchvision: resnet50()``), with
    its input size (``# parity-input: 3x299x299``, else 3x224x224)."""
    import re

    out = []
    for path in sorted(NETWORKS.glob("*.net")):
        head = path.read_text(encoding="utf-8")[:3000]
        m = re.search(r"^# torchvision: *(\w+\(.*\))\s*$", head, re.M)
        if m:
            shape = re.search(r"^# parity-input: *(\d+(?:x\d+)+)\s*$", head, re.M)
            dims = tuple(int(d) for d in shape.group(1).split("x")) if shape else (3, 224, 224)
            out.append((path, m.group(1), dims))
    return out


def parity_args(path: Path) -> dict[str, int]:
    """The network arguments the parity comparison compiles ``path`` with: its header line
    ``# parity-args: aux=1 height=128 width=160`` (``--arg`` values that match the torchvision call and the
    parity input), else none."""
    import re

    head = path.read_text(encoding="utf-8")[:3000]
    m = re.search(r"^# parity-args: *((?:\w+=-?\d+ *)+)$", head, re.M)
    return {k: int(v) for k, v in (item.split("=") for item in m.group(1).split())} if m else {}


def reference_outputs(result) -> dict[str, np.ndarray]:
    """A torchvision model's result as named float32 arrays: a segmentation model's dict (``{"out", "aux"}``)
    as it is; a classifier's logits (a tensor, or an object with ``.logits``) as ``{"logits": ...}``."""
    if isinstance(result, Mapping):
        return {name: value.detach().numpy().astype(np.float32) for name, value in result.items()}
    result = result.logits if hasattr(result, "logits") else result
    return {"logits": result.detach().numpy().astype(np.float32)}


def paired_outputs(expected: Mapping[str, np.ndarray],
                   actual: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, torchvision's, netdsl's) for every output torchvision gave: by name where the network declares
    outputs of those names (``out``, ``aux``); a single ``logits`` against the network's single output,
    whatever it is called. Fails when the network has other outputs or lacks one."""
    if list(expected) == ["logits"] and len(actual) == 1:
        ((name, got),) = actual.items()
        return [(name, expected["logits"], got)]
    assert list(actual) == list(expected), f"outputs {list(actual)}, torchvision gives {list(expected)}"
    return [(name, want, actual[name]) for name, want in expected.items()]


def parity_weights(net: netdsl.Network, seed: int) -> dict[str, np.ndarray]:
    """Random weights from ``seed`` with the spread of netdsl's initialisation: each randomly initialised tensor
    drawn from numpy's ``default_rng([seed, crc32(name)])`` ziggurat normals times netdsl's standard deviation
    for it (independent of how netdsl itself draws them), constant ones as netdsl sets them, and every batch norm
    given non-trivial statistics and affine parameters drawn from ``seed + 1`` (the initial ones, mean 0 and
    variance 1, would hide a bn that mixes them up), layer norms' affine parameters in the same ranges and layer
    scales in [0.5, 1.5). The same arrays whichever machine computes them: numpy's PCG64 stream."""
    weights = dict(net.initial_weights(seed))
    for name, spec, _ in net.graph.weight_specs():
        if spec.init in ("zeros", "ones", "fill"):
            continue
        rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
        weights[name] = rng.standard_normal(spec.shape, dtype=np.float32) * np.float32(init_std(spec))
    # A grouped conv's weights scaled by 1/sqrt(groups), to the range torchvision's kaiming_normal_(mode="fan_out")
    # gives them (it counts every output channel, not a group's): with depthwise convs sqrt(channels) larger, deep
    # squeeze-and-excitation networks (efficientnet_v2_s) grow activations to ~1e6 and saturate their sigmoid
    # gates, where float32 rounding flips gates and the logits are no longer reproducible to 1e-4.
    for name, spec, node in net.graph.weight_specs():
        groups = node.in_shapes[0][0] // spec.shape[1] if node.op.name == "conv" and name.endswith(".weight") else 1
        if groups > 1:
            weights[name] = weights[name] / np.float32(np.sqrt(groups))
    rng = np.random.default_rng(seed + 1)
    ranges = {"weight": (0.5, 1.5), "bias": (-0.5, 0.5), "running_mean": (-0.5, 0.5), "running_var": (0.5, 2.0)}
    for row in net.weight_table():
        suffix = row["name"].rpartition(".")[2]
        if row["op"] in ("bn", "layernorm") and suffix in ranges:
            low, high = ranges[suffix]
            weights[row["name"]] = rng.uniform(low, high, row["shape"]).astype(np.float32)
        elif row["op"] == "layer_scale":  # ConvNeXt's 1e-6 would make every block all but vanish from the logits
            weights[row["name"]] = rng.uniform(0.5, 1.5, row["shape"]).astype(np.float32)
    return weights


def parity_input(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """The input batch of a parity fixture: standard normal float32 from numpy's generator ``seed``."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def torchvision_namespace() -> dict[str, object]:
    """The names a ``# torchvision:`` header's call may use: ``torchvision.models`` and its segmentation models
    (``fcn_resnet50``, ...), which torchvision keeps in ``torchvision.models.segmentation``."""
    import torchvision.models as tvm

    return {**vars(tvm), **vars(tvm.segmentation)}


def torchvision_model(ctor: str, seed: int = 0):
    """torchvision's model from a zoo header's call, random weights from ``seed``, random batch-norm statistics and
    random layer-norm and layer-scale parameters (skips the test where torch or torchvision is missing)."""
    torch = pytest.importorskip("torch", reason="parity tests need torch (optional)")
    pytest.importorskip("torchvision.models", reason="parity tests need torchvision (optional)")
    torch.manual_seed(seed)
    model = eval(ctor, {"__builtins__": {}}, torchvision_namespace())  # noqa: S307 - a trusted header line of our zoo
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                n = mod.num_features
                mod.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                mod.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                mod.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                mod.bias.copy_(torch.rand(n, generator=gen) - 0.5)
            elif isinstance(mod, torch.nn.LayerNorm):  # as a batch norm's affine parameters
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=gen) + 0.5)
                mod.bias.copy_(torch.rand(mod.bias.shape, generator=gen) - 0.5)
        for name, param in model.named_parameters():
            if name.rpartition(".")[2] == "layer_scale":  # ConvNeXt's, 1e-6 at initialisation: the blocks would vanish
                param.copy_(torch.rand(param.shape, generator=gen) + 0.5)
    return model.eval()
