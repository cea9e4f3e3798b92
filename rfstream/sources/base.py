"""What every source is: ``SourceInfo``, the ``Source`` protocol, and the shared chunk bookkeeping.

A source is an iterable of :class:`rfstream.types.Chunk` with an ``info``
record and a thread-safe ``close()``. The helpers here keep the bookkeeping
identical across sources: :class:`ChunkStamper` numbers chunks (``seq`` 0, 1,
2, ...) and stamps ``arrived_ns`` when a chunk is complete; :class:`Pacer`
releases chunks at the sample rate for real-time replay and wakes at once on
``close()``; :func:`zero_nonfinite` counts and zeroes NaN/Inf samples.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

import numpy as np

from rfstream.types import Chunk


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What a source knows about its stream before the first chunk."""

    sample_rate_hz: float
    center_freq_hz: float  # of the first chunk; a chunk carries its own
    description: str
    total_samples: int | None  # samples one pass delivers (sum of chunk lengths); None: endless
    start_time_utc: datetime | None  # UTC of the first sample, where known


@runtime_checkable
class Source(Protocol):
    """A stream of Chunks. ``close()`` may be called from another thread; iteration then ends promptly."""

    info: SourceInfo

    def __iter__(self) -> Iterator[Chunk]: ...

    def close(self) -> None: ...


@runtime_checkable
class SourceWithStats(Protocol):
    """A source that keeps its own counters (an SDR: overflows, timeouts, reopens); health shows them."""

    def stats(self) -> dict[str, int]: ...


@runtime_checkable
class LiveDevice(Protocol):
    """A source backed by a device that can be lost and reopened; health and the watchdog read its state."""

    @property
    def device_state(self) -> str: ...


def chunk_length(chunk_ms: float, sample_rate_hz: float) -> int:
    """Samples per chunk: round(chunk_ms * rate / 1000), at least 1."""
    return max(1, round(chunk_ms * sample_rate_hz / 1000.0))


def zero_nonfinite(iq: np.ndarray) -> int:
    """Zero NaN/Inf samples in place; return how many there were."""
    bad = ~np.isfinite(iq)
    count = int(np.count_nonzero(bad))
    if count:
        iq[bad] = 0
    return count


def utc_plus(t0: datetime | None, samples: int, sample_rate_hz: float) -> datetime | None:
    """``t0`` advanced by a number of samples, or None where ``t0`` is unknown."""
    if t0 is None:
        return None
    return t0 + timedelta(seconds=samples / sample_rate_hz)


class ChunkStamper:
    """Builds Chunks with exact bookkeeping: seq 0, 1, 2, ... and arrived_ns at completion."""

    __slots__ = ("_seq", "sample_rate_hz")

    def __init__(self, sample_rate_hz: float) -> None:
        self.sample_rate_hz = float(sample_rate_hz)
        self._seq = 0

    def stamp(
        self,
        iq: np.ndarray,
        *,
        start_sample: int,
        center_freq_hz: float,
        start_time_utc: datetime | None = None,
        gap_before_samples: int = 0,
        nonfinite_samples: int = 0,
    ) -> Chunk:
        chunk = Chunk(
            iq=iq,
            sample_rate_hz=self.sample_rate_hz,
            center_freq_hz=float(center_freq_hz),
            start_sample=int(start_sample),
            seq=self._seq,
            arrived_ns=time.monotonic_ns(),
            start_time_utc=start_time_utc,
            gap_before_samples=int(gap_before_samples),
            nonfinite_samples=int(nonfinite_samples),
        )
        self._seq += 1
        return chunk


class Pacer:
    """Releases chunks no earlier than a live receiver would have delivered them.

    ``wait(samples)`` sleeps until ``samples`` samples' worth of time has passed
    since the first call, and returns False at once when ``closed`` is set.
    Pacing counts delivered samples only: a gap of hours in a recording is not
    replayed as hours of silence.
    """

    __slots__ = ("_closed", "_rate", "_t0")

    def __init__(self, sample_rate_hz: float, closed: threading.Event) -> None:
        self._rate = float(sample_rate_hz)
        self._closed = closed
        self._t0: float | None = None

    def wait(self, samples_delivered: int) -> bool:
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        delay = self._t0 + samples_delivered / self._rate - now
        if delay > 0:
            return not self._closed.wait(delay)
        return not self._closed.is_set()
