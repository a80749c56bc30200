"""The diagram's structure: the checked graph's nodes arranged in the block hierarchy of their dotted names.

Requires: a checked :class:`~netdsl.graph.Graph` and its :class:`~netdsl.analysis.Summary`. Guarantees: one
:class:`Group` tree whose leaves are every node of the graph, once each, in graph order; a group for every
dotted-name prefix shared by a node (``layer1`` → ``layer1.0`` → ``conv1``), with the block that made it
(``bottleneck``, read from the nodes' call traces) and the source line of its call. The structure is plain
data (:meth:`Structure.to_json`) that the page's script lays out again as boxes expand and collapse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..analysis import Summary
from ..graph import INPUT, Graph
from ..ops import fmt_shape, weight_name

_BLOCK = re.compile(r"in block `([^`]+)` called from (.+):(\d+):(\d+)$")
PROJECTION = "downsample"  # the name torchvision gives a residual's projection shortcut (composites.projection)


@dataclass(frozen=True, slots=True)
class Group:
    """A dotted-name prefix: ``path`` (``layer1.0``), the block that made it, where it was called, its children
    (node indices and groups, in graph order)."""

    path: str
    kind: str
    file: int  # index into Structure.files, -1 when unknown
    line: int
    children: tuple[int | Group, ...]
    repeat: int = 0  # N for the group that holds the N blocks of one `x N` call (path ``layer1.1..2``)
    column: int = 0

    def nodes(self) -> list[int]:
        """Every node index under this group, in graph order."""
        out: list[int] = []
        for c in self.children:
            out.extend([c] if isinstance(c, int) else c.nodes())
        return out

    def groups(self) -> list[Group]:
        """This group and every group below it, parents first."""
        out = [self]
        for c in self.children:
            if isinstance(c, Group):
                out.extend(c.groups())
        return out

    @property
    def depth(self) -> int:
        return 0 if not self.path else len([p for p in self.path.split(".") if p])

    def parents(self) -> dict[str, str]:
        """Box key (``n<index>``, ``g<path>``) -> path of the group holding it, for this group and below."""
        out: dict[str, str] = {}
        for c in self.children:
            if isinstance(c, int):
                out[f"n{c}"] = self.path
            else:
                out[f"g{c.path}"] = self.path
                out.update(c.parents())
        return out


@dataclass(frozen=True, slots=True)
class Structure:
    """What the diagram shows: the group tree, per-node rows and the source files."""

    network: str
    root: Group
    names: tuple[str, ...]
    inputs: tuple[tuple[int, ...], ...]  # per node: the nodes it reads
    outputs: tuple[tuple[str, int], ...]  # graph outputs: (name, node)
    rows: tuple[tuple, ...]  # per node: see to_json
    files: tuple[tuple[str, str], ...]  # (path, text)
    totals: tuple[int, int, int]  # params, MACs, activation bytes

    def consumers(self) -> list[list[int]]:
        """Per node, the nodes that read it."""
        out: list[list[int]] = [[] for _ in self.names]
        for i, ins in enumerate(self.inputs):
            for j in ins:
                out[j].append(i)
        return out

    def to_json(self) -> dict:
        def group(g: Group) -> list:
            return [g.path, g.kind, g.file, g.line, [c if isinstance(c, int) else group(c) for c in g.children],
                    g.repeat]

        return {"network": self.network, "tree": group(self.root), "names": list(self.names),
                "inputs": [list(i) for i in self.inputs], "outputs": [list(o) for o in self.outputs],
                "rows": [list(r) for r in self.rows], "files": [list(f) for f in self.files],
                "totals": list(self.totals)}


def structure(graph: Graph, summary: Summary) -> Structure:
    """The diagram's structure of a checked graph."""
    files: dict[str, int] = {}
    texts: list[tuple[str, str]] = []

    def file_index(path: str, source) -> int:
        if path not in files:
            if source is None:
                return -1
            files[path] = len(texts)
            texts.append((path, source.text))
        return files[path]

    stats = {s.name: s for s in summary.layers}
    rows = []
    for node in graph.nodes:
        f = file_index(node.span.path, node.span.source)
        s = stats.get(node.name) if node.op is not INPUT else None
        rf = "" if s is None else "x".join(sorted({_num(v) for v in s.receptive_field}, reverse=True))
        weights = [f"{weight_name(node.name, w.suffix)} {fmt_shape(w.shape)}" for w in node.weights]
        rows.append((node.op.name, s.detail if s else "", fmt_shape(node.shape), node.params,
                     s.macs if s else 0, s.activation_bytes if s else 0, rf, f, node.span.line, weights))
    root = _tree(graph, "", list(range(len(graph.nodes))), 0, file_index)
    return Structure(graph.name, root, tuple(n.name for n in graph.nodes), tuple(n.inputs for n in graph.nodes),
                     tuple((o.name, o.node) for o in graph.outputs), tuple(rows), tuple(texts),
                     (summary.params, summary.macs, summary.activation_bytes))


def _tree(graph: Graph, path: str, members: list[int], inherited: int, file_index) -> Group:
    """The group ``path`` over ``members``; ``inherited`` is how many call-trace entries its parent's nodes share."""
    shared = _shared_trace(graph, members)
    kind, file, line, column = "", -1, 0, 0
    if path and len(shared) > inherited:
        m = _BLOCK.match(shared[-(inherited + 1)])  # the outermost call this group adds
        if m:
            kind, line, column = m.group(1), int(m.group(3)), int(m.group(4))
            span = graph.nodes[members[0]].span
            file = file_index(m.group(2), span.source if span.path == m.group(2) else None)
    if not kind and path.rsplit(".", 1)[-1] == PROJECTION:
        kind = "projection"
    if line == 0 and members:
        span = graph.nodes[members[0]].span
        file, line = file_index(span.path, span.source), span.line
    prefix = path + "." if path else ""
    children: list[int | Group] = []
    subgroups: dict[str, list[int]] = {}
    order: list[str | int] = []
    for i in members:
        rest = graph.nodes[i].name[len(prefix):]
        head, dot, _ = rest.partition(".")
        if not dot:
            order.append(i)
            continue
        if head not in subgroups:
            subgroups[head] = []
            order.append(head)
        subgroups[head].append(i)
    for item in order:
        if isinstance(item, int):
            children.append(item)
        else:
            children.append(_tree(graph, prefix + item, subgroups[item], len(shared), file_index))
    return Group(path, kind, file, line, _fold_repeats(prefix, children), column=column)


def _fold_repeats(prefix: str, children: list[int | Group]) -> tuple[int | Group, ...]:
    """Runs of sibling blocks made by one call (``bottleneck(width) x 3``) wrapped in a group of their own."""
    out: list[int | Group] = []
    i = 0
    while i < len(children):
        c = children[i]
        j = i + 1
        if isinstance(c, Group) and c.kind:
            site = (c.kind, c.file, c.line, c.column)
            while j < len(children) and isinstance(children[j], Group) and \
                    (children[j].kind, children[j].file, children[j].line, children[j].column) == site:
                j += 1
        if j - i > 1:
            run = tuple(children[i:j])
            first, last = run[0].path.rsplit(".", 1)[-1], run[-1].path.rsplit(".", 1)[-1]
            out.append(Group(f"{prefix}{first}..{last}", c.kind, c.file, c.line, run, repeat=j - i, column=c.column))
        else:
            out.append(c)
        i = j
    return tuple(out)


def _shared_trace(graph: Graph, members: list[int]) -> tuple[str, ...]:
    """The outermost call-trace entries every member shares (traces are innermost first)."""
    if not members:
        return ()
    common = graph.nodes[members[0]].trace
    for i in members[1:]:
        t = graph.nodes[i].trace
        n = 0
        while n < len(common) and n < len(t) and common[-1 - n] == t[-1 - n]:
            n += 1
        common = common[len(common) - n:]
        if not common:
            break
    return common


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"
