"""`edgezoo triton BUNDLE_OR_ONNX -o DIR`: a Triton Inference Server model repository entry for a file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("triton")
    def triton_command(
        model: Path = typer.Argument(..., help="An .onnx file, a TensorRT .plan/.engine, or a bundle folder."),
        out: Path = typer.Option(..., "-o", "--out", help="Model repository folder. Only NAME/1/, NAME/config.pbtxt and NAME/labels.txt are written; other models, versions and files are kept."),
        name: Optional[str] = typer.Option(None, "--name", help="Model name in the repository (default: file name)."),
        max_batch: Optional[int] = typer.Option(
            None, "--max-batch", help="max_batch_size (default 16 for a dynamic-batch ONNX, 0 for a fixed one; "
                                      "required for a TensorRT plan: its profile's maximum)."),
        preferred: Optional[str] = typer.Option(None, "--preferred", help="Preferred batch sizes, e.g. 4,8,16."),
        queue_delay_us: int = typer.Option(100, "--queue-delay-us", help="Dynamic batcher's max queue delay."),
        kind: str = typer.Option("cpu", "--kind", help="Instance kind: cpu or gpu."),
        count: int = typer.Option(1, "--count", help="Model instances."),
        reference_onnx: Optional[Path] = typer.Option(
            None, "--reference-onnx", help="For a plan: the ONNX it was built from (inputs and outputs)."),
        backend: str = typer.Option(
            "onnxruntime", "--backend", help="onnxruntime: platform onnxruntime_onnx (real deployments); python: "
                                             "Triton's Python backend runs the file with onnxruntime (1/model.py)."),
    ) -> None:
        """Write OUT/NAME/config.pbtxt and OUT/NAME/1/model.onnx (or model.plan) for Triton.

        Run the result on Triton (the NGC image has the onnxruntime, TensorRT and Python backends):

          docker run --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v $PWD/OUT:/models
          nvcr.io/nvidia/tritonserver:24.10-py3 tritonserver --model-repository=/models

        (add --gpus all for GPU instances). Then any KServe v2 client works, e.g. tritonclient.http on
        localhost:8000; `edgezoo serve` speaks the same protocol on one machine.
        """
        from edgezoo.console import console
        from edgezoo.errors import InputError
        from edgezoo.serve.triton import write_triton_repository

        sizes = None
        if preferred:
            try:
                sizes = [int(x) for x in preferred.replace(" ", "").split(",") if x]
            except ValueError:
                raise InputError(f"--preferred must be comma-separated integers; got '{preferred}'") from None
        target = write_triton_repository(model, out, name=name, max_batch_size=max_batch,
                                         preferred_batch_sizes=sizes, max_queue_delay_us=queue_delay_us,
                                         instance_kind=kind, count=count, reference_onnx=reference_onnx,
                                         backend=backend)
        console.print(f"wrote {target}/config.pbtxt", highlight=False, markup=False)
        repo = Path(out).resolve()
        console.print(f"  run: tritonserver --model-repository {repo}", highlight=False, markup=False)
        console.print(f"   or: docker run --rm -p 8000:8000 -v {repo}:/models nvcr.io/nvidia/tritonserver:24.10-py3 "
                      "tritonserver --model-repository=/models", highlight=False, markup=False)
