"""The MNN and ncnn targets on the tiny model of test_targets_edge: each fp32 file matches PyTorch through its
own Runner, MNN's int8 (its own quantization tool, calibrated on the same images) keeps top-1, the report
table has their rows; the summary's fastest verified file may be of any precision."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgezoo.export import targets as T  # noqa: E402
from edgezoo.export.report import targets_markdown  # noqa: E402
from test_targets_edge import _ctx, _need  # noqa: E402


def test_mnn_fp32_and_int8_verified(tmp_path):
    _need("mnn")
    ctx = _ctx(tmp_path)
    rows = T.run_targets(ctx, ["mnn"], ["fp32", "int8"])
    by = {r["precision"]: r for r in rows}
    assert by["fp32"]["status"] == "ok", by["fp32"]
    assert by["fp32"]["agreement"]["max_abs_diff"] <= 1e-4 * max(1.0, float(np.abs(ctx.reference).max()))
    assert by["int8"]["status"] == "ok", by["int8"]
    assert by["int8"]["agreement"]["top1_agreement"] >= 0.75
    assert "mnnquant" in by["int8"]["method"] and "MNN" in by["int8"]["runtime"]
    assert sorted(p.name for p in tmp_path.iterdir() if "mnn" in p.name) == ["model.mnn.fp32.mnn", "model.mnn.int8.mnn"]
    table = "\n".join(targets_markdown(rows))
    assert "| mnn | int8 | model.mnn.int8.mnn" in table


def test_fastest_verified_is_of_any_precision():
    def row(target, precision, latency, top1):
        return {"target": target, "precision": precision, "status": "ok", "latency_ms": latency, "file": target,
                "agreement": {"top1_agreement": top1}}

    rows = [row("a", "fp32", 5.0, 1.0), row("b", "int8", 6.0, 0.98), row("c", "int8", 4.0, 0.80),
            {"target": "d", "precision": "int8", "status": "failed", "error": "x"}]
    assert T.fastest_verified(rows)["target"] == "a"  # an fp32 file beats every int8 one that keeps the answers
    assert T.fastest_int8(rows)["target"] == "b"
    rows[1]["latency_ms"] = 3.0
    assert T.fastest_verified(rows)["target"] == "b"
    assert T.fastest_verified([rows[3]]) is None


def test_ncnn_fp32_fp16_verified_and_int8_says_why_not(tmp_path):
    _need("ncnn")
    ctx = _ctx(tmp_path)
    rows = T.run_targets(ctx, ["ncnn"], ["fp32", "fp16", "int8"])
    by = {r["precision"]: r for r in rows}
    for precision in ("fp32", "fp16"):
        assert by[precision]["status"] == "ok", by[precision]
        # ncnn's kernels differ from PyTorch's numerically (measured 1.4e-3 of the largest logit here)
        assert by[precision]["agreement"]["max_abs_diff"] <= 1e-2 * max(1.0, float(np.abs(ctx.reference).max()))
        assert by[precision]["agreement"]["top1_agreement"] == 1.0
    assert by["fp16"]["size_bytes"] < 0.7 * by["fp32"]["size_bytes"]  # half-precision weights in the .bin
    assert by["int8"]["status"] == "failed" and "ncnn2table" in by["int8"]["error"]
    assert sorted(p.name for p in tmp_path.iterdir() if "ncnn" in p.name) == [
        "model.ncnn.fp16.bin", "model.ncnn.fp16.param", "model.ncnn.fp32.bin", "model.ncnn.fp32.param"]
    assert (tmp_path / "model.ncnn.fp32.param").read_text().splitlines()[2].split()[-3:] == ["0=32", "1=32", "2=3"]
    table = "\n".join(targets_markdown(rows))
    assert "| ncnn | fp32 | model.ncnn.fp32.param" in table and "ncnn2int8" in table
