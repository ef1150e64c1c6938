"""`edgezoo serve MODEL.onnx ...`: an HTTP server for exported ONNX files (no PyTorch needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from edgezoo.runtimes import runtimes_help, suffixes_help
from edgezoo.runtimes.inputs import input_size_option


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_command(
        models: List[Path] = typer.Argument(
            ..., help="Model files to serve, each under the model name in its metadata, with the precision "
                      "appended when not fp32 (a bundle's model.onnx and model.int8.onnx serve as "
                      "efficientnet_lite0 and efficientnet_lite0.int8); a file without edgezoo metadata under "
                      "its file name."),
        host: str = typer.Option("127.0.0.1", help="Address to bind. 0.0.0.0 exposes the server to the network."),
        port: int = typer.Option(8000, help="Port, 0..65535 (0 picks a free one and prints it)."),
        runtime: Optional[str] = typer.Option(
            None, "--runtime", "-r", help="Runtime that runs the files (default: the file's own: "
                                          f"{suffixes_help()}); any of {runtimes_help()} that takes the file."),
        max_batch: int = typer.Option(16, "--max-batch", help="Most rows gathered into one onnxruntime run (a single larger request still runs whole)."),
        max_wait_ms: float = typer.Option(2.0, "--max-wait-ms", help="How long a request may wait for others."),
        no_batching: bool = typer.Option(False, "--no-batching", help="Run every request alone."),
        max_queue: int = typer.Option(256, "--max-queue", help="Waiting requests per model before 503."),
        max_body_mb: float = typer.Option(16.0, "--max-body-mb", help="Largest request body (413 beyond)."),
        request_timeout: float = typer.Option(30.0, "--request-timeout", help="Seconds from body to answer (504)."),
        decode_timeout: float = typer.Option(5.0, "--decode-timeout", help="Seconds of a work thread to decode one image or parse one body (counted from when a thread takes it)."),
        header_timeout: float = typer.Option(10.0, "--header-timeout", help="Seconds to receive a request's headers; the socket is closed after. A body then has as long to start and must arrive at 1 kB/s or more."),
        max_header_kb: float = typer.Option(32.0, "--max-header-kb", help="Largest request head (431 beyond)."),
        max_request_mpixels: float = typer.Option(64.0, "--max-request-mpixels", help="Decoded megapixels per request (413 beyond)."),
        max_server_mpixels: float = typer.Option(160.0, "--max-server-mpixels", help="Megapixels being decoded across the server (503 beyond)."),
        max_connections: int = typer.Option(256, "--max-connections", help="Requests in flight before 503 (idle sockets do not count)."),
        threads: Optional[int] = typer.Option(None, "--threads", help="onnxruntime threads (default: all cores)."),
        api_key: Optional[str] = typer.Option(
            None, "--api-key", help="Require this key on every route but /health (or set EDGEZOO_API_KEY; "
                                    "the variable keeps it out of `ps`)."),
        input_size: Optional[str] = input_size_option("the file's metadata; for image preprocessing (H,W: channels "
                                                      "from --mean, else 3)"),
        mean: Optional[str] = typer.Option(None, "--mean", help="Per-channel mean of 0..1 pixels (e.g. 0.485,0.456,0.406)."),
        std: Optional[str] = typer.Option(None, "--std", help="Per-channel std of 0..1 pixels."),
        labels: Optional[Path] = typer.Option(None, "--labels", help="Text file, one class label per line."),
        allow_nan: bool = typer.Option(False, "--allow-nan", help="Pass NaN/inf inputs to the model (422 otherwise)."),
        log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
    ) -> None:
        """Serve model files over HTTP: edgezoo's /v1 routes and the KServe v2 protocol (Triton's HTTP API).

        /health, /metrics, /v1/models, /v1/models/NAME/predict; /v2/health/live|ready, /v2/models/NAME, /v2/models/NAME/ready,
        /v2/models/NAME/infer (JSON and binary tensors: tritonclient.http works unchanged).
        """
        from edgezoo.console import console
        from edgezoo.errors import InputError, MissingDependencyError
        from edgezoo.preprocess_options import parse_floats, read_labels
        from edgezoo.runtimes.inputs import image_chw, parse_input_size

        try:
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError as e:
            raise MissingDependencyError(e.name or "starlette/uvicorn", "pip install 'edgezoo[serve]'",
                                         "edgezoo serve runs on them") from None
        from edgezoo.serve.app import API_KEY_ENV, ServeConfig
        from edgezoo.serve.batching import BatchConfig
        from edgezoo.serve.model import load_model
        from edgezoo.serve.server import run_server

        if max_batch < 1 or max_queue < 1 or max_body_mb <= 0 or max_wait_ms < 0 or max_connections < 1:
            raise InputError("--max-batch, --max-queue, --max-body-mb and --max-connections must be positive")
        if request_timeout <= 0 or decode_timeout <= 0 or header_timeout <= 0:
            raise InputError("timeouts must be positive")
        if not 0 <= port <= 65535:
            raise InputError(f"--port must be 0..65535 (0 picks a free one); got {port}")
        if max_header_kb <= 0 or max_request_mpixels <= 0 or max_server_mpixels <= 0:
            raise InputError("--max-header-kb, --max-request-mpixels and --max-server-mpixels must be positive")
        size = parse_input_size(input_size)
        if size is not None and len(size) == 2:
            size = image_chw(size, len(parse_floats(mean, "mean")) if mean else 3)
        override = {
            "input_size": size,
            "mean": parse_floats(mean, "mean"), "std": parse_floats(std, "std"),
            "labels": read_labels(labels) if labels else None,
        }
        from edgezoo.quiet import third_party_to_log

        loaded, names = [], set()
        with third_party_to_log("serve"):  # the runtimes' load-time noise; the server's own log stays
            for path in models:
                m = load_model(path, threads=threads, override=override, check_batching=not no_batching,
                               runtime=runtime)
                if m.name in names:
                    raise InputError(f"two files would be served as '{m.name}' (the model and precision in their "
                                     "metadata)", "serve them from two servers")
                names.add(m.name)
                loaded.append(m)
                how = "batched" if m.fixed_batch is None and m.batchable and not no_batching else "one by one"
                img = "images + tensors" if m.preprocessing else "tensors only (no preprocessing metadata)"
                console.print(f"  {m.name}: {m.path}  [{m.runner.describe()}; {how}; {img}]", highlight=False,
                              markup=False)
                for note in m.notes:
                    console.print(f"    note: {note}", highlight=False, markup=False)
        config = ServeConfig(
            batch=BatchConfig(max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                              enabled=not no_batching),
            max_body_bytes=int(max_body_mb * 1024 * 1024), request_timeout_s=request_timeout,
            decode_timeout_s=decode_timeout, allow_nan=allow_nan, header_timeout_s=header_timeout,
            max_header_bytes=int(max_header_kb * 1024), body_grace_s=header_timeout, max_request_pixels=int(max_request_mpixels * 1e6),
            max_server_pixels=int(max_server_mpixels * 1e6), max_in_flight=max_connections,
            api_key=api_key or os.environ.get(API_KEY_ENV) or None,
        )
        if host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
            console.print(f"  warning: listening on {host} without an API key: anyone who can reach this "
                          "machine can use the models (set EDGEZOO_API_KEY)", highlight=False, markup=False)
        run_server(loaded, config, host=host, port=port, log_level=log_level, max_connections=max_connections)
