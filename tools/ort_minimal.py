"""The least a Python program can do to run an ONNX model once: the baseline of tools/bench_startup.py.

    python tools/ort_minimal.py resnet50.onnx

Loads the file into an ONNX Runtime CPU session (default options: full graph optimisation) and runs one
batch of random input of the model's shape (dynamic dimensions as 1); prints the first output's shape.
"""

import sys

import numpy as np
import onnxruntime as ort

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
feeds = {i.name: np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in i.shape])
         .astype(np.float32) for i in session.get_inputs()}
print(session.run(None, feeds)[0].shape)
