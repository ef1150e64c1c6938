"""ShuffleNet v1: the paper's figures, its channel shuffle, unit structure, and the megvii release's checkpoints."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
from torch import nn  # noqa: E402

import edgezoo  # noqa: E402
from edgezoo.errors import WeightsError  # noqa: E402
from edgezoo.models import shufflenet_v1 as sv1  # noqa: E402
from edgezoo.models.counting import count_params  # noqa: E402
from edgezoo.models.layers import channel_shuffle  # noqa: E402
from edgezoo.testing import randomize_bn  # noqa: E402

# Zhang et al. 2018, Table 2 prints these parameter counts (rounded to 0.001M) for the 1x models; ours, counted
# on the official release's layout (FC without bias), must round to them.
PAPER_PARAMS = [
    ("shufflenet_v1_g1_x1_0", 1.531e6),
    ("shufflenet_v1_g2_x1_0", 1.733e6),
    ("shufflenet_v1_g3_x1_0", 1.865e6),
    ("shufflenet_v1_g4_x1_0", 1.967e6),
]


@pytest.mark.parametrize("name, printed", PAPER_PARAMS)
def test_params_round_to_the_printed_figures(name, printed):
    n = count_params(edgezoo.create_model(name))
    assert abs(n - printed) <= 1e-3 * printed, n


def test_shuffle_is_the_papers_permutation():
    paper = [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    x = torch.arange(12.0).view(1, 12, 1, 1)
    assert channel_shuffle(x, 3).flatten().long().tolist() == paper
    assert sv1.paper_permutation(12, 3) == paper
    megvii = sv1.megvii_permutation(12, 3)
    assert megvii == [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]
    assert [paper[i] for i in megvii] == list(range(12))  # inverse permutations
    model = edgezoo.create_model("shufflenet_v1_g3_x0_5")
    shuffle = model.features[1].branch[3]
    assert shuffle(x).flatten().long().tolist() == paper  # the model uses it


def test_shufflenet_v1_unit_structure():
    model = edgezoo.create_model("shufflenet_v1_g8_x1_0")
    units = list(model.features)
    assert len(units) == 16
    assert units[0].branch[0].groups == 1  # only the first unit of Stage 2 has an ungrouped first 1x1 conv
    assert all(u.branch[0].groups == 8 and u.branch[6].groups == 8 for u in units[1:])
    for u in units:
        assert isinstance(u.branch[5], nn.BatchNorm2d) and isinstance(u.branch[6], nn.Conv2d)  # no ReLU after dw
        assert u.branch[4].groups == u.branch[4].in_channels
    strided = [i for i, u in enumerate(units) if u.stride == 2]
    assert strided == [0, 4, 12]
    assert all(isinstance(units[i].shortcut, nn.AvgPool2d) for i in strided)
    assert units[0].branch[6].out_channels == 384 - 24  # concat: the branch makes out - in channels
    assert model.classifier.bias is None


def test_shufflenet_v1_undefined_widths_are_refused():
    with pytest.raises(ValueError, match="not defined"):
        sv1.ShuffleNetV1(groups=2, width_mult=0.5)
    with pytest.raises(ValueError, match="not divisible"):
        sv1.ShuffleNetV1(groups=2, stage_channels=(24, 100, 200, 400))  # bottleneck 25 in 2 groups


class _MegviiUnit(nn.Module):
    """The official release's unit (blocks.py): its module names, and its shuffle (reshape (C/g, g))
    applied after the depthwise conv and its BN."""

    def __init__(self, inp, oup, groups, first_group, stride):
        super().__init__()
        self.groups, self.stride = groups, stride
        mid, outputs = oup // 4, oup - inp if stride == 2 else oup
        self.branch_main_1 = nn.Sequential(
            nn.Conv2d(inp, mid, 1, groups=1 if first_group else groups, bias=False), nn.BatchNorm2d(mid),
            nn.ReLU(), nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid))
        self.branch_main_2 = nn.Sequential(nn.Conv2d(mid, outputs, 1, groups=groups, bias=False),
                                           nn.BatchNorm2d(outputs))
        self.branch_proj = nn.AvgPool2d(3, 2, 1) if stride == 2 else None

    def forward(self, x):
        y = self.branch_main_1(x)
        if self.groups > 1:
            b, c, h, w = y.shape
            y = y.reshape(b, c // self.groups, self.groups, h, w).permute(0, 2, 1, 3, 4).reshape(b, c, h, w)
        y = self.branch_main_2(y)
        return torch.relu(y + x) if self.stride == 1 else torch.cat((self.branch_proj(x), torch.relu(y)), 1)


class _MegviiNet(nn.Module):
    """The release's network.py layout: first_conv, maxpool, features, classifier.0 (no bias)."""

    def __init__(self, groups, channels):
        super().__init__()
        self.first_conv = nn.Sequential(nn.Conv2d(3, channels[0], 3, 2, 1, bias=False),
                                        nn.BatchNorm2d(channels[0]), nn.ReLU())
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        units, c = [], channels[0]
        for stage, (repeats, out) in enumerate(zip((4, 8, 4), channels[1:])):
            for i in range(repeats):
                units.append(_MegviiUnit(c, out, groups, stage == 0 and i == 0, 2 if i == 0 else 1))
                c = out
        self.features = nn.Sequential(*units)
        self.classifier = nn.Sequential(nn.Linear(c, 1000, bias=False))

    def forward(self, x):
        return self.classifier(self.features(self.maxpool(self.first_conv(x))).mean((2, 3)))


def _megvii_checkpoint(tmp_path, groups, width):
    torch.manual_seed(0)
    ref = _MegviiNet(groups, sv1.widths(groups, width))
    with torch.no_grad():
        for p in ref.parameters():  # fan-in scaled, so activations stay O(1) through 16 units
            p.normal_(0, p[0].numel() ** -0.5)
    ref = randomize_bn(ref, seed=2).eval()
    path = tmp_path / "megvii.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in ref.state_dict().items()}}, path)  # as released
    return ref, str(path)


@pytest.mark.parametrize("groups, width", [(3, 0.5), (8, 2.0)])
def test_megvii_checkpoint_loads_into_the_paper_network(tmp_path, groups, width):
    ref, path = _megvii_checkpoint(tmp_path, groups, width)
    name = f"shufflenet_v1_g{groups}_x{width:.1f}".replace(".", "_")
    ours = edgezoo.create_model(name, weights=path)
    assert ours.shuffle == "paper"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert expected.abs().max() > 0.1
    assert (got - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())


def test_megvii_checkpoint_without_exact_remap_says_so(tmp_path):
    ref, path = _megvii_checkpoint(tmp_path, 8, 0.5)  # bottleneck 48 in 8 groups: no relabelling exists
    with pytest.raises(WeightsError, match="inverse channel shuffle.*from_megvii"):
        edgezoo.create_model("shufflenet_v1_g8_x0_5", weights=path)
    model = sv1.from_megvii(path, 8, 0.5)
    assert model.shuffle == "megvii"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x)
        assert (model(x) - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())
    with pytest.raises(ValueError, match="paper's shuffle"):
        edgezoo.create_model("shufflenet_v1_g8_x0_5", shuffle="megvii")


def test_megvii_relabelling_exists_for_every_g3_release():
    for width in (0.5, 1.0, 1.5, 2.0):
        for out in sv1.widths(3, width)[1:]:
            alpha, src = sv1.megvii_shuffle_relabelling(out // 4, 3)
            n = out // 4 // 3
            assert sorted(alpha) == list(range(out // 4)) and sorted(src) == list(range(out // 4))
            assert all(a // n == j // n for j, a in enumerate(alpha))  # stays inside its conv group
            assert all(s // n == i // n for i, s in enumerate(src))
