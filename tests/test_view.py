"""`netdsl view`: the diagram's structure, its layout (readable for every zoo network), the page, the command,
and the block path that compiled ONNX nodes carry."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import onnx
import pytest

import netdsl
from netdsl.view import default_expanded, layout, render_html, structure
from netdsl.view.layout import layout_problems
from tests.helpers import netdsl_main

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted((ROOT / "networks").glob("*.net"))


def view_of(name: str, **kw):
    net = netdsl.load(ROOT / "networks" / f"{name}.net", **kw)
    return net, structure(net.graph, net.summary())


def test_structure_follows_the_blocks_and_their_calls():
    _, s = view_of("resnet50")
    groups = {g.path: g for g in s.root.groups()}
    assert (groups["layer1"].kind, groups["layer1"].line) == ("stage", 22)
    assert [c.path for c in groups["layer1"].children] == ["layer1.0", "layer1.1..2"]  # bottleneck(width) x 2
    assert groups["layer1.1..2"].repeat == 2 and groups["layer3.1..5"].repeat == 5
    assert [c.path for c in groups["layer1.1..2"].children] == ["layer1.1", "layer1.2"]
    assert {groups[f"layer1.{i}"].kind for i in range(3)} == {"bottleneck"}
    assert groups["layer1.0"].line == 15 and groups["layer1.1"].line == 15
    assert groups["layer1.0.downsample"].kind == "projection"
    assert "layer1.1.downsample" not in groups  # only the first bottleneck changes the shape
    every = sorted(s.root.nodes())
    assert every == list(range(len(s.names)))
    _, g = view_of("googlenet")
    inception = {c.path if not isinstance(c, int) else g.names[c] for c in
                 next(x for x in g.root.groups() if x.path == "inception3a").children}
    assert inception == {"inception3a.branch1", "inception3a.branch2", "inception3a.branch3", "inception3a.branch4",
                         "inception3a.concat"}


@pytest.mark.parametrize("path", ZOO, ids=[p.stem for p in ZOO])
def test_layout_is_readable_for_every_zoo_network_at_every_depth(path):
    net = netdsl.load(path)
    s = structure(net.graph, net.summary())
    deepest = max(g.depth for g in s.root.groups())
    repeats = {g.path for g in s.root.groups() if g.repeat}
    for depth in range(1, deepest + 2):
        lay = layout(s, default_expanded(s, depth))
        assert layout_problems(s, lay) == [], f"{path.name} at depth {depth}"
        folded = layout(s, default_expanded(s, depth) - repeats)  # every `x N` run as one box
        assert layout_problems(s, folded) == [], f"{path.name} at depth {depth}, repeats folded"
        shown = {b.key for b in lay.boxes}
        assert len(shown) == len(lay.boxes)
        if depth > deepest:  # everything open: every node is a box of its own
            assert {f"n{i}" for i in range(len(s.names))} <= shown


def test_layout_problems_finds_overlaps_and_edges_through_boxes():
    _, s = view_of("resnet50")
    lay = layout(s, default_expanded(s, 2))
    boxes = list(lay.boxes)
    i = next(k for k, b in enumerate(boxes) if b.key == "glayer1.1")
    below = next(b for b in boxes if b.key == "glayer1.2")
    boxes[i] = dataclasses.replace(boxes[i], y=below.y - 5)  # onto its neighbour, and onto the edge between them
    problems = layout_problems(s, dataclasses.replace(lay, boxes=tuple(boxes)))
    assert any("overlap" in p for p in problems)
    assert any("crosses box glayer1.1" in p for p in problems)
    j = next(k for k, b in enumerate(boxes) if b.key == "glayer1")
    boxes = list(lay.boxes)
    boxes[j] = dataclasses.replace(boxes[j], h=40)  # the frame no longer holds its blocks
    assert any("outside the frame" in p for p in layout_problems(s, dataclasses.replace(lay, boxes=tuple(boxes))))


def test_residual_shortcut_and_inception_branches_are_drawn():
    _, s = view_of("resnet50")
    lay = layout(s, {"layer1", "layer1.0"})
    pos = {b.key: b for b in lay.boxes}
    conv1 = pos[f"n{s.names.index('layer1.0.conv1')}"]
    projection = pos["glayer1.0.downsample"]
    assert projection.y == conv1.y and projection.x > conv1.x  # side by side with the body
    in_block = [e for e in lay.edges if e.level == "layer1.0"]
    add = pos[f"n{s.names.index('layer1.0.add')}"]
    into_add = [e for e in in_block if e.points[-1] == (add.x + add.w / 2, add.y)]
    assert len(into_add) == 2  # body and projection
    _, g = view_of("googlenet")
    lay = layout(g, {"inception3a"})
    rows = {b.y for b in lay.boxes if b.key.startswith("ginception3a.branch")}
    assert len(rows) == 1  # four branches in one row


def test_page_is_self_contained_deterministic_and_escaped(tmp_path):
    _, s = view_of("resnet50")
    page = render_html(s, depth=2)
    assert page == render_html(view_of("resnet50")[1], depth=2)
    assert set(re.findall(r"https?://[^\s\"'<>)]+", page)) == {"http://www.w3.org/2000/svg"}
    assert not re.search(r"\b(src|href)\s*=\s*[\"'](?!#|data:)|@import|url\((?!#)", page)
    assert page.count("<script") == 2
    src = tmp_path / "evil.net"
    src.write_text("# </script><script>alert(1)</script> <!--\nnetwork evil {\n    input x: 3x8x8\n"
                   "    conv 4 3x3\n    output y\n}\n")
    net = netdsl.load(src)
    evil = render_html(structure(net.graph, net.summary()))
    assert evil.count("<script") == 2 and "<!--" not in evil
    assert "\\u003c/script\\u003e" in evil


def test_resnet152_page_is_under_one_megabyte():
    _, s = view_of("resnet152")
    assert len(render_html(s).encode("utf-8")) < 1_000_000


def test_view_command_writes_the_page(tmp_path):
    out = tmp_path / "r.html"
    rc, stdout, err = netdsl_main("view", ROOT / "networks/resnet18.net", "-o", out, "--depth", "2")
    assert rc == 0, err
    assert f"wrote {out}" in stdout
    page = out.read_text(encoding="utf-8")
    assert '"expanded":["layer1","layer2","layer3","layer4"]' in page
    rc, stdout, _ = netdsl_main("view", ROOT / "networks/lenet5.net", cwd=tmp_path)
    assert rc == 0 and (tmp_path / "lenet5.html").is_file()


def test_view_command_checks_its_options(tmp_path):
    src = tmp_path / "n.net"
    src.write_text("network n {\n    input x: 3x8x8\n    conv 4 3x3\n    output y\n}\n")
    rc, _, err = netdsl_main("view", src, "--depth", "0")
    assert rc == 2 and "--depth must be at least 1" in err
    rc, _, err = netdsl_main("view", src, "-o", src)
    assert rc == 2 and "refusing to write over it" in err
    assert src.read_text().startswith("network n")
    rc, _, err = netdsl_main("view", tmp_path / "missing.net", "-o", tmp_path / "m.html")
    assert rc == 1 and "missing.net" in err and "Traceback" not in err


def test_netron_missing_is_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "netron", None)  # `import netron` raises ImportError
    rc, _, err = netdsl_main("view", ROOT / "networks/lenet5.net", "--netron")
    assert rc != 0
    assert 'pip install "netdsl[netron]"' in err and "Traceback" not in err


def test_onnx_nodes_carry_their_block_path_where_the_ir_version_allows():
    net = netdsl.load(ROOT / "networks/resnet50.net")
    model = net.to_onnx(opset=21)
    assert model.ir_version >= 10
    onnx.checker.check_model(model)
    spaces = {n.name: {p.key: p.value for p in n.metadata_props} for n in model.graph.node}
    assert spaces["layer3.2.conv1"] == {"namespace": "layer3/2"}
    assert spaces["layer1.0.downsample.0"] == {"namespace": "layer1/0/downsample"}
    assert spaces["conv1"] == {}  # top level: no block
    older = net.to_onnx(opset=17)
    assert older.ir_version < 10 and not any(n.metadata_props for n in older.graph.node)


def test_open_hands_the_page_to_the_web_browser(monkeypatch, tmp_path):
    import webbrowser

    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda uri: opened.append(uri) or True)
    out = tmp_path / "page.html"
    rc, _, err = netdsl_main("view", ROOT / "networks/lenet5.net", "-o", out, "--open", "-q")
    assert rc == 0, err
    assert opened == [out.resolve().as_uri()]


def test_netron_serves_the_compiled_model_with_block_paths(monkeypatch):
    import types

    served = []
    fake = types.ModuleType("netron")
    fake.start = lambda path, browse=True: served.append((onnx.load(path), browse))
    fake.wait = lambda: None
    monkeypatch.setitem(sys.modules, "netron", fake)
    rc, out, err = netdsl_main("view", ROOT / "networks/resnet18.net", "--netron", "--opset", "21")
    assert rc == 0, err
    assert "serving it with Netron" in out
    (model, browse), = served
    assert browse and model.opset_import[0].version == 21
    spaces = {n.name: [p.value for p in n.metadata_props if p.key == "namespace"] for n in model.graph.node}
    assert spaces["layer2.1.conv1"] == ["layer2/1"]


UNET = """
block down(c) {
    conv c 3x3 pad 1 -> relu
}

block up(c, skip) {
    upsample 2 -> conv c 3x3 pad 1 -> x: relu
    concat(@x, @skip) -> conv c 3x3 pad 1 -> relu
}

network unet {
    input image: 3x64x64
    d1: down(16)
    p1: maxpool 2x2 /2
    d2: down(32)
    p2: maxpool 2x2 /2
    d3: down(64)
    u2: up(32, @d2)
    u1: up(16, @d1)
    head: conv 2 1x1
    output mask
}
"""


@pytest.mark.parametrize("source", ["unet", "googlenet_aux"])
def test_reference_wiring_is_drawn_as_edges(tmp_path, source):
    if source == "unet":
        path = tmp_path / "unet.net"
        path.write_text(UNET)
        net = netdsl.load(path)
    else:
        net = netdsl.load(ROOT / "networks/googlenet.net", args={"aux": 1})
    s = structure(net.graph, net.summary())
    for depth in (1, 2, 3):
        lay = layout(s, default_expanded(s, depth))
        assert layout_problems(s, lay) == [], depth
    lay = layout(s, set())
    boxes = {b.key: b for b in lay.boxes}
    top = [e for e in lay.edges if e.level == ""]

    def edge(a: str, b: str) -> bool:
        pa, pb = boxes[a], boxes[b]
        return any(e.points[0] == (pa.x + pa.w / 2, pa.y + pa.h) and e.points[-1] == (pb.x + pb.w / 2, pb.y)
                   for e in top)

    if source == "unet":
        assert edge("gd1", "gu1") and edge("gd2", "gu2") and edge("gu2", "gu1")  # the skips and the main path
    else:
        assert edge("ginception4a", "gaux1") and edge("ginception4a", "ginception4b")
        assert boxes["gaux1"].y == boxes["ginception4b"].y  # the side branch beside the main path
