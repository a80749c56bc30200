"""`netdsl lsp` without its optional dependency: a clear message, no traceback."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = ("import sys\n"
           "for name in ('pygls', 'pygls.lsp', 'pygls.lsp.server', 'pygls.uris', 'lsprotocol', 'lsprotocol.types'):\n"
           "    sys.modules[name] = None  # as if not installed\n"
           "from netdsl.cli import main\n"
           "sys.exit(main(['lsp']))\n")


def test_lsp_without_pygls_says_how_to_install_it():
    r = subprocess.run([sys.executable, "-c", BLOCKED], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert 'pip install "netdsl[lsp]"' in r.stderr and "pygls" in r.stderr
    assert "Traceback" not in r.stderr
