"""Large shedding is a warning that names its cause, never a silent counter.

A live run sheds chunks it cannot process in time (a full queue, a missed deadline, degrade
level 3), and an SDR reader sheds samples when processing falls behind. A little of that is
the design working; a lot means the configured work does not fit the machine at this sample
rate, and the operator must hear it in the log, with what to do about it.

:class:`ShedWatch` compares counters at the end of each window (``window_s``) and warns when more
than ``threshold`` of that window's chunks (or of the reader's samples) were shed. Chunks shed
at shutdown are the stop working as documented and do not count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from rfstream.runtime.metrics import Metrics

__all__ = ["ShedWatch"]

log = structlog.get_logger(__name__)

_CAUSE_REASONS = ("queue", "deadline", "degrade")  # "shutdown" is a stop, not a cause
HINT = (
    "run fewer detectors (enabled = false in [[detectors]]), a smaller spectrogram or a lower "
    "sample rate, and see what this machine sustains with `rfstream bench`"
)


class ShedWatch:
    """Warns once per window in which more than ``threshold`` of the stream was shed. See the module doc."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        chunk_ms: float,
        window_s: float = 10.0,
        threshold: float = 0.01,
        detectors: Callable[[], list[str]] = list,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._chunk_ms = chunk_ms
        self.window_s = window_s
        self.threshold = threshold
        self._detectors = detectors
        self._clock = clock
        self._start = self._snapshot()
        self._window_start = self._start
        self._window_t0 = clock()
        self.warnings = 0

    def _snapshot(self) -> dict[str, int]:
        c = self._metrics.counters
        out = {"processed": c["chunks_processed"]}
        out.update({r: c[f"chunks_shed_{r}"] for r in _CAUSE_REASONS})
        stats = self._metrics.extra.get("source")
        src = stats() if stats is not None else {}
        out["reader_received"] = int(src.get("samples_received", 0) or 0)
        out["reader_shed"] = int(src.get("samples_shed", 0) or 0)
        return out

    def check(self) -> dict[str, Any] | None:
        """At the end of a window: warn if it shed too much; the warning's fields, else None."""
        now = self._clock()
        if now - self._window_t0 < self.window_s:
            return None
        then, self._window_start = self._window_start, self._snapshot()
        seconds, self._window_t0 = now - self._window_t0, now
        return self._judge(then, self._window_start, seconds, "shedding")

    def final(self) -> dict[str, Any] | None:
        """At the end of the run, over the whole run (a short run has no full window)."""
        return self._judge(self._start, self._snapshot(), None, "shed over the run")

    def _judge(
        self, before: dict[str, int], after: dict[str, int], seconds: float | None, event: str
    ) -> dict[str, Any] | None:
        d = {k: after[k] - before[k] for k in after}
        shed = {r: d[r] for r in _CAUSE_REASONS if d[r]}
        chunks = d["processed"] + sum(shed.values())
        chunk_share = sum(shed.values()) / chunks if chunks else 0.0
        reader_share = d["reader_shed"] / d["reader_received"] if d["reader_received"] > 0 else 0.0
        if max(chunk_share, reader_share) <= self.threshold:
            return None
        total = self._metrics.stages.get("total")
        p95 = total.percentiles((95,))["p95"] if total is not None else 0.0
        fields: dict[str, Any] = {
            "shed_percent": round(100 * chunk_share, 1),
            "chunks_shed": sum(shed.values()),
            "chunks": chunks,
            "reasons": shed,
        }
        if seconds is not None:
            fields["window_s"] = round(seconds, 1)
        if d["reader_received"]:
            fields["reader_shed_percent"] = round(100 * reader_share, 1)
        pace = "slower than real time" if p95 > self._chunk_ms else "behind real time at times"
        fields["cause"] = (
            f"detectors too slow: processing is {pace} (p95 {p95:.0f} ms per {self._chunk_ms:g} ms "
            f"chunk with detectors {', '.join(self._detectors()) or '(none)'})"
        )
        fields["hint"] = HINT
        self.warnings += 1
        log.warning(event, **fields)
        return fields
