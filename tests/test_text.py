"""Text from files made safe to show: control characters escaped, rich markup inert."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from netdsl.text import plain, rich_safe


@pytest.mark.parametrize(("raw", "shown"), [
    ("resnet50", "resnet50"),
    ("conv\u00e9 \u5377\u79ef", "conv\u00e9 \u5377\u79ef"),  # letters of any script stay as they are
    ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # OSC: retitles the terminal
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),  # CSI: colours
    ("a\nb\tc\rd", "a\\nb\\tc\\rd"),  # line breaks would forge extra message lines
    ("del\x7f c1\x9b", "del\\x7f c1\\x9b"),  # DEL, and C1's single-byte CSI
    ("abc\u202edcba", "abc\\u202edcba"),  # right-to-left override
    ("zero\u200bwidth", "zero\\u200bwidth"),
    ("\ud800", "\\ud800"),  # a lone surrogate (from a file decoded with surrogateescape)
])
def test_plain_escapes_control_and_invisible_characters(raw, shown):
    assert plain(raw) == shown


def test_plain_cuts_long_text_and_accepts_any_object():
    assert plain("x" * 50, limit=10) == "xxxxxxx..."
    assert plain("short", limit=10) == "short"
    assert plain(ValueError("bad\x1bname")) == "bad\\x1bname"


@pytest.mark.parametrize("raw", ["[bold]x[/bold]", "[/]", "[link=https://example.com]click[/link]",
                                 "a\\[b]", "\x1b[31m[red]x", "trailing\\"])
def test_rich_safe_text_prints_literally_inside_markup(raw):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system=None, highlight=False, width=200)
    console.print(f"[bold]{rich_safe(raw)}[/bold]", end="")
    assert out.getvalue() == plain(raw)
