"""`edgezoo export --eval DIR` end to end on a tiny zoo model: every file's accuracy, the noise wording,
the images the agreement figures are measured on, and the options' one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_edgezoo

PIL = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")


def _images(folder, n, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        PIL.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"img{i}.png")


@pytest.fixture
def folders(tmp_path):
    _images(tmp_path / "calib", 10, 0)
    for k, cls in enumerate(("tench", "Goldfish", "n01484850", "3")):  # a name, another case, a synset, an index
        _images(tmp_path / "eval" / cls, 3, k + 1)
    (tmp_path / "eval" / "tench" / "broken.jpg").write_bytes(b"not an image")
    return tmp_path


def test_export_with_eval_reports_every_file(folders):
    out = folders / "b"
    r = run_edgezoo("export", "squeezenet1_1", "--int8", "--input-size", "64", "--calib", str(folders / "calib"),
                    "--calib-count", "8", "--eval", str(folders / "eval"), "--min-sqnr", "10", "-o", str(out),
                    env={"COLUMNS": "400"})
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    ev = rep["eval"]
    assert ev["layout"] == "imagefolder" and ev["images"] == 12 and ev["classes"] == 4
    assert [s["file"].endswith("broken.jpg") for s in ev["skipped"]] == [True]  # named, skipped, counted
    assert {(f["target"], f["precision"]) for f in ev["files"]} == {("onnxruntime", "fp32"), ("onnxruntime", "int8")}
    int8 = next(f for f in ev["files"] if f["precision"] == "int8")
    assert {"top1", "top5", "top1_agreement", "sqnr_db", "top1_change"} <= set(int8)
    assert int8["top1_change"]["images"] == 12 and "ci95" in int8["top1_change"]
    # without labels for the agreement figures: the two images of the calibration folder it held out, by name
    held = rep["agreement_images"]
    assert held["calibration"] == 8 and held["held_out"] == ["img8.png", "img9.png"]
    assert "held out from calibration (img8.png, img9.png" in rep["int8"]["agreement"]["inputs"]
    md = (out / "report.md").read_text()
    assert "## Accuracy on labelled images" in md and "within noise" in md and "## Accuracy budget" in md
    assert "broken.jpg (cannot be decoded" in r.stdout
    assert "accuracy on 12 labelled images (imagefolder): fp32 top-1" in r.stdout and "(1 skipped" in r.stdout


def test_small_calibration_folder_still_holds_images_out(tmp_path):
    _images(tmp_path / "calib", 4, 0)
    out = tmp_path / "b"
    r = run_edgezoo("export", "squeezenet1_1", "--int8", "--input-size", "32", "--calib", str(tmp_path / "calib"),
                    "--calib-count", "32", "-o", str(out))
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["agreement_images"]["calibration"] == 3 and rep["agreement_images"]["held_out"] == ["img3.png"]
    assert rep["int8"]["calibration_images"] == 3


@pytest.mark.parametrize("kw, message", [
    ({"int8": True, "max_drop": 0.5}, "--max-drop needs labelled images"),
    ({"max_drop": 0.5, "eval": "EVAL"}, "budgets for int8 files"),
    ({"int8": True, "min_sqnr": -3.0}, "--min-sqnr must lie in"),
    ({"int8": True, "eval": "EVAL/nowhere"}, "--eval"),
])
def test_budget_and_eval_options_fail_in_one_line(folders, kw, message):
    from edgezoo.errors import InputError
    from edgezoo.export.options import ExportOptions, validate

    kw = {k: (folders / "eval" / v[len("EVAL/"):] if v == "EVAL/nowhere" else folders / "eval") if
          isinstance(v, str) else v for k, v in kw.items()}
    with pytest.raises(InputError, match=message.replace("-", "\\-")) as e:
        validate(ExportOptions("squeezenet1_1", out=folders / "b", **kw))
    assert "\n" not in str(e.value)


def test_class_folder_matching_no_label_fails_before_any_file(folders):
    _images(folders / "eval" / "not_a_class", 1, 9)
    r = run_edgezoo("export", "squeezenet1_1", "--input-size", "32", "--eval", str(folders / "eval"),
                    "-o", str(folders / "b"))
    assert r.returncode != 0 and "class folder 'not_a_class'" in r.stderr and "Traceback" not in r.stderr
    assert not (folders / "b").exists()
