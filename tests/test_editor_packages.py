"""The VS Code extension under editors/vscode: its manifest, language configuration and client."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VSCODE = ROOT / "editors" / "vscode"


def test_extension_grammar_is_the_textmate_grammar():
    assert (VSCODE / "syntaxes" / "netdsl.tmLanguage.json").read_bytes() == \
        (ROOT / "editors" / "textmate" / "netdsl.tmLanguage.json").read_bytes()


def test_manifest_names_files_that_exist_and_starts_netdsl_lsp():
    manifest = json.loads((VSCODE / "package.json").read_text())
    lang = manifest["contributes"]["languages"][0]
    assert lang["extensions"] == [".net"] and (VSCODE / lang["configuration"]).is_file()
    grammar = manifest["contributes"]["grammars"][0]
    assert grammar["language"] == lang["id"] and (VSCODE / grammar["path"]).is_file()
    assert json.loads((VSCODE / grammar["path"]).read_text())["scopeName"] == grammar["scopeName"]
    assert (VSCODE / manifest["main"]).is_file() and "vscode-languageclient" in manifest["dependencies"]
    assert manifest["contributes"]["configuration"]["properties"]["netdsl.server.command"]["default"] == \
        ["netdsl", "lsp"]
    config = json.loads((VSCODE / "language-configuration.json").read_text())
    assert config["comments"] == {"lineComment": "#"}
    assert ["{", "}"] in config["brackets"] and ["(", ")"] in config["brackets"] and ["<", ">"] in config["brackets"]


def test_client_script_is_valid_javascript():
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    r = subprocess.run(["node", "--check", str(VSCODE / "extension.js")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "TransportKind.stdio" in (VSCODE / "extension.js").read_text()
