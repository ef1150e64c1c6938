"""The CLI through its entry point: list, info, unknown names, --help."""

from __future__ import annotations

import json

import pytest

from edgezoo.cli import main

pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")


def run(capsys, *args):
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_commands(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "list" in out and "info" in out


@pytest.mark.parametrize("command", ["list", "info"])
def test_subcommand_help(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0 and "Usage" in out


def test_list_shows_models_and_writes_json(capsys, tmp_path):
    path = tmp_path / "zoo.json"
    code, out, _ = run(capsys, "list", "--json", str(path))
    assert code == 0 and "mobilenet_v3_large" in out and "squeezenet1_1" in out
    rows = json.loads(path.read_text())
    v3 = next(r for r in rows if r["name"] == "mobilenet_v3_large")
    assert "mobilenetv3" in v3["aliases"] and v3["params"] == 5_483_032 and v3["input_size"] == [3, 224, 224]


def test_info_shows_stages(capsys):
    code, out, _ = run(capsys, "info", "mobilenetv3", "--input-size", "160")
    assert code == 0
    assert "mobilenet_v3_large" in out and "5,483,032" in out and "features.16" in out and "classifier" in out


def test_unknown_model_is_one_clear_line(capsys):
    code, out, err = run(capsys, "info", "mobilnetv3")
    assert code == 2
    assert "unknown model 'mobilnetv3'" in err and "did you mean" in err and "mobilenetv3" in err
    assert "Traceback" not in err + out


def test_info_input_too_small_is_a_clear_error(capsys):
    code, _, err = run(capsys, "info", "squeezenet1_0", "--input-size", "8")
    assert code == 2 and "cannot take" in err


def test_unknown_family(capsys):
    code, _, err = run(capsys, "list", "--family", "resnet")
    assert code == 2 and "no models in family" in err


def test_registry_commands_without_torch_say_what_to_install():
    from conftest import run_edgezoo

    r = run_edgezoo("list", block_torch=True)
    assert r.returncode == 2
    assert "PyTorch is not installed" in r.stderr and "edgezoo[torch]" in r.stderr
    assert "Traceback" not in r.stderr
