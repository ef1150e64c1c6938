"""One --input-size grammar for every command: S, H,W or C,H,W (x as well as a comma), same checks, same text."""

from __future__ import annotations

import re

import pytest

from edgezoo.errors import InputError
from edgezoo.runtimes.inputs import INPUT_SIZE_GRAMMAR, MAX_SIDE, image_chw, parse_input_size


@pytest.mark.parametrize("text, size", [
    ("224", (224, 224)), (" 160,128 ", (160, 128)), ("160x128", (160, 128)), ("3,224,224", (3, 224, 224)),
    ("1X32X48", (1, 32, 48)), (64, (64, 64)), ((96, 80), (96, 80)), (None, None), (str(MAX_SIDE), (MAX_SIDE,) * 2),
])
def test_the_grammar(text, size):
    assert parse_input_size(text) == size


@pytest.mark.parametrize("text, says", [
    ("big", "is not a size"), ("", "is not a size"), ("2.5", "is not a size"), ("224,", "is not a size"),
    ("1,2,3,4", "has 4 numbers"), ("0", "must lie in 1..4096"), ("-5", "must lie in 1..4096"),
    (str(MAX_SIDE + 1), "must lie in 1..4096"), ("10000,224", "must lie in 1..4096"),
    ("0,224,224", "channels must lie in 1..64"), (True, "is not a size"),
])
def test_bad_sizes_name_the_grammar(text, says):
    with pytest.raises(InputError, match=says) as info:
        parse_input_size(text)
    assert info.value.hint == f"use {INPUT_SIZE_GRAMMAR}" and "--input-size" in info.value.message


def test_channels_come_from_the_model_unless_given():
    assert image_chw((160, 128), 3) == (3, 160, 128)
    assert image_chw((1, 32, 32), 1) == (1, 32, 32)
    with pytest.raises(InputError, match="takes 3 channels, not 1"):
        image_chw((1, 32, 32), 3)


def _error(capsys, *args):
    from edgezoo.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(args))
    err = capsys.readouterr().err
    return info.value.code, " ".join(err.split())


def test_every_command_says_the_same(capsys, tmp_path):
    pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
    pytest.importorskip("starlette", reason="edgezoo[serve] is not installed")
    from tests.test_bench_cli import tiny_onnx

    f = str(tiny_onnx(tmp_path / "t.onnx"))
    commands = [["export", "squeezenet1_1", "-o", str(tmp_path / "b")], ["info", "squeezenet1_1"],
                ["bench", f], ["profile", f], ["guidelines", f], ["serve", f]]
    for bad in ("10000", "1,2,3,4", "big"):
        said = set()
        for cmd in commands:
            code, err = _error(capsys, *cmd, "--input-size", bad)
            assert code == 2 and err.startswith("error: --input-size"), (cmd, err)
            said.add(err)
        assert len(said) == 1, said
    for cmd in commands:
        from edgezoo.cli import main

        with pytest.raises(SystemExit):
            main([*cmd, "--help"])
        text = " ".join(re.sub("[│╭╮╰╯─]", " ", capsys.readouterr().out).split())  # rich's box, wrapped
        assert INPUT_SIZE_GRAMMAR.split(" e.g.")[0] in text, cmd
