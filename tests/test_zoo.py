"""The network zoo (networks/*.net): published figures, valid ONNX, runs in ONNX Runtime, torchvision weight names.

Every ``networks/*.net`` file is picked up by a glob, so a new zoo network is covered as soon as it exists. Its
published figures go in ``PUBLISHED``; its torchvision state_dict keys in ``tests/fixtures/torchvision_keys/`` (made
by ``tools/make_key_fixtures.py --ref DIR`` from ``tools/torchvision_reference.py`` dumps), or, for a network with
no torchvision counterpart, a reason in ``NO_TORCHVISION``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import netdsl

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted(ROOT.joinpath("networks").glob("*.net"))
KEY_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "torchvision_keys"

# network -> (params, MACs of conv+fc layers per image at the file's input size, source). Params must match exactly,
# MACs within MACS_TOLERANCE (published MAC figures are often rounded or count slightly different layers).
PUBLISHED: dict[str, tuple[int, int, str]] = {
    # 156 + 2,416 + 48,120 + 10,164 + 850 params; MACs 6*28*28*25 + 16*10*10*150 + 120*400 + 120*84 + 84*10
    "lenet5": (61_706, 416_520, "LeCun et al. 1998 (C1..F6 + 10-way output; MACs counted by hand)"),
    "alexnet": (61_100_840, 714_188_480, "torchvision AlexNet_Weights: 61.1M params, 0.71 GFLOPS"),
    "vgg16": (138_357_544, 15_470_264_320, "torchvision VGG16_Weights: 138.4M params, 15.47 GFLOPS"),
    "googlenet": (6_624_904, 1_498_376_192, "torchvision GoogLeNet_Weights: 6.6M params, 1.5 GFLOPS"),
    "resnet18": (11_689_512, 1_814_073_344, "torchvision ResNet18_Weights: 11.7M params, 1.81 GFLOPS"),
    "resnet50": (25_557_032, 4_089_184_256, "torchvision ResNet50_Weights: 25.6M params, 4.09 GFLOPS"),
    "resnet34": (21_797_672, 3_663_761_408, "torchvision ResNet34_Weights: 21.8M params, 3.66 GFLOPS"),
    "resnet101": (44_549_160, 7_801_405_440, "torchvision ResNet101_Weights: 44.5M params, 7.8 GFLOPS"),
    "resnet152": (60_192_808, 11_513_626_624, "torchvision ResNet152_Weights: 60.2M params, 11.51 GFLOPS"),
    "wide_resnet50_2": (68_883_240, 11_398_021_120, "torchvision Wide_ResNet50_2_Weights: 68.9M params, 11.4 GFLOPS"),
    "resnext50_32x4d": (25_028_904, 4_230_479_872, "torchvision ResNeXt50_32X4D_Weights: 25.0M params, 4.23 GFLOPS"),
    "vgg11": (132_863_336, 7_609_090_048, "torchvision VGG11_Weights: 132.9M params, 7.61 GFLOPS"),
    "vgg13": (133_047_848, 11_308_466_176, "torchvision VGG13_Weights: 133.0M params, 11.31 GFLOPS"),
    "vgg19": (143_667_240, 19_632_062_464, "torchvision VGG19_Weights: 143.7M params, 19.63 GFLOPS"),
    "vgg16_bn": (138_365_992, 15_470_264_320, "torchvision VGG16_BN_Weights: 138.4M params, 15.47 GFLOPS"),
    "densenet121": (7_978_856, 2_834_161_664, "torchvision DenseNet121_Weights: 8.0M params, 2.83 GFLOPS"),
    # Inception_V3_Weights lists 27,161,264 params with the auxiliary classifier; without it (aux_logits=False)
    # torchvision counts 23,834,568. 5.71 GFLOPS at 3x299x299.
    "inception_v3": (23_834_568, 5_713_216_096, "torchvision inception_v3(aux_logits=False): 23.8M, 5.71 GFLOPS"),
    # Krizhevsky et al. 2012 ("60 million parameters" for the two-GPU split, 60,965,224 with split=2); the
    # single-GPU figures are counted by hand in the file's header (conv 34,944 + 614,656 + 885,120 + 1,327,488 +
    # 884,992, fc 37,752,832 + 16,781,312 + 4,097,000; MACs 105.4M + 447.9M + 149.5M + 224.3M + 149.5M + 58.6M).
    "alexnet_original": (62_378_344, 1_135_256_096, "Krizhevsky et al. 2012, single-GPU, counted by hand"),
    # Zeiler & Fergus 2013, figure 3 (the paper states no totals): the layer table's sizes counted by hand.
    "zfnet": (62_357_608, 1_168_032_896, "Zeiler & Fergus 2013 figure 3, counted by hand"),
    # He et al. 2016 (no figure for 50 layers in the paper): ResNet-50's conv/fc weights and MACs exactly, with
    # 45,440 BN params (pre-activation layout) instead of 53,120.
    "preact_resnet50": (25_549_352, 4_089_184_256, "He et al. 2016 identity mappings, counted"),
    # Hu et al. 2018: "~28.1M" params (r = 16), = ResNet-50 + 2,514,944 SE weights + 16,048 SE biases; MACs are
    # ResNet-50 v1.5's + the SE fc weights (the paper's 3.87 GFLOPs is on the stride-in-1x1 ResNet-50 v1 base).
    "se_resnet50": (28_088_024, 4_091_699_200, "Hu et al. 2018 SENet: ~28.1M params; timm seresnet50 28,088,024"),
    "mobilenet_v2": (3_504_872, 300_774_272, "torchvision MobileNet_V2_Weights: 3,504,872 params, 0.301 GFLOPS"),
    "mobilenet_v3_large": (5_483_032, 216_589_760,
                           "torchvision MobileNet_V3_Large_Weights: 5,483,032 params, 0.217 GFLOPS"),
    "squeezenet1_0": (1_248_424, 818_924_576, "torchvision SqueezeNet1_0_Weights: 1,248,424 params, 0.819 GFLOPS"),
    "squeezenet1_1": (1_235_496, 349_151_936, "torchvision SqueezeNet1_1_Weights: 1,235,496 params, 0.349 GFLOPS"),
    "shufflenet_v2_x1_0": (2_278_604, 144_907_992,
                           "torchvision ShuffleNet_V2_X1_0_Weights: 2,278,604 params, 0.145 GFLOPS"),
    "efficientnet_b0": (5_288_548, 385_814_752, "torchvision EfficientNet_B0_Weights: 5,288,548 params, 0.386 GFLOPS"),
    "regnet_y_400mf": (4_344_144, 401_842_848, "torchvision RegNet_Y_400MF_Weights: 4,344,144 params, 0.402 GFLOPS"),
    "regnet_x_400mf": (5_495_976, 413_812_608, "torchvision RegNet_X_400MF_Weights: 5,495,976 params, 0.414 GFLOPS"),
    "mnasnet1_0": (4_383_312, 314_415_872, "torchvision MNASNet1_0_Weights: 4,383,312 params, 0.314 GFLOPS"),
    "efficientnet_v2_s": (21_458_488, 8_365_617_152,
                          "torchvision EfficientNet_V2_S_Weights: 21,458,488 params, 8.366 GFLOPS at 384x384"),
    "convnext_tiny": (28_589_128, 4_455_531_264, "torchvision ConvNeXt_Tiny_Weights: 28,589,128 params, 4.456 GFLOPS"),
    # Howard et al. 2017, table 1 / table 4: "569 million" mult-adds (568,740,352 here: 567,716,352 conv +
    # 1,024,000 fc) and "4.2 million" params (4,210,088 conv + fc weights here; the 21,888 BN scales and shifts
    # that netdsl counts, as PyTorch does, make 4,231,976).
    "mobilenet_v1": (4_231_976, 569_000_000, "Howard et al. 2017: 4.2M params, 569M mult-adds"),
    # Larsson et al. 2017 give no count for this configuration; counted by hand (tests/test_fractalnet.py checks it
    # against an independent PyTorch implementation): per block 4 convs C_in->C and 11 C->C (3x3, no bias) and 15
    # bns; convs 412,416 + 1,916,928 + 7,667,712 + 30,670,848 + 35,389,440, bns 44,160, fc 5,130. MACs: each conv
    # x H x W: 422,313,984 + 490,733,568 x 3 + 141,557,760, fc 5,120.
    "fractalnet": (76_106_634, 2_036_077_568, "Larsson et al. 2017 CIFAR FractalNet, C = 4: counted by hand"),
}
MACS_TOLERANCE = 0.005

# Zoo networks that have no torchvision model to match names against.
NO_TORCHVISION = {
    "lenet5": "torchvision has no LeNet-5",
    "alexnet_original": "torchvision's alexnet is the 2014 one-GPU variant (64-192-384-256-256, no LRN)",
    "zfnet": "torchvision has no ZFNet",
    "preact_resnet50": "torchvision has no pre-activation ResNet",
    "se_resnet50": "torchvision has no SE-ResNet (the names follow timm's seresnet50)",
    "mobilenet_v1": "torchvision has no MobileNet v1 (the names are netdsl's own: features.N.depthwise/pointwise)",
    "fractalnet": "torchvision has no FractalNet (the names follow the recursion: block1.deep.0.shallow.conv)",
    "unet": "torchvision has no U-Net (tests/test_unet.py checks it against a PyTorch module written to the paper)",
    "unet_original": "torchvision has no U-Net (tests/test_unet.py: the paper's 572x572 -> 388x388, its formula)",
}

BATCH = 2


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


KEYED = [p for p in ZOO if (KEY_FIXTURES / f"{p.stem}.json").exists()]


@pytest.fixture(scope="module", params=ZOO, ids=_ids(ZOO))
def compiled(request) -> tuple[netdsl.Network, onnx.ModelProto]:
    """Each zoo network loaded and lowered once per module (vgg16 alone is 553 MB of weights)."""
    net = netdsl.load(str(request.param))
    return net, net.to_onnx()


def test_zoo_is_not_empty():
    assert {"lenet5", "alexnet", "vgg16", "googlenet", "resnet18", "resnet50"} <= {p.stem for p in ZOO}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_figures(name):
    params, macs, source = PUBLISHED[name]
    path = ROOT / "networks" / f"{name}.net"
    assert path.exists(), f"PUBLISHED lists {name} but there is no {path}"
    summary = netdsl.load(str(path)).summary()
    assert summary.params == params, f"{name}: {summary.params:,} params, published {params:,} ({source})"
    assert abs(summary.macs - macs) <= MACS_TOLERANCE * macs, \
        f"{name}: {summary.macs:,} MACs, published {macs:,} ({source})"


@pytest.mark.parametrize("path", ZOO, ids=_ids(ZOO))
def test_zoo_file_checks_without_warnings_and_states_its_figures(path):
    net = netdsl.load(str(path))
    assert net.warnings == [], [str(w) for w in net.warnings]
    summary = net.summary()
    head = path.read_text().split("\n\n", 1)[0]  # the leading comment block
    assert head.startswith("#"), f"{path.name} must start with a comment citing the paper"
    assert f"{summary.params:,} params" in head, f"{path.name}'s header does not state {summary.params:,} params"
    assert f"{summary.macs:,} MACs" in head, f"{path.name}'s header does not state {summary.macs:,} MACs"


def test_onnx_checker_full(compiled):
    _, model = compiled
    onnx.checker.check_model(model, full_check=True)


def test_onnx_runtime_runs_batch(compiled):
    net, model = compiled
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal((BATCH, *i.shape)).astype(np.float32) for i in net.graph.inputs}
    assert [i.name for i in session.get_inputs()] == list(feeds)
    results = session.run(None, feeds)
    declared = [(o.name, (BATCH, *net.graph.nodes[o.node].shape)) for o in net.graph.outputs]
    assert [o.name for o in session.get_outputs()] == [name for name, _ in declared]
    for (name, shape), y in zip(declared, results, strict=True):
        assert y.shape == shape, f"output {name}: {y.shape}, declared {shape}"
        assert y.dtype == np.float32
        assert np.isfinite(y).all(), f"output {name} has non-finite values"
        assert np.ptp(y) > 0, f"output {name} is constant"


def test_every_zoo_network_has_torchvision_keys_or_a_reason():
    fixtures = {p.stem for p in KEY_FIXTURES.glob("*.json")}
    zoo = {p.stem for p in ZOO}
    missing = sorted(zoo - fixtures - set(NO_TORCHVISION))
    assert not missing, (f"no torchvision key fixture for {missing}: run tools/make_key_fixtures.py --ref DIR "
                         f"NAME, or give a reason in NO_TORCHVISION")
    assert not fixtures - zoo, f"key fixtures without a zoo network: {sorted(fixtures - zoo)}"
    assert not fixtures & set(NO_TORCHVISION), "a network is both in NO_TORCHVISION and has a key fixture"


@pytest.mark.parametrize("compiled", KEYED, ids=_ids(KEYED), indirect=True)
def test_weight_names_match_torchvision(compiled):
    net, model = compiled
    data = json.loads((KEY_FIXTURES / f"{Path(net.path).stem}.json").read_text())
    expected = {key: tuple(shape) for key, shape in data["keys"].items()}
    assert expected, "empty fixture"
    specs = {name: tuple(spec.shape) for name, spec, _ in net.graph.weight_specs()}
    assert sorted(set(specs) - set(expected)) == [], "netdsl weights torchvision does not have"
    assert sorted(set(expected) - set(specs)) == [], "torchvision keys netdsl does not produce"
    wrong = {k: (specs[k], expected[k]) for k in expected if specs[k] != expected[k]}
    assert wrong == {}, "shape mismatches (netdsl, torchvision)"
    # The compiled model's initializers carry the same names and shapes, so a torchvision state_dict loads as is.
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    assert {k: inits.get(k) for k in expected} == expected


@pytest.mark.parametrize("name", ["lenet5", "googlenet"])
def test_compiling_twice_gives_identical_bytes(name, tmp_path):
    path = str(ROOT / "networks" / f"{name}.net")
    first = netdsl.load(path).to_onnx().SerializeToString()
    second = netdsl.load(path).to_onnx().SerializeToString()
    assert first == second
    assert netdsl.load(path).to_onnx(seed=1).SerializeToString() != first  # the bytes do depend on the weights
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    netdsl.load(path).save(a)
    netdsl.load(path).save(b)
    assert a.read_bytes() == b.read_bytes() == first


def test_zoo_models_use_only_tensorrt_supported_ops(compiled):
    """Every ONNX op in every zoo model is one TensorRT's ONNX parser supports (fp16 adds only Cast)."""
    from netdsl.engines.trt import TRT_SUPPORTED_OPS

    _, model = compiled
    ops = {n.op_type for n in model.graph.node} | {"Cast"}
    assert ops <= TRT_SUPPORTED_OPS, sorted(ops - TRT_SUPPORTED_OPS)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_tensorrt_builds_an_engine(compiled, dtype, tmp_path):
    """TensorRT's own ONNX parser and builder accept the model: TensorRT for RTX builds portable engines on the CPU.

    The plan embeds the weights, so it is at least as large as they are at that precision; for the large
    networks the fp16 plan is well under the fp32 weights (the weights really were halved, not kept fp32).
    """
    pytest.importorskip("tensorrt_rtx", reason="needs TensorRT for RTX (optional package tensorrt-rtx-cu13)")
    from trt_helpers import build_plan

    net, model = compiled
    if dtype == "fp16":
        from netdsl.precision import to_fp16

        model = to_fp16(model, keep_io_fp32=True)
    plan = build_plan(model, tmp_path)
    params = net.summary().params
    itemsize = 4 if dtype == "fp32" else 2
    assert len(plan) >= 0.95 * params * itemsize, f"{len(plan):,} bytes for {params:,} {dtype} parameters"
    if dtype == "fp16" and params >= 20_000_000:
        assert len(plan) < 0.75 * params * 4, f"fp16 plan of {len(plan):,} bytes for {params:,} parameters"
