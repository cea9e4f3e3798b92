"""Counters and latency percentiles for every stage; the source of the ``health`` topic.

Latencies keep a bounded window (the last ``window`` samples per series), so
percentiles follow the current load and memory stays flat over weeks; each
series also keeps cumulative counts in fixed buckets (``LATENCY_BUCKETS_MS``),
which the Prometheus endpoint exports as histograms.

Sample accounting is kept atomically: a chunk's samples are *in flight* from
the moment it arrives until it is processed or shed, so any health snapshot
satisfies ``received == processed + shed + in_flight`` exactly, and at the end
of a run ``in_flight`` is 0.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

# Upper bounds (ms) of the cumulative latency buckets; the last bucket is +Inf.
LATENCY_BUCKETS_MS = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 5000.0)

SHED_REASONS = ("queue", "deadline", "degrade", "shutdown")


class LatencySeries:
    """A bounded window of latencies in milliseconds, plus cumulative bucket counts."""

    __slots__ = ("_values", "buckets", "count", "total_ms")

    def __init__(self, window: int = 1024):
        self._values: deque[float] = deque(maxlen=window)
        self.count = 0
        self.total_ms = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)  # per bucket, not cumulative

    def add(self, ms: float) -> None:
        self._values.append(ms)
        self.count += 1
        self.total_ms += ms
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS_MS, ms)] += 1

    def histogram(self) -> tuple[list[tuple[str, int]], float, int]:
        """(cumulative ``(le, count)`` pairs ending with ``+Inf``, sum in ms, count) — Prometheus' shape."""
        out, running = [], 0
        for bound, n in zip((*LATENCY_BUCKETS_MS, float("inf")), self.buckets, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else f"{bound:g}", running))
        return out, self.total_ms, self.count

    def percentiles(self, qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
        if not self._values:
            return {f"p{int(q)}": 0.0 for q in qs}
        values = np.percentile(np.fromiter(self._values, dtype=np.float64), qs)
        return {f"p{int(q)}": round(float(v), 3) for q, v in zip(qs, values, strict=True)}


class Metrics:
    """Every figure the daemon reports: counters, latencies, sample accounting."""

    COUNTERS = (
        "chunks_received",
        "chunks_processed",
        "chunks_on_time",
        "chunks_late",
        "chunks_shed",
        "samples_received",
        "samples_processed",
        "samples_shed",
        "samples_lost_overflow",
        "nonfinite_samples",
        "samples_in_flight",
        "detections",
        "detector_errors",
        "degrade_steps_up",
        "degrade_steps_down",
        "spectrogram_skipped",
        "reloads",
        "reload_failures",
        *(f"chunks_shed_{reason}" for reason in SHED_REASONS),
    )

    def __init__(self, window: int = 1024):
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.counters: dict[str, int] = dict.fromkeys(self.COUNTERS, 0)
        self.stages: dict[str, LatencySeries] = {}
        self.detectors: dict[str, LatencySeries] = {}
        self._window = window
        self.stage_cpu_s: dict[str, float] = {}  # CPU seconds of each stage's own thread
        self.stream_seconds = 0.0  # seconds of signal processed
        self.busy_seconds = 0.0  # wall seconds spent processing them
        self.degrade_level = 0
        self.device_state = "streaming"
        self.device_state_fn: Callable[[], str] | None = None  # a live source's own state, when it has one
        self.queue_depths: dict[str, Callable[[], int]] = {}
        self.extra: dict[str, Callable[[], Any]] = {}  # e.g. publisher stats

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def arrived(self, samples: int, gap_samples: int = 0) -> None:
        """A chunk reached the pipeline: its samples are in flight until processed or shed."""
        with self._lock:
            c = self.counters
            c["chunks_received"] += 1
            c["samples_received"] += samples
            c["samples_in_flight"] += samples
            c["samples_lost_overflow"] += gap_samples

    def settled(self, samples: int, *, shed_reason: str | None = None) -> None:
        """A chunk left flight: processed (``shed_reason`` None) or shed for that reason."""
        with self._lock:
            c = self.counters
            c["samples_in_flight"] -= samples
            if shed_reason is None:
                c["chunks_processed"] += 1
                c["samples_processed"] += samples
            else:
                c["chunks_shed"] += 1
                c[f"chunks_shed_{shed_reason}"] += 1
                c["samples_shed"] += samples

    def latency_histograms(self) -> dict[str, dict[str, tuple[list[tuple[str, int]], float, int]]]:
        """``{"stage": {name: histogram}, "detector": {name: histogram}}`` (see LatencySeries.histogram)."""
        with self._lock:
            return {
                "stage": {n: s.histogram() for n, s in self.stages.items()},
                "detector": {n: s.histogram() for n, s in self.detectors.items()},
            }

    def stage(self, name: str, ms: float) -> None:
        with self._lock:
            series = self.stages.get(name) or self.stages.setdefault(name, LatencySeries(self._window))
            series.add(ms)

    def detector(self, name: str, ms: float) -> None:
        with self._lock:
            series = self.detectors.get(name) or self.detectors.setdefault(name, LatencySeries(self._window))
            series.add(ms)

    def cpu(self, name: str, seconds: float) -> None:
        """CPU time a stage's thread spent on one chunk (``time.thread_time`` deltas)."""
        with self._lock:
            self.stage_cpu_s[name] = self.stage_cpu_s.get(name, 0.0) + seconds

    def processed(self, stream_s: float, busy_s: float) -> None:
        with self._lock:
            self.stream_seconds += stream_s
            self.busy_seconds += busy_s

    @property
    def realtime_factor(self) -> float:
        """Seconds of signal processed per second of processing (> 1 keeps up)."""
        return self.stream_seconds / self.busy_seconds if self.busy_seconds else 0.0

    def health(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The ``health`` payload (see docs/protocol.md); ``v`` is added by the publisher."""
        with self._lock:
            c = dict(self.counters)
            cpu = {name: round(v, 3) for name, v in self.stage_cpu_s.items()}
            latency = {name: s.percentiles() for name, s in self.stages.items()}
            detectors = {
                name: {"p50_ms": p["p50"], "p95_ms": p["p95"], "p99_ms": p["p99"]}
                for name, p in ((n, s.percentiles()) for n, s in self.detectors.items())
            }
        out: dict[str, Any] = {
            "uptime_s": round(time.monotonic() - self.started, 3),
            "chunks": {
                "received": c["chunks_received"],
                "processed": c["chunks_processed"],
                "on_time": c["chunks_on_time"],
                "late": c["chunks_late"],
                "shed": c["chunks_shed"],
                "shed_by_reason": {r: c[f"chunks_shed_{r}"] for r in SHED_REASONS},
            },
            "samples": {
                "received": c["samples_received"],
                "processed": c["samples_processed"],
                "shed": c["samples_shed"],
                "in_flight": c["samples_in_flight"],
                "lost_overflow": c["samples_lost_overflow"],
            },
            "nonfinite_samples": c["nonfinite_samples"],
            "detections": c["detections"],
            "detector_errors": c["detector_errors"],
            "queue_depths": {name: fn() for name, fn in self.queue_depths.items()},
            "latency_ms": latency,
            "realtime_factor": round(self.realtime_factor, 3),
            "stage_cpu_s": cpu,
            "degrade_level": self.degrade_level,
            "degrade": {
                "level": self.degrade_level,
                "steps_up": c["degrade_steps_up"],
                "steps_down": c["degrade_steps_down"],
                "spectrogram_skipped": c["spectrogram_skipped"],
            },
            "reloads": {"applied": c["reloads"], "failed": c["reload_failures"]},
            "detectors": detectors,
            "device_state": self.device_state_fn() if self.device_state_fn is not None else self.device_state,
        }
        for name, fn in self.extra.items():
            out[name] = fn()
        if extra:
            out.update(extra)
        return out
