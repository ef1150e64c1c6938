"""--max-drop / --min-sqnr (edgezoo.export.budget): a tiny CNN trained here, in which exactly one layer cannot
be quantized, must come back with that layer, and only it, in float."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

from torch import nn  # noqa: E402

from edgezoo.export.budget import Budget, float_layer, groups, meet_budget, quantized_layers  # noqa: E402

SIZE = (3, 16, 16)


class Tiny(nn.Module):
    def __init__(self, hidden: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def _data(n: int, seed: int):
    """Two classes a small CNN separates at once: the bright half of the image is the left or the right."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, *SIZE)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, :, :, :8] += 1.0 if c == 0 else -1.0
        x[i, :, :, 8:] += -1.0 if c == 0 else 1.0
    return x, y


def _trained_with_a_layer_int8_cannot_hold():
    """Train, then give conv2 an input channel that is always zero (a dead ReLU of conv1) with weights 10^4
    times the real ones: the function is unchanged, but conv2's per-channel int8 scale is set by the dead
    weights and its real weights round to zero. Only conv2 in float restores the model."""
    torch.manual_seed(0)
    m = Tiny()
    x, y = _data(256, 0)
    opt = torch.optim.Adam(m.parameters(), lr=0.02)
    for _ in range(120):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
    big = Tiny(hidden=5)
    with torch.no_grad():
        big.conv1.weight.zero_()
        big.conv1.weight[:4] = m.conv1.weight
        big.conv1.bias.fill_(-10.0)  # channel 4: always negative, ReLU -> 0
        big.conv1.bias[:4] = m.conv1.bias
        big.conv2.weight.zero_()
        big.conv2.weight[:, :4] = m.conv2.weight
        big.conv2.weight[:, 4] = 1e4 * m.conv2.weight.abs().amax()
        big.conv2.bias.copy_(m.conv2.bias)
        big.fc.load_state_dict(m.fc.state_dict())
        assert torch.allclose(big(torch.from_numpy(x)), m(torch.from_numpy(x)), atol=1e-5)
    return big.eval()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from edgezoo.export.onnx import export_onnx
    from edgezoo.export.targets import TargetContext, run_targets

    tmp = tmp_path_factory.mktemp("budget")
    model = _trained_with_a_layer_int8_cannot_hold()
    calib, _ = _data(64, 1)
    ev, labels = _data(200, 2)
    with torch.no_grad():
        ref = model(torch.from_numpy(ev)).numpy()
    assert (ref.argmax(1) == labels).mean() > 0.95  # the float model has learnt the task
    fp32 = tmp / "model.fp32.onnx"
    export_onnx(model, fp32, SIZE, dynamic_batch=True)
    ctx = TargetContext("tiny", SIZE, model, calib, ev, ref, tmp, threads=1)
    ctx.files["onnxruntime:fp32"] = fp32
    rows = run_targets(ctx, ["onnxruntime"], ["fp32", "int8"])
    assert all(r["status"] == "ok" for r in rows), rows
    return SimpleNamespace(ctx=ctx, rows=rows, ev=ev, labels=labels, fp32=fp32, tmp=tmp)


def _run(built, **budget):
    labelled = SimpleNamespace(images=built.ev, labels=built.labels, describe=lambda: "200 test images", outputs={})
    return SimpleNamespace(options=SimpleNamespace(max_drop=budget.get("max_drop"), min_sqnr=budget.get("min_sqnr")),
                           context=built.ctx, labelled=labelled, eval_inputs=(built.ev, "200 test images"),
                           report={"targets": [dict(r) for r in built.rows]}, files={"fp32": built.fp32},
                           tmp=built.tmp, step=lambda s: None)


def test_max_drop_keeps_the_one_layer_that_needs_float(built):
    run = _run(built, max_drop=2.0)
    result = meet_budget(run)
    rows = run.report["targets"]
    plain = next(r for r in rows if r["precision"] == "int8" and r.get("variant") is None)
    assert plain["budget_check"]["top1_drop"] > 20 and not plain["budget_check"]["meets"]  # float is needed
    entry = result["targets"]["onnxruntime"]
    assert entry["met"] and len(entry["steps"]) == 1  # ... and one layer is enough
    assert entry["steps"][0]["float_layers"] == ["/conv2/Conv"]
    first, second = result["ranking"]["layers"]
    assert first["layer"] == "/conv2/Conv" and first["gain_db"] > 20 > second["gain_db"]  # measured, not by order
    kept = next(r for r in rows if r.get("variant") == "budget")
    assert kept["file"] == "model.int8.budget.onnx" and (built.tmp / kept["file"]).exists()
    assert kept["budget_check"]["top1_drop"] <= 2.0 and kept["float_layers"] == ["/conv2/Conv"]
    assert "latency_ms" in kept and entry["steps"][0]["cost_ms"] is not None
    assert result["fastest"]["file"] in {r["file"] for r in rows if r.get("budget_check", {}).get("meets")}
    assert not (built.tmp / ".budget").exists()


def test_min_sqnr_needs_no_labels(built):
    run = _run(built, min_sqnr=25.0)
    run.labelled = None
    result = meet_budget(run)
    entry = result["targets"]["onnxruntime"]
    assert entry["met"] and entry["steps"][-1]["float_layers"][0] == "/conv2/Conv"
    assert entry["steps"][-1]["sqnr_db"] >= 25.0 and "top1_drop" not in entry["steps"][-1]


def test_float_layer_reads_float_inputs(built):
    import onnx

    q = onnx.load(str(built.tmp / "model.int8.onnx"))
    assert "/conv2/Conv" in quantized_layers(q)
    f = float_layer(q, ["/conv2/Conv"])
    assert "/conv2/Conv" not in quantized_layers(f) and quantized_layers(q) != quantized_layers(f)


def test_budget_wording_and_groups():
    b = Budget(max_drop=0.5, min_sqnr=25)
    assert b.describe() == "top-1 at most 0.5 points below fp32 and output SQNR at least 25 dB against fp32"
    ref = np.eye(4, dtype=np.float32)
    m = b.measure(ref, ref, np.arange(4))
    assert m["meets"] and m["sqnr_db"] is None and m["top1_drop"] == 0
    assert groups(0) == [] and groups(1) == [1] and groups(5) == [1, 2, 4, 5] and groups(100)[-1] == 100


def test_max_drop_on_openvino_keeps_the_same_layer(built):
    pytest.importorskip("openvino", reason="OpenVINO (edgezoo[openvino]) is not installed")
    from edgezoo.export.targets import run_targets

    run = _run(built, max_drop=2.0)
    run.report["targets"] += run_targets(built.ctx, ["openvino"], ["int8"])
    result = meet_budget(run)
    entry = result["targets"]["openvino"]
    assert entry["met"] and entry["steps"][0]["float_layers"] == ["/conv2/Conv"]
    kept = next(r for r in run.report["targets"] if r.get("variant") == "budget" and r["target"] == "openvino")
    assert kept["file"] == "model.openvino.int8.budget.xml" and (built.tmp / kept["file"]).with_suffix(".bin").exists()
