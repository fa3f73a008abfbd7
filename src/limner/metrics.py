"""Prometheus text-format metrics with no dependency: counters, gauges, histograms.

Only what `/metrics` needs: label sets are small and fixed (model, status), so a dict per
metric is enough.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

Labels = tuple[tuple[str, str], ...]

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)


def _labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Counter:
    def __init__(self, name: str, help: str) -> None:
        self.name, self.help = name, help
        self._values: dict[Labels, float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, value in sorted(self._values.items()):
            yield f"{self.name}{_labels(labels)} {value:g}"


class Gauge:
    """A gauge read from a callback at scrape time: one value per label set."""

    def __init__(self, name: str, help: str,
                 read: Callable[[], dict[Labels, float]]) -> None:
        self.name, self.help, self.read = name, help, read

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        for labels, value in sorted(self.read().items()):
            yield f"{self.name}{_labels(labels)} {value:g}"


class Histogram:
    def __init__(self, name: str, help: str,
                 buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self.name, self.help, self.buckets = name, help, buckets
        self._series: dict[Labels, tuple[list[int], list[float]]] = {}
        self._lock = threading.Lock()

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts, total = self._series.setdefault(key, ([0] * len(self.buckets), [0.0, 0.0]))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
            total[0] += value
            total[1] += 1

    def count(self, **labels: str) -> int:
        series = self._series.get(tuple(sorted(labels.items())))
        return int(series[1][1]) if series else 0

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for labels, (counts, (total, count)) in sorted(self._series.items()):
            for bound, bucket_count in zip(self.buckets, counts, strict=True):
                le = 'le="' + f"{bound:g}" + '"'
                yield f"{self.name}_bucket{_labels(labels, le)} {bucket_count}"
            inf = 'le="+Inf"'
            yield f"{self.name}_bucket{_labels(labels, inf)} {int(count)}"
            yield f"{self.name}_sum{_labels(labels)} {total:g}"
            yield f"{self.name}_count{_labels(labels)} {int(count)}"


class Metrics:
    """Everything `/metrics` shows. One instance per app, passed down explicitly."""

    def __init__(self) -> None:
        self.images = Counter("limner_images_total", "Images returned, by model.")
        self.requests = Counter("limner_requests_total",
                                "Generation requests answered, by model and HTTP status.")
        self.batch_images = Histogram("limner_batch_images", "Images per engine batch.",
                                      (1, 2, 4, 8, 16, 32))
        self.queue_seconds = Histogram("limner_queue_seconds",
                                       "Time from admission to the start of its batch.")
        self.step_seconds = Histogram("limner_step_seconds", "Time per denoising step.")
        self.batch_seconds = Histogram("limner_batch_seconds",
                                       "Engine time per batch (steps and decode).")
        self.encode_seconds = Histogram("limner_encode_seconds",
                                        "Time to size and encode one image.")
        self._gauges: list[Gauge] = []

    def add_gauge(self, gauge: Gauge) -> None:
        self._gauges.append(gauge)

    def render(self) -> str:
        lines: list[str] = []
        for gauge in self._gauges:
            lines.extend(gauge.render())
        for counter in (self.requests, self.images):
            lines.extend(counter.render())
        for histogram in (self.batch_images, self.queue_seconds, self.step_seconds,
                          self.batch_seconds, self.encode_seconds):
            lines.extend(histogram.render())
        return "\n".join(lines) + "\n"
