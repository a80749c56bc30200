"""`netdsl fmt` and netdsl.fmt.format_source: the canonical layout, comments kept, the command's modes.

The properties (idempotence, comments, unchanged meaning, unparsable files untouched) over generated and mutated
sources are in tests/test_fmt_properties.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli_env

from netdsl import cli
from netdsl.errors import NetdslSyntaxError
from netdsl.fmt import format_source
from netdsl.syntax import parse

REPO = Path(__file__).resolve().parent.parent
NETWORKS = REPO / "networks"


def run(*argv: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(list(argv))
    finally:
        sys.stdin = saved
    return rc, out.getvalue(), err.getvalue()


# ----------------------------------------------------------------------------- the zoo
def test_the_zoo_is_formatted():
    rc, out, err = run("fmt", "--check", str(NETWORKS))
    assert rc == 0, err
    assert err == "" and out == ""


def test_readme_and_language_examples_are_formatted():
    """The ```netdsl examples of README.md and docs/language.md that parse are in the canonical layout."""
    fence = re.compile(r"```netdsl\n(.*?)```", re.S)
    checked = 0
    for doc in (REPO / "README.md", REPO / "docs" / "language.md"):
        for m in fence.finditer(doc.read_text(encoding="utf-8")):
            try:
                formatted = format_source(m[1])
            except NetdslSyntaxError:
                continue  # an example of an error
            assert formatted == m[1], f"{doc.name}: an example is not formatted:\n{m[1]}"
            checked += 1
    assert checked >= 10


# ----------------------------------------------------------------------------- the layout
@pytest.mark.parametrize("source, expected", [
    # spacing around `->`, `:`, `,`, `=`, operators; one space between layer arguments
    ("network n(c=1){\ninput   image :3x8x8\nconv   8  3x3 pad 1->relu   ->  fc c\noutput y\n}\n",
     "network n(c=1) {\n    input image: 3x8x8\n    conv 8 3x3 pad 1 -> relu -> fc c\n    output y\n}\n"),
    # arithmetic: spaced in expressions, tight inside a layer's arguments (spaces separate them there)
    ("block b(c, k=3, d = c*2) {\n conv c * 2+1 k pad k // 2 /(c//2) -> f(c+1, k = -1) x (c-1) if(c>1)\n}\n",
     "block b(c, k=3, d=c * 2) {\n    conv c*2+1 k pad k//2 /(c//2) -> f(c + 1, k=-1) x (c - 1) if (c > 1)\n}\n"),
    # an output with a reference is spaced around `=`
    ("network n {\n input x: 3x8x8\n a: relu\n output y=@a if 1\n}\n",
     "network n {\n    input x: 3x8x8\n    a: relu\n    output y = @a if 1\n}\n"),
    # a body on one line gets one statement a line
    ("block b() { relu }\n", "block b() {\n    relu\n}\n"),
    # inline composites: no space inside the brackets, ` | ` between branches
    ("block b() {\n  residual<  conv 8 3x3 pad 1|identity  > -> seq< relu >x 2\n}\n",
     "block b() {\n    residual<conv 8 3x3 pad 1 | identity> -> seq<relu> x 2\n}\n"),
    # a multi-line composite: branches aligned after `| `, `>` on a line of its own
    ("block b() {\ninception< a: relu\n| b: conv 8 1x1\n   -> relu\n  |c: relu >\n}\n",
     "block b() {\n    inception<\n        a: relu\n      | b: conv 8 1x1\n            -> relu\n"
     "      | c: relu\n    >\n}\n"),
    # nested composites and groups indent from where their branch starts
    ("block b() {\n inception<\n a: relu\n | b: relu -> inception<\n c: relu\n | d: relu\n >\n >\n"
     " g: (\n relu\n relu)\n}\n",
     "block b() {\n    inception<\n        a: relu\n      | b: relu -> inception<\n            c: relu\n"
     "          | d: relu\n        >\n    >\n    g: (\n        relu\n        relu\n    )\n}\n"),
    # trailing commas: added when `)` starts a line, removed when it does not
    ("block b(a, c,) {\n relu\n}\nblock d(a,\n c\n) {\n b(1,\n 2,)\n}\n",
     "block b(a, c) {\n    relu\n}\nblock d(a,\n    c,\n) {\n    b(1,\n        2)\n}\n"),
    # blank lines: at most one, none at the start, after `{` or before `}`; one newline at the end
    ("\n\n\nblock b() {\n\n\n relu\n\n\n\n relu\n\n}\n\n\n\nblock c() {\n relu\n}\n\n\n",
     "block b() {\n    relu\n\n    relu\n}\n\nblock c() {\n    relu\n}\n"),
    # CRLF line ends and tabs
    ("block b() {\r\n\trelu\t->\trelu\r\n}\r\n", "block b() {\n    relu -> relu\n}\n"),
])
def test_layout(source, expected):
    assert format_source(source) == expected
    assert format_source(expected) == expected


def test_comments_stay_where_they_were():
    source = ("# header\n\n"
              "block b(c) {   # trailing after `{`\n"
              "      # own line, indented with the code below\n"
              "    inception<          # after `<`\n"
              "        a: relu # a\n"
              "        # before a continuation line\n"
              "      | b: relu\n"
              "            # before an arrow line\n"
              "            -> relu   # b\n"
              "        # at the end of the last branch\n"
              "    >\n"
              "} # after `}`\n"
              "# the end\n")
    expected = ("# header\n\n"
                "block b(c) {  # trailing after `{`\n"
                "    # own line, indented with the code below\n"
                "    inception<   # after `<`\n"  # aligned with the next line's
                "        a: relu  # a\n"
                "      # before a continuation line\n"
                "      | b: relu\n"
                "            # before an arrow line\n"
                "            -> relu  # b\n"
                "        # at the end of the last branch\n"
                "    >\n"
                "}  # after `}`\n"
                "# the end\n")
    assert format_source(source) == expected


def test_trailing_comments_of_consecutive_lines_align():
    source = "network n {\n input x: 3x8x8 # in\n conv 8 3x3 pad 1 # conv\n relu\n fc 10 # fc\n}\n"
    assert format_source(source) == ("network n {\n    input x: 3x8x8    # in\n    conv 8 3x3 pad 1  # conv\n"
                                      "    relu\n    fc 10  # fc\n}\n")


def test_alignment_stops_before_a_line_would_pass_120_characters():
    long = "x" * 90
    source = f"network n {{\n input x: 3x8x8 # {long}\n conv 8 3x3 pad 1 -> relu -> relu -> relu -> relu # c\n}}\n"
    out = format_source(source).splitlines()
    assert out[1] == f"    input x: 3x8x8  # {long}"  # not pushed right by the longer line below
    assert max(map(len, out)) <= 120


def test_a_hash_in_a_string_is_not_a_comment():
    source = 'import   "lib#1.net"   # c\n'
    assert format_source(source) == 'import "lib#1.net"  # c\n'


def test_a_syntax_error_is_the_parser_s():
    bad = "network n {\n    conv 8 3x3 ->\n"
    with pytest.raises(NetdslSyntaxError) as fmt_error:
        format_source(bad, "bad.net")
    with pytest.raises(NetdslSyntaxError) as parse_error:
        parse(bad, "bad.net")
    assert str(fmt_error.value) == str(parse_error.value)
    assert str(fmt_error.value).startswith("bad.net:3:1: error: ") or "bad.net:2:" in str(fmt_error.value)


# ----------------------------------------------------------------------------- the command
UGLY = "network n {\ninput x: 3x8x8\n   conv 8 3x3 pad 1->relu # c\n}\n"
PRETTY = "network n {\n    input x: 3x8x8\n    conv 8 3x3 pad 1 -> relu  # c\n}\n"


def test_fmt_rewrites_in_place_keeping_the_mode(tmp_path):
    f = tmp_path / "a.net"
    f.write_text(UGLY)
    f.chmod(0o640)
    rc, out, err = run("fmt", str(f))
    assert rc == 0, err
    assert f.read_text() == PRETTY
    assert stat.S_IMODE(f.stat().st_mode) == 0o640
    assert f"reformatted {f}" in err
    assert [p.name for p in tmp_path.iterdir()] == ["a.net"]  # no temporary file left
    rc, out, err = run("fmt", str(f))  # already formatted: nothing to say
    assert (rc, out, err) == (0, "", "")


def test_check_names_the_files_and_writes_nothing(tmp_path):
    (tmp_path / "sub").mkdir()
    ugly, pretty = tmp_path / "sub" / "a.net", tmp_path / "b.net"
    ugly.write_text(UGLY)
    pretty.write_text(PRETTY)
    (tmp_path / "notes.txt").write_text(UGLY)  # not a .net file: a folder stands for its .net files only
    rc, out, err = run("fmt", "--check", str(tmp_path))
    assert rc == 1
    assert err.splitlines() == [f"would reformat {ugly}"]
    assert ugly.read_text() == UGLY
    assert run("fmt", "--check", str(pretty))[0] == 0


def test_diff_prints_a_unified_diff(tmp_path):
    f = tmp_path / "a.net"
    f.write_text(UGLY)
    rc, out, err = run("fmt", "--diff", str(f))
    assert rc == 0, err
    assert out.startswith(f"--- {f}\n+++ {f}\n@@ ")
    assert ("-input x: 3x8x8\n-   conv 8 3x3 pad 1->relu # c\n"
            "+    input x: 3x8x8\n+    conv 8 3x3 pad 1 -> relu  # c\n") in out
    assert f.read_text() == UGLY
    rc, out, err = run("fmt", "--diff", "--check", str(f))
    assert rc == 1 and out.startswith("---")


@pytest.mark.parametrize("argv", [["fmt"], ["fmt", "-"]])
def test_standard_input_to_standard_output(argv):
    rc, out, err = run(*argv, stdin=UGLY.encode())
    assert (rc, out, err) == (0, PRETTY, "")
    rc, out, err = run(*argv, "--check", stdin=UGLY.encode())
    assert rc == 1 and out == "" and "would reformat <stdin>" in err


def test_a_syntax_error_is_reported_like_check_and_the_file_left_alone(tmp_path):
    f = tmp_path / "bad.net"
    bad = "network n {\n   input x: 3x8x8\n   conv 8 3x3 pad (1)\n}\n"
    f.write_text(bad)
    before = f.stat()
    rc, out, err = run("fmt", str(f))
    rc_check, _, err_check = run("check", str(f))
    assert rc == rc_check == 1
    assert err == err_check
    assert f"{f}:3:" in err and "^" in err
    assert f.read_text() == bad and f.stat().st_mtime_ns == before.st_mtime_ns
    rc, out, err = run("fmt", stdin=bad.encode())
    assert rc == 1 and out == "" and "<stdin>:3:" in err


def test_other_files_are_still_formatted_after_an_error(tmp_path):
    bad, good = tmp_path / "a.net", tmp_path / "b.net"
    bad.write_text("network n {\n")
    good.write_text(UGLY)
    rc, out, err = run("fmt", str(bad), str(good))
    assert rc == 1
    assert good.read_text() == PRETTY
    assert f"{bad}:" in err


def test_a_missing_file_is_an_error(tmp_path):
    rc, out, err = run("fmt", str(tmp_path / "none.net"))
    assert rc == 1 and "no such file" in err


def test_fmt_loads_neither_onnx_nor_numpy():
    """`netdsl fmt` (which an editor may run on every save) imports no ONNX, ONNX Runtime or numpy."""
    code = ("import sys, json, netdsl.cli as c; rc = c.main(['fmt', '--check', 'networks']); "
            "print(rc, json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('onnx', 'onnxruntime', 'numpy', 'netdsl') and not m.startswith('netdsl.errors'))))")
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    rc, loaded = proc.stdout.split(" ", 1)
    loaded = json.loads(loaded)
    assert rc == "0"
    assert "netdsl.fmt" in loaded
    assert not [m for m in loaded if m.split(".")[0] in ("onnx", "onnxruntime", "numpy")], loaded
    assert not [m for m in loaded if m.startswith("netdsl.cli.") and m not in ("netdsl.cli.common",
                                                                               "netdsl.cli.fmt")], loaded


def test_a_file_is_written_atomically(tmp_path, monkeypatch):
    """The rewrite goes through netdsl.files: a failure while writing leaves the old file whole, and is reported."""
    import netdsl.files as files

    f = tmp_path / "a.net"
    f.write_text(UGLY)

    def full_disk(path, data):
        def write(out):
            out.write(data[:5])
            raise OSError(28, "No space left on device")
        files.write_with(path, write)

    monkeypatch.setattr(files, "write_bytes", full_disk)
    rc, out, err = run("fmt", str(f))
    assert rc == 1
    assert "No space left on device" in err and "internal error" not in err
    assert f.read_text() == UGLY
    assert [p.name for p in tmp_path.iterdir()] == ["a.net"]
