"""What every source is: ``SourceInfo``, the ``Source`` protocol, and the shared chunk bookkeeping.

A source is an iterable of :class:`rfstream.types.Chunk` with an ``info``
record and a thread-safe ``close()``. The helpers here keep the bookkeeping
identical across sources: :class:`ChunkStamper` numbers chunks (``seq`` 0, 1,
2, ...) and stamps ``arrived_ns`` when a chunk is complete; :class:`Pacer`
releases chunks at the sample rate for real-time replay and wakes at once on
``close()``; :func:`zero_nonfinite` counts and zeroes NaN/Inf samples;
:func:`chunk_length` applies the chunk policy (at least one FFT, at most
MAX_CHUNK_SAMPLES); :func:`describe_path` and :func:`read_bounded` name what a
path is when it is not a regular file (a directory, a FIFO, a device, a symlink
loop) instead of hanging on it or calling it missing.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

import numpy as np

from rfstream.errors import InputError
from rfstream.limits import MAX_CHUNK_SAMPLES
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


# The chunk policy (docs/architecture.md, "Sources"): a chunk holds at least ``min_samples``
# (the pipeline passes one FFT, spectrogram.nfft, so every chunk but a stream's tail makes at
# least one whole STFT slice) and at most MAX_CHUNK_SAMPLES (512 MiB of complex64), so neither
# a sample rate of 1 Hz nor one of 1 THz turns a chunk_ms into hours of frames or a huge buffer.


def chunk_length(chunk_ms: float, sample_rate_hz: float, min_samples: int = 1) -> int:
    """Samples per chunk: round(chunk_ms * rate / 1000), at least ``min_samples`` (and 1), at most
    MAX_CHUNK_SAMPLES (a faster stream gets chunks shorter than ``chunk_ms``: a tiny recording
    stamped 1 THz is replayed, not refused; the cost follows the samples, not the metadata).

    InputError when the arguments are not finite and positive.
    """
    if not (
        math.isfinite(chunk_ms) and chunk_ms > 0 and math.isfinite(sample_rate_hz) and sample_rate_hz > 0
    ):
        raise InputError(
            f"a chunk needs a positive chunk_ms and sample rate, got {chunk_ms!r} ms at {sample_rate_hz!r} Hz"
        )
    return min(MAX_CHUNK_SAMPLES, max(1, int(min_samples), round(chunk_ms * sample_rate_hz / 1000.0)))


def zero_nonfinite(iq: np.ndarray) -> int:
    """Zero NaN/Inf samples in place; return how many there were."""
    bad = ~np.isfinite(iq)
    count = int(np.count_nonzero(bad))
    if count:
        iq[bad] = 0
    return count


def utc_plus(t0: datetime | None, samples: int, sample_rate_hz: float) -> datetime | None:
    """``t0`` advanced by a number of samples; None where ``t0`` is unknown or the result would
    fall outside the calendar (a recording dated 9999-12-31 replayed in a loop)."""
    if t0 is None:
        return None
    try:
        return t0 + timedelta(seconds=samples / sample_rate_hz)
    except (OverflowError, ValueError):
        return None


def describe_path(path: str | os.PathLike[str]) -> tuple[os.stat_result | None, str]:
    """``(stat, "")`` for a regular file, else ``(None, what the path is instead)``.

    The words name the thing ("is a directory", "is a FIFO (named pipe)", "is a symbolic link
    loop"), not just "does not exist", so a user knows what to fix.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None, "is a broken symbolic link" if os.path.islink(path) else "does not exist"
    except ValueError:  # an embedded NUL byte
        return None, "is not a valid path"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "is a symbolic link loop"
        if exc.errno == errno.ENAMETOOLONG:
            return None, "is a path too long for this system"
        if exc.errno == errno.ENOTDIR:
            return None, "does not exist (a part of the path is not a directory)"
        return None, f"cannot be read: {exc.strerror or exc}"
    mode = st.st_mode
    for test, words in (
        (stat.S_ISDIR, "is a directory, not a file"),
        (stat.S_ISFIFO, "is a FIFO (named pipe), not a file"),
        (stat.S_ISCHR, "is a character device, not a file"),
        (stat.S_ISBLK, "is a block device, not a file"),
        (stat.S_ISSOCK, "is a socket, not a file"),
    ):
        if test(mode):
            return None, words
    if not stat.S_ISREG(mode):
        return None, "is not a regular file"
    return st, ""


def regular_file_size(path: str | os.PathLike[str], what: str) -> int:
    """The size of a regular file, or InputError saying what ``path`` is instead (``what``: "data file")."""
    st, problem = describe_path(path)
    if st is None:
        raise InputError(f"{what} {shown_path(path)} {problem}")
    return st.st_size


def read_bounded(path: str | os.PathLike[str], what: str, limit_bytes: int) -> bytes:
    """The bytes of a small regular file, refusing FIFOs, devices and files over ``limit_bytes``.

    Opened non-blocking and checked on the open descriptor, so a FIFO (or /dev/zero) is
    refused at once instead of blocking or reading forever.
    """
    name = shown_path(path)
    _, problem = describe_path(path)
    if problem:
        raise InputError(f"{what} {name} {problem}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(f"{what} {name} cannot be read: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):  # swapped since the check above
            raise InputError(f"{what} {name} is not a regular file")
        if st.st_size > limit_bytes:
            raise InputError(f"{what} {name} is {st.st_size} bytes, more than the {limit_bytes} allowed")
        try:
            data = f.read(limit_bytes + 1)
        except OSError as exc:
            raise InputError(f"{what} {name} cannot be read: {exc.strerror or exc}") from exc
    if len(data) > limit_bytes:
        raise InputError(f"{what} {name} is more than the {limit_bytes} bytes allowed")
    return data


def shown_path(path: str | os.PathLike[str], limit: int = 160) -> str:
    """A path for a message: whole when short, else its start and its end (the file's name)."""
    text = os.fspath(path)
    if isinstance(text, bytes):  # pragma: no cover - rfstream passes str paths
        text = os.fsdecode(text)
    return text if len(text) <= limit else f"{text[: limit // 3]}...{text[-(limit // 2) :]}"


def show(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages about hostile input."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for repr (sys.get_int_max_str_digits)
        return "<an integer too long to print>"
    return text if len(text) <= limit else f"{text[: limit - 15]}... ({len(text)} chars)"


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
