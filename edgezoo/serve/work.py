"""CPU work a request needs before the model runs (image decodes, JSON and .npy parsing), off the event loop.

- A few threads (``threads``), so parsing never stalls the routes that answer health checks and metrics.
- ``run_timeout_s`` counts from when a thread starts the job, not from when the job was queued: a request
  that waits behind others is not blamed for their cost. The wait for a thread is bounded by the request's
  own deadline instead (the same deadline that covers its wait for the model), and reported as 503.
- A job whose request gave up before a thread took it never starts; one that runs over its time is told
  to stop (``CancelToken``: Pillow's reads check it block by block) and its result is dropped.
- Pixels are a budget: ``reserve_pixels`` refuses a request when the images being decoded or waiting to be,
  across the server, would exceed ``max_pixels``, so a few huge uploads cannot occupy every thread.
- Large JSON goes to a helper process (``in_process=True``): ``json.loads`` holds the GIL for its whole
  parse (about 3 s for 16 MB of numbers here), which would stall the event loop from any thread. The work
  thread waits for the process (without the GIL); a parse already running in the process is not stopped,
  but it is bounded by the body limit, and its result is dropped.
- ``depth`` (jobs waiting or running) is what /metrics shows as ``edgezoo_work_queue_depth``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from edgezoo.serve.preprocess import Cancelled, CancelToken, RequestError


async def within(awaitable, seconds: float):
    """``await awaitable``, cancelled after ``seconds`` (asyncio.TimeoutError). ``asyncio.timeout`` where there
    is one (Python 3.11+): ``wait_for`` wraps a coroutine in a task of its own, and a request waits several
    times, so on the request path that was a measurable share of the server's time."""
    if _timeout is None:
        return await asyncio.wait_for(awaitable, seconds)
    async with _timeout(seconds):
        return await awaitable


_timeout = getattr(asyncio, "timeout", None)


class WorkPool:
    def __init__(self, threads: int, max_pixels: int):
        self._executor = ThreadPoolExecutor(max(1, threads), thread_name_prefix="prepare")
        self._processes = None  # started by start_processes (spawned: no fork of a threaded server)
        self.max_pixels = max_pixels
        self.pixels_in_use = 0
        self.depth = 0
        self._lock = threading.Lock()

    def start_processes(self, n: int = 1) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self._processes = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))
        self._processes.submit(int, 0).result(timeout=120)  # started now, not on the first request

    def _in_process(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._processes is None:
            return fn(*args)
        return self._processes.submit(fn, *args).result()

    def reserve_pixels(self, n: int) -> None:
        with self._lock:
            if n and self.pixels_in_use + n > self.max_pixels:
                raise RequestError(503, f"server busy: {self.pixels_in_use:,} pixels being decoded, a request of "
                                        f"{n:,} would pass the limit of {self.max_pixels:,}", {"Retry-After": "1"})
            self.pixels_in_use += n

    def release_pixels(self, n: int) -> None:
        with self._lock:
            self.pixels_in_use -= n

    async def run(self, fn: Callable[..., Any], *args: Any, run_timeout_s: float, deadline: float,
                  what: str = "request", cancellable: bool = False, in_process: bool = False,
                  pixels: int = 0) -> Any:
        """``fn(*args[, cancel=token])`` on a work thread. ``deadline`` (time.monotonic) bounds the wait for a
        thread (503), ``run_timeout_s`` the run itself (400: this input costs too much to prepare).

        ``pixels``: a share of a ``reserve_pixels`` reservation that this job holds; it is released when the
        job is over on its thread (or never starts), not when its request gives up, so a decode that runs on
        after a timeout still counts against the budget until its memory is free."""
        loop = asyncio.get_running_loop()
        token = CancelToken()
        started = asyncio.Event()
        done: asyncio.Future = loop.create_future()

        def job() -> None:
            try:
                if token.cancelled:  # its request gave up while it waited for a thread: never start
                    return
                loop.call_soon_threadsafe(started.set)
                work()
            finally:
                if pixels:
                    self.release_pixels(pixels)

        def work() -> None:
            try:
                if in_process:
                    result = self._in_process(fn, *args)
                else:
                    result = fn(*args, cancel=token) if cancellable else fn(*args)
            except BaseException as e:  # handed to the waiting request, which knows what to answer
                if not isinstance(e, Cancelled) and not token.cancelled:
                    loop.call_soon_threadsafe(_settle, done, None, e)
                return
            if not token.cancelled:
                loop.call_soon_threadsafe(_settle, done, result, None)

        self.depth += 1
        try:
            self._executor.submit(job)
            try:
                await within(started.wait(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                token.cancelled = True
                raise RequestError(503, f"server busy: no thread free to prepare the {what} in time",
                                   {"Retry-After": "1"}) from None
            try:
                return await within(asyncio.shield(done), run_timeout_s)
            except asyncio.TimeoutError:
                token.cancelled = True
                raise RequestError(400, f"the {what} took longer than {run_timeout_s:g}s to prepare") from None
        except asyncio.CancelledError:  # the client went away
            token.cancelled = True
            raise
        finally:
            self.depth -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._processes is not None:
            self._processes.shutdown(wait=True, cancel_futures=True)


def _settle(fut: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
