"""`netdsl lsp`: the real server over stdio, driven by a real LSP client (pytest-lsp), on zoo files."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

pytest.importorskip("pygls", reason="the language server needs the optional `lsp` extra (pygls)")
pytest_lsp = pytest.importorskip("pytest_lsp", reason="the language-server tests need pytest-lsp (the test extra)")
from lsprotocol import types as T  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ROOT / "networks"
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_lsp.fixture(scope="module", loop_scope="module",
                    config=ClientServerConfig(server_command=[sys.executable, "-m", "netdsl", "lsp"]))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(T.InitializeParams(
        capabilities=pytest_lsp.client_capabilities("visual-studio-code"), root_uri=NETWORKS.as_uri()))
    yield
    await lsp_client.shutdown_session()


_version = 0


def open_doc(client: LanguageClient, path: Path, text: str | None = None) -> str:
    global _version
    _version += 1
    uri = path.resolve().as_uri()
    client.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(
        uri=uri, language_id="netdsl", version=_version, text=path.read_text() if text is None else text)))
    return uri


def change(client: LanguageClient, uri: str, text: str) -> None:
    global _version
    _version += 1
    client.text_document_did_change(T.DidChangeTextDocumentParams(
        T.VersionedTextDocumentIdentifier(uri=uri, version=_version),
        [T.TextDocumentContentChangeWholeDocument(text=text)]))


async def diagnostics_where(client: LanguageClient, uri: str, predicate, timeout: float = 30):
    """Wait until the diagnostics published for ``uri`` satisfy ``predicate``; return them."""
    async def wait():
        while True:
            waiter = asyncio.ensure_future(client.wait_for_notification("textDocument/publishDiagnostics"))
            if uri in client.diagnostics and predicate(client.diagnostics[uri]):
                waiter.cancel()
                return client.diagnostics[uri]
            await waiter
    return await asyncio.wait_for(wait(), timeout)


def pos(text: str, needle: str, offset: int = 0, nth: int = 0) -> T.Position:
    """The position of the ``nth`` occurrence of ``needle`` in ``text`` (plus ``offset`` characters)."""
    at = -1
    for _ in range(nth + 1):
        at = text.index(needle, at + 1)
    line = text.count("\n", 0, at)
    return T.Position(line, at - (text.rfind("\n", 0, at) + 1) + offset)


def line_of(text: str, needle: str) -> int:
    return pos(text, needle).line


async def hints(client: LanguageClient, uri: str, lines: int = 10_000) -> list[T.InlayHint]:
    return await client.text_document_inlay_hint_async(T.InlayHintParams(
        T.TextDocumentIdentifier(uri), T.Range(T.Position(0, 0), T.Position(lines, 0)))) or []


# ---------------------------------------------------------------------- diagnostics
async def test_diagnostics_appear_with_exact_range_and_clear_after_a_fix(client: LanguageClient, tmp_path):
    good = (NETWORKS / "resnet18.net").read_text()
    path = tmp_path / "r18.net"
    path.write_text(good)
    uri = open_doc(client, path)
    assert list(await diagnostics_where(client, uri, lambda d: True)) == []
    bad = good.replace("fc: fc classes", "fc: fc classes bogus 3")
    change(client, uri, bad)
    found = await diagnostics_where(client, uri, lambda d: len(d) > 0)
    assert found[0].severity == T.DiagnosticSeverity.Error
    assert "bogus" in found[0].message
    start = found[0].range.start
    assert start.line == line_of(bad, "fc: fc classes bogus")
    line = bad.splitlines()[start.line]
    assert "bogus" in line[start.character:found[0].range.end.character + 8]
    change(client, uri, good)
    assert list(await diagnostics_where(client, uri, lambda d: len(d) == 0)) == []


async def test_call_chain_notes_are_related_information(client: LanguageClient, tmp_path):
    text = (NETWORKS / "resnet50.net").read_text().replace(
        "conv3: conv width*4 1x1 nobias", "conv3: conv width*4 3x3 nobias")
    path = tmp_path / "r50.net"
    path.write_text(text)
    uri = open_doc(client, path)
    found = await diagnostics_where(client, uri, lambda d: len(d) > 0)
    d = found[0]
    assert d.range.start.line == line_of(text, "residual<")
    assert d.related_information, d
    assert any("called from" in r.message for r in d.related_information)
    assert {r.location.range.start.line for r in d.related_information} & {line_of(text, "bottleneck(width, stride)")}


async def test_warnings_are_published_as_warnings(client: LanguageClient, tmp_path):
    text = """network w {
    input image: 3x8x8
    conv 4 3x3 /2
    conv 4 1x1
    output out
}
"""
    path = tmp_path / "w.net"
    path.write_text(text)
    uri = open_doc(client, path)
    import netdsl

    expected = netdsl.load(str(path)).warnings
    found = await diagnostics_where(client, uri, lambda d: True)
    assert [d.message for d in found if d.severity == T.DiagnosticSeverity.Warning] == \
        [w.message for w in expected]


# ---------------------------------------------------------------------- shapes
async def test_inlay_hint_shows_the_shape_after_conv1_of_resnet50(client: LanguageClient):
    path = NETWORKS / "resnet50.net"
    text = path.read_text()
    uri = open_doc(client, path)
    found = await hints(client, uri)
    by_line = {h.position.line: h.label for h in found}
    line = line_of(text, "conv1: conv 64 7x7")
    assert by_line[line] == "→ 64x112x112"
    assert found[[h.position.line for h in found].index(line)].position.character == len(text.splitlines()[line])
    assert by_line[line_of(text, "layer1: stage")] == "→ 256x56x56"


async def test_hover_on_a_layer_and_on_a_block_call(client: LanguageClient):
    path = NETWORKS / "resnet50.net"
    text = path.read_text()
    uri = open_doc(client, path)
    layer = await client.text_document_hover_async(T.HoverParams(T.TextDocumentIdentifier(uri),
                                                                 pos(text, "conv 64 7x7", 2)))
    value = layer.contents.value
    for want in ("**conv**", "64x112x112", "9,408", "118,013,952", "receptive field: 7", "conv1.weight"):
        assert want in value
    call = await client.text_document_hover_async(T.HoverParams(T.TextDocumentIdentifier(uri),
                                                                pos(text, "stage(64", 1)))
    value = call.contents.value
    assert "block stage(width, blocks, stride)" in value
    assert "output `256x56x56`" in value and "layer1.0.conv1" in value


# ---------------------------------------------------------------------- navigation
async def test_definition_of_a_block_call_a_ref_and_an_import(client: LanguageClient, tmp_path):
    path = NETWORKS / "resnet50.net"
    text = path.read_text()
    uri = open_doc(client, path)
    got = await client.text_document_definition_async(T.DefinitionParams(
        T.TextDocumentIdentifier(uri), pos(text, "stage(64", 2)))
    assert got.uri == uri and got.range.start.line == line_of(text, "block stage(")
    lib = tmp_path / "lib.net"
    lib.write_text("block twice(c) {\n    a: conv c 3x3 pad 1 -> relu\n    add(@a, @input)\n}\n")
    main = tmp_path / "main.net"
    main_text = ('import "lib.net"\n\nnetwork n {\n    input image: 4x8x8\n    twice(4)\n    output out\n}\n')
    main.write_text(main_text)
    muri = open_doc(client, main)
    got = await client.text_document_definition_async(T.DefinitionParams(
        T.TextDocumentIdentifier(muri), pos(main_text, "twice(4)", 1)))
    assert got.uri == lib.resolve().as_uri() and got.range.start.line == 0
    got = await client.text_document_definition_async(T.DefinitionParams(
        T.TextDocumentIdentifier(muri), pos(main_text, "lib.net", 1)))
    assert got.uri == lib.resolve().as_uri()
    luri = open_doc(client, lib)
    lib_text = lib.read_text()
    got = await client.text_document_definition_async(T.DefinitionParams(
        T.TextDocumentIdentifier(luri), pos(lib_text, "@a", 1)))
    assert got.range.start == T.Position(1, 4)


async def test_references_and_rename_of_a_block(client: LanguageClient):
    path = NETWORKS / "resnet50.net"
    text = path.read_text()
    uri = open_doc(client, path)
    refs = await client.text_document_references_async(T.ReferenceParams(
        text_document=T.TextDocumentIdentifier(uri), position=pos(text, "block bottleneck", 7),
        context=T.ReferenceContext(include_declaration=True)))
    assert sorted(r.range.start.line for r in refs) == [line_of(text, "block bottleneck")] + \
        [line_of(text, "bottleneck(width, stride)")] * 2
    edit = await client.text_document_rename_async(T.RenameParams(
        T.TextDocumentIdentifier(uri), pos(text, "bottleneck(width, stride)", 1), "bneck"))
    edits = edit.changes[uri]
    assert len(edits) == 3 and {e.new_text for e in edits} == {"bneck"}
    lines = text.splitlines()
    for e in edits:
        assert lines[e.range.start.line][e.range.start.character:e.range.end.character] == "bottleneck"


async def test_rename_of_a_label_renames_its_refs(client: LanguageClient):
    path = NETWORKS / "googlenet.net"
    text = path.read_text()
    if "@" not in text:
        pytest.fail("googlenet.net is expected to use @refs")
    uri = open_doc(client, path)
    at = text.index("@")
    name = text[at + 1:].split()[0].rstrip(",)").split(".")[0]
    edit = await client.text_document_rename_async(T.RenameParams(
        T.TextDocumentIdentifier(uri), pos(text, "@" + name, 1), "renamed"))
    edits = edit.changes[uri]
    lines = text.splitlines()
    assert len(edits) >= 2
    assert {lines[e.range.start.line][e.range.start.character:e.range.end.character] for e in edits} == {name}


async def test_document_symbols_and_folding(client: LanguageClient):
    path = NETWORKS / "resnet50.net"
    text = path.read_text()
    uri = open_doc(client, path)
    symbols = await client.text_document_document_symbol_async(T.DocumentSymbolParams(T.TextDocumentIdentifier(uri)))
    assert [s.name for s in symbols] == ["bottleneck", "stage", "resnet50"]
    assert "conv1" in [c.name for c in symbols[2].children]
    folds = await client.text_document_folding_range_async(T.FoldingRangeParams(T.TextDocumentIdentifier(uri)))
    block, end = line_of(text, "block bottleneck"), line_of(text, "> -> relu")
    assert {(f.start_line, f.end_line) for f in folds} >= {(block, end + 1), (line_of(text, "residual<"), end)}


# ---------------------------------------------------------------------- completion, formatting, tokens
async def test_completion_of_ops_options_blocks_and_labels(client: LanguageClient):
    path = NETWORKS / "resnet50.net"
    text = path.read_text()
    uri = open_doc(client, path)
    await hints(client, uri)  # the document is checked

    async def labels_at(p):
        got = await client.text_document_completion_async(T.CompletionParams(T.TextDocumentIdentifier(uri), p))
        items = got.items if isinstance(got, T.CompletionList) else got
        return {i.label: i for i in items}

    line = line_of(text, "maxpool 3x3")
    start = await labels_at(T.Position(line, 4))
    assert {"conv", "maxpool", "relu", "add", "bottleneck", "stage"} <= set(start)
    assert "conv OUT" in start["conv"].documentation.value
    assert start["stage"].insert_text == "stage(width, blocks, stride)"
    options = await labels_at(pos(text, "conv 64 7x7 /2 pad 3 nobias", len("conv 64 ")))
    assert {"pad", "groups", "nobias", "dilation"} <= set(options) and "conv" not in options


async def test_completion_of_labels_in_scope_and_imported_blocks(client: LanguageClient, tmp_path):
    lib = tmp_path / "blocks.net"
    lib.write_text("block twice(c, k=3) {\n    conv c 3x3 pad 1 -> relu\n}\n")
    good = 'import "blocks.net"\n\nnetwork n {\n    input image: 4x8x8\n    stem: conv 4 1x1\n    output o\n}\n'
    path = tmp_path / "m.net"
    path.write_text(good)
    uri = open_doc(client, path)
    await hints(client, uri)
    text = good.replace("    output o", "    add(@")  # being typed: the text does not parse
    change(client, uri, text)
    await diagnostics_where(client, uri, lambda d: len(d) > 0)
    got = await client.text_document_completion_async(T.CompletionParams(
        T.TextDocumentIdentifier(uri), pos(text, "add(@", 5)))
    items = got.items if isinstance(got, T.CompletionList) else got
    assert {"stem", "input"} <= {i.label for i in items}
    got = await client.text_document_completion_async(T.CompletionParams(
        T.TextDocumentIdentifier(uri), T.Position(4, 4)))
    items = {i.label: i for i in (got.items if isinstance(got, T.CompletionList) else got)}
    assert "imported from" in items["twice"].detail and "twice(c, k=3)" in items["twice"].detail


async def test_semantic_tokens_mark_ops_calls_labels_and_refs(client: LanguageClient):
    path = NETWORKS / "resnet50.net"
    text = path.read_text()
    uri = open_doc(client, path)
    got = await client.text_document_semantic_tokens_full_async(T.SemanticTokensParams(T.TextDocumentIdentifier(uri)))
    legend = ["keyword", "function", "macro", "property", "variable", "class", "parameter"]
    lines, line, col, tokens = text.splitlines(), 0, 0, {}
    data = got.data
    for i in range(0, len(data), 5):
        dl, dc, length, kind, _ = data[i:i + 5]
        line, col = line + dl, (col + dc if dl == 0 else dc)
        tokens[(line, col)] = (lines[line][col:col + length], legend[kind])
    conv1 = pos(text, "conv1: conv 64")
    assert tokens[(conv1.line, conv1.character)] == ("conv1", "property")
    assert tokens[(conv1.line, conv1.character + 7)] == ("conv", "keyword")
    stage = pos(text, "stage(64")
    assert tokens[(stage.line, stage.character)] == ("stage", "function")
    res = pos(text, "residual<")
    assert tokens[(res.line, res.character)] == ("residual", "macro")
    block = pos(text, "bottleneck(width, stride=1)")
    assert tokens[(block.line, block.character)] == ("bottleneck", "class")


async def test_formatting_gives_the_formatter_output(client: LanguageClient, tmp_path):
    from netdsl import fmt

    text = (NETWORKS / "resnet18.net").read_text()
    messy = text.replace("    conv1: conv", "  conv1:   conv", 1)
    assert messy != text
    path = tmp_path / "messy.net"
    path.write_text(messy)
    uri = open_doc(client, path, messy)
    edits = await client.text_document_formatting_async(T.DocumentFormattingParams(
        T.TextDocumentIdentifier(uri), T.FormattingOptions(tab_size=4, insert_spaces=True)))
    assert len(edits) == 1
    assert edits[0].new_text == fmt.format_source(messy, str(path))
    assert edits[0].range.start == T.Position(0, 0)


# ---------------------------------------------------------------------- robustness
async def test_malformed_documents_and_out_of_range_positions_do_not_crash(client: LanguageClient, tmp_path):
    path = tmp_path / "bad.net"
    texts = ["network {{{ ->", "", "\x00\x1b[31m", "network n {\n" + "(" * 5000 + "\n}\n",
             "block b( { conv -> -> \n", "network n { input x: 3x0x0 conv 3 3x3 output o }",
             "network n {\n    input image: 3x8x8\n    " + "residual<" * 300 + "\n}\n"]
    uri = open_doc(client, path, texts[0])
    for text in texts:
        change(client, uri, text)
        for p in (T.Position(0, 0), T.Position(10_000, 3), T.Position(0, 10_000), T.Position(2, 5)):
            ident = T.TextDocumentIdentifier(uri)
            await client.text_document_hover_async(T.HoverParams(ident, p))
            await client.text_document_definition_async(T.DefinitionParams(ident, p))
            await client.text_document_completion_async(T.CompletionParams(ident, p))
            await client.text_document_references_async(T.ReferenceParams(
                text_document=ident, position=p, context=T.ReferenceContext(True)))
            await client.text_document_rename_async(T.RenameParams(ident, p, "x"))
        await hints(client, uri)
        await client.text_document_semantic_tokens_full_async(T.SemanticTokensParams(T.TextDocumentIdentifier(uri)))
        await client.text_document_document_symbol_async(T.DocumentSymbolParams(T.TextDocumentIdentifier(uri)))
        await client.text_document_formatting_async(T.DocumentFormattingParams(
            T.TextDocumentIdentifier(uri), T.FormattingOptions(tab_size=4, insert_spaces=True)))
    found = await diagnostics_where(client, uri, lambda d: len(d) > 0)
    assert found[0].severity == T.DiagnosticSeverity.Error
    # a document not on disk (an unsaved buffer) that imports, and requests about a document never opened
    untitled = "untitled:Untitled-1"
    client.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(
        uri=untitled, language_id="netdsl", version=1, text='import "x.net"\nnetwork n {\n}\n')))
    found = await diagnostics_where(client, untitled, lambda d: len(d) > 0)
    assert "needs a file on disk" in found[0].message
    never = (tmp_path / "never.net").as_uri()
    assert await client.text_document_hover_async(T.HoverParams(T.TextDocumentIdentifier(never),
                                                                T.Position(0, 0))) is None
    assert await hints(client, never) == []
    # the server still answers
    good = NETWORKS / "resnet18.net"
    assert await hints(client, open_doc(client, good))


async def test_import_cycle_is_a_diagnostic_not_a_crash(client: LanguageClient, tmp_path):
    a, b = tmp_path / "a.net", tmp_path / "b.net"
    a.write_text('import "b.net"\n\nnetwork n {\n    input image: 3x8x8\n    conv 3 1x1\n    output out\n}\n')
    b.write_text('import "a.net"\n\nblock x() {\n    relu\n}\n')
    uri = open_doc(client, a)
    found = await diagnostics_where(client, uri, lambda d: len(d) > 0)
    assert any("import cycle" in d.message for d in found)
    buri = open_doc(client, b)
    found = await diagnostics_where(client, buri, lambda d: len(d) > 0)
    assert any("import cycle" in d.message for d in found)
    assert await client.text_document_hover_async(T.HoverParams(T.TextDocumentIdentifier(uri), T.Position(0, 9))) \
        is None


async def test_a_missing_import_does_not_hide_the_files_other_errors(client: LanguageClient, tmp_path):
    main = tmp_path / "main.net"
    text = ('import "gone.net"\n\nnetwork n {\n    input image: 3x8x8\n    helper(4)\n    convv 3 1x1\n'
            '    output out\n}\n')
    main.write_text(text)
    uri = open_doc(client, main)
    found = await diagnostics_where(client, uri, lambda d: len(d) >= 2)
    messages = [d.message for d in found]
    assert any("gone.net" in m for m in messages), messages
    assert any("unknown layer `convv`" in m for m in messages), messages
    assert not any("helper" in m for m in messages), messages  # gone.net may have defined it
    [convv] = [d for d in found if "convv" in d.message]
    assert convv.range.start == pos(text, "convv")


async def test_stale_results_are_dropped_latest_edit_wins(client: LanguageClient, tmp_path):
    good = (NETWORKS / "resnet152.net").read_text()
    path = tmp_path / "r152.net"
    path.write_text(good)
    uri = open_doc(client, path)
    for i in range(8):  # a burst of edits: only the last one's diagnostics may stay
        change(client, uri, good.replace("fc: fc classes", f"fc: fc classes bogus{i} 1"))
    change(client, uri, good.replace("fc: fc classes", "fc: fc 10"))
    found = await hints(client, uri)
    assert found and list(client.diagnostics.get(uri, [None])) == []
    assert {h.label for h in found} >= {"→ 10"}


async def test_a_slow_check_of_one_document_does_not_hold_up_another(client: LanguageClient, tmp_path):
    slow = tmp_path / "slow.net"
    slow.write_text("network slow {\n    input image: 8x16x16\n    (conv 8 3x3 pad 1 -> bn -> relu) x 6000\n"
                    "    output out\n}\n")
    events: list[str] = []
    slow_uri = open_doc(client, slow)
    slow_hints = asyncio.ensure_future(hints(client, slow_uri))
    slow_hints.add_done_callback(lambda _: events.append("slow"))
    path = NETWORKS / "resnet18.net"
    text = path.read_text()
    uri = open_doc(client, path)
    got = await client.text_document_hover_async(T.HoverParams(T.TextDocumentIdentifier(uri),
                                                               pos(text, "conv 64 7x7", 2)))
    events.append("hover")
    assert "64x112x112" in got.contents.value
    assert (await slow_hints)[0].label == "→ 8x16x16"
    assert events == ["hover", "slow"]  # answered while the other document was still being checked


async def test_every_error_of_the_cli_with_its_span(client: LanguageClient, tmp_path):
    import netdsl
    from netdsl.errors import NetdslError

    text = (NETWORKS / "resnet18.net").read_text().replace("fc: fc classes", "fc: fc clases").replace(
        "maxpool 3x3 /2 pad 1", "maxpool 3x3 /2 pad 1 bogus")
    path = tmp_path / "two.net"
    path.write_text(text)
    with pytest.raises(NetdslError) as info:
        netdsl.load(str(path))
    expected = sorted((d.span.line - 1, d.span.column - 1, d.span.end_line - 1, d.span.end_column - 1, d.message)
                      for d in info.value.diagnostics)
    assert len(expected) == 2
    uri = open_doc(client, path)
    found = await diagnostics_where(client, uri, lambda d: len(d) > 0)
    got = sorted((d.range.start.line, d.range.start.character, d.range.end.line, d.range.end.character,
                  d.message.split("\n")[0]) for d in found)
    assert got == expected


async def test_columns_are_utf16_code_units(client: LanguageClient, tmp_path):
    text = 'network n {\n    input image: 3x8x8\n    "a\U0001F600": conv 4 1x1\n    output o\n}\n'
    path = tmp_path / "utf16.net"
    path.write_text(text, encoding="utf-8")
    uri = open_doc(client, path)
    found = await diagnostics_where(client, uri, lambda d: len(d) > 0)
    assert "a name may hold" in found[0].message
    # `"a😀"` is 4 characters but 5 UTF-16 code units (the emoji is a surrogate pair)
    assert (found[0].range.start.character, found[0].range.end.character) == (4, 9)
    got = await client.text_document_hover_async(T.HoverParams(T.TextDocumentIdentifier(uri), T.Position(2, 12)))
    assert got is None  # the network did not elaborate: nothing to show, and no crash


async def test_saving_an_imported_file_rechecks_the_documents_that_import_it(client: LanguageClient, tmp_path):
    lib = tmp_path / "lib.net"
    lib.write_text("block twice(c) {\n    conv c 3x3 pad 1 -> relu\n}\n")
    main = tmp_path / "main.net"
    main.write_text('import "lib.net"\n\nnetwork n {\n    input image: 4x8x8\n    twice(4)\n    output out\n}\n')
    uri = open_doc(client, main)
    assert list(await diagnostics_where(client, uri, lambda d: True)) == []
    luri = open_doc(client, lib)
    lib.write_text("block twice(c) {\n    conv c 3x3 pad 1 -> relu bogus\n}\n")
    client.text_document_did_save(T.DidSaveTextDocumentParams(T.TextDocumentIdentifier(luri)))
    found = await diagnostics_where(client, uri, lambda d: len(d) > 0)
    assert "bogus" in found[0].message and "lib.net:2:" in found[0].message
    assert found[0].related_information[0].location.uri == luri


async def test_hover_on_a_ref_shows_the_labelled_element_and_its_shape(client: LanguageClient):
    path = NETWORKS / "googlenet.net"
    text = path.read_text()
    uri = open_doc(client, path)
    got = await client.text_document_hover_async(T.HoverParams(T.TextDocumentIdentifier(uri),
                                                               pos(text, "@inception4a", 2)))
    label_line = line_of(text, "inception4a: inception_module(") + 1
    assert got.contents.value == (f"`@inception4a`: the element labelled `inception4a` (line {label_line}), "
                                  f"output `512x14x14`")
