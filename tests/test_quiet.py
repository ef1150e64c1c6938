"""Other libraries' output goes to a log file; the terminal shows edgezoo's own lines (--verbose shows all)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings

import pytest

from conftest import run_edgezoo

# what edgezoo itself prints during and after `export`: its steps, its warnings and errors, and the summary
# (a "MODEL -> DIR/" line, then indented detail lines)
EDGEZOO_LINE = re.compile(r"^(✓ .+|warning: .+|error: .+|\S+ -> .+/|  .+|other libraries' messages: .+)$")
# marks of the libraries the issue names: torchao, torch's pytree, copyreg, XNNPACK's cpuinfo, LiteRT, absl
THIRD_PARTY = re.compile(r"Failed to load|_pytree|FutureWarning|cpuinfo_utils|threadpool\.cpp|"
                         r"TensorFlow Lite|absl::|^[IWE]\d{4} ")


def _env(tmp_path, **extra):
    return {"XDG_CACHE_HOME": str(tmp_path / "cache"), "COLUMNS": "200", **extra}


@pytest.fixture(scope="module")
def edge_bundle(tmp_path_factory):
    pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
    pytest.importorskip("executorch", reason="ExecuTorch (edgezoo[executorch]) is not installed")
    pytest.importorskip("ai_edge_litert", reason="LiteRT (edgezoo[litert]) is not installed")
    tmp = tmp_path_factory.mktemp("quiet")
    out = tmp / "bundle"
    proc = run_edgezoo("export", "effnet", "--input-size", "32", "--target", "executorch,litert", "-o", str(out),
                       env=_env(tmp))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc


def test_export_prints_only_edgezoo_lines(edge_bundle):
    out, proc = edge_bundle
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    strangers = [ln for ln in lines if not EDGEZOO_LINE.match(ln)]
    assert not strangers, strangers
    assert any(ln.startswith("✓ executorch") for ln in lines) and any(ln.startswith("✓ litert") for ln in lines)
    log = out / "export.log"
    assert proc.stdout.splitlines()[-1] == f"  other libraries' messages: {log} (--verbose shows them)"
    # the noise was kept, not lost: ExecuTorch's native cpuinfo lines and a Python warning are in the log
    text = log.read_text()
    assert THIRD_PARTY.search(text), text[:2000]


def test_bench_is_quiet_and_verbose_shows_the_rest(edge_bundle, tmp_path):
    out, _ = edge_bundle
    model = next(out.glob("*.tflite"))  # LiteRT writes "INFO: Created TensorFlow Lite XNNPACK delegate" to fd 2
    args = ("bench", str(model), "-n", "3", "--warmup", "1", "-t", "1")
    quiet = run_edgezoo(*args, env=_env(tmp_path))
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert not THIRD_PARTY.search(quiet.stdout + quiet.stderr), quiet.stdout + quiet.stderr
    assert "p50 ms" in quiet.stdout
    named = re.search(r"other libraries' messages: (\S+) \(--verbose", quiet.stderr)
    assert named and THIRD_PARTY.search(open(named.group(1)).read())
    loud = run_edgezoo("--verbose", *args, env=_env(tmp_path))
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert THIRD_PARTY.search(loud.stdout + loud.stderr)
    assert "other libraries' messages" not in loud.stderr


def test_help_and_usage_errors_reach_the_terminal(tmp_path):
    proc = run_edgezoo("bench", "--help", env=_env(tmp_path))
    assert proc.returncode == 0 and "--vs" in proc.stdout
    proc = run_edgezoo("bench", "--no-such-option", env=_env(tmp_path))
    assert proc.returncode != 0 and "--no-such-option" in proc.stderr


_CHILD = r"""
import logging, os, warnings
from edgezoo import quiet
from edgezoo.console import console, err_console
with quiet.third_party_to_log("test") as path:
    os.write(1, b"native stdout line\n")
    os.write(2, b"native stderr line\n")
    print("python print line")
    warnings.warn("a library warning", FutureWarning)
    logging.getLogger("somelib").warning("a library log record")
    console.print("edgezoo result line")
    err_console.print("edgezoo progress line")
print("after the block")
"""


def test_fd_level_output_goes_to_the_log(tmp_path):
    env = {**os.environ, **_env(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["edgezoo result line", "after the block"]
    err = proc.stderr.splitlines()
    assert err[0] == "edgezoo progress line" and err[1].startswith("other libraries' messages: ")
    log = err[1].split(": ", 1)[1].split(" (--verbose")[0]
    text = open(log).read()
    for line in ("native stdout line", "native stderr line", "python print line", "a library warning",
                 "a library log record"):
        assert line in text
    assert "edgezoo" not in text.replace(log, "")


def test_an_empty_log_is_removed_and_not_named(tmp_path):
    child = "from edgezoo import quiet\nwith quiet.third_party_to_log('test') as p: pass\nprint(p.exists())"
    env = {**os.environ, **_env(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "False" and proc.stderr == ""


def test_verbose_env_turns_it_off(tmp_path):
    child = ("import os\nfrom edgezoo import quiet\nwith quiet.third_party_to_log('test') as p:\n"
             "    os.write(2, b'shown\\n')\nprint(p)")
    env = {**os.environ, **_env(tmp_path), "EDGEZOO_VERBOSE": "1"}
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stderr == "shown\n" and proc.stdout.strip() == "None"


def test_in_process_state_is_restored(tmp_path, monkeypatch):
    from edgezoo import quiet

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    before = (warnings.showwarning, logging.lastResort)
    with quiet.third_party_to_log("test"):
        assert warnings.showwarning is not before[0]
    assert (warnings.showwarning, logging.lastResort) == before
