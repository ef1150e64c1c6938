"""Labelled folders for --eval (edgezoo.export.labelled) and the paired change figures (edgezoo.export.accuracy)."""

from __future__ import annotations

import numpy as np
import pytest

PIL = pytest.importorskip("PIL.Image", reason="Pillow is not installed")

from edgezoo.errors import InputError  # noqa: E402
from edgezoo.export import labelled as L  # noqa: E402
from edgezoo.export.accuracy import mcnemar_exact, paired_change, topk_correct  # noqa: E402
from edgezoo.models.presets import imagenet_classes  # noqa: E402

NAMES = ("cat", "dog", "hot_dog")
PREP = dict(input_size=(3, 16, 16), mean=(0.5,) * 3, std=(0.5,) * 3)


def _image(path, value: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.fromarray(np.full((20, 24, 3), value, np.uint8)).save(path)


def test_imagefolder_names_and_indices(tmp_path):
    _image(tmp_path / "Cat" / "a.png", 10)
    _image(tmp_path / "Cat" / "b.png", 20)
    _image(tmp_path / "hot-dog" / "c.png", 30)  # "-" and case ignored against "hot_dog"
    _image(tmp_path / "1" / "d.png", 40)  # an index
    idx = L.index_labelled(tmp_path, 3, NAMES)
    assert idx.layout == "imagefolder"
    assert [p.name for p in idx.files] == ["d.png", "a.png", "b.png", "c.png"]
    assert idx.labels.tolist() == [1, 0, 0, 2]
    s = L.load_labelled(tmp_path, num_classes=3, class_names=NAMES, **PREP)
    assert s.images.shape == (4, 3, 16, 16) and s.labels.tolist() == [1, 0, 0, 2] and not s.skipped
    assert "imagefolder layout" in s.describe()


def test_labels_csv(tmp_path):
    _image(tmp_path / "x.png", 10)
    _image(tmp_path / "sub" / "y.png", 20)
    (tmp_path / "labels.csv").write_text("file,label\nx.png,dog\nsub/y.png,2\n")
    idx = L.index_labelled(tmp_path, 3, NAMES)
    assert idx.layout == "labels.csv"
    assert [p.name for p in idx.files] == ["x.png", "y.png"] and idx.labels.tolist() == [1, 2]


def test_synset_names(tmp_path):
    _image(tmp_path / "n01440764_tench.png", 10)
    _image(tmp_path / "n01443537_goldfish.png", 20)
    _image(tmp_path / "n15075141_toilet_tissue.png", 30)
    idx = L.index_labelled(tmp_path, 1000, imagenet_classes())
    assert idx.layout == "synset names"
    assert idx.labels.tolist() == [0, 1, 999]
    assert imagenet_classes()[999] == "toilet tissue"
    assert L.imagenet_synsets()[0] == "n01440764"


def test_synset_names_need_an_imagenet_model(tmp_path):
    _image(tmp_path / "n01440764_tench.png", 10)
    with pytest.raises(InputError, match="not ImageNet's 1000"):
        L.index_labelled(tmp_path, 3, NAMES)


def test_class_folder_matching_no_label_is_one_line(tmp_path):
    _image(tmp_path / "cat" / "a.png", 10)
    _image(tmp_path / "zebra" / "b.png", 20)
    with pytest.raises(InputError) as e:
        L.index_labelled(tmp_path, 3, NAMES)
    text = str(e.value)
    assert "class folder 'zebra'" in text and "matches none of the model's 3 class names" in text
    assert "\n" not in text


def test_unlabelled_flat_folder_names_the_layouts(tmp_path):
    _image(tmp_path / "a.png", 10)
    with pytest.raises(InputError, match="cannot tell the images' labels") as e:
        L.index_labelled(tmp_path, 3, NAMES)
    assert "labels.csv" in str(e.value) and "subfolder per class" in str(e.value)


def test_undecodable_image_is_named_skipped_counted(tmp_path):
    _image(tmp_path / "cat" / "a.png", 10)
    _image(tmp_path / "dog" / "b.png", 20)
    bad = tmp_path / "dog" / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    s = L.load_labelled(tmp_path, num_classes=3, class_names=NAMES, **PREP)
    assert len(s.labels) == 2 and s.labels.tolist() == [0, 1]
    assert [p for p, _ in s.skipped] == [bad]
    assert "1 skipped (cannot be decoded)" in s.describe()
    assert s.to_dict()["skipped"][0]["file"] == str(bad)


def test_csv_row_naming_a_missing_file(tmp_path):
    _image(tmp_path / "x.png", 10)
    (tmp_path / "labels.csv").write_text("x.png,cat\ngone.png,dog\n")
    with pytest.raises(InputError, match="row 2: 'gone.png' does not exist"):
        L.index_labelled(tmp_path, 3, NAMES)


def test_topk_and_mcnemar():
    logits = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]])
    assert topk_correct(logits, np.array([2, 0]), 1).tolist() == [False, True]
    assert topk_correct(logits, np.array([2, 0]), 2).tolist() == [True, True]
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)  # 2 * 0.5**6


def test_two_images_in_500_is_noise_and_the_report_says_so():
    ref = np.zeros(500, bool)
    ref[:440] = True  # 88.0%
    test = ref.copy()
    test[[0, 1]] = False  # 87.6%: -0.4 points
    c = paired_change(ref, test)
    assert c["change_points"] == pytest.approx(-0.4)
    assert c["within_noise"] and c["ci95"][0] < 0 <= c["ci95"][1]
    assert "within noise" in c["verdict"] and "500 images" in c["verdict"]
    worse = ref.copy()
    worse[:30] = False  # -6 points: real
    c = paired_change(ref, worse)
    assert not c["within_noise"] and c["mcnemar_p"] < 1e-6 and "a real loss" in c["verdict"]
