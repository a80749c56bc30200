"""The documentation's examples run: every ```console and ```sh block of README.md and docs/*.md not marked
``<!-- doc-test: skip: REASON -->`` is executed (tools/update_docs.py: a scratch directory per document with a
copy of networks/, the ```netdsl files the text names), and each console block's shown output must be what the
commands print, after blanking only timings, scratch paths, versions and CPU names. A stale example fails with
a unified diff; ``python tools/update_docs.py`` rewrites the shown outputs from real runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import update_docs  # noqa: E402

EXAMPLES = [b for doc in update_docs.documents() for b in update_docs.blocks(doc) if not b.skip]


@pytest.fixture(scope="module")
def scratches():
    """One scratch directory per document, shared by its examples in order (a later example may use what an
    earlier one wrote, as a reader following the text would)."""
    made: dict[Path, update_docs.Scratch] = {}
    yield lambda path: made.setdefault(path, update_docs.Scratch())
    for s in made.values():
        s.close()


@pytest.mark.parametrize("block", EXAMPLES, ids=lambda b: b.id)
def test_example(block, scratches):
    scratch = scratches(block.path)
    shown, real = update_docs.run_block(block, scratch)
    diff = update_docs.difference(block, shown, real, scratch.root)
    if diff:
        pytest.fail(f"{block.id}: the shown output is not what the commands print "
                    f"(python tools/update_docs.py rewrites it):\n{diff}", pytrace=False)


def test_examples_are_found_and_markers_are_well_formed():
    for doc in update_docs.documents():
        assert update_docs.skip_markers(doc) == [], doc
    ids = [b.id for b in EXAMPLES]
    assert any(i.startswith("README.md:") for i in ids)
    assert sum(b.lang == "console" for b in EXAMPLES) >= 5
    every = [b for doc in update_docs.documents() for b in update_docs.blocks(doc)]
    assert all(b.skip.strip() for b in every if b.skip is not None)


def _copy_with_edit(tmp_path: Path, edit) -> tuple[Path, str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("```console\n$ netdsl check networks/resnet50.net\n")
    end = readme.index("```\n", start + 10) + 4
    original = readme[start:end]
    doc = tmp_path / "example.md"
    skipped = "<!-- doc-test: skip: an example of a skipped block -->\n```console\n$ netdsl nonsense\nhello\n```\n"
    doc.write_text("Checking a network:\n\n" + edit(original) + "\nand a skipped one:\n\n" + skipped, encoding="utf-8")
    return doc, original


def test_an_edited_output_fails_with_a_diff_and_the_tool_restores_it(tmp_path):
    doc, original = _copy_with_edit(tmp_path, lambda text: text.replace("25,557,032 params", "25,557,033 params"))
    (diff,) = update_docs.check_document(doc, log=lambda m: None)
    assert "--- example.md:3 (shown)" in diff and "+++ example.md:3 (real run)" in diff
    assert "-networks/resnet50.net: ok: network resnet50, 175 layers, 25,557,033 params" in diff
    assert "+networks/resnet50.net: ok: network resnet50, 175 layers, 25,557,032 params" in diff
    assert doc.read_text(encoding="utf-8").count("25,557,033") == 1  # check mode writes nothing
    assert update_docs.main([str(doc), "--check"]) == 1
    update_docs.check_document(doc, update=True, log=lambda m: None)
    assert original in doc.read_text(encoding="utf-8")
    assert update_docs.check_document(doc, log=lambda m: None) == []
    assert update_docs.main([str(doc), "--check"]) == 0


def test_normalising_blanks_only_what_varies(tmp_path):
    lines = ["compile 153 ms, engine preparation 1.5 s", "ort 1.32.0 on AMD EPYC 7B13, opt all, 2 threads",
             f"wrote {tmp_path}/a.onnx", "netdsl 0.1.0, python 3.11.7"]
    assert update_docs.normalise(lines, tmp_path) == [
        "compile <time>, engine preparation <time>", "ort <version> on <cpu>, opt all, <n> threads",
        "wrote a.onnx", "netdsl <version>, python <version>"]
    # counts, sizes and names stay: they are what an example shows
    kept = ["25,557,032 params", "wrote resnet50.html: network resnet50, 45,194 bytes", "max abs 0.00104"]
    assert update_docs.normalise(kept) == kept


def test_a_failing_sh_command_is_reported(tmp_path):
    doc = tmp_path / "sh.md"
    doc.write_text("```sh\nnetdsl check networks/resnet18.net\nnetdsl check networks/missing.net\n```\n",
                   encoding="utf-8")
    (diff,) = update_docs.check_document(doc, log=lambda m: None)
    assert "+# exit 1: netdsl check networks/missing.net" in diff


def test_a_misplaced_marker_is_reported(tmp_path):
    doc = tmp_path / "m.md"
    doc.write_text("<!-- doc-test: skip: no block follows -->\n\ntext\n\n<!-- doc-test: skip -->\n```sh\ntrue\n```\n",
                   encoding="utf-8")
    assert [line for line, _ in update_docs.skip_markers(doc)] == [1, 5]
