"""The elaborator: the one walk over a network's statements, elements, layers and block calls that builds the
checked graph, using the package's other modules for expressions, names, arguments and composites."""

from __future__ import annotations

import math
from dataclasses import replace

from .. import syntax as S
from ..errors import DiagnosticBag, SemanticError, Span, UsageError
from ..graph import INPUT, Graph, InputSpec, Node, OutputSpec
from ..ops import MERGES, OPS, Attrs, Op, OpError, fmt_shape
from ..preprocess import Preprocess
from .arguments import Arguments, looks_like_spaced_size
from .composites import COMPOSITES
from .expressions import BUILTIN_NAMES, Evaluator, TensorArg, suggest
from .limits import MAX_CALL_DEPTH, MAX_NODES, MAX_PARAMS, MAX_REPEAT, MAX_TENSOR_ELEMENTS, Fatal
from .scopes import Namer, Scope, bound, merge_names


class Elaborator:
    """Expands one network of a program into a checked :class:`Graph`."""

    def __init__(self, blocks: dict[str, S.BlockDef]):
        self.blocks = blocks
        self.nodes: list[Node] = []
        self.node_names: dict[str, Span] = {}
        self.bag = DiagnosticBag()
        self.evaluator = Evaluator(self.bag)
        self.namer = Namer(self.bag, self.evaluator)
        self.arguments = Arguments(self.bag, self.evaluator, self.namer)
        self.inputs: list[InputSpec] = []
        self.outputs: list[OutputSpec] = []
        self.fractal_joins: set[int] = set()
        self.absorbed: set[int] = set()
        self._no_input_reported = False
        self._input_failed = False  # an input was declared but its size was wrong (reported)

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
                             + suggest(name, [p.name for p in net.params]) + f" (parameters: {known})")
        for p in net.params:
            if p.name in args:
                env[p.name] = args[p.name]
            elif p.default is not None:
                env[p.name] = self.evaluator.eval(p.default, env, ())
            else:
                self.bag.error(f"network parameter `{p.name}` has no default; give it with --arg "
                               f"{p.name}=VALUE", p.span)
                env[p.name] = None
        scope = Scope("", env, ())
        try:
            flow = self.body(net.body, scope, None, is_network=True)
            if not self.inputs and not self._input_failed:
                self.bag.error(f"network `{net.name}` declares no input (e.g. `input image: 3x224x224`)",
                               net.span)
            elif not self.outputs and flow is not None:
                self.outputs.append(OutputSpec("output", flow, None))
            self._check_params()
        except Fatal:
            pass
        self.bag.raise_if_errors(SemanticError)
        self._drop_absorbed()
        return Graph(net.name, tuple(self.nodes), tuple(self.inputs), tuple(self.outputs), source_hash,
                     tuple(self.bag.warnings))

    def _drop_absorbed(self) -> None:
        """Remove the ``fractal< >`` joins whose inputs a later join took over and that nothing else reads,
        renumbering the tensors after them."""
        used = {i for n in self.nodes for i in n.inputs} | {o.node for o in self.outputs}
        drop = self.absorbed - used
        if not drop:
            return
        new, kept = {}, []
        for i, node in enumerate(self.nodes):
            if i not in drop:
                new[i] = len(kept)
                kept.append(node)
        self.nodes = [replace(n, inputs=tuple(new[i] for i in n.inputs)) for n in kept]
        self.inputs = [replace(s, node=new[s.node]) for s in self.inputs]
        self.outputs = [replace(o, node=new[o.node]) for o in self.outputs]

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
        shape = self.input_shape(st, scope)
        if shape is None:
            self._no_input_reported = True  # the layers after it, and the network, are no news
            self._input_failed = True
            return None
        if len(shape) not in (1, 3):
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

    def input_shape(self, st: S.InputDecl, scope: Scope) -> tuple[int, ...] | None:
        """The input's size, each dimension evaluated with the network's parameters; None after an error (reported
        at the dimension at fault)."""
        shape, ok = [], True
        for d in st.dims:
            v = self.evaluator.eval(d, scope.env, scope.trace)
            if v is None:
                ok = False
            elif isinstance(v, tuple) or not isinstance(v, int):
                what = fmt_shape(v) if isinstance(v, tuple) else repr(v)
                self.bag.error(f"an input size must be a positive integer, got {what}"
                               + _from_parameters(d, scope.env), d.span, scope.trace)
                ok = False
            elif v <= 0:
                self.bag.error(f"an input size must be a positive integer, got {v}" + _from_parameters(d, scope.env),
                               d.span, scope.trace)
                ok = False
            else:
                shape.append(v)
        return tuple(shape) if ok else None

    def output_decl(self, st: S.OutputDecl, scope: Scope, flow: int | None) -> None:
        if st.condition is not None and not self.evaluator.condition(st.condition, scope.env, scope.trace):
            return  # `output aux1 = @aux1 if aux` with aux false (or an error, already reported)
        tensor = self.namer.lookup(st.ref, scope) if st.ref is not None else flow
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
            present = self.evaluator.condition(el.condition, scope.env, scope.trace)
            if present is None:
                return None
            if not present:  # the element does not exist: its input flows on, it takes no name or number
                if el.label is not None and not el.label.is_template:
                    scope.absent[el.label.text] = el.span
                return flow
        prim = el.primary
        if isinstance(prim, S.Ref):
            out = self.namer.lookup(prim, scope)
            if el.repeat is not None:
                self.bag.error("a tensor reference cannot be repeated", el.span)
            label = self.namer.render_label(el.label, scope)
            if label:
                self.namer.bind_label(scope, label, out, el.label.span)
            return out
        opens_scope = not (isinstance(prim, S.Composite) and el.label is None)
        if el.repeat is None:
            label = self.namer.render_label(el.label, scope)
            if el.label is not None and label is None:
                return None
            name = self.namer.claim(scope, label, el.label.span) if label else None
            out = self.primary(prim, scope, (name or scope.next_index()) if opens_scope else "", flow)
            if label and name == label:
                self.namer.bind_label(scope, label, out, el.label.span)
            return out
        if looks_like_spaced_size(prim, el.repeat):
            a, r = prim.args[-1].value, el.repeat.value  # `conv 64 3 x 3`: kernel 3, three times
            self.bag.warning(f"`{a} x {r}` repeats the layer {r} times; a {a}x{r} size is written without spaces",
                             el.span.at(el.span.line, prim.args[-1].span.column, el.span.line,
                                        el.repeat.span.end_column), scope.trace)
        n = self.evaluator.eval(el.repeat, scope.env, scope.trace)
        if n is None:
            return None
        if not isinstance(n, int) or n < 0:
            self.bag.error(f"a repetition count must be a non-negative integer, got {n}", el.repeat.span, scope.trace)
            return None
        if n > MAX_REPEAT:
            self.bag.error(f"repetition count {n:,} is over the limit of {MAX_REPEAT:,}", el.repeat.span, scope.trace)
            raise Fatal
        out = flow
        if el.label is not None and not el.label.is_template:
            # `layer1: bottleneck(64) x 3` -> layer1.0, layer1.1, layer1.2
            name = self.namer.claim(scope, el.label.text, el.label.span)
            group = scope.child(name)
            for i in range(n):
                with bound(group, el.index_var, i):
                    out = self.primary(prim, group, str(i) if opens_scope else "", out)
                group.names[str(i)] = out
            merge_names(scope, name, group)
            if name == el.label.text:
                self.namer.bind_label(scope, el.label.text, out, el.label.span)
            return out
        for i in range(n):
            with bound(scope, el.index_var, i):
                label = self.namer.render_label(el.label, scope)  # a template: "denselayer{i + 1}"
                if el.label is not None and label is None:
                    return None
                name = self.namer.claim(scope, label, el.label.span) if label else None
                out = self.primary(prim, scope, (name or scope.next_index()) if opens_scope else "", out)
            if label and name == label:
                self.namer.bind_label(scope, label, out, el.label.span)
        return out

    def primary(self, prim, scope: Scope, name: str, flow: int | None) -> int | None:
        if isinstance(prim, S.Layer):
            return self.layer(prim, scope, name, flow)
        if isinstance(prim, S.Call):
            return self.call(prim, scope, name, flow)
        if isinstance(prim, S.Group):
            inner = scope.child(name, block_input=flow, has_input=True)
            out = self.sequence(prim.body, inner, flow)
            merge_names(scope, name, inner)
            return out
        if isinstance(prim, S.Composite):
            if name:  # a labelled composite is a scope of its own
                inner = scope.child(name, block_input=flow, has_input=True)
                out = self.composite(prim, inner, flow)
                merge_names(scope, name, inner)
                return out
            return self.composite(prim, scope, flow)
        raise AssertionError(prim)

    # ------------------------------------------------------------------ layers
    def layer(self, layer: S.Layer, scope: Scope, name: str, flow: int | None) -> int | None:
        op = OPS.get(layer.op)
        if op is None:
            self._unknown_op(layer, scope)
            return None
        args = self.arguments.layer_args(layer, op, scope)
        if args is None:
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
        refs = tuple(a.value.tensor for a in args if a.kind == "ref")  # `resize like @image`: a second input
        return self.apply(op, attrs, (flow, *refs), scope, name, layer.span)

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
            raise Fatal
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
            raise Fatal
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
            msg = f"unknown layer `{layer.op}`" + suggest(layer.op, list(OPS) + list(self.blocks))
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
                msg = f"unknown block `{call.name}`" + suggest(call.name, list(self.blocks) + list(MERGES))
            self.bag.error(msg, call.name_span, scope.trace)
            return None
        if len(scope.trace) >= MAX_CALL_DEPTH:
            chain = scope.trace[:2] + (f"... {len(scope.trace) - 3} more calls ...",) + scope.trace[-1:]
            self.bag.error(f"blocks call each other more than {MAX_CALL_DEPTH} deep (is `{call.name}` recursive?)",
                           call.span, chain)
            raise Fatal
        env = self.arguments.bind_call(block, call, scope)
        if env is None:
            return None
        note = f"in block `{block.name}` called from {call.span}"
        inner = scope.child(name, env, (note, *scope.trace), block_input=flow, has_input=True)
        for pname, value in env.items():
            if isinstance(value, TensorArg):
                inner.names[pname] = value.tensor
        out = self.body(block.body, inner, flow, is_network=False)
        merge_names(scope, name, inner)
        return out

    def merge_call(self, call: S.Call, scope: Scope, name: str) -> int | None:
        tensors = []
        for a in call.args:
            if not isinstance(a, S.Ref):
                self.bag.error(f"`{call.name}` takes tensor references like @name", getattr(a, "span", call.span),
                               scope.trace)
                return None
            tensors.append(self.namer.lookup(a, scope))
        return self.apply(MERGES[call.name], Attrs(), tuple(tensors), scope, name, call.span)

    # ------------------------------------------------------------------ composites
    def composite(self, comp: S.Composite, scope: Scope, flow: int | None) -> int | None:
        expand = COMPOSITES.get(comp.kind)
        if expand is None:
            self.bag.error(f"unknown composite `{comp.kind}<`; expected one of " + ", ".join(COMPOSITES),
                           comp.kind_span, scope.trace)
            return None
        return expand(self, comp, scope, flow)


def _from_parameters(expr: S.Expr, env: dict[str, object]) -> str:
    """`` (from `size` = 2.5)``: the parameters an expression reads, with their values, for a message."""
    names, stack = [], [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, S.Var) and e.name in env and e.name not in BUILTIN_NAMES and e.name not in names:
            names.append(e.name)
        elif isinstance(e, S.BinOp):
            stack += [e.right, e.left]
        elif isinstance(e, S.Neg):
            stack.append(e.operand)
    if not names:
        return ""
    return " (from " + ", ".join(f"`{n}` = {env[n]!r}" for n in names) + ")"


def _option_value(v: object) -> object:
    if isinstance(v, (S.Num, S.Str)):
        return v.value
    if isinstance(v, S.Var):
        return v.name
    if isinstance(v, S.Tuple_):
        return v.values
    return v
