"""The language: every construct of the grammar, what it expands to, and how the nodes are named.

Also a property test: for random small chains of layers, the shape netdsl infers is the shape
ONNX Runtime produces.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from helpers import actual_shapes, declared_shapes, dedent
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import netdsl
from netdsl import syntax as S
from netdsl.errors import NetdslError, SemanticError


def shapes(net: netdsl.Network) -> dict[str, tuple[int, ...]]:
    """Every node's output shape by dotted name (inputs included)."""
    return {n.name: n.shape for n in net.graph.nodes}


def ops(net: netdsl.Network) -> dict[str, str]:
    return {n.name: n.op.name for n in net.graph.nodes}


def load(source: str, **kw) -> netdsl.Network:
    return netdsl.load(dedent(source), **kw)


def net_body(body: str, input_shape: str = "3x16x16") -> str:
    """A one-network program around a few statements."""
    lines = "\n".join("    " + line for line in dedent(body).splitlines())
    return f"network t {{\n    input image: {input_shape}\n{lines}\n}}\n"


# ----------------------------------------------------------------------------- parsing into the syntax tree
def test_parse_builds_spanned_tree():
    m = S.parse(dedent("""
        network t(c=2) {
            input image: 3x8x8
            conv c*2+1 3x3 /2 pad 1 -> "l{i+1}": relu x 2 as i
        }
    """), "t.net")
    assert m.blocks == () and m.imports == ()
    (net,) = m.networks
    assert net.is_network and net.name == "t" and [p.name for p in net.params] == ["c"]
    decl, chain = net.body
    assert isinstance(decl, S.InputDecl) and decl.shape == (3, 8, 8)
    conv, relu = chain.elements
    assert conv.primary.op == "conv" and conv.span.line == 3 and conv.span.column == 5
    out_expr, kernel, stride, pad_word, pad_value = conv.primary.args
    assert isinstance(out_expr, S.BinOp) and out_expr.op == "+" and out_expr.left.op == "*"
    assert kernel == S.Dims((3, 3), kernel.span) and (kernel.span.column, kernel.span.end_column) == (16, 19)
    assert isinstance(stride, S.Stride) and stride.value.value == 2
    assert pad_word.name == "pad" and pad_value.value == 1
    assert relu.index_var == "i" and relu.repeat.value == 2
    assert relu.label.is_template and relu.label.parts[0] == "l"
    # the template's expression is re-anchored at its place in the file: `i` of "l{i+1}" is column 34
    assert relu.label.parts[1].left.span.column == 34


@pytest.mark.parametrize(("expr", "value"), [
    ("7 // 2", 3), ("7 % 4", 3), ("2 + 3 * 4", 14), ("(2 + 3) * 4", 20), ("20 - 4 - 3", 13),
    ("17 // 4 * 4", 16), ("-3 + 10", 7), ("-(2 - 5)", 3), ("2 * -3 + 12", 6), ("16 + 16 % 5 * 2", 18),
    ("c // 2 + c % 3", 9), ("c*2//3", 10),
])
def test_arithmetic_in_block_arguments(expr, value):
    # the value becomes a conv's output channel count, so it is visible in the inferred shape
    net = load(f"""
        block unit(n) {{
            conv n 1x1
        }}
        network t(c=16) {{
            input image: 3x4x4
            unit({expr})
        }}
    """)
    assert shapes(net)["0.0"] == (value, 4, 4)


def test_arithmetic_in_layer_arguments_and_strides():
    net = load(net_body("""
        a: conv 16 + 16 % 5 * 2 3x3 /(6 // 4 * 2) pad 7 % 3
        b: conv 30 // 4 1 /2
    """, "3x17x17"))
    s = shapes(net)
    assert s["a"] == (18, 9, 9)  # (17 - 3 + 2) // 2 + 1
    assert s["b"] == (7, 5, 5)


def test_float_arguments_and_tabs_and_crlf():
    src = "network t {\r\n\tinput image: 3x8x8\r\n\tbn eps 1e-3 -> leaky_relu 0.2 -> dropout .5\r\n}\r\n"
    net = netdsl.load(src)
    attrs = {n.name: n.attrs for n in net.graph.nodes}
    assert attrs["0"].eps == pytest.approx(1e-3) and attrs["1"].slope == pytest.approx(0.2)
    assert attrs["2"].p == pytest.approx(0.5)


# ----------------------------------------------------------------------------- blocks, defaults, kwargs
BLOCKS = """
    block unit(c, k=3, s=1, mid=c//2) {
        a: conv mid k /s pad k//2 -> b: conv c 1x1
    }
"""


@pytest.mark.parametrize(("call", "expected"), [
    ("unit(16)", {"0.a": (8, 16, 16), "0.b": (16, 16, 16)}),  # all defaults; mid from c
    ("unit(16, 5)", {"0.a": (8, 16, 16)}),  # positional
    ("unit(16, s=2)", {"0.a": (8, 8, 8), "0.b": (16, 8, 8)}),  # keyword skips k
    ("unit(c=12, mid=3, k=1)", {"0.a": (3, 16, 16), "0.b": (12, 16, 16)}),  # keywords in any order
    ("unit(4 * 5, 1, 4)", {"0.a": (10, 4, 4)}),
])
def test_block_defaults_and_keyword_arguments(call, expected):
    net = load(dedent(BLOCKS) + net_body(call))
    s = shapes(net)
    for name, shape in expected.items():
        assert s[name] == shape
    assert [n.name for n in net.graph.nodes] == ["image", "0.a", "0.b"]


def test_default_kernel_is_used_in_weights():
    net = load(dedent(BLOCKS) + net_body("unit(16, 5)"))
    (w,) = [spec for name, spec, _ in net.graph.weight_specs() if name == "0.a.weight"]
    assert w.shape == (8, 3, 5, 5)


def test_network_parameters_default_and_override():
    src = dedent("""
        network t(classes=10, width=4) {
            input image: 3x8x8
            conv width 3x3 -> flatten -> fc classes
        }
    """)
    assert shapes(netdsl.load(src))["2"] == (10,)
    net = netdsl.load(src, args={"classes": 3, "width": 2})
    assert shapes(net)["0"] == (2, 6, 6) and shapes(net)["2"] == (3,)


# ----------------------------------------------------------------------------- repetition
def test_repetition_with_expression_count():
    net = load(dedent(BLOCKS) + net_body("""
        unit(8) x (7 // 2)
        relu x 2 * 2 - 3
    """))
    names = [n.name for n in net.graph.nodes]
    assert names == ["image", "0.a", "0.b", "1.a", "1.b", "2.a", "2.b", "3"]


def test_repetition_zero_passes_the_input_through():
    net = load(net_body("""
        conv 4 3x3 -> relu x 0 -> bn
        layer: conv 8 1x1 x (2 - 2)
        fc_ish: conv 5 1x1
    """))
    assert [(n.name, n.op.name) for n in net.graph.nodes] == [
        ("image", "input"), ("0", "conv"), ("1", "bn"), ("fc_ish", "conv")]
    assert net.graph.nodes[-1].in_shapes == ((4, 14, 14),)


def test_labelled_repetition_numbers_instances():
    net = load(dedent(BLOCKS) + net_body("layer1: unit(8) x 3\nhead: conv 2 1x1 x 2"))
    names = [n.name for n in net.graph.nodes][1:]
    assert names == ["layer1.0.a", "layer1.0.b", "layer1.1.a", "layer1.1.b", "layer1.2.a", "layer1.2.b",
                     "head.0", "head.1"]


def test_repeat_index_variable_and_label_templates():
    net = load(net_body("""
        "conv{i + 1}": conv 4 * (i + 1) 1x1 x 3 as i
        "block{2 * j}": (conv 2 1x1 -> relu) x 2 as j
    """))
    s = shapes(net)
    assert s["conv1"] == (4, 16, 16) and s["conv2"] == (8, 16, 16) and s["conv3"] == (12, 16, 16)
    assert list(s)[4:] == ["block0.0", "block0.1", "block2.0", "block2.1"]


def test_index_variable_is_scoped_to_its_repetition():
    with pytest.raises(SemanticError, match="unknown name `i`"):
        load(net_body("relu x 2 as i\nconv i 1x1"))


# ----------------------------------------------------------------------------- groups, composites
def test_groups_open_a_scope():
    net = load(net_body("""
        conv 4 1x1
        (conv 4 1x1 -> bn -> (relu -> conv 2 1x1))
        stem: (c: conv 4 1x1 -> bn)
    """))
    assert [n.name for n in net.graph.nodes][1:] == ["0", "1.0", "1.1", "1.2.0", "1.2.1", "stem.c", "stem.0"]


def test_residual_identity_shortcut_has_no_projection():
    net = load(net_body("residual< conv 3 3x3 pad 1 -> relu >"))
    assert [(n.name, n.op.name) for n in net.graph.nodes][1:] == [("0", "conv"), ("1", "relu"), ("add", "add")]
    add = net.graph.nodes[-1]
    assert add.inputs == (2, 0)  # body output + the composite's input


def test_residual_auto_projection_is_named_like_torchvision():
    net = load(net_body("layer1: residual< conv 8 3x3 /2 pad 1 >"))
    s, o = shapes(net), ops(net)
    assert s["layer1.downsample.0"] == (8, 8, 8) and o["layer1.downsample.0"] == "conv"
    assert s["layer1.downsample.1"] == (8, 8, 8) and o["layer1.downsample.1"] == "bn"
    proj = next(n for n in net.graph.nodes if n.name == "layer1.downsample.0")
    assert proj.attrs.kernel == (1, 1) and proj.attrs.stride == (2, 2) and not proj.attrs.bias


def test_residual_projection_stride_for_odd_sizes():
    # 15 -> 8 with a 3x3 /2 pad 1 conv: the 1x1 projection needs stride 2 as well
    net = load(net_body("residual< conv 6 3x3 /2 pad 1 >", "3x15x15"))
    proj = next(n for n in net.graph.nodes if n.name == "downsample.0")
    assert proj.attrs.stride == (2, 2) and proj.shape == (6, 8, 8)


def test_residual_with_explicit_shortcut():
    net = load(net_body("residual< conv 8 3x3 /2 pad 1 | sc: conv 8 1x1 /2 -> bn >"))
    assert [n.name for n in net.graph.nodes][1:] == ["0", "sc", "1", "add"]
    assert shapes(net)["add"] == (8, 8, 8)
    assert net.graph.nodes[-1].inputs == (1, 3)


def test_inception_concatenates_branches():
    net = load(net_body("""
        inception<
            b1: conv 4 1x1
          | b2: (conv 2 1x1 -> conv 6 3x3 pad 1)
          | maxpool 3x3 /1 pad 1 -> conv 5 1x1
        >
    """))
    s = shapes(net)
    assert s["concat"] == (15, 16, 16)
    assert [n.name for n in net.graph.nodes][1:] == ["b1", "b2.0", "b2.1", "0", "1", "concat"]
    concat = net.graph.nodes[-1]
    assert [net.graph.nodes[i].name for i in concat.inputs] == ["b1", "b2.1", "1"]


def test_scale_multiplies_by_its_gate():
    net = load(net_body("""
        se: scale<
            avgpool global -> conv 1 1x1 -> relu -> conv 3 1x1 -> sigmoid
        >
    """))
    s = shapes(net)
    assert s["se.mul"] == (3, 16, 16) and s["se.0"] == (3, 1, 1)
    mul = net.graph.nodes[-1]
    assert mul.op.name == "mul" and mul.inputs[0] == 0


def test_composites_nest():
    net = load(net_body("""
        residual<
            inception< conv 2 1x1 | conv 1 1x1 >
            scale< conv 3 1x1 -> sigmoid >
        >
    """))
    assert shapes(net)["add"] == (3, 16, 16)
    assert [n.op.name for n in net.graph.nodes][-1] == "add"


# ----------------------------------------------------------------------------- references and merges
def test_refs_and_merges():
    net = load(net_body("""
        a: conv 4 1x1
        b: conv 4 3x3 pad 1
        c: conv 4 1x1
        s: add(@a, @b, @c)
        m: mul(@a, @b)
        cat: concat(@image, @s, @m)
        @a -> after_a: relu
    """))
    s = shapes(net)
    assert s["s"] == (4, 16, 16) and s["m"] == (4, 16, 16) and s["cat"] == (11, 16, 16)
    nodes = {n.name: n for n in net.graph.nodes}
    index = {n.name: i for i, n in enumerate(net.graph.nodes)}
    assert nodes["s"].inputs == (index["a"], index["b"], index["c"])
    assert nodes["after_a"].inputs == (index["a"],)
    # a chain continues from its previous line: `b` reads `a`, `c` reads `b`
    assert nodes["b"].inputs == (index["a"],) and nodes["c"].inputs == (index["b"],)


def test_mul_broadcasts_a_channel_gate():
    net = load(net_body("x: conv 4 1x1\ng: avgpool global\nmul(@x, @g)"))
    assert shapes(net)["0"] == (4, 16, 16)


def test_dotted_refs_and_refs_inside_groups():
    net = load(net_body("""
        stem: (c: conv 4 1x1 -> bn)
        layer: conv 4 1x1 x 2
        s: add(@stem.c, @layer.0, @layer)
        (@image -> conv 4 1x1 -> t: relu -> add(@t, @s))
    """))
    nodes = {n.name: n for n in net.graph.nodes}
    index = {n.name: i for i, n in enumerate(net.graph.nodes)}
    assert nodes["s"].inputs == (index["stem.c"], index["layer.0"], index["layer.1"])
    # `@stem` is the group's output, `@layer` the last instance's
    assert net.graph.nodes[index["layer.0"]].inputs == (index["stem.0"],)
    assert nodes["0.1"].inputs == (index["0.t"], index["s"])  # a group sees the enclosing names


def test_block_input_in_a_repeated_block():
    net = load("""
        block dense(growth) {
            bn -> relu -> new: conv growth 3x3 pad 1
            concat(@input, @new)
        }
        network t {
            input image: 4x8x8
            features: dense(2) x 3
        }
    """)
    s = shapes(net)
    assert s["features.0.2"] == (6, 8, 8) and s["features.2.2"] == (10, 8, 8)
    nodes = {n.name: n for n in net.graph.nodes}
    index = {n.name: i for i, n in enumerate(net.graph.nodes)}
    assert nodes["features.1.2"].inputs == (index["features.0.2"], index["features.1.new"])
    assert s["features.0.new"] == (2, 8, 8) and s["features.1.0"] == (6, 8, 8)


def test_tensor_parameter_of_a_block():
    net = load("""
        block join(other) {
            c: conv 4 1x1
            add(@c, @other)
        }
        network t {
            input image: 4x8x8
            j: join(@image)
        }
    """)
    nodes = {n.name: n for n in net.graph.nodes}
    assert nodes["j.c"].inputs == (0,)
    assert nodes["j.0"].op.name == "add" and nodes["j.0"].inputs == (1, 0)


def test_multiple_inputs_and_outputs():
    net = load("""
        network two {
            input left: 3x8x8
            input right: 1x8x8
            cat: concat(@left, @right)
            feat: conv 4 3x3 pad 1
            avgpool global -> flatten -> fc 10
            output logits
            output features = @feat
            output raw = @right
        }
    """)
    assert [i.name for i in net.graph.inputs] == ["left", "right"]
    assert [(o.name, net.graph.nodes[o.node].shape) for o in net.graph.outputs] == [
        ("logits", (10,)), ("features", (4, 8, 8)), ("raw", (1, 8, 8))]


def test_output_without_declaration_is_the_last_layer():
    net = load(net_body("conv 2 1x1"))
    (out,) = net.graph.outputs
    assert out.name == "output" and net.graph.nodes[out.node].name == "0"


# ----------------------------------------------------------------------------- imports
def test_imports_of_a_block_library(write_net):
    write_net("lib/layers.net", """
        # a library: blocks only
        import "more.net"
        block unit(c) {
            conv c 3x3 pad 1 -> bn -> relu
        }
    """)
    write_net("lib/more.net", """
        block head(classes) {
            avgpool global -> flatten -> fc classes
        }
    """)
    main = write_net("main.net", """
        import "lib/layers.net"
        import "lib/more.net"   # already loaded through layers.net: read once

        network t {
            input image: 3x8x8
            stem: unit(8)
            head(5)
        }
    """)
    net = netdsl.load(main)
    assert shapes(net)["0.2"] == (5,) and shapes(net)["stem.0"] == (8, 8, 8)
    net2 = netdsl.load(str(main))  # a path given as str
    assert net2.graph.source_hash == net.graph.source_hash and len(net.graph.source_hash) == 64


def test_import_from_source_text_is_an_error():
    with pytest.raises(SemanticError, match="`import` needs a file on disk"):
        load('import "lib.net"\n' + net_body("relu"))


def test_duplicate_block_across_files(write_net):
    write_net("a.net", "block unit(c) {\n    conv c 1x1\n}\n")
    main = write_net("main.net", 'import "a.net"\nblock unit(c) {\n    conv c 3x3\n}\n' + net_body("unit(2)"))
    with pytest.raises(SemanticError, match="block `unit` is defined twice"):
        netdsl.load(main)


# ----------------------------------------------------------------- layout: comments, blank lines, continuations
def test_comments_blank_lines_and_continuations():
    net = load("""
        # leading comment

        block b(c) {   # trailing comment

            conv c 1x1   # after a layer
                -> bn    # a chain continues on a line starting with ->

                # a comment between continuation lines
                -> relu
        }
        network t(
            classes=10,
            width=2,
        ) {
            input image: 3x8x8


            stem: b(width)
            residual<
                conv 2 3x3 pad 1 -> relu
              | conv 2 1x1
            >
            inception< conv 1 1x1
                     | conv 2 1x1
                     >
            j: join(@stem,
                    @image)  # call arguments span lines after a comma
            avgpool global -> flatten
                -> fc classes
        }
        block join(x, y) {
            concat(@x, @y)
        }
    """)
    assert [n.name for n in net.graph.nodes][1:] == [
        "stem.0", "stem.1", "stem.2", "0", "1", "2", "add", "3", "4", "concat", "j.0", "5", "6", "7"]
    assert shapes(net)["j.0"] == (5, 8, 8) and shapes(net)["7"] == (10,)


def test_one_line_network():
    net = load("network t { input image: 3x4x4\nrelu }")
    assert [n.op.name for n in net.graph.nodes] == ["input", "relu"]


def test_x_is_a_keyword_but_may_start_a_name():
    net = load(net_body("x1: conv 2 1x1\nxa: relu x 2"))
    assert [n.name for n in net.graph.nodes][1:] == ["x1", "xa.0", "xa.1"]


def test_spaced_size_is_a_repetition():
    # `3 x 3` is kernel 3 repeated 3 times, not a 3x3 size: the language has no spaces in sizes
    net = load(net_body("conv 4 3 x 3"))
    assert [n.shape for n in net.graph.nodes][1:] == [(4, 14, 14), (4, 12, 12), (4, 10, 10)]
    (warning,) = net.warnings  # ... which is almost always a mistake, so it is flagged
    assert "`3 x 3` repeats the layer 3 times; a 3x3 size is written without spaces" in warning.message
    assert not load(net_body("conv 4 3x3 x 3")).warnings and not load(net_body("relu x 3")).warnings


# ----------------------------------------------------------------------------- naming
def test_torchvision_style_names():
    net = netdsl.load(Path(__file__).resolve().parent.parent / "networks" / "resnet50.net")
    names = [n.name for n in net.graph.nodes]
    for expected in ("conv1", "bn1", "layer1.0.conv1", "layer1.0.bn3", "layer1.0.downsample.0",
                     "layer1.0.downsample.1", "layer2.0.downsample.0", "layer4.2.conv3", "fc"):
        assert expected in names
    assert "layer1.1.downsample.0" not in names  # identity shortcut when the shape is unchanged
    weights = {name for name, _, _ in net.graph.weight_specs()}
    assert {"layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_mean", "layer3.5.bn2.weight",
            "fc.bias"} <= weights
    assert len(names) == len(set(names))


def test_unlabelled_elements_number_from_zero_per_scope():
    net = load("""
        block b() {
            conv 2 1x1 -> relu
            named: bn
            relu
        }
        network t {
            input image: 3x4x4
            relu -> b() -> lbl: b() -> b()
        }
    """)
    assert [n.name for n in net.graph.nodes][1:] == [
        "0", "1.0", "1.1", "1.named", "1.2", "lbl.0", "lbl.1", "lbl.named", "lbl.2", "2.0", "2.1", "2.named", "2.2"]


def test_node_spans_point_at_the_source():
    net = load(net_body("conv 2 1x1 -> relu"))
    relu = net.graph.nodes[-1]
    assert (relu.span.line, relu.span.column) == (3, 19)


def test_block_nodes_carry_their_call_chain():
    net = load("""
        block inner() {
            relu
        }
        block outer() {
            inner()
        }
        network t {
            input image: 3x4x4
            outer()
        }
    """)
    relu = net.graph.nodes[-1]
    assert relu.name == "0.0.0"
    assert relu.trace == ("in block `inner` called from <string>:5:5", "in block `outer` called from <string>:9:5")


def test_several_networks_in_one_file():
    src = dedent("""
        network a {
            input image: 3x4x4
            relu
        }
        network b {
            input image: 3x4x4
            sigmoid
        }
    """)
    assert netdsl.load(src, network="b").name == "b"
    with pytest.raises(NetdslError, match="several networks"):
        netdsl.load(src)


# ----------------------------------------------------------------- property: netdsl's shapes == ONNX Runtime's
@st.composite
def layer_chains(draw):
    """A random small valid-looking chain of layers on a random input, as .net source lines."""
    c = draw(st.integers(1, 4))
    h = draw(st.integers(6, 20))
    w = draw(st.integers(6, 20))
    lines = []
    flat = False
    for _ in range(draw(st.integers(1, 5))):
        if flat:
            kind = draw(st.sampled_from(["fc", "relu", "bn", "sigmoid"]))
        else:
            kind = draw(st.sampled_from(["conv", "conv", "maxpool", "avgpool", "bn", "relu", "upsample",
                                         "shuffle", "flatten", "adaptive"]))
        if kind == "conv":
            out = draw(st.integers(1, 6))
            kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
            parts = [f"conv {out} {kh}x{kw}"]
            s = draw(st.integers(1, 3))
            if s > 1:
                parts.append(f"/{s}")
            pad = draw(st.sampled_from(["", "pad 1", "pad 2", "pad 1x0", "pad same"]))
            if pad:
                parts.append(pad)
            d = draw(st.integers(1, 2))
            if d > 1:
                parts.append(f"dilation {d}")
            g = draw(st.sampled_from([1, 1, 2, "depthwise"]))
            if g == "depthwise":
                parts[0] = f"conv {c * draw(st.integers(1, 2))} {kh}x{kw}"
                parts.append("depthwise")
            elif g == 2 and c % 2 == 0 and out % 2 == 0:
                parts.append("groups 2")
            lines.append(" ".join(parts))
            c = int(lines[-1].split()[1])
        elif kind in ("maxpool", "avgpool"):
            k = draw(st.integers(1, 3))
            s = draw(st.integers(1, 3))
            p = draw(st.integers(0, k // 2))
            ceil = draw(st.booleans())
            lines.append(f"{kind} {k}x{k} /{s}" + (f" pad {p}" if p else "") + (" ceil" if ceil else ""))
        elif kind == "adaptive":
            lines.append(f"avgpool adaptive {draw(st.sampled_from(['1x1', '1x2']))}")
        elif kind == "upsample":
            lines.append(f"upsample {draw(st.integers(1, 2))}")
        elif kind == "shuffle":
            if c % 2 == 0:
                lines.append("channel_shuffle 2")
        elif kind == "flatten":
            lines.append("flatten")
            flat = True
        elif kind == "fc":
            lines.append(f"fc {draw(st.integers(1, 8))}")
        else:
            lines.append(kind)
    return f"3x{h}x{w}", lines


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_chains())
def test_inferred_shapes_match_onnxruntime(chain):
    input_shape, lines = chain
    src = f"network t {{\n    input image: {input_shape}\n" + "".join(f"    {ln}\n" for ln in lines) + "}\n"
    try:
        net = netdsl.load(src)
    except SemanticError:
        assume(False)  # e.g. a kernel bigger than its input: rejected, fine
    model = net.to_onnx()
    declared = declared_shapes(model)
    actual = actual_shapes(model, batch=2)  # every tensor netdsl declares, as ORT computes it
    assert set(actual) == set(declared) and len(declared) >= len(lines)
    for name, dims in declared.items():
        assert actual[name] == (2, *dims[1:]) and dims[0] == "batch", (name, src)
    final = net.graph.outputs[0]
    assert actual[final.name] == (2, *net.graph.nodes[final.node].shape), src
    onnx.checker.check_model(model, full_check=True)
