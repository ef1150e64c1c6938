"""MNN target: the verified fp32 ONNX converted by MNN's converter; int8 by MNN's own quantization tool.

fp32: MNN's converter (the ``mnnconvert`` of the ``mnn`` wheel) on the bundle's fp32 ONNX. int8: MNN's
post-training quantizer (``mnnquant``, feature ranges by ``FEATURE_METHOD``, max-abs symmetric weights) on that .mnn, calibrated
on the same images as every other target: the tool reads image files and applies ``(pixel - mean) * normal``
itself, so ``ctx.calibration`` is written as 8-bit PNGs with a per-channel affine map chosen to give those
tensors back (within half a step of their range) and the matching mean/normal in its config. Of edgezoo's
recipe, the float head carries over (the recipe's first convs are named in ``skip_quant_op_names``); bias
correction and 7-bit weights have no knob in MNN's tool.

Both tools run in a child process through the wheel's ``_tools`` module: its Python wrappers send usage
logs to a remote service and try ``pip install`` at run time (and the ``mnnquant`` wrapper passes arguments
the 3.6.1 binding does not take), and a native crash in a converter must cost one row, not the export.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgezoo.errors import InputError
from edgezoo.export.targets import TargetContext

CONVERT = "import sys, _tools; sys.exit(0 if _tools.mnnconvert(sys.argv[1:]) else 1)"
QUANTIZE = "import sys, _tools; sys.exit(0 if _tools.mnnquant(sys.argv[1:]) else 1)"
TIMEOUT_S = 1800
# MNN's feature range methods: "KL" (its default), "ADMM" (one batch of all calibration images), "EMA". ADMM
# crashed MNN's tool (SIGSEGV) on every torch-exported test model here and EMA gave constant outputs; KL ran
# on all. Lite0's figures: benchmarks/results/mnn_ncnn.json.
FEATURE_METHOD = "KL"
OUTPUT_SUFFIX = "__edgezoo_out"


def run_tool(code: str, args: list[str], what: str, out: Path) -> str:
    """Run one MNN tool in a child process; its output file must exist afterwards. Returns its log."""
    try:
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                              timeout=TIMEOUT_S, errors="replace")
    except subprocess.TimeoutExpired:
        raise InputError(f"MNN's {what} did not finish in {TIMEOUT_S} s") from None
    log = (done.stdout or "") + (done.stderr or "")
    if done.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        last = [ln.strip() for ln in log.replace("\r", "\n").splitlines() if ln.strip()]
        raise InputError(f"MNN's {what} failed (exit {done.returncode}): {last[-1] if last else 'no output'}")
    return log


def convert(onnx_path: Path, out: Path, input_size: tuple[int, int, int], batch_one: bool = False) -> None:
    """The ONNX file as an .mnn, in the forms MNN's quantization tool survives (it crashes with SIGSEGV on a
    ReduceMean, and on a graph output that a Resize or Reshape writes): a ReduceMean over H, W becomes
    GlobalAveragePool, and every graph output is written by an Add of zero (kept in float by ``_int8``).
    ``batch_one``: the batch fixed at 1 and the shape arithmetic folded (the tool also crashes on a Resize
    whose size is computed at run time). All exact; the changed graph is checked through onnxruntime."""
    import onnx

    from edgezoo.export import graph_passes as G

    part = out.with_name(out.name + ".part")
    ready = out.with_name(out.name + ".onnx.part")
    try:
        model = onnx.load(os.fspath(onnx_path))
        result = G.spatial_mean_to_global_pool(G.simplify(model, batch=1).model if batch_one else model)
        result.model = _outputs_through_add(result.model)
        check = G.check_graph_pass(model, result, input_size, batch=1 if batch_one else 2)
        if not check.ok:
            raise InputError(f"MNN's forms of the graph changed the outputs by {check.max_abs_diff:.3g}")
        onnx.save(result.model, os.fspath(ready))
        run_tool(CONVERT, ["mnnconvert", "-f", "ONNX", "--modelFile", os.fspath(ready), "--MNNModel",
                           os.fspath(part), "--bizCode", "edgezoo"], "converter", part)
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)
        ready.unlink(missing_ok=True)


def computes_shapes(graph) -> bool:
    """Whether a graph reads tensor shapes at run time (Shape ops: a dynamic batch kept them from folding)."""
    return any(n.op_type == "Shape" for n in graph.node)


def _outputs_through_add(model):
    """Each float graph output y [N, C, ...] written as Add(y', zeros [1, C, 1...]), the op named y as MNN names
    ops after their first output."""
    from onnx import helper, numpy_helper
    from onnx.shape_inference import infer_shapes as onnx_shape_inference

    producers = {o: n for n in model.graph.node for o in n.output}
    inferred = onnx_shape_inference(model)
    types = {v.name: v.type.tensor_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    for out in model.graph.output:
        node, t = producers.get(out.name), types.get(out.name)
        if node is None or t is None or t.elem_type != 1 or len(t.shape.dim) < 2 or not t.shape.dim[1].dim_value:
            continue  # passed through, not float32, or no channel count: left as it is
        # one zero per channel: MNN's converter folds away an Add of a scalar zero
        zeros = np.zeros([1, t.shape.dim[1].dim_value] + [1] * (len(t.shape.dim) - 2), np.float32)
        inner = f"{out.name}{OUTPUT_SUFFIX}"
        node.output[list(node.output).index(out.name)] = inner
        for other in model.graph.node:  # the output may also feed other nodes
            for k, name in enumerate(other.input):
                if name == out.name:
                    other.input[k] = inner
        zero = numpy_helper.from_array(zeros, f"{out.name}{OUTPUT_SUFFIX}_zero")
        model.graph.initializer.append(zero)
        model.graph.node.append(helper.make_node("Add", [inner, zero.name], [out.name],
                                                 name=f"{out.name}{OUTPUT_SUFFIX}_add"))
    return model


def calibration_images(calibration: np.ndarray, folder: Path) -> dict:
    """Write (N, C, H, W) float tensors as PNGs MNN's quantizer reads back as the same tensors; returns the
    config entries (format, mean, normal, width, height) that undo the 8-bit encoding."""
    from PIL import Image

    n, c, h, w = calibration.shape
    if c not in (1, 3):
        raise InputError(f"MNN's quantization tool reads images; this model takes {c} channels",
                         "MNN int8 needs a 1- or 3-channel image input")
    lo = calibration.min(axis=(0, 2, 3)).astype(np.float64)
    hi = calibration.max(axis=(0, 2, 3)).astype(np.float64)
    step = np.where(hi > lo, (hi - lo) / 255.0, 1.0)
    for i, x in enumerate(calibration):
        pixels = np.clip(np.round((x - lo[:, None, None]) / step[:, None, None]), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels[0] if c == 1 else pixels.transpose(1, 2, 0), "L" if c == 1 else "RGB")
        image.save(folder / f"{i:05d}.png")
    # MNN: input = (pixel - mean) * normal, so mean = -lo / step and normal = step
    return {"format": "GRAY" if c == 1 else "RGB", "mean": [float(-a / s) for a, s in zip(lo, step)],
            "normal": [float(s) for s in step], "width": int(w), "height": int(h), "used_image_num": int(n)}


def op_names(path: Path) -> list[str]:
    """The names of an .mnn model's ops, as MNN's quantizer matches ``skip_quant_op_names`` against them."""
    from edgezoo.runtimes.mnn import import_mnn

    mnn = import_mnn()
    interpreter = mnn.Interpreter(os.fspath(path))
    session = interpreter.createSession({})
    names: list[str] = []
    interpreter.runSessionWithCallBackInfo(session, lambda t, info: names.append(info.getName()) or True,
                                           lambda t, info: True)
    return names


class MNNTarget:
    name = "mnn"
    runtime = "mnn"
    extra = "mnn"
    precisions = ("fp32", "int8")
    suffix = ".mnn"

    def available(self) -> str | None:
        try:
            from edgezoo.runtimes.mnn import import_mnn

            import_mnn()
            import _tools  # noqa: F401  (MNN's converter and quantizer, in the mnn wheel)
        except Exception as e:
            return f"MNN is not importable ({getattr(e, 'name', None) or e})"
        return None

    def preflight(self, model) -> list[str]:
        return []

    def build(self, ctx: TargetContext, precision: str, path: Path) -> dict:
        src = ctx.files.get("onnxruntime:fp32")
        if src is None:
            raise RuntimeError("the mnn target converts the verified fp32 ONNX, which was not written")
        if precision == "fp32":
            convert(src, path, ctx.input_size)
            return {"method": "MNN converter (mnnconvert) of the fp32 ONNX"}
        return self._int8(ctx, src, path)

    def _int8(self, ctx: TargetContext, src: Path, path: Path) -> dict:
        import onnx

        from edgezoo.export.int8_recipe import float_nodes

        recipe = ctx.int8_recipe()
        graph = onnx.load(os.fspath(src), load_external_data=False).graph
        floats, _ = float_nodes(graph, recipe)
        # MNN's converter names each op after the ONNX node's first output, not after the node
        head = [n.output[0] for n in graph.node if n.name in set(floats)]
        with tempfile.TemporaryDirectory(prefix=".mnn-int8-", dir=path.parent) as tmp:
            tmp = Path(tmp)
            batch_one = computes_shapes(graph)
            fp32 = None if batch_one else ctx.files.get("mnn:fp32")
            if fp32 is None:
                fp32 = tmp / "source.fp32.mnn"
                convert(src, fp32, ctx.input_size, batch_one=batch_one)
            names = set(op_names(fp32))
            skip = [n for n in head if n in names]
            outputs = [o.name for o in graph.output if o.name in names]  # the Adds of zero stay float
            images = tmp / "images"
            images.mkdir()
            config = {**calibration_images(np.asarray(ctx.calibration, np.float32), images),
                      "path": os.fspath(images) + os.sep, "feature_quantize_method": FEATURE_METHOD,
                      "weight_quantize_method": "MAX_ABS", "skip_quant_op_names": skip + outputs}
            (tmp / "config.json").write_text(json.dumps(config))
            part = tmp / "model.int8.mnn"
            run_tool(QUANTIZE, ["quantized.out", os.fspath(fp32), os.fspath(part), os.fspath(tmp / "config.json")],
                     "quantization tool", part)
            os.replace(part, path)
        kept = f"first {len(skip)} conv(s) kept in float" if skip else "no float head"
        missed = f" ({len(head) - len(skip)} head op(s) not found by name in the .mnn)" if len(skip) < len(head) else ""
        fixed = "; fixed at batch 1 (the graph computes shapes at run time, which MNN's tool cannot quantize)" \
            if batch_one else ""
        return {"method": f"MNN quantization tool (mnnquant: {FEATURE_METHOD} feature ranges, max-abs symmetric weights; "
                          f"{len(ctx.calibration)} calibration images; {kept}{missed}; "
                          f"no bias correction: MNN's tool has no such option){fixed}",
                "float_head_ops": skip}

    def runner(self, path: Path, threads: int | None, precision: str):
        from edgezoo.runtimes.mnn import MNNRunner

        return MNNRunner(path, threads=threads)


TARGET = MNNTarget()
