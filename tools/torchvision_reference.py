#!/usr/bin/env python3
"""Developer reference tool: dump ground-truth facts about torchvision CNNs.

This script is NOT part of the netdsl compiler and is never imported by it.
It exists so developers can compare what netdsl produces (parameter counts,
MAC counts, state_dict layouts, layer shapes) against the reference
implementations in torchvision.

It needs ``torch`` and ``torchvision``, which are *optional* dependencies of
netdsl (netdsl itself does not require them).  Models are always built with
``weights=None``; nothing is downloaded.

For each model it records:

* ``params``: ``sum(p.numel() for p in model.parameters())``
* ``macs``: multiply-accumulates of ``Conv2d`` and ``Linear`` layers only,
  counted with forward hooks on a batch-1 input (3x224x224, or 3x299x299 for
  inception_v3).  Conv MACs = out_elements * (in_channels / groups) * kh * kw;
  Linear MACs = in_features * out_features * (leading dims other than batch).
  Only modules that actually run in eval mode are counted (e.g. GoogLeNet's
  auxiliary classifiers do not run in eval mode; their parameters are still
  counted in ``params``).
* ``state_dict``: every key with its shape and dtype, including buffers;
  each entry has ``kind`` = ``parameter`` / ``buffer`` / ``num_batches_tracked``.
* ``leaf_modules``: for every leaf module, its qualified name, class name,
  repr and the output shape(s) it produced for the batch-1 input
  (``output_shapes`` lists one entry per call; empty if it never ran).
* ``containers``: qualified name and class name of every non-leaf module.

Usage::

    python tools/torchvision_reference.py --out DIR [--models alexnet,resnet18]

writes ``DIR/<model>.json`` for every model plus ``DIR/summary.txt``
(a table with columns ``model params macs``).  Without ``--out`` only the
summary table is printed.
"""

import argparse
import json
import os
import sys
import traceback

# name -> (torchvision builder name, builder kwargs, input (C, H, W))
MODEL_SPECS = {
    "alexnet": ("alexnet", {}, (3, 224, 224)),
    "vgg11": ("vgg11", {}, (3, 224, 224)),
    "vgg13": ("vgg13", {}, (3, 224, 224)),
    "vgg16": ("vgg16", {}, (3, 224, 224)),
    "vgg19": ("vgg19", {}, (3, 224, 224)),
    "vgg16_bn": ("vgg16_bn", {}, (3, 224, 224)),
    "googlenet": ("googlenet", {"aux_logits": False, "init_weights": False}, (3, 224, 224)),
    "googlenet_aux": ("googlenet", {"aux_logits": True, "init_weights": False}, (3, 224, 224)),
    "inception_v3": ("inception_v3", {"aux_logits": False, "init_weights": False}, (3, 299, 299)),
    "resnet18": ("resnet18", {}, (3, 224, 224)),
    "resnet34": ("resnet34", {}, (3, 224, 224)),
    "resnet50": ("resnet50", {}, (3, 224, 224)),
    "resnet101": ("resnet101", {}, (3, 224, 224)),
    "resnet152": ("resnet152", {}, (3, 224, 224)),
    "wide_resnet50_2": ("wide_resnet50_2", {}, (3, 224, 224)),
    "resnext50_32x4d": ("resnext50_32x4d", {}, (3, 224, 224)),
    "mobilenet_v2": ("mobilenet_v2", {}, (3, 224, 224)),
    "mobilenet_v3_large": ("mobilenet_v3_large", {}, (3, 224, 224)),
    "mnasnet1_0": ("mnasnet1_0", {}, (3, 224, 224)),
    "regnet_x_400mf": ("regnet_x_400mf", {}, (3, 224, 224)),
    "efficientnet_v2_s": ("efficientnet_v2_s", {}, (3, 384, 384)),
    "convnext_tiny": ("convnext_tiny", {}, (3, 224, 224)),
    "squeezenet1_0": ("squeezenet1_0", {}, (3, 224, 224)),
    "squeezenet1_1": ("squeezenet1_1", {}, (3, 224, 224)),
    "densenet121": ("densenet121", {}, (3, 224, 224)),
    "shufflenet_v2_x1_0": ("shufflenet_v2_x1_0", {}, (3, 224, 224)),
    "efficientnet_b0": ("efficientnet_b0", {}, (3, 224, 224)),
    "regnet_y_400mf": ("regnet_y_400mf", {}, (3, 224, 224)),
    "fcn_resnet50": ("fcn_resnet50", {"weights_backbone": None, "aux_loss": False}, (3, 520, 520)),
    "deeplabv3_resnet50": ("deeplabv3_resnet50", {"weights_backbone": None, "aux_loss": False}, (3, 520, 520)),
    "lraspp_mobilenet_v3_large": ("lraspp_mobilenet_v3_large", {"weights_backbone": None}, (3, 520, 520)),
}


def _shape_of(obj):
    """Shape(s) of a module output: list for a tensor, nested for tuples etc."""
    import torch

    if isinstance(obj, torch.Tensor):
        return list(obj.shape)
    if isinstance(obj, (tuple, list)):
        return [_shape_of(o) for o in obj]
    if isinstance(obj, dict):
        return {str(k): _shape_of(v) for k, v in obj.items()}
    if hasattr(obj, "_asdict"):  # namedtuple outputs (e.g. GoogLeNetOutputs)
        return {k: _shape_of(v) for k, v in obj._asdict().items()}
    return None


def build_model(name):
    import torchvision.models as tvm

    builder_name, kwargs, _ = MODEL_SPECS[name]
    builder = getattr(tvm, builder_name, None) or getattr(tvm.segmentation, builder_name)
    model = builder(weights=None, **kwargs)
    model.eval()
    return model


def analyze(name):
    """Build model ``name`` and return its reference record (a JSON-able dict)."""
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    _, kwargs, input_chw = MODEL_SPECS[name]
    model = build_model(name)

    params = sum(p.numel() for p in model.parameters())

    # state_dict with kinds
    param_names = {n for n, _ in model.named_parameters()}
    state = []
    for key, tensor in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            kind = "num_batches_tracked"
        elif key in param_names:
            kind = "parameter"
        else:
            kind = "buffer"
        state.append(
            {
                "key": key,
                "shape": list(tensor.shape),
                "dtype": str(tensor.dtype).replace("torch.", ""),
                "kind": kind,
            }
        )

    # hooks: MACs + leaf output shapes
    leaves = []
    containers = []
    leaf_records = {}
    mac_total = [0]
    mac_by_module = {}
    handles = []

    def make_hook(qname, module, is_leaf):
        def hook(mod, inputs, output):
            macs = 0
            if isinstance(mod, nn.Conv2d):
                batch = output.shape[0]
                out_elems = output.numel() // batch
                kh, kw = mod.kernel_size
                macs = out_elems * (mod.in_channels // mod.groups) * kh * kw
            elif isinstance(mod, nn.Linear):
                lead = 1
                for d in output.shape[1:-1]:
                    lead *= d
                macs = mod.in_features * mod.out_features * lead
            if macs:
                mac_total[0] += macs
                mac_by_module[qname] = mac_by_module.get(qname, 0) + macs
            if is_leaf:
                leaf_records[qname]["output_shapes"].append(_shape_of(output))

        return hook

    for qname, module in model.named_modules():
        is_leaf = len(list(module.children())) == 0
        if is_leaf:
            rec = {
                "name": qname,
                "class": type(module).__name__,
                "repr": repr(module),
                "output_shapes": [],
            }
            leaf_records[qname] = rec
            leaves.append(rec)
        else:
            containers.append({"name": qname, "class": type(module).__name__})
        if is_leaf or isinstance(module, (nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_hook(make_hook(qname, module, is_leaf)))

    x = torch.randn(1, *input_chw)
    with torch.no_grad():
        out = model(x)
    for h in handles:
        h.remove()

    for rec in leaves:
        rec["output_shape"] = rec["output_shapes"][0] if rec["output_shapes"] else None
        rec["calls"] = len(rec["output_shapes"])
        if rec["name"] in mac_by_module:
            rec["macs"] = mac_by_module[rec["name"]]

    return {
        "model": name,
        "builder_kwargs": dict(kwargs, weights=None),
        "input_shape": [1] + list(input_chw),
        "output_shape": _shape_of(out),
        "params": params,
        "macs": mac_total[0],
        "state_dict": state,
        "leaf_modules": leaves,
        "containers": containers,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="output directory for <model>.json and summary.txt")
    parser.add_argument(
        "--models",
        help="comma-separated subset of models (default: all): " + ", ".join(MODEL_SPECS),
    )
    args = parser.parse_args(argv)

    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as exc:
        print(f"error: this tool needs torch and torchvision: {exc}", file=sys.stderr)
        return 2

    names = list(MODEL_SPECS)
    if args.models:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
        unknown = [n for n in names if n not in MODEL_SPECS]
        if unknown:
            parser.error("unknown model(s): " + ", ".join(unknown))

    if args.out:
        os.makedirs(args.out, exist_ok=True)

    rows = []
    failures = []
    for name in names:
        try:
            rec = analyze(name)
        except Exception as exc:  # report and continue
            traceback.print_exc()
            failures.append((name, f"{type(exc).__name__}: {exc}"))
            continue
        rows.append((name, rec["params"], rec["macs"]))
        if args.out:
            with open(os.path.join(args.out, name + ".json"), "w") as fh:
                json.dump(rec, fh, indent=1)
        print(f"{name:<20} {rec['params']:12d} {rec['macs']:14d}", file=sys.stderr)

    width = max([len("model")] + [len(r[0]) for r in rows])
    lines = [f"{'model':<{width}} {'params':>12} {'macs':>14}"]
    lines += [f"{n:<{width}} {p:12d} {m:14d}" for n, p, m in rows]
    for name, why in failures:
        lines.append(f"# FAILED {name}: {why}")
    table = "\n".join(lines) + "\n"
    if args.out:
        with open(os.path.join(args.out, "summary.txt"), "w") as fh:
            fh.write(table)
    sys.stdout.write(table)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
