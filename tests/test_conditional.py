"""Optional parts of a network: `if EXPR` on chain elements and on `output` declarations.

``element if EXPR`` exists only when EXPR (an integer expression of the parameters) is non-zero. A skipped
element is as if it were not written: its input flows on to the next element, it takes no position number
(like a module not appended to an ``nn.Sequential``) and its label is not bound; referring to that label is an
error that says why. ``output NAME = @ref if EXPR`` declares the output only when EXPR is non-zero, and then
only is the reference resolved. Together they give optional heads, e.g. GoogLeNet's auxiliary classifiers
(``networks/googlenet.net`` with ``aux=1``).
"""

from __future__ import annotations

import pytest
from helpers import dedent

import netdsl
from netdsl import syntax as S
from netdsl.errors import NetdslSyntaxError, SemanticError

HEADS = """
    network n(aux=0) {
        input x: 3x8x8
        stem: conv 4 3x3 pad 1
        head: (conv 2 1x1 -> flatten -> fc 5) if aux   # a side branch off `stem`
        @stem -> relu -> flatten
        fc: fc 10
        output logits
        output extra = @head if aux
    }
"""


def test_parse_tree():
    module = S.parse(dedent("""
        network n(a=1) {
            input x: 3x8x8
            c: conv 4 3x3 if a
            conv 4 1x1 x 2 if a - 1 -> relu
            output y = @c if a
        }
    """))
    _, first, second, out = module.networks[0].body
    assert isinstance(first.elements[0].condition, S.Var) and first.elements[0].condition.name == "a"
    repeated, relu = second.elements
    assert repeated.repeat.value == 2 and isinstance(repeated.condition, S.BinOp) and relu.condition is None
    assert isinstance(out, S.OutputDecl) and out.ref.path == "c" and out.condition.name == "a"


@pytest.mark.parametrize("aux", [0, 1])
def test_optional_head_and_output(aux, run_net):
    net, model, outs = run_net(HEADS, args={"aux": aux})
    names = [n.name for n in net.graph.nodes]
    assert ("head.0" in names) == bool(aux) and ("head.2" in names) == bool(aux)
    assert [o.name for o in net.graph.outputs] == (["logits", "extra"] if aux else ["logits"])
    assert list(outs) == [o.name for o in net.graph.outputs]
    assert outs["logits"].shape == (2, 10)
    if aux:
        assert outs["extra"].shape == (2, 5)
    # the main path is the same network either way
    plain = netdsl.load(dedent(HEADS))
    assert {n for n, _, _ in plain.graph.weight_specs()} == {"stem.weight", "stem.bias", "fc.weight", "fc.bias"}


def test_a_skipped_element_takes_no_number_and_passes_its_input_on():
    src = """
        network n(bn=0) {
            input x: 3x8x8
            conv 4 3x3 pad 1
            bn if bn
            relu
            conv 4 3x3 pad 1
        }
    """
    off = netdsl.load(dedent(src))
    on = netdsl.load(dedent(src), args={"bn": 1})
    assert [n.name for n in off.graph.nodes] == ["x", "0", "1", "2"]  # like nn.Sequential built with an `if`
    assert [n.name for n in on.graph.nodes] == ["x", "0", "1", "2", "3"]
    assert off.graph.nodes[2].inputs == (1,)  # relu reads the conv


def test_condition_with_repetition_and_alternatives():
    src = dedent("""
        network n(deep=0, blocks=3) {
            input x: 4x8x8
            "layer{i}": conv 4 3x3 pad 1 x blocks as i if deep
            head: (flatten -> fc 10) if 1 - deep
            head: (conv 10 1x1 -> avgpool global -> flatten) if deep
        }
    """)
    shallow = netdsl.load(src)
    assert [n.name for n in shallow.graph.nodes] == ["x", "head.0", "head.1"]
    deep = netdsl.load(src, args={"deep": 1})
    assert [n.name for n in deep.graph.nodes] == ["x", "layer0", "layer1", "layer2", "head.0", "head.1", "head.2"]
    with pytest.raises(SemanticError, match="name `head` is already used in this scope"):
        netdsl.load(src.replace("if 1 - deep", "if 1"), args={"deep": 1})


def test_referring_to_a_skipped_element_says_why():
    src = dedent(HEADS).replace("output extra = @head if aux", "output extra = @head")
    with pytest.raises(SemanticError) as info:
        netdsl.load(src)
    assert "`@head` does not exist here: its element (at <string>:4:5) is skipped because its `if` condition " \
           "is false" in str(info.value)
    assert netdsl.load(src, args={"aux": 1}).graph.outputs[1].name == "extra"


def test_condition_must_be_an_integer():
    with pytest.raises(SemanticError, match=r"an `if` condition must be an integer \(0 is false\), got 0\.5"):
        netdsl.load(dedent("""
            network n {
                input x: 3x8x8
                relu if 0.5
            }
        """))


def test_unknown_name_in_condition():
    with pytest.raises(SemanticError, match=r"unknown name `au`; did you mean `aux`\?"):
        netdsl.load(dedent(HEADS).replace("if aux   #", "if au   #"))


def test_if_is_a_keyword_after_an_element():
    with pytest.raises(NetdslSyntaxError):
        netdsl.load(dedent("""
            network n {
                input x: 3x8x8
                relu if
            }
        """))


def test_googlenet_aux_heads_are_optional():
    from helpers import NETWORKS

    plain = netdsl.load(str(NETWORKS / "googlenet.net"))
    aux = netdsl.load(str(NETWORKS / "googlenet.net"), args={"aux": 1})
    assert [o.name for o in aux.graph.outputs] == ["logits", "aux1", "aux2"]
    assert aux.graph.nodes[aux.graph.outputs[1].node].name == "aux1.fc2"
    assert aux.graph.nodes[aux.graph.outputs[2].node].name == "aux2.fc2"
    # the heads branch off inception4a and inception4d; the main path is unchanged
    assert plain.summary().params == 6_624_904 and aux.summary().params == 13_004_888
    assert [(n.name, n.inputs and [plain.graph.nodes[i].name for i in n.inputs]) for n in plain.graph.nodes] == \
        [(n.name, n.inputs and [aux.graph.nodes[i].name for i in n.inputs]) for n in aux.graph.nodes
         if not n.name.startswith("aux")]
