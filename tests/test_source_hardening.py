"""Untrusted .net sources: linear-time lexing, confined imports, bounded reads, cheap limits checked before any
tree is built, and messages (never a traceback) for every hostile or unlucky input.

Time and memory are bounded relative to a same-size ordinary input, or by running the command in a child
process under a memory limit (RLIMIT_AS) and a timeout; no test asserts an absolute duration.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import cli_env

import netdsl
from netdsl import cli
from netdsl import syntax as S
from netdsl.errors import NetdslError, NetdslSyntaxError

REPO = Path(__file__).resolve().parent.parent
POSIX = os.name == "posix"
if POSIX:
    import resource
MEMORY_LIMIT = 768 * 1024 * 1024  # far above what checking any accepted source takes (about 150 MB)


def _limited(limit: int):
    def apply():  # runs in the child before exec
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def run_child(args: list[str], cwd: Path, timeout: float = 120, limit: int = MEMORY_LIMIT) -> tuple[int, str, str]:
    """``python ARGS`` in a child process under a memory limit -> (exit code, stdout, stderr)."""
    try:
        proc = subprocess.run([sys.executable, *args], cwd=cwd, env=cli_env(), capture_output=True,
                              timeout=timeout, preexec_fn=_limited(limit) if POSIX else None)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(args)[:200]}` did not finish in {timeout} s")
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def check(*args: str, cwd: Path, timeout: float = 120, limit: int = MEMORY_LIMIT) -> tuple[int, str, str]:
    return run_child(["-m", "netdsl", "check", *args], cwd, timeout, limit)


def check_in_process(path: str, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(["check", path])
    out = capsys.readouterr()
    return rc, out.out, out.err


NET = "network t {\n    input image: 3x8x8\n    relu\n%s    -> relu\n}\n"


# ----------------------------------------------------------------------------- linear-time lexing
_TIMING = """
import sys, time
from netdsl import syntax as S
S.parse("network t {\\n    input image: 3x8x8\\n}\\n")  # build the parser first
texts = {name: open(name, encoding="utf-8").read() for name in sys.argv[1:]}
best = dict.fromkeys(texts, float("inf"))
for _ in range(5):  # rounds interleave the files, so a burst of load elsewhere hits them all alike
    for name, text in texts.items():
        t0 = time.perf_counter()
        S.parse(text, name)
        best[name] = min(best[name], time.perf_counter() - t0)
for name, t in best.items():
    print(name, t)
"""


def _times(tmp_path: Path, files: dict[str, str], timeout: float = 90) -> dict[str, float]:
    """Seconds each source takes to parse (best of five, interleaved), measured in one child process."""
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    rc, out, err = run_child(["-c", _TIMING, *files], tmp_path, timeout=timeout)
    assert rc == 0, err
    return {name: float(t) for name, t in (line.split() for line in out.splitlines())}


CODE = "".join(f"    c{i}: conv 4 3x3 pad 1 -> bn -> relu\n" for i in range(300))  # the same in every file


def _with_block(block: str) -> str:
    """A network whose chain continues after ``block`` (comment lines) on a `->` line, after a fixed body."""
    return "network t {\n    input image: 3x8x8\n" + CODE + "    relu\n" + block + "    -> relu\n}\n"


def _blank(block: str) -> str:
    """``block`` with every comment line replaced by spaces of the same length: the plain, same-size input."""
    return "".join(" " * len(line) + "\n" for line in block.splitlines())


ADVERSARIAL = {
    "banner": "#" * 200 + "\n" + ("#" * 200 + "\n") * 50,
    "hashes_inside": "".join(f"# step {i}: see #{i} ## and # {'#' * (i % 7)} here\n" for i in range(1000)),
    "see_n": "".join(f"    # see #{i}\n" for i in range(16)) * 60,
    "long_block": ("# a comment with several words in it, and a few more words\n") * 20_000,
}


@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_comment_blocks_lex_in_linear_time(tmp_path, case):
    """Comment blocks full of `#` parse as fast as blank lines of the same size, at the top of a file and
    between the lines of a chain (where the lexer looks ahead for a continuation)."""
    block = ADVERSARIAL[case]
    files = {"comments.net": block + _with_block(block), "blank.net": _blank(block) + _with_block(_blank(block))}
    times = _times(tmp_path, files)
    assert times["comments.net"] < 4 * times["blank.net"] + 0.05, times


def test_comment_lexing_scales_linearly(tmp_path):
    """Four times the comments cost about four times as much (quadratic lexing would cost sixteen). The
    sizes make the comments' own cost (tenths of a second) dwarf the timer's noise."""
    line = "# see #1, #2 and ## #### ###### for the details\n"
    files = {"n.net": _with_block(line * 40_000), "4n.net": _with_block(line * 160_000),
             "none.net": _with_block("")}
    times = _times(tmp_path, files)
    base = times["none.net"]
    assert times["4n.net"] - base < 8 * max(times["n.net"] - base, 0.05) + 0.1, times


def test_continuations_after_comments_still_work():
    net = netdsl.load(textwrap.dedent("""\
        # header ## with ### hashes
        network t {   # a comment: see #2
            input image: 3x8x8
            conv 4 3x3 pad 1   # first ## layer
            # ## a comment line between a chain's lines, with (brackets) and -> arrows
            #
                -> bn    #
            ####
                -> relu
            residual<  # open
                conv 4 3x3 pad 1
                # a branch separator follows ## after this comment
              | conv 4 1x1
            >
            relu
        }
    """))
    assert [n.op.name for n in net.graph.nodes] == ["input", "conv", "bn", "relu", "conv", "conv", "add", "relu"]


def test_comment_lines_still_end_statements():
    net = netdsl.load("network t {\n    input image: 3x8x8\n    relu\n    # c -> d | e )\n    relu\n}\n")
    assert [n.name for n in net.graph.nodes] == ["image", "0", "1"]


def test_trailing_blanks_do_not_join_lines():
    """Spaces or tabs before a line break are not part of the break: the next line is a new statement."""
    net = netdsl.load("network t {  \n    input image: 3x8x8 \t \n    relu   \n    relu\t\n}\n")
    assert [n.name for n in net.graph.nodes] == ["image", "0", "1"]


def test_crlf_and_comments_keep_positions():
    with pytest.raises(NetdslSyntaxError) as e:
        netdsl.load("network t {\r\n    # ## x\r\n    input image: 3x8x8 \t\r\n    relu  \r\n    relu\r\n  @\r\n}\r\n")
    assert str(e.value).startswith("<string>:6:3: error: unexpected character '@'"), str(e.value)


def test_hash_inside_a_string_is_not_a_comment():
    module = S.parse('import "a#b.net"  # "c#d"\nimport "#"\n')
    assert [i.path for i in module.imports] == ["a#b.net", "#"]


# ----------------------------------------------------------------------------- cheap limits before trees
def test_a_flat_sum_of_500_terms_works():
    expr = " + ".join(["1"] * 500)
    net = netdsl.load(f"network t {{\n    input image: 3x8x8\n    conv {expr} 1x1\n}}\n")
    assert net.graph.nodes[1].shape == (500, 8, 8)
    net = netdsl.load(f"block b(c={expr}) {{\n    conv c 1x1\n}}\nnetwork t {{\n    input image: 3x8x8\n    b()\n}}\n")
    assert net.graph.nodes[1].shape == (500, 8, 8)


def test_an_overlong_expression_is_reported_at_its_place():
    expr = "+".join(["1"] * 5000)
    with pytest.raises(NetdslSyntaxError) as e:
        netdsl.load(f"network t {{\n    input image: 3x8x8\n    conv {expr} 1x1\n}}\n")
    first = str(e.value).splitlines()[0]
    assert first.startswith("<string>:3:") and "expression" in first, first


def test_deep_brackets_are_reported_at_the_deepest_bracket():
    text = "network t {\n    input image: 3x8x8\n    " + "(" * 300 + "relu" + ")" * 300 + "\n}\n"
    with pytest.raises(NetdslSyntaxError) as e:
        netdsl.load(text)
    first = str(e.value).splitlines()[0]
    assert first.startswith("<string>:3:") and "nesting is too deep" in first, first


def test_moderate_nesting_still_works():
    text = "network t {\n    input image: 3x8x8\n    " + "(" * 60 + "relu" + ")" * 60 + "\n}\n"
    assert len(netdsl.load(text).graph.nodes) == 2


HEAD = "network t {\n    input image: 3x8x8\n"


@pytest.fixture(scope="module")
def reference_time(tmp_path_factory) -> float:
    """Seconds `netdsl check` takes, in a child process, on a source of 50,000 tokens (half the limit)."""
    import time

    folder = tmp_path_factory.mktemp("reference")
    (folder / "ref.net").write_text(HEAD + "    relu\n" * 25_000 + "}\n")
    t0 = time.perf_counter()
    rc, _, err = check("ref.net", cwd=folder)
    assert rc == 0, err
    return time.perf_counter() - t0


@pytest.mark.parametrize("kind", ["sum", "chain", "chain_lines", "ref", "dims"])
def test_ten_megabyte_sources_fail_fast_in_bounded_memory(tmp_path, kind, reference_time):
    """10 MB of a sum, of a chain of layers (on one line or on continuation lines), of one long reference or
    size: rejected by a limit, under a memory cap, in no more time than parsing an accepted source of the
    largest allowed token count takes."""
    import time

    size = 10 * 1024 * 1024 - 200
    body = {
        "sum": "    b(" + ("1 +\n" * (size // 4)) + "1)\n",
        "chain": "    relu" + " -> relu" * (size // 8) + "\n",
        "chain_lines": "    relu\n" + "    -> relu\n" * (size // 12),
        "ref": "    @a" + ".b" * (size // 2) + "\n",
        "dims": "    conv 4 1" + "x1" * (size // 2) + "\n",
    }[kind]
    (tmp_path / "big.net").write_text(HEAD + body + "}\n")
    t0 = time.perf_counter()
    rc, out, err = check("big.net", cwd=tmp_path, timeout=max(60, 20 * reference_time))
    took = time.perf_counter() - t0
    assert rc == 1 and out == "", err
    assert "Traceback" not in err and "out of memory" not in err and "internal error" not in err, err
    assert err.startswith("big.net:"), err
    assert any(w in err for w in ("tokens", "line is longer", "expression")), err
    assert took < 4 * reference_time + 2, (took, reference_time)


def test_token_limit_message_names_the_limit(tmp_path):
    text = "network t {\n    input image: 3x8x8\n" + "    relu\n" * (S.MAX_TOKENS // 2 + 10) + "}\n"
    with pytest.raises(NetdslSyntaxError, match=f"more than {S.MAX_TOKENS:,} tokens"):
        S.parse(text, "big.net")
    dense = "network t {\n    input image: 3x8x8\n    relu" + "->relu" * (S.MAX_TOKENS // 2 + 10) + "\n}\n"
    with pytest.raises(NetdslSyntaxError, match=f"more than {S.MAX_TOKENS:,} tokens"):
        S.parse(dense, "dense.net")


def test_long_lines_are_rejected_before_lexing():
    text = "network t {\n    input image: 3x8x8\n    relu " + " " * S.MAX_LINE_CHARS + "\n}\n"
    with pytest.raises(NetdslSyntaxError) as e:
        S.parse(text, "wide.net")
    assert str(e.value).startswith("wide.net:3:1: error: line is longer than")


# ----------------------------------------------------------------------------- huge integer literals
@pytest.mark.parametrize("where", ["layer", "default", "size", "input", "repeat"])
def test_huge_integer_literals_are_diagnosed_at_the_literal(where, tmp_path, capsys):
    big = "9" * 5000
    text = {
        "layer": f"network t {{\n    input image: 3x8x8\n    conv {big} 1x1\n}}\n",
        "default": f"network t(c={big}) {{\n    input image: 3x8x8\n    conv c 1x1\n}}\n",
        "size": f"network t {{\n    input image: 3x8x8\n    conv 4 {big}x1\n}}\n",
        "input": f"network t {{\n    input image: 3x8x{big}\n}}\n",
        "repeat": f"network t {{\n    input image: 3x8x8\n    relu x {big}\n}}\n",
    }[where]
    (tmp_path / "big.net").write_text(text)
    rc, out, err = check_in_process(str(tmp_path / "big.net"), capsys)
    assert rc == 1 and out == "", err
    first = err.splitlines()[0]
    assert "internal error" not in err and "integer literal" in first and "5,000 digits" in first, err
    assert first.startswith(f"{tmp_path / 'big.net'}:"), first


@pytest.mark.parametrize("inner", ["9" * 5000, "9" * 99, "1+" * 3000 + "1", "-" * 3000 + "1"])
def test_huge_name_templates_are_diagnosed_at_the_label(inner):
    with pytest.raises(NetdslError) as e:
        netdsl.load(f'network t {{\n    input image: 3x8x8\n    "a{{{inner}}}": relu x 2 as i\n}}\n')
    assert str(e.value).startswith("<string>:3:5: error:"), str(e.value)


def test_integers_below_the_literal_limit_keep_their_messages():
    with pytest.raises(NetdslError, match="is over the limit of 10,000"):
        netdsl.load("network t {\n    input image: 3x8x8\n    relu x " + "9" * 60 + "\n}\n")


# ----------------------------------------------------------------------------- BOM
def test_a_utf8_bom_is_accepted(tmp_path, capsys):
    (tmp_path / "bom.net").write_bytes(b"\xef\xbb\xbfnetwork t {\r\n    input image: 3x8x8\r\n    relu\r\n}\r\n")
    rc, out, err = check_in_process(str(tmp_path / "bom.net"), capsys)
    assert rc == 0, err
    assert len(netdsl.load("\ufeffnetwork t {\n    input image: 3x8x8\n    relu\n}\n").graph.nodes) == 2


def test_columns_after_a_bom_are_unaffected(tmp_path, capsys):
    (tmp_path / "bom.net").write_bytes("\ufeffnetwrk t {\n}\n".encode())
    rc, _, err = check_in_process(str(tmp_path / "bom.net"), capsys)
    assert rc == 1 and err.startswith(f"{tmp_path / 'bom.net'}:1:1: error: unexpected `netwrk`"), err
    assert "\ufeff" not in err


# ----------------------------------------------------------------------------- reading files
@pytest.mark.skipif(not POSIX, reason="FIFOs and /dev/zero are POSIX")
def test_dev_zero_as_the_main_file_is_refused_without_reading(tmp_path):
    rc, out, err = check("/dev/zero", cwd=tmp_path, timeout=60, limit=256 * 1024 * 1024)
    assert rc == 1 and out == "" and err == "netdsl: error: /dev/zero: not a regular file (a device)\n", err


@pytest.mark.skipif(not POSIX, reason="FIFOs are POSIX")
def test_a_fifo_as_the_main_file_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.net")
    rc, out, err = check("pipe.net", cwd=tmp_path, timeout=60)
    assert rc == 1 and err == "netdsl: error: pipe.net: not a regular file (a named pipe)\n", err


def test_an_oversized_file_is_refused_after_reading_only_the_limit(tmp_path):
    with open(tmp_path / "huge.net", "wb") as f:  # sparse: 2 GB on paper, nothing on disk
        f.truncate(2 * 1024**3)
    rc, out, err = check("huge.net", cwd=tmp_path, timeout=60, limit=256 * 1024 * 1024)
    assert rc == 1 and err == "netdsl: error: huge.net: source is larger than 10 MiB\n", err


def test_a_missing_path_given_to_check_is_no_such_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("missing.txt", "missing", "dir/missing.net"):
        rc, out, err = check_in_process(name, capsys)
        assert rc == 1 and err == f"netdsl: error: {name}: no such file\n", err


def test_the_api_reads_a_one_line_name_as_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NetdslError, match="^netdsl: error: missing.txt: no such file$"):
        netdsl.load("missing.txt")
    net = netdsl.load("network t { input image: 3x4x4\nrelu }")  # source text still is source text
    assert net.path == "<string>"


def test_a_main_file_that_is_not_net_is_not_quoted(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("password = hunter2\n")
    rc, _, err = check_in_process(str(tmp_path / "notes.txt"), capsys)
    assert rc == 1 and "error:" in err and "hunter2" not in err, err
    (tmp_path / "latin.txt").write_bytes(b"secret caf\xe9\n")
    rc, _, err = check_in_process(str(tmp_path / "latin.txt"), capsys)
    assert rc == 1 and "not UTF-8" in err and "secret" not in err, err


# ----------------------------------------------------------------------------- imports
def _main(tmp_path: Path, import_path: str, name: str = "main.net") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'import "{import_path}"\nnetwork t {{\n    input image: 3x8x8\n    relu\n}}\n')
    return path


def _import_error(tmp_path: Path, import_path: str, capsys, name: str = "main.net") -> str:
    main = _main(tmp_path, import_path, name)
    rc, out, err = check_in_process(str(main), capsys)
    assert rc == 1 and out == "", err
    shown = import_path or '""'
    assert err.startswith(f"{main}:1:1: error: cannot import {shown}: "), err
    assert "Traceback" not in err and "internal error" not in err
    return err.splitlines()[0]


SECRET = "root:$6$secret-hash:19000:0:99999:7:::\n"


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink_file", "symlink_dir", "nested_dotdot"])
def test_imports_outside_the_importing_directory_are_refused(tmp_path, capsys, how):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.net").write_text(SECRET)
    (outside / "lib.net").write_text("block b(c) {\n    conv c 1x1\n}\n")
    project = tmp_path / "project"
    project.mkdir()
    target = {"absolute": str(outside / "secret.net"), "dotdot": "../outside/secret.net",
              "symlink_file": "link.net", "symlink_dir": "linked/secret.net", "nested_dotdot": "sub/../../x.net"}[how]
    if how == "symlink_file":
        (project / "link.net").symlink_to(outside / "secret.net")
    if how == "symlink_dir":
        (project / "linked").symlink_to(outside)
    first = _import_error(project, target, capsys)
    assert "outside the directory" in first, first
    _, _, err = check_in_process(str(project / "main.net"), capsys)
    assert "secret-hash" not in err and "root:" not in err, err


def test_a_library_cannot_escape_its_own_directory(tmp_path, capsys):
    """Each file's imports stay inside that file's directory: `lib/a.net` cannot reach `../b.net`."""
    (tmp_path / "b.net").write_text("block b(c) {\n    conv c 1x1\n}\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.net").write_text('import "../b.net"\n')
    main = _main(tmp_path, "lib/a.net")
    rc, _, err = check_in_process(str(main), capsys)
    assert rc == 1 and err.startswith(f"{tmp_path / 'lib' / 'a.net'}:1:1: error: cannot import ../b.net: "), err
    assert "outside the directory" in err


def test_imports_inside_the_tree_still_work(write_net):
    write_net("lib/sub/unit.net", "block unit(c) {\n    conv c 1x1\n}\n")
    write_net("lib/layers.net", 'import "sub/unit.net"\nimport "./sub/../sub/unit.net"\n')
    (write_net("lib/real.net", "block other(c) {\n    conv c 1x1\n}\n").parent / "alias.net").symlink_to("real.net")
    main = write_net("main.net", 'import "lib/layers.net"\nimport "lib/alias.net"\n'
                                 'network t {\n    input image: 3x8x8\n    unit(4)\n    other(2)\n}\n')
    assert [n.shape for n in netdsl.load(main).graph.nodes][-1] == (2, 8, 8)


@pytest.mark.parametrize("name", ["secret.txt", "secret", "secret.net.bak"])
def test_only_net_files_can_be_imported_and_nothing_of_them_is_quoted(tmp_path, capsys, name):
    (tmp_path / name).write_text(SECRET)
    first = _import_error(tmp_path, name, capsys)
    assert "not a .net file" in first, first
    _, _, err = check_in_process(str(tmp_path / "main.net"), capsys)
    assert "secret-hash" not in err


def test_a_net_symlink_to_another_kind_of_file_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text(SECRET)
    (tmp_path / "notes.net").symlink_to("notes.txt")
    first = _import_error(tmp_path, "notes.net", capsys)
    assert "not a .net file" in first and "secret" not in first, first


def test_an_empty_import_path(tmp_path, capsys):
    first = _import_error(tmp_path, "", capsys)
    assert "empty" in first and "directory" not in first, first


def test_an_import_of_a_directory(tmp_path, capsys):
    (tmp_path / "lib.net").mkdir()
    first = _import_error(tmp_path, "lib.net", capsys)
    assert "is a directory" in first, first


@pytest.mark.skipif(not POSIX, reason="FIFOs are POSIX")
def test_an_import_of_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.net")
    _main(tmp_path, "pipe.net")
    rc, _, err = check("main.net", cwd=tmp_path, timeout=60)
    assert rc == 1 and "main.net:1:1: error: cannot import pipe.net: not a regular file (a named pipe)" in err, err


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_an_import_of_a_device_is_refused_without_reading(tmp_path):
    (tmp_path / "zero.net").symlink_to("/dev/zero")  # outside the tree, and not a regular file either
    (tmp_path / "sub").mkdir()
    _main(tmp_path, "zero.net")
    rc, _, err = check("main.net", cwd=tmp_path, timeout=60, limit=256 * 1024 * 1024)
    assert rc == 1 and "main.net:1:1: error: cannot import zero.net: " in err, err
    assert "no such file" not in err


def test_an_oversized_import_is_reported_at_the_import(tmp_path, capsys):
    with open(tmp_path / "big.net", "wb") as f:
        f.truncate(S.MAX_SOURCE_BYTES + 1)
    first = _import_error(tmp_path, "big.net", capsys)
    assert "larger than 10 MiB" in first, first


def test_an_unreadable_import_is_reported_at_the_import(tmp_path, capsys, monkeypatch):
    (tmp_path / "locked.net").write_text("block b(c) {\n    conv c 1x1\n}\n")
    (tmp_path / "locked.net").chmod(0)
    if POSIX and os.geteuid() == 0:  # root reads every file: the denial root would not get is made by hand
        real_open = os.open

        def denied(path, flags, *args, **kwargs):
            if os.fspath(path).endswith("locked.net"):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", denied)
    first = _import_error(tmp_path, "locked.net", capsys)
    assert "cannot read" in first, first
