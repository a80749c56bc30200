"""Limits on one source file, each checked before the work it bounds: the bytes read, then (before the lexer
runs) line length and a lower bound of the token count, then (while lexing) the exact token count, then (on the
parse tree, before the syntax tree is built) how deep expressions and brackets nest.

A module of plain numbers, so that a command can check a value against them (``--arg``) without loading the
parser; :mod:`netdsl.syntax` enforces them. Elaboration's own limits are in :mod:`netdsl.elaborate.limits`.
"""

from __future__ import annotations

MAX_SOURCE_BYTES = 10 * 1024 * 1024
MAX_LINE_CHARS = 1_000_000  # also bounds the longest token, whose regular expression match costs memory
MAX_TOKENS = 100_000  # the largest network of the zoo has 700; parsing this many takes seconds
MAX_EXPR_DEPTH = 512  # operators nested in one expression: `1 + 1 + ... + 1` of 513 terms
MAX_NESTING = 100  # groups and composites nested in one another
MAX_LITERAL_DIGITS = 100  # any larger integer is over every limit of the later stages anyway
