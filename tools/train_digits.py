#!/usr/bin/env python3
"""Train tools/digits.net on scikit-learn's handwritten digits, then measure fp32 against int8 through netdsl.

    PYTHONPATH=$PWD /work/venvs/torch/bin/python tools/train_digits.py --out build/digits

Needs torch and scikit-learn (the ``torch`` extra and scikit-learn), and onnxruntime for the measurement.

1. Data: ``sklearn.datasets.load_digits`` (1,797 8x8 images, pixel values 0..16, divided by 16 here), split
   with ``train_test_split(test_size=0.25, stratify=labels, random_state=0)`` into 1,347 training and 450
   held-out images. The first ``--calibration`` training images are the calibration split.
2. Training, deterministic (seed 0, one thread, ``torch.use_deterministic_algorithms``): a torch module
   whose parameter names are the .net's (``c1.weight``, ...), Adam, ``--epochs`` epochs, batch 32.
   The weights are saved as ``digits.safetensors``; the splits as ``calibration.npy``, ``test.npz``.
3. Measurement: ``netdsl.load("tools/digits.net")`` compiled with those weights (fp32) and quantized with
   :func:`netdsl.quantize.quantize` on the calibration split, for each target; held-out top-1 accuracy of
   each model in ONNX Runtime. The fp32 figure is also checked against torch's own.

Prints one JSON object; ``--json PATH`` writes it too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
NET = REPO / "tools" / "digits.net"


def data(calibration: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None]
    y = digits.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    return xtr, ytr, xte, yte, xtr[:calibration]


def train(xtr: np.ndarray, ytr: np.ndarray, epochs: int):
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    class Digits(nn.Module):  # the parameter names are tools/digits.net's
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(1, 16, 3, padding=1)
            self.c3 = nn.Conv2d(16, 32, 3, padding=1)
            self.f5 = nn.Linear(128, 64)
            self.f6 = nn.Linear(64, 10)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
            x = torch.max_pool2d(torch.relu(self.c3(x)), 2).flatten(1)
            return self.f6(torch.relu(self.f5(x)))

    model = Digits()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xt), generator=gen).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    return model


def accuracy(model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"image": x})[0]
    return float(np.mean(np.argmax(logits, 1) == y))


def measure(weights: dict[str, np.ndarray], calibration: np.ndarray, xte: np.ndarray, yte: np.ndarray) -> dict:
    """Held-out accuracy of the fp32 model netdsl compiles and of its int8 quantizations (both targets)."""
    import netdsl
    from netdsl.quantize import quantize

    net = netdsl.load(NET)
    fp32 = net.to_onnx(weights=weights)
    out = {"fp32": accuracy(fp32.SerializeToString(), xte, yte)}
    for target in ("ort-cpu", "trt"):
        q = quantize(fp32, calibration, target=target, samples=len(calibration))
        out[f"int8 {target}"] = accuracy(q.model.SerializeToString(), xte, yte)
        out[f"int8 {target} calibration output error"] = q.output_error
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="build/digits", help="folder for the weights and data splits")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--calibration", type=int, default=100, help="training images used for calibration")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    import sklearn
    import torch
    from safetensors.numpy import save_file

    xtr, ytr, xte, yte, cal = data(args.calibration)
    model = train(xtr, ytr, args.epochs)
    with torch.no_grad():
        torch_acc = float((model(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean())
    weights = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / "digits.safetensors"))
    np.save(out / "calibration.npy", cal)
    np.savez(out / "test.npz", image=xte, label=yte)
    import onnxruntime

    result = {"train": len(xtr), "test": len(xte), "calibration": len(cal), "epochs": args.epochs,
              "torch": torch.__version__, "scikit-learn": sklearn.__version__, "onnxruntime": onnxruntime.__version__,
              "accuracy": {"torch fp32": torch_acc, **measure(weights, cal, xte, yte)}}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
