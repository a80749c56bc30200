"""Where the diagram's boxes and edges go, for one set of expanded groups.

Requires: a :class:`~netdsl.view.structure.Structure` and the paths of the expanded groups. Guarantees: boxes
that never overlap and edges that never cross a box, by construction:

* inside a group, each child gets a rank (the longest path from the group's inputs); children of one rank
  form a row, side by side; rows are stacked with a gap between them;
* an edge leaves its box downwards into the gap below the box's row, runs along that gap, and enters its
  target from the gap above the target's row; an edge that skips rows runs down a lane of its own to the
  right of every row;
* an expanded group is a frame with one port at the middle of its top and one at the middle of its bottom:
  edges from outside enter through the top port, edges to outside leave through the bottom port, so every
  edge is drawn inside the frame of the lowest group holding both ends.

The page's script (``page.js``) is a port of this module and must give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from .structure import Group, Structure

BOX_W, BOX_H = 196, 40
GAP_X, GAP_Y = 16, 26
PAD, TITLE, LANE = 10, 20, 12


@dataclass(frozen=True, slots=True)
class Box:
    """A drawn box: ``key`` is ``n<index>`` for a node, ``g<path>`` for a group; ``frame`` for an expanded group."""

    key: str
    x: float
    y: float
    w: float
    h: float
    frame: bool = False


@dataclass(frozen=True, slots=True)
class Edge:
    """A polyline drawn inside the frame of group ``level`` (the root: ``""``)."""

    level: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Layout:
    width: float
    height: float
    boxes: tuple[Box, ...]
    edges: tuple[Edge, ...]


def default_expanded(s: Structure, depth: int) -> set[str]:
    """The groups shown open at ``--depth N``: those less than N name components deep, and every ``x N`` run
    (a frame around the repeated blocks, which folds into one box)."""
    return {g.path for g in s.root.groups() if g.path and (g.repeat or g.depth < depth)}


def layout(s: Structure, expanded: set[str]) -> Layout:
    """Boxes and edges of the diagram with the groups in ``expanded`` open (the root is always open)."""
    consumers = s.consumers()
    outputs = {n for _, n in s.outputs}
    boxes: list[Box] = []
    edges: list[Edge] = []
    sizes: dict[str, tuple[float, float, list]] = {}

    def key(c: int | Group) -> str:
        return f"n{c}" if isinstance(c, int) else f"g{c.path}"

    def measure(g: Group) -> tuple[float, float]:
        """Size of the open group ``g``; remembers its rows for :func:`place`."""
        root = not g.path
        member: dict[int, int] = {}
        for ci, c in enumerate(g.children):
            for n in [c] if isinstance(c, int) else c.nodes():
                member[n] = ci
        count = len(g.children)
        preds: list[list[int]] = [[] for _ in g.children]  # -1: the top port
        to_bottom = [False] * count
        for n, ci in sorted(member.items()):
            for i in s.inputs[n]:
                p = member.get(i, -1)
                if p != ci and p not in preds[ci]:
                    preds[ci].append(p)
            if not root and (n in outputs or any(m not in member for m in consumers[n])):
                to_bottom[ci] = True
        rank = [0] * count
        for ci in range(count):
            rank[ci] = max([rank[p] + 1 for p in preds[ci] if 0 <= p < ci] + [0])
        size = []
        for c in g.children:
            size.append(measure(c) if isinstance(c, Group) and c.path in expanded else (BOX_W, BOX_H))
        nrows = max(rank) + 1 if count else 0
        rows: list[list[int]] = [[] for _ in range(nrows)]
        for ci in range(count):
            rows[rank[ci]].append(ci)
        row_w = [sum(size[ci][0] for ci in r) + GAP_X * (len(r) - 1) for r in rows]
        row_h = [max(size[ci][1] for ci in r) for r in rows]
        content = max(row_w + [BOX_W])
        top = (0 if root else TITLE) + GAP_Y
        row_top = []
        y = top
        for h in row_h:
            row_top.append(y)
            y += h + GAP_Y
        height = y
        links = [(p, ci) for ci in range(count) for p in preds[ci]]
        links += [(ci, count) for ci in range(count) if to_bottom[ci]]  # count: the bottom port
        lane_of: dict[tuple[int, int], int] = {}
        for p, c in links:
            rp = -1 if p < 0 else rank[p]
            rc = nrows if c == count else rank[c]
            if rc != rp + 1:
                lane_of[(p, c)] = len(lane_of)
        width = 2 * PAD + content + LANE * len(lane_of)
        sizes[g.path] = (width, height, [rank, rows, row_w, row_top, size, links, lane_of, content, nrows, top])
        return width, height

    def place(g: Group, x0: float, y0: float) -> None:
        width, height, (rank, rows, row_w, row_top, size, links, lane_of, content, nrows, top) = sizes[g.path]
        pos: list[tuple[float, float]] = [(0.0, 0.0)] * len(g.children)
        for r, members in enumerate(rows):
            x = x0 + PAD + (content - row_w[r]) / 2
            for ci in members:
                pos[ci] = (x, y0 + row_top[r])
                x += size[ci][0] + GAP_X
        for ci, c in enumerate(g.children):
            x, y = pos[ci]
            w, h = size[ci]
            is_open = isinstance(c, Group) and c.path in expanded
            boxes.append(Box(key(c), x, y, w, h, is_open))
            if is_open:
                place(c, x, y)
        count = len(g.children)
        mid = x0 + width / 2
        for p, c in links:
            if p < 0:
                sx, sy, gy1 = mid, y0, y0 + top - GAP_Y / 2
            else:
                sx, sy = pos[p][0] + size[p][0] / 2, pos[p][1] + size[p][1]
                gy1 = y0 + row_top[rank[p]] + max(size[ci][1] for ci in rows[rank[p]]) + GAP_Y / 2
            if c == count:
                tx, ty, gy2 = mid, y0 + height, y0 + height - GAP_Y / 2
            else:
                tx, ty = pos[c][0] + size[c][0] / 2, pos[c][1]
                gy2 = y0 + row_top[rank[c]] - GAP_Y / 2
            if (p, c) in lane_of:
                lx = x0 + PAD + content + LANE * (lane_of[(p, c)] + 0.5)
                pts = ((sx, sy), (sx, gy1), (lx, gy1), (lx, gy2), (tx, gy2), (tx, ty))
            else:
                pts = ((sx, sy), (sx, gy1), (tx, gy1), (tx, ty))
            edges.append(Edge(g.path, pts))

    width, height = measure(s.root)
    place(s.root, 0.0, 0.0)
    return Layout(width, height, tuple(boxes), tuple(edges))


def layout_problems(s: Structure, lay: Layout) -> list[str]:
    """What makes a layout unreadable, as sentences (none for a good one): two boxes overlapping that are not
    a frame and something inside it, a box outside its group's frame, an edge through a box, or an edge through
    a frame it was not drawn in."""
    import numpy as np

    parent = s.root.parents()

    def ancestors(key: str) -> set[str]:
        out = set()
        while key in parent and parent[key]:
            out.add(parent[key])
            key = "g" + parent[key]
        return out

    paths = [b.key[1:] for b in lay.boxes]
    above = [ancestors(b.key) for b in lay.boxes]
    rect = np.array([(b.x, b.y, b.x + b.w, b.y + b.h) for b in lay.boxes], dtype=float).reshape(-1, 4)
    frame = np.array([b.frame for b in lay.boxes], dtype=bool)
    problems: list[str] = []
    eps = 1e-6
    for i, b in enumerate(lay.boxes):
        hit = ((rect[:, 0] < rect[i, 2] - eps) & (rect[:, 2] > rect[i, 0] + eps) &
               (rect[:, 1] < rect[i, 3] - eps) & (rect[:, 3] > rect[i, 1] + eps))
        for j in np.nonzero(hit)[0]:
            if j <= i:
                continue
            nested = (frame[i] and paths[i] in above[j]) or (frame[j] and paths[j] in above[i])
            if not nested:
                problems.append(f"boxes {lay.boxes[i].key} and {lay.boxes[j].key} overlap")
        if b.frame:
            inner = [j for j in range(len(paths)) if paths[i] in above[j]]
            for j in inner:
                if not (rect[j, 0] >= rect[i, 0] - eps and rect[j, 2] <= rect[i, 2] + eps and
                        rect[j, 1] >= rect[i, 1] - eps and rect[j, 3] <= rect[i, 3] + eps):
                    problems.append(f"box {lay.boxes[j].key} lies outside the frame of {b.key}")
    for e in lay.edges:
        level = {e.level} | ancestors("g" + e.level)
        allowed = frame & np.array([p in level for p in paths], dtype=bool)
        for (x1, y1), (x2, y2) in zip(e.points, e.points[1:], strict=False):
            lo_x, hi_x, lo_y, hi_y = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
            hit = ((rect[:, 0] < hi_x - eps) & (rect[:, 2] > lo_x + eps) &
                   (rect[:, 1] < hi_y - eps) & (rect[:, 3] > lo_y + eps)) & ~allowed
            for j in np.nonzero(hit)[0]:
                problems.append(f"an edge in {e.level or 'the network'} crosses box {lay.boxes[j].key}")
    return problems
