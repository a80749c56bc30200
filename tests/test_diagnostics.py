"""Diagnostics pinned by golden files: tests/golden/diagnostics/<case>.net and the expected <case>.txt.

Each case runs ``netdsl check <case>.net`` (in-process, from the golden directory so that paths are
short and stable) and compares everything it printed on stderr with <case>.txt: location, message,
quoted source line, carets and notes. A case whose golden holds an ``error:`` must exit 1, others 0.

To accept new output after a deliberate change: ``NETDSL_UPDATE_GOLDEN=1 pytest tests/test_diagnostics.py``,
then review the diff of the .txt files.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

import netdsl
from netdsl import cli

GOLDEN = Path(__file__).resolve().parent / "golden" / "diagnostics"
CASES = sorted(p.stem for p in GOLDEN.glob("*.net"))
UPDATE = os.environ.get("NETDSL_UPDATE_GOLDEN") == "1"


def run_check(case: str, capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.chdir(GOLDEN)
    monkeypatch.delenv("NETDSL_DEBUG", raising=False)
    capsys.readouterr()
    rc = cli.main(["check", f"{case}.net"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_there_are_cases():
    assert len(CASES) >= 25
    assert all((GOLDEN / f"{c}.txt").exists() or UPDATE for c in CASES), "a case has no .txt golden"


@pytest.mark.parametrize("case", CASES)
def test_diagnostic_golden(case, capsys, monkeypatch):
    rc, out, err = run_check(case, capsys, monkeypatch)
    golden = GOLDEN / f"{case}.txt"
    if UPDATE:
        golden.write_text(err, encoding="utf-8")
    expected = golden.read_text(encoding="utf-8")
    if err != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True), err.splitlines(keepends=True),
                                            f"{case}.txt (expected)", f"{case}.net (actual stderr)"))
        pytest.fail(f"diagnostics of {case}.net differ from the golden file "
                    f"(NETDSL_UPDATE_GOLDEN=1 accepts them):\n{diff}", pytrace=False)
    assert "Traceback" not in err and "internal error" not in err
    assert rc == (1 if "error:" in err else 0)
    if rc == 0:
        assert out.startswith(f"{case}.net: ok:")


def test_api_raises_the_same_diagnostics(monkeypatch):
    """netdsl.load raises an error whose str() is what the CLI prints (less color)."""
    monkeypatch.chdir(GOLDEN)
    with pytest.raises(netdsl.SemanticError) as err:
        netdsl.load("several_errors.net")
    assert str(err.value) + "\n" == (GOLDEN / "several_errors.txt").read_text(encoding="utf-8")
    assert len(err.value.diagnostics) >= 4


def test_every_error_collected_in_one_run(capsys, monkeypatch):
    _, _, err = run_check("several_errors", capsys, monkeypatch)
    assert err.count(": error: ") >= 5


def test_color_output(monkeypatch):
    d = netdsl.load("network t {\n    input image: 3x7x7\n    conv 8 3x3 /3\n}\n").warnings[0]
    assert "\x1b[1;35mwarning\x1b[0m" in d.render(color=True)
    assert "\x1b" not in d.render(color=False)


def test_long_lines_are_quoted_around_the_span():
    src = "network t {\n    input image: 3x8x8\n    relu" + " -> relu" * 100 + " -> cnv\n}\n"
    with pytest.raises(netdsl.SemanticError) as err:
        netdsl.load(src)
    text = str(err.value)
    source_line, carets = text.splitlines()[1:3]
    assert source_line.startswith("    3 | ...") and source_line.endswith("-> cnv")
    assert len(source_line) < 170
    assert source_line.index("cnv") == carets.index("^^^")
