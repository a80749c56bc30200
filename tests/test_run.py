"""`netdsl run`, the Session embedding API, input files and image preprocessing."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import netdsl
from netdsl.preprocess import IMAGENET_MEAN, IMAGENET_STD, InputError, Preprocess

PIL = pytest.importorskip("PIL.Image", reason="image tests need Pillow (the `image` extra)")

TINY = """
# a small classifier with ImageNet preprocessing declared on its input
network tiny(classes=10) {
    input image: 3x32x32 preprocess=imagenet
    conv 8 3x3 /2 pad 1 -> bn -> relu
    avgpool global -> flatten
    fc: fc classes
    output logits
}
"""

TWO_INPUTS = """
network two {
    input a: 4x8x8
    input b: 4x8x8
    x: conv 4 1x1
    @b -> y: conv 4 1x1
    add(@x, @y) -> avgpool global -> flatten
    output features
}
"""


def _image(path, size=(40, 30), seed=0):
    rng = np.random.default_rng(seed)
    PIL.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


# ----------------------------------------------------------------------------- preprocessing
def test_imagenet_preprocessing_matches_a_hand_computed_reference(tmp_path):
    """resize shorter side to round(32*256/224)=37 (bilinear), centre-crop 32x32, /255, ImageNet mean/std."""
    path = _image(tmp_path / "x.png", size=(50, 40))
    prep = Preprocess.from_options((3, 32, 32), {"preprocess": "imagenet"})
    assert prep.resize == 37
    got = prep.load(path)
    img = PIL.open(path).convert("RGB")
    img = img.resize((int(37 * 50 / 40), 37), PIL.BILINEAR)  # (46, 37)
    left, top = int(round((46 - 32) / 2.0)), int(round((37 - 32) / 2.0))
    arr = np.asarray(img.crop((left, top, left + 32, top + 32)), np.float32).transpose(2, 0, 1) / 255.0
    want = (arr - np.array(IMAGENET_MEAN, np.float32)[:, None, None]) / np.array(IMAGENET_STD, np.float32)[:, None,
                                                                                                       None]
    assert got.shape == (3, 32, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_preprocessing_matches_torchvision_when_available(tmp_path):
    transforms = pytest.importorskip("torchvision.transforms", reason="needs torchvision (optional)")
    path = _image(tmp_path / "x.jpg", size=(300, 220), seed=3)
    ref = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                              transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(PIL.open(path).convert("RGB"))
    got = Preprocess.from_options((3, 224, 224), {"preprocess": "imagenet"}).load(path)
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-5)


def test_grayscale_and_bgr_and_plain_resize(tmp_path):
    path = _image(tmp_path / "x.png", size=(20, 20))
    gray = Preprocess.from_options((1, 8, 8), {}).load(path)
    assert gray.shape == (1, 8, 8) and 0.0 <= gray.min() and gray.max() <= 1.0
    rgb = Preprocess.from_options((3, 8, 8), {}).load(path)
    bgr = Preprocess.from_options((3, 8, 8), {"order": "bgr"}).load(path)
    np.testing.assert_array_equal(rgb[::-1], bgr)


@pytest.mark.parametrize(("options", "message"), [
    ({"preprocess": "coco"}, "unknown preprocess preset `coco`"),
    ({"mean": (0.5, 0.5)}, "mean needs 1 or 3 numbers"),
    ({"std": (0.0,)}, "std must not contain 0"),
    ({"order": "rbg"}, "order must be rgb or bgr"),
    ({"colour": 1}, "unknown input option `colour`"),
])
def test_bad_preprocessing_options_are_errors_at_check_time(write_net, run_cli, options, message):
    opts = " ".join(f"{k}={v if not isinstance(v, tuple) else '(' + ', '.join(map(str, v)) + ')'}"
                    for k, v in options.items())
    path = write_net("bad.net", f"network n {{\n    input image: 3x8x8 {opts}\n    relu\n}}\n")
    rc, out, err = run_cli("check", path)
    assert rc == 1 and message in err and "bad.net:2:5: error:" in err and "Traceback" not in err


def test_preprocessing_is_recorded_in_the_onnx_metadata():
    model = netdsl.load(TINY).to_onnx()
    meta = {p.key: p.value for p in model.metadata_props}
    (rec,) = json.loads(meta["netdsl.inputs"])
    assert rec["name"] == "image" and rec["shape"] == [3, 32, 32] and rec["preprocess"] == "imagenet"


# ----------------------------------------------------------------------------- Session
def test_session_runs_and_checks_its_feeds():
    sess = netdsl.load(TINY).session()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    out = sess.run(image=x)
    assert list(out) == ["logits"] and out["logits"].shape == (2, 10)
    np.testing.assert_array_equal(sess.run({"image": x})["logits"], out["logits"])
    with pytest.raises(InputError, match="unknown input `img`; the model expects image: Nx3x32x32 float32"):
        sess.run(img=x)
    with pytest.raises(InputError, match=r"has dtype float64, expected image: Nx3x32x32 float32"):
        sess.run(image=x.astype(np.float64))
    with pytest.raises(InputError, match="has shape 2x3x16x32, expected image: Nx3x32x32 float32"):
        sess.run(image=x[:, :, :16])
    with pytest.raises(InputError, match="missing input `image`"):
        sess.run()


def test_session_from_an_onnx_file_equals_the_net(tmp_path):
    net = netdsl.load(TINY)
    net.save(tmp_path / "tiny.onnx")
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    a = net.session().run(image=x)["logits"]
    b = netdsl.Session(str(tmp_path / "tiny.onnx")).run(image=x)["logits"]
    np.testing.assert_array_equal(a, b)


def test_embedding_only_the_onnx_with_plain_onnxruntime(tmp_path):
    """An app with onnxruntime and no netdsl: read the preprocessing record, run the model."""
    import onnxruntime as ort

    netdsl.load(TINY).save(tmp_path / "tiny.onnx")
    model = onnx.load(str(tmp_path / "tiny.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["netdsl.inputs"])[0]["preprocess"] == "imagenet"
    sess = ort.InferenceSession(str(tmp_path / "tiny.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = sess.run(["logits"], {"image": np.zeros((1, 3, 32, 32), np.float32)})
    assert logits.shape == (1, 10)


def test_cuda_is_never_a_silent_fallback():
    with pytest.raises(netdsl.EngineError, match="CUDAExecutionProvider"):
        netdsl.load(TINY).session(device="cuda")


# ----------------------------------------------------------------------------- the CLI
def test_run_random_batch_json(write_net, run_cli):
    path = write_net("tiny.net", TINY)
    rc, out, err = run_cli("run", path, "--batch", "3", "--json", "--topk", "2")
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["engine"] == "ort" and rep["device"] == "cpu"
    assert rep["outputs"]["logits"]["shape"] == [3, 10]
    assert len(rep["outputs"]["logits"]["topk"]) == 3 and len(rep["outputs"]["logits"]["topk"][0]) == 2
    assert rep["prepare_seconds"] > 0 and rep["compile_seconds"] > 0


def test_run_images_folder_with_labels_and_save(write_net, run_cli, tmp_path):
    path = write_net("tiny.net", TINY)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        _image(folder / f"{i}.png", seed=i)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class{i}" for i in range(10)))
    rc, out, err = run_cli("run", path, "--input", f"image={folder}", "--labels", labels, "--save",
                           tmp_path / "out.npz", "--topk", "3")
    assert rc == 0, err
    assert "class" in out and "top 3" in out
    with np.load(tmp_path / "out.npz") as z:
        assert z["logits"].shape == (3, 10)
    # the same images through the API give the same logits
    sess = netdsl.load(path).session()
    prep = sess.preprocessing()["image"]
    batch = np.stack([prep.load(folder / f"{i}.png") for i in range(3)])
    with np.load(tmp_path / "out.npz") as z:
        np.testing.assert_allclose(z["logits"], sess.run(image=batch)["logits"], rtol=1e-5, atol=1e-5)


def test_run_npy_npz_and_onnx(write_net, run_cli, tmp_path):
    path = write_net("two.net", TWO_INPUTS)
    a = np.ones((2, 4, 8, 8), np.float32)
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "b.npz", b=a * 2, other=a)
    rc, out, err = run_cli("run", path, "--input", f"a={tmp_path / 'a.npy'}", "--input",
                           f"b={tmp_path / 'b.npz'}", "--json")
    assert rc == 0, err
    assert json.loads(out)["outputs"]["features"]["shape"] == [2, 4]
    rc, _, err = run_cli("compile", path, "-o", tmp_path / "two.onnx")
    assert rc == 0, err
    rc, out2, err = run_cli("run", tmp_path / "two.onnx", "--input", f"a={tmp_path / 'a.npy'}", "--input",
                            f"b={tmp_path / 'b.npz'}", "--json")
    assert rc == 0, err
    assert json.loads(out2)["outputs"]["features"] == json.loads(out)["outputs"]["features"]


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: ("image=" + str(d / "nope.npy")), "nope.npy: no such file"),
    (lambda d: ("img=" + str(d / "x.npy")), "the model has no input `img`; it expects image: Nx3x32x32 float32"),
    (lambda d: ("image=" + str(d / "wrong.npy")), "input `image` has shape 2x3x16x16, expected image: Nx3x32x32"),
    (lambda d: ("image=" + str(d / "f64.npy")), "has dtype float64, expected image: Nx3x32x32 float32"),
    (lambda d: ("image=" + str(d / "garbage.npy")), "not a readable .npy file"),
    (lambda d: ("image=" + str(d / "garbage.png")), "not a readable image"),
])
def test_bad_inputs_are_one_line_errors(write_net, run_cli, tmp_path, make, message):
    path = write_net("tiny.net", TINY)
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    np.save(tmp_path / "wrong.npy", np.zeros((2, 3, 16, 16), np.float32))
    np.save(tmp_path / "f64.npy", np.zeros((1, 3, 32, 32), np.float64))
    (tmp_path / "garbage.npy").write_bytes(b"\x00not numpy")
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG broken")
    rc, out, err = run_cli("run", path, "--input", make(tmp_path))
    assert rc == 1, (out, err)
    assert message in err and "Traceback" not in err


def test_run_cuda_without_a_gpu_runtime_says_so(write_net, run_cli):
    path = write_net("tiny.net", TINY)
    rc, out, err = run_cli("run", path, "--device", "cuda")
    assert rc == 1 and "CUDAExecutionProvider" in err and "Traceback" not in err


def test_run_usage_errors_exit_2(write_net, run_cli):
    path = write_net("tiny.net", TINY)
    for args in (["--batch", "0"], ["--engine", "tvm"], ["--device", "tpu"], ["--threads", "0"]):
        rc, out, err = run_cli("run", path, *args)
        assert rc == 2, (args, err)
        assert "Traceback" not in err
