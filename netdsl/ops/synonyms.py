"""What other frameworks and papers call the ops of the table, for the suggestions of an "unknown layer" error and
of ``netdsl ops NAME``: a suggestion by meaning as well as by spelling.

The table maps a word a user may write to the ops it means. It only ever suggests ops that the op table (or the
merge and composite tables the caller passes) holds at run time, so an entry for an op that is not there is
harmless, and the table never has to follow the op table.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# a word (compared without case, `_`, `-` or a trailing `2d`/`1d`) -> the ops it may mean, best first
SYNONYMS: dict[str, tuple[str, ...]] = {
    "deconv": ("convtranspose",), "upconv": ("convtranspose",), "transposedconv": ("convtranspose",),
    "convtranspose": ("convtranspose",), "deconvolution": ("convtranspose",), "fractionallystridedconv":
        ("convtranspose",),
    "ln": ("layernorm",), "layernorm": ("layernorm",), "layernorm2d": ("layernorm",),
    "gn": ("groupnorm",), "groupnorm": ("groupnorm",),
    "instnorm": ("instancenorm",), "instancenorm": ("instancenorm",),
    "batchnormalization": ("bn",), "bnorm": ("bn",), "norm": ("bn", "layernorm", "groupnorm"),
    "interpolate": ("resize", "upsample"), "upsampling": ("resize", "upsample"), "upsample": ("upsample", "resize"),
    "resize": ("resize", "upsample"), "bilinear": ("resize", "upsample"), "nearest": ("upsample", "resize"),
    "pixelshuffle": ("upsample",),
    "dense": ("fc",), "linear": ("fc",), "fullyconnected": ("fc",), "gemm": ("fc",), "matmul": ("fc",),
    "innerproduct": ("fc",),
    "convolution": ("conv",), "depthwiseconv": ("conv",), "separableconv": ("conv",),
    "pool": ("maxpool", "avgpool"), "maxpooling": ("maxpool",), "avgpooling": ("avgpool",),
    "averagepool": ("avgpool",), "averagepooling": ("avgpool",), "adaptiveavgpool": ("avgpool",),
    "adaptivemaxpool": ("maxpool",), "globalavgpool": ("avgpool",), "globalaveragepool": ("avgpool",),
    "globalmaxpool": ("maxpool",), "gap": ("avgpool",),
    "cat": ("concat",), "concatenate": ("concat",), "sum": ("add",), "plus": ("add",), "multiply": ("mul",),
    "average": ("mean",),
    "pad": ("pad",), "zeropad": ("pad",), "padding": ("pad",), "reflectionpad": ("pad",),
    "replicationpad": ("pad",), "constantpad": ("pad",),
    "crop": ("crop",), "centercrop": ("crop",), "centrecrop": ("crop",),
    "reshape": ("reshape", "flatten"), "view": ("reshape", "flatten"), "transpose": ("permute",),
    "permute": ("permute",),
    "layerscale": ("layer_scale",), "channelscale": ("layer_scale",),
    "hswish": ("hardswish",), "hsigmoid": ("hardsigmoid",), "swish": ("silu",), "relu6": ("relu6",),
    "prelu": ("prelu",), "elu": ("elu",), "mish": ("mish",), "softplus": ("softplus",), "hardtanh": ("hardtanh",),
    "lrelu": ("leaky_relu",), "activation": ("relu",),
    "droppath": ("dropout",), "stochasticdepth": ("dropout",), "dropblock": ("dropout",),
    "flat": ("flatten",), "shuffle": ("channel_shuffle",), "channelshuffle": ("channel_shuffle",),
    "split": ("slice",), "chunk": ("slice",), "narrow": ("slice",),
    "noop": ("identity",), "pass": ("identity",),
}


def normalise(name: str) -> str:
    """``Conv_Transpose2d`` -> ``convtranspose``: the form names are compared in."""
    key = name.lower().replace("_", "").replace("-", "")
    for tail in ("2d", "1d"):
        if key.endswith(tail) and len(key) > len(tail):
            key = key[: -len(tail)]
    return key


def suggestions(name: str, known: Iterable[str]) -> list[str]:
    """The names of ``known`` that ``name`` may have meant: by meaning (the table above, and the same name
    written another way, ``max_pool2d`` for ``maxpool``), then by spelling; at most three, best first."""
    known = list(dict.fromkeys(known))
    by_key: dict[str, str] = {}
    for k in known:
        by_key.setdefault(normalise(k), k)
    key = normalise(name)
    out: list[str] = []
    if key in by_key and by_key[key] != name:
        out.append(by_key[key])
    out += [s for s in SYNONYMS.get(key, ()) if s in known and s != name]
    if not out:  # by spelling only when nothing is known by meaning: `deconv` is not a misspelt `conv`
        out += difflib.get_close_matches(name, known, n=3, cutoff=0.7)
    return list(dict.fromkeys(out))[:3]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``; did you mean `x`?`` (or `` `x` or `y` ``) for :func:`suggestions`, or nothing."""
    found = suggestions(name, known)
    if not found:
        return ""
    shown = [f"`{s}`" for s in found]
    return "; did you mean " + (shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]) + "?"
