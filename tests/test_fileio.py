"""Outputs are written whole or not at all, and with ordinary permissions."""

from __future__ import annotations

import os

import pytest

from edgezoo.errors import InputError
from edgezoo.fileio import atomic_directory, atomic_write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_write_uses_umask_modes(tmp_path, umask_022):
    p = atomic_write_text(tmp_path / "a" / "x.txt", "hi")
    assert p.read_text() == "hi"
    assert p.stat().st_mode & 0o777 == 0o644
    assert [f.name for f in p.parent.iterdir()] == ["x.txt"]  # no temporary left beside it


def test_atomic_directory_replaces_whole_or_keeps_the_old(tmp_path, umask_022):
    target = tmp_path / "bundle"
    with atomic_directory(target) as d:
        (d / "a.txt").write_text("v1")
    assert (target / "a.txt").read_text() == "v1" and target.stat().st_mode & 0o777 == 0o755
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as d:
            (d / "a.txt").write_text("half")
            raise RuntimeError("failed mid-way")
    assert (target / "a.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    with atomic_directory(target) as d:
        (d / "b.txt").write_text("v2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]


def test_a_file_in_the_way_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        atomic_write_text(tmp_path / "f" / "y.txt", "z")


def test_write_json_is_strict_json(tmp_path):
    import json

    from edgezoo.fileio import write_json

    p = write_json(tmp_path / "r.json", {"sqnr_db": float("inf"), "xs": [1.0, float("nan")]})
    assert json.loads(p.read_text()) == {"sqnr_db": None, "xs": [1.0, None]}
    assert "Infinity" not in p.read_text() and "NaN" not in p.read_text()


def test_hostile_metadata_values_are_ignored_not_trusted():
    from edgezoo.onnx_meta import ModelMetadata

    meta = ModelMetadata.from_props({
        "edgezoo.input_size": "[224, 224]", "edgezoo.mean": '"abc"', "edgezoo.std": "[0.2, 0, 0.2]",
        "edgezoo.labels": '{"a": 1}', "edgezoo.num_classes": "true", "edgezoo.model": '"ok"',
        "edgezoo.precision": '"int8"',
    })
    assert meta.input_size is None and meta.mean is None and meta.std is None and meta.labels is None
    assert meta.num_classes is None and meta.model == "ok" and meta.precision == "int8"
    assert sorted(meta.extra["invalid"]) == ["input_size", "labels", "mean", "num_classes", "std"]


def test_check_writable_folder_creates_nothing_and_names_the_problem(tmp_path):
    from edgezoo.fileio import check_writable_folder

    target = tmp_path / "new" / "bundle"
    assert check_writable_folder(target) == target and not (tmp_path / "new").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="a file with that name exists"):
        check_writable_folder(tmp_path / "f")
    with pytest.raises(InputError, match="not writable") as e:
        check_writable_folder(tmp_path / "f" / "sub", hint="choose another")
    assert e.value.hint == "choose another"
