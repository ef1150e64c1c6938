"""`edgezoo export` refuses bad options and unwritable outputs before any work, and destroys nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgezoo.cli import main

pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")

ROOT = Path(__file__).resolve().parents[1]
MODEL = "squeezenet1_1"


def run(capsys, *args):
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


def export(capsys, *args):
    code, out, err = run(capsys, "export", MODEL, *args)
    assert "Traceback" not in out + err
    assert "build model" not in out + err, "the check must come before any work"
    return code, " ".join((out + err).split())  # rich wraps long lines


@pytest.fixture
def old_bundle(tmp_path):
    b = tmp_path / "b1"
    b.mkdir()
    (b / "model.fp32.onnx").write_bytes(b"an earlier good bundle")
    # what an earlier export wrote beside it: the report that lists its files
    (b / "report.json").write_text(json.dumps({"model": MODEL, "edgezoo": "0.1.0",
                                               "files": {"fp32": {"file": "model.fp32.onnx", "size_bytes": 22}}}))
    return b


def test_unwritable_triton_keeps_the_earlier_bundle(capsys, tmp_path, old_bundle):
    code, text = export(capsys, "--int8", "-o", str(old_bundle), "--triton", "/proc/edgezoo-no/repo")
    assert code == 2 and "--triton" in text and "does not accept new files" in text
    assert (old_bundle / "model.fp32.onnx").read_bytes() == b"an earlier good bundle"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1"]


@pytest.mark.parametrize("args, says", [
    (["--input-size", "10000"], "must lie in 1..4096"),
    (["--input-size", "2,3,4,5"], "has 4 numbers"),
    (["--input-size", "big"], "is not a size"),
    (["--input-size", "1,96,96"], "takes 3 channels, not 1"),
    (["--input-size", "4"], "too small"),
    (["--int8", "--input-size", "4096"], "would need about"),
    (["--opset", "5"], "use 7..20"),
    (["--opset", "99"], "use 7..20"),
    (["--int8", "--opset", "12"], "use 13..20"),
    (["--int8", "--per-tensor", "--opset", "9"], "use 10..20"),
    (["--method", "foo"], "unknown calibration method 'foo'"),
    (["--int8", "--backend", "foo"], "unknown int8 backend 'foo'"),
    (["--batch", "0"], "--batch must lie in 1..1024"),
    (["--int8", "--calib-count", "0"], "--calib-count must be at least 1"),
])
def test_bad_values_fail_before_work(capsys, tmp_path, args, says):
    code, text = export(capsys, *args, "-o", str(tmp_path / "b"))
    assert code == 2 and says in text
    assert not list(tmp_path.iterdir())


def test_opset_range_is_in_the_help(capsys):
    code, out, _ = run(capsys, "export", "--help")
    assert code == 0 and "7..20" in " ".join(out.split())


def test_path_errors_say_what_is_wrong(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    d = tmp_path / "folder"
    d.mkdir()
    for args, says in [
        (["-o", str(f / "sub")], f"{f} is a file, not a folder"),
        (["-o", str(f)], "a file with that name exists"),
        (["-o", "/proc/edgezoo-x"], "folder /proc does not accept new files"),
        (["--triton", str(f)], "a file with that name exists"),
        (["--weights", str(d)], "is a folder"),
        (["--weights", str(tmp_path / "nope.pt")], "does not exist"),
        (["--int8", "--calib", str(f)], "is a file"),
        (["--int8", "--calib", str(tmp_path / "nope")], "does not exist"),
    ]:
        code, text = export(capsys, *args)
        assert code == 2 and says in text, (args, text)
        assert "No such file or directory" not in text and "not writable" not in text


def test_bundle_and_triton_entry_may_not_overlap(capsys, tmp_path):
    code, text = export(capsys, "-o", str(tmp_path / "repo" / MODEL / "b"), "--triton", str(tmp_path / "repo"))
    assert code == 2 and "overlap" in text


def test_options_without_effect_are_named(tmp_path):
    from edgezoo.export.options import ExportOptions, validate

    checked = validate(ExportOptions(MODEL, method="entropy", per_tensor=True, calib_count=8,
                                     distill_steps=3, out=tmp_path / "b"))
    said = " ".join(checked.warnings)
    for flag in ("--method", "--per-tensor", "--calib-count", "--distill-steps"):
        assert f"{flag} has no effect" in said
    assert validate(ExportOptions(MODEL, int8=True, method="entropy", out=tmp_path / "b")).warnings == []
    assert checked.options.method == "entropy" and checked.size == (3, 224, 224)


def test_sigterm_mid_export_leaves_nothing(tmp_path):
    """SIGTERM (kill, timeouts) must clean up like Ctrl-C: no hidden .NAME.XXXX.partial folder."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "edgezoo", "export", MODEL, "--input-size", "64", "--fp16",
                             "-o", str(tmp_path / "b")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob(".b.*.partial")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the export ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out.decode(errors="replace")[-2000:]
    assert list(tmp_path.iterdir()) == [], [p.name for p in tmp_path.iterdir()]


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this-must-not-run",))


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_weights_are_refused_with_the_reason(capsys, tmp_path, legacy):
    import torch

    path = tmp_path / "evil.pt"
    torch.save({"w": _RunsCode()}, path, _use_new_zipfile_serialization=not legacy)
    code, out, err = run(capsys, "export", MODEL, "--weights", str(path), "-o", str(tmp_path / "b"))
    text = " ".join((out + err).split())
    assert code == 2 and "Traceback" not in text and "this-must-not-run" not in text
    assert "UserWarning" not in text and "Warning" not in text
    assert "refused to load" in text and ".system" in text and "could run anything" in text
    assert "weights_only=False" in text and "trust" in text  # what to do
    assert not (tmp_path / "b").exists()


def test_weights_that_are_no_checkpoint(capsys, tmp_path):
    from edgezoo.errors import WeightsError
    from edgezoo.models.weights import read_state_dict

    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint\n")
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint") as info:
        read_state_dict(junk)
    assert "refused" not in info.value.message
    with pytest.raises(WeightsError, match="is a folder"):
        read_state_dict(tmp_path)


def test_export_with_triton_swaps_bundle_and_entry_in(capsys, tmp_path, old_bundle):
    repo = tmp_path / "repo"
    (repo / "other").mkdir(parents=True)
    (repo / MODEL).mkdir()
    (repo / MODEL / "1").mkdir()  # an entry an earlier export wrote
    (repo / MODEL / "1" / "model.onnx").write_bytes(b"old entry")
    (repo / MODEL / "config.pbtxt").write_text(f'name: "{MODEL}"\n')
    (old_bundle / "export.log").write_text("other libraries' messages")  # moved in by the earlier export
    code, out, err = run(capsys, "export", MODEL, "--input-size", "64", "-o", str(old_bundle),
                         "--triton", str(repo), "--method", "entropy")
    text = " ".join((out + err).split())
    assert code == 0, text
    assert text.count("--method has no effect without --int8") == 1  # said once, before the work
    assert sorted(p.name for p in old_bundle.iterdir()) == ["model.fp32.onnx", "report.json", "report.md"]
    # labels.txt: the ImageNet class names the checkpoint preset puts in the file's metadata
    assert sorted(p.name for p in (repo / MODEL).iterdir()) == ["1", "config.pbtxt", "labels.txt"]
    assert (repo / MODEL / "1" / "model.onnx").read_bytes() == (old_bundle / "model.fp32.onnx").read_bytes()
    assert (repo / "other").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1", "repo"]  # no temporary left beside them


@pytest.mark.parametrize("case", ["user folder", "bundle plus notes", "triton entry plus version 2"])
def test_a_folder_holding_files_edgezoo_did_not_write_is_refused_before_work(capsys, tmp_path, old_bundle, case):
    """A bundle (or Triton entry) replaces its folder whole; a folder holding anything an earlier export did
    not write is refused in one line before any work, and every file in it stays."""
    target, args = tmp_path / "d", []
    if case == "user folder":
        (target / "sub").mkdir(parents=True)
        (target / "important.txt").write_text("x")
        says = f"-o {target}: the folder holds 'important.txt' and 1 more, which edgezoo did not write"
    elif case == "bundle plus notes":
        target = old_bundle
        (target / "notes.txt").write_text("x")
        says = "the folder holds 'notes.txt', which edgezoo did not write"
    else:
        entry = tmp_path / "repo" / MODEL
        (entry / "2").mkdir(parents=True)
        (entry / "config.pbtxt").write_text(f'name: "{MODEL}"\n')
        args = ["--triton", str(tmp_path / "repo")]
        says = f"--triton {entry}: the folder holds '2', which edgezoo did not write"
    before = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    code, text = export(capsys, "-o", str(target), *args)
    assert code == 2 and says in text, text
    assert "give a new or empty folder" in text
    assert {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")} == before


@pytest.mark.parametrize("out", [".", "", "$PWD", ".."])
def test_the_current_folder_is_refused_as_a_bundle_folder(capsys, tmp_path, monkeypatch, out):
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_text("x")
    monkeypatch.chdir(work)
    code, text = export(capsys, "-o", str(work) if out == "$PWD" else out)
    assert code == 2 and "it is the current folder" in text and "replaced whole" in text, text
    assert (work / "mine.txt").read_text() == "x" and sorted(p.name for p in tmp_path.rglob("*")) == ["mine.txt", "work"]


def test_swap_refuses_files_put_there_during_the_work(tmp_path):
    """The mechanism itself (edgezoo.fileio): a file that appears in the target while the new folder is being
    written stops the swap; the earlier folder and that file stay, and no temporary is left."""
    from edgezoo.errors import InputError
    from edgezoo.fileio import atomic_directory

    target = tmp_path / "out"
    target.mkdir()
    (target / "a.txt").write_text("earlier")
    with pytest.raises(InputError, match="holds 'late.txt'"):
        with atomic_directory(target, owned=lambda p: {"a.txt"}) as tmp:
            (tmp / "a.txt").write_text("new")
            (target / "late.txt").write_text("the user's")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "late.txt", "out"]
    assert (target / "a.txt").read_text() == "earlier"
    with atomic_directory(target / "sub" / "1") as tmp:  # one sub-folder of a tree: its siblings stay
        (tmp / "m").write_text("v1")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "late.txt", "sub"]


def _export_proc(tmp_path, out):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # the default SIGINT disposition, as a terminal's Ctrl-C finds it (a shell's background job ignores it)
    return subprocess.Popen([sys.executable, "-m", "edgezoo", "export", MODEL, "--input-size", "64", "-o", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_ctrl_c_after_the_bundle_is_in_place_still_exits_0(tmp_path):
    """Once the bundle is swapped in the export has succeeded: Ctrl-C while the summary prints or the
    interpreter shuts down must not turn it into an exit by signal."""
    out = tmp_path / "b"
    proc = _export_proc(tmp_path, out)
    deadline = time.monotonic() + 240
    while not (out / "report.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(20):  # keep pressing until it has ended
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, (proc.returncode, stderr[-2000:])
    assert f"{MODEL} -> {out}" in " ".join(stdout.split()) and "Traceback" not in stdout + stderr
    assert sorted(p.name for p in out.iterdir()) == ["model.fp32.onnx", "report.json", "report.md"]


def test_ctrl_c_just_after_the_swap_still_prints_the_summary(capsys, tmp_path, monkeypatch):
    """The window the test above hits only by chance, made certain: the bundle is swapped in and Ctrl-C lands
    before the export has returned. The summary is read back from report.json and the exit is 0."""
    import edgezoo.api

    real = edgezoo.api.run

    def run_then_interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(edgezoo.api, "run", run_then_interrupted)
    out = tmp_path / "b"
    monkeypatch.setattr("signal.signal", lambda *a: None)  # the CLI ignores later presses; not in pytest's process
    code, stdout, stderr = run(capsys, "export", MODEL, "--input-size", "64", "-o", str(out))
    text = " ".join((stdout + stderr).split())
    assert code == 0 and "Traceback" not in text, text
    assert f"interrupted after the bundle was written: {out} is complete" in text
    assert f"{MODEL} -> {out}/" in text and f"report: {out / 'report.md'}" in text
    assert sorted(p.name for p in out.iterdir()) == ["model.fp32.onnx", "report.json", "report.md"]


def test_ctrl_c_before_the_swap_keeps_the_earlier_bundle_and_says_so(tmp_path, old_bundle):
    proc = _export_proc(tmp_path, old_bundle)
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob(".b1.*.partial")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the export ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
    text = " ".join(stderr.split())
    assert f"interrupted: the earlier bundle {old_bundle} is unchanged" in text and "Traceback" not in text, text
    assert (old_bundle / "model.fp32.onnx").read_bytes() == b"an earlier good bundle"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1"]


def test_every_truncation_of_a_checkpoint_is_one_line(capsys, tmp_path):
    """A checkpoint cut anywhere (a copy that stopped) fails wherever torch's readers stop: OSError [Errno 22]
    from a seek in a cut zip, IndexError or struct.error in a cut legacy pickle. Each is one WeightsError."""
    import io

    import torch

    from edgezoo.errors import WeightsError
    from edgezoo.models.weights import read_state_dict

    cut = tmp_path / "cut.pth"
    kinds, errno22 = set(), None
    for legacy in (False, True):
        buf = io.BytesIO()
        torch.save({"a.weight": torch.arange(600, dtype=torch.float32), "a.bias": torch.zeros(3)}, buf,
                   _use_new_zipfile_serialization=not legacy)
        data = buf.getvalue()
        for n in range(0, len(data), 3):
            cut.write_bytes(data[:n])
            try:
                torch.load(cut, weights_only=True)
            except Exception as e:  # noqa: BLE001  (which kinds torch raises is what is recorded)
                kinds.add(type(e).__name__)
                if isinstance(e, OSError) and errno22 is None:
                    errno22 = data[:n]
            with pytest.raises(WeightsError, match="cannot read weights from"):  # damage, not a refusal
                read_state_dict(cut)
    assert {"OSError", "IndexError", "error"} <= kinds  # the kinds that escaped before, still exercised
    cut.write_bytes(errno22)
    code, text = export(capsys, "--weights", str(cut), "-o", str(tmp_path / "b"))
    assert code == 2 and f"cannot read weights from {cut}: Invalid argument" in text
    assert not (tmp_path / "b").exists()


def test_a_bundle_replaces_the_bundle_an_earlier_export_wrote(capsys, tmp_path):
    out = tmp_path / "b"
    for _ in range(2):  # the second run finds the first's bundle (report.json lists its files) and replaces it
        code, _, err = run(capsys, "export", MODEL, "--input-size", "32", "-o", str(out))
        assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["model.fp32.onnx", "report.json", "report.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
