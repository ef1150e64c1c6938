"""Issue 3: ShuffleNet v1, EFFNet, GhostNet, HarDNet: exact counts, MACs, reference parity, structure."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
from torch import nn  # noqa: E402

import edgezoo  # noqa: E402
from edgezoo.errors import WeightsError  # noqa: E402
from edgezoo.models import effnet as effnet_mod  # noqa: E402
from edgezoo.models import hardnet as hardnet_mod  # noqa: E402
from edgezoo.models import shufflenet_v1 as sv1  # noqa: E402
from edgezoo.models.counting import count_macs, count_params  # noqa: E402
from edgezoo.models.layers import channel_shuffle  # noqa: E402
from edgezoo.testing import randomize_bn  # noqa: E402

# name, params (exact int, or (value, relative tolerance)), MACs at the spec's input size, HarDNet head key
TARGETS = [
    ("shufflenet_v1_g1_x1_0", (1.531e6, 1e-3), 143.08e6),
    ("shufflenet_v1_g2_x1_0", (1.733e6, 1e-3), 140.84e6),
    ("shufflenet_v1_g3_x1_0", (1.865e6, 1e-3), 137.46e6),
    ("shufflenet_v1_g4_x1_0", (1.967e6, 1e-3), 134.34e6),
    ("shufflenet_v1_g8_x1_0", 2_433_768, 138.37e6),
    ("shufflenet_v1_g3_x0_5", 717_324, 37.59e6),
    ("shufflenet_v1_g3_x2_0", 5_449_776, 524.05e6),
    ("effnet", 151_146, 5.64e6),
    ("ghostnet_x0_5", 2_587_292, 42.33e6),
    ("ghostnet_x1_0", 5_182_508, 141.15e6),
    ("ghostnet_x1_3", 7_358_820, 227.00e6),
    ("hardnet39ds", 3_488_228, 429.5e6),
    ("hardnet68ds", 4_180_602, 775.3e6),
    ("hardnet68", 17_565_348, 4_246e6),
    ("hardnet85", 36_670_212, 9_074e6),
]
# Index of the classifier Sequential in the reference's `base` list (PingoLH/Pytorch-HarDNet): 3 stem modules,
# then per block [block, (Dropout for 85's last), transition, (down-sample)].
HARDNET_HEAD = {"hardnet39ds": 14, "hardnet68ds": 16, "hardnet68": 16, "hardnet85": 19}


@pytest.mark.parametrize("name, params, macs", TARGETS, ids=[t[0] for t in TARGETS])
def test_params_and_macs(name, params, macs):
    spec = edgezoo.get_spec(name)
    model = edgezoo.create_model(name)
    n = count_params(model)
    if isinstance(params, tuple):
        assert abs(n - params[0]) <= params[1] * params[0], n
    else:
        assert n == params
    assert n == spec.reference.params  # the registry states what the model has
    m = count_macs(model, spec.input_size)
    assert abs(m - macs) <= 0.01 * macs, m / 1e6
    if name in HARDNET_HEAD:  # the authors' key names: base.N... with the head where theirs is
        head = HARDNET_HEAD[name]
        assert tuple(model.state_dict()[f"base.{head}.3.weight"].shape) == (1000, model.num_features)


def test_new_names_and_aliases_resolve():
    names = set(edgezoo.list_models())
    assert {"shufflenet_v1_g3_x1_0", "shufflenet_v1_g8_x1_5", "effnet", "ghostnet_x0_5", "ghostnet_x1_3",
            "hardnet39ds", "hardnet68ds", "hardnet68", "hardnet85"} <= names
    for alias, name in [("shufflenetv1", "shufflenet_v1_g3_x1_0"), ("shufflenetv1_g8_x1_0", "shufflenet_v1_g8_x1_0"),
                        ("ghostnet", "ghostnet_x1_0"), ("ghostnet_100", "ghostnet_x1_0"),
                        ("ghostnet_050", "ghostnet_x0_5"), ("hardnet", "hardnet68"), ("HarDNet-39DS", "hardnet39ds"),
                        ("effnet", "effnet")]:
        assert edgezoo.get_spec(alias).name == name


# --- GhostNet ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, timm_name", [("ghostnet_x0_5", "ghostnet_050"), ("ghostnet_x1_0", "ghostnet_100"),
                                             ("ghostnet_x1_3", "ghostnet_130")])
def test_ghostnet_matches_timm(timm, tmp_path, name, timm_name):
    torch.manual_seed(0)
    ref = randomize_bn(timm.create_model(timm_name), seed=1).eval()
    path = tmp_path / "timm.pth"
    torch.save(ref.state_dict(), path)
    ours = edgezoo.create_model(name, weights=str(path))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert expected.abs().max() > 0.05  # a check on outputs that are not ~0
    assert (got - expected).abs().max().item() <= 1e-5
    # our own state_dict loads back as it is (the remap leaves non-timm keys alone)
    torch.save(ours.state_dict(), path)
    again = edgezoo.create_model(name, weights=str(path))
    with torch.no_grad():
        assert torch.equal(again(x), got)


def test_ghostnet_structure():
    m = edgezoo.create_model("ghostnet_x1_0")
    se = [b.se for b in m.features[1:-1] if b.se is not None]
    assert [s.fc1.out_channels for s in se] == [20, 32, 120, 168, 168, 240, 240]  # make_divisible(c/4, 4)
    assert all(isinstance(s.scale_activation, nn.Hardsigmoid) for s in se)
    assert m.conv_head.bias is not None and m.conv_head.out_channels == 1280  # bias, no BN, not scaled
    assert not any(isinstance(x, nn.Hardswish) for x in m.modules())
    ghost = m.features[2].ghost1  # 16 -> 48: primary 1x1 makes 24, cheap dw 3x3 makes 24
    assert ghost.primary_conv[0].out_channels == 24 and ghost.cheap_operation[0].groups == 24


# --- HarDNet -----------------------------------------------------------------------------------------------

def _reference_links(k: int) -> list[int]:
    """The rule as the paper states it: k - 2^n for every n with 2^n dividing k, in the order n = 0, 1, ..."""
    return [k - 2 ** n for n in range(k.bit_length()) if k % 2 ** n == 0 and k - 2 ** n >= 0]


def test_hardnet_links():
    assert hardnet_mod.harmonic_links(8) == [7, 6, 4, 0]
    assert hardnet_mod.harmonic_links(16) == [15, 14, 12, 8, 0]
    assert hardnet_mod.harmonic_links(6) == [5, 4]
    for k in range(1, 65):
        assert hardnet_mod.harmonic_links(k) == _reference_links(k), k


def test_hardnet_block_widths_and_output():
    block = randomize_bn(hardnet_mod.HarDBlock(64, growth=14, m=1.7, n_layers=8)).eval()
    assert block.widths == [14, 24, 14, 40, 14, 24, 14, 68]
    assert block.out_channels == 124  # layers 1, 3, 5, 7 and the last (8): 14 * 4 + 68
    # layer 8 reads layers 7, 6, 4 and the input: 14 + 24 + 40 + 64 channels
    assert block.layers[7].conv.in_channels == 14 + 24 + 40 + 64
    assert isinstance(block.layers[0].relu, nn.ReLU6)
    with torch.no_grad():
        y = block(torch.randn(2, 64, 8, 8))
    assert y.shape == (2, 124, 8, 8)
    # output = concat of layer outputs 1, 3, 5, 7, 8 (ascending): the last 68 channels are layer 8's
    feats = [torch.randn(2, 64, 8, 8)]
    with torch.no_grad():
        for links, layer in zip(block.links, block.layers):
            feats.append(layer(torch.cat([feats[j] for j in links], 1)))
        assert torch.equal(block(feats[0]), torch.cat([feats[k] for k in (1, 3, 5, 7, 8)], 1))


@pytest.mark.parametrize("arch, outs", [
    ("hardnet68", [124, 262, 328, 654, 782]),
    ("hardnet39ds", [72, 292, 518, 730]),
    ("hardnet85", [214, 392, 458, 588, 784, 1252]),
])
def test_hardnet_block_outputs(arch, outs):
    cfg = hardnet_mod.ARCHS[arch]
    got, ch = [], cfg.stem[1]
    with torch.device("meta"):  # shapes only, no memory
        for st in cfg.stages:
            got.append(hardnet_mod.HarDBlock(ch, st.growth, cfg.m, st.layers, cfg.depthwise).out_channels)
            ch = st.transition
    assert got == outs


def test_hardnet_ds_layer_is_pointwise_then_depthwise():
    with torch.device("meta"):
        m = hardnet_mod.HarDNet("hardnet39ds")
    layer = m.base[3].layers[0]
    assert list(layer.state_dict()) == [
        "layer1.conv.weight", "layer1.norm.weight", "layer1.norm.bias", "layer1.norm.running_mean",
        "layer1.norm.running_var", "layer1.norm.num_batches_tracked", "layer2.dwconv.weight", "layer2.norm.weight",
        "layer2.norm.bias", "layer2.norm.running_mean", "layer2.norm.running_var", "layer2.norm.num_batches_tracked"]
    assert layer.layer1.conv.kernel_size == (1, 1) and layer.layer2.dwconv.groups == layer.layer2.dwconv.in_channels
    assert isinstance(m.base[2], hardnet_mod.DWConvLayer)  # DS models down-sample with a stride-2 dw conv
    assert m.base[1].conv.kernel_size == (1, 1)  # and their second stem conv is 1x1


# --- ShuffleNet v1 -----------------------------------------------------------------------------------------

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


# --- EFFNet ------------------------------------------------------------------------------------------------

def test_effnet_block_and_head():
    m = edgezoo.create_model("effnet")
    block = m.features[0]
    convs = [mod for mod in block.modules() if isinstance(mod, nn.Conv2d)]
    assert [(c.kernel_size, c.stride, c.groups) for c in convs] == [
        ((1, 1), (1, 1), 1), ((1, 3), (1, 1), 32), ((3, 1), (1, 1), 32), ((1, 2), (1, 2), 1)]
    assert [c.out_channels for c in convs] == [32, 32, 32, 64]  # bottleneck factor 2
    assert isinstance(block[2], nn.MaxPool2d) and block[2].kernel_size == (2, 1) and block[2].stride == (2, 1)
    for seq in (block[0], block[1], block[3], block[4]):  # conv, BN, leaky ReLU 0.3
        assert isinstance(seq[1], nn.BatchNorm2d) and seq[2].negative_slope == 0.3
    assert m.classifier.in_features == 256 * 4 * 4
    big = edgezoo.create_model("effnet", input_size=(3, 64, 48), num_classes=43)
    with torch.no_grad():
        assert big(torch.randn(2, 3, 64, 48)).shape == (2, 43)
    ref_order = edgezoo.create_model("effnet", act_before_bn=True)
    assert isinstance(ref_order.features[0][0][1], nn.LeakyReLU)  # the references' order, same counts
    assert count_params(ref_order) == 151_146
    with pytest.raises(ValueError, match="divisible by 8"):
        effnet_mod.EffNet(input_size=20)
