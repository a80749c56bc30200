#!/usr/bin/env python3
"""Reference logits from real torchvision for every zoo network that names its torchvision counterpart.

For each ``networks/<name>.net`` with a ``# torchvision: <call>`` header line this tool

1. builds deterministic weights for the network (``tests/helpers.py: parity_weights``: normals from
   ``--weight-seed`` with the spread of netdsl's initialisation, with every batch norm's statistics and affine
   parameters drawn from the seed after it),
2. builds the torchvision model from the header's call (``weights=None``: nothing is downloaded), loads those
   weights into it with ``load_state_dict`` (every key must match; torchvision's ``num_batches_tracked``
   counters are the only keys netdsl does not have) and puts it in eval mode,
3. runs a standard-normal input batch drawn by numpy from ``--input-seed`` through it in float32,

and writes ``tests/fixtures/parity/<name>.npz``: the logits and, as JSON in ``meta``, the seeds, the input
shape, the torchvision call and the torch and torchvision versions. A segmentation model's result is a dict of
score maps (``out``, ``aux``): each is stored under its name (``meta["outputs"]``), every third row and column
of it (``meta["sample"]``: 3 is prime to the x8 and x16 bilinear upsamplings, so every interpolation phase is
kept, in a file of a few hundred KB instead of megabytes), and the network is compiled with the header's
``# parity-args`` (``meta["args"]``). No weights are stored: the test
(tests/test_parity_reference.py) rebuilds them from the seed, compiles the .net, runs ONNX Runtime and
compares, so it needs neither torch nor torchvision.

Run it with torch and torchvision installed, after any change to a zoo network or to the initialisation::

    python tools/make_parity_fixtures.py                 # every network
    python tools/make_parity_fixtures.py resnet18 vgg16  # some
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import helpers  # noqa: E402
from helpers import PARITY, parity_args, parity_cases, parity_input, parity_weights  # noqa: E402

import netdsl  # noqa: E402

SAMPLE = 3  # a segmentation fixture keeps every third row and column of each score map


def reference(path: Path, ctor: str, dims: tuple[int, ...], batch: int, weight_seed: int,
              input_seed: int) -> tuple[dict[str, np.ndarray], dict]:
    import torch
    import torchvision

    args = parity_args(path)
    net = netdsl.load(path, args=args)
    weights = parity_weights(net, weight_seed)
    model = eval(ctor, {"__builtins__": {}}, helpers.torchvision_namespace())  # noqa: S307 - a header line of this zoo
    state = {k: torch.from_numpy(v.copy()) for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(with_versions(state, model), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"{path.name}: keys differ from torchvision's: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    model.eval()
    x = parity_input((batch, *dims), input_seed)
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    outputs = helpers.reference_outputs(out)
    meta = {"network": path.name, "torchvision": ctor, "input_shape": [batch, *dims], "input_seed": input_seed,
            "weight_seed": weight_seed, "torch_version": torch.__version__,
            "torchvision_version": torchvision.__version__, "netdsl_version": netdsl.__version__}
    if list(outputs) != ["logits"]:  # a dict of score maps
        outputs = {name: value[..., ::SAMPLE, ::SAMPLE] for name, value in outputs.items()}
        meta.update(outputs=list(outputs), sample=SAMPLE, args=args)
    return outputs, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("networks", nargs="*", help="network names (default: every one with a torchvision header)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--weight-seed", type=int, default=0)
    parser.add_argument("--input-seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=PARITY)
    args = parser.parse_args(argv)
    cases = [c for c in parity_cases() if not args.networks or c[0].stem in args.networks]
    unknown = set(args.networks) - {c[0].stem for c in cases}
    if unknown:
        parser.error(f"no zoo network with a torchvision header: {', '.join(sorted(unknown))}")
    args.out.mkdir(parents=True, exist_ok=True)
    for path, ctor, dims in cases:
        outputs, meta = reference(path, ctor, dims, args.batch, args.weight_seed, args.input_seed)
        target = args.out / f"{path.stem}.npz"
        np.savez_compressed(target, **outputs, meta=np.array(json.dumps(meta, sort_keys=True)))
        shapes = ", ".join(f"{name} {tuple(v.shape)} max |value| {float(np.abs(v).max()):.4g}"
                           for name, v in outputs.items())
        print(f"{target.relative_to(REPO)}: {path.stem} {shapes}, {target.stat().st_size:,} bytes")
    return 0


def with_versions(state: dict, model) -> OrderedDict:
    """``state`` carrying the module versions of ``model``'s own state_dict, which some loaders check (MNASNet's
    rejects a state_dict without them)."""
    out = OrderedDict(state)
    out._metadata = model.state_dict()._metadata
    return out


if __name__ == "__main__":
    raise SystemExit(main())
