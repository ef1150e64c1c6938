"""Prometheus text-format metrics, without a client library: counters, a gauge callback and histograms.

Small on purpose: the server needs a handful of series, and one more dependency on a device is a cost.
Format: https://prometheus.io/docs/instrumenting/exposition_formats/ (text format 0.0.4).
"""

from __future__ import annotations

import bisect
import threading
from typing import Callable, Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(x: float) -> str:
    return repr(float(x)) if x != int(x) else str(int(x))


class Counter:
    def __init__(self, name: str, help: str, labelnames: tuple[str, ...] = ()):
        self.name, self.help, self.labelnames = name, help, labelnames
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, *labels: str, by: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + by

    def get(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        with self._lock:
            items = sorted(self._values.items())
        for labels, v in items:
            yield f"{self.name}{_labels(self.labelnames, labels)} {_num(v)}"


class Gauge:
    """Read at scrape time from a callback returning {label values: value}."""

    def __init__(self, name: str, help: str, labelnames: tuple[str, ...], read: Callable[[], dict]):
        self.name, self.help, self.labelnames, self.read = name, help, labelnames, read

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        for labels, v in sorted(self.read().items()):
            yield f"{self.name}{_labels(self.labelnames, labels)} {_num(v)}"


class Histogram:
    def __init__(self, name: str, help: str, labelnames: tuple[str, ...], buckets: tuple[float, ...]):
        self.name, self.help, self.labelnames = name, help, labelnames
        self.buckets = tuple(sorted(buckets))
        self._data: dict[tuple[str, ...], list] = {}  # labels -> [bucket counts..., sum, count]
        self._lock = threading.Lock()

    def observe(self, value: float, *labels: str) -> None:
        i = bisect.bisect_left(self.buckets, value)
        with self._lock:
            d = self._data.setdefault(labels, [0] * len(self.buckets) + [0.0, 0])
            if i < len(self.buckets):
                d[i] += 1
            d[-2] += value
            d[-1] += 1

    def count(self, *labels: str) -> int:
        d = self._data.get(labels)
        return d[-1] if d else 0

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._data.items())
        for labels, d in items:
            cumulative = 0
            for b, n in zip(self.buckets, d):
                cumulative += n
                le = _labels(self.labelnames, labels, 'le="%s"' % _num(b))
                yield f"{self.name}_bucket{le} {cumulative}"
            le = _labels(self.labelnames, labels, 'le="+Inf"')
            yield f"{self.name}_bucket{le} {d[-1]}"
            yield f"{self.name}_sum{_labels(self.labelnames, labels)} {_num(d[-2])}"
            yield f"{self.name}_count{_labels(self.labelnames, labels)} {d[-1]}"


class ServerMetrics:
    """The series the server exports. ``queue_depths`` is called at scrape time."""

    def __init__(self, queue_depths: Callable[[], dict[str, int]] = dict, work_depth: Callable[[], int] = lambda: 0):
        self.requests = Counter("edgezoo_requests_total", "HTTP requests answered, by model, route and status code.",
                                ("model", "route", "code"))
        self.errors = Counter("edgezoo_request_errors_total",
                              "Requests answered with an error (4xx/5xx), by model and reason; with model=\"\" "
                              "also connections refused before a request (header_timeout, header_too_large, "
                              "bad_http, too_many_sockets).", ("model", "reason"))
        self.latency = Histogram("edgezoo_request_duration_seconds",
                                 "Time from request start to response, predict route, by model.", ("model",),
                                 LATENCY_BUCKETS)
        self.batch_size = Histogram("edgezoo_batch_size", "Rows per onnxruntime run, by model.", ("model",),
                                    BATCH_BUCKETS)
        self.inference = Histogram("edgezoo_inference_seconds", "Duration of one onnxruntime run, by model.",
                                   ("model",), LATENCY_BUCKETS)
        self.queue = Gauge("edgezoo_queue_depth", "Requests waiting for a batch, by model.", ("model",),
                           lambda: {(k,): v for k, v in queue_depths().items()})
        self.work_queue = Gauge("edgezoo_work_queue_depth",
                                "Parse and decode jobs waiting for a work thread or running.", (),
                                lambda: {(): work_depth()})

    def render(self) -> str:
        lines: list[str] = []
        for m in (self.requests, self.errors, self.latency, self.batch_size, self.inference, self.queue, self.work_queue):
            lines.extend(m.render())
        return "\n".join(lines) + "\n"


def parse_prometheus(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` from text format (for tests and the benchmark)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out
