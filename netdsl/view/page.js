// netdsl view: the diagram's script. Lays out the structure (a port of netdsl/view/layout.py: keep them equal),
// draws it as SVG, and handles expand/collapse, colouring, hover, source pane, search and export. No network use.
"use strict";
const D = JSON.parse(document.getElementById("netdsl-data").textContent);
const BOX_W = 196, BOX_H = 40, GAP_X = 16, GAP_Y = 26, PAD = 10, TITLE = 20, LANE = 12;
const SVGNS = "http://www.w3.org/2000/svg";
const N = D.names.length;
const consumers = D.names.map(() => []);
D.inputs.forEach((ins, i) => ins.forEach(j => consumers[j].push(i)));
const outputs = new Set(D.outputs.map(o => o[1]));
const groups = {};          // path -> group record
const parentOf = {};        // "n3" / "g<path>" -> parent path
function build(t, parent) {
  const g = {path: t[0], kind: t[1], file: t[2], line: t[3], children: [], nodes: [], repeat: t[5]};
  groups[g.path] = g;
  for (const c of t[4]) {
    if (typeof c === "number") { g.children.push(c); g.nodes.push(c); parentOf["n" + c] = g.path; }
    else { const s = build(c, g.path); g.children.push(s); g.nodes.push(...s.nodes); parentOf["g" + s.path] = g.path; }
  }
  const rows = g.nodes.map(n => D.rows[n]);
  g.sum = [3, 4, 5].map(k => rows.reduce((a, r) => a + r[k], 0));
  const last = g.nodes.filter(n => n === g.nodes[g.nodes.length - 1] || outputs.has(n) ||
      consumers[n].some(m => !g.nodes.includes(m)));
  g.shape = last.length ? D.rows[last[last.length - 1]][2] : "";
  return g;
}
const root = build(D.tree, null);
const expanded = new Set(D.expanded);
const key = c => typeof c === "number" ? "n" + c : "g" + c.path;
const isOpen = c => typeof c !== "number" && expanded.has(c.path);

// ---------------------------------------------------------------- layout (same as layout.py)
function layout() {
  const boxes = [], edges = [], sizes = {};
  function measure(g) {
    const isRoot = g.path === "", member = new Map();
    g.children.forEach((c, ci) => (typeof c === "number" ? [c] : c.nodes).forEach(n => member.set(n, ci)));
    const count = g.children.length, preds = g.children.map(() => []), toBottom = g.children.map(() => false);
    [...member.keys()].sort((a, b) => a - b).forEach(n => {
      const ci = member.get(n);
      for (const i of D.inputs[n]) {
        const p = member.has(i) ? member.get(i) : -1;
        if (p !== ci && !preds[ci].includes(p)) preds[ci].push(p);
      }
      if (!isRoot && (outputs.has(n) || consumers[n].some(m => !member.has(m)))) toBottom[ci] = true;
    });
    const rank = [];
    for (let ci = 0; ci < count; ci++)
      rank.push(Math.max(0, ...preds[ci].filter(p => p >= 0 && p < ci).map(p => rank[p] + 1)));
    const size = g.children.map(c => isOpen(c) ? measure(c) : [BOX_W, BOX_H]);
    const nrows = count ? Math.max(...rank) + 1 : 0, rows = [];
    for (let r = 0; r < nrows; r++) rows.push([]);
    for (let ci = 0; ci < count; ci++) rows[rank[ci]].push(ci);
    const rowW = rows.map(r => r.reduce((a, ci) => a + size[ci][0], 0) + GAP_X * (r.length - 1));
    const rowH = rows.map(r => Math.max(...r.map(ci => size[ci][1])));
    const content = Math.max(...rowW, BOX_W), top = (isRoot ? 0 : TITLE) + GAP_Y, rowTop = [];
    let y = top;
    for (const h of rowH) { rowTop.push(y); y += h + GAP_Y; }
    const links = [];
    for (let ci = 0; ci < count; ci++) for (const p of preds[ci]) links.push([p, ci]);
    for (let ci = 0; ci < count; ci++) if (toBottom[ci]) links.push([ci, count]);
    const lane = new Map();
    for (const [p, c] of links) {
      const rp = p < 0 ? -1 : rank[p], rc = c === count ? nrows : rank[c];
      if (rc !== rp + 1) lane.set(p + "," + c, lane.size);
    }
    const width = 2 * PAD + content + LANE * lane.size;
    sizes[g.path] = {width, height: y, rank, rows, rowW, rowTop, size, links, lane, content, top};
    return [width, y];
  }
  function place(g, x0, y0) {
    const L = sizes[g.path], pos = [], count = g.children.length;
    L.rows.forEach((members, r) => {
      let x = x0 + PAD + (L.content - L.rowW[r]) / 2;
      for (const ci of members) { pos[ci] = [x, y0 + L.rowTop[r]]; x += L.size[ci][0] + GAP_X; }
    });
    g.children.forEach((c, ci) => {
      const [x, y] = pos[ci], [w, h] = L.size[ci], open = isOpen(c);
      boxes.push({key: key(c), x, y, w, h, frame: open});
      if (open) place(c, x, y);
    });
    const mid = x0 + L.width / 2;
    const rowBottom = r => y0 + L.rowTop[r] + Math.max(...L.rows[r].map(ci => L.size[ci][1]));
    for (const [p, c] of L.links) {
      let sx, sy, gy1, tx, ty, gy2;
      if (p < 0) { sx = mid; sy = y0; gy1 = y0 + L.top - GAP_Y / 2; }
      else { sx = pos[p][0] + L.size[p][0] / 2; sy = pos[p][1] + L.size[p][1]; gy1 = rowBottom(L.rank[p]) + GAP_Y / 2; }
      if (c === count) { tx = mid; ty = y0 + L.height; gy2 = y0 + L.height - GAP_Y / 2; }
      else { tx = pos[c][0] + L.size[c][0] / 2; ty = pos[c][1]; gy2 = y0 + L.rowTop[L.rank[c]] - GAP_Y / 2; }
      const k = p + "," + c;
      const pts = L.lane.has(k) ?
        [[sx, sy], [sx, gy1], [x0 + PAD + L.content + LANE * (L.lane.get(k) + 0.5), gy1],
         [x0 + PAD + L.content + LANE * (L.lane.get(k) + 0.5), gy2], [tx, gy2], [tx, ty]] :
        [[sx, sy], [sx, gy1], [tx, gy1], [tx, ty]];
      edges.push({level: g.path, points: pts});
    }
  }
  const [width, height] = measure(root);
  place(root, 0, 0);
  return {width, height, boxes, edges};
}

// ---------------------------------------------------------------- drawing
const svg = document.getElementById("diagram");
let metric = "none", current = null, selected = null;
const METRICS = {macs: [4, "MACs"], params: [3, "parameters"], memory: [5, "activation memory"]};
const el = (tag, attrs, parent) => {
  const e = document.createElementNS(SVGNS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
};
const human = n => n >= 1e9 ? (n / 1e9).toFixed(2) + "G" : n >= 1e6 ? (n / 1e6).toFixed(2) + "M" :
  n >= 1e3 ? (n / 1e3).toFixed(1) + "K" : String(n);
const bytes = n => n >= 1048576 ? (n / 1048576).toFixed(1) + " MiB" : n >= 1024 ? (n / 1024).toFixed(1) + " KiB" : n + " B";
function clip(text, s, width) {  // the text, cut with an ellipsis where it would overflow its box
  text.textContent = s;
  if (text.getComputedTextLength() <= width) return;
  let lo = 0, hi = s.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    text.textContent = s.slice(0, mid) + "\u2026";
    if (text.getComputedTextLength() <= width) lo = mid; else hi = mid - 1;
  }
  text.textContent = s.slice(0, lo) + "\u2026";
}
function value(k) {
  const [i] = METRICS[metric];
  return k[0] === "n" ? D.rows[+k.slice(1)][i] : groups[k.slice(1)].sum[i - 3];
}
function ramp(t) {  // light yellow to dark red
  const a = [255, 247, 188], b = [189, 0, 38];
  return "rgb(" + a.map((v, i) => Math.round(v + (b[i] - v) * t)).join(",") + ")";
}
function labels(k) {
  if (k[0] === "n") {
    const n = +k.slice(1), r = D.rows[n], last = D.names[n].split(".").pop();
    const name = /^\d+$/.test(last) ? r[0] : last + ": " + r[0];
    return [name + (r[1] ? " " + r[1] : ""), r[2]];
  }
  const g = groups[k.slice(1)], end = c => c.path.split(".").pop();
  if (g.repeat)  // the blocks of one `x N` call
    return [end(g.children[0]) + "\u2013" + end(g.children[g.children.length - 1]) + ": " + g.kind + " \u00d7 " +
      g.repeat, g.shape + "  \u25b8 " + g.nodes.length + " layers"];
  return [end(g) + (g.kind ? ": " + g.kind : ""), g.shape + "  \u25b8 " + g.nodes.length + " layers"];
}
function draw() {
  current = layout();
  const L = current;
  svg.textContent = "";
  svg.setAttribute("width", L.width + 2);
  svg.setAttribute("height", L.height + 2);
  svg.setAttribute("viewBox", "-1 -1 " + (L.width + 2) + " " + (L.height + 2));
  el("style", {}, svg).textContent = document.getElementById("svg-style").textContent;
  const defs = el("defs", {}, svg), m = el("marker", {id: "arrow", viewBox: "0 0 8 8", refX: 8, refY: 4,
    markerWidth: 7, markerHeight: 7, orient: "auto"}, defs);
  el("path", {d: "M0,0 L8,4 L0,8 z", class: "arrowhead"}, m);
  // colour scale: logarithmic from the smallest non-zero value shown to the largest; zero stays white
  const solid = L.boxes.filter(b => !b.frame), vals = metric === "none" ? [] : solid.map(b => value(b.key));
  const pos = vals.filter(v => v > 0), lo = Math.min(...pos), hi = Math.max(...pos);
  const scale = v => v <= 0 ? -1 : hi === lo ? 1 : (Math.log(v) - Math.log(lo)) / (Math.log(hi) - Math.log(lo));
  for (const b of L.boxes.filter(b => b.frame)) {
    const g = el("g", {class: "frame", "data-key": b.key}, svg);
    el("rect", {x: b.x, y: b.y, width: b.w, height: b.h, rx: 6}, g);
    clip(el("text", {x: b.x + 8, y: b.y + 14, class: "title"}, g), "\u25be " + labels(b.key)[0], b.w - 16);
  }
  for (const e of L.edges)
    el("polyline", {points: e.points.map(p => p.join(",")).join(" "), class: "edge", "marker-end": "url(#arrow)"}, svg);
  for (const b of solid) {
    const g = el("g", {class: "box" + (b.key[0] === "g" ? " group" : ""), "data-key": b.key}, svg);
    const t = metric === "none" ? -1 : scale(value(b.key)), fill = t < 0 ? null : ramp(0.08 + 0.92 * t);
    const r = el("rect", {x: b.x, y: b.y, width: b.w, height: b.h, rx: 4}, g);
    if (fill) r.setAttribute("style", "fill:" + fill);
    const [l1, l2] = labels(b.key), dark = t > 0.55;
    clip(el("text", {x: b.x + 7, y: b.y + 16, class: "l1" + (dark ? " dark" : "")}, g), l1, b.w - 12);
    clip(el("text", {x: b.x + 7, y: b.y + 32, class: "l2" + (dark ? " dark" : "")}, g), l2, b.w - 12);
  }
  legend(pos.length ? lo : 0, pos.length ? hi : 0);
  if (selected) mark(selected);
}
function legend(lo, hi) {
  const lg = document.getElementById("legend");
  if (metric === "none") { lg.textContent = ""; return; }
  const stops = [0, 0.25, 0.5, 0.75, 1].map(t => ramp(t)).join(",");
  const fmt = metric === "memory" ? bytes : human;
  lg.innerHTML = "";
  const bar = document.createElement("span");
  bar.className = "bar"; bar.style.background = "linear-gradient(90deg," + stops + ")";
  lg.append(METRICS[metric][1] + " (log scale): " + fmt(lo), bar, fmt(hi) + " \u00b7 white: none");
}

// ---------------------------------------------------------------- interaction
const tip = document.getElementById("tip");
function describe(k) {
  if (k[0] === "n") {
    const n = +k.slice(1), r = D.rows[n];
    return [["layer", D.names[n]], ["op", (r[0] + " " + r[1]).trim()], ["output", r[2]], ["params", r[3].toLocaleString("en")],
      ["MACs", r[4].toLocaleString("en")], ["memory", bytes(r[5])], ["receptive field", r[6]],
      ["source", (D.files[r[7]] || ["?"])[0] + ":" + r[8]], ...r[9].map(w => ["weight", w]),
      ...D.outputs.filter(o => o[1] === n).map(o => ["network output", o[0]])];
  }
  const g = groups[k.slice(1)];
  return [["block", g.path], ["kind", (g.kind || "group") + (g.repeat ? " \u00d7 " + g.repeat : "")], ["output", g.shape], ["layers", String(g.nodes.length)],
    ["params", g.sum[0].toLocaleString("en")], ["MACs", g.sum[1].toLocaleString("en")], ["memory", bytes(g.sum[2])],
    ["source", (D.files[g.file] || ["?"])[0] + ":" + g.line]];
}
svg.addEventListener("mousemove", ev => {
  const t = ev.target.closest("[data-key]");
  if (!t) { tip.style.display = "none"; return; }
  tip.innerHTML = "";
  for (const [a, b] of describe(t.dataset.key)) {
    const row = document.createElement("div"), h = document.createElement("b");
    h.textContent = a + " "; row.append(h, b); tip.appendChild(row);
  }
  tip.style.display = "block";
  tip.style.left = (ev.clientX + 14) + "px"; tip.style.top = (ev.clientY + 14) + "px";
});
svg.addEventListener("mouseleave", () => { tip.style.display = "none"; });
function toggle(path) { expanded.has(path) ? expanded.delete(path) : expanded.add(path); draw(); }
svg.addEventListener("click", ev => {
  const t = ev.target.closest("[data-key]");
  if (!t) return;
  const k = t.dataset.key;
  if (t.classList.contains("frame")) {  // an open group: its title collapses it
    if (ev.target.classList.contains("title")) toggle(k.slice(1)); else select(k);
    return;
  }
  select(k);
  if (k[0] === "g") toggle(k.slice(1));  // a closed group opens
});
function sourceOf(k) {
  if (k[0] === "n") { const r = D.rows[+k.slice(1)]; return [r[7], r[8]]; }
  const g = groups[k.slice(1)]; return [g.file, g.line];
}
function select(k) {
  selected = k; mark(k);
  const [f, line] = sourceOf(k);
  document.querySelectorAll(".src .hl").forEach(e => e.classList.remove("hl"));
  const row = document.getElementById("L" + f + "-" + line);
  if (row) { row.classList.add("hl"); row.scrollIntoView({block: "center"}); }
}
function mark(k) {
  svg.querySelectorAll(".selected").forEach(e => e.classList.remove("selected"));
  const e = svg.querySelector('[data-key="' + CSS.escape(k) + '"]');
  if (e) e.classList.add("selected");
}
function visible(k) {  // the box that shows k: itself or its outermost collapsed ancestor
  let shown = k, p = parentOf[k];
  while (p !== undefined && p !== "") { if (!expanded.has(p)) shown = "g" + p; p = parentOf["g" + p]; }
  return shown;
}
function reveal(k) {
  let p = parentOf[k];
  while (p !== undefined && p !== "") { expanded.add(p); p = parentOf["g" + p]; }
  draw();
}
document.getElementById("source").addEventListener("click", ev => {
  const row = ev.target.closest(".line");
  if (!row) return;
  const f = +row.dataset.file, line = +row.dataset.line;
  for (let n = 0; n < N; n++) {
    const r = D.rows[n];
    if (r[7] === f && r[8] === line) { const k = visible("n" + n); select(k); scrollTo(k); return; }
  }
  for (const path in groups) {
    const g = groups[path];
    if (path && g.file === f && g.line === line) { const k = visible("g" + path); select(k); scrollTo(k); return; }
  }
});
function scrollTo(k) {
  const e = svg.querySelector('[data-key="' + CSS.escape(k) + '"]');
  if (e) e.scrollIntoView({block: "center", inline: "center"});
}
const search = document.getElementById("search");
search.addEventListener("input", () => {
  const q = search.value.trim().toLowerCase();
  svg.querySelectorAll(".match").forEach(e => e.classList.remove("match"));
  if (!q) return;
  const hits = new Set();
  for (let n = 0; n < N; n++) if (D.names[n].toLowerCase().includes(q) || D.rows[n][0] === q) hits.add(visible("n" + n));
  for (const path in groups) if (path && (path.toLowerCase().includes(q) || groups[path].kind === q)) hits.add(visible("g" + path));
  hits.forEach(k => { const e = svg.querySelector('[data-key="' + CSS.escape(k) + '"]'); if (e) e.classList.add("match"); });
  document.getElementById("hits").textContent = hits.size + " box(es)";
});
search.addEventListener("keydown", ev => {
  if (ev.key !== "Enter") return;
  const q = search.value.trim().toLowerCase();
  for (let n = 0; n < N; n++) if (D.names[n].toLowerCase().includes(q)) { reveal("n" + n); select("n" + n); scrollTo("n" + n); break; }
});
document.getElementById("metric").addEventListener("change", ev => { metric = ev.target.value; draw(); });
document.getElementById("expand-all").addEventListener("click", () => { for (const p in groups) if (p) expanded.add(p); draw(); });
document.getElementById("collapse-all").addEventListener("click", () => { expanded.clear(); draw(); });

// ---------------------------------------------------------------- export
function svgText() {
  const copy = svg.cloneNode(true);
  copy.setAttribute("xmlns", SVGNS);
  copy.querySelectorAll(".selected,.match").forEach(e => e.classList.remove("selected", "match"));
  return '<?xml version="1.0" encoding="UTF-8"?>\n' + new XMLSerializer().serializeToString(copy);
}
function download(name, blob) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob); a.download = name;
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}
document.getElementById("export-svg").addEventListener("click", () =>
  download(D.network + ".svg", new Blob([svgText()], {type: "image/svg+xml"})));
document.getElementById("export-png").addEventListener("click", () => {
  const img = new Image(), L = current, scale = 2;
  img.onload = () => {
    const c = document.createElement("canvas");
    c.width = (L.width + 2) * scale; c.height = (L.height + 2) * scale;
    const ctx = c.getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, c.width, c.height);
    ctx.drawImage(img, 0, 0, c.width, c.height);
    c.toBlob(b => download(D.network + ".png", b), "image/png");
  };
  img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(svgText());
});
// ---------------------------------------------------------------- header and source pane
(function () {
  const t = D.totals;
  document.getElementById("totals").textContent = D.network + " \u2014 " + t[0].toLocaleString("en") + " params \u00b7 " +
    t[1].toLocaleString("en") + " MACs (conv+fc) \u00b7 " + bytes(t[2]) + " activations per image \u00b7 " + N + " layers";
  const pane = document.getElementById("source");
  D.files.forEach(([path, text], f) => {
    const head = document.createElement("div");
    head.className = "file"; head.textContent = path; pane.appendChild(head);
    const pre = document.createElement("div");
    pre.className = "src";
    text.split("\n").forEach((line, i) => {
      const row = document.createElement("div");
      row.className = "line"; row.id = "L" + f + "-" + (i + 1);
      row.dataset.file = f; row.dataset.line = i + 1;
      const no = document.createElement("span");
      no.className = "no"; no.textContent = i + 1;
      row.append(no, line || " ");
      pre.appendChild(row);
    });
    pane.appendChild(pre);
  });
})();
window.netdslView = {layout, expanded, draw, svgText, select, toggle};
draw();
