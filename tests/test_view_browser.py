"""The `netdsl view` page in a real headless Chromium (the system's `chromium`, driven by Playwright): it loads
offline without errors, opens blocks, links boxes and source lines, colours by cost, exports, and its script
lays out exactly as netdsl/view/layout.py does."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import netdsl
from netdsl.view import Box, Edge, Layout, default_expanded, layout, render_html, structure
from netdsl.view.layout import layout_problems

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium browser installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the `playwright` package (test extra) is missing")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """name -> (structure, page path) for a few networks, written once."""
    folder = tmp_path_factory.mktemp("view")
    out = {}
    for name in ("resnet50", "googlenet", "densenet121"):
        net = netdsl.load(ROOT / "networks" / f"{name}.net")
        s = structure(net.graph, net.summary())
        path = folder / f"{name}.html"
        path.write_text(render_html(s, depth=1), encoding="utf-8")
        out[name] = (s, path)
    return out


def open_page(browser, path):
    page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    problems, requests = [], []
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_selector("#diagram g.box")
    return page, problems, requests


def test_page_loads_offline_without_errors(browser, pages):
    page, problems, requests = open_page(browser, pages["resnet50"][1])
    page.hover('[data-key="glayer2"]')
    tip = page.inner_text("#tip")
    assert "block layer2" in tip and "kind stage" in tip and "networks/resnet50.net:23" in tip
    s = pages["resnet50"][0]
    page.hover(f'[data-key="n{s.names.index("fc")}"]')
    assert "network output logits" in page.inner_text("#tip")
    assert problems == []
    assert requests == [pages["resnet50"][1].as_uri()]  # the page itself, nothing else
    assert "25,557,032 params" in page.inner_text("#totals")
    page.close()


def test_expanding_layer1_shows_three_bottlenecks(browser, pages):
    page, problems, _ = open_page(browser, pages["resnet50"][1])
    assert page.locator('[data-key="glayer1.0"]').count() == 0
    page.click('[data-key="glayer1"]')
    blocks = page.locator('#diagram g.box.group[data-key^="glayer1."]')
    assert blocks.count() == 3
    assert all("bottleneck" in t for t in blocks.all_text_contents())
    assert page.locator('g.frame[data-key="glayer1"]').count() == 1
    page.click('g.frame[data-key="glayer1.1..2"] .title')  # bottleneck(width) x 2 folds into one box
    assert page.locator('#diagram g.box.group[data-key^="glayer1."]').all_text_contents() == [
        "0: bottleneck256x56x56  \u25b8 12 layers", "1\u20132: bottleneck \u00d7 2256x56x56  \u25b8 20 layers"]
    page.click('g.frame[data-key="glayer1"] .title')  # its title closes it again
    assert page.locator('[data-key^="glayer1."]').count() == 0
    assert problems == []
    page.close()


def test_box_and_source_line_select_each_other(browser, pages):
    s, path = pages["resnet50"]
    page, problems, _ = open_page(browser, path)
    page.click('[data-key="glayer2"]')
    page.click('[data-key="glayer2.0"]')
    conv2 = f"n{s.names.index('layer2.0.conv2')}"
    page.click(f'[data-key="{conv2}"]')
    assert page.locator(".line.hl").count() == 1
    assert page.get_attribute(".line.hl", "id") == "L0-9"  # conv2: conv width 3x3 /stride ...
    assert "conv2: conv" in page.inner_text(".line.hl")
    page.hover(f'[data-key="{conv2}"]')
    tip = page.inner_text("#tip")
    for row in ("layer layer2.0.conv2", "op conv 3x3 /2 pad 1", "output 128x28x28", "params 147,456",
                "MACs 115,605,504", "memory 392.0 KiB", "receptive field 43", "resnet50.net:9",
                "weight layer2.0.conv2.weight 128x128x3x3"):
        assert row in tip
    page.click("#L0-24")  # layer3: stage(256, 6, 2)
    assert page.get_attribute("#diagram .selected", "data-key") == "glayer3"
    page.fill("#search", "downsample")
    matched = page.eval_on_selector_all("#diagram .match", "es => es.map(e => e.dataset.key).sort()")
    assert matched == ["glayer1", "glayer2.0.downsample", "glayer3", "glayer4"]  # closed blocks show their hits
    assert problems == []
    page.close()


def fills(page):
    return page.eval_on_selector_all("#diagram g.box rect", "rs => rs.map(r => getComputedStyle(r).fill)")


def test_macs_colouring_changes_box_colours(browser, pages):
    page, problems, _ = open_page(browser, pages["resnet50"][1])
    before = fills(page)
    page.select_option("#metric", "macs")
    after = fills(page)
    assert len(after) == len(before) and after != before
    assert len(set(after)) > 3  # a scale, not one colour
    assert "MACs" in page.inner_text("#legend")
    page.select_option("#metric", "params")
    assert fills(page) != after
    assert problems == []
    page.close()


def test_svg_and_png_export(browser, pages, tmp_path):
    page, problems, requests = open_page(browser, pages["googlenet"][1])
    with page.expect_download() as d:
        page.click("#export-svg")
    svg = tmp_path / "g.svg"
    d.value.save_as(svg)
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(root.findall(".//{http://www.w3.org/2000/svg}rect")) == page.locator("#diagram rect").count() > 20
    with page.expect_download() as d:
        page.click("#export-png")
    png = tmp_path / "g.png"
    d.value.save_as(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert problems == []
    assert all(not u.startswith(("http:", "https:")) for u in requests)
    page.close()


@pytest.mark.parametrize("name,depth", [("resnet50", 2), ("googlenet", 2), ("densenet121", 3), ("resnet50", 9)])
def test_script_lays_out_as_python_does(browser, pages, name, depth):
    s, path = pages[name]
    page, problems, _ = open_page(browser, path)
    opened = sorted(default_expanded(s, depth))
    page.evaluate("""paths => { const v = window.netdslView; v.expanded.clear();
        paths.forEach(p => v.expanded.add(p)); v.draw(); }""", opened)
    js = js_layout(page)
    assert js == layout(s, set(opened))
    assert layout_problems(s, js) == []
    # the drawn boxes are where the layout puts them
    drawn = page.eval_on_selector_all("#diagram g.box > rect", "rs => rs.length")
    assert drawn == sum(not b.frame for b in js.boxes)
    assert problems == []
    page.close()


def js_layout(page) -> Layout:
    got = page.evaluate("window.netdslView.layout()")
    return Layout(got["width"], got["height"],
                  tuple(Box(b["key"], b["x"], b["y"], b["w"], b["h"], b["frame"]) for b in got["boxes"]),
                  tuple(Edge(e["level"], tuple(tuple(p) for p in e["points"])) for e in got["edges"]))


def test_every_zoo_network_opens_fully_without_errors(browser, tmp_path):
    page = browser.new_page()
    problems = []
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    zoo = sorted((ROOT / "networks").glob("*.net"))
    for path in zoo:
        net = netdsl.load(path)
        s = structure(net.graph, net.summary())
        html = tmp_path / f"{path.stem}.html"
        html.write_text(render_html(s), encoding="utf-8")
        page.goto(html.as_uri())
        page.click("#expand-all")
        lay = js_layout(page)
        assert {f"n{i}" for i in range(len(s.names))} <= {b.key for b in lay.boxes}, path.name
        assert layout_problems(s, lay) == [], path.name
    assert len(zoo) >= 29 and problems == []
    page.close()
