"""Screenshots of `netdsl view` pages for the README: docs/images/<network>_depth<N>.png.

Needs Playwright (`pip install playwright`, the test extra) and a Chromium (`apt-get install chromium`).
    python tools/view_screenshots.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

import netdsl
from netdsl.view import render_html, structure

ROOT = Path(__file__).resolve().parent.parent
SHOTS = [  # network, depth, colouring, box to scroll to the top, box to hover
    ("resnet50", 1, "none", None, "glayer2"),
    ("resnet50", 2, "macs", "glayer1", None),
    ("googlenet", 1, "none", None, None),
    ("googlenet", 2, "macs", "ginception3a", None),
]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(chromium: str = "/usr/bin/chromium") -> None:
    os.chdir(ROOT)
    out = ROOT / "docs" / "images"
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        for name, depth, metric, top, hover in SHOTS:
            net = netdsl.load(Path("networks") / f"{name}.net")  # the path as a user types it
            page_path = Path(tmp) / f"{name}.html"
            page_path.write_text(render_html(structure(net.graph, net.summary()), depth=depth), encoding="utf-8")
            page = browser.new_page(viewport={"width": 1440, "height": 800})
            page.goto(page_path.as_uri())
            page.select_option("#metric", metric)
            if top:
                page.evaluate("""k => { const e = document.querySelector('[data-key="' + k + '"]');
                    const c = document.getElementById('canvas');
                    c.scrollTop += e.getBoundingClientRect().top - c.getBoundingClientRect().top - 60; }""", top)
                page.evaluate("k => window.netdslView.select(k)", top)  # its source line lights up
            if hover:
                page.evaluate("k => window.netdslView.select(k)", hover)
                page.hover(f'[data-key="{hover}"]')
            page.screenshot(path=str(out / f"{name}_depth{depth}.png"))
            page.close()
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
