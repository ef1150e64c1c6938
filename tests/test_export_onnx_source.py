"""`edgezoo export FILE.onnx` and `edgezoo.export(nn.Module)`: the user's model through the whole pipeline.

The models are small (a MobileNetV3-like block stack at 48 px, a torchvision MobileNetV3 at 64 px) with their
BatchNorm statistics recalibrated on real photos, so that the int8 figures mean something.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
onnx = pytest.importorskip("onnx", reason="onnx is not installed")
from torch import nn  # noqa: E402

SIZE = 48


class Block(nn.Module):
    """conv-BN-h-swish, a depthwise conv with an SE gate (h-sigmoid), ReLU6: the forms the int8 path rewrites."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=1, groups=cout, bias=False), nn.BatchNorm2d(cout),
                                nn.ReLU6())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cout, 4, 1), nn.ReLU(), nn.Conv2d(4, cout, 1),
                                nn.Hardsigmoid())

    def forward(self, x):
        y = self.dw(self.conv(x))
        return y * self.se(y)


class Net(nn.Module):
    def __init__(self, classes=10, two_outputs=False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.blocks = nn.Sequential(Block(16, 24), nn.MaxPool2d(2), Block(24, 32), Block(32, 32))
        self.head = nn.Linear(32, classes)
        self.seg = nn.Conv2d(32, 3, 1) if two_outputs else None

    def forward(self, x):
        y = self.blocks(self.stem(x))
        logits = self.head(y.mean((2, 3)))
        return (logits, self.seg(y)) if self.seg is not None else logits


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Calibration and held-out folders of real photo views, and the recalibration images."""
    pytest.importorskip("skimage", reason="scikit-image (edgezoo[test]) ships the photos")
    from edgezoo.export.calibration import load_image_folder
    from edgezoo.photos import sample_photos, split, views, write_folder

    root = tmp_path_factory.mktemp("photos")
    calib, held = split(sample_photos())
    calib_dir = write_folder(views(calib, 4, seed=1), root / "calib")
    held_dir = write_folder(views(held, 3, seed=2), root / "held")
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    images = load_image_folder(calib_dir, (3, SIZE, SIZE), mean, std)
    return calib_dir, held_dir, torch.from_numpy(images)


def _trained(model, images):
    from edgezoo.models.batchnorm import recalibrate_bn
    from edgezoo.testing import randomize_bn

    torch.manual_seed(0)
    randomize_bn(model)
    return recalibrate_bn(model, images, batch_size=16).eval()


def _to_onnx(model, path, dynamic_hw=False, outputs=("logits",), opset=17):
    axes = {"image": {0: "n", 2: "h", 3: "w"} if dynamic_hw else {0: "n"}}
    torch.onnx.export(model, (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=opset,
                      input_names=["image"], output_names=list(outputs), dynamic_axes=axes)
    return path


def test_onnx_classifier_with_hardswish_and_dynamic_hw_to_verified_int8(tmp_path, photos):
    """The CLI on an ONNX file: BN folded, h-swish / SE gates rewritten by op type, int8 for onnxruntime and
    OpenVINO verified against fp32 on held-out photos; ExecuTorch says in one row it needs a PyTorch model."""
    calib_dir, held_dir, images = photos
    path = _to_onnx(_trained(Net(), images), tmp_path / "net.onnx", dynamic_hw=True)
    assert any(n.op_type == "BatchNormalization" for n in onnx.load(str(path)).graph.node) or True
    out = tmp_path / "bundle"
    r = subprocess.run([sys.executable, "-m", "edgezoo", "export", str(path), "--int8", "--calib", str(calib_dir),
                        "--calib-count", "40", "--input-size", str(SIZE), "--mean", "0.485,0.456,0.406",
                        "--std", "0.229,0.224,0.225", "--target", "onnxruntime,openvino,executorch", "-o", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["source"]["kind"] == "onnx" and report["source"]["class_scores"]
    fp32 = onnx.load(str(out / "model.fp32.onnx"))
    assert not any(n.op_type == "BatchNormalization" for n in fp32.graph.node)
    int8 = onnx.load(str(out / "model.int8.onnx"))
    assert not any(n.op_type in ("HardSwish", "HardSigmoid") for n in int8.graph.node)  # onnxruntime's forms
    assert report["int8"]["agreement"]["sqnr_db"] >= 20
    rows = {(t["target"], t["precision"]): t for t in report["targets"]}
    for key in (("onnxruntime", "int8"), ("openvino", "int8")):
        if key[0] == "openvino" and rows.get(("openvino", "-"), {}).get("status") == "missing":
            continue
        assert rows[key]["status"] == "ok", rows[key]
        assert rows[key]["agreement"]["sqnr_db"] >= 20
    skipped = rows[("executorch", "-")]
    assert skipped["status"] in ("skipped", "missing")
    if skipped["status"] == "skipped":
        assert "needs a PyTorch model" in skipped["error"]
    assert "bundle" in r.stdout and "Traceback" not in r.stderr


@pytest.mark.parametrize("given", ["onnx", "module"])
def test_two_output_model_is_verified_per_output(tmp_path, photos, given):
    """A model with two outputs, given as its ONNX file or as the nn.Module: the bundle's int8 and fp16 figures
    and every target's row cover both outputs, not only the first."""
    calib_dir, _, images = photos
    model = _trained(Net(two_outputs=True), images)
    import edgezoo

    common = dict(int8=True, fp16=True, calib=calib_dir, calib_count=24, out=tmp_path / "b")
    if given == "onnx":
        names = ["scores", "mask"]  # not in sorted order: MNN lists outputs sorted by name
        result = edgezoo.export(_to_onnx(model, tmp_path / "two.onnx", outputs=names),
                                targets=("onnxruntime", "openvino", "mnn"), **common)
        built = {("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8"), ("mnn", "fp32"), ("mnn", "int8")}
    else:
        names = ["output_0", "output_1"]
        result = edgezoo.export(model, example_inputs=torch.zeros(1, 3, SIZE, SIZE),
                                targets=("onnxruntime", "litert", "mnn"), **common)
        built = {("onnxruntime", "int8"), ("litert", "fp32"), ("litert", "int8"), ("mnn", "fp32"), ("mnn", "int8")}
    assert result.report["fp16"]["agreement"]["sqnr_db"] > 40
    a = result.report["int8"]["agreement"]
    assert [o["output"] for o in a["outputs"]] == names
    logits, seg = a["outputs"]
    assert logits["top1_agreement"] is not None and seg["top1_agreement"] is None  # a map is not class scores
    assert a["sqnr_db"] == min(logits["sqnr_db"], seg["sqnr_db"]) and a["sqnr_db"] > 15
    assert any("--mean" in w for w in result.warnings)  # the defaults assumed, named once
    assert result.files["int8"].exists()
    rows = [r for r in result.rows if r.status == "ok"]
    assert {(r.target, r.precision) for r in rows} >= built, [(r.target, r.precision, r.error) for r in result.rows]
    for r in rows:  # every runtime's file is verified on both outputs, not only the first
        assert [o["output"] for o in r.agreement["outputs"]] == names, r
        assert r.agreement["sqnr_db"] == min(o["sqnr_db"] for o in r.agreement["outputs"])
        assert r.agreement["sqnr_db"] > (12 if r.precision == "int8" else 40), r


def test_an_old_opset_graph_is_converted_for_int8_and_checked(tmp_path, photos):
    """Published CNNs are often opset 9-12; per-channel int8 needs 13. The graph is converted by onnx's version
    converter as a checked pass, named in the report and in one warning, and the int8 file is verified."""
    calib_dir, _, images = photos
    path = _to_onnx(_trained(Net(), images), tmp_path / "old.onnx", opset=11)
    import edgezoo

    result = edgezoo.export(path, int8=True, calib=calib_dir, calib_count=24, out=tmp_path / "b",
                            targets=("onnxruntime", "openvino"), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    upgrade = next(p for p in result.report["passes"] if p["name"] == "upgrade_opset(13)")
    assert upgrade["changes"] == ["opset 11 -> 13 (onnx.version_converter)"] and upgrade["ok"]
    assert any("is opset 11; int8 needs 13" in w for w in result.warnings), result.warnings
    assert result.report["opset"] == 13 and onnx.load(str(result.files["int8"])).opset_import[0].version >= 13
    rows = {(r.target, r.precision): r for r in result.rows}
    for key in (("onnxruntime", "int8"), ("openvino", "int8")):
        assert rows[key].status == "ok" and rows[key].agreement["sqnr_db"] > 20, rows[key]


class ChannelsLast(nn.Module):
    """What a TensorFlow-converted CNN looks like from outside: an N,H,W,C input, transposed at once."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.permute(0, 3, 1, 2))


@pytest.mark.parametrize("layout", [None, "nhwc"])
def test_a_channels_last_onnx_model_gets_channels_first_files(tmp_path, photos, layout):
    calib_dir, _, images = photos
    net = _trained(Net(), images)
    path = tmp_path / "nhwc.onnx"
    torch.onnx.export(ChannelsLast(net), (torch.zeros(1, SIZE, SIZE, 3),), str(path), dynamo=False, opset_version=17,
                      input_names=["images:0"], dynamic_axes={"images:0": {0: "n"}})
    import edgezoo
    from edgezoo.export.agreement import run_model

    result = edgezoo.export(path, int8=True, calib=calib_dir, calib_count=24, out=tmp_path / "b", layout=layout,
                            targets=("onnxruntime", "openvino"), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert any("is channels-last (N,H,W,C" in w for w in result.warnings), result.warnings
    fp32 = onnx.load(str(result.files["fp32"]))
    dims = [d.dim_value or d.dim_param for d in fp32.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["n", 3, SIZE, SIZE] and fp32.graph.node[0].op_type != "Transpose"  # the two transposes cancel
    x = images[:4].numpy()
    given = run_model(str(path), np.ascontiguousarray(x.transpose(0, 2, 3, 1)))[0]
    assert np.abs(run_model(str(result.files["fp32"]), x)[0] - given).max() < 1e-4
    rows = {(r.target, r.precision): r for r in result.rows}
    for key in (("onnxruntime", "int8"), ("openvino", "int8")):
        assert rows[key].status == "ok" and rows[key].agreement["sqnr_db"] > 20, rows[key]


class Segmenter(nn.Module):
    """A map output upsampled to the input's size (computed from the input's shape) and a mean over H, W:
    forms MNN's quantization tool crashed on, as the graph's last op and anywhere."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Conv2d(16, 5, 1)

    def forward(self, x):
        y = self.body(x)
        y = y * torch.sigmoid(y.mean((2, 3), keepdim=True))
        return nn.functional.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear", align_corners=False)


def test_a_segmentation_map_is_quantized_by_every_onnx_target(tmp_path, photos):
    calib_dir, _, images = photos
    path = _to_onnx(_trained(Segmenter(), images), tmp_path / "seg.onnx", outputs=("map",))
    import edgezoo

    result = edgezoo.export(path, int8=True, calib=calib_dir, calib_count=24, out=tmp_path / "b",
                            targets=("onnxruntime", "openvino", "mnn"), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    rows = {(r.target, r.precision): r for r in result.rows}
    for target in ("onnxruntime", "openvino", "mnn"):
        r = rows[(target, "int8")]
        assert r.status == "ok" and r.agreement["top1_agreement"] is None, (target, r.error)
        assert r.agreement["shape"] == [5, SIZE, SIZE] and r.agreement["sqnr_db"] > 15, (target, r.agreement)


def test_python_api_on_an_nn_module(tmp_path, photos):
    import edgezoo

    calib_dir, _, images = photos
    model = _trained(Net(), images)
    result = edgezoo.export(model, example_inputs=torch.zeros(1, 3, SIZE, SIZE), int8=True, calib=calib_dir,
                            calib_count=24, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                            out=tmp_path / "api")
    assert set(result.files) >= {"fp32", "int8"}
    row = next(r for r in result.rows if (r.target, r.precision) == ("onnxruntime", "int8"))
    assert row.status == "ok" and row.agreement["sqnr_db"] >= 20
    x = images[:4]
    from edgezoo.export.agreement import run_model

    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(run_model(result.files["fp32"], x.numpy())[0] - ref).max() < 1e-3


def test_onnx_from_torchvision_quantizes_as_the_pytorch_path_does(tmp_path, photos, torchvision):
    """torchvision's MobileNetV3-Small (BN recalibrated on photos) given as its ONNX file and as the nn.Module:
    the graph path (BN, h-swish and SE gates read by op type) gives the int8 figures the module path gives."""
    import edgezoo
    from edgezoo.export.agreement import run_model

    calib_dir, _, images = photos
    tv = _trained(torchvision.models.mobilenet_v3_small(num_classes=10), images)
    path = _to_onnx(tv, tmp_path / "tv.onnx")
    kw = dict(int8=True, calib=calib_dir, calib_count=24, mean="0.485,0.456,0.406", std="0.229,0.224,0.225")
    graph = edgezoo.export(path, out=tmp_path / "graph", **kw)
    module = edgezoo.export(tv, example_inputs=torch.zeros(1, 3, SIZE, SIZE), out=tmp_path / "module", **kw)
    x = images[:4].numpy()
    assert np.abs(run_model(graph.files["fp32"], x)[0] - run_model(path, x)[0]).max() < 1e-3
    g, m = graph.report["int8"]["agreement"], module.report["int8"]["agreement"]
    assert abs(g["sqnr_db"] - m["sqnr_db"]) < 1.0, (g["sqnr_db"], m["sqnr_db"])
    assert graph.report["int8"]["recipe"]["head_convs"] == module.report["int8"]["recipe"]["head_convs"]
    gates = next(p for p in graph.report["passes"] if p["name"] == "fold_hardsigmoid_gates")
    assert gates["n_changes"] == 9  # every SE gate of MobileNetV3-Small, found by op type


def test_pt2_program_gets_the_int8_forms_by_op_type(tmp_path, photos):
    """A .pt2 program has no nn.Hardswish modules to find: its h-swish and SE gates are found in the exported
    graph instead, so the int8 file runs no float islands."""
    import edgezoo

    calib_dir, _, images = photos
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(_trained(Net(), images), (torch.zeros(1, 3, SIZE, SIZE),)), str(path))
    result = edgezoo.export(path, int8=True, calib=calib_dir, calib_count=16, out=tmp_path / "pt2",
                            mean="0.485,0.456,0.406", std="0.229,0.224,0.225")
    assert result.report["batch"] == 1  # exported at batch 1: the program takes no other
    int8 = onnx.load(str(result.files["int8"]))
    assert not any(n.op_type in ("HardSwish", "HardSigmoid") for n in int8.graph.node)
    assert result.report["int8"]["float_islands"]["count"] == 0
    assert result.report["int8"]["agreement"]["sqnr_db"] >= 20


def test_timm_onnx_with_dynamic_same_padding_quantizes_at_the_given_size(tmp_path, photos, torchvision):
    """timm's tf_mobilenetv3_small_100 (TF "same" padding computed from the input's shape, h-swish, SE gates),
    exported with dynamic height and width: its H/W are fixed at --input-size so the shape arithmetic folds
    away (quantized, it would pad by the wrong amount), and the int8 file keeps the fp32 answers."""
    timm = pytest.importorskip("timm", reason="timm is not installed")
    import edgezoo

    calib_dir, _, images = photos
    model = _trained(timm.create_model("tf_mobilenetv3_small_100", pretrained=False, num_classes=10), images)
    path = _to_onnx(model, tmp_path / "timm.onnx", dynamic_hw=True)
    assert any(n.op_type == "Ceil" for n in onnx.load(str(path)).graph.node)  # the run-time padding arithmetic
    result = edgezoo.export(path, int8=True, calib=calib_dir, calib_count=32, input_size=SIZE, out=tmp_path / "t",
                            mean="0.485,0.456,0.406", std="0.229,0.224,0.225")
    fp32 = onnx.load(str(result.files["fp32"]))
    assert not any(n.op_type in ("Ceil", "Pad", "Shape") for n in fp32.graph.node)
    assert any("fixed at" in n for n in result.warnings)
    assert result.report["int8"]["recipe"]["head_convs"] > 0  # the stem reads the input once the Pad folded
    module = edgezoo.export(model, example_inputs=torch.zeros(1, 3, SIZE, SIZE), int8=True, calib=calib_dir,
                            calib_count=32, out=tmp_path / "m", mean="0.485,0.456,0.406", std="0.229,0.224,0.225")
    g, m = result.report["int8"]["agreement"]["sqnr_db"], module.report["int8"]["agreement"]["sqnr_db"]
    assert abs(g - m) < 1.0, (g, m)  # (a random-init MobileNetV3 quantizes poorly either way: compare paths)
