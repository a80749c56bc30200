"""The Language Server Protocol front of :mod:`netdsl.lsp.document`, on pygls 2 and lsprotocol.

Checks run in a thread pool, one at a time per document and the newest text wins: an edit that arrives while a
check runs makes that check's result stale, and it is dropped when it comes back (diagnostics are published
only for the latest version). Requests for one document never wait for another document's check; requests
that need the current results (inlay hints, hover, ...) wait for the current version's check of their own
document only. No request or notification can end the server: a handler that fails answers ``None`` and logs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from ..lazy import lazy_import
from ..version import __version__
from .document import Analysis, Problem, analyze

pygls_server = lazy_import("pygls.lsp.server", extra="lsp", purpose="the language server (netdsl lsp)")
uris = lazy_import("pygls.uris", extra="lsp", purpose="the language server (netdsl lsp)")
types = lazy_import("lsprotocol.types", extra="lsp", purpose="the language server (netdsl lsp)")

log = logging.getLogger("netdsl.lsp")
DEBOUNCE_S = 0.01  # edits closer together than this are checked once
TOKEN_TYPES = ["keyword", "function", "macro", "property", "variable", "class", "parameter"]


class NetdslServer(pygls_server.LanguageServer):
    def __init__(self) -> None:
        super().__init__("netdsl", __version__)
        self.results: dict[str, Analysis] = {}  # uri -> latest finished analysis
        self.parsed: dict[str, Analysis] = {}  # uri -> latest analysis whose text parsed (for completion)
        self.pending: dict[str, asyncio.Future] = {}  # uri -> analysis of the latest version, when running
        self.versions: dict[str, int] = {}  # uri -> latest version seen
        self.pool = ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2)),
                                       thread_name_prefix="netdsl-check")

    def schedule(self, uri: str, version: int) -> None:
        self.versions[uri] = version
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        old = self.pending.get(uri)
        if old is not None and not old.done():  # waiters on the old version now wait for this one
            future.add_done_callback(lambda f, o=old: o.done() or o.set_result(f.result()))
        self.pending[uri] = future
        loop.create_task(self._check(uri, version, future))

    async def _check(self, uri: str, version: int, future: asyncio.Future) -> None:
        await asyncio.sleep(DEBOUNCE_S)
        if self.versions.get(uri) != version:
            return  # a newer edit came: its check answers the waiters
        try:
            doc = self.workspace.get_text_document(uri)
            text, path = doc.source, _path(uri)
            result = await asyncio.get_running_loop().run_in_executor(self.pool, analyze, text, path)
        except Exception as e:  # noqa: BLE001 - a check never takes the server down
            log.exception("check of %s failed", uri)
            result = Analysis(_path(uri), "", problems=[Problem("error", f"netdsl: internal error: {e}",
                                                                 ((0, 0), (0, 0)), None)])
        if self.versions.get(uri) != version:
            return  # stale: a newer version is being checked
        self.results[uri] = result
        if result.module is not None:
            self.parsed[uri] = result
        if not future.done():
            future.set_result(result)
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            uri=uri, version=version, diagnostics=[_diagnostic(p, result) for p in result.problems]))

    async def current(self, uri: str) -> Analysis | None:
        """The analysis of the document's latest version (waiting for its check), or None if unknown."""
        future = self.pending.get(uri)
        if future is not None:
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout=30)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                return self.results.get(uri)
        return self.results.get(uri)


server = NetdslServer()


def _path(uri: str) -> str:
    path = uris.to_fs_path(uri)
    return os.path.abspath(path) if path else uri


def _uri(path: str) -> str:
    return uris.from_fs_path(os.path.abspath(path)) or path


def _pos(p, a: Analysis) -> tuple[int, int]:
    line = max(0, p.line)
    return line, max(0, a.columns.from_client(line, p.character))


def _range(r, a: Analysis | None = None) -> types.Range:
    (l0, c0), (l1, c1) = r
    if a is not None:  # a range in the document's own text: characters become UTF-16 units
        cols = a.columns
        c0, c1 = cols.to_client(l0, c0), cols.to_client(l1, c1)
    return types.Range(types.Position(max(0, l0), max(0, c0)), types.Position(max(0, l1), max(0, c1)))


def _diagnostic(p: Problem, a: Analysis) -> types.Diagnostic:
    severity = types.DiagnosticSeverity.Error if p.severity == "error" else types.DiagnosticSeverity.Warning
    related = [types.DiagnosticRelatedInformation(types.Location(_uri(path), _range(rng)), note)
               for path, rng, note in p.related]
    return types.Diagnostic(range=_range(p.range, a), message=p.message, severity=severity, source="netdsl",
                            related_information=related or None)


def _safe(default=None):
    """A handler that fails logs and answers ``default``: no request can end the server."""
    def wrap(fn):
        @functools.wraps(fn)
        async def run(ls, params):
            try:
                return await fn(ls, params)
            except Exception:  # noqa: BLE001
                log.exception("%s failed", fn.__name__)
                return default
        return run
    return wrap


# ---------------------------------------------------------------------- document sync
@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
@_safe()
async def did_open(ls: NetdslServer, params: types.DidOpenTextDocumentParams):
    ls.schedule(params.text_document.uri, params.text_document.version)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
@_safe()
async def did_change(ls: NetdslServer, params: types.DidChangeTextDocumentParams):
    ls.schedule(params.text_document.uri, params.text_document.version)


@server.feature(types.TEXT_DOCUMENT_DID_SAVE)
@_safe()
async def did_save(ls: NetdslServer, params: types.DidSaveTextDocumentParams):
    # imports are read from disk: a saved file may change what the other open documents import
    for uri, version in list(ls.versions.items()):
        if uri != params.text_document.uri:
            ls.schedule(uri, version)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
@_safe()
async def did_close(ls: NetdslServer, params: types.DidCloseTextDocumentParams):
    uri = params.text_document.uri
    ls.versions.pop(uri, None)
    future = ls.pending.pop(uri, None)
    if future is not None and not future.done():
        future.set_result(None)  # requests waiting for a check of the closed document get no answer
    ls.results.pop(uri, None)
    ls.parsed.pop(uri, None)
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


# ---------------------------------------------------------------------- features
@server.feature(types.TEXT_DOCUMENT_INLAY_HINT, types.InlayHintOptions(resolve_provider=False))
@_safe([])
async def inlay_hints(ls: NetdslServer, params: types.InlayHintParams):
    a = await ls.current(params.text_document.uri)
    if a is None:
        return []
    lo, hi = params.range.start.line, params.range.end.line
    cols = a.columns
    return [types.InlayHint(position=types.Position(h.position[0], cols.to_client(*h.position)), label=h.label,
                            kind=types.InlayHintKind.Type,
                            padding_left=True)
            for h in a.hints() if lo <= h.position[0] <= hi]


@server.feature(types.TEXT_DOCUMENT_HOVER)
@_safe()
async def hover(ls: NetdslServer, params: types.HoverParams):
    a = await ls.current(params.text_document.uri)
    found = a.hover(_pos(params.position, a)) if a else None
    if found is None:
        return None
    text, rng = found
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text), range=_range(rng, a))


@server.feature(types.TEXT_DOCUMENT_DEFINITION)
@_safe()
async def definition(ls: NetdslServer, params: types.DefinitionParams):
    a = await ls.current(params.text_document.uri)
    found = a.definition(_pos(params.position, a)) if a else None
    if found is None:
        return None
    path, rng = found
    return types.Location(uri=_uri(path), range=_range(rng, a if os.path.abspath(path) == a.path else None))


@server.feature(types.TEXT_DOCUMENT_REFERENCES)
@_safe([])
async def references(ls: NetdslServer, params: types.ReferenceParams):
    a = await ls.current(params.text_document.uri)
    if a is None:
        return []
    return [types.Location(uri=params.text_document.uri, range=_range(r, a))
            for r in a.references(_pos(params.position, a), params.context.include_declaration)]


@server.feature(types.TEXT_DOCUMENT_RENAME)
@_safe()
async def rename(ls: NetdslServer, params: types.RenameParams):
    a = await ls.current(params.text_document.uri)
    edits = a.rename(_pos(params.position, a), params.new_name) if a else None
    if not edits:
        return None
    return types.WorkspaceEdit(changes={params.text_document.uri: [types.TextEdit(_range(r, a), new)
                                                                   for r, new in edits]})


_SYMBOL_KINDS = {"network": "Module", "block": "Class", "layer": "Field", "call": "Function", "label": "Variable"}


def _symbol(s, a: Analysis) -> types.DocumentSymbol:
    return types.DocumentSymbol(name=s.name, kind=getattr(types.SymbolKind, _SYMBOL_KINDS[s.kind]),
                                range=_range(s.range, a), selection_range=_range(s.selection, a), detail=s.detail,
                                children=[_symbol(c, a) for c in s.children])


@server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
@_safe([])
async def document_symbols(ls: NetdslServer, params: types.DocumentSymbolParams):
    a = await ls.current(params.text_document.uri)
    return [_symbol(s, a) for s in a.symbols()] if a else []


@server.feature(types.TEXT_DOCUMENT_FOLDING_RANGE)
@_safe([])
async def folding(ls: NetdslServer, params: types.FoldingRangeParams):
    a = await ls.current(params.text_document.uri)
    return [types.FoldingRange(start_line=s, end_line=e) for s, e in a.folding()] if a else []


_COMPLETION_KINDS = {"op": "Keyword", "option": "Property", "block": "Function", "label": "Reference",
                     "merge": "Operator"}


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=["@", " "]))
@_safe([])
async def completion(ls: NetdslServer, params: types.CompletionParams):
    uri = params.text_document.uri
    # completion answers at once, with the current text and the names of the last text that parsed
    a = ls.parsed.get(uri) or ls.results.get(uri) or await ls.current(uri)
    if a is None:
        return []
    a = Analysis(a.path, ls.workspace.get_text_document(uri).source, a.module, a.program, a.graphs, a.stats)
    return types.CompletionList(is_incomplete=False, items=[
        types.CompletionItem(label=c["label"], kind=getattr(types.CompletionItemKind, _COMPLETION_KINDS[c["kind"]]),
                             detail=c["detail"], insert_text=c["insert"],
                             documentation=types.MarkupContent(kind=types.MarkupKind.Markdown,
                                                               value=f"```\n{c['doc']}\n```") if c.get("doc")
                             else None)
        for c in a.completions(_pos(params.position, a))])


@server.feature(types.TEXT_DOCUMENT_SEMANTIC_TOKENS_FULL,
                types.SemanticTokensLegend(token_types=TOKEN_TYPES, token_modifiers=[]))
@_safe()
async def semantic_tokens(ls: NetdslServer, params: types.SemanticTokensParams):
    a = await ls.current(params.text_document.uri)
    if a is None:
        return types.SemanticTokens(data=[])
    data, prev_line, prev_col, cols = [], 0, 0, a.columns
    for ((line, col), (_, end)), kind in a.tokens():
        col, end = cols.to_client(line, col), cols.to_client(line, end)
        delta_line = line - prev_line
        data += [delta_line, col - prev_col if delta_line == 0 else col, end - col, TOKEN_TYPES.index(kind), 0]
        prev_line, prev_col = line, col
    return types.SemanticTokens(data=data)


@server.feature(types.TEXT_DOCUMENT_FORMATTING)
@_safe()
async def formatting(ls: NetdslServer, params: types.DocumentFormattingParams):
    uri = params.text_document.uri
    doc = ls.workspace.get_text_document(uri)
    text = doc.source
    try:
        from ..fmt import format_source
    except ImportError:
        return None
    try:
        new = await asyncio.get_running_loop().run_in_executor(ls.pool, format_source, text, _path(uri))
    except Exception:  # noqa: BLE001 - a source that does not parse is left as it is (its diagnostics say why)
        return None
    if new == text:
        return []
    lines = text.split("\n")
    end = types.Position(len(lines) - 1, len(lines[-1]))
    return [types.TextEdit(types.Range(types.Position(0, 0), end), new)]


def main() -> None:
    """Serve on stdin/stdout until the client exits."""
    logging.basicConfig(level=logging.WARNING, format="netdsl lsp: %(levelname)s: %(message)s")
    server.start_io()
