"""edgezoo.models.batchnorm: BN statistics re-estimated on given images; production code never imports tests' helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
from torch import nn  # noqa: E402

from edgezoo.models.batchnorm import random_images, recalibrate_bn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_statistics_are_the_images_and_momentum_is_restored():
    net = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4, momentum=0.3))
    x = random_images((3, 5, 5), 12, seed=1) * 2 + 1
    recalibrate_bn(net, x, batch_size=4)  # three equal batches: the average of their means is the mean
    with torch.no_grad():
        y = net[0](x)
    assert torch.allclose(net[1].running_mean, y.mean((0, 2, 3)), atol=1e-5)
    assert net[1].momentum == 0.3 and not net.training
    batches = [x[:6], x[6:], x[:1]]  # an iterable of batches; the 1-image batch is skipped
    again = recalibrate_bn(nn.Sequential(net[0], nn.BatchNorm2d(4)), batches)
    assert torch.allclose(again[1].running_mean, y.mean((0, 2, 3)), atol=1e-5)


def test_random_images_are_seeded():
    assert torch.equal(random_images((3, 4, 4), 3, seed=2), random_images((3, 4, 4), 3, seed=2))
    assert not torch.equal(random_images((3, 4, 4), 3, seed=2), random_images((3, 4, 4), 3, seed=3))


def test_production_code_does_not_import_edgezoo_testing():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "edgezoo").rglob("*.py")
                 if p.name != "testing.py" and "edgezoo.testing" in p.read_text()]
    assert offenders == []
