"""ShuffleNet v1 (Zhang et al. CVPR 2018): groups 1/2/3/4/8 at 1.0x, and g=3 / g=8 at 0.5x/1.5x/2.0x.

Unit (paper §3.2): 1x1 GConv -> BN -> ReLU -> channel shuffle -> 3x3 DWConv (stride s) -> BN (no ReLU) ->
1x1 GConv -> BN; stride 1: add the input, then ReLU; stride 2: concat a 3x3/2 average pool of the input,
then ReLU. Bottleneck = 1/4 of the unit's output channels. Only the first unit of Stage 2 has an ungrouped
first 1x1 conv (Table 1 caption). The FC has no bias (official release; the issue's param targets count so).

The shuffle is the paper's (reshape to (g, C/g), transpose). The official megvii PyTorch release reshapes to
(C/g, g), the inverse permutation. ``remap_megvii`` (used by ``create_model(name, weights=...)``) turns its
checkpoints into ours by relabelling channels inside the groups of the two 1x1 convs around each shuffle
(``megvii_shuffle_relabelling``), which computes exactly the same function. That is possible only where both
shuffles send the same number of channels from each group of the first 1x1 conv to each group of the second:
true for every g=3 release (and g=8 2.0x), false for g=8 0.5x/1.0x/1.5x (e.g. 96 bottleneck channels in 8
groups), where no relabelling of a paper-shuffle network reproduces the checkpoint. ``from_megvii(path, g,
width)`` loads any official checkpoint: exactly remapped where possible, otherwise into a network built with
the release's own permutation (``shuffle="megvii"``), which is then not the paper's network.

Which variants are registered, and why not the others:
* 1.0x, g = 1, 2, 3, 4, 8: paper Table 1 gives every width.
* 0.5x / 1.5x / 2.0x for g = 3 and g = 8: the official release's stage widths (below). Its conv1 is scaled
  for 0.5x and 2.0x only, and differently for g=3 (12) and g=8 (16) at 0.5x, so it cannot be derived.
* Not registered: 0.25x (any g) and scaled g = 1, 2, 4. The paper reports their accuracy (Table 2) but not
  their conv1 width, and for g = 2, 4 several scaled widths (e.g. 0.5x g=2: Stage 2 = 100, bottleneck 25)
  are not divisible by g; the rounding the authors used is UNVERIFIED. ``ShuffleNetV1(groups,
  stage_channels=(conv1, s2, s3, s4))`` builds any of them from widths you choose.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from edgezoo.errors import WeightsError
from edgezoo.models._init import torchvision_init
from edgezoo.models.layers import ChannelShuffle, ConvBNAct
from edgezoo.models.registry import ModelSpec, PaperFigures, ReferenceFigures, register

STAGE_REPEATS = (4, 8, 4)  # Stage 2/3/4: one stride-2 unit, then 3/7/3 stride-1 units
# Paper Table 1 (1.0x): conv1, Stage2, Stage3, Stage4 output channels per number of groups.
TABLE1 = {
    1: (24, 144, 288, 576),
    2: (24, 200, 400, 800),
    3: (24, 240, 480, 960),
    4: (24, 272, 544, 1088),
    8: (24, 384, 768, 1536),
}
# Official release (megvii-model/ShuffleNet-Series ShuffleNetV1/network.py) for the scaled variants.
MEGVII_CHANNELS = {
    (3, 0.5): (12, 120, 240, 480),
    (3, 1.0): (24, 240, 480, 960),
    (3, 1.5): (24, 360, 720, 1440),
    (3, 2.0): (48, 480, 960, 1920),
    (8, 0.5): (16, 192, 384, 768),
    (8, 1.0): (24, 384, 768, 1536),
    (8, 1.5): (24, 576, 1152, 2304),
    (8, 2.0): (48, 768, 1536, 3072),
}


def widths(groups: int, width_mult: float = 1.0) -> tuple[int, int, int, int]:
    if width_mult == 1.0 and groups in TABLE1:
        return TABLE1[groups]
    if (groups, width_mult) in MEGVII_CHANNELS:
        return MEGVII_CHANNELS[(groups, width_mult)]
    known = sorted({f"g={g} x{w}" for g, w in MEGVII_CHANNELS} | {f"g={g} x1.0" for g in TABLE1})
    raise ValueError(
        f"ShuffleNet v1 widths for g={groups} x{width_mult} are not defined by the paper or the official "
        f"release (defined: {', '.join(known)}); pass stage_channels=(conv1, s2, s3, s4) to choose them"
    )


class MegviiChannelShuffle(nn.Module):
    """The official release's shuffle, reshape to (C/g, g) and transpose: the inverse of the paper's."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.reshape(b, c // self.groups, self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


_SHUFFLES = {"paper": ChannelShuffle, "megvii": MegviiChannelShuffle}


class ShuffleUnit(nn.Module):
    """One unit; ``branch`` is a single Sequential so every conv is directly followed by its BN."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, stride: int, first_group: bool,
                 shuffle: str = "paper"):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError("stride must be 1 or 2")
        self.stride = stride
        mid = out_channels // 4
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        g1 = 1 if first_group else groups
        for what, c in (("input", in_channels if g1 > 1 else 0), ("bottleneck", mid), ("branch output", branch_out)):
            if c % groups:
                raise ValueError(f"ShuffleNet v1 unit {in_channels}->{out_channels}: {what} channels {c} "
                                 f"are not divisible by groups={groups}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError("a stride-1 unit needs in == out channels")
        self.branch = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, groups=g1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            _SHUFFLES[shuffle](groups) if groups > 1 else nn.Identity(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),  # no ReLU after the depthwise conv (paper §3.2)
            nn.Conv2d(mid, branch_out, 1, groups=groups, bias=False),
            nn.BatchNorm2d(branch_out),
        )
        # count_include_pad=True (PyTorch's default) as in the official release: the paper does not say.
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch(x)
        if self.shortcut is None:
            return self.relu(y + x)
        return self.relu(torch.cat((self.shortcut(x), y), 1))


class ShuffleNetV1(nn.Module):
    def __init__(self, groups: int = 3, width_mult: float = 1.0, num_classes: int = 1000,
                 stage_channels: Sequence[int] | None = None, shuffle: str = "paper"):
        """``shuffle="megvii"`` uses the official release's (inverse) permutation: only for its checkpoints."""
        super().__init__()
        if shuffle not in _SHUFFLES:
            raise ValueError(f"shuffle must be one of {sorted(_SHUFFLES)}, not {shuffle!r}")
        channels = tuple(stage_channels) if stage_channels is not None else widths(groups, width_mult)
        if len(channels) != 4:
            raise ValueError("stage_channels must be (conv1, stage2, stage3, stage4)")
        self.groups = groups
        self.shuffle = shuffle
        self.stem = ConvBNAct(3, channels[0], 3, stride=2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        units: list[nn.Module] = []
        c_in = channels[0]
        for stage, (repeats, c_out) in enumerate(zip(STAGE_REPEATS, channels[1:])):
            for i in range(repeats):
                units.append(ShuffleUnit(c_in, c_out, groups, 2 if i == 0 else 1,
                                         first_group=stage == 0 and i == 0, shuffle=shuffle))
                c_in = c_out
        self.features = nn.Sequential(*units)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, num_classes, bias=False)
        self.num_features = c_in
        torchvision_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.maxpool(self.stem(x)))
        return self.classifier(torch.flatten(self.avgpool(x), 1))


# --- the two shuffles, and loading the official release --------------------------------------------------

def paper_permutation(channels: int, groups: int) -> list[int]:
    """Output channel i of the paper's shuffle takes input channel ``p[i]`` (reshape (g, n), transpose)."""
    n = channels // groups
    return [(i % groups) * n + i // groups for i in range(channels)]


def megvii_permutation(channels: int, groups: int) -> list[int]:
    """The official release's shuffle (reshape (n, g), transpose): the inverse of ``paper_permutation``."""
    n = channels // groups
    return [(i % n) * groups + i // n for i in range(channels)]


def _inverse(perm: Sequence[int]) -> list[int]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv


def megvii_shuffle_relabelling(channels: int, groups: int) -> tuple[list[int], list[int]]:
    """Relabellings that make a paper-shuffle unit compute what a megvii-shuffle unit computes.

    Returns ``(alpha, src)``: our bottleneck channel j is megvii's channel ``alpha[j]`` (rows of the first
    1x1 conv and its BN are gathered with it; our depthwise conv and its BN, which come after our shuffle,
    with ``alpha[p[i]]``), and our second 1x1 conv's input position i is megvii's position ``src[i]``. Both
    stay inside their conv group, so the grouped weights keep their shape. That is possible only where both
    shuffles send the same number of channels from each group of the first conv to each group of the second
    one; otherwise a ValueError says so.
    """
    n = channels // groups
    lands_paper = _inverse(paper_permutation(channels, groups))  # where channel c lands
    lands_megvii = _inverse(megvii_permutation(channels, groups))
    alpha = [0] * channels
    for b in range(groups):
        ours: dict[int, list[int]] = {}
        theirs: dict[int, list[int]] = {}
        for c in range(b * n, (b + 1) * n):
            ours.setdefault(lands_paper[c] // n, []).append(c)
            theirs.setdefault(lands_megvii[c] // n, []).append(c)
        if {k: len(v) for k, v in ours.items()} != {k: len(v) for k, v in theirs.items()}:
            raise ValueError(f"no relabelling maps it onto the paper's shuffle for a {channels}-channel "
                             f"bottleneck in {groups} groups")
        for target, js in ours.items():
            for j, c in zip(js, theirs[target]):
                alpha[j] = c
    p = paper_permutation(channels, groups)
    src = [lands_megvii[alpha[p[i]]] for i in range(channels)]
    return alpha, src


_MEGVII_BRANCH = {"branch_main_1.0": "branch.0", "branch_main_1.1": "branch.1", "branch_main_1.3": "branch.4",
                  "branch_main_1.4": "branch.5", "branch_main_2.0": "branch.6", "branch_main_2.1": "branch.7"}


def is_megvii_state_dict(state: Mapping[str, Any]) -> bool:
    return "first_conv.0.weight" in state


def rename_megvii(state: Mapping[str, Any]) -> dict[str, Any]:
    """Official key names -> ours, weights unchanged (``from_megvii`` then reorders the depthwise convs)."""
    out: dict[str, Any] = {}
    for k, v in state.items():
        if k.startswith("first_conv."):
            k = "stem." + k[len("first_conv."):]
        elif k.startswith("classifier.0."):
            k = "classifier." + k[len("classifier.0."):]
        elif k.startswith("features.") and k.count(".") >= 4:
            _, i, branch, idx, rest = k.split(".", 4)
            k = f"features.{i}.{_MEGVII_BRANCH.get(f'{branch}.{idx}', f'{branch}.{idx}')}.{rest}"
        out[k] = v
    return out


def remap_megvii(state: Mapping[str, Any]) -> dict[str, Any]:
    """Official megvii ShuffleNetV1 state_dict -> our paper-shuffle network: rename, undo the inverse shuffle.

    The number of groups is read from the weights' shapes. Non-megvii state_dicts pass through unchanged.
    Raises ``WeightsError`` where no relabelling exists (g=8 0.5x/1.0x/1.5x): use ``from_megvii`` there.
    """
    if not is_megvii_state_dict(state):
        return dict(state)
    out = rename_megvii(state)
    unit = 0
    while f"features.{unit}.branch.6.weight" in out:
        _unshuffle_unit(out, f"features.{unit}.branch.")
        unit += 1
    return out


def _unit_groups(state: Mapping[str, Any], prefix: str) -> tuple[int, int]:
    """(bottleneck channels, groups) of a unit, read from its depthwise and second 1x1 conv weights."""
    mid = state[prefix + "4.weight"].shape[0]
    return mid, mid // state[prefix + "6.weight"].shape[1]  # second 1x1 conv: (branch_out, mid / g, 1, 1)


def _gather(state: dict[str, Any], prefix: str, indices: Mapping[str, Sequence[int]]) -> None:
    for idx, index in indices.items():
        index_t = torch.tensor(list(index))
        for name in ("weight", "bias", "running_mean", "running_var"):
            key = f"{prefix}{idx}.{name}"
            if key in state:
                state[key] = state[key].index_select(0, index_t)


def _unshuffle_unit(state: dict[str, Any], prefix: str) -> None:
    mid, groups = _unit_groups(state, prefix)
    if groups == 1:
        return  # no shuffle in a g=1 network
    w2 = state[prefix + "6.weight"]
    try:
        alpha, src = megvii_shuffle_relabelling(mid, groups)
    except ValueError as e:
        raise WeightsError(
            f"this official ShuffleNet v1 checkpoint (g={groups}) uses the inverse channel shuffle, and {e}",
            "load it with edgezoo.models.shufflenet_v1.from_megvii(path, groups, width_mult), which keeps the "
            "release's own permutation",
        ) from None
    p = paper_permutation(mid, groups)
    # The release shuffles after the depthwise conv and its BN, we shuffle before them (the paper's order;
    # the same function, since both are per channel): our first 1x1 conv and BN are indexed by bottleneck
    # channel (alpha), our depthwise conv and BN by shuffled position (alpha after p).
    after_p = [alpha[p[i]] for i in range(mid)]
    _gather(state, prefix, {"0": alpha, "1": alpha, "4": after_p, "5": after_p})
    n = mid // groups
    within = torch.tensor([s - (i // n) * n for i, s in enumerate(src)]).view(groups, n)
    w = w2.reshape(groups, w2.shape[0] // groups, n, *w2.shape[2:])
    w = torch.stack([w[g].index_select(1, within[g]) for g in range(groups)])
    state[prefix + "6.weight"] = w.reshape(w2.shape)


def from_megvii(path: str, groups: int, width_mult: float, num_classes: int = 1000) -> ShuffleNetV1:
    """Load an official megvii checkpoint: the paper's network where an exact remapping exists, otherwise a
    network built with the release's permutation (``model.shuffle == "megvii"``). Returned in eval mode."""
    from edgezoo.models.weights import load_state_dict_checked, read_state_dict

    state = read_state_dict(path)
    what = f"{path} for ShuffleNet v1 g={groups} x{width_mult}"
    if not is_megvii_state_dict(state):
        raise WeightsError(f"{path} is not an official megvii ShuffleNet v1 checkpoint (no first_conv.* keys)")
    try:
        remapped, shuffle = remap_megvii(state), "paper"
    except WeightsError:
        remapped, shuffle = rename_megvii(state), "megvii"
        unit = 0
        while f"features.{unit}.branch.6.weight" in remapped:
            # We shuffle before the depthwise conv, the release after it and its BN: index those by position.
            mid, groups = _unit_groups(remapped, f"features.{unit}.branch.")
            if groups > 1:
                q = megvii_permutation(mid, groups)
                _gather(remapped, f"features.{unit}.branch.", {"4": q, "5": q})
            unit += 1
    model = ShuffleNetV1(groups=groups, width_mult=width_mult, num_classes=num_classes, shuffle=shuffle)
    load_state_dict_checked(model, remapped, what=what)
    return model.eval()


def shufflenet_v1(**kwargs) -> ShuffleNetV1:
    # The registry's builder is the paper's network only: its weight loading (remap_megvii) assumes so.
    if kwargs.get("shuffle", "paper") != "paper":
        raise ValueError("registered ShuffleNet v1 models use the paper's shuffle; for the official release's "
                         "permutation use edgezoo.models.shufflenet_v1.from_megvii or ShuffleNetV1(shuffle='megvii')")
    return ShuffleNetV1(**kwargs)


# groups, scale, params, MACs (both computed, FC without bias), printed MFLOPs and top-1 (100 - error), where
# printed. The paper prints no parameter counts.
_VARIANTS = [
    (1, 1.0, 1_530_936, 143.08e6, 143, 66.4, "Zhang et al. 2018, Tables 1 and 2"),
    (2, 1.0, 1_732_848, 140.84e6, 140, 67.3, "Zhang et al. 2018, Tables 1 and 2"),
    (3, 1.0, 1_864_728, 137.46e6, 137, 67.4, "Zhang et al. 2018, Tables 1 and 2"),
    (4, 1.0, 1_967_344, 134.34e6, 133, 67.2, "Zhang et al. 2018, Tables 1 and 2"),
    (8, 1.0, 2_433_768, 138.37e6, 137, 67.6, "Zhang et al. 2018, Tables 1 and 2"),
    (3, 0.5, 717_324, 37.59e6, 38, 56.8, "Zhang et al. 2018, Table 2"),
    (3, 1.5, 3_441_168, 292.44e6, 292, 71.5, "Zhang et al. 2018, Table 5"),
    (3, 2.0, 5_449_776, 524.05e6, 524, 73.7, "Zhang et al. 2018, Table 5"),
    (8, 0.5, 1_010_448, 40.47e6, 38, 57.7, "Zhang et al. 2018, Table 2"),
    (8, 1.5, 4_268_952, 290.19e6, 290, 71.0, "megvii-model/ShuffleNet-Series README (not in the paper)"),
    (8, 2.0, 6_521_232, 521.94e6, 522, 72.9, "megvii-model/ShuffleNet-Series README (not in the paper)"),
]


def _megvii_remappable(groups: int, width_mult: float) -> bool:
    """Whether a megvii-layout state_dict of this variant can be relabelled onto the paper's shuffle."""
    try:
        for c in widths(groups, width_mult)[1:]:
            megvii_shuffle_relabelling(c // 4, groups)
    except ValueError:
        return False
    return True


for _g, _w, _params, _macs, _flops, _top1, _where in _VARIANTS:
    _tag = f"g{_g}_x{_w:.1f}".replace(".", "_")
    _megvii = (_g, _w) in MEGVII_CHANNELS
    _remaps = _megvii_remappable(_g, _w)
    register(ModelSpec(
        name=f"shufflenet_v1_{_tag}", family="shufflenet_v1", builder=shufflenet_v1,
        kwargs={"groups": _g, "width_mult": _w},
        aliases=(f"shufflenetv1_{_tag}",) + (("shufflenetv1", "shufflenet_v1") if (_g, _w) == (3, 1.0) else ()),
        reference=ReferenceFigures(params=_params, macs=_macs,
                                   source="the paper's Table 1 unit (paper shuffle); megvii widths where scaled"),
        paper=PaperFigures(macs=_flops * 1e6, top1=_top1, table=_where),
        weights=(f"official megvii-model/ShuffleNet-Series ShuffleNetV1 {_w:.1f}x group={_g} checkpoint "
                 + ("(keys remapped, its inverse shuffle undone)" if _remaps else
                    "only via edgezoo.models.shufflenet_v1.from_megvii (its inverse shuffle cannot be remapped)")
                 if _megvii
                 else "no public checkpoint of this variant; "
                 + ("megvii-style state_dicts load (keys remapped, shuffle undone)" if _remaps else
                    "megvii-style state_dicts load only via edgezoo.models.shufflenet_v1.from_megvii "
                    "(their inverse shuffle cannot be remapped)")),
        remap_state_dict=remap_megvii,
    ))
