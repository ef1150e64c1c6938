"""Dynamic micro-batching: requests for one model queue up, and a worker gathers them into one onnxruntime run.

Why this shape:
- One worker task and one inference thread per model. onnxruntime already uses every core inside a run;
  two runs at once would only fight over them. While a run is in progress, new requests queue, and the next
  run takes all of them at once: under load batches grow by themselves, at low load nothing waits long.
- The wait for companions (``max_wait_ms``) is counted from when the oldest request arrived, so a request
  that already waited behind a run is never held back again.
- The queue is bounded: a request that finds it full is refused at once (HTTP 503), never dropped later.
- Every submitted request's future is resolved exactly once: with its slice of the outputs, or an error.
  A run that fails with several requests in it is retried one by one, so one bad request cannot fail the
  good ones beside it.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from edgezoo.serve.metrics import ServerMetrics
from edgezoo.serve.model import ServedModel


@dataclass
class BatchConfig:
    max_batch: int = 16  # most rows in one run
    max_wait_ms: float = 2.0  # how long the oldest request may wait for companions
    max_queue: int = 256  # requests waiting (not yet in a run) before new ones get 503
    enabled: bool = True  # False: every request runs alone


class QueueFull(Exception):
    pass


class ShuttingDown(Exception):
    pass


class RunFailed(Exception):
    pass


@dataclass
class _Item:
    feeds: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def signature(self) -> tuple:
        # Requests join one run only if every input matches beyond the batch dimension.
        return tuple((k, v.shape[1:], v.dtype.str) for k, v in sorted(self.feeds.items()))


class Batcher:
    def __init__(self, model: ServedModel, config: BatchConfig, metrics: ServerMetrics | None = None):
        self.model = model
        self.config = config
        self.metrics = metrics
        self.max_rows = config.max_batch if (config.enabled and model.fixed_batch is None and model.batchable) else 1
        self._queue: collections.deque[_Item] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"onnxruntime-{model.name}")

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._worker(), name=f"batcher-{self.model.name}")

    def submit(self, feeds: dict[str, np.ndarray], rows: int) -> asyncio.Future:
        """Queue one request (called on the event loop). Raises QueueFull or ShuttingDown; never blocks."""
        if self._closing or self._task is None:
            raise ShuttingDown()
        if len(self._queue) >= self.config.max_queue:
            raise QueueFull()
        item = _Item(feeds, rows, asyncio.get_running_loop().create_future())
        self._queue.append(item)
        self._wakeup.set()
        return item.future

    async def stop(self) -> None:
        """Refuse new requests, answer every queued one, then stop the worker and its thread."""
        self._closing = True
        if self._task is not None:
            self._wakeup.set()
            await self._task
        self._executor.shutdown(wait=True)

    # -------------------------------------------------------------------------------------- worker

    async def _worker(self) -> None:
        while True:
            while not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            if self.max_rows > 1:
                await self._wait_for_companions()
            items = self._take()
            if items:
                try:
                    await self._run(items)
                except BaseException as e:  # never leave a request without an answer, even on cancellation
                    for it in items:
                        if not it.future.done():
                            it.future.set_exception(RunFailed(f"internal error: {type(e).__name__}"))
                    if not isinstance(e, Exception):
                        raise

    async def _wait_for_companions(self) -> None:
        deadline = self._queue[0].enqueued + self.config.max_wait_ms / 1000.0
        while not self._closing:
            if sum(it.rows for it in self._queue) >= self.max_rows:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[_Item]:
        """Pop the oldest live request and every compatible one after it that still fits in max_rows."""
        while self._queue and self._queue[0].future.done():  # its client gave up (timeout): skip it
            self._queue.popleft()
        if not self._queue:
            return []
        first = self._queue.popleft()
        items, rows, sig = [first], first.rows, first.signature
        if self.max_rows > 1:
            keep = collections.deque()
            while self._queue:
                it = self._queue.popleft()
                if it.future.done():
                    continue
                if rows + it.rows <= self.max_rows and it.signature == sig:
                    items.append(it)
                    rows += it.rows
                else:
                    keep.append(it)
            self._queue.extendleft(reversed(keep))  # the rest keep their order
        return items

    async def _run(self, items: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        # The batch is assembled here, on the event loop: on the inference thread the copy (which holds the GIL)
        # made that thread wait for the GIL behind the event loop and the loop behind it (measured: 4x the run).
        if len(items) == 1:
            feeds = items[0].feeds
        else:
            feeds = {k: np.concatenate([it.feeds[k] for it in items]) for k in items[0].feeds}
        rows = sum(it.rows for it in items)
        t0 = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(self._executor, self.model.run, feeds)
            if any(o.ndim == 0 or o.shape[0] != rows for o in outputs) and len(items) > 1:
                raise RunFailed("outputs do not follow the batch dimension")
        except Exception as e:
            if len(items) > 1:  # find out which request broke the run; answer the others normally
                for it in items:
                    await self._run([it])
                return
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            items[0].future.set_exception(RunFailed(f"onnxruntime failed on this input: {first[:300]}"))
            return
        if self.metrics is not None:
            self.metrics.batch_size.observe(rows, self.model.name)
            self.metrics.inference.observe(time.perf_counter() - t0, self.model.name)
        start = 0
        for it in items:
            if not it.future.done():
                it.future.set_result([o[start:start + it.rows] if len(items) > 1 else o for o in outputs])
            start += it.rows
