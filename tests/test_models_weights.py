"""Loading weights: a checkpoint for another model, a wrong width, corrupt or hostile files, a missing file."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")

import edgezoo  # noqa: E402
from edgezoo.errors import WeightsError  # noqa: E402


def test_checkpoint_for_another_model_names_the_keys(torchvision, tmp_path):
    path = tmp_path / "v2.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), path)
    with pytest.raises(WeightsError) as e:
        edgezoo.create_model("mobilenet_v3_small", weights=str(path))
    msg = str(e.value)
    assert "does not fit" in msg and "features." in msg


def test_wrong_width_reports_shapes(tmp_path):
    path = tmp_path / "half.pth"
    torch.save(edgezoo.create_model("mobilenet_v2", width_mult=0.5).state_dict(), path)
    with pytest.raises(WeightsError, match="wrong shape"):
        edgezoo.create_model("mobilenet_v2", weights=str(path))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="cannot read weights"):
        edgezoo.create_model("squeezenet1_1", weights=str(path))


def test_hostile_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"w": Evil()}, path)
    with pytest.raises(WeightsError):
        edgezoo.create_model("squeezenet1_1", weights=str(path))


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        edgezoo.create_model("squeezenet1_1", weights=str(tmp_path / "nope.pth"))
