"""Latency you can trust on a noisy, shared machine: percentiles, interleaved ratios, per-operator times.

- ``summarize`` / ``measure``: warm-up, then a fixed count or a time budget; percentiles of the samples.
- ``compare_interleaved``: several functions measured in alternating rounds in one process, so that
  whatever else the machine is doing hits all of them alike; the answer is the median of per-round ratios.
- ``op_times``: per-node time from onnxruntime's profiler, averaged over the profiled runs.

No torch import: this runs on a device that has only onnxruntime and numpy.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

Progress = Callable[[int, int | None], None]  # (done, total or None when a time budget decides)


@dataclass
class LatencyStats:
    """Summary of latency samples in milliseconds. Percentiles interpolate linearly (numpy's default)."""

    n: int
    mean: float
    std: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float
    samples_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not samples:
            d.pop("samples_ms")
        return d


def summarize(samples_ms: Sequence[float]) -> LatencyStats:
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        nan = float("nan")
        return LatencyStats(0, nan, nan, nan, nan, nan, nan, nan, [])
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return LatencyStats(
        n=int(a.size), mean=float(a.mean()), std=float(a.std(ddof=1)) if a.size > 1 else 0.0,
        p50=float(p50), p90=float(p90), p99=float(p99), min=float(a.min()), max=float(a.max()),
        samples_ms=[float(x) for x in a],
    )


class MeasurementInterrupted(KeyboardInterrupt):
    """Ctrl-C during a measurement; carries what was measured so far (``partial``), so callers can print it.

    A KeyboardInterrupt subclass, so code that does not care still stops as on any Ctrl-C.
    """

    def __init__(self, partial: Any):
        super().__init__("interrupted")
        self.partial = partial


def measure(
    fn: Callable[[], Any],
    warmup: int = 10,
    iterations: int | None = None,
    budget_s: float | None = None,
    progress: Progress | None = None,
    min_iterations: int = 1,
) -> LatencyStats:
    """Call ``fn`` ``warmup`` times untimed, then time it ``iterations`` times or until ``budget_s`` is spent
    (whichever ends first when both are given; 100 iterations when neither is).

    The budget counts timed calls only, and at least ``min_iterations`` run whatever the budget.
    Ctrl-C raises MeasurementInterrupted with the statistics of the calls completed so far.
    """
    if iterations is None and budget_s is None:
        iterations = 100
    if iterations is not None and iterations < 1:
        raise ValueError("iterations must be at least 1")
    samples: list[float] = []
    clock = time.perf_counter
    try:
        for _ in range(warmup):
            fn()
        start = clock()
        while True:
            t0 = clock()
            fn()
            t1 = clock()
            samples.append((t1 - t0) * 1e3)
            if progress is not None:
                progress(len(samples), iterations)
            if iterations is not None and len(samples) >= iterations:
                break
            if budget_s is not None and t1 - start >= budget_s and len(samples) >= min_iterations:
                break
    except KeyboardInterrupt:
        raise MeasurementInterrupted(summarize(samples)) from None
    return summarize(samples)


@dataclass
class CompareResult:
    """Interleaved comparison. Ratios are of every function to the first (``baseline``); < 1 means faster."""

    names: list[str]
    baseline: str
    rounds: int  # rounds completed
    iters_per_round: int
    round_medians_ms: dict[str, list[float]]
    round_ratios: dict[str, list[float]]  # per round: median(fn) / median(baseline)
    ratio_median: dict[str, float]
    ratio_q25: dict[str, float]
    ratio_q75: dict[str, float]
    ratio_min: dict[str, float]
    ratio_max: dict[str, float]
    counts: dict[str, int]  # timed runs per function
    stats: dict[str, LatencyStats]  # over all timed runs of each function
    round_load_1min: list[float | None] = field(default_factory=list)  # the load average as each round began

    def spread(self, name: str) -> float:
        """Interquartile range of the per-round ratios of ``name``, relative to their median."""
        return (self.ratio_q75[name] - self.ratio_q25[name]) / self.ratio_median[name]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stats"] = {k: v.to_dict() for k, v in self.stats.items()}
        return d


def compare_interleaved(
    fns: dict[str, Callable[[], Any]],
    rounds: int = 15,
    iters_per_round: int = 10,
    warmup: int = 5,
    progress: Progress | None = None,
) -> CompareResult:
    """Measure each function in turn, round after round (``compare_timed`` over functions run in this
    process)."""

    def timer(fn):
        def run(n: int) -> list[float]:
            clock, ts = time.perf_counter, []
            for _ in range(n):
                t0 = clock()
                fn()
                ts.append((clock() - t0) * 1e3)
            return ts
        return run

    return compare_timed({k: timer(fn) for k, fn in fns.items()}, rounds, iters_per_round, warmup, progress)


def compare_timed(
    timers: dict[str, Callable[[int], list[float]]],
    rounds: int = 15,
    iters_per_round: int = 10,
    warmup: int = 5,
    progress: Progress | None = None,
) -> CompareResult:
    """Interleaved rounds over ``timers`` (``timer(n)`` runs its model n times and returns each time in ms,
    e.g. ``edgezoo.profile.worker.RunnerProcess.time`` in a process of its own); the order alternates every
    round (ABBA) so that neither always runs right after the other. The 1-minute load average is recorded
    per round. Ctrl-C raises MeasurementInterrupted with the rounds done.
    """
    if not timers:
        raise ValueError("nothing to compare")
    if rounds < 1 or iters_per_round < 1:
        raise ValueError("rounds and iters_per_round must be at least 1")
    names = list(timers)
    per_round: dict[str, list[float]] = {k: [] for k in names}
    samples: dict[str, list[float]] = {k: [] for k in names}
    loads: list[float | None] = []
    total = rounds * len(names)
    done_rounds = 0
    try:
        if warmup:
            for k in names:
                timers[k](warmup)
        for r in range(rounds):
            order = names if r % 2 == 0 else names[::-1]
            this_round: dict[str, list[float]] = {}
            load = load_1min()
            for k in order:
                this_round[k] = timers[k](iters_per_round)
                if progress is not None:
                    progress(r * len(names) + len(this_round), total)
            # a round counts only when every function ran in it, so ratios pair like with like
            for k in names:
                per_round[k].append(float(np.median(this_round[k])))
                samples[k].extend(this_round[k])
            loads.append(load)
            done_rounds += 1
    except KeyboardInterrupt:
        raise MeasurementInterrupted(_compare_result(names, per_round, samples, done_rounds, iters_per_round,
                                                     loads)) from None
    return _compare_result(names, per_round, samples, done_rounds, iters_per_round, loads)


def load_1min() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _compare_result(names, per_round, samples, rounds, iters, loads=()) -> CompareResult:
    base = names[0]
    ratios: dict[str, list[float]] = {}
    q = {k: {} for k in ("med", "q25", "q75", "min", "max")}
    for k in names:
        r = [a / b for a, b in zip(per_round[k], per_round[base])]
        ratios[k] = r
        if r:
            q25, med, q75 = np.percentile(r, [25, 50, 75])
            vals = (float(med), float(q25), float(q75), float(min(r)), float(max(r)))
        else:
            vals = (float("nan"),) * 5
        for key, v in zip(("med", "q25", "q75", "min", "max"), vals):
            q[key][k] = v
    return CompareResult(
        names=list(names), baseline=base, rounds=rounds, iters_per_round=iters,
        round_medians_ms=per_round, round_ratios=ratios, ratio_median=q["med"], ratio_q25=q["q25"],
        ratio_q75=q["q75"], ratio_min=q["min"], ratio_max=q["max"],
        counts={k: len(samples[k]) for k in names}, stats={k: summarize(samples[k]) for k in names},
        round_load_1min=list(loads),
    )


# --- per-operator times from onnxruntime's profiler ------------------------------------------------------

@dataclass
class OpTimes:
    """Per-node kernel time, in ms per run, averaged over the profiled runs (warm-up runs excluded).

    ``total_ms`` is the sum of the node times, which is also the sum of ``by_type``; ``run_ms`` is the whole
    ``run()`` call as the profiler saw it, so ``run_ms - total_ms`` is the time outside kernels.
    """

    nodes: list[dict[str, Any]]  # name, op_type, provider, time_ms; in execution order
    by_type: dict[str, float]  # op_type -> ms per run, slowest first
    total_ms: float
    run_ms: float
    runs: int
    threads: int
    input_shapes: dict[str, list[int]]

    def slowest(self, n: int = 10) -> list[dict[str, Any]]:
        return sorted(self.nodes, key=lambda d: d["time_ms"], reverse=True)[:n]

    def share(self, op_type: str) -> float:
        return self.by_type.get(op_type, 0.0) / self.total_ms if self.total_ms else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def op_times(
    onnx_path: str | os.PathLike | bytes,
    threads: int = 1,
    runs: int = 20,
    warmup: int = 5,
    input_size: tuple[int, int, int] | None = None,
    batch: int = 1,
    providers: str | Sequence[str] | None = None,
    graph_optimization: str = "all",
    feeds: dict[str, np.ndarray] | None = None,
) -> OpTimes:
    """Profile ``runs`` runs of an ONNX model (after ``warmup`` unprofiled-in-effect runs) with onnxruntime.

    The profiler records every run from session start; runs are told apart by their ``model_run`` events
    and only the last ``runs`` are kept. Node names are onnxruntime's, after its graph optimisations (so
    fused nodes show as e.g. ``FusedConv``): that is what actually runs.
    """
    from edgezoo.runtimes.inputs import feeds_for
    from edgezoo.runtimes.onnxruntime import OrtRunner, import_onnxruntime

    if runs < 1:
        raise ValueError("runs must be at least 1")
    ort = import_onnxruntime()
    with tempfile.TemporaryDirectory(prefix="edgezoo-prof-") as tmp:
        opts = ort.SessionOptions()
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        runner = OrtRunner(onnx_path, threads=threads, providers=providers, graph_optimization=graph_optimization,
                           session_options=opts, profile=True)
        with runner:
            if feeds is None:
                feeds = feeds_for(runner, batch=batch, input_size=input_size)
            runner.check_feeds(feeds)
            for _ in range(warmup + runs):
                runner.infer(feeds)
            trace_path = runner.end_profiling()
        events = json.loads(Path(trace_path).read_text())
    result = parse_profile(events, runs)
    result.threads = threads
    result.input_shapes = {k: list(v.shape) for k, v in feeds.items()}
    return result


def parse_profile(events: list[dict[str, Any]], runs: int | None = None) -> OpTimes:
    """onnxruntime profiler trace (list of Chrome-trace events, times in µs) -> OpTimes over the last ``runs``."""
    model_runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])
    if runs is not None:
        model_runs = model_runs[-runs:]
    if not model_runs:
        raise ValueError("the profile has no model_run events")
    nodes_ev = sorted((e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")),
                      key=lambda e: e["ts"])
    per_node: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    i = 0
    for run in model_runs:
        lo, hi = run["ts"], run["ts"] + run["dur"]
        while i < len(nodes_ev) and nodes_ev[i]["ts"] < lo:
            i += 1
        while i < len(nodes_ev) and nodes_ev[i]["ts"] <= hi:
            e = nodes_ev[i]
            name = e["name"][: -len("_kernel_time")]
            args = e.get("args", {})
            if name not in per_node:
                per_node[name] = {"name": name, "op_type": args.get("op_name", "?"),
                                  "provider": args.get("provider", ""), "us": 0.0}
                order.append(name)
            per_node[name]["us"] += e["dur"]
            i += 1
    n = len(model_runs)
    nodes = [{"name": k, "op_type": per_node[k]["op_type"], "provider": per_node[k]["provider"],
              "time_ms": per_node[k]["us"] / n / 1e3} for k in order]
    by_type: dict[str, float] = {}
    for d in nodes:
        by_type[d["op_type"]] = by_type.get(d["op_type"], 0.0) + d["time_ms"]
    by_type = dict(sorted(by_type.items(), key=lambda kv: kv[1], reverse=True))
    total = sum(d["time_ms"] for d in nodes)
    run_ms = sum(r["dur"] for r in model_runs) / n / 1e3
    return OpTimes(nodes=nodes, by_type=by_type, total_ms=total, run_ms=run_ms, runs=n, threads=0, input_shapes={})


def describe_machine() -> dict[str, Any]:
    """What a measurement ran on: CPU, core count, Python, onnxruntime (and torch when it was used)."""
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                            "python": platform.python_version(), "cpus": os.cpu_count(),
                            "cpu": platform.processor()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if "torch" in sys.modules:  # report it only when it was used: importing it here would defeat the device side
        info["torch"] = sys.modules["torch"].__version__
    return info
