"""Time the candidate ONNX lowerings of two ops on ONNX Runtime (CPU), to choose between them.

* ``fc K per_position`` (ConvNeXt's Linear on channels-last), 96 -> 384 channels at 56x56: a 1x1 ``Conv`` with
  the weight reshaped (stored so, or an ``Unsqueeze`` of the K x C weight as netdsl emits it), against
  ``Transpose`` -> ``MatMul`` (+ ``Add``) -> ``Transpose``.
* ``layernorm`` over the channels of a 96x56x56 tensor (ConvNeXt's LayerNorm2d): ``Transpose`` ->
  ``LayerNormalization`` -> ``Transpose``, against a decomposition over axis 1 (``ReduceMean``, ``Sub``,
  ``Mul``, ``ReduceMean``, ``Add``, ``Sqrt``, ``Div``, ``Mul``, ``Add``), and the lowering below opset 17
  (positions as instances of ``InstanceNormalization``).

Usage: ``python tools/bench_lowering_choices.py [--batch 1] [--threads 1] [--repeat 30]``. Prints the median and
best time of each variant, the variants interleaved so that a busy machine disturbs both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _model(nodes, inits, x_shape, y_shape) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(m, full_check=True)
    return m


def per_position(c: int, k: int, hw: int, rng) -> dict[str, onnx.ModelProto]:
    w = rng.standard_normal((k, c)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    x, y = ["N", c, hw, hw], ["N", k, hw, hw]
    conv = _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[1, 1])],
                  {"w": w.reshape(k, c, 1, 1), "b": b}, x, y)
    matmul = _model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
                     helper.make_node("MatMul", ["t", "wt"], ["m"]),
                     helper.make_node("Add", ["m", "b"], ["a"]),
                     helper.make_node("Transpose", ["a"], ["y"], perm=[0, 3, 1, 2])],
                    {"wt": np.ascontiguousarray(w.T), "b": b}, x, y)
    unsqueezed = _model([helper.make_node("Unsqueeze", ["w", "axes"], ["w4"]),
                         helper.make_node("Conv", ["x", "w4", "b"], ["y"], kernel_shape=[1, 1])],
                        {"w": w, "axes": np.array([2, 3], np.int64), "b": b}, x, y)
    return {"conv1x1": conv, "conv1x1, Unsqueeze of KxC": unsqueezed, "transpose+matmul": matmul}


def layernorm(c: int, hw: int, rng) -> dict[str, onnx.ModelProto]:
    w = rng.standard_normal(c).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    shape = ["N", c, hw, hw]
    ln = _model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
                 helper.make_node("LayerNormalization", ["t", "w", "b"], ["n"], axis=-1, epsilon=1e-6),
                 helper.make_node("Transpose", ["n"], ["y"], perm=[0, 3, 1, 2])], {"w": w, "b": b}, shape, shape)
    dec = _model([helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1], keepdims=1),
                  helper.make_node("Sub", ["x", "mean"], ["d"]),
                  helper.make_node("Mul", ["d", "d"], ["sq"]),
                  helper.make_node("ReduceMean", ["sq"], ["var"], axes=[1], keepdims=1),
                  helper.make_node("Add", ["var", "eps"], ["ve"]),
                  helper.make_node("Sqrt", ["ve"], ["std"]),
                  helper.make_node("Div", ["d", "std"], ["n"]),
                  helper.make_node("Mul", ["n", "w3"], ["s"]),
                  helper.make_node("Add", ["s", "b3"], ["y"])],
                 {"eps": np.float32(1e-6), "w3": w.reshape(c, 1, 1), "b3": b.reshape(c, 1, 1)}, shape, shape)
    inorm = _model([helper.make_node("Reshape", ["x", "flat"], ["f"]),
                    helper.make_node("Transpose", ["f"], ["t"], perm=[0, 2, 1]),
                    helper.make_node("InstanceNormalization", ["t", "ones", "zeros"], ["n"], epsilon=1e-6),
                    helper.make_node("Transpose", ["n"], ["tb"], perm=[0, 2, 1]),
                    helper.make_node("Reshape", ["tb", "back"], ["r"]),
                    helper.make_node("Mul", ["r", "w3"], ["s"]),
                    helper.make_node("Add", ["s", "b3"], ["y"])],
                   {"flat": np.array([0, c, hw * hw], np.int64), "back": np.array([0, c, hw, hw], np.int64),
                    "ones": np.ones(hw * hw, np.float32), "zeros": np.zeros(hw * hw, np.float32),
                    "w3": w.reshape(c, 1, 1), "b3": b.reshape(c, 1, 1)}, shape, shape)
    return {"transpose+LayerNormalization": ln, "decomposed": dec, "InstanceNormalization (opset < 17)": inorm}


def bench(models: dict[str, onnx.ModelProto], feed: np.ndarray, threads: int, repeat: int) -> None:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sessions = {k: ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
                for k, m in models.items()}
    outs = {k: s.run(None, {"x": feed})[0] for k, s in sessions.items()}
    first = next(iter(outs.values()))
    for k, v in outs.items():
        assert np.allclose(v, first, atol=1e-3 * np.abs(first).max()), k
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(repeat):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {"x": feed})
            times[k].append(time.perf_counter() - t)
    for k, ts in times.items():
        print(f"  {k:36s} median {statistics.median(ts) * 1e3:8.2f} ms   best {min(ts) * 1e3:8.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=30)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, opset {OPSET}, batch {a.batch}, "
          f"{a.threads} thread(s)")
    print("fc 384 per_position on 96x56x56:")
    bench(per_position(96, 384, 56, rng), rng.standard_normal((a.batch, 96, 56, 56)).astype(np.float32),
          a.threads, a.repeat)
    print("layernorm over the channels of 96x56x56:")
    bench(layernorm(96, 56, rng), rng.standard_normal((a.batch, 96, 56, 56)).astype(np.float32),
          a.threads, a.repeat)


if __name__ == "__main__":
    main()
