#!/usr/bin/env python3
"""Keep the documentation's examples true: run every example of README.md and docs/*.md and rewrite (or check)
the output they show.

Examples are fenced blocks:

* ```console: lines ``$ COMMAND`` each followed by the exact output of that command (stdout and stderr as a
  terminal shows them), run from the repository root;
* ```sh: commands only (a line ending in ``\\`` continues on the next); each must exit 0.

A block that cannot run in CI (a GPU, a photo, a pip install, minutes of benchmark, timings) is preceded by
the line ``<!-- doc-test: skip: REASON -->`` (the last non-blank line before its opening fence). A ```netdsl
block whose preceding line names a file (``For this `bad.net`:``) is written to that file first, so the
examples after it can use it.

Each document runs in a fresh scratch directory holding a copy of the repository's ``networks/`` (commands
may write there without touching the repository), with ``$NETDSL_CACHE_DIR`` in it, ``PATH`` led by this
Python's ``bin`` and a fixed terminal width. Shown and real outputs are compared after :func:`normalise`,
which blanks only what legitimately varies between machines and runs: timings, the scratch directory,
version numbers, the CPU's name and the thread count.

    python tools/update_docs.py            # rewrite the shown outputs from real runs
    python tools/update_docs.py --check    # exit 1 with a unified diff where a shown output is stale
    python tools/update_docs.py README.md docs/runtime.md   # some files only

tests/test_docs.py runs the same checks, one test per example.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SKIP = re.compile(r"^\s*<!-- doc-test: skip: (?P<reason>\S.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
NAMED_FILE = re.compile(r"`(?P<name>[\w.-]+\.net)`")
COLUMNS = "100"
TIMEOUT = 300


@dataclass
class Block:
    """One fenced example: ``path:line`` of its opening fence, its language, its body lines (indent removed)."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    indent: str
    body: list[str]
    skip: str | None = None  # the reason, when marked
    files: dict[str, str] = field(default_factory=dict)  # netdsl sources written before it runs

    @property
    def id(self) -> str:
        try:
            rel = self.path.resolve().relative_to(REPO)
        except ValueError:
            rel = Path(self.path.name)
        return f"{rel}:{self.line}"


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path`` in order (console, sh and the netdsl files they use)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    out: list[Block] = []
    files: dict[str, str] = {}
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group("lang"):
            if m:  # an untagged block: skip to its end
                i = _close(lines, i, m.group("indent"))
            i += 1
            continue
        indent, lang = m.group("indent"), m.group("lang")
        end = _close(lines, i, indent)
        body = [ln[len(indent):] if ln.startswith(indent) else ln.lstrip() for ln in lines[i + 1:end]]
        before = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
        skip = SKIP.match(before)
        if lang == "netdsl":
            named = NAMED_FILE.search(before)
            if named:
                files[named.group("name")] = "\n".join(body) + "\n"
        elif lang in ("console", "sh"):
            out.append(Block(path, i + 1, lang, indent, body, skip.group("reason") if skip else None, dict(files)))
        i = end + 1
    return out


def skip_markers(path: Path) -> list[tuple[int, str]]:
    """(line, problem) for every skip marker not directly before a console or sh block, or without a reason."""
    lines = path.read_text(encoding="utf-8").split("\n")
    problems = []
    for n, ln in enumerate(lines):
        if "doc-test:" not in ln:
            continue
        if not SKIP.match(ln):
            problems.append((n + 1, "malformed; write <!-- doc-test: skip: REASON -->"))
            continue
        nxt = next((x for x in lines[n + 1:] if x.strip()), "")
        m = FENCE.match(nxt)
        if not m or m.group("lang") not in ("console", "sh"):
            problems.append((n + 1, "not followed by a ```console or ```sh block"))
    return problems


def _close(lines: list[str], start: int, indent: str) -> int:
    for j in range(start + 1, len(lines)):
        if lines[j].strip() == "```":
            return j
    raise SystemExit(f"{start + 1}: unclosed code fence")


# ----------------------------------------------------------------------------- running
def commands(block: Block) -> list[tuple[str, list[str]]]:
    """A console block's (command, shown output lines) pairs; a sh block's commands with no output."""
    if block.lang == "sh":
        joined, cmds = "", []
        for ln in block.body:
            joined += ln[:-1] + " " if ln.endswith("\\") else ln
            if not ln.endswith("\\"):
                if joined.strip() and not joined.lstrip().startswith("#"):
                    cmds.append((joined.strip(), []))
                joined = ""
        return cmds
    cmds: list[tuple[str, list[str]]] = []
    for ln in block.body:
        if ln.startswith("$ "):
            cmds.append((ln[2:], []))
        elif cmds:
            cmds[-1][1].append(ln)
        elif ln.strip():
            raise ValueError(f"{block.id}: output before the first `$ ` command line")
    return cmds


class Scratch:
    """A scratch directory for one document: a copy of networks/, a netdsl cache, the environment to run in."""

    def __init__(self, root: Path | None = None):
        self._tmp = None if root else tempfile.TemporaryDirectory(prefix="netdsl-docs-")
        self.root = Path(root or self._tmp.name).resolve()
        shutil.copytree(REPO / "networks", self.root / "networks", dirs_exist_ok=True)
        bindir = str(Path(sys.executable).parent)
        self.env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "COLUMNS": COLUMNS,
                    "LINES": "50", "NETDSL_CACHE_DIR": str(self.root / ".cache"), "NO_COLOR": "1",
                    "TERM": "dumb", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        for key in ("FORCE_COLOR", "CLICOLOR_FORCE"):
            self.env.pop(key, None)

    def run(self, command: str) -> tuple[int, list[str]]:
        """Run ``command`` with bash in the scratch directory: (exit status, output lines, trailing blanks cut)."""
        proc = subprocess.run(["bash", "-c", command], cwd=self.root, env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        lines = [ln.rstrip() for ln in proc.stdout.split("\n")]
        while lines and not lines[-1]:
            lines.pop()
        return proc.returncode, lines

    def close(self) -> None:
        if self._tmp:
            self._tmp.cleanup()


def run_block(block: Block, scratch: Scratch) -> tuple[list[str], list[str]]:
    """(shown, real) body lines of ``block``: real is the shown block with each command's output replaced.
    A sh command that fails shows in ``real`` as a line ``# exit N: ...``."""
    for name, text in block.files.items():
        (scratch.root / name).write_text(text, encoding="utf-8")
    real: list[str] = []
    for command, _shown in commands(block):
        status, output = scratch.run(command)
        if block.lang == "console":
            real += [f"$ {command}", *output]
        elif status != 0:
            real += [f"# exit {status}: {command}", *output[-20:]]
    shown = block.body if block.lang == "console" else []
    return shown, real if block.lang == "console" else real


# ----------------------------------------------------------------------------- comparing
_NORMALISE = [
    (re.compile(r"\b\d+(?:\.\d+)?(?: ?)(?:ms|µs|us|ns|s)\b"), "<time>"),  # 153 ms, 1.0 s, 0.81 s
    (re.compile(r"\b\d{1,3}(?:,\d{3})*(?:\.\d+)? (?:images/s)\b"), "<rate>"),
    (re.compile(r"\b(netdsl|ort|onnxruntime|onnx|numpy|python|Python|lark|rich|pygls|lsprotocol|TensorRT"
                r"(?: for RTX)?) \d+(?:\.\d+)+\w*"), r"\1 <version>"),
    (re.compile(r"\bon [^,\n]+?, (opt \w+, )?\d+ threads\b"), r"on <cpu>, \1<n> threads"),
    (re.compile(r"\(AMD [^)]*\)|\(Intel[^)]*\)"), "(<cpu>)"),
]


def normalise(lines: list[str], scratch: Path | None = None) -> list[str]:
    """Lines with what legitimately varies blanked: timings, the scratch directory, versions, CPU names."""
    out = []
    for ln in lines:
        if scratch is not None:
            ln = ln.replace(str(scratch) + os.sep, "").replace(str(scratch), ".")
        for pattern, repl in _NORMALISE:
            ln = pattern.sub(repl, ln)
        out.append(ln.rstrip())
    return out


def difference(block: Block, shown: list[str], real: list[str], scratch: Path | None = None) -> str:
    """A unified diff of the shown and the real output after normalising, or '' when they agree."""
    a, b = normalise(shown, scratch), normalise(real, scratch)
    if a == b:
        return ""
    return "\n".join(difflib.unified_diff(a, b, f"{block.id} (shown)", f"{block.id} (real run)", lineterm=""))


def rewrite(path: Path, updates: dict[int, list[str]]) -> None:
    """Replace the bodies of the blocks opening at the given lines (body lines without indent)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    for start in sorted(updates, reverse=True):
        indent = FENCE.match(lines[start - 1]).group("indent")
        end = _close(lines, start - 1, indent)
        lines[start:end] = [indent + ln if ln else ln for ln in updates[start]]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)


def check_document(path: Path, update: bool = False, log=print) -> list[str]:
    """Run every example of ``path``; return the diffs of those whose shown output is stale (and of sh
    commands that fail). With ``update``, console blocks are rewritten from the real runs."""
    scratch = Scratch()
    diffs, updates = [], {}
    try:
        for block in blocks(path):
            if block.skip:
                continue
            log(f"{block.id}: {block.lang}, {len(commands(block))} command(s)")
            shown, real = run_block(block, scratch)
            diff = difference(block, shown, real, scratch.root)
            if diff:
                diffs.append(diff)
                if update and block.lang == "console":
                    updates[block.line] = _unscratch(real, scratch)
    finally:
        scratch.close()
    if update and updates:
        rewrite(path, updates)
    return diffs


def _unscratch(lines: list[str], scratch: Scratch) -> list[str]:
    root = str(scratch.root)
    return [ln.replace(root + os.sep, "").replace(root, ".").rstrip() for ln in lines]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", type=Path, help="markdown files (default: README.md and docs/*.md)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 and print a diff where stale")
    args = p.parse_args(argv)
    stale = rewritten = 0
    for path in args.files or documents():
        for problem_line, problem in skip_markers(path):
            print(f"{path}:{problem_line}: doc-test marker {problem}", file=sys.stderr)
            stale += 1
        diffs = check_document(path, update=not args.check, log=lambda m: print(m, file=sys.stderr))
        for d in diffs:
            print(d)
        failed = [d for d in diffs if "(real run)" in d.split("\n")[1] and "# exit " in d]
        stale += len(diffs) if args.check else len(failed)
        rewritten += 0 if args.check else len(diffs) - len(failed)
    if not args.check:
        print(f"{rewritten} example(s) rewritten", file=sys.stderr)
    print(f"{stale} example(s) {'stale' if args.check else 'failing (sh commands)'}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
