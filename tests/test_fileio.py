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
    ours = lambda folder: {"a.txt", "b.txt"}  # noqa: E731  (what the earlier run wrote there)
    with pytest.raises(RuntimeError):
        with atomic_directory(target, owned=ours) as d:
            (d / "a.txt").write_text("half")
            raise RuntimeError("failed mid-way")
    assert (target / "a.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    with atomic_directory(target, owned=ours) as d:
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


def test_sigterm_inside_atomic_directory_removes_the_partial_folder(tmp_path):
    import signal

    from edgezoo.fileio import Terminated

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "old.txt").write_text("keep")
    with pytest.raises(Terminated) as info:
        with atomic_directory(tmp_path / "b", owned=lambda folder: {"old.txt"}) as d:
            (d / "half.txt").write_text("x")
            os.kill(os.getpid(), signal.SIGTERM)
    assert info.value.code == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"] and (tmp_path / "b" / "old.txt").read_text() == "keep"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_atomic_directories_swap_together_or_not_at_all(tmp_path, monkeypatch):
    import edgezoo.fileio as fileio

    a, b = tmp_path / "a", tmp_path / "repo" / "b"
    for p in (a, b):
        p.mkdir(parents=True)
        (p / "v").write_text("old")
    real = os.replace

    def fail_into_b(src, dst):
        if os.fspath(dst) == os.fspath(b) and ".partial" in os.fspath(src):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", fail_into_b)
    with pytest.raises(InputError, match="No space left on device"):  # one line, not a traceback
        with fileio.atomic_directories(a, b, owned=lambda folder: {"v"}) as (ta, tb):
            (ta / "v").write_text("new")
            (tb / "v").write_text("new")
    assert (a / "v").read_text() == "old" and (b / "v").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "repo"] and [p.name for p in b.parent.iterdir()] == ["b"]
    monkeypatch.setattr(fileio.os, "replace", real)
    with fileio.atomic_directories(a, tmp_path / "new" / "c", owned=lambda folder: {"v"}) as (ta, tc):
        (ta / "v").write_text("new")
        (tc / "v").write_text("new")
    assert (a / "v").read_text() == "new" and (tmp_path / "new" / "c" / "v").read_text() == "new"


def test_failed_atomic_directory_removes_the_parents_it_made(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "x" / "y" / "b"):
            raise RuntimeError("failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where, says", [
    ("file/sub/x.json", "file is a file, not a folder"),
    ("folder", "it is a folder"),
    ("/proc/edgezoo-x.json", "does not accept new files"),
])
def test_check_writable_says_what_is_wrong(tmp_path, where, says):
    from edgezoo.fileio import check_writable

    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match=says) as info:
        check_writable(tmp_path / where, "--json")
    assert "--json" in info.value.message and "No such file" not in info.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]  # nothing made
