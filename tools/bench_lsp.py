"""Latency of `netdsl lsp` over the real protocol: diagnostics and inlay hints after an edit.

Starts the server (``python -m netdsl lsp``) as an editor does, opens a network, and makes ``--edits`` edits
(each changes the class count, so every shape of the head changes). For each edit it times, from sending
``textDocument/didChange``, (a) the ``publishDiagnostics`` of that version and (b) the answer to an
``inlayHint`` request for the whole file sent right after the change. Prints the median and the spread.

    python tools/bench_lsp.py [networks/resnet152.net] [--edits 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from lsprotocol import types as T
from pygls.lsp.client import LanguageClient

from netdsl.machine import cpu_name

ROOT = Path(__file__).resolve().parent.parent



async def bench(path: Path, edits: int) -> tuple[list[float], list[float]]:
    client = LanguageClient("bench-lsp", "1")
    published: dict[int, float] = {}
    got_version = asyncio.Event()

    @client.feature(T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def on_diagnostics(params: T.PublishDiagnosticsParams):
        published[params.version or 0] = time.perf_counter()
        got_version.set()

    await client.start_io(sys.executable, "-m", "netdsl", "lsp", cwd=str(ROOT))
    await client.initialize_async(T.InitializeParams(capabilities=T.ClientCapabilities()))
    client.initialized(T.InitializedParams())
    uri = path.resolve().as_uri()
    text = path.read_text()
    whole = T.Range(T.Position(0, 0), T.Position(len(text.splitlines()) + 1, 0))
    client.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(uri, "netdsl", 1, text)))
    await client.text_document_inlay_hint_async(T.InlayHintParams(T.TextDocumentIdentifier(uri), whole))
    diag, hints = [], []
    for i in range(edits):
        version = i + 2
        new = text.replace("classes=1000", f"classes={1001 + i}")
        assert new != text, "the network has no `classes=1000` parameter to edit"
        got_version.clear()
        start = time.perf_counter()
        client.text_document_did_change(T.DidChangeTextDocumentParams(
            T.VersionedTextDocumentIdentifier(version=version, uri=uri),
            [T.TextDocumentContentChangeWholeDocument(new)]))
        answer = await client.text_document_inlay_hint_async(
            T.InlayHintParams(T.TextDocumentIdentifier(uri), whole))
        hints.append(time.perf_counter() - start)
        assert any(h.label == f"→ {1001 + i}" for h in answer or []), "the hints do not show the edit"
        while version not in published:
            await asyncio.wait_for(got_version.wait(), 30)
            got_version.clear()
        diag.append(published[version] - start)
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return diag, hints


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", default=str(ROOT / "networks" / "resnet152.net"))
    ap.add_argument("--edits", type=int, default=20)
    args = ap.parse_args()
    diag, hints = asyncio.run(bench(Path(args.file), args.edits))
    from importlib.metadata import version

    from netdsl.version import __version__

    versions = (f"netdsl {__version__}, pygls {version('pygls')}, lsprotocol {version('lsprotocol')}, "
                f"lark {version('lark')}, Python {platform.python_version()}")
    print(f"{os.path.basename(args.file)}: {args.edits} edits; {versions}; {cpu_name()} ({os.cpu_count()} CPUs)")
    for name, xs in (("diagnostics", diag), ("inlay hints", hints)):
        ms = sorted(x * 1000 for x in xs)
        print(f"  {name:12s} median {statistics.median(ms):6.1f} ms   min {ms[0]:6.1f}   max {ms[-1]:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
