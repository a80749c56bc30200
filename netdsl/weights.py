"""Weights: deterministic initial values for a checked graph.

Initialisation (``netdsl compile --seed``): conv and fc weights He/Kaiming normal
(std = sqrt(2 / fan_in)), biases zero, bn gamma 1, beta 0, running mean 0, running var 1.
Each tensor draws from its own generator, numpy's ``default_rng([seed, crc32(name)])`` (PCG64,
standard normals by the ziggurat method, float32), so a tensor's values do not depend on the order or
the presence of other layers, nor on which thread computes them, and identical input gives identical
bytes. Because tensors are independent, they are computed in parallel (numpy's generators release
the GIL), which is most of what ``netdsl compile`` spends beyond imports.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from .graph import Graph
from .ops import WeightSpec


def initial_value(name: str, spec: WeightSpec, seed: int) -> np.ndarray:
    """The initial value of the weight ``name`` (float32, ``spec.shape``); depends only on its arguments."""
    if spec.init == "zeros":
        return np.zeros(spec.shape, np.float32)
    if spec.init == "ones":
        return np.ones(spec.shape, np.float32)
    if spec.init == "he_normal":
        rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
        std = np.float32(math.sqrt(2.0 / max(spec.fan_in, 1)))
        out = rng.standard_normal(spec.shape, dtype=np.float32)
        out *= std
        return out
    raise AssertionError(spec.init)


def initial_weights(graph: Graph, seed: int = 0, workers: int | None = None) -> dict[str, np.ndarray]:
    """Every weight of ``graph`` at its deterministic initial value, in graph order.

    Computed on ``workers`` threads (default: the usable CPUs); the values do not depend on it.
    """
    if seed < 0:
        raise ValueError("seed must be non-negative")
    from .lower import Initializer, computed

    tasks = tuple(Initializer(name, tuple(spec.shape), np.dtype(np.float32),
                              lambda name=name, spec=spec: initial_value(name, spec, seed),
                              costly=spec.init == "he_normal")
                  for name, spec, _ in graph.weight_specs())
    return {init.name: value for init, value in computed(tasks, workers)}
