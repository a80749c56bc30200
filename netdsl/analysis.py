"""Stage 3: what a checked network costs — parameters, MACs, activation memory, receptive field.

Requires: a checked :class:`~netdsl.graph.Graph`. Guarantees: one :class:`LayerStats` per layer
(inputs excluded) in graph order, and totals.

Conventions (stated in the summary and docs/language.md):

* params: trainable parameters (conv/fc weights and biases, bn gamma and beta). BN running
  statistics are buffers and are not counted, as in ``sum(p.numel() for p in model.parameters())``.
* MACs: multiply-accumulates of conv and fc layers only, per image.
* activation memory: bytes of each layer's fp32 output per image; the total is their sum.
* receptive field: side of the input region that can influence one output element, from
  rf_out = rf_in + (k_eff - 1) * jump_in and jump_out = jump_in * stride; merges take the maximum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .graph import INPUT, Graph, Node
from .ops import fmt_shape

BYTES_PER_ELEMENT = 4  # fp32


@dataclass(frozen=True, slots=True)
class LayerStats:
    name: str
    op: str
    detail: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    activation_bytes: int
    receptive_field: tuple[float, float]
    location: str

    def to_json(self) -> dict:
        rf = _rf_value(self.receptive_field)
        return {"name": self.name, "op": self.op, "output_shape": list(self.output_shape), "params": self.params,
                "macs": self.macs, "activation_bytes": self.activation_bytes, "receptive_field": rf,
                "location": self.location}


@dataclass(frozen=True, slots=True)
class Summary:
    network: str
    inputs: tuple[tuple[str, tuple[int, ...]], ...]
    outputs: tuple[tuple[str, tuple[int, ...]], ...]
    layers: tuple[LayerStats, ...]
    params: int
    macs: int
    activation_bytes: int

    def to_json(self) -> dict:
        return {
            "network": self.network,
            "inputs": [{"name": n, "shape": list(s)} for n, s in self.inputs],
            "outputs": [{"name": n, "shape": list(s)} for n, s in self.outputs],
            "layers": [layer.to_json() for layer in self.layers],
            "total": {"params": self.params, "macs": self.macs, "activation_bytes": self.activation_bytes},
            "conventions": {"macs": "multiply-accumulates of conv and fc layers, per image",
                            "params": "trainable parameters (bn running statistics excluded)",
                            "activation_bytes": "sum of every layer's fp32 output, per image"},
        }

    def rolled_up(self, depth: int) -> Summary:
        """Rows merged by the first ``depth`` components of their dotted names (``--depth``)."""
        rows: list[LayerStats] = []
        for layer in self.layers:
            key = ".".join(layer.name.split(".")[:depth])
            if rows and rows[-1].name == key and key != layer.name:
                prev = rows[-1]
                rows[-1] = LayerStats(key, "block", "", layer.output_shape, prev.params + layer.params,
                                      prev.macs + layer.macs, prev.activation_bytes + layer.activation_bytes,
                                      layer.receptive_field, prev.location)
            elif key != layer.name:
                rows.append(LayerStats(key, "block", "", layer.output_shape, layer.params, layer.macs,
                                       layer.activation_bytes, layer.receptive_field, layer.location))
            else:
                rows.append(layer)
        return Summary(self.network, self.inputs, self.outputs, tuple(rows), self.params, self.macs,
                       self.activation_bytes)


def receptive_fields(graph: Graph) -> list[tuple[float, float, float, float]]:
    """(rf_h, rf_w, jump_h, jump_w) of every tensor, in graph order."""
    out: list[tuple[float, float, float, float]] = []
    for node in graph.nodes:
        if node.op is INPUT:
            out.append((1, 1, 1, 1))
            continue
        ins = [out[i] for i in node.inputs]
        rf_h, rf_w = max(r[0] for r in ins), max(r[1] for r in ins)
        j_h, j_w = max(r[2] for r in ins), max(r[3] for r in ins)
        win = node.op.window(node.attrs, list(node.in_shapes))
        if win is not None:
            (k_h, k_w), (s_h, s_w) = win
            rf_h, rf_w = rf_h + (k_h - 1) * j_h, rf_w + (k_w - 1) * j_w
            j_h, j_w = j_h * s_h, j_w * s_w
        out.append((rf_h, rf_w, j_h, j_w))
    return out


def summarize(graph: Graph) -> Summary:
    """Per-layer statistics and totals for a checked graph."""
    rfs = receptive_fields(graph)
    layers = []
    for node, rf in zip(graph.nodes, rfs, strict=True):
        if node.op is INPUT:
            continue
        macs = node.op.macs(node.attrs, list(node.in_shapes), node.shape)
        layers.append(LayerStats(node.name, node.op.name, describe(node), node.shape, node.params, macs,
                                 math.prod(node.shape) * BYTES_PER_ELEMENT, (rf[0], rf[1]), node.location))
    return Summary(
        graph.name,
        tuple((i.name, i.shape) for i in graph.inputs),
        tuple((o.name, graph.nodes[o.node].shape) for o in graph.outputs),
        tuple(layers),
        sum(x.params for x in layers),
        sum(x.macs for x in layers),
        sum(x.activation_bytes for x in layers),
    )


def describe(node: Node) -> str:
    """A short reminder of a layer's arguments: ``7x7 /2 pad 3``."""
    a = node.attrs
    parts = []
    if a.get("global"):
        return "global"
    if a.get("adaptive") is not None:
        return f"adaptive {fmt_shape(a.adaptive)}"
    if a.get("kernel") is not None:
        parts.append(fmt_shape(a.kernel))
        if a.get("stride") not in (None, (1, 1)):
            s = a.stride
            parts.append(f"/{s[0]}" if s[0] == s[1] else f"/{fmt_shape(s)}")
        pads = a.get("pads")
        if pads and any(pads):
            parts.append("pad " + (str(pads[0]) if len(set(pads)) == 1 else ",".join(map(str, pads))))
        if a.get("groups", 1) > 1:
            parts.append(f"groups {a.groups}")
        if a.get("dilation") not in (None, (1, 1)):
            parts.append(f"dilation {fmt_shape(a.dilation)}")
        if a.get("ceil"):
            parts.append("ceil")
    if a.get("per_position"):
        parts.append("per_position")
    return " ".join(parts)


def _rf_value(rf: tuple[float, float]) -> int | float | list:
    h, w = (int(v) if float(v).is_integer() else v for v in rf)
    return h if h == w else [h, w]


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def _human_count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def render_table(summary: Summary, color: bool | None = None, width: int | None = None) -> str:
    """The summary as a terminal table (rich), with totals at the bottom."""
    import io

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"network {summary.network}", title_justify="left", show_footer=True)
    table.add_column("layer", footer="total")
    table.add_column("op")
    table.add_column("output", justify="right", footer="")
    table.add_column("params", justify="right", footer=f"{summary.params:,}")
    table.add_column("MACs (conv+fc)", justify="right", footer=f"{summary.macs:,}")
    table.add_column("memory", justify="right", footer=_human_bytes(summary.activation_bytes))
    table.add_column("RF", justify="right")
    for layer in summary.layers:
        rf = _rf_value(layer.receptive_field)
        rf_text = "x".join(str(v) for v in rf) if isinstance(rf, list) else str(rf)
        table.add_row(layer.name, f"{layer.op} {layer.detail}".strip(), fmt_shape(layer.output_shape),
                      f"{layer.params:,}" if layer.params else "-", f"{layer.macs:,}" if layer.macs else "-",
                      _human_bytes(layer.activation_bytes), rf_text)
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=bool(color), no_color=not color, width=width or 120,
                      highlight=False)
    console.print(table)
    ins = ", ".join(f"{n} {fmt_shape(s)}" for n, s in summary.inputs)
    outs = ", ".join(f"{n} {fmt_shape(s)}" for n, s in summary.outputs)
    console.print(f"inputs: {ins}   outputs: {outs}")
    console.print(f"params: {summary.params:,} ({_human_count(summary.params)})   "
                  f"MACs (conv+fc, per image): {summary.macs:,} ({_human_count(summary.macs)})   "
                  f"activations: {_human_bytes(summary.activation_bytes)} per image (fp32)")
    return buf.getvalue()
