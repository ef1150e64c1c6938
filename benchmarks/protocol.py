"""The one way every speed benchmark here times models, so that its figures reproduce what a user measures.

- Each model file on its runtime is timed in a process of its own, a fresh one per round
  (``edgezoo.profile.worker.RunnerProcess``): no other runtime's thread pool lives beside it, and nothing it
  left behind in one round (arena sizes, caches) carries into the next.
- Rounds are interleaved: round r times every entry once, in turn, the order reversed every other round.
- Before each round the 1-minute load average must be below ``load_limit`` (1.0): the protocol waits and
  retries (every ``poll_s``), up to ``max_wait_s``; a round taken after the cap ran out is marked
  ``quiet: false`` and left out of the medians whenever at least ``min_quiet`` rounds were quiet.
- Per round and entry: the median of ``runs`` timed runs after ``warmup`` untimed ones. The figure is the
  median over rounds; a ratio is the median over rounds of that round's ratio.
- The result records the run's UTC timestamp, the machine, the protocol's settings, and every round's start
  time, load average, wait and medians.

    from protocol import Entry, interleaved
    res = interleaved({"fp32": Entry("m.fp32.onnx"), "int8": Entry("m.int8.onnx")}, threads=1)
    res["p50_ms"]["int8"] / res["p50_ms"]["fp32"], res["ratio"]["int8"]  # ratio: against the first entry

The same isolation backs ``edgezoo bench --vs`` and ``edgezoo compare`` (in one process per entry for the
whole run, without the load gate), so the command printed beside a figure measures it the same way.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LOAD_LIMIT = 1.0


@dataclass
class Entry:
    """A model file (or registry name) on a runtime; ``options`` go to ``open_model`` (precision, ...);
    ``feeds`` fixes the timed input (default: ``feeds_for`` at ``batch``)."""

    model: str | os.PathLike
    runtime: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    feeds: dict[str, np.ndarray] | None = None
    batch: int = 1


def load_1min() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def wait_for_quiet(load_limit: float = LOAD_LIMIT, max_wait_s: float = 600, poll_s: float = 10,
                   sleep: Callable[[float], None] = time.sleep, load: Callable[[], float | None] = load_1min
                   ) -> tuple[float | None, float, bool]:
    """Wait until the 1-minute load average is below ``load_limit``; (load, seconds waited, quiet)."""
    waited = 0.0
    while True:
        now = load()
        if now is None or now < load_limit:
            return now, waited, True
        if waited >= max_wait_s:
            return now, waited, False
        sleep(poll_s)
        waited += poll_s


def time_once(entry: Entry, threads: int | None, runs: int, warmup: int) -> list[float]:
    """One round of one entry: a fresh process opens it, runs it ``warmup`` times, then times ``runs``."""
    from edgezoo.profile.worker import RunnerProcess

    with RunnerProcess() as w:
        w.open(os.fspath(entry.model), entry.runtime, threads=threads, **entry.options)
        w.prepare("x", feeds=entry.feeds, batch=entry.batch)
        if warmup:
            w.time("x", warmup)
        return w.time("x", runs)


def interleaved(entries: dict[str, Entry], threads: int | None = 1, rounds: int = 7, runs: int = 30,
                warmup: int = 10, load_limit: float = LOAD_LIMIT, max_wait_s: float = 600, poll_s: float = 10,
                min_quiet: int = 3, timer: Callable[[Entry, int | None, int, int], list[float]] = time_once,
                log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """The protocol over ``entries`` (label -> Entry); ratios are against the first label."""
    if not entries:
        raise ValueError("nothing to time")
    labels = list(entries)
    base = labels[0]
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = []
    for r in range(rounds):
        load, waited, quiet = wait_for_quiet(load_limit, max_wait_s, poll_s)
        order = labels if r % 2 == 0 else labels[::-1]
        medians = {}
        t_round = time.strftime("%H:%M:%SZ", time.gmtime())
        for label in order:
            medians[label] = float(np.median(timer(entries[label], threads, runs, warmup)))
        record.append({"round": r + 1, "start": t_round, "load_1min": load, "waited_s": waited, "quiet": quiet,
                       "load_1min_end": load_1min(), "p50_ms": {k: round(medians[k], 4) for k in labels}})
        if log is not None:
            log(f"  round {r + 1}/{rounds} (load {load}{'' if quiet else ', over the limit'}): "
                + ", ".join(f"{k} {medians[k]:.3f} ms" for k in labels))
    quiet_rounds = [x for x in record if x["quiet"]]
    used = quiet_rounds if len(quiet_rounds) >= min_quiet else record
    p50 = {k: float(np.median([x["p50_ms"][k] for x in used])) for k in labels}
    ratio, iqr = {}, {}
    for k in labels:
        per_round = [x["p50_ms"][k] / x["p50_ms"][base] for x in used]
        q25, q50, q75 = np.percentile(per_round, [25, 50, 75])
        ratio[k], iqr[k] = round(float(q50), 4), [round(float(q25), 4), round(float(q75), 4)]
    return {
        "timestamp": started,
        "protocol": {"isolation": "each entry in a fresh process per round", "rounds": rounds, "runs": runs,
                     "warmup": warmup, "threads": threads, "load_limit_1min": load_limit,
                     "max_wait_s": max_wait_s, "order": "interleaved, reversed every other round"},
        "baseline": base,
        "entries": {k: {"model": os.fspath(e.model), "runtime": e.runtime, "options": e.options, "batch": e.batch}
                    for k, e in entries.items()},
        "rounds": record,
        "quiet_rounds": len(quiet_rounds),
        "medians_over": "quiet rounds" if used is quiet_rounds else "all rounds (too few were quiet)",
        "p50_ms": {k: round(v, 4) for k, v in p50.items()},
        "ratio": ratio, "ratio_iqr": iqr,
    }


def loads_line(result: dict[str, Any]) -> str:
    """For a results file: when it ran and the load of every round."""
    loads = ", ".join(f"{x['load_1min']}" + ("" if x["quiet"] else "!") for x in result["rounds"])
    return (f"run {result['timestamp']}, {result['quiet_rounds']}/{len(result['rounds'])} rounds below load "
            f"{result['protocol']['load_limit_1min']} (1-minute load per round: {loads}; ! = over the limit)")
