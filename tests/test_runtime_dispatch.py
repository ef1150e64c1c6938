"""The runtime registry: which runtime takes which file, the one error when it cannot, and the import rule
that runtimes never build models (no module under edgezoo/runtimes imports edgezoo.export)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import edgezoo.runtimes as runtimes_pkg
from edgezoo.errors import InputError
from edgezoo.runtimes import model_kind, normalize_runtime, open_runner, runtime_names
from edgezoo.runtimes.base import TensorInfo, guess_layout

RUNTIMES_DIR = Path(runtimes_pkg.__file__).parent


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def test_no_runtime_module_imports_export():
    modules = sorted(RUNTIMES_DIR.glob("*.py"))
    assert len(modules) >= 8  # base, inputs, onnxruntime, openvino, executorch, litert, tensorrt, torch, ...
    offenders = {p.name: sorted(i for i in _imports(p) if i == "edgezoo.export" or i.startswith("edgezoo.export."))
                 for p in modules}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_import_rule_check_catches_an_offender(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from edgezoo.export.onnx import export_onnx\n")
    assert "edgezoo.export.onnx" in _imports(bad)


def test_suffix_decides_the_kind():
    assert [model_kind(f"m{s}") for s in (".onnx", ".xml", ".pte", ".tflite", ".engine", ".PTE")] == \
        ["onnx", "ir", "pte", "tflite", "engine", "pte"]
    assert model_kind("mobilenet_v2") == "registry" and model_kind(b"onnx bytes") == "onnx"
    assert [normalize_runtime(n) for n in ("ov", "ET", "tflite", "xnnpack", "auto")] == \
        ["openvino", "executorch", "litert", "executorch", None]
    # the list in the message is read off the descriptors: every registered runtime, edgezoo's own among them
    names = runtime_names()
    assert {"onnxruntime", "openvino", "executorch", "litert", "tensorrt", "torch"} <= set(names)
    with pytest.raises(InputError, match=re.escape(f"choose from auto, {', '.join(names)}")):
        normalize_runtime("coreml")


@pytest.mark.parametrize("suffix,runtime,message", [
    (".onnx", "litert", "litert runs .tflite files; .*m.onnx is an .onnx file"),
    (".tflite", "onnxruntime", "onnxruntime runs .onnx files; .*m.tflite is a .tflite file"),
    (".pte", "openvino", "openvino runs .onnx files and OpenVINO IR .*m.pte is a .pte file"),
    (".xml", "executorch", "executorch runs .pte files; .*m.xml is an OpenVINO IR"),
    (".onnx", "tensorrt", "tensorrt runs TensorRT engines .*m.onnx is an .onnx file"),
])
def test_a_runtime_that_cannot_take_a_file_says_so(tmp_path, suffix, runtime, message):
    f = tmp_path / f"m{suffix}"
    f.write_bytes(b"x")
    with pytest.raises(InputError, match=message):
        open_runner(f, runtime)


def test_options_of_another_runtime_are_refused(tmp_path):
    f = tmp_path / "m.tflite"
    f.write_bytes(b"x")
    with pytest.raises(InputError, match=r"litert takes no streams \(--streams\); openvino does"):
        open_runner(f, streams=2)
    with pytest.raises(InputError, match=r"litert takes no execution providers \(--provider\); onnxruntime does"):
        open_runner(f, providers="cuda")
    # a command's default for another runtime's option is not an ask
    with pytest.raises(InputError, match="is not a .tflite model"):  # got past the options, to the file's bytes
        open_runner(f, graph_optimization="all", precision=None)


def test_layout_guess_and_tensor_info():
    assert guess_layout((1, 3, 224, 224)) == "NCHW" and guess_layout((1, 224, 224, 3)) == "NHWC"
    assert guess_layout((None, 3, None, None)) == "NCHW" and guess_layout((1, 1000)) is None
    assert guess_layout((1, 8, 8, 8)) is None and guess_layout((1, 8, 8, 3), channels=3) == "NHWC"
    info = TensorInfo("x", (1, 224, 224, 3), "float32", "NHWC")
    assert info.layout == "NHWC" and info == TensorInfo("x", (1, 224, 224, 3), "float32")  # layout: derived


def test_nhwc_inputs_get_the_same_pixels_transposed():
    import numpy as np

    from edgezoo.runtimes.inputs import make_array, resolve_shape

    nchw = make_array((1, 3, 4, 5), np.float32, (0.5,) * 3, (0.25,) * 3, seed=3)
    nhwc = make_array((1, 4, 5, 3), np.float32, (0.5,) * 3, (0.25,) * 3, seed=3, layout="NHWC")
    np.testing.assert_array_equal(nhwc, nchw.transpose(0, 2, 3, 1))
    info = TensorInfo("x", (1, None, None, 3), np.dtype("float32"), "NHWC")
    assert resolve_shape(info, 1, (32, 48)) == (1, 32, 48, 3)
    with pytest.raises(InputError, match="cannot take"):
        resolve_shape(TensorInfo("x", (1, 8, 8, 3), np.dtype("float32"), "NHWC"), 1, (3, 4, 4))
    assert resolve_shape(TensorInfo("x", (1, 8, 8, 3), np.dtype("float32"), "NHWC"), 1, (3, 8, 8)) == (1, 8, 8, 3)


FAKE = '''
import sys
import numpy as np
from edgezoo.runtimes import FileKind, RuntimeDescriptor, register_runtime
from edgezoo.runtimes.base import Runner, TensorInfo


class FakeRunner(Runner):
    name = "fakert"

    def __init__(self, path, threads=None):
        super().__init__()
        self.path, self.threads = path, threads

    def _activate(self): pass
    def _deactivate(self): pass
    def _inputs(self): return [TensorInfo("x", (1, 3, 4, 4), np.dtype(np.float32), "NCHW")]
    def _outputs(self): return [TensorInfo("y", (1, 2), np.dtype(np.float32))]
    def _infer(self, feeds): return [np.full((1, 2), 7.0, np.float32)]


register_runtime(RuntimeDescriptor(
    "fakert", ("fk",), (FileKind("fake", (".fake",), "a .fake file", ".fake files", side_files=(".fakew",)),),
    lambda model, threads=None: FakeRunner(model, threads), extra="fake"))
'''


def test_a_registered_runtime_is_everywhere(tmp_path, monkeypatch):
    """One descriptor, registered from outside edgezoo: bench/compare/serve --help list it, its suffix opens
    on it, its alias names it, its side file counts, and an option it does not take is refused."""
    import subprocess
    import sys

    import edgezoo.runtimes as R

    for command in ("bench", "compare", "serve"):
        code = FAKE + f"\nfrom edgezoo.cli import main\nmain([{command!r}, '--help'])\n"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env={**__import__("os").environ, "COLUMNS": "250"})
        assert "fakert" in done.stdout, (command, done.stdout[-2000:], done.stderr[-2000:])
    ns: dict = {}
    exec(FAKE, ns)
    try:
        model = tmp_path / "m.fake"
        model.write_bytes(b"weights elsewhere")
        (tmp_path / "m.fakew").write_bytes(b"1234")
        r = open_runner(model, threads=2)
        assert type(r).__name__ == "FakeRunner" and r.threads == 2
        assert type(open_runner(model, "fk")).__name__ == "FakeRunner"
        assert model_kind(model) == "fake" and R.default_runtime("fake") == "fakert"
        assert R.model_bytes(model) == len(b"weights elsewhere") + 4
        assert "fakert" in R.runtimes_help() and ".fake -> fakert" in R.suffixes_help()
        with pytest.raises(InputError, match="fakert takes no execution providers"):
            open_runner(model, providers="cuda")
        with pytest.raises(InputError, match="fakert runs .fake files; .*m.onnx is an .onnx file"):
            open_runner(tmp_path / "m.onnx", "fakert")
        with pytest.raises(ValueError, match="already fakert's"):
            R.register_runtime(R.RuntimeDescriptor("other", (), (R.FileKind("o", (".fake",), "x", "xs"),),
                                                   lambda m: None))
    finally:
        R._registry.pop("fakert", None)
    with pytest.raises(InputError, match="unknown runtime"):
        normalize_runtime("fakert")


@pytest.mark.parametrize("suffix,what", [(".pte", "ExecuTorch .pte program"), (".tflite", ".tflite model")])
def test_a_random_file_never_reaches_the_backend(tmp_path, suffix, what):
    """A random 64 KB .pte made ExecuTorch abort the process (SIGABRT): the header is checked first."""
    from conftest import run_edgezoo

    f = tmp_path / f"random{suffix}"
    f.write_bytes(np.random.default_rng(7).bytes(65536))
    with pytest.raises(InputError, match=f"is not an? {re.escape(what)}"):
        open_runner(f)
    for args in (("bench", str(f), "-n", "2"), ("compare", str(f), "--rounds", "0"), ("serve", str(f), "--port", "0")):
        r = run_edgezoo(*args, timeout=120)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert "is not a" in r.stderr and "Traceback" not in r.stderr and r.stderr.count("\n") <= 3


def test_pte_header_sizes_are_checked(tmp_path):
    import struct

    from edgezoo.runtimes.filecheck import check_pte

    f = tmp_path / "m.pte"
    # the ExecuTorch identifier and an extended header that declares a program larger than the file
    f.write_bytes(struct.pack("<I", 32) + b"ET12" + b"eh00" + struct.pack("<IQQ", 24, 1 << 40, 0) + bytes(64))
    with pytest.raises(InputError, match="declares a 1099511627776-byte program"):
        check_pte(f)
    f.write_bytes(struct.pack("<I", 10_000) + b"ET12" + bytes(64))
    with pytest.raises(InputError, match="root table offset 10000 lies outside"):
        check_pte(f)
