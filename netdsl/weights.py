"""Weights: initializers whose values are computed on demand, and deterministic initial values.

An :class:`Initializer` knows a tensor's name, shape and dtype before its values, so a model's size and
layout are known before any weight is computed; :func:`computed` yields the values in order, computing
the costly ones ahead on worker threads. Lowering (:mod:`netdsl.lower`) builds its initializers from
these; this module never imports the lowering.

Initialisation (``netdsl compile --seed``) follows torchvision's own per layer kind (ResNet, VGG, MobileNet,
RegNet, EfficientNet initialise their layers so): conv weights Kaiming normal in fan-out mode,
std = sqrt(2 / fan_out) with fan_out = out_channels / groups * kh * kw (the outputs each input feeds;
torch counts all out_channels even in a grouped conv, which shrinks depthwise weights by sqrt(channels)
and makes torchvision's default MobileNet logits ~1e-9), fc weights normal with std 0.01 (VGG's,
MobileNet's and RegNet's rule; ResNet's default Linear has std 0.0128 at 2048 inputs), biases zero,
bn gamma 1, beta 0, running mean 0, running var 1, learned scales and slopes (layer_scale,
prelu) their ``init`` value. A random network's logits are then of the order of
torchvision's (tests/test_default_init.py). These weights are for smoke tests and costs, not predictions.
Each tensor draws from its own generator, numpy's ``default_rng([seed, crc32(name)])`` (PCG64), so a
tensor's values do not depend on the order or the presence of other layers, nor on which thread
computes them, and identical input gives identical bytes. The standard normals are drawn by inverse
transform with 16-bit resolution: each 16 bits of the generator's raw output pick one of 65,536
equiprobable levels, the normal quantiles at (i + 1/2) / 65536 (|z| <= 4.32, variance 0.9997). That is
integer arithmetic and one table lookup per value, about four times faster than numpy's ziggurat on
this machine class (70 against 270 ms of CPU for ResNet-50's 25.6 M weights), and for initial weights
the difference from an exact normal does not matter. Because tensors are independent, they are computed
in parallel (numpy releases the GIL), which is most of what ``netdsl compile`` spends beyond imports.

numpy is imported on first use: ``netdsl check`` imports the lowering (hence this module) and must
stay fast.
"""

from __future__ import annotations

import functools
import math
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .graph import Graph
from .ops import WeightSpec

if TYPE_CHECKING:
    import numpy as np


# ----------------------------------------------------------------------------- initializers
@dataclass(frozen=True, slots=True)
class Initializer:
    """One initializer of a lowered model. Its shape and dtype are known before its values, so the
    model's size and layout are known before any weight is computed.

    ``compute()`` returns an array of exactly ``shape`` and ``dtype``; ``costly`` marks values worth
    computing on a worker thread (random initialisation) rather than inline (zeros, given arrays).
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    compute: Callable[[], np.ndarray]
    costly: bool = False

    @classmethod
    def of(cls, name: str, value) -> Initializer:
        """An initializer holding a given array (or anything ``np.asarray`` accepts)."""
        import numpy as np

        array = np.asarray(value)
        return cls(name, tuple(array.shape), array.dtype, lambda: array)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def default_workers() -> int:
    """Threads used to compute weights: the CPUs this process may run on (at most 8)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def computed(initializers: tuple[Initializer, ...], workers: int | None = None,
             ) -> Iterator[tuple[Initializer, np.ndarray]]:
    """Every initializer with its values, in order.

    Costly values are computed ahead on ``workers`` threads (numpy's generators release the GIL), at
    most ``2 * workers`` of them held at once; the values do not depend on the threads.
    """
    workers = default_workers() if workers is None else workers
    if workers <= 1 or sum(i.costly for i in initializers) < 2:
        for init in initializers:
            yield init, _checked(init, init.compute())
        return
    from concurrent.futures import ThreadPoolExecutor

    # numpy imports numpy.random on first use: import it here, in the main thread, before any worker can. Seen
    # otherwise: after a SIGTERM during `netdsl compile`, both workers waited forever in importlib's module lock
    # for numpy.random and the main thread for their results, so the command hung.
    import numpy.random  # noqa: F401

    with ThreadPoolExecutor(workers, thread_name_prefix="netdsl-weights") as pool:
        ahead: deque = deque()  # (initializer, its future or None), in model order
        upcoming = iter(initializers)
        in_flight = 0

        def refill() -> None:
            nonlocal in_flight
            while in_flight < 2 * workers:
                init = next(upcoming, None)
                if init is None:
                    return
                ahead.append((init, pool.submit(init.compute) if init.costly else None))
                in_flight += init.costly

        refill()
        while ahead:
            init, future = ahead.popleft()
            if future is None:
                value = init.compute()
            else:
                value = future.result()
                in_flight -= 1
                refill()
            yield init, _checked(init, value)


def _checked(init: Initializer, value: np.ndarray) -> np.ndarray:
    if tuple(value.shape) != init.shape or value.dtype != init.dtype:
        raise ValueError(f"initializer {init.name}: computed {value.dtype}{list(value.shape)}, "
                         f"declared {init.dtype}{list(init.shape)}")
    return value


# ----------------------------------------------------------------------------- initial values
def initial_value(name: str, spec: WeightSpec, seed: int) -> np.ndarray:
    """The initial value of the weight ``name`` (float32, ``spec.shape``); depends only on its arguments."""
    import numpy as np

    if spec.init == "zeros":
        return np.zeros(spec.shape, np.float32)
    if spec.init == "ones":
        return np.ones(spec.shape, np.float32)
    if spec.init == "fill":
        return np.full(spec.shape, spec.fill, np.float32)
    std = init_std(spec)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    out = standard_normal(rng, tuple(spec.shape))
    out *= np.float32(std)
    return out


def standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 values of ``shape`` from ``rng``: 16 bits of its raw output per value, each
    picking one of the 65,536 equiprobable levels of :func:`_normal_levels` (little-endian on every
    machine, so the values are the same everywhere)."""
    import numpy as np

    levels = _normal_levels()
    out = np.empty(math.prod(shape), np.float32)
    for start in range(0, out.size, _CHUNK):  # in chunks: the raw draws stay small (and in cache)
        part = out[start:start + _CHUNK]
        raw = rng.bit_generator.random_raw((part.size + 3) // 4).astype("<u8", copy=False)
        np.take(levels, raw.view("<u2")[:part.size], out=part)
    return out.reshape(shape)


_CHUNK = 1 << 16  # values per draw of standard_normal: a multiple of 4, so chunking does not change them


@functools.cache
def _normal_levels() -> np.ndarray:
    """The standard normal's quantiles at (i + 1/2) / 65536, i = 0 .. 65535, as float32: the lower half computed,
    the upper half its mirror image (the quantiles are symmetric about 0)."""
    import statistics

    import numpy as np

    dist = statistics.NormalDist()
    lower = np.array([dist.inv_cdf((i + 0.5) / 65536) for i in range(32768)], np.float32)
    return np.concatenate([lower, -lower[::-1]])


# The standard deviation of each random initialisation (normal, mean 0), by WeightSpec.init.
_STD: dict[str, Callable[[WeightSpec], float]] = {
    "kaiming_fan_out": lambda spec: math.sqrt(2.0 / max(spec.fan_out, 1)),  # conv: torchvision's kaiming_normal_
    "he_normal": lambda spec: math.sqrt(2.0 / max(spec.fan_in, 1)),  # fan-in mode
    "small_normal": lambda spec: 0.01,  # fc: torchvision's normal_(0, 0.01)
}


def init_std(spec: WeightSpec) -> float:
    """The standard deviation of a randomly initialised weight (mean 0); KeyError for a constant one."""
    return _STD[spec.init](spec)


def initial_weights(graph: Graph, seed: int = 0, workers: int | None = None) -> dict[str, np.ndarray]:
    """Every weight of ``graph`` at its deterministic initial value, in graph order.

    Computed on ``workers`` threads (default: the usable CPUs); the values do not depend on it.
    """
    import numpy as np

    if seed < 0:
        raise ValueError("seed must be non-negative")
    tasks = tuple(Initializer(name, tuple(spec.shape), np.dtype(np.float32),
                              lambda name=name, spec=spec: initial_value(name, spec, seed),
                              costly=spec.init not in ("zeros", "ones"))
                  for name, spec, _ in graph.weight_specs())
    return {init.name: value for init, value in computed(tasks, workers)}
