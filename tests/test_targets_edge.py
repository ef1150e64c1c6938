"""Export targets on a tiny model made here: each fp32 file matches PyTorch, each int8 file keeps top-1,
the table lists them; a missing extra, a failing converter and an unknown name each cost one line."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from edgezoo.errors import InputError  # noqa: E402
from edgezoo.export import targets as T  # noqa: E402
from edgezoo.export.report import targets_markdown  # noqa: E402


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU6(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                        nn.ReLU6(), nn.Conv2d(16, 32, 1), nn.Hardswish(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(32, 10)).eval()
    with torch.no_grad():  # conv outputs well beyond 6, so the ReLU6 range matters for int8
        for m in net:
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(4)
                m.bias.uniform_(-3, 3)
    return net


def _ctx(tmp_path, net=None):
    from edgezoo.export.onnx import export_onnx

    net = net or _net()
    rng = np.random.default_rng(0)
    cal = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    ev = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(ev)).numpy()
    ctx = T.TargetContext("tiny", (3, 32, 32), net, cal, ev, ref, tmp_path)
    export_onnx(net, tmp_path / "model.fp32.onnx", (3, 32, 32))
    ctx.files["onnxruntime:fp32"] = tmp_path / "model.fp32.onnx"
    return ctx


# The packages each target's extra installs (pyproject.toml): a test skips only when one is truly absent.
EXTRA_PACKAGES = {"onnxruntime": ("onnxruntime",), "openvino": ("openvino",),
                  "executorch": ("executorch", "torchao"), "litert": ("ai_edge_litert", "litert_torch"),
                  "mnn": ("MNN",), "ncnn": ("ncnn", "pnnx")}


def _need(name):
    """Skip when the target's extra is not installed; fail when it is installed but does not import (a broken
    install or an incompatible version must show as a failure, not hide as a skip)."""
    import importlib.util

    absent = [p for p in EXTRA_PACKAGES[name] if importlib.util.find_spec(p) is None]
    if absent:
        pytest.skip(f"{name} extra not installed: no {', '.join(absent)} (pip install 'edgezoo[{name}]')")
    why = T.get_target(name).available()
    if why:
        pytest.fail(f"{name} is installed but its target is unavailable: {why}")


@pytest.mark.parametrize("name", ["onnxruntime", "openvino", "executorch", "litert"])
def test_target_fp32_and_int8_verified(tmp_path, name):
    _need(name)
    ctx = _ctx(tmp_path)
    rows = T.run_targets(ctx, [name], ["fp32", "int8"])
    by = {r["precision"]: r for r in rows}
    assert by["fp32"]["status"] == "ok", by["fp32"]
    assert by["fp32"]["agreement"]["max_abs_diff"] <= 1e-3 * max(1.0, float(np.abs(ctx.reference).max()))
    assert by["int8"]["status"] == "ok", by["int8"]
    assert by["int8"]["agreement"]["top1_agreement"] >= 0.75
    assert (tmp_path / by["int8"]["file"]).is_file()
    if name == "litert":  # where the int8 program computes in float: the tiny model's pool/linear path at most
        in_float = by["int8"]["ops_in_float"]
        assert set(in_float) <= {"MEAN", "FULLY_CONNECTED", "RESHAPE", "AVERAGE_POOL_2D"}, in_float
        assert all(isinstance(v, int) and v > 0 for v in in_float.values()), in_float
    table = "\n".join(targets_markdown(rows))
    assert f"| {name} | int8 | {by['int8']['file']}" in table


def test_missing_extra_and_failing_converter_cost_one_row(tmp_path, monkeypatch):
    ctx = _ctx(tmp_path)
    ov = T.get_target("openvino")
    monkeypatch.setattr(type(ov), "available", lambda self: "openvino is not importable (openvino)")
    ort = T.get_target("onnxruntime")

    def boom(self, ctx, precision, path):
        path.write_bytes(b"half")  # a partial file must not stay behind
        raise RuntimeError("converter exploded\nsecond line")

    monkeypatch.setattr(type(ort), "build", boom)
    del ctx.files["onnxruntime:fp32"]
    keep = tmp_path / "earlier.txt"
    keep.write_text("x")
    rows = T.run_targets(ctx, ["openvino", "onnxruntime"], ["fp32"])
    assert rows[0]["status"] == "missing" and "pip install 'edgezoo[openvino]'" in rows[0]["error"]
    assert rows[1]["status"] == "failed" and rows[1]["error"] == "RuntimeError: converter exploded"
    assert not (tmp_path / "model.fp32.onnx").exists()
    assert keep.read_text() == "x"
    table = "\n".join(targets_markdown(rows))
    assert "converter exploded" in table and "edgezoo[openvino]" in table


def test_unknown_target_is_one_error():
    with pytest.raises(InputError, match="unknown export target 'coreml'"):
        T.parse_targets("onnxruntime,coreml")
    with pytest.raises(InputError, match="unknown export target 'foo'"):  # "all" does not hide a typo
        T.parse_targets("all,foo")
    assert T.parse_targets(None) == ["onnxruntime"]
    assert "onnxruntime" in T.parse_targets("all")


def test_relu6_after_conv_is_fused_in_pt2e_annotation():
    _need("executorch")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from edgezoo.export.targets._pt2e import fused_clamp_quantizer

    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU6()).eval()
    x = torch.randn(1, 3, 8, 8)

    def observers_between(quantizer):
        g = prepare_pt2e(torch.export.export(net, (x,)).module(), quantizer)
        conv = next(n for n in g.graph.nodes if "conv2d" in str(n.target))
        return [u.op for u in conv.users]

    inner = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    assert observers_between(inner) == ["call_module"]  # the stock quantizer observes the pre-clip output
    inner = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    assert observers_between(fused_clamp_quantizer(inner)) == ["call_function"]  # straight into hardtanh


def test_preflight_rules_name_float_ops():
    from edgezoo.export.targets.rules import xnnpack_findings

    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sigmoid(), nn.Hardswish())
    lines = xnnpack_findings(net, "executorch")
    assert any("sigmoid" in line for line in lines) and any("h-swish" in line for line in lines)
    assert xnnpack_findings(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), "executorch") == []


def test_pt2e_float_head_leaves_the_first_convs_unobserved():
    _need("executorch")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from edgezoo.export.targets._pt2e import fused_clamp_quantizer

    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU6(), nn.Conv2d(8, 8, 1), nn.ReLU6(), nn.Conv2d(8, 4, 1)).eval()
    x = torch.randn(1, 3, 8, 8)
    inner = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    g = prepare_pt2e(torch.export.export(net, (x,)).module(), fused_clamp_quantizer(inner, float_convs=1))
    convs = [n for n in g.graph.nodes if "conv2d" in str(n.target)]

    def observed_input(conv):  # an observer module sits between the activation and the conv
        return conv.args[0].op == "call_module"

    def observed_weight(conv):
        return conv.args[1].op == "call_module"

    assert not observed_input(convs[0]) and not observed_weight(convs[0])  # the head conv stays float
    assert all(observed_input(c) and observed_weight(c) for c in convs[1:])  # its output enters int8


def test_every_target_shares_one_recipe(tmp_path):
    """The int8 recipe comes off the verified fp32 ONNX once and every target's method names it."""
    ctx = _ctx(tmp_path)
    recipe = ctx.int8_recipe()
    assert recipe is ctx.int8_recipe()
    from edgezoo.export.int8_recipe import saturating_int8_cpu

    assert recipe.reduce_range is saturating_int8_cpu()
    names = [n for n in ("onnxruntime", "openvino") if T.get_target(n).available() is None]
    rows = T.run_targets(ctx, names, ["int8"])
    for r in rows:
        assert r["status"] == "ok", r
        assert recipe.describe().split(",")[0] in r["method"], r["method"]


def test_conv_then_clamp_gate_lowers_whole_to_xnnpack(tmp_path):
    """An SE gate's folded h-sigmoid is a clamp(0, 1) after a conv: it must not take the conv's observer (only
    ReLU6's hardtanh is fused), or XNNPACK leaves the conv out and the program does not lower."""
    _need("executorch")
    from edgezoo.export.passes import ClipAct

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU6(), nn.Conv2d(16, 16, 1), ClipAct(0.0, 1.0),
                        nn.Conv2d(16, 16, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()
    rows = T.run_targets(_ctx(tmp_path, net), ["executorch"], ["int8"])
    assert rows[0]["status"] == "ok", rows[0]
    assert rows[0]["partitions"] == 1 and not rows[0]["ops_outside_xnnpack"], rows[0]


def test_fastest_int8_must_keep_the_answers():
    def row(target, latency, top1):
        return {"target": target, "precision": "int8", "status": "ok", "latency_ms": latency, "file": target,
                "agreement": {"top1_agreement": top1}}

    rows = [row("a", 10.0, 0.97), row("b", 6.0, 0.60), row("c", 8.0, 0.94),
            {"target": "d", "precision": "int8", "status": "failed", "error": "x"}]
    assert T.fastest_int8(rows)["target"] == "c"  # b is faster but changes the answers
    assert T.fastest_int8(rows[:1])["target"] == "a"
    assert T.fastest_int8([rows[3]]) is None


def test_fastest_int8_of_a_map_output_must_keep_its_sqnr():
    """Outputs without a top-1 (a segmentation map): a fast file far below the others' SQNR is not chosen."""
    def row(target, latency, sqnr):
        return {"target": target, "precision": "int8", "status": "ok", "latency_ms": latency, "file": target,
                "agreement": {"top1_agreement": None, "sqnr_db": sqnr}}

    rows = [row("onnxruntime", 10.0, 46.7), row("mnn", 6.0, 8.5), row("openvino", 9.0, 24.0)]
    assert T.fastest_int8(rows)["target"] == "openvino"  # mnn is faster but its map is 8.5 dB off
    weak = [row("a", 10.0, 14.0), row("b", 6.0, 8.0), row("c", 8.0, 12.5)]
    assert T.fastest_int8(weak)["target"] == "c"  # none reaches 20 dB: those within 3 dB of the best
