"""edgezoo.sources.resolve_source: every kind of source becomes one ModelSource, bad ones one clear line."""

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
onnx = pytest.importorskip("onnx", reason="onnx is not installed")
from torch import nn  # noqa: E402

from edgezoo.errors import InputError  # noqa: E402
from edgezoo.sources import resolve_source  # noqa: E402


class TwoHeads(nn.Module):
    """A map output and a class-score output."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6())
        self.seg = nn.Conv2d(8, 2, 1)
        self.cls = nn.Linear(8, 5)

    def forward(self, x):
        y = self.body(x)
        return self.seg(y), self.cls(y.mean((2, 3)))


def _onnx(model, path, size=(3, 32, 32), dynamic_hw=False, outputs=("out",)):
    axes = {"x": {0: "n", 2: "h", 3: "w"} if dynamic_hw else {0: "n"}}
    torch.onnx.export(model.eval(), (torch.zeros(1, *size),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=list(outputs), dynamic_axes=axes)
    return path


def test_zoo_name_is_one_kind_of_source():
    s = resolve_source("mobilenetv3", input_size=64)
    assert (s.kind, s.name, s.input_size, s.classifier) == ("zoo", "mobilenet_v3_large", (3, 64, 64), True)
    assert s.module is None and not s.is_onnx  # built later, in the pipeline


def test_onnx_with_two_outputs_reads_inputs_outputs_and_warns_once_about_defaults(tmp_path):
    path = _onnx(TwoHeads(), tmp_path / "two.onnx", outputs=("seg", "cls"))
    s = resolve_source(path)
    assert s.kind == "onnx" and s.input.name == "x" and s.input_size == (3, 32, 32)
    assert [o.name for o in s.outputs] == ["seg", "cls"] and not s.classifier  # not assumed to be logits
    assert s.outputs[1].is_class_scores and not s.outputs[0].is_class_scores
    assert len(s.notes) == 1 and "0.485" in s.notes[0] and "--mean" in s.notes[0]
    given = resolve_source(path, mean="0.5,0.5,0.5", std="0.25,0.25,0.25")
    assert given.preset.mean == (0.5, 0.5, 0.5) and given.notes == []


def test_onnx_metadata_gives_the_preprocessing(tmp_path):
    from edgezoo.onnx_meta import ModelMetadata, set_metadata

    path = _onnx(TwoHeads(), tmp_path / "m.onnx", outputs=("seg", "cls"))
    m = onnx.load(str(path))
    set_metadata(m, ModelMetadata(model="mine", mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5), crop_pct=1.0))
    onnx.save(m, str(path))
    s = resolve_source(path)
    assert s.name == "mine" and s.preset.mean == (0.1, 0.2, 0.3) and s.preset.crop_pct == 1.0 and s.notes == []


def test_dynamic_height_and_width_need_an_input_size(tmp_path):
    path = _onnx(TwoHeads(), tmp_path / "dyn.onnx", dynamic_hw=True, outputs=("seg", "cls"))
    with pytest.raises(InputError, match="dynamic height and width.*--input-size"):
        resolve_source(path)
    s = resolve_source(path, input_size="48,40")
    assert s.input_size == (3, 48, 40) and set(s.input.dynamic) == {"batch", "height", "width"}


def test_fixed_size_onnx_refuses_another_input_size(tmp_path):
    path = _onnx(TwoHeads(), tmp_path / "fixed.onnx", outputs=("seg", "cls"))
    with pytest.raises(InputError, match="fixed height of 32"):
        resolve_source(path, input_size=64)


def test_external_data_outside_the_files_folder_is_refused(tmp_path):
    from onnx.external_data_helper import convert_model_to_external_data

    folder = tmp_path / "model"
    folder.mkdir()
    m = onnx.load(str(_onnx(TwoHeads(), tmp_path / "a.onnx", outputs=("seg", "cls"))))
    convert_model_to_external_data(m, location="inside.bin", size_threshold=0)
    onnx.save(m, str(folder / "ok.onnx"))
    assert resolve_source(folder / "ok.onnx").graph.graph.initializer[0].raw_data  # loaded from inside
    (folder / "inside.bin").rename(tmp_path / "outside.bin")
    for where in ("../outside.bin", str(tmp_path / "outside.bin")):
        for t in m.graph.initializer:  # what a hostile file says (onnx.save itself refuses to write it)
            for e in t.external_data:
                if e.key == "location":
                    e.value = where
        (folder / "bad.onnx").write_bytes(m.SerializeToString())
        with pytest.raises(InputError, match="outside the file's own folder"):
            resolve_source(folder / "bad.onnx")


def _custom_op_file(path):
    from onnx import TensorProto, helper

    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16, 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(path))
    return path


def test_an_op_no_runtime_has_is_one_line_and_nothing_is_written(tmp_path):
    path = _custom_op_file(tmp_path / "odd.onnx")
    with pytest.raises(InputError, match="onnxruntime cannot run odd.onnx"):
        resolve_source(path)
    out = tmp_path / "bundle"
    r = subprocess.run([sys.executable, "-m", "edgezoo", "export", str(path), "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "onnxruntime cannot run" in r.stderr
    assert not out.exists()


def test_pt2_file(tmp_path):
    model = TwoHeads().eval()
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3, 32, 32),)), str(path))
    s = resolve_source(path)
    assert s.kind == "pt2" and s.input_size == (3, 32, 32) and len(s.outputs) == 2
    assert s.input.fixed_batch == 1  # exported at batch 1: the export keeps it
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(s.module(x)[1], model(x)[1], atol=1e-6)


def test_import_string_to_a_module_in_a_folder_with_weights(tmp_path, monkeypatch):
    (tmp_path / "mynet.py").write_text(
        "from torch import nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 7))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    ref = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 7))
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    s = resolve_source("mynet:make", weights=tmp_path / "w.pt", input_size=32)
    assert s.kind == "import" and s.classifier and s.num_classes == 7
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(s.module(x), ref.eval()(x))
    with pytest.raises(InputError, match="no attribute"):
        resolve_source("mynet:nothing", input_size=32)
    with pytest.raises(InputError, match="no input size"):
        resolve_source("mynet:make")


def test_library_names_need_weights_and_download_nothing():
    with pytest.raises(InputError, match="downloads nothing"):
        resolve_source("timm:resnet18")


def test_torchvision_name_and_zoo_name_give_identical_fp32_outputs(tmp_path, torchvision):
    from edgezoo.testing import randomize_bn

    tv = randomize_bn(torchvision.models.mobilenet_v3_large()).eval()
    torch.save(tv.state_dict(), tmp_path / "w.pt")
    a = resolve_source("torchvision:mobilenet_v3_large", weights=tmp_path / "w.pt", input_size=64)
    from edgezoo.sources import build_zoo_module

    b = build_zoo_module(resolve_source("mobilenetv3", weights=tmp_path / "w.pt", input_size=64))
    assert a.preset.labels is not None and len(a.preset.labels) == 1000  # torchvision's record, offline
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a.module(x), b(x))


def test_module_object_with_example_inputs():
    s = resolve_source(TwoHeads(), example_inputs=(torch.zeros(1, 3, 40, 40),))
    assert s.kind == "module" and s.input_size == (3, 40, 40) and len(s.outputs) == 2
    with pytest.raises(InputError, match="cannot export a int"):
        resolve_source(3)
