"""Text that came from a file, made safe to show.

Names, labels and metadata inside an untrusted ``.onnx`` (or any input file) can hold terminal escape
sequences (which would retitle, recolour or rewrite the user's terminal) and rich markup (which rich
would interpret, or fail on). Everything such a file contributes to a message goes through one of:

* :func:`plain` for plain-text messages (exceptions, ``print``): control characters become visible
  escapes, so the text shows what the file holds and cannot drive the terminal;
* :func:`rich_safe` for text handed to rich (``console.print``, tables): :func:`plain`, then rich's
  markup characters escaped.
"""

from __future__ import annotations

import unicodedata

# Format characters that reorder or hide text on screen (bidirectional overrides and isolates,
# zero-width joiners): shown escaped, as in "Trojan Source" reviews.
_INVISIBLE = frozenset("\u061c\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                       "\u2060\u2066\u2067\u2068\u2069\ufeff")


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch == "\n":
        return "\\n"
    if ch == "\t":
        return "\\t"
    if ch == "\r":
        return "\\r"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def _unsafe(ch: str) -> bool:
    return ch in _INVISIBLE or unicodedata.category(ch) in ("Cc", "Cs")


def plain(text: object, limit: int | None = None) -> str:
    """``text`` with every control character (C0, DEL, C1), lone surrogate and invisible reordering
    character written as a visible escape (``\\x1b``, ``\\n``, ``\\u202e``); other text, non-ASCII
    letters included, is unchanged. ``limit``: keep at most that many characters of the result,
    marking a cut with ``...``.
    """
    s = text if isinstance(text, str) else str(text)
    if not any(_unsafe(ch) for ch in s):
        out = s
    else:
        out = "".join(_escape(ch) if _unsafe(ch) else ch for ch in s)
    if limit is not None and len(out) > limit:
        out = out[:max(limit - 3, 0)] + "..."
    return out


def rich_safe(text: object, limit: int | None = None) -> str:
    """:func:`plain` text with rich markup escaped, for ``console.print`` and rich tables."""
    from rich.markup import escape

    return escape(plain(text, limit))
