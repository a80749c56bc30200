"""Arguments: a layer's arguments evaluated for its op, and a block call's arguments bound to its parameters."""

from __future__ import annotations

from .. import syntax as S
from ..errors import DiagnosticBag
from ..ops import OPS, ArgValue, Op, Option
from ..ops.base import TensorRef
from .expressions import BUILTIN_NAMES, Evaluator, TensorArg, suggest
from .scopes import Namer, Scope

VALUE_WORDS = ("same", "true", "false")  # words that are option values (`pad same`), never names


class Unknown(Exception):
    """An argument's value is unknown because of an error already reported."""


class Arguments:
    """Evaluates layer arguments and binds block-call arguments, reporting errors to ``bag``."""

    def __init__(self, bag: DiagnosticBag, evaluator: Evaluator, namer: Namer, clashing: set[str] | None = None):
        self.bag, self.evaluator, self.namer = bag, evaluator, namer
        self.clashing = clashing if clashing is not None else set()  # see :func:`option_clashes` (reported)

    # ------------------------------------------------------------------ layer arguments
    def layer_args(self, layer: S.Layer, op: Op, scope: Scope) -> list[ArgValue] | None:
        """Every argument of ``layer`` evaluated (so that independent mistakes are all reported); None if one
        is unknown."""
        args, failed = [], False
        for a in layer.args:
            try:
                args.append(self.layer_arg(a, op, scope))
            except Unknown:
                failed = True
        return None if failed else args

    def layer_arg(self, arg, op: Op, scope: Scope) -> ArgValue:
        if isinstance(arg, S.Ref):  # `resize like @image`: the tensor becomes the layer's second input
            if not op.takes_ref:
                self.bag.error(f"{op.name} takes no tensor reference (`@{arg.path}`); tensors are combined with "
                               f"merges such as add(@a, @b) or concat(@a, @b)", arg.span, scope.trace)
                raise Unknown
            tensor = self.namer.lookup(arg, scope)
            if tensor is None:
                raise Unknown
            return ArgValue("ref", TensorRef(arg.path, tensor), arg.span)
        if isinstance(arg, S.Dims):
            return ArgValue("dims", arg.values, arg.span)
        if isinstance(arg, S.Stride):
            v = arg.value
            value = v.values if isinstance(v, S.Dims) else _need(self.evaluator.eval(v, scope.env, scope.trace))
            return ArgValue("stride", value, arg.span)
        if isinstance(arg, S.Var) and arg.name in self.clashing and arg.name in scope.env and is_option(op, arg.name):
            raise Unknown  # a parameter named like the option: reported at the parameter
        if isinstance(arg, S.Var) and (arg.name not in scope.env or is_option(op, arg.name)):
            if arg.name not in scope.env and not is_option(op, arg.name) and arg.name not in VALUE_WORDS:
                options = [o.name for o in op.options if not o.positional]
                hint = suggest(arg.name, [k for k in scope.env if k not in BUILTIN_NAMES] + options)
                if hint:  # a misspelt parameter or option; otherwise bind() lists the options
                    self.bag.error(f"unknown name `{arg.name}`{hint}", arg.span, scope.trace)
                    raise Unknown
            return ArgValue("word", arg.name, arg.span)
        first = arg
        while isinstance(first, S.BinOp):
            first = first.left
        if first is not arg and isinstance(first, S.Var) and first.name not in scope.env and is_option(op, first.name):
            # `pad -1` is `pad - 1`: a layer argument cannot start with a sign
            self.bag.error(f"the option `{first.name}` cannot take part in arithmetic (`{first.name} -1` reads as "
                           f"`{first.name} - 1`; option values are never negative)", arg.span, scope.trace)
            raise Unknown
        return ArgValue("value", _need(self.evaluator.eval(arg, scope.env, scope.trace)), arg.span)

    # ------------------------------------------------------------------ block calls
    def bind_call(self, block: S.BlockDef, call: S.Call, scope: Scope) -> dict[str, object] | None:
        """The environment of a block body: its parameters bound to the call's arguments and defaults."""
        env: dict[str, object] = dict(BUILTIN_NAMES)
        given: dict[str, object] = {}
        ok = True
        positional = [a for a in call.args if not isinstance(a, S.KwArg)]
        if len(positional) > len(block.params):
            self.bag.error(f"block `{block.name}` takes {len(block.params)} argument(s), got {len(positional)}",
                           call.span, scope.trace)
            return None
        for p, a in zip(block.params, positional, strict=False):
            given[p.name] = self.call_arg(a, scope)
        names = {p.name for p in block.params}
        for a in call.args:
            if isinstance(a, S.KwArg):
                if a.name not in names:
                    self.bag.error(f"block `{block.name}` has no parameter `{a.name}`"
                                   + suggest(a.name, list(names)), a.span, scope.trace)
                    ok = False
                elif a.name in given:
                    self.bag.error(f"parameter `{a.name}` given twice", a.span, scope.trace)
                    ok = False
                else:
                    given[a.name] = self.call_arg(a.value, scope)
        for p in block.params:
            if p.name in given:
                env[p.name] = given[p.name]
            elif p.default is not None:
                env[p.name] = self.evaluator.eval(p.default, env, scope.trace)  # defaults may use earlier parameters
            else:
                self.bag.error(f"block `{block.name}` needs parameter `{p.name}`", call.span, scope.trace)
                ok = False
        if not ok or any(v is None for v in env.values()):
            return None
        return env

    def call_arg(self, a, scope: Scope) -> object:
        if isinstance(a, S.Ref):
            return TensorArg(self.namer.lookup(a, scope))
        return self.evaluator.eval(a, scope.env, scope.trace)


def _need(v):
    if v is None:
        raise Unknown
    return v


def is_option(op: Op, name: str) -> bool:
    """Whether ``name`` is one of ``op``'s keyword options (or their aliases)."""
    return any(name == o.name or name in o.aliases for o in op.options if not o.positional)


def looks_like_spaced_size(prim, repeat) -> bool:
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
    if len(prim.args) >= 2 and isinstance(prim.args[-2], S.Var) and is_option(op, prim.args[-2].name):
        return False
    text = repeat.span.quoted_line() or ""
    before = text[: repeat.span.column - 1].rstrip()
    return not before.endswith("(")


def option_clashes(block: S.BlockDef) -> list[tuple[S.Param, Op, Option, S.Var]]:
    """The parameters of ``block`` (or a network) that a layer of its body names as an argument while the layer's
    op has an option (or alias) of that name, so that the name reads as the option, never as the parameter
    (``block b(dil) { conv 8 3x3 dilation dil }``): each with the op, the option and the first such use."""
    params = {p.name: p for p in block.params}
    found: dict[str, tuple[S.Param, Op, Option, S.Var]] = {}
    stack: list = list(block.body)
    while stack:
        node = stack.pop()
        if isinstance(node, S.Chain):
            stack.extend(el.primary for el in reversed(node.elements))
        elif isinstance(node, S.Group):
            stack.extend(reversed(node.body.chains))
        elif isinstance(node, S.Composite):
            stack.extend(ch for seq in reversed(node.branches) for ch in reversed(seq.chains))
        elif isinstance(node, S.Layer) and node.op in OPS:
            op, args, i = OPS[node.op], node.args, 0
            # only a bare name is read as an option (in `/stride` or `groups g*2` a name is a value); an option's
            # own keyword is fine (`groups` in `groups groups`): the name that stands where its value should be,
            # or a keyword left without a value, is the parameter that clashes
            while i < len(args):
                var = args[i]
                opt = _option_named(op, var.name) if isinstance(var, S.Var) else None
                if opt is None:
                    i += 1
                    continue
                use = var
                if opt.kind != "flag" and i + 1 < len(args):
                    i += 1
                    use = args[i]
                    opt = _option_named(op, use.name) if isinstance(use, S.Var) else None
                if opt is not None and use.name in params:
                    found.setdefault(use.name, (params[use.name], op, opt, use))
                i += 1
    return list(found.values())


def _option_named(op: Op, name: str) -> Option | None:
    return next((o for o in op.options if not o.positional and (name == o.name or name in o.aliases)), None)
