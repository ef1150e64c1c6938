"""The work pool that parses and decodes requests: its timeout counts a thread's time on the job, not the wait
for a thread; a job whose request gave up never starts; a running decode is told to stop; pixels are a budget."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import numpy as np
import pytest

from edgezoo.serve.preprocess import Cancelled, CancelToken, RequestError, decode_image
from edgezoo.serve.model import Preprocessing
from edgezoo.serve.work import WorkPool


def test_timeout_does_not_count_the_wait_for_a_thread():
    pool = WorkPool(threads=1, max_pixels=10)

    def job(i):
        time.sleep(0.4)
        return i

    async def go():
        far = time.monotonic() + 60
        tasks = [asyncio.ensure_future(pool.run(job, i, run_timeout_s=1.0, deadline=far)) for i in range(4)]
        await asyncio.sleep(0.1)
        assert pool.depth == 4  # one running, three waiting: all counted
        return await asyncio.gather(*tasks)

    try:
        # four 0.4 s jobs behind one thread (1.6 s in all) with a 1 s timeout each: counted from when a thread
        # takes the job, none is blamed for the time of the jobs before it
        assert asyncio.run(go()) == [0, 1, 2, 3]
    finally:
        pool.shutdown()


def test_a_job_whose_request_gave_up_never_starts():
    pool = WorkPool(threads=1, max_pixels=10)
    started = []
    hold = threading.Event()

    def blocker():
        hold.wait(5)

    async def go():
        first = asyncio.ensure_future(pool.run(blocker, run_timeout_s=10, deadline=time.monotonic() + 60))
        await asyncio.sleep(0.05)
        with pytest.raises(RequestError) as e:  # no thread within its deadline: 503, and it never runs
            await pool.run(started.append, 1, run_timeout_s=10, deadline=time.monotonic() + 0.2)
        assert e.value.status == 503
        hold.set()
        await first
        await asyncio.sleep(0.1)

    try:
        asyncio.run(go())
        assert started == []
    finally:
        pool.shutdown()


def test_pixel_budget_and_cancelled_decode():
    pool = WorkPool(threads=1, max_pixels=1000)
    try:
        pool.reserve_pixels(800)
        with pytest.raises(RequestError) as e:
            pool.reserve_pixels(300)
        assert e.value.status == 503
        pool.release_pixels(800)
        pool.reserve_pixels(1000)
    finally:
        pool.shutdown()
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    pre = Preprocessing((3, 32, 32), (0.5,) * 3, (0.5,) * 3)
    token = CancelToken()
    assert decode_image(buf.getvalue(), pre, 10**6, cancel=token).shape == (3, 32, 32)
    token.cancelled = True
    with pytest.raises(Cancelled):
        decode_image(buf.getvalue(), pre, 10**6, cancel=token)


def test_npy_bodies_read_as_numpy_reads_them():
    """parse_npy reads np.save's own headers without numpy's literal_eval; every other header goes to numpy."""
    import io

    import numpy as np

    from edgezoo.serve.preprocess import parse_npy

    arrays = [np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4), np.arange(5, dtype=">i8"), np.float32(3.5),
              np.zeros((2, 0), np.uint8), np.array([True, False]), np.asfortranarray(np.arange(6.0).reshape(2, 3)),
              np.arange(7, dtype=np.float16)]
    for a in arrays:
        buf = io.BytesIO()
        np.save(buf, a)
        got = parse_npy(buf.getvalue())
        assert got.shape == a.shape and got.dtype == a.dtype and np.array_equal(got, a)
    buf = io.BytesIO()
    np.save(buf, np.arange(3, dtype=np.float32))
    lying = buf.getvalue().replace(b"(3,)", b"(4,)")
    with pytest.raises(RequestError) as e:
        parse_npy(lying)
    assert e.value.status == 400


def test_a_timed_out_decode_keeps_its_pixels_until_it_is_over():
    """Issue 22 #1: the request gives up (400) but the work on its thread goes on; its pixels count against the
    server's budget until the thread is done, so timed-out work cannot pile up memory beyond the budget."""
    pool = WorkPool(threads=1, max_pixels=1000)
    release = threading.Event()

    def slow(cancel=None):
        release.wait(10)  # a decode that does not look at its token (one long step)
        return 1

    async def go():
        pool.reserve_pixels(600)
        with pytest.raises(RequestError) as e:
            await pool.run(slow, run_timeout_s=0.1, deadline=time.monotonic() + 10, cancellable=True, pixels=600)
        assert e.value.status == 400
        assert pool.pixels_in_use == 600  # still decoding: still counted
        with pytest.raises(RequestError):
            pool.reserve_pixels(600)  # so a second one is refused (503)
        release.set()
        for _ in range(200):  # bounded: 2 s
            if pool.pixels_in_use == 0:
                break
            await asyncio.sleep(0.01)
        assert pool.pixels_in_use == 0

    try:
        asyncio.run(go())
    finally:
        release.set()
        pool.shutdown()


def test_npy_answers_are_what_np_save_writes():
    import io

    import numpy as np

    from edgezoo.serve.routes_v1 import npy_bytes

    for a in [np.arange(10, dtype=np.float32).reshape(2, 5), np.float32(2), np.zeros((0, 3)),
              np.arange(6, dtype=">i4")[::2], np.asfortranarray(np.ones((2, 3))), np.ones(3, bool)]:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(a) if np.ndim(a) else a)
        assert npy_bytes(a) == buf.getvalue()
        assert npy_bytes(a) == buf.getvalue()  # the cached header gives the same bytes
