"""Stage 2: syntax tree -> checked graph (semantic expansion and shape inference).

Requires: parsed modules (imports resolved by :mod:`netdsl.loader`).
Guarantees: a :class:`~netdsl.graph.Graph` whose every node has a known output shape and a unique
dotted name, or a :class:`~netdsl.errors.SemanticError` listing every independent error found.

Expansion and shape inference are one walk because the language needs shapes to expand:
a ``residual<...>`` whose body changes the shape gets a projection shortcut, and conv/fc infer
their input sizes. A layer whose inputs are unknown (because of an earlier error) is skipped
silently, so one mistake is reported once rather than cascading.

Naming (chosen so torchvision state_dict keys match with no mapping):

* a label (``conv1:``) names an element; block calls, groups ``( ... )`` and labelled composites
  open a scope, so names nest into dotted paths (``layer1.0.conv1``);
* unlabelled elements are numbered by position in their scope, from 0, like ``nn.Sequential``;
* ``x N`` numbers the instances (``layer1.0``, ``layer1.1`` for a labelled repeat);
* unlabelled composites are transparent: their contents live in the enclosing scope;
* an automatic projection shortcut is ``downsample`` (a conv ``downsample.0`` and bn ``downsample.1``).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

from . import syntax as S
from .errors import DiagnosticBag, SemanticError, Span, UsageError
from .graph import INPUT, Graph, InputSpec, Node, OutputSpec
from .ops import MERGES, OPS, ArgValue, Attrs, Op, OpError, fmt_shape
from .preprocess import Preprocess

MAX_CALL_DEPTH = 64
MAX_REPEAT = 10_000
MAX_NODES = 1_000_000
MAX_TENSOR_ELEMENTS = 2**31 - 1
MAX_PARAMS = 2**31 - 1  # 8 GiB of fp32 weights
MAX_INT = 2**62

COMPOSITES = ("residual", "inception", "scale", "seq")
BUILTIN_NAMES = {"true": 1, "false": 0}


class _Fatal(Exception):
    """Stops elaboration: a runaway limit was hit and continuing could exhaust memory."""


Value = int | float | tuple[int, ...] | None  # a tuple is a size (`1x7`); None: unknown because of an earlier error


@dataclass(frozen=True, slots=True)
class TensorArg:
    tensor: int | None


@dataclass
class Scope:
    path: str  # "" at the network root, else "layer1.0."
    env: dict[str, object]
    trace: tuple[str, ...]
    block_input: int | None = None
    names: dict[str, int | None] = field(default_factory=dict)
    label_spans: dict[str, Span] = field(default_factory=dict)
    counter: int = 0
    used: set[str] = field(default_factory=set)
    absent: dict[str, Span] = field(default_factory=dict)  # labels of elements skipped by a false `if`
    parent: Scope | None = None  # the enclosing scope whose names stay visible (None for a block body)
    has_input: bool = False  # `@input` means `block_input` here (a block body or a group)

    def child(self, name: str, env: dict[str, object] | None = None, trace: tuple[str, ...] | None = None,
              block_input: int | None = None, has_input: bool = False) -> Scope:
        """A nested naming scope. Groups and composites see the enclosing names; a block body (``env`` given)
        sees only its own names and parameters."""
        return Scope(self.path + name + ".", self.env if env is None else env,
                     self.trace if trace is None else trace, block_input,
                     parent=self if env is None else None, has_input=has_input)

    def next_index(self) -> str:
        i = self.counter
        self.counter += 1
        return str(i)

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.used or name in self.names:
            name = f"{base}_{k}"
            k += 1
        self.used.add(name)
        return name


class Elaborator:
    """Expands one network of a program into a checked :class:`Graph`."""

    def __init__(self, blocks: dict[str, S.BlockDef]):
        self.blocks = blocks
        self.nodes: list[Node] = []
        self.node_names: dict[str, Span] = {}
        self.bag = DiagnosticBag()
        self.inputs: list[InputSpec] = []
        self.outputs: list[OutputSpec] = []
        self._no_input_reported = False

    # ------------------------------------------------------------------ entry point
    def network(self, net: S.BlockDef, args: dict[str, int | float], source_hash: str = "") -> Graph:
        """The checked graph of ``net`` with parameter values ``args``; ``source_hash`` identifies the program's
        text (see :class:`~netdsl.graph.Graph`)."""
        env: dict[str, object] = dict(BUILTIN_NAMES)
        unknown = set(args) - {p.name for p in net.params}
        if unknown:  # a wrong --arg (or args=) is a usage error, not an error in the file
            name = sorted(unknown)[0]
            known = ", ".join(p.name for p in net.params) or "none"
            raise UsageError(f"network `{net.name}` has no parameter `{name}`"
                             + _suggest(name, [p.name for p in net.params]) + f" (parameters: {known})")
        for p in net.params:
            if p.name in args:
                env[p.name] = args[p.name]
            elif p.default is not None:
                env[p.name] = self.eval(p.default, env, ())
            else:
                self.bag.error(f"network parameter `{p.name}` has no default; give it with --arg "
                               f"{p.name}=VALUE", p.span)
                env[p.name] = None
        scope = Scope("", env, ())
        try:
            flow = self.body(net.body, scope, None, is_network=True)
            if not self.inputs:
                self.bag.error(f"network `{net.name}` declares no input (e.g. `input image: 3x224x224`)",
                               net.span)
            elif not self.outputs and flow is not None:
                self.outputs.append(OutputSpec("output", flow, None))
            self._check_params()
        except _Fatal:
            pass
        self.bag.raise_if_errors(SemanticError)
        return Graph(net.name, tuple(self.nodes), tuple(self.inputs), tuple(self.outputs), source_hash,
                     tuple(self.bag.warnings))

    def _check_params(self) -> None:
        total = sum(n.params for n in self.nodes)
        if total > MAX_PARAMS:
            biggest = max(self.nodes, key=lambda n: n.params)
            self.bag.error(f"the network has {total:,} parameters ({total * 4 / 2**30:.1f} GiB in fp32), more than "
                           f"the limit of {MAX_PARAMS:,}; the largest layer is `{biggest.name}` with "
                           f"{biggest.params:,}", biggest.span, biggest.trace)

    # ------------------------------------------------------------------ statements
    def body(self, stmts: tuple[S.Statement, ...], scope: Scope, flow: int | None, is_network: bool) -> int | None:
        for st in stmts:
            if isinstance(st, S.InputDecl):
                if not is_network:
                    self.bag.error("`input` declarations belong in a network, not in a block "
                                   "(a block's input is `@input`)", st.span)
                    continue
                flow = self.input_decl(st, scope)
            elif isinstance(st, S.OutputDecl):
                if not is_network:
                    self.bag.error("`output` declarations belong in a network, not in a block", st.span)
                    continue
                self.output_decl(st, scope, flow)
            else:
                flow = self.chain(st, scope, flow)
        return flow

    def input_decl(self, st: S.InputDecl, scope: Scope) -> int | None:
        shape = st.shape
        if len(shape) not in (1, 3) or min(shape) <= 0:
            self.bag.error(f"an input shape is CxHxW (or C for a flat input) with positive sizes, "
                           f"got {fmt_shape(shape)}", st.span)
            return None
        if math.prod(shape) > MAX_TENSOR_ELEMENTS:
            self.bag.error(f"input {fmt_shape(shape)} has more than {MAX_TENSOR_ELEMENTS:,} elements", st.span)
            return None
        if st.name in scope.names:
            self.bag.error(f"name `{st.name}` is already used in this network", st.span)
            return None
        options = tuple((name, _option_value(v)) for name, v, _ in st.options)
        try:
            Preprocess.from_options(shape, dict(options))
        except ValueError as e:
            self.bag.error(str(e), st.span)
        idx = self.add_node(Node(st.name, INPUT, Attrs(), (), (), shape, st.span))
        scope.names[st.name] = idx
        self.inputs.append(InputSpec(st.name, shape, idx, options, st.span))
        return idx

    def output_decl(self, st: S.OutputDecl, scope: Scope, flow: int | None) -> None:
        if st.condition is not None and not self.condition(st.condition, scope):
            return  # `output aux1 = @aux1 if aux` with aux false (or an error, already reported)
        tensor = self.lookup(st.ref, scope) if st.ref is not None else flow
        if any(o.name == st.name for o in self.outputs):
            self.bag.error(f"output `{st.name}` is declared twice", st.span)
            return
        if tensor is None:
            if st.ref is None and not self.bag.errors:  # else the layers before it failed: already reported
                self.bag.error("`output` with no `= @name` needs a preceding layer", st.span)
            return
        self.outputs.append(OutputSpec(st.name, tensor, st.span))

    def chain(self, chain: S.Chain, scope: Scope, flow: int | None) -> int | None:
        for el in chain.elements:
            flow = self.element(el, scope, flow)
        return flow

    def sequence(self, seq: S.Sequence, scope: Scope, flow: int | None) -> int | None:
        for ch in seq.chains:
            flow = self.chain(ch, scope, flow)
        return flow

    # ------------------------------------------------------------------ elements
    def element(self, el: S.Element, scope: Scope, flow: int | None) -> int | None:
        if el.condition is not None:
            present = self.condition(el.condition, scope)
            if present is None:
                return None
            if not present:  # the element does not exist: its input flows on, it takes no name or number
                if el.label is not None and not el.label.is_template:
                    scope.absent[el.label.text] = el.span
                return flow
        prim = el.primary
        if isinstance(prim, S.Ref):
            out = self.lookup(prim, scope)
            if el.repeat is not None:
                self.bag.error("a tensor reference cannot be repeated", el.span)
            label = self.render_label(el.label, scope)
            if label:
                self._bind_label(scope, label, out, el.label.span)
            return out
        opens_scope = not (isinstance(prim, S.Composite) and el.label is None)
        if el.repeat is None:
            label = self.render_label(el.label, scope)
            if el.label is not None and label is None:
                return None
            name = self._claim(scope, label, el.label.span) if label else None
            out = self.primary(prim, scope, (name or scope.next_index()) if opens_scope else "", flow)
            if label and name == label:
                self._bind_label(scope, label, out, el.label.span)
            return out
        if _looks_like_spaced_size(prim, el.repeat):
            a, r = prim.args[-1].value, el.repeat.value  # `conv 64 3 x 3`: kernel 3, three times
            self.bag.warning(f"`{a} x {r}` repeats the layer {r} times; a {a}x{r} size is written without spaces",
                             el.span.at(el.span.line, prim.args[-1].span.column, el.span.line,
                                        el.repeat.span.end_column), scope.trace)
        n = self.eval(el.repeat, scope.env, scope.trace)
        if n is None:
            return None
        if not isinstance(n, int) or n < 0:
            self.bag.error(f"a repetition count must be a non-negative integer, got {n}", el.repeat.span, scope.trace)
            return None
        if n > MAX_REPEAT:
            self.bag.error(f"repetition count {n:,} is over the limit of {MAX_REPEAT:,}", el.repeat.span, scope.trace)
            raise _Fatal
        out = flow
        if el.label is not None and not el.label.is_template:
            # `layer1: bottleneck(64) x 3` -> layer1.0, layer1.1, layer1.2
            name = self._claim(scope, el.label.text, el.label.span)
            group = scope.child(name)
            for i in range(n):
                with _bound(group, el.index_var, i):
                    out = self.primary(prim, group, str(i) if opens_scope else "", out)
                group.names[str(i)] = out
            self._merge_names(scope, name, group)
            if name == el.label.text:
                self._bind_label(scope, el.label.text, out, el.label.span)
            return out
        for i in range(n):
            with _bound(scope, el.index_var, i):
                label = self.render_label(el.label, scope)  # a template: "denselayer{i + 1}"
                if el.label is not None and label is None:
                    return None
                name = self._claim(scope, label, el.label.span) if label else None
                out = self.primary(prim, scope, (name or scope.next_index()) if opens_scope else "", out)
            if label and name == label:
                self._bind_label(scope, label, out, el.label.span)
        return out

    def _claim(self, scope: Scope, label: str, span: Span) -> str:
        """The name a labelled element takes: its label, or after a duplicate (reported here, once) a name that
        no source can spell, so that elaboration goes on and finds the independent errors after it."""
        if label in scope.label_spans:
            first = scope.label_spans[label]
            self.bag.error(f"name `{label}` is already used in this scope (first at {first})" if first != span else
                           f"this name template gives `{label}` more than once; make it unique, e.g. with the "
                           f"repetition index", span, scope.trace)
            return label + "#duplicate"
        return label

    def condition(self, expr: S.Expr, scope: Scope) -> bool | None:
        """The value of an ``if`` condition: an integer, true when non-zero; None after an error."""
        v = self.eval(expr, scope.env, scope.trace)
        if v is None:
            return None
        if not isinstance(v, int):
            self.bag.error(f"an `if` condition must be an integer (0 is false), got {v}", expr.span, scope.trace)
            return None
        return v != 0

    def render_label(self, label: S.Label | None, scope: Scope) -> str | None:
        """A label's text, with a template's ``{expr}`` parts evaluated; None on error or no label."""
        if label is None:
            return None
        if not label.is_template:
            return label.text
        out = []
        for part in label.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            v = self.eval(part, scope.env, scope.trace)
            if v is None:
                return None
            if not isinstance(v, int):
                self.bag.error(f"a name template needs integers, got {v}", part.span, scope.trace)
                return None
            out.append(str(v))
        return "".join(out)

    def _bind_label(self, scope: Scope, label: str, tensor: int | None, span: Span) -> None:
        if label in scope.label_spans:
            self.bag.error(f"name `{label}` is already used in this scope (first at {scope.label_spans[label]})",
                           span, scope.trace)
            return
        scope.label_spans[label] = span
        scope.names[label] = tensor

    @staticmethod
    def _merge_names(parent: Scope, prefix: str, child: Scope) -> None:
        for k, v in child.names.items():
            parent.names[f"{prefix}.{k}"] = v

    def primary(self, prim, scope: Scope, name: str, flow: int | None) -> int | None:
        if isinstance(prim, S.Layer):
            return self.layer(prim, scope, name, flow)
        if isinstance(prim, S.Call):
            return self.call(prim, scope, name, flow)
        if isinstance(prim, S.Group):
            inner = scope.child(name, block_input=flow, has_input=True)
            out = self.sequence(prim.body, inner, flow)
            self._merge_names(scope, name, inner)
            return out
        if isinstance(prim, S.Composite):
            if name:  # a labelled composite is a scope of its own
                inner = scope.child(name, block_input=flow, has_input=True)
                out = self.composite(prim, inner, flow)
                self._merge_names(scope, name, inner)
                return out
            return self.composite(prim, scope, flow)
        raise AssertionError(prim)

    # ------------------------------------------------------------------ layers
    def layer(self, layer: S.Layer, scope: Scope, name: str, flow: int | None) -> int | None:
        op = OPS.get(layer.op)
        if op is None:
            self._unknown_op(layer, scope)
            return None
        args, failed = [], False
        for a in layer.args:  # every argument, so that independent mistakes are all reported
            try:
                args.append(self._layer_arg(a, op, scope))
            except _Unknown:
                failed = True
        if failed:
            return None
        try:  # arguments are checked even when the input is unknown: their errors do not depend on it
            attrs = op.bind(args)
        except OpError as e:
            self.bag.error(str(e), getattr(e, "span", None) or layer.span, scope.trace)
            return None
        if flow is None:
            if not self.nodes and not self._no_input_reported:  # once: the layers after it are no news
                self._no_input_reported = True
                self.bag.error("a layer needs an input: declare one first (e.g. `input image: 3x224x224`)",
                               layer.span, scope.trace)
            return None
        return self.apply(op, attrs, (flow,), scope, name, layer.span)

    def _layer_arg(self, arg, op: Op, scope: Scope) -> ArgValue:
        if isinstance(arg, S.Dims):
            return ArgValue("dims", arg.values, arg.span)
        if isinstance(arg, S.Stride):
            v = arg.value
            value = v.values if isinstance(v, S.Dims) else self._need(self.eval(v, scope.env, scope.trace))
            return ArgValue("stride", value, arg.span)
        if isinstance(arg, S.Var) and (arg.name not in scope.env or _is_option(op, arg.name)):
            if arg.name not in scope.env and not _is_option(op, arg.name) and arg.name not in _VALUE_WORDS:
                options = [o.name for o in op.options if not o.positional]
                hint = _suggest(arg.name, [k for k in scope.env if k not in BUILTIN_NAMES] + options)
                if hint:  # a misspelt parameter or option; otherwise bind() lists the options
                    self.bag.error(f"unknown name `{arg.name}`{hint}", arg.span, scope.trace)
                    raise _Unknown
            return ArgValue("word", arg.name, arg.span)
        first = arg
        while isinstance(first, S.BinOp):
            first = first.left
        if first is not arg and isinstance(first, S.Var) and first.name not in scope.env and _is_option(op, first.name):
            # `pad -1` is `pad - 1`: a layer argument cannot start with a sign
            self.bag.error(f"the option `{first.name}` cannot take part in arithmetic (`{first.name} -1` reads as "
                           f"`{first.name} - 1`; option values are never negative)", arg.span, scope.trace)
            raise _Unknown
        return ArgValue("value", self._need(self.eval(arg, scope.env, scope.trace)), arg.span)

    @staticmethod
    def _need(v):
        if v is None:
            raise _Unknown
        return v

    def apply(self, op: Op, attrs: Attrs, inputs: tuple[int | None, ...], scope: Scope, name: str,
              span: Span) -> int | None:
        """Infer one node's shape and add it to the graph; None if it cannot be (error reported)."""
        if any(i is None for i in inputs):
            return None
        in_shapes = tuple(self.nodes[i].shape for i in inputs)
        try:
            shape, attrs = op.infer(attrs, list(in_shapes))
        except OpError as e:
            self.bag.error(str(e), getattr(e, "span", None) or span, scope.trace)
            return None
        if math.prod(shape) > MAX_TENSOR_ELEMENTS:
            self.bag.error(f"{op.name} output {fmt_shape(shape)} has more than {MAX_TENSOR_ELEMENTS:,} "
                           f"elements per image", span, scope.trace)
            raise _Fatal
        warning = op.dropped(attrs, list(in_shapes))
        if warning:
            self.bag.warning(warning, span, scope.trace)
        weights = tuple(op.weights(attrs, list(in_shapes)))
        return self.add_node(Node(scope.path + name, op, attrs, tuple(inputs), in_shapes, shape, span,
                                  scope.trace, weights))

    def add_node(self, node: Node) -> int:
        if node.name in self.node_names:
            self.bag.error(f"two layers would both be named `{node.name}` (the other is at "
                           f"{self.node_names[node.name]})", node.span, node.trace)
        self.node_names[node.name] = node.span
        if len(self.nodes) >= MAX_NODES:
            self.bag.error(f"the network expands to more than {MAX_NODES:,} layers", node.span, node.trace)
            raise _Fatal
        self.nodes.append(node)
        return len(self.nodes) - 1

    def _unknown_op(self, layer: S.Layer, scope: Scope) -> None:
        if layer.op in self.blocks:
            msg = f"`{layer.op}` is a block: call it with parentheses, `{layer.op}(...)`"
        elif layer.op in MERGES:
            msg = f"`{layer.op}` takes tensors: write `{layer.op}(@a, @b)`"
        elif layer.op in COMPOSITES:
            msg = f"`{layer.op}` is a composite: write `{layer.op}< ... >`"
        else:
            msg = f"unknown layer `{layer.op}`" + _suggest(layer.op, list(OPS) + list(self.blocks))
        self.bag.error(msg, layer.op_span, scope.trace)

    # ------------------------------------------------------------------ calls
    def call(self, call: S.Call, scope: Scope, name: str, flow: int | None) -> int | None:
        if call.name in MERGES:
            return self.merge_call(call, scope, name)
        block = self.blocks.get(call.name)
        if block is None:
            if call.name in OPS:
                msg = f"`{call.name}` is a layer: write its arguments without parentheses, e.g. `conv 64 3x3`"
            else:
                msg = f"unknown block `{call.name}`" + _suggest(call.name, list(self.blocks) + list(MERGES))
            self.bag.error(msg, call.name_span, scope.trace)
            return None
        if len(scope.trace) >= MAX_CALL_DEPTH:
            chain = scope.trace[:2] + (f"... {len(scope.trace) - 3} more calls ...",) + scope.trace[-1:]
            self.bag.error(f"blocks call each other more than {MAX_CALL_DEPTH} deep (is `{call.name}` recursive?)",
                           call.span, chain)
            raise _Fatal
        env = self.bind_call(block, call, scope)
        if env is None:
            return None
        note = f"in block `{block.name}` called from {call.span}"
        inner = scope.child(name, env, (note, *scope.trace), block_input=flow, has_input=True)
        for pname, value in env.items():
            if isinstance(value, TensorArg):
                inner.names[pname] = value.tensor
        out = self.body(block.body, inner, flow, is_network=False)
        self._merge_names(scope, name, inner)
        return out

    def bind_call(self, block: S.BlockDef, call: S.Call, scope: Scope) -> dict[str, object] | None:
        env: dict[str, object] = dict(BUILTIN_NAMES)
        given: dict[str, object] = {}
        ok = True
        positional = [a for a in call.args if not isinstance(a, S.KwArg)]
        if len(positional) > len(block.params):
            self.bag.error(f"block `{block.name}` takes {len(block.params)} argument(s), got {len(positional)}",
                           call.span, scope.trace)
            return None
        for p, a in zip(block.params, positional, strict=False):
            given[p.name] = self._call_arg(a, scope)
        names = {p.name for p in block.params}
        for a in call.args:
            if isinstance(a, S.KwArg):
                if a.name not in names:
                    self.bag.error(f"block `{block.name}` has no parameter `{a.name}`"
                                   + _suggest(a.name, list(names)), a.span, scope.trace)
                    ok = False
                elif a.name in given:
                    self.bag.error(f"parameter `{a.name}` given twice", a.span, scope.trace)
                    ok = False
                else:
                    given[a.name] = self._call_arg(a.value, scope)
        for p in block.params:
            if p.name in given:
                env[p.name] = given[p.name]
            elif p.default is not None:
                env[p.name] = self.eval(p.default, env, scope.trace)  # defaults may use earlier parameters
            else:
                self.bag.error(f"block `{block.name}` needs parameter `{p.name}`", call.span, scope.trace)
                ok = False
        if not ok or any(v is None for v in env.values()):
            return None
        return env

    def _call_arg(self, a, scope: Scope) -> object:
        if isinstance(a, S.Ref):
            return TensorArg(self.lookup(a, scope))
        return self.eval(a, scope.env, scope.trace)

    def merge_call(self, call: S.Call, scope: Scope, name: str) -> int | None:
        tensors = []
        for a in call.args:
            if not isinstance(a, S.Ref):
                self.bag.error(f"`{call.name}` takes tensor references like @name", getattr(a, "span", call.span),
                               scope.trace)
                return None
            tensors.append(self.lookup(a, scope))
        return self.apply(MERGES[call.name], Attrs(), tuple(tensors), scope, name, call.span)

    def lookup(self, ref: S.Ref, scope: Scope) -> int | None:
        """The tensor a ``@name`` refers to: the innermost scope that binds it, then enclosing scopes up to the
        block body or network. ``@input`` is the input of the innermost block call or group."""
        visible: list[str] = []
        s: Scope | None = scope
        while s is not None:
            if ref.path in s.names:
                return s.names[ref.path]
            if ref.path == "input" and s.has_input:
                return s.block_input  # None only after an error already reported
            if ref.path in s.absent:
                self.bag.error(f"`@{ref.path}` does not exist here: its element (at {s.absent[ref.path]}) is "
                               f"skipped because its `if` condition is false", ref.span, scope.trace)
                return None
            visible.extend(s.names)
            s = s.parent
        if ref.path == "input":
            self.bag.error("`@input` is the input of a block or group; in a network use the input's name",
                           ref.span, scope.trace)
            return None
        self.bag.error(f"unknown tensor `@{ref.path}`" + _suggest(ref.path, visible), ref.span, scope.trace)
        return None

    # ------------------------------------------------------------------ composites
    def composite(self, comp: S.Composite, scope: Scope, flow: int | None) -> int | None:
        kind = comp.kind
        if kind not in COMPOSITES:
            self.bag.error(f"unknown composite `{kind}<`; expected one of " + ", ".join(COMPOSITES),
                           comp.kind_span, scope.trace)
            return None
        if kind == "seq":  # a plain chain; unlabelled, it numbers its layers in the enclosing scope
            if len(comp.branches) != 1:
                self.bag.error("seq< > takes one branch", comp.span, scope.trace)
                return None
            return self.sequence(comp.branches[0], scope, flow)
        if kind == "inception":
            outs = [self.sequence(b, scope, flow) for b in comp.branches]
            if any(o is None for o in outs):
                return None
            shapes = [self.nodes[o].shape for o in outs]
            if any(len(s) != 3 for s in shapes) or len({s[1:] for s in shapes}) > 1:
                desc = ", ".join(f"{_branch_name(b, i)} {fmt_shape(s[1:])}"
                                 for i, (b, s) in enumerate(zip(comp.branches, shapes, strict=True)))
                self.bag.error(f"inception branches disagree on spatial size: {desc}", comp.span, scope.trace)
                return None
            return self.apply(MERGES["concat"], Attrs(), tuple(outs), scope, scope.unique("concat"), comp.span)
        if kind == "scale":
            if len(comp.branches) != 1:
                self.bag.error("scale< > takes one branch (the gate)", comp.span, scope.trace)
                return None
            gate = self.sequence(comp.branches[0], scope, flow)
            if gate is None or flow is None:
                return None
            xs, gs = self.nodes[flow].shape, self.nodes[gate].shape
            if gs != xs and gs != (xs[0],) + (1,) * (len(xs) - 1):
                self.bag.error(f"scale gate outputs {fmt_shape(gs)} but must be {fmt_shape((xs[0], 1, 1))} or "
                               f"{fmt_shape(xs)} to scale its input {fmt_shape(xs)}", comp.span, scope.trace)
                return None
            return self.apply(MERGES["mul"], Attrs(), (flow, gate), scope, scope.unique("mul"), comp.span)
        return self.residual(comp, scope, flow)

    def residual(self, comp: S.Composite, scope: Scope, flow: int | None) -> int | None:
        if len(comp.branches) > 2:
            self.bag.error("residual< body | shortcut > takes at most two branches", comp.span, scope.trace)
            return None
        body = self.sequence(comp.branches[0], scope, flow)
        if len(comp.branches) == 2:
            short = self.sequence(comp.branches[1], scope, flow)
            if body is None or short is None:
                return None
            bs, ss = self.nodes[body].shape, self.nodes[short].shape
            if bs != ss:
                self.bag.error(f"residual body outputs {fmt_shape(bs)} but its shortcut outputs {fmt_shape(ss)}",
                               comp.span, scope.trace)
                return None
        else:
            if body is None or flow is None:
                return None
            bs, xs = self.nodes[body].shape, self.nodes[flow].shape
            short = flow
            if bs != xs:
                stride = _projection_stride(xs, bs)
                if stride is None:
                    why = (f"a 1x1 conv of any stride cannot turn {fmt_shape(xs[1:])} into {fmt_shape(bs[1:])}"
                           if len(xs) == 3 == len(bs) else "a projection needs CxHxW tensors")
                    self.bag.error(f"residual body outputs {fmt_shape(bs)} but its input is {fmt_shape(xs)}, and "
                                   f"no projection shortcut can match them ({why}); give the shortcut: "
                                   f"residual< body | shortcut >", comp.span, scope.trace)
                    return None
                short = self.projection(scope, flow, bs[0], stride, comp.span)
        return self.apply(MERGES["add"], Attrs(), (body, short), scope, scope.unique("add"), comp.span)

    def projection(self, scope: Scope, x: int, channels: int, stride: tuple[int, int], span: Span) -> int | None:
        """torchvision's projection shortcut: downsample.0 = conv 1x1 /stride nobias, downsample.1 = bn."""
        inner = scope.child(scope.unique("downsample"))
        conv, bn = OPS["conv"], OPS["bn"]
        args = [ArgValue("value", channels, span), ArgValue("value", 1, span), ArgValue("stride", stride, span),
                ArgValue("word", "nobias", span)]
        y = self.apply(conv, conv.bind(args), (x,), inner, "0", span)
        return self.apply(bn, bn.bind([]), (y,), inner, "1", span)

    # ------------------------------------------------------------------ expressions
    def eval(self, e, env: dict[str, object], trace: tuple[str, ...]) -> Value:
        """Evaluate an integer/float expression; reports errors and returns None for unknown values."""
        if isinstance(e, S.Num):
            return e.value
        if isinstance(e, S.Dims):  # a size such as 1x7, passed to a block and on to a layer's size argument
            return e.values
        if isinstance(e, S.Var):
            if e.name not in env:
                self.bag.error(f"unknown name `{e.name}`" + _suggest(e.name, [k for k in env if k not in
                                                                               BUILTIN_NAMES]), e.span, trace)
                return None
            v = env[e.name]
            if isinstance(v, TensorArg):
                self.bag.error(f"`{e.name}` is a tensor; refer to it as `@{e.name}`", e.span, trace)
                return None
            return v
        if isinstance(e, S.Neg):
            v = self.eval(e.operand, env, trace)
            if isinstance(v, tuple):
                return self._size_as_number(v, e.span, trace)
            return None if v is None else -v
        if isinstance(e, S.BinOp):
            a, b = self.eval(e.left, env, trace), self.eval(e.right, env, trace)
            if a is None or b is None:
                return None
            if isinstance(a, tuple) or isinstance(b, tuple):
                return self._size_as_number(a if isinstance(a, tuple) else b, e.span, trace)
            if e.op in ("//", "%") and b == 0:
                self.bag.error("division by zero", e.span, trace)
                return None
            v = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "//": lambda: a // b,
                 "%": lambda: a % b, "==": lambda: int(a == b), "!=": lambda: int(a != b),
                 "<": lambda: int(a < b), "<=": lambda: int(a <= b), ">": lambda: int(a > b),
                 ">=": lambda: int(a >= b)}[e.op]()
            if isinstance(v, int) and abs(v) > MAX_INT:
                self.bag.error(f"integer {v} is too large", e.span, trace)
                return None
            return v
        raise AssertionError(e)


    def _size_as_number(self, size: tuple[int, ...], span: Span, trace: tuple[str, ...]) -> None:
        self.bag.error(f"{fmt_shape(size)} is a size, not a number: it can only be passed on to a layer argument "
                       f"that takes a size (kernel, pad, stride, adaptive)", span, trace)


class _bound:
    """Bind a repetition's index variable (`x N as i`) in a scope for one instance."""

    def __init__(self, scope: Scope, var: str | None, value: int):
        self.scope, self.var, self.value = scope, var, value

    def __enter__(self):
        if self.var is not None:
            self.saved = self.scope.env
            self.scope.env = {**self.scope.env, self.var: self.value}

    def __exit__(self, *exc):
        if self.var is not None:
            self.scope.env = self.saved


class _Unknown(Exception):
    """An argument's value is unknown because of an error already reported."""


_VALUE_WORDS = ("same", "true", "false")  # words that are option values (`pad same`), never names


def _looks_like_spaced_size(prim, repeat) -> bool:
    """`conv 64 3 x 3`: a kernel size written with spaces parses as a repetition; warn about it.

    Only when the layer takes a kernel, its last argument is a bare integer that is not an option's value
    (`pad 1 x 3` is fine), and the count is a bare integer on the same line (`x (3)` is deliberate).
    """
    if not (isinstance(prim, S.Layer) and prim.args and isinstance(repeat, S.Num)):
        return False
    op, last = OPS.get(prim.op), prim.args[-1]
    if op is None or not any(o.name == "kernel" for o in op.options):
        return False
    if not (isinstance(last, S.Num) and isinstance(last.value, int) and last.span.line == repeat.span.line):
        return False
    if len(prim.args) >= 2 and isinstance(prim.args[-2], S.Var) and _is_option(op, prim.args[-2].name):
        return False
    text = repeat.span.quoted_line() or ""
    before = text[: repeat.span.column - 1].rstrip()
    return not before.endswith("(")


def _is_option(op: Op, name: str) -> bool:
    return any(name == o.name or name in o.aliases for o in op.options if not o.positional)


def _option_value(v: object) -> object:
    if isinstance(v, (S.Num, S.Str)):
        return v.value
    if isinstance(v, S.Var):
        return v.name
    if isinstance(v, S.Tuple_):
        return v.values
    return v


def _projection_stride(x: tuple[int, ...], y: tuple[int, ...]) -> tuple[int, int] | None:
    if len(x) != 3 or len(y) != 3:
        return None
    stride = []
    for n, m in zip(x[1:], y[1:], strict=True):
        s = next((s for s in range(1, n + 1) if (n - 1) // s + 1 == m), None)
        if s is None:
            return None
        stride.append(s)
    return (stride[0], stride[1])


def _branch_name(seq: S.Sequence, i: int) -> str:
    first = seq.chains[0].elements[0] if seq.chains and seq.chains[0].elements else None
    return first.label.text if first is not None and first.label else f"branch {i + 1}"


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.7)
    return f"; did you mean `{close[0]}`?" if close else ""
