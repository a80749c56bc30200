"""Property tests: whatever bytes a .net file holds, `netdsl check` answers with exit 0 (a valid network) or 1 (a
diagnostic), never an internal error, a traceback or a hang.

Three sources of input: random bytes, random sequences of the language's tokens (bare and inside a network), and
the zoo's networks with random lines and characters deleted, inserted and duplicated. Each runs `check` in this
process, with its output captured; the examples are derandomized, so every run tries the same inputs. Each input
is bounded in time (hypothesis' deadline) and in memory (the peak of Python's allocations while it is checked,
traced with tracemalloc).
"""

from __future__ import annotations

import contextlib
import io
import os
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netdsl import cli

NETWORKS = Path(__file__).resolve().parent.parent / "networks"
ZOO = {p.name: p.read_text(encoding="utf-8") for p in sorted(NETWORKS.glob("*.net"))}

MEMORY_LIMIT = 128 * 2**20  # inputs are a few KB; a zoo network checks within about 1 MiB of allocations
FUZZ = settings(derandomize=True, deadline=timedelta(seconds=20), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def check_bytes(folder: Path, data: bytes) -> int:
    """`netdsl check` on a file holding ``data``: exit 0 or 1, and never an internal error."""
    path = folder / "case.net"
    path.write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    saved = os.environ.pop("NETDSL_DEBUG", None)
    tracemalloc.start()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(["check", str(path)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        if saved is not None:
            os.environ["NETDSL_DEBUG"] = saved
    assert peak < MEMORY_LIMIT, (f"checking {len(data)} bytes took {peak} bytes of memory", data[:500])
    text = err.getvalue()
    assert rc in (0, 1), (rc, text[:2000], data[:500])
    assert "internal error" not in text and "Traceback" not in text, (text[:2000], data[:500])
    assert "nests too deeply" not in text and "out of memory" not in text, (text[:2000], data[:500])
    if rc == 1:
        assert "error" in text, (text[:2000], data[:500])
    else:
        assert out.getvalue().startswith(f"{path}: ok: "), out.getvalue()
    return rc


# ----------------------------------------------------------------------------- random bytes
INTERESTING = [b"#", b"\n", b"\r\n", b"\t", b" ", b"\xef\xbb\xbf", b"\x00", b"\xff", b"{", b"}", b"->", b"|", b"<",
               b">", b"(", b")", b'"', b"@", b"x", b"9" * 40, b"\xe9", b"\xe2\x80\xa8"]


@settings(FUZZ, max_examples=250)
@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(INTERESTING)), max_size=60))
def test_random_bytes(folder, parts):
    check_bytes(folder, b"".join(parts))


# ----------------------------------------------------------------------------- random tokens
TOKENS = ["network", "block", "import", "input", "output", "x", "as", "if", "{", "}", "(", ")", "<", ">", "|", "->",
          ",", ":", "=", "@a", "@image", "@b.c", "+", "-", "*", "//", "%", "/", "==", "!=", "<=", ">=", "0", "1", "2",
          "3x3", "1x1", "3x8x8", "2.5", "1e3", '"lib.net"', '"n{i}"', '"{i + 1}"', "conv", "relu", "bn", "fc",
          "maxpool", "avgpool", "global", "flatten", "pad", "groups", "residual", "inception", "scale", "concat",
          "add", "mul", "t", "c", "i", "image", "a", "b", "same", "# c", "# see #1 ##", "99999999999999999999",
          "9" * 200, "9" * 4400]
SEPARATORS = [" ", " ", " ", "\n", "\n    ", "", "\r\n", "\t", "  # note ## \n"]


@st.composite
def token_sources(draw) -> bytes:
    tokens = draw(st.lists(st.sampled_from(TOKENS), max_size=80))
    seps = draw(st.lists(st.sampled_from(SEPARATORS), min_size=len(tokens), max_size=len(tokens)))
    body = "".join(t + s for t, s in zip(tokens, seps, strict=True))
    if draw(st.booleans()):
        body = "network t {\n    input image: 3x8x8\n    " + body + "\n}\n"
    if draw(st.booleans()):
        body = "block b(c, k=3) {\n    conv c k pad k // 2 -> relu\n}\n" + body
    return body.encode("utf-8")


@settings(FUZZ, max_examples=250)
@given(token_sources())
def test_random_tokens(folder, data):
    check_bytes(folder, data)


# ----------------------------------------------------------------------------- mutated zoo networks
SNIPPETS = ["#", "##", "->", "|", "<", ">", "(", ")", "{", "}", "x", "x 2", "0", "9" * 30, "@", ",", ":", "=", "\n",
            "\r", "\t", " ", "/", "//", "-", "+", "*", '"', "\ufeff", "é", "if 0", "as i", "9" * 4400]
LINES = ["#" * 200 + "\n", "    # see #1 and #2 ## ### #### #####\n", "    conv " + "9" * 4400 + " 1x1\n",
         "    relu" + " -> relu" * 300 + "\n", "    conv " + " + ".join(["1"] * 600) + " 1x1\n",
         "    " + "(" * 150 + "relu" + ")" * 150 + "\n", "\n", "    -> relu\n", "    | relu\n", "    >\n", "}\n"]


@st.composite
def mutated_zoo(draw) -> bytes:
    name = draw(st.sampled_from(sorted(ZOO)))
    lines = ZOO[name].splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 6))):
        if not lines:
            lines = ["\n"]
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["delete_line", "duplicate_line", "move_line", "insert_line", "delete_chars",
                                     "insert", "duplicate_chars"]))
        line = lines[i]
        if kind == "insert_line":
            lines.insert(i, draw(st.sampled_from(LINES)))
        elif kind == "delete_line":
            del lines[i]
        elif kind == "duplicate_line":
            lines.insert(i, line)
        elif kind == "move_line":
            lines.insert(draw(st.integers(0, len(lines))), lines.pop(i))
        else:
            a = draw(st.integers(0, len(line)))
            b = draw(st.integers(a, min(len(line), a + 12)))
            if kind == "delete_chars":
                lines[i] = line[:a] + line[b:]
            elif kind == "insert":
                lines[i] = line[:a] + draw(st.sampled_from(SNIPPETS)) + line[a:]
            else:
                lines[i] = line[:b] + line[a:b] + line[b:]
    return "".join(lines).encode("utf-8")


@settings(FUZZ, max_examples=150)
@given(mutated_zoo())
def test_mutated_zoo_networks(folder, data):
    check_bytes(folder, data)


def test_the_zoo_itself_checks(folder):
    """The unmutated inputs pass: the properties above are not met by rejecting everything."""
    for name, text in ZOO.items():
        assert check_bytes(folder, text.encode("utf-8")) == 0, name
