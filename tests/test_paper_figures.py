"""The papers' figures as printed beside what the models have: the registry keeps them apart, `edgezoo info`
and `list` / `list --json` show both; aliases named after timm models load timm's weights; the zoo commands'
output rules (fits 80 columns, checks --json before printing)."""

from __future__ import annotations

import json
import os
from dataclasses import fields

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")

import edgezoo  # noqa: E402
from conftest import run_edgezoo  # noqa: E402
from edgezoo.models.registry import PaperFigures, ReferenceFigures, list_specs  # noqa: E402


def test_reference_figures_hold_no_published_numbers():
    assert "top1" not in {f.name for f in fields(ReferenceFigures)}
    assert {"params", "macs", "top1", "table"} <= {f.name for f in fields(PaperFigures)}


@pytest.mark.parametrize("spec", list_specs(), ids=lambda s: s.name)
def test_every_model_records_where_its_printed_figures_come_from(spec):
    p, r = spec.paper, spec.reference
    assert p.table, f"{spec.name}: say which table the figures come from (or that none is printed)"
    assert r.params and r.macs and r.source
    # printed figures are rounded (and some count another topology): within 25% of the computed ones,
    # which catches a unit slip (M vs B, params typed as MACs) but not the honest differences
    if p.params:
        assert abs(p.params - r.params) <= 0.25 * r.params, (p.params, r.params)
    if p.macs:
        assert abs(p.macs - r.macs) <= 0.25 * r.macs, (p.macs, r.macs)
    if p.top1 is not None:
        assert 40 < p.top1 < 90


def test_printed_and_computed_differ_where_the_papers_round():
    """The issue's examples: the registry keeps the paper's own numbers, not the computed ones."""
    for name, printed in (("hardnet39ds", 0.44e9), ("mobilenet_v3_large", 219e6), ("shufflenet_v2_x2_0", 591e6)):
        spec = edgezoo.get_spec(name)
        assert spec.paper.macs == printed and spec.reference.macs != printed


def _zoo(*args, env=None):
    return run_edgezoo(*args, env={"COLUMNS": "80", **(env or {})})


def test_info_shows_computed_and_printed_separately():
    r = _zoo("info", "hardnet39ds")
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())  # rich wraps long lines
    assert "computed: params 3,488,228, MACs 429.47M" in out
    assert "paper (as printed): params 3.5M, MACs 440M at 224x224, top-1 72.1% (Chao et al. 2019, Table 4)" in out
    assert "published" not in out


def test_list_json_has_computed_and_paper_apart(tmp_path):
    path = tmp_path / "zoo.json"
    r = _zoo("list", "--json", str(path))
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(path.read_text())}
    v3 = rows["mobilenet_v3_large"]
    assert v3["computed"]["macs"] == pytest.approx(216.6e6) and v3["paper"]["macs"] == 219e6
    assert v3["paper"]["top1"] == 75.2 and "Table 3" in v3["paper"]["table"]
    assert rows["efficientnet_lite0"]["presets"][0]["mean"] == [0.5, 0.5, 0.5]
    assert "top1" not in v3["computed"]


def test_list_fits_80_columns():
    r = _zoo("list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= 80
    row = next(ln for ln in lines if ln.strip().startswith("mobilenet_v3_large"))  # one line per model
    assert "216.60M" in row and "219M" in row


def test_list_json_to_an_impossible_path_prints_nothing_first(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _zoo("list", "--json", str(blocker / "zoo.json"))  # parent is a file: fails for root too
    assert r.returncode == 2 and "mobilenet" not in r.stdout and "not a folder" in r.stderr
    assert blocker.read_text() == "x"


def test_shufflenet_v1_weights_text_says_what_loads():
    """Only variants whose megvii shuffle can be relabelled claim that megvii state_dicts load."""
    from edgezoo.models.shufflenet_v1 import _megvii_remappable

    for spec in list_specs():
        if spec.family != "shufflenet_v1":
            continue
        ok = _megvii_remappable(spec.kwargs["groups"], spec.kwargs["width_mult"])
        assert ("only via edgezoo.models.shufflenet_v1.from_megvii" in spec.weights) != ok, spec.name
    assert "from_megvii" in edgezoo.get_spec("shufflenet_v1_g4_x1_0").weights


def _timm_named(timm):
    return [(s.name, a) for s in list_specs() for a in (s.name, *s.aliases) if timm.is_model(a)]


def test_aliases_named_after_timm_models_load_timm_weights(timm, tmp_path):
    """A name timm also uses promises timm's state_dict: it loads and gives timm's outputs. The one
    exception is documented: our efficientnet_lite* take the TF (SAME-padded) weights, timm's tf_ names."""
    pairs = [(n, a) for n, a in _timm_named(timm) if not (a == n and n.startswith("efficientnet_lite"))]
    assert ("mobilenet_v2", "mobilenetv2_100") not in pairs  # dropped: timm's layout does not load
    assert len(pairs) >= 8
    from edgezoo.testing import randomize_bn

    for name, alias in pairs:
        ref = randomize_bn(timm.create_model(alias), seed=5).eval()
        path = tmp_path / f"{alias}.pth"
        torch.save(ref.state_dict(), path)
        ours = edgezoo.create_model(alias, weights=str(path))
        size = edgezoo.get_spec(name).input_size
        x = torch.randn(1, *size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            a, b = ours(x), ref(x)
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item()), alias


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux's read-only /sys")
def test_list_json_on_a_read_only_file_system_prints_nothing_first():
    r = _zoo("list", "--json", "/sys/edgezoo_zoo.json")  # sysfs refuses new files, root included
    assert r.returncode == 2 and "mobilenet" not in r.stdout and "cannot write" in r.stderr
    assert "Traceback" not in r.stderr
