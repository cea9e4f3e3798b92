"""Raw IQ files, memory-mapped, and the replay engine the SigMF source shares.

Raw files are what receivers' own tools write: no header, interleaved I/Q.
The datatype comes from ``--datatype`` or, failing that, the extension:

    =====================================  ===========  ===========================
    extension                              datatype     written by
    =====================================  ===========  ===========================
    .cu8 .u8                               cu8          rtl_sdr
    .cs8 .s8 .ci8                          ci8          hackrf_transfer
    .cs16 .s16 .ci16 .sc16                 ci16_le      SoapySDR / bladeRF / USRP tools
    .cf32 .fc32 .cfile .complex            cf32_le      GNU Radio file sink
    .cf64 .fc64                            cf64_le      GNU Radio (double)
    =====================================  ===========  ===========================

Every complex SigMF datatype (cf32/cf64/ci32/ci16/ci8/cu32/cu16/cu8, ``_le`` and
``_be``) becomes complex64 with this scaling:

- floats: as stored (cf64 is rounded to complex64);
- signed integers of b bits: ``x / 2**(b-1)`` (ci8: x/128, ci16: x/32768), as the
  sigmf library's autoscale does;
- unsigned integers of b bits: ``(x - m) / m`` with ``m = 2**(b-1) - 0.5``
  (cu8: ``(x - 127.5) / 127.5``), the RTL-SDR convention: the code midpoint
  127.5 is zero, so the 8-bit quantisation adds no DC offset of its own and
  full scale is exactly ±1.

Real-valued datatypes (``rf32_le``, ...) are refused: rfstream needs complex IQ.

Replay reads chunk by chunk from a memory map, so files larger than memory
stream without being loaded. NaN/Inf samples (floats only) are counted in
``Chunk.nonfinite_samples`` and zeroed; the run goes on.

Stream positions: ``Chunk.start_sample`` counts every sample since the stream
began, including samples not delivered (a ``core:global_index`` jump, samples
before the first capture, captures not selected). ``gap_before_samples`` is
the distance from the end of the previous chunk (from 0 for the first one), so
``start_sample == sum(previous lengths) + sum(gaps up to and including this chunk)``
always holds. ``loop=True`` replays with positions still increasing.
"""

from __future__ import annotations

import io
import math
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np
import structlog

from rfstream.errors import InputError
from rfstream.limits import MAX_ABS_FREQ_HZ, MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ
from rfstream.sources.base import (
    ChunkStamper,
    Pacer,
    SourceInfo,
    chunk_length,
    regular_file_size,
    show,
    shown_path,
    utc_plus,
    zero_nonfinite,
)
from rfstream.types import Chunk

log = structlog.get_logger(__name__)

EXTENSION_DATATYPES: dict[str, str] = {
    ".cu8": "cu8",
    ".u8": "cu8",
    ".cs8": "ci8",
    ".s8": "ci8",
    ".ci8": "ci8",
    ".cs16": "ci16_le",
    ".s16": "ci16_le",
    ".ci16": "ci16_le",
    ".sc16": "ci16_le",
    ".cf32": "cf32_le",
    ".fc32": "cf32_le",
    ".cfile": "cf32_le",
    ".complex": "cf32_le",
    ".cf64": "cf64_le",
    ".fc64": "cf64_le",
}

_DATATYPE_RE = re.compile(r"^(?P<kind>[cr])(?P<fmt>[fiu])(?P<bits>8|16|32|64)(?:_(?P<endian>le|be))?$")
_COMPLEX_TYPES = "cf32 cf64 ci32 ci16 ci8 cu32 cu16 cu8"


@dataclass(frozen=True, slots=True)
class SampleFormat:
    """How one complex sample is stored, and how it becomes complex64."""

    datatype: str  # as given, lower case
    map_dtype: np.dtype  # element of the map: a complex float, or one integer component
    sample_bytes: int  # bytes per complex sample (one channel)
    is_float: bool
    center: float  # subtracted before scaling (unsigned integers)
    scale: float  # multiplied after centring


def parse_datatype(datatype: str, *, where: str = "") -> SampleFormat:
    """A SigMF datatype string -> SampleFormat, or InputError naming the problem."""
    prefix = f"{where}: " if where else ""
    dt = datatype.strip().lower()
    m = _DATATYPE_RE.match(dt)
    if (
        m is None
        or (m["fmt"] == "f" and m["bits"] not in ("32", "64"))
        or (m["fmt"] in "iu" and m["bits"] == "64")
    ):
        raise InputError(
            f"{prefix}unknown datatype {show(datatype)}; expected one of {_COMPLEX_TYPES} (with _le or _be)"
        )
    if m["kind"] == "r":
        raise InputError(f"{prefix}real-valued datatype {dt} is not supported; rfstream needs complex IQ")
    bits = int(m["bits"])
    if bits > 8 and m["endian"] is None:
        raise InputError(f"{prefix}datatype {dt} needs a byte order: {dt}_le or {dt}_be")
    order = ">" if m["endian"] == "be" else "<"
    if m["fmt"] == "f":
        return SampleFormat(dt, np.dtype(f"{order}c{bits // 4}"), bits // 4, True, 0.0, 1.0)
    half = float(2 ** (bits - 1))
    if m["fmt"] == "u":
        return SampleFormat(
            dt, np.dtype(f"{order}u{bits // 8}"), bits // 4, False, half - 0.5, 1.0 / (half - 0.5)
        )
    return SampleFormat(dt, np.dtype(f"{order}i{bits // 8}"), bits // 4, False, 0.0, 1.0 / half)


def datatype_from_extension(path: str | Path) -> str | None:
    return EXTENSION_DATATYPES.get(Path(path).suffix.lower())


def map_samples(
    fmt: SampleFormat,
    num_channels: int,
    *,
    path: Path | BinaryIO | None = None,
    buffer: io.BytesIO | None = None,
    offset: int = 0,
    nbytes: int,
    name: str,
) -> np.ndarray:
    """Memory-map whole samples: shape (N, channels) of complex floats or (N, channels, 2) of integers.

    ``path`` is a file name or an open binary file (a decompressed archive member). A trailing
    partial sample is left out with a warning.
    """
    frame_bytes = fmt.sample_bytes * num_channels
    n, partial = divmod(max(0, nbytes), frame_bytes)
    if partial:
        log.warning(
            "ignoring trailing partial sample", file=name, partial_bytes=partial, frame_bytes=frame_bytes
        )
    if n == 0:
        raise InputError(f"{name}: data file holds no complete sample ({nbytes} bytes)")
    count = n * num_channels * (1 if fmt.is_float else 2)
    try:
        if path is not None:
            flat = np.memmap(path, dtype=fmt.map_dtype, mode="r", offset=offset, shape=(count,))
        elif buffer is not None:
            flat = np.frombuffer(buffer.getbuffer(), dtype=fmt.map_dtype, count=count, offset=offset)
        else:  # pragma: no cover - callers pass one of them
            raise ValueError("map_samples needs a path or a buffer")
    except (OSError, ValueError) as exc:
        raise InputError(f"{name}: cannot map the data file: {exc}") from exc
    return flat.reshape((n, num_channels) if fmt.is_float else (n, num_channels, 2))


def make_decoder(fmt: SampleFormat, channel: int) -> Callable[[np.ndarray, int, int], tuple[np.ndarray, int]]:
    """Build the per-chunk decoder ``(mapped, start, stop) -> (complex64 copy, nonfinite count)``.

    Specialised once per source: floats check for NaN/Inf, integers cannot hold them.
    """
    if fmt.is_float:

        def decode_float(mapped: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, int]:
            iq = np.asarray(mapped[start:stop, channel]).astype(np.complex64)
            return iq, zero_nonfinite(iq)

        return decode_float

    center, scale = np.float32(fmt.center), np.float32(fmt.scale)

    def decode_int(mapped: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, int]:
        parts = np.asarray(mapped[start:stop, channel]).astype(np.float32)  # (n, 2), contiguous
        if center:
            parts -= center
        parts *= scale
        return parts.view(np.complex64).reshape(-1), 0

    return decode_int


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of samples replayed with one centre frequency (a SigMF capture, or a whole raw file)."""

    first: int  # first sample, as a position in the data
    stop: int  # one past the last
    stream_start: int  # stream position of ``first`` (data position plus gaps so far)
    center_freq_hz: float
    start_time_utc: datetime | None  # UTC of ``first``


def coalesce(
    segments: Sequence[Segment], min_samples: int, sample_rate_hz: float
) -> tuple[list[Segment], int]:
    """Join segments shorter than ``min_samples`` to a neighbour; returns ``(segments, joined)``.

    A short segment joins the one before it (whose frequency and clock the joined samples
    then carry); a short first segment joins the one after it, which keeps its own. So a
    recording of 100 000 four-sample captures costs what one capture of the same samples
    costs, not 100 000 frames. Only segments adjacent in the data are joined.
    """
    out: list[Segment] = []
    joined = 0
    for seg in segments:
        prev = out[-1] if out else None
        if prev is not None and prev.stop == seg.first:
            if seg.stop - seg.first < min_samples:
                out[-1] = Segment(
                    prev.first, seg.stop, prev.stream_start, prev.center_freq_hz, prev.start_time_utc
                )
                joined += 1
                continue
            if prev.stop - prev.first < min_samples:
                n = prev.stop - prev.first
                out[-1] = Segment(
                    prev.first,
                    seg.stop,
                    max(0, seg.stream_start - n),
                    seg.center_freq_hz,
                    utc_plus(seg.start_time_utc, -n, sample_rate_hz),
                )
                joined += 1
                continue
        out.append(seg)
    return out, joined


class MappedReplay:
    """Cuts memory-mapped segments into Chunks; the engine of RawSource and SigMFSource.

    The chunk policy (docs/architecture.md, "Sources"): chunks of ``chunk_ms`` but never fewer
    than ``min_chunk_samples`` (the pipeline passes spectrogram.nfft): a segment's short
    remainder is added to its last chunk, and segments shorter than that are joined to a
    neighbour (:func:`coalesce`). Only a stream shorter than ``min_chunk_samples`` gives a
    shorter chunk.
    """

    def __init__(
        self,
        mapped: np.ndarray,
        fmt: SampleFormat,
        *,
        channel: int,
        segments: Sequence[Segment],
        sample_rate_hz: float,
        chunk_ms: float,
        realtime: bool,
        loop: bool,
        name: str,
        min_chunk_samples: int = 1,
    ) -> None:
        num_channels = mapped.shape[1]
        if not 0 <= channel < num_channels:
            raise InputError(f"{name}: channel {channel} does not exist (the recording has {num_channels})")
        segs = [s for s in segments if s.stop > s.first]
        if not segs:
            raise InputError(f"{name}: no samples to replay")
        try:
            self._chunk_len = chunk_length(chunk_ms, sample_rate_hz, min_chunk_samples)
        except InputError as exc:
            raise InputError(f"{name}: {exc}") from exc
        self._min_chunk = max(1, int(min_chunk_samples))
        segs, joined = coalesce(segs, self._min_chunk, sample_rate_hz)
        if joined:
            log.warning(
                "captures shorter than one chunk's minimum were joined to their neighbours",
                file=name,
                joined=joined,
                min_samples=self._min_chunk,
            )
        self._mapped = mapped
        self._decode = make_decoder(fmt, channel)
        self._segments = tuple(segs)
        self._rate = float(sample_rate_hz)
        self._realtime = realtime
        self._loop = loop
        # Each pass of a loop occupies the stream up to the end of the last segment.
        self._pass_len = segs[-1].stream_start + (segs[-1].stop - segs[-1].first)
        self.samples_per_pass = sum(s.stop - s.first for s in segs)
        self.closed = threading.Event()

    @property
    def first_segment(self) -> Segment:
        return self._segments[0]

    def __iter__(self) -> Iterator[Chunk]:
        stamper = ChunkStamper(self._rate)
        pacer = Pacer(self._rate, self.closed) if self._realtime else None
        delivered = 0
        stream_end = 0  # stream position one past the previous chunk
        pass_offset = 0
        chunk_len, min_len = self._chunk_len, self._min_chunk
        while not self.closed.is_set():
            for seg in self._segments:
                first = seg.first
                while first < seg.stop:
                    if self.closed.is_set():
                        return
                    stop = min(first + chunk_len, seg.stop)
                    if seg.stop - stop < min_len:
                        stop = seg.stop  # no chunk shorter than the minimum: the remainder joins this one
                    iq, nonfinite = self._decode(self._mapped, first, stop)
                    delivered += stop - first
                    if pacer is not None and not pacer.wait(delivered):
                        return
                    start = pass_offset + seg.stream_start + (first - seg.first)
                    yield stamper.stamp(
                        iq,
                        start_sample=start,
                        center_freq_hz=seg.center_freq_hz,
                        start_time_utc=utc_plus(seg.start_time_utc, first - seg.first, self._rate),
                        gap_before_samples=start - stream_end,
                        nonfinite_samples=nonfinite,
                    )
                    stream_end = start + (stop - first)
                    first = stop
            if not self._loop:
                return
            pass_offset += self._pass_len

    def close(self) -> None:
        self.closed.set()


def _file_size(path: Path, name: str) -> int:
    size = regular_file_size(path, f"{name}: data file")
    if size == 0:
        raise InputError(f"{name}: data file {path} is empty")
    return size


class RawSource:
    """A headerless interleaved-IQ file (rtl_sdr, hackrf_transfer, GNU Radio), memory-mapped."""

    def __init__(
        self,
        path: str | Path,
        *,
        datatype: str = "",
        sample_rate_hz: float,
        center_freq_hz: float = 0.0,
        chunk_ms: float = 200.0,
        realtime: bool = False,
        loop: bool = False,
        num_channels: int = 1,
        channel: int = 0,
        min_chunk_samples: int = 1,
    ) -> None:
        path = Path(path)
        name = shown_path(path)
        if not datatype:
            guessed = datatype_from_extension(path)
            if guessed is None:
                known = " ".join(sorted(EXTENSION_DATATYPES))
                raise InputError(
                    f"{name}: cannot tell the datatype from the extension {show(path.suffix)}; "
                    f"give --datatype (e.g. cu8, ci8, ci16_le, cf32_le); known extensions: {known}"
                )
            datatype = guessed
        fmt = parse_datatype(datatype, where=name)
        if not (
            isinstance(sample_rate_hz, int | float)
            and math.isfinite(sample_rate_hz)
            and MIN_SAMPLE_RATE_HZ <= sample_rate_hz <= MAX_SAMPLE_RATE_HZ
        ):
            raise InputError(
                f"{name}: a raw IQ file needs a positive sample rate (--rate) between {MIN_SAMPLE_RATE_HZ:g} "
                f"and {MAX_SAMPLE_RATE_HZ:g} Hz, got {sample_rate_hz!r}"
            )
        if not (math.isfinite(center_freq_hz) and abs(center_freq_hz) <= MAX_ABS_FREQ_HZ):
            raise InputError(
                f"{name}: centre frequency (--freq) must be a finite number of Hz, got {center_freq_hz!r}"
            )
        if not (chunk_ms > 0 and math.isfinite(chunk_ms)):
            raise InputError(f"{name}: chunk_ms must be > 0, got {chunk_ms!r}")
        size = _file_size(path, name)
        mapped = map_samples(fmt, num_channels, path=path, nbytes=size, name=name)
        n = mapped.shape[0]
        self._replay = MappedReplay(
            mapped,
            fmt,
            channel=channel,
            segments=[Segment(0, n, 0, float(center_freq_hz), None)],
            sample_rate_hz=sample_rate_hz,
            chunk_ms=chunk_ms,
            realtime=realtime,
            loop=loop,
            name=name,
            min_chunk_samples=min_chunk_samples,
        )
        self.info = SourceInfo(
            sample_rate_hz=float(sample_rate_hz),
            center_freq_hz=float(center_freq_hz),
            description=f"raw {fmt.datatype} file {path.name}",
            total_samples=None if loop else n,
            start_time_utc=None,
        )

    def __iter__(self) -> Iterator[Chunk]:
        return iter(self._replay)

    def close(self) -> None:
        self._replay.close()
