"""Diagnostics that help a user coming from other frameworks (the golden files in tests/golden/diagnostics pin
their full text): suggestions by meaning, warnings shown with errors, habits such as ``pad=1``, parameters named
like options, messages in the user's words, and errors of imported files."""

from __future__ import annotations

import pytest
from helpers import dedent, netdsl_main

import netdsl
from netdsl.errors import NetdslSyntaxError, SemanticError
from netdsl.ops import MERGES, OPS
from netdsl.ops.synonyms import SYNONYMS, did_you_mean, suggestions


def errors_of(source: str) -> list:
    with pytest.raises(netdsl.NetdslError) as err:
        netdsl.load(source)
    return err.value.diagnostics


# ----------------------------------------------------------------------------- suggestions by meaning
def test_meaning_comes_before_spelling_and_only_names_ops_that_exist():
    known = ["conv", "fc", "bn", "relu"]
    assert suggestions("deconv", known) == ["conv"]  # no transposed conv in this table: spelling only
    assert suggestions("deconv", [*known, "convtranspose"]) == ["convtranspose"]
    assert suggestions("upconv", [*known, "convtranspose"]) == ["convtranspose"]
    assert suggestions("ln", [*known, "layernorm"]) == ["layernorm"] and suggestions("ln", known) == []
    assert suggestions("interpolate", [*known, "upsample", "resize"]) == ["resize", "upsample"]
    assert did_you_mean("Dense", known) == "; did you mean `fc`?"
    assert did_you_mean("ConvTranspose2d", ["conv", "convtranspose"]) == "; did you mean `convtranspose`?"


@pytest.mark.parametrize("word", sorted(SYNONYMS))
def test_a_synonym_never_suggests_an_op_that_is_not_there(word):
    known = list(OPS) + list(MERGES)
    assert set(suggestions(word, known)) <= set(known)


def test_an_unknown_layer_points_to_the_ops_command():
    (d,) = errors_of("network t {\n    input image: 3x8x8\n    flatten -> dense 10\n}\n")
    assert d.message == "unknown layer `dense`; did you mean `fc`? (`netdsl ops` lists every op)"


# ----------------------------------------------------------------------------- warnings with errors
def test_warnings_come_with_the_errors_they_explain():
    diags = errors_of(dedent("""
        network t {
            input image: 3x32x32
            a: conv 16 3 x 3
            @image -> b: conv 16 3x3
            concat(@a, @b)
        }
    """))
    assert [d.severity for d in diags] == ["warning", "error"]
    assert "repeats the layer 3 times" in diags[0].message and "spatial size" in diags[1].message


# ----------------------------------------------------------------------------- habits of other frameworks
@pytest.mark.parametrize(("line", "message"), [
    ("conv 16 3x3 pad=1", "`pad=1`: options are written without `=`, as `pad 1`"),
    ("conv 16 3x3 dilation = 2", "`dilation = 2`: options are written without `=`, as `dilation 2`"),
    ("conv 16 3x3 stride=2", "`stride=2`: options are written without `=`, as `stride 2` (or `/2`)"),
    ("conv 16 kernel=3 pad 1", "`kernel=3`: a layer's arguments are written without `=`, and the kernel size "
                               "without a name: `conv 16 3 pad 1`"),
    ("c1: conv 64, 3x3, pad 1 -> relu", "a layer's arguments are separated by spaces, not commas: "
                                        "`conv 64 3x3 pad 1`"),
    ("concat @image @image", "`concat` takes tensors in parentheses: write `concat(@image, @image)`"),
])
def test_a_habit_gets_a_targeted_message(line, message):
    with pytest.raises((NetdslSyntaxError, SemanticError)) as err:
        netdsl.load(f"network t {{\n    input image: 3x8x8\n    {line}\n}}\n")
    (d,) = err.value.diagnostics
    assert d.message == message and d.span.line == 3


def test_a_merge_written_as_a_layer_is_told_the_same_by_the_parser_and_the_checker():
    """`concat @a @b` is a layer with tensor arguments to the parser and a merge written wrongly to the checker;
    `concat 2` is a syntax error only the checker can tell: the message and its place are the same either way."""
    with pytest.raises(SemanticError) as err:
        netdsl.load("network t {\n    input image: 3x8x8\n    concat @image @image\n}\n")
    (d,) = err.value.diagnostics
    assert (d.span.column, d.span.end_column) == (5, 11)
    (e,) = errors_of("network t {\n    input image: 3x8x8\n    concat 2\n}\n")
    assert e.message == "`concat` takes tensors in parentheses: write `concat(@a, @b)`"
    assert (e.span.column, e.span.end_column) == (5, 11)


def test_equals_where_the_language_has_it_is_no_habit():
    net = netdsl.load(dedent("""
        block unit(c, p=1) {
            conv c 3x3 pad p
        }
        network t {
            input image: 3x8x8 mean=(0.5, 0.5, 0.5) std=(0.5, 0.5, 0.5)
            unit(4, p=1)
        }
    """))
    assert net.graph.nodes[-1].shape == (4, 8, 8)


# ----------------------------------------------------------------------------- parameters named like options
def test_a_parameter_named_like_an_option_is_an_error_at_the_parameter():
    diags = errors_of(dedent("""
        block b(c, dil=2) {
            conv c 3x3 pad 2 dilation dil
        }
        network t {
            input image: 3x8x8
            b(4)
        }
    """))
    (d,) = diags  # and no "`dilation` needs a value" after it
    assert d.message.startswith("parameter `dil` has the name of conv's option `dilation` (alias `dil`)")
    assert (d.span.line, d.span.column) == (1, 12) and d.notes == ("conv uses `dil` at <string>:2:31",)


def test_a_parameter_used_as_a_value_is_no_clash():
    net = netdsl.load(dedent("""
        block b(c, stride=1, groups=1) {
            conv c 3x3 /stride pad 1 groups groups*1
        }
        network t {
            input image: 4x8x8
            b(4, 2, 2)
        }
    """))
    assert net.graph.nodes[-1].shape == (4, 4, 4)


# ----------------------------------------------------------------------------- the user's words
def test_an_arg_error_names_the_parameter_not_the_internal_option():
    rc, out, err = netdsl_main("check", "networks/resnet18.net", "--arg", "classes=2.5")
    assert rc == 1
    assert "fc's number of output features must be an integer, got 2.5 (from `classes` = 2.5)" in err
    assert "`out`" not in err


# ----------------------------------------------------------------------------- imports
def test_an_error_in_an_imported_file_says_where_it_was_imported(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "inner.net").write_text("block inner(c) {\n    conv c 3x3 pad=1\n}\n", encoding="utf-8")
    (tmp_path / "lib" / "outer.net").write_text('import "inner.net"\n', encoding="utf-8")
    main = tmp_path / "main.net"
    main.write_text('\nimport "lib/outer.net"\n\nnetwork t {\n    input image: 3x8x8\n    relux\n}\n',
                    encoding="utf-8")
    with pytest.raises(SemanticError) as err:
        netdsl.load(main)
    first, second = err.value.diagnostics
    assert first.message.startswith("`pad=1`") and first.span.path.endswith("inner.net")
    assert first.notes[-2].startswith("imported from ") and first.notes[-2].endswith("outer.net:1")
    assert first.notes[-1].endswith("main.net:2")
    assert second.message.startswith("unknown layer `relux`")  # the importing file is still checked


def test_a_missing_import_does_not_hide_the_other_errors(tmp_path):
    main = tmp_path / "main.net"
    main.write_text('import "nowhere.net"\n\nnetwork t {\n    input image: 3x8x8\n    unit(4)\n'
                    '    @image -> conv 8 3x3 groups 3\n}\n', encoding="utf-8")
    with pytest.raises(SemanticError) as err:
        netdsl.load(main)
    messages = [d.message for d in err.value.diagnostics]
    assert len(messages) == 2, messages  # `unit` may come from the missing file: not reported
    assert messages[0].startswith("cannot import nowhere.net: no such file")
    assert messages[1].startswith("groups 3 must divide")
