"""Arguments: a layer's arguments evaluated for its op, and a block call's arguments bound to its parameters."""

from __future__ import annotations

from .. import syntax as S
from ..errors import DiagnosticBag
from ..ops import OPS, ArgValue, Op
from ..ops.base import TensorRef
from .expressions import BUILTIN_NAMES, Evaluator, TensorArg, suggest
from .scopes import Namer, Scope

VALUE_WORDS = ("same", "true", "false")  # words that are option values (`pad same`), never names


class Unknown(Exception):
    """An argument's value is unknown because of an error already reported."""


class Arguments:
    """Evaluates layer arguments and binds block-call arguments, reporting errors to ``bag``."""

    def __init__(self, bag: DiagnosticBag, evaluator: Evaluator, namer: Namer):
        self.bag, self.evaluator, self.namer = bag, evaluator, namer

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
