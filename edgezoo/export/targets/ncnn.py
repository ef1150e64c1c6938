"""ncnn target: the verified fp32 ONNX converted by ``pnnx`` into an ncnn .param + .bin pair.

fp32: ``pnnx model.onnx inputshape=[1,C,H,W] fp16=0``. fp16: the same with ``fp16=1``, which stores the
weights in half precision in the .bin (ncnn's fp16 storage; the arithmetic stays as ncnn's CPU kernels do
it). pnnx names the blobs in0/out0 and leaves the Input layer without a shape: the .param is rewritten with
the ONNX file's input/output names and the input's ``0=w 1=h 2=c``, so the runner (and bench, serve) know
both. int8: ncnn's int8 needs a calibration table (``ncnn2table``) and int8 weights (``ncnn2int8``), C++
tools the ncnn wheel does not carry; the row says so instead of writing a file.

pnnx runs as a child process in a scratch folder (it writes several side files beside its input, and a
native crash must cost one row). Its bundled onnxruntime reads ONNX IR versions up to 13, so the scratch copy
of the ONNX file gets IR version 8 when the file's is newer (opset 17 needs 8; nothing else changes).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from edgezoo.errors import InputError
from edgezoo.export.targets import TargetContext

TIMEOUT_S = 1800
PNNX_IR_VERSION = 8
INT8_MISSING = ("ncnn int8 needs a calibration table (ncnn2table) and int8 weights (ncnn2int8), C++ tools "
                "the ncnn wheel does not carry; no ncnn int8 file was written")


def pnnx_executable() -> Path:
    import pnnx

    return Path(pnnx.EXEC_PATH)


def io_names(onnx_path: Path) -> tuple[list[str], list[str]]:
    import onnx

    graph = onnx.load(os.fspath(onnx_path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in inits], [o.name for o in graph.output]


def rewrite_param(text: str, renames: dict[str, str], input_chw: tuple[int, int, int]) -> str:
    """The .param with blobs renamed (pnnx's in0/out0 -> the ONNX names) and the Input layers' shape declared."""
    lines = text.splitlines()
    out = lines[:2]
    c, h, w = input_chw
    for line in lines[2:]:
        tok = line.split()
        if len(tok) < 4:
            out.append(line)
            continue
        n_in, n_out = int(tok[2]), int(tok[3])
        blobs = [renames.get(b, b) for b in tok[4:4 + n_in + n_out]]
        params = tok[4 + n_in + n_out:]
        if tok[0] == "Input":
            params = [p for p in params if p.split("=")[0] not in ("0", "1", "2")] + [f"0={w}", f"1={h}", f"2={c}"]
        out.append(" ".join(tok[:4] + blobs + params))
    return "\n".join(out) + "\n"


def convert(onnx_path: Path, param: Path, chw: tuple[int, int, int], fp16: bool) -> str:
    """pnnx on ``onnx_path`` -> ``param`` + its .bin (written atomically); returns pnnx's log."""
    import onnx

    for name in io_names(onnx_path)[0] + io_names(onnx_path)[1]:
        if not name or any(ch.isspace() for ch in name):
            raise InputError(f"the ONNX tensor name '{name}' cannot be an ncnn blob name (no spaces allowed)")
    with tempfile.TemporaryDirectory(prefix=".ncnn-", dir=param.parent) as tmp:
        tmp = Path(tmp)
        model = onnx.load(os.fspath(onnx_path))
        if model.ir_version > PNNX_IR_VERSION:
            model.ir_version = PNNX_IR_VERSION
        onnx.save(model, os.fspath(tmp / "model.onnx"))
        args = [os.fspath(pnnx_executable()), "model.onnx", f"inputshape=[1,{chw[0]},{chw[1]},{chw[2]}]",
                "ncnnparam=model.param", "ncnnbin=model.bin", f"fp16={1 if fp16 else 0}"]
        try:
            done = subprocess.run(args, cwd=tmp, capture_output=True, text=True, errors="replace", timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise InputError(f"pnnx did not finish in {TIMEOUT_S} s") from None
        log = (done.stdout or "") + (done.stderr or "")
        if done.returncode != 0 or not (tmp / "model.param").is_file() or not (tmp / "model.bin").is_file():
            last = [ln.strip() for ln in log.splitlines() if ln.strip()]
            raise InputError(f"pnnx failed (exit {done.returncode}): {last[-1] if last else 'no output'}")
        inputs, outputs = io_names(onnx_path)
        renames = {f"in{i}": n for i, n in enumerate(inputs)} | {f"out{i}": n for i, n in enumerate(outputs)}
        text = rewrite_param((tmp / "model.param").read_text(), renames, chw)
        (tmp / "model.param").write_text(text)
        os.replace(tmp / "model.bin", param.with_suffix(".bin"))
        os.replace(tmp / "model.param", param)
    return log


class NcnnTarget:
    name = "ncnn"
    runtime = "ncnn"
    extra = "ncnn"
    precisions = ("fp32", "fp16", "int8")
    suffix = ".param"

    def available(self) -> str | None:
        try:
            import ncnn  # noqa: F401

            if not pnnx_executable().is_file():
                return "the pnnx wheel has no pnnx executable"
        except ImportError as e:
            return f"ncnn / pnnx are not importable ({e.name or e})"
        return None

    def preflight(self, model) -> list[str]:
        return []

    def build(self, ctx: TargetContext, precision: str, path: Path) -> dict:
        if precision == "int8":
            raise InputError(INT8_MISSING, "build ncnn's tools from its source to quantize for ncnn")
        src = ctx.files.get("onnxruntime:fp32")
        if src is None:
            raise RuntimeError("the ncnn target converts the verified fp32 ONNX, which was not written")
        convert(src, path, tuple(ctx.input_size), fp16=precision == "fp16")
        return {"method": f"pnnx (fp32 ONNX -> ncnn{', fp16 weight storage' if precision == 'fp16' else ''})"}

    def runner(self, path: Path, threads: int | None, precision: str):
        from edgezoo.runtimes.ncnn import NcnnRunner

        return NcnnRunner(path, threads=threads)


TARGET = NcnnTarget()
