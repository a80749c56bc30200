"""Source text travels with the spans that point into it, and rendering cannot drive a terminal."""

from __future__ import annotations

import dataclasses

import pytest

import netdsl
from netdsl.errors import Diagnostic, SourceFile, Span, visible
from netdsl.syntax import parse


def _error(source: str, path: str = "<string>") -> str:
    with pytest.raises(netdsl.NetdslError) as e:
        parse(source, path)
    return str(e.value)


def test_each_parse_quotes_its_own_text():
    # the same path parsed twice with different text: each error quotes the text it came from
    first = _error("network a {\n    input x: 3x8x8\n    conv 8 3x3 ?\n}\n", "same.net")
    second = _error("network b {\n    input y: 3x8x8\n    relu ?\n}\n", "same.net")
    assert "    3 |     conv 8 3x3 ?" in first
    assert "    3 |     relu ?" in second
    assert "conv" not in second


def test_a_span_keeps_its_source_and_compares_by_position():
    src = SourceFile("f.net", "line one\nline two\n")
    span = Span(src, 2, 6, 2, 9)
    assert span.path == "f.net" and span.source is src and span.quoted_line() == "line two"
    assert span == Span("f.net", 2, 6, 2, 9) and hash(span) == hash(Span("f.net", 2, 6, 2, 9))
    assert span.at(1, 1, 1, 5).quoted_line() == "line one"
    assert Span("f.net", 2, 6, 2, 9).quoted_line() is None  # no text: nothing to quote


def test_semantic_errors_quote_the_text_given_as_a_string():
    with pytest.raises(netdsl.NetdslError) as e:
        netdsl.load("network t {\n    input image: 3x8x8\n    frobnicate 3\n}\n")
    assert "    3 |     frobnicate 3" in str(e.value)


def test_control_characters_in_a_quoted_line_are_escaped_and_carets_follow():
    src = SourceFile("f.net", "a\x1b[2J\tb\x9b31m\x9d0;title\x07\x08 bad\n")
    line = src.line(1)
    col = line.index("bad") + 1
    text = Diagnostic("error", "oops", Span(src, 1, col, 1, col + 3)).render()
    quoted, carets = text.splitlines()[1:3]
    assert "\x1b" not in text and "\x9b" not in text and "\x9d" not in text and "\x07" not in text
    assert quoted.endswith("a\\x1b[2J b\\x9b31m\\x9d0;title\\x07\\x08 bad")
    assert carets.index("^") == quoted.index("bad") and carets.count("^") == 3


def test_control_characters_in_messages_and_notes_are_escaped():
    d = Diagnostic("error", "unknown layer `\x1b]0;pwned\x07`", Span("x\x1b.net", 1, 1, 1, 2),
                   notes=("see \x1b[31mhere",))
    text = d.render()
    assert "\x1b" not in text and "\x07" not in text
    assert "x\\x1b.net:1:1: error: unknown layer `\\x1b]0;pwned\\x07`" in text
    assert "note: see \\x1b[31mhere" in text


def test_colour_codes_netdsl_adds_are_kept():
    text = Diagnostic("warning", "careful \x1b", None).render(color=True)
    assert "\x1b[1;35mwarning\x1b[0m" in text and "careful \\x1b" in text


def test_visible_keeps_tab_and_newline():
    assert visible("a\tb\nc") == "a\tb\nc"
    assert visible("a\nb", newlines=False) == "a\\x0ab"
    assert visible("\x00\x7f\x85") == "\\x00\\x7f\\x85"


def test_graph_is_immutable_and_carries_its_source_hash():
    net = netdsl.load("network t {\n    input image: 3x8x8\n    conv 4 3x3\n}\n")
    graph = net.graph
    assert len(graph.source_hash) == 64
    with pytest.raises(dataclasses.FrozenInstanceError):
        graph.source_hash = "changed"
    assert isinstance(graph.nodes, tuple) and isinstance(graph.warnings, tuple)
