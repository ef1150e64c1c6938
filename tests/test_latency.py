"""Latency statistics, measurement loops, interleaved ratios and onnxruntime per-op times (no timing asserted)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from edgezoo.profile import latency
from edgezoo.profile.latency import (
    MeasurementInterrupted, compare_interleaved, measure, op_times, parse_profile, summarize,
)
from onnx_builders import conv_relu_gap as tiny_onnx


class FakeClock:
    """Stands in for time.perf_counter: functions under test advance it by a known amount."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def advance_ms(self, ms):
        self.t += ms / 1e3


def test_summarize_known_percentiles():
    s = summarize(range(1, 101))
    assert s.n == 100
    assert s.p50 == pytest.approx(50.5)
    assert s.p90 == pytest.approx(90.1)
    assert s.p99 == pytest.approx(99.01)
    assert s.mean == pytest.approx(50.5)
    assert s.std == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert (s.min, s.max) == (1, 100)
    assert "samples_ms" not in s.to_dict() and len(s.to_dict(samples=True)["samples_ms"]) == 100


def test_summarize_single_and_empty():
    one = summarize([3.0])
    assert (one.n, one.p50, one.p99, one.std) == (1, 3.0, 3.0, 0.0)
    assert summarize([]).n == 0


def test_measure_counts_warmup_and_iterations():
    calls = []
    seen = []
    s = measure(lambda: calls.append(1), warmup=3, iterations=7, progress=lambda d, t: seen.append((d, t)))
    assert len(calls) == 10 and s.n == 7
    assert seen == [(i, 7) for i in range(1, 8)]


def test_measure_budget_stops_on_time(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(latency.time, "perf_counter", clock)
    s = measure(lambda: clock.advance_ms(10), warmup=0, budget_s=0.095)
    assert s.n == 10  # samples end at 10, 20, ... 100 ms; the first at or past 95 ms stops it
    assert s.p50 == pytest.approx(10.0)
    s = measure(lambda: clock.advance_ms(10), warmup=0, budget_s=10, iterations=3)  # whichever ends first
    assert s.n == 3


def test_measure_interrupt_keeps_partial():
    calls = []

    def fn():
        calls.append(1)
        if len(calls) == 2 + 5:  # 2 warm-up calls, then the 5th timed one is "Ctrl-C"
            raise KeyboardInterrupt

    with pytest.raises(MeasurementInterrupted) as info:
        measure(fn, warmup=2, iterations=100)
    assert isinstance(info.value, KeyboardInterrupt)
    assert info.value.partial.n == 4


def test_compare_interleaved_ratios_and_counts(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(latency.time, "perf_counter", clock)
    order = []

    def make(name, ms):
        def fn():
            order.append(name)
            clock.advance_ms(ms)
        return fn

    res = compare_interleaved({"a": make("a", 2.0), "b": make("b", 3.0), "c": make("c", 1.0)},
                              rounds=4, iters_per_round=3, warmup=2)
    assert res.baseline == "a" and res.rounds == 4
    assert res.counts == {"a": 12, "b": 12, "c": 12}
    assert res.round_ratios["a"] == [1.0] * 4
    assert res.round_ratios["b"] == pytest.approx([1.5] * 4)
    assert res.ratio_median["c"] == pytest.approx(0.5)
    assert res.ratio_min["b"] == pytest.approx(1.5) and res.ratio_max["b"] == pytest.approx(1.5)
    assert res.spread("b") == pytest.approx(0.0)
    assert len(res.round_medians_ms["b"]) == 4
    timed = order[2 * 3:]  # after 2 warm-up passes over a, b, c
    assert timed[:9] == ["a"] * 3 + ["b"] * 3 + ["c"] * 3  # round 0 in order
    assert timed[9:18] == ["c"] * 3 + ["b"] * 3 + ["a"] * 3  # round 1 reversed
    d = res.to_dict()
    assert set(d["stats"]["a"]) >= {"p50", "p90", "p99", "mean", "std", "n"}


def test_compare_interleaved_interrupt_keeps_complete_rounds():
    calls = {"n": 0}

    def b():
        calls["n"] += 1
        if calls["n"] == 1 + 2 * 2 + 1:  # warm-up, two full rounds of 2 iterations, then Ctrl-C in round 3
            raise KeyboardInterrupt

    with pytest.raises(MeasurementInterrupted) as info:
        compare_interleaved({"a": lambda: None, "b": b}, rounds=10, iters_per_round=2, warmup=1)
    part = info.value.partial
    assert part.rounds == 2
    assert part.counts == {"a": 4, "b": 4}  # the unfinished round is dropped: pairs stay like with like


def test_compare_rejects_nothing():
    with pytest.raises(ValueError):
        compare_interleaved({})


def _events():
    def node(name, op, ts, dur):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    return [
        {"cat": "Session", "name": "session_initialization", "ts": 0, "dur": 50},
        node("conv", "Conv", 101, 40), node("relu", "Relu", 142, 10), node("gap", "GlobalAveragePool", 153, 5),
        {"cat": "Session", "name": "model_run", "ts": 100, "dur": 70},
        node("conv", "Conv", 201, 20), node("relu", "Relu", 222, 6), node("gap", "GlobalAveragePool", 229, 2),
        node("conv2", "Conv", 232, 4),
        {"cat": "Session", "name": "model_run", "ts": 200, "dur": 40},
        node("late", "Conv", 900, 1000),  # outside any model_run: ignored
    ]


def test_parse_profile_keeps_last_runs_and_adds_up():
    last = parse_profile(_events(), runs=1)
    assert last.runs == 1
    assert [n["name"] for n in last.nodes] == ["conv", "relu", "gap", "conv2"]
    assert last.by_type == pytest.approx({"Conv": 0.024, "Relu": 0.006, "GlobalAveragePool": 0.002})
    assert list(last.by_type)[0] == "Conv"  # slowest first
    assert last.total_ms == pytest.approx(0.032)
    assert last.run_ms == pytest.approx(0.040)
    both = parse_profile(_events())
    assert both.runs == 2
    assert both.by_type["Conv"] == pytest.approx((0.040 + 0.024) / 2)
    assert both.total_ms == pytest.approx(sum(both.by_type.values()))
    with pytest.raises(ValueError):
        parse_profile([e for e in _events() if e["name"] != "model_run"])


def test_op_times_totals_add_up(tmp_path, monkeypatch):
    path = tiny_onnx(tmp_path / "tiny.onnx")
    monkeypatch.chdir(tmp_path)
    res = op_times(path, threads=1, runs=4, warmup=2, batch=2)
    assert res.runs == 4 and res.threads == 1
    assert res.input_shapes == {"x": [2, 3, 8, 8]}
    assert res.nodes and all(n["op_type"] and n["time_ms"] >= 0 for n in res.nodes)
    assert sum(res.by_type.values()) == pytest.approx(res.total_ms)
    assert sum(n["time_ms"] for n in res.nodes) == pytest.approx(res.total_ms)
    assert 0 < res.total_ms <= res.run_ms  # kernels fit inside the run() calls they were profiled in
    assert "GlobalAveragePool" in res.by_type
    assert res.slowest(1)[0]["time_ms"] == max(n["time_ms"] for n in res.nodes)
    assert sorted(os.listdir(tmp_path)) == ["tiny.onnx"]  # the profiler's trace file is not left behind


def test_compare_timed_records_the_load_of_every_round(monkeypatch):
    monkeypatch.setattr(latency.os, "getloadavg", lambda: (0.25, 0.5, 0.75))
    asked = []

    def timer(ms):
        def run(n):
            asked.append(n)
            return [ms] * n
        return run

    res = latency.compare_timed({"a": timer(2.0), "b": timer(1.0)}, rounds=3, iters_per_round=4, warmup=2)
    assert res.ratio_median["b"] == 0.5 and res.counts == {"a": 12, "b": 12}
    assert res.round_load_1min == [0.25, 0.25, 0.25]
    assert asked == [2, 2] + [4] * 6  # warm-up once per timer, then every round asks each timer for 4 runs


def test_runner_process_times_in_another_process(tmp_path):
    from edgezoo.errors import EdgezooError
    from edgezoo.profile.worker import RunnerProcess

    path = tmp_path / "tiny.onnx"
    path.write_bytes(tiny_onnx().SerializeToString())
    with RunnerProcess() as w:
        assert w._proc.pid != os.getpid()
        info = w.open(str(path), None, threads=1)
        assert info["runtime"] == "onnxruntime" and info["inputs"][0]["name"] == "x"
        w.prepare("b2", batch=2, input_size=None)
        w.prepare("given", feeds={"x": np.zeros((1, 3, 8, 8), np.float32)})
        ms = w.time("b2", 5)
        assert len(ms) == 5 and all(t > 0 for t in ms)
        with pytest.raises(EdgezooError, match="does not fit"):
            w.prepare("bad", feeds={"x": np.zeros((1, 4, 8, 8), np.float32)})
        assert len(w.time("given", 2)) == 2  # an error leaves the worker serving
    with RunnerProcess() as w, pytest.raises(EdgezooError, match="no such file"):
        w.open(str(tmp_path / "missing.onnx"), None)


def test_bench_vs_times_each_model_in_its_own_process_and_says_how_to_reproduce(tmp_path):
    import json

    from conftest import run_edgezoo

    path = tmp_path / "tiny.onnx"
    path.write_bytes(tiny_onnx().SerializeToString())
    out = tmp_path / "vs.json"
    proc = run_edgezoo("bench", str(path), "--vs", str(path), "-t", "1", "--rounds", "2", "--iters-per-round", "2",
                       "--warmup", "1", "--json", str(out), block_torch=True, env={"COLUMNS": "300"})
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(out.read_text())
    assert rep["settings"]["isolation"] == "each model in a process of its own"
    assert len(rep["results"][0]["compare"]["round_load_1min"]) == 2
    line = f"reproduce: {rep['reproduce']}"
    assert line in proc.stdout
    assert rep["reproduce"] == (f"edgezoo bench {path} --vs {path} -t 1 -b 1 --rounds 2 --iters-per-round 2 "
                                "--warmup 1")
