"""The lite rewrites (edgezoo.export.lite): each pass on small models, and apply_lite's error cases."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
from torch import nn  # noqa: E402

from edgezoo.errors import EdgezooError, InputError  # noqa: E402
from edgezoo.export import lite  # noqa: E402
from edgezoo.export.options import ExportOptions  # noqa: E402
from edgezoo.export import passes as P  # noqa: E402
from edgezoo.models.layers import ConvBNAct, SqueezeExcitation  # noqa: E402
from edgezoo.testing import randomize_bn  # noqa: E402

from conftest import run_edgezoo  # noqa: E402


class TimmStyleSE(nn.Module):
    """An SE block written another way (timm's names, mean instead of a pool module): found all the same."""

    def __init__(self, c: int, r: int):
        super().__init__()
        self.conv_reduce = nn.Conv2d(c, r, 1)
        self.act1 = nn.ReLU()
        self.conv_expand = nn.Conv2d(r, c, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        s = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * self.gate(s)


class NotSE(nn.Module):
    """Looks like an SE block (reduce/expand 1x1 convs) but adds instead of scaling: must be left alone."""

    def __init__(self, c: int, r: int):
        super().__init__()
        self.fc1 = nn.Conv2d(c, r, 1)
        self.fc2 = nn.Conv2d(r, c, 1)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = ConvBNAct(3, 8, 3, stride=2, activation=nn.Hardswish)
        self.dw = ConvBNAct(8, 8, 3, groups=8, activation=nn.Hardswish)
        self.se = SqueezeExcitation(8, 4)
        self.proj = ConvBNAct(8, 16, 1, activation=None)
        self.notse = NotSE(16, 8)
        self.dw2 = ConvBNAct(16, 16, 3, groups=16, activation=nn.Hardswish)
        self.se2 = TimmStyleSE(16, 8)
        self.grouped = nn.Conv2d(16, 16, 1, groups=4)  # consumes se2: the gate folds per group
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(16, 16), nn.Hardswish(), nn.Linear(16, 10))

    def forward(self, x):
        x = self.proj(self.se(self.dw(self.stem(x))))
        x = self.grouped(self.se2(self.dw2(self.notse(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny() -> nn.Module:
    torch.manual_seed(0)
    model = randomize_bn(Tiny()).eval()
    with torch.no_grad():  # default init leaves logits ~1e-2; full-scale ones make differences visible
        for m in model.fc:
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, 1.0 / m.in_features ** 0.5 * 2)
        for conv in (model.se.fc1, model.se.fc2, model.se2.conv_reduce, model.se2.conv_expand):
            conv.weight.normal_(0, 3.0 / conv.in_channels ** 0.5)  # gates that vary between images
    return model


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    """Noise with a different colour cast per image, so that SE gates (functions of channel means) differ."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g) + 2 * torch.randn(n, 3, 1, 1, generator=g)


def count(model: nn.Module, *types) -> int:
    return sum(isinstance(m, types) for m in model.modules())


def snapshot(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_untouched(model: nn.Module, before: dict, structure: str) -> None:
    assert repr(model) == structure
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_hswish_to_relu_replaces_every_hswish_and_leaves_the_input_alone():
    model, x = tiny(), images()
    state, structure = snapshot(model), repr(model)
    n = count(model, nn.Hardswish)
    assert n == 4
    for kind, cls in (("relu", nn.ReLU), ("relu6", nn.ReLU6)):
        res = lite.hswish_to_relu(model, kind)
        assert count(res.model, nn.Hardswish) == 0
        assert count(res.model, cls) >= n
        assert len(res.changes) == n and not res.exact
        assert res.model(x).shape == (6, 10)
    assert_untouched(model, state, structure)
    with pytest.raises(InputError):
        lite.hswish_to_relu(model, "gelu")


def test_fold_hardsigmoid_gates_is_exact_and_folds_into_the_expand_conv():
    model, x = tiny(), images()
    state, structure = snapshot(model), repr(model)
    res = P.fold_hardsigmoid_gates(model)
    assert count(res.model, nn.Hardsigmoid) == 0
    assert count(res.model, P.ClipAct) == 2  # both SE styles folded, none left as Mul/Add/Clip
    assert len(res.changes) == 2 and all("folded" in c for c in res.changes)
    with torch.no_grad():
        assert (res.model(x) - model(x)).abs().max() < 1e-5
    assert not torch.equal(res.model.se.fc2.weight, model.se.fc2.weight)
    assert_untouched(model, state, structure)


def test_a_lone_hsigmoid_becomes_the_exact_clip_form():
    x = images(2)
    after_conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Hardsigmoid())  # folds into the conv before it
    no_layer = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Hardsigmoid())  # nothing to fold into
    folded, decomposed = P.fold_hardsigmoid_gates(after_conv), P.fold_hardsigmoid_gates(no_layer)
    assert isinstance(folded.model[1], P.ClipAct) and not torch.equal(folded.model[0].bias, after_conv[0].bias)
    assert isinstance(decomposed.model[2], P.HardSigmoidDecomposed)
    with torch.no_grad():
        assert (folded.model(x) - after_conv(x)).abs().max() < 1e-6
        assert (decomposed.model(x) - no_layer(x)).abs().max() < 1e-6


def test_se_blocks_are_found_by_behaviour_not_by_name():
    model = tiny()
    gates = lite.measure_se_gates(model, images())
    assert set(gates) == {"se", "se2"}  # NotSE has the shape of one but is not
    assert gates["se"].shape == (8,) and gates["se2"].shape == (16,)
    assert all(((g >= 0) & (g <= 1)).all() for g in gates.values())  # h-sigmoid gates


def test_remove_se_folds_the_mean_gate_into_the_consuming_conv():
    model, x = tiny(), images()
    state, structure = snapshot(model), repr(model)
    res = lite.remove_se(model, x)
    assert not res.exact and len(res.changes) == 2
    assert isinstance(res.model.se, nn.Identity) and isinstance(res.model.se2, nn.Identity)
    assert isinstance(res.model.notse, NotSE)
    assert count(res.model, lite.ChannelScale) == 0  # both folded: nothing left to run
    assert "proj.0" in res.changes[0] and "grouped" in res.changes[1]
    assert res.model(x).shape == (6, 10)
    assert_untouched(model, state, structure)
    # Measured on one image, the constant gates are that image's gates: the function is kept exactly there,
    # which checks the fold (grouped conv included) without trusting the pass's own bookkeeping.
    one = x[:1]
    res1 = lite.remove_se(model, one)
    with torch.no_grad():
        assert (res1.model(one) - model(one)).abs().max() < 1e-4
        ref = model(x)
        spread = (ref - ref.mean(0)).abs().max()  # how much the outputs vary between images
        assert (res1.model(x) - ref).abs().max() > 0.05 * spread  # and it is a different function elsewhere


def test_remove_se_keeps_a_channel_scale_when_no_single_conv_consumes_the_block():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.se = SqueezeExcitation(8, 4)
            self.a, self.b = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = self.se(torch.relu(self.conv(x)))
            return self.a(y) + self.b(y)

    model = Branchy().eval()
    res = lite.remove_se(model, images(1))
    assert isinstance(res.model.se, lite.ChannelScale)
    with torch.no_grad():
        assert (res.model(images(1)) - model(images(1))).abs().max() < 1e-4


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "ghostnet_x0_5"])
def test_zoo_families_lose_every_hswish_hsigmoid_and_se(name):
    from edgezoo.models.registry import create_model

    model = create_model(name, num_classes=10, **({"width_mult": 0.5} if "mobilenet" in name else {})).eval()
    found = lite.lite_rewrites_available(model)
    assert found["se"] > 0 and found["hsigmoid"] == found["se"]
    x = images(2)
    results = lite.lite_passes(model, x)
    new = results[-1].model
    left = lite.lite_rewrites_available(new)
    assert left == {"hswish": 0, "hsigmoid": 0, "se": 0}
    assert count(new, lite.ChannelScale) == 0
    assert sum(len(r.changes) for r in results) == found["se"] + found["hswish"]
    with torch.no_grad():
        assert new(x).shape == model(x).shape == (2, 10)


def spec_of(name="tiny", input_size=(3, 32, 32)):
    return SimpleNamespace(name=name, input_size=input_size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_apply_lite_rewrites_distills_and_reports(tmp_path):
    model = tiny()
    calib = images(60, seed=1).numpy()
    opts = ExportOptions(name="tiny", distill_steps=6)
    new, report = lite.apply_lite(model, spec_of(), opts, calib)
    assert lite.lite_rewrites_available(new) == {"hswish": 0, "hsigmoid": 0, "se": 1}  # only NotSE's shape left
    assert report["rewrites"] == ["remove_se", "hswish_to_relu"]
    d = report["distillation"]
    assert d["steps"] == 6 and d["train_images"] + d["heldout_images"] == 60 and d["heldout_images"] > 0
    agree = report["heldout_agreement_fp32"]
    assert 0 <= agree["before_distillation"] <= 1 and 0 <= agree["after_distillation"] <= 1
    assert report["notes"]  # synthetic images: the report says real ones are needed
    import json

    json.dumps(report)  # JSON-able as the bundle needs it


def test_apply_lite_on_a_model_with_nothing_to_rewrite_says_so():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    opts = ExportOptions(name="plain", distill_steps=2)
    with pytest.raises(EdgezooError, match="nothing to rewrite in plain"):
        lite.apply_lite(model, spec_of("plain"), opts, images(4).numpy())


def test_apply_lite_with_an_empty_image_folder_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    opts = ExportOptions(name="tiny", distill_images=tmp_path, distill_steps=2)
    with pytest.raises(InputError, match="has no images"):
        lite.apply_lite(tiny(), spec_of(), opts, images(4).numpy())
    opts.distill_images = tmp_path / "missing"
    with pytest.raises(InputError, match="does not exist"):
        lite.apply_lite(tiny(), spec_of(), opts, images(4).numpy())


def test_cli_lite_errors(tmp_path):
    """Through `edgezoo export`: nothing to rewrite, and an empty --distill-images folder."""
    r = run_edgezoo("export", "mobilenet_v2", "--lite", "--input-size", "32", "-o", str(tmp_path / "b"))
    if "No such option" in r.stderr:
        pytest.fail("the export command has no --lite option")
    assert r.returncode != 0
    assert "nothing to rewrite" in r.stderr + r.stdout
    assert "Traceback" not in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_edgezoo("export", "mobilenet_v3_small", "--lite", "--input-size", "32", "--distill-images", str(empty),
                    "-o", str(tmp_path / "b"))
    assert r.returncode != 0
    assert "has no images" in r.stderr + r.stdout
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "b").exists()
