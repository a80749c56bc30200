"""The diagram as one self-contained HTML page: the structure as JSON, the script and the styles inlined.

Guarantees: no external reference of any kind (scripts, styles, fonts, images), so the page makes no network
request; the same network gives the same bytes (no dates, no random identifiers, keys in a fixed order).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from .layout import default_expanded
from .structure import Structure

_HERE = Path(__file__).parent
_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; \
style-src 'unsafe-inline'; img-src data: blob:">
<title>{title}</title>
<style>{page_css}</style>
<style id="svg-style">{svg_css}</style>
</head>
<body>
<header>
<span id="totals"></span>
<label>colour <select id="metric"><option value="none">none</option><option value="macs">MACs</option>\
<option value="params">parameters</option><option value="memory">activation memory</option></select></label>
<span id="legend"></span>
<input id="search" type="search" placeholder="search label or op (Enter: show)" size="28"> <span id="hits"></span>
<button id="expand-all">expand all</button><button id="collapse-all">collapse all</button>
<button id="export-svg">SVG</button><button id="export-png">PNG</button>
</header>
<main><div id="canvas"><svg id="diagram" xmlns="http://www.w3.org/2000/svg"></svg></div><div id="source"></div></main>
<div id="tip"></div>
<script type="application/json" id="netdsl-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""


def render_html(s: Structure, depth: int = 1) -> str:
    """The page for structure ``s``, its groups open down to ``depth`` name components (``--depth``)."""
    data = s.to_json()
    data["expanded"] = sorted(default_expanded(s, depth))
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    # inside <script> only "</" could end the element; escape every < > & so nothing in a name or source can
    text = text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return _TEMPLATE.format(title=html.escape(f"netdsl view: {s.network}"), page_css=_read("page.css"),
                            svg_css=_read("svg.css"), data=text, script=_read("page.js"))


def _read(name: str) -> str:
    return (_HERE / name).read_text(encoding="utf-8")
