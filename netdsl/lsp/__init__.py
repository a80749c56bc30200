"""The language server of .net files (``netdsl lsp``): the compiler's own passes behind the editor features.

:mod:`netdsl.lsp.document` computes what the editor shows from a document's text (no protocol library
needed); :mod:`netdsl.lsp.server` serves it over the Language Server Protocol with pygls, an optional
dependency (``pip install "netdsl[lsp]"``).
"""
