"""Limits on what a program may expand to, so that runaway input stops with an error instead of exhausting
memory, and the exception that stops elaboration when one is hit."""

from __future__ import annotations

MAX_CALL_DEPTH = 64
MAX_REPEAT = 10_000
MAX_NODES = 1_000_000
MAX_TENSOR_ELEMENTS = 2**31 - 1
MAX_PARAMS = 2**31 - 1  # 8 GiB of fp32 weights
MAX_INT = 2**62


class Fatal(Exception):
    """Stops elaboration: a runaway limit was hit (and reported) and continuing could exhaust memory."""
