"""`netdsl export triton`: Triton model repositories whose configuration parses with Triton's own schema
(tritonclient's ``model_config_pb2.ModelConfig``, an optional test dependency) and agrees with the model it
sits beside: names, data types and dimensions cross-checked against the ONNX file, which runs on ONNX Runtime
with the outputs of the .net it came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import NETWORKS, netdsl_main, run_onnx

import netdsl
from netdsl.triton import DATA_TYPES, quote

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient[grpc] (optional): Triton's "
                                                                  "model configuration schema")
from google.protobuf import text_format  # noqa: E402 - after the skip: tritonclient brings protobuf
from tritonclient.grpc import model_config_pb2  # noqa: E402


def parse(folder: Path) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse((folder / "config.pbtxt").read_text(), config)
    return config


def dims_of(value_info) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


def cross_check(config, model: onnx.ModelProto) -> None:
    """Every input and output of the configuration is the model's, with its data type and dimensions."""
    pb_type = model_config_pb2.DataType.Name
    for declared, actual in ((config.input, model.graph.input), (config.output, model.graph.output)):
        assert [t.name for t in declared] == [v.name for v in actual]
        for t, v in zip(declared, actual, strict=True):
            elem = v.type.tensor_type.elem_type
            assert pb_type(t.data_type) == DATA_TYPES[onnx.helper.tensor_dtype_to_np_dtype(elem).name]
            dims = dims_of(v)
            if config.max_batch_size > 0:
                assert isinstance(dims[0], str), "the batch dimension must be dynamic"
                dims = dims[1:]
            assert list(t.dims) == [d if isinstance(d, int) else -1 for d in dims]


@pytest.mark.parametrize(("network", "args"), [("lenet5", ()), ("resnet18", ()), ("mobilenet_v2", ()),
                                               ("googlenet", ("--arg", "aux=1"))])
def test_onnxruntime_repository_matches_its_model(network, args, tmp_path):
    rc, out, err = netdsl_main("export", "triton", NETWORKS / f"{network}.net", *args, "-o", tmp_path / "repo",
                               "--max-batch", "16", "--instances", "2", "--preferred-batch", "4,16")
    assert rc == 0, err
    folder = tmp_path / "repo" / network
    assert sorted(p.name for p in folder.iterdir()) == ["1", "config.pbtxt"]
    assert "parses with Triton's model configuration schema" in out
    config = parse(folder)
    assert (config.name, config.platform, config.max_batch_size) == (network, "onnxruntime_onnx", 16)
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, model_config_pb2.ModelInstanceGroup.KIND_AUTO)]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    model = onnx.load(folder / "1" / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    cross_check(config, model)
    if network == "googlenet":
        assert len(config.output) == 3  # logits and both aux heads
    # the file is the compiled network: same outputs as compiling it here
    net = netdsl.load(NETWORKS / f"{network}.net", args={"aux": 1} if args else None)
    x = np.random.default_rng(0).standard_normal((2, *config.input[0].dims)).astype(np.float32)
    got = run_onnx(model, {config.input[0].name: x})
    want = run_onnx(net.to_onnx(), {config.input[0].name: x})
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_fp16_model_and_tensorrt_accelerator(tmp_path):
    rc, _, err = netdsl_main("export", "triton", NETWORKS / "resnet18.net", "-o", tmp_path, "--dtype", "fp16",
                             "--trt-accelerator", "fp16", "--kind", "gpu", "--name", "r18.fp16")
    assert rc == 0, err
    config = parse(tmp_path / "r18.fp16")
    assert config.name == "r18.fp16"
    model = onnx.load(tmp_path / "r18.fp16" / "1" / "model.onnx")
    assert {t.data_type for t in model.graph.initializer if len(t.dims) == 4} == {onnx.TensorProto.FLOAT16}
    # fp32 inputs and outputs, as `netdsl run --dtype fp16` compiles it: clients send what they have
    assert model_config_pb2.DataType.Name(config.input[0].data_type) == "TYPE_FP32"
    cross_check(config, model)
    [accelerator] = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert dict(accelerator.parameters) == {"precision_mode": "FP16", "trt_engine_cache_enable": "1",
                                            "trt_engine_cache_path": "/tmp/triton-trt-cache/r18.fp16"}


def test_no_batching_writes_full_shapes(tmp_path):
    rc, _, err = netdsl_main("export", "triton", NETWORKS / "lenet5.net", "-o", tmp_path, "--max-batch", "0",
                             "--no-dynamic-batching")
    assert rc == 0, err
    config = parse(tmp_path / "lenet5")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [-1, 1, 32, 32]
    cross_check(config, onnx.load(tmp_path / "lenet5" / "1" / "model.onnx"))


def test_labels_are_attached_to_the_first_output(tmp_path):
    labels = tmp_path / "classes.txt"
    labels.write_text("".join(f"digit {i}\n\n" for i in range(10)))
    rc, _, err = netdsl_main("export", "triton", NETWORKS / "lenet5.net", "-o", tmp_path / "repo", "--labels", labels)
    assert rc == 0, err
    config = parse(tmp_path / "repo" / "lenet5")
    assert config.output[0].label_filename == "labels.txt"
    assert (tmp_path / "repo" / "lenet5" / "labels.txt").read_text().splitlines() == [f"digit {i}" for i in range(10)]


def test_an_onnx_file_is_exported_under_its_file_name_and_other_versions_are_kept(tmp_path):
    compiled = tmp_path / "my model.onnx"
    assert netdsl_main("compile", NETWORKS / "lenet5.net", "-o", compiled)[0] == 0
    old = tmp_path / "repo" / "my_model" / "1"
    old.mkdir(parents=True)
    (old / "model.onnx").write_bytes(b"version one")
    rc, _, err = netdsl_main("export", "triton", compiled, "-o", tmp_path / "repo", "--version", "2")
    assert rc == 0, err
    assert (old / "model.onnx").read_bytes() == b"version one"
    assert (tmp_path / "repo" / "my_model" / "2" / "model.onnx").read_bytes() == compiled.read_bytes()
    cross_check(parse(tmp_path / "repo" / "my_model"), onnx.load(compiled))


def test_a_model_with_a_fixed_batch_needs_max_batch_0(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    model = onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                                   opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "fixed.onnx"
    onnx.save(model, path)
    rc, _, err = netdsl_main("export", "triton", path, "-o", tmp_path / "repo")
    assert rc == 1
    assert 'tensor "x" has a fixed first dimension (1)' in err and "--max-batch 0" in err
    assert not (tmp_path / "repo").exists()
    rc, _, err = netdsl_main("export", "triton", path, "-o", tmp_path / "repo", "--max-batch", "0",
                             "--no-dynamic-batching")
    assert rc == 0, err
    assert list(parse(tmp_path / "repo" / "fixed").input[0].dims) == [1, 4]


@pytest.mark.parametrize(("options", "message"), [
    (("--instances", "0"), "--instances must be at least 1"),
    (("--preferred-batch", "4,32"), "preferred batch size 32 is outside 1..8"),
    (("--preferred-batch", "four"), "expected batch sizes such as 4,8"),
    (("--max-batch", "0"), "dynamic batching needs a batch dimension"),
    (("--name", "../escape"), "must be 1-100 letters"),
    (("--name=-x",), "must be 1-100 letters"),
    (("--platform", "tensorrt_plan", "--trt-accelerator", "fp16"), "applies to --platform onnxruntime_onnx"),
    (("--trt-accelerator", "fp16", "--kind", "cpu"), "runs on GPU instances"),
])
def test_bad_options_are_one_line_errors_and_write_nothing(options, message, tmp_path):
    rc, _, err = netdsl_main("export", "triton", NETWORKS / "lenet5.net", "-o", tmp_path / "repo", *options)
    assert rc in (1, 2)
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "repo").exists()


def test_a_file_where_the_repository_should_be_is_refused(tmp_path):
    (tmp_path / "repo").write_text("not a folder")
    rc, _, err = netdsl_main("export", "triton", NETWORKS / "lenet5.net", "-o", tmp_path / "repo")
    assert rc == 2 and "is not a folder" in err
    assert (tmp_path / "repo").read_text() == "not a folder"


def test_names_are_quoted_for_the_text_format():
    config = model_config_pb2.ModelConfig()
    odd = 'in"put\\ é\n'
    text_format.Parse(f"name: {quote(odd)}", config)
    assert config.name == odd


def test_tensorrt_plan_repository(tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="building a plan on the CPU needs TensorRT for RTX (optional)")
    rc, out, err = netdsl_main("export", "triton", NETWORKS / "lenet5.net", "-o", tmp_path / "repo",
                               "--platform", "tensorrt_plan", "--max-batch", "4")
    assert rc == 0, err
    config = parse(tmp_path / "repo" / "lenet5")
    assert (config.platform, config.max_batch_size) == ("tensorrt_plan", 4)
    cross_check(config, netdsl.load(NETWORKS / "lenet5.net").to_onnx())
    plan = (tmp_path / "repo" / "lenet5" / "1" / "model.plan").read_bytes()
    # the same engine `netdsl build` makes for that batch range (both come from the engine cache's one key)
    rc, _, err = netdsl_main("build", NETWORKS / "lenet5.net", "--batch", "1..4", "-o", tmp_path / "b.plan")
    assert rc == 0, err
    assert (tmp_path / "b.plan").read_bytes() == plan
    assert "TensorRT for RTX" in out and "rebuild there" in out
