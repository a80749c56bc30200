"""The commands that need no model (`--help`, `check`, `summary`) start without onnx, onnxruntime or
ml_dtypes: a process runs each and reports the modules it loaded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import REPO, cli_env

HEAVY = ("onnx", "onnxruntime", "ml_dtypes")
PROBE = """
import json, sys
from netdsl.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as e:
    rc = e.code
print(json.dumps([rc, sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})]), file=sys.stderr)
"""


def loaded_modules(*argv: str) -> tuple[int, list[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=set(HEAVY)), *argv], env=cli_env(),
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    rc, modules = json.loads(proc.stderr.strip().splitlines()[-1])
    return rc, modules


@pytest.mark.parametrize("argv", [("--help",), ("check", "-q", "networks/resnet50.net"),
                                  ("summary", "networks/resnet50.net"), ("cache", "--help")],
                         ids=["help", "check", "summary", "cache-help"])
def test_light_commands_load_no_onnx(argv):
    rc, modules = loaded_modules(*argv)
    assert rc == 0
    assert modules == []


def test_probe_sees_onnx_when_a_command_loads_it(tmp_path):
    """The probe itself is sound: `compile` does load onnx, and the probe reports it."""
    rc, modules = loaded_modules("compile", "networks/lenet5.net", "-q", "-o", str(tmp_path / "m.onnx"))
    assert rc == 0
    assert "onnx" in modules and "ml_dtypes" in modules


def test_a_named_command_loads_its_own_module_only():
    """`netdsl run ...` registers the run command alone; with no command named, every command is there."""
    from netdsl.cli import MODULE_OF, build_parser

    def commands(parser) -> set[str]:
        return {name for action in parser._subparsers._group_actions for name in action.choices}

    everything = commands(build_parser(["--help"]))
    assert everything == set(MODULE_OF)
    for name, module in MODULE_OF.items():
        mine = {n for n, m in MODULE_OF.items() if m == module}
        assert commands(build_parser([name, "x"])) == mine


def test_run_loads_no_other_command_module(tmp_path):
    code = ("import sys, netdsl.cli as c; rc = c.main(['run', 'networks/lenet5.net']); "
            "print(rc, sorted(m for m in sys.modules if m.startswith('netdsl.cli.')), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.stderr.splitlines()[-1] == "0 ['netdsl.cli.common', 'netdsl.cli.run']"
