"""What every route shares: the server's configuration and its state (models, batchers, work threads, metrics),
and the steps of the inference path that both protocols take (admission, preparation, the run).

Routes are module-level functions (``routes_v1``, ``routes_kserve``) that find this object as
``request.app.state.edgezoo``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from starlette.requests import Request

from edgezoo.serve import preprocess as pp
from edgezoo.serve.batching import BatchConfig, Batcher, QueueFull, RunFailed, ShuttingDown
from edgezoo.serve.metrics import ServerMetrics
from edgezoo.serve.model import ServedModel
from edgezoo.serve.preprocess import RequestError
from edgezoo.serve.work import WorkPool, within

log = logging.getLogger("edgezoo.serve")

SMALL_JSON = 64 * 1024  # JSON bodies up to this are parsed on a work thread; larger in the parse process


@dataclass
class ServeConfig:
    batch: BatchConfig = field(default_factory=BatchConfig)
    max_body_bytes: int = 16 * 1024 * 1024
    request_timeout_s: float = 30.0  # from body received to answer: queue + run
    body_timeout_s: float = 30.0  # to receive the whole body
    body_grace_s: float = 10.0  # a body must then keep arriving at body_min_rate (guard.py)
    body_min_rate: float = 1024.0  # bytes per second, after body_grace_s
    decode_timeout_s: float = 5.0  # one image's decode and resize
    max_image_pixels: int = 40_000_000  # one image, read from its header before decoding (decompression bombs)
    max_request_pixels: int = 64_000_000  # all images of one request
    max_server_pixels: int = 160_000_000  # images being decoded or waiting to be, across the server (503)
    max_images: int = 64  # images in one multipart request
    header_timeout_s: float = 10.0  # to receive a request's head (guard.py)
    max_header_bytes: int = 32 * 1024  # request line + headers (431 beyond)
    keep_alive_s: float = 15.0  # idle keep-alive connections are closed after this
    max_in_flight: int = 256  # requests being answered at once (503 beyond); bodies still arriving do not count
    max_answer_bytes: int = 64 * 1024 * 1024  # one response body (500 beyond: the model's outputs are too large)
    default_top_k: int = 5
    allow_nan: bool = False
    api_key: str | None = None
    decode_threads: int = 2


class OneLineLog:
    """A server error is one log line, and at most one a second: the rest are counted into the next line
    (a client that provokes 500s cannot flood the log). /metrics counts every one."""

    def __init__(self, interval_s: float = 1.0):
        self.interval_s = interval_s
        self.last = 0.0
        self.suppressed = 0
        self._lock = threading.Lock()

    def error(self, what: str) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self.last < self.interval_s:
                self.suppressed += 1
                return
            more = f" (and {self.suppressed} more since the last line)" if self.suppressed else ""
            self.last, self.suppressed = now, 0
        log.error("edgezoo serve: %s%s", what, more)


class ServerState:
    def __init__(self, models: list[ServedModel], config: ServeConfig):
        self.config = config
        self.models = {m.name: m for m in models}
        self.metrics = ServerMetrics(lambda: {n: self.queue_depth(n) for n in self.batchers},
                                     lambda: self.work.depth)
        self.batchers = {m.name: Batcher(m, config.batch, self.metrics) for m in models}
        self.work = WorkPool(config.decode_threads, config.max_server_pixels)
        self.preparing = dict.fromkeys(self.models, 0)  # requests parsing or decoding, by model
        self.error_log = OneLineLog()
        self.closing = False

    def queue_depth(self, name: str) -> int:
        """Requests of this model between their body and their answer (preparing, or waiting for a run)."""
        return self.batchers[name].depth + self.preparing[name]

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.work.start_processes)
        for b in self.batchers.values():
            await b.start()

    async def stop(self) -> None:
        """Answer every queued request, then stop (uvicorn calls this after in-flight HTTP requests finished)."""
        self.closing = True
        for b in self.batchers.values():
            await b.stop()
        self.work.shutdown()

    # ------------------------------------------------------------------------------------ request path

    def model(self, request: Request) -> ServedModel:
        name = request.path_params["name"]
        m = self.models.get(name)
        if m is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise RequestError(404, f"no model named '{name[:100]}' (served: {known})")
        version = request.path_params.get("version")
        if version is not None and version != "1":
            raise RequestError(404, f"model '{name}' has only version 1; got version '{version[:20]}'")
        return m

    async def prepared(self, model: ServedModel, parsing):
        """Admission (queue full: 503 before any work) and accounting of a request's preparation."""
        if self.queue_depth(model.name) >= self.config.batch.max_queue:
            parsing.close()
            raise RequestError(503, "server busy: queue full", {"Retry-After": "1"})
        self.preparing[model.name] += 1
        try:
            return await parsing
        finally:
            self.preparing[model.name] -= 1

    async def work_on(self, fn, *args, deadline: float, what: str, cancellable: bool = False,
                      in_process: bool = False, pixels: int = 0):
        """``fn(*args)`` on a work thread (or the parse process), never on the event loop."""
        return await self.work.run(fn, *args, run_timeout_s=self.config.decode_timeout_s, deadline=deadline,
                                   what=what, cancellable=cancellable, in_process=in_process, pixels=pixels)

    async def infer(self, model: ServedModel, feeds: dict[str, np.ndarray], deadline: float) -> list[np.ndarray]:
        rows = next(iter(feeds.values())).shape[0]
        if any(v.shape[0] != rows for v in feeds.values()):
            raise RequestError(422, "inputs disagree on the batch size")
        if model.fixed_batch is not None and rows != model.fixed_batch:
            raise RequestError(422, f"model '{model.name}' takes batches of exactly {model.fixed_batch}; "
                                    f"got {rows}")
        try:
            future = self.batchers[model.name].submit(feeds, rows)
        except QueueFull:
            raise RequestError(503, "server busy: queue full", {"Retry-After": "1"}) from None
        except ShuttingDown:
            raise RequestError(503, "server is shutting down", {"Retry-After": "1", "Connection": "close"}) \
                from None
        try:
            # the future is cancelled on timeout; the batcher then skips the request
            return await within(future, max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise RequestError(504, f"no answer within {self.config.request_timeout_s:g}s (server overloaded?)") \
                from None
        except RunFailed as e:
            raise RequestError(500, str(e)) from None

    def tensor_feeds(self, model: ServedModel, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], bool]:
        missing = [t.name for t in model.inputs if t.name not in arrays]
        if missing:
            raise RequestError(422, f"missing input '{missing[0]}'")
        feeds, added = {}, set()
        for t in model.inputs:
            feeds[t.name], was_added = pp.check_and_cast(arrays[t.name], t, self.config.allow_nan)
            added.add(was_added)
        if len(added) > 1:
            raise RequestError(422, "give every input a batch dimension, or none")
        return feeds, added.pop()

    async def image_feeds(self, model: ServedModel, blobs: list[bytes], deadline: float):
        config = self.config
        pre = model.preprocessing
        if pre is None:
            raise RequestError(422, f"model '{model.name}' has no image preprocessing (its file carries no input "
                                    "size/mean/std): send a tensor, or start the server with --input-size, "
                                    "--mean and --std")
        if len(blobs) > config.max_images:
            raise RequestError(413, f"{len(blobs)} images in one request; the limit is {config.max_images}")
        # Sizes from the headers (no pixel decoded) bound the work before any of it is done.
        sizes = [pp.image_pixels(b) for b in blobs]
        for n in sizes:
            if n > config.max_image_pixels:
                raise RequestError(413, f"an image of {n:,} pixels; the limit is {config.max_image_pixels:,}")
        total = sum(sizes)
        if total > config.max_request_pixels:
            raise RequestError(413, f"{len(blobs)} images of {total:,} pixels in all; the limit per request is "
                                    f"{config.max_request_pixels:,}")
        self.work.reserve_pixels(total)
        handed = 0  # each image's share passes to its job, which releases it when it is over on its thread
        try:
            samples = []
            for blob, n in zip(blobs, sizes):
                handed += n
                samples.append(await self.work_on(pp.decode_image, blob, pre, config.max_image_pixels,
                                                  deadline=deadline, what="image", cancellable=True, pixels=n))
        finally:
            self.work.release_pixels(total - handed)
        x = np.stack(samples).astype(model.inputs[0].dtype, copy=False)
        return {model.inputs[0].name: x}, False


def state_of(request: Request) -> ServerState:
    return request.app.state.edgezoo


def deadline_for(state: ServerState) -> float:
    return time.monotonic() + state.config.request_timeout_s

