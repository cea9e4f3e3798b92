"""The data contracts every stage agrees on: Chunk, Frame, Detection, Track.

Records are frozen and carry their units in their names. Pixel <-> physical
conversion lives here, on the Frame, and nowhere else.

Pixel boxes use continuous edges: a box ``x0, y0, x1, y1`` covers columns
``[x0, x1)`` and rows ``[y0, y1)``; column ``c`` spans frequencies
``[f0_hz + c*df_hz, f0_hz + (c+1)*df_hz)`` and row ``r`` spans times
``[t0_s + r*dt_s, t0_s + (r+1)*dt_s)``. Row 0 is the oldest time slice and
column 0 the lowest frequency.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

TrackState = Literal["tentative", "confirmed", "ended"]
TrackEventKind = Literal["start", "update", "end"]


@dataclass(frozen=True, slots=True)
class Chunk:
    """A contiguous run of complex baseband samples from one stream."""

    iq: Any  # 1-D complex64, host (numpy) or device (cupy)
    sample_rate_hz: float
    center_freq_hz: float
    start_sample: int  # absolute index since the stream began
    seq: int  # 0, 1, 2, ... per stream
    arrived_ns: int  # time.monotonic_ns() when the chunk was complete; the deadline's origin
    start_time_utc: datetime | None = None  # UTC of iq[0], where the source knows it
    gap_before_samples: int = 0  # samples lost just before this chunk
    nonfinite_samples: int = 0  # NaN/Inf samples the source zeroed in this chunk

    @property
    def num_samples(self) -> int:
        return int(self.iq.shape[0])

    @property
    def start_s(self) -> float:
        """Seconds since the stream began at iq[0]."""
        return self.start_sample / self.sample_rate_hz

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate_hz


# Runner-up labels a detection carries at most (``Detection.alternatives``; docs/protocol.md).
MAX_ALTERNATIVES = 3


@dataclass(frozen=True, slots=True)
class Detection:
    """One signal found in one frame, in pixel and physical units."""

    x0: float
    y0: float
    x1: float
    y1: float
    t_start_s: float  # seconds since stream start
    t_stop_s: float
    f_low_hz: float  # absolute RF frequency
    f_high_hz: float
    score: float  # [0, 1]
    label: str
    detector: str  # the detector (or, after merging, the best one) that found it
    found_by: tuple[str, ...] = ()  # every detector that found it; () means (detector,)
    chunk_seq: int = -1
    # Set by fusion (rfstream.detect.fuse); a single detector's box leaves the defaults.
    presence: float | None = None  # probability that a real signal is there, whatever its label
    # Runner-up labels and their probabilities, at most MAX_ALTERNATIVES of them.
    alternatives: tuple[tuple[str, float], ...] = ()
    group_id: int = -1  # boxes of one emitter's train (hops, pulses) share it within a chunk; -1: none
    low_confidence: bool = False  # below the operating threshold (kept only where merge asks)
    # Where the label came from: "" a model's reading of the image; "iq" measured on the samples
    # (rfstream.detect.narrowband: a narrow box named tone/am/fm/ook, a wide one chirp/fm/fsk/ofdm/
    # psk/pulsed from its modulation), which fusion lets outvote the image models on that box.
    # Not on the wire.
    label_source: str = ""

    def __post_init__(self) -> None:
        if not self.found_by:
            object.__setattr__(self, "found_by", (self.detector,))

    @property
    def bandwidth_hz(self) -> float:
        return self.f_high_hz - self.f_low_hz

    @property
    def center_freq_hz(self) -> float:
        return 0.5 * (self.f_low_hz + self.f_high_hz)

    def replace(self, **changes: Any) -> Detection:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Frame:
    """A normalised spectrogram image and the axes that place it in time and frequency."""

    image: Any  # H x W float32 in [0, 1], on the array backend's device
    t0_s: float  # start of row 0, seconds since stream start
    dt_s: float  # seconds per row
    f0_hz: float  # lower edge of column 0, absolute Hz
    df_hz: float  # Hz per column
    chunk: Chunk
    # The image value of the frame's noise floor (its median pixel), where the stage that made
    # the frame knows it (the spectrogram's normalisation puts the median at
    # floor_offset_db / dynamic_range_db); None: consumers measure it from the image.
    noise_floor: float | None = None
    # GPU only: a CUDA event recorded when ``image`` is complete on the spectrogram's stream;
    # detectors on other streams wait on it instead of synchronising the host.
    ready_event: Any = field(default=None, compare=False, repr=False)
    # GPU only: where host_image() copies the image to (the GPU spectrogram's ring of pinned
    # host buffers, rfstream.dsp.gpu.HostImageRing); None copies into fresh pageable memory.
    host_buffers: Any = field(default=None, compare=False, repr=False)
    # The one device->host door (see ``host_image``); filled on first use.
    _host: Any = field(default=None, init=False, compare=False, repr=False)
    _host_lock: Any = field(default_factory=threading.Lock, init=False, compare=False, repr=False)

    def host_image(self) -> Any:
        """The image as a host (NumPy) array: the one door every host-side consumer goes through.

        On the CPU this is ``image`` itself. On a GPU the first caller waits for
        ``ready_event`` (the spectrogram's stream may still be writing the image),
        copies the image to host memory once (into a pinned buffer of
        ``host_buffers`` where the spectrogram lends one), and every later caller
        gets the same cached array, so a frame crosses the bus at most once however
        many detectors and sinks read it. Thread-safe; callers must not write to it.
        The array is valid while it or the Frame is referenced: keep a copy of what
        must outlive both.
        """
        host = self._host
        if host is not None:
            return host
        with self._host_lock:
            if self._host is None:
                host = _to_host(self.image, self.ready_event, self.host_buffers)
                object.__setattr__(self, "_host", host)
            return self._host

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def t1_s(self) -> float:
        return self.t0_s + self.height * self.dt_s

    @property
    def f1_hz(self) -> float:
        return self.f0_hz + self.width * self.df_hz

    # --- the one place pixels become physics and back -------------------------------
    def to_physical(self, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        """Pixel box -> (t_start_s, t_stop_s, f_low_hz, f_high_hz)."""
        return (
            self.t0_s + y0 * self.dt_s,
            self.t0_s + y1 * self.dt_s,
            self.f0_hz + x0 * self.df_hz,
            self.f0_hz + x1 * self.df_hz,
        )

    def to_pixels(
        self, t_start_s: float, t_stop_s: float, f_low_hz: float, f_high_hz: float
    ) -> tuple[float, float, float, float]:
        """Physical box -> (x0, y0, x1, y1), unclipped."""
        return (
            (f_low_hz - self.f0_hz) / self.df_hz,
            (t_start_s - self.t0_s) / self.dt_s,
            (f_high_hz - self.f0_hz) / self.df_hz,
            (t_stop_s - self.t0_s) / self.dt_s,
        )

    def detection(
        self, x0: float, y0: float, x1: float, y1: float, *, score: float, label: str, detector: str
    ) -> Detection:
        """Build a Detection from a pixel box, clipped to the image."""
        w, h = float(self.width), float(self.height)
        x0 = min(max(0.0, float(x0)), w)
        x1 = max(x0, min(w, float(x1)))
        y0 = min(max(0.0, float(y0)), h)
        y1 = max(y0, min(h, float(y1)))
        t_start, t_stop, f_low, f_high = self.to_physical(x0, y0, x1, y1)
        return Detection(
            x0=x0,
            y0=y0,
            x1=x1,
            y1=y1,
            t_start_s=t_start,
            t_stop_s=t_stop,
            f_low_hz=f_low,
            f_high_hz=f_high,
            score=float(min(1.0, max(0.0, score))),
            label=label,
            detector=detector,
            chunk_seq=self.chunk.seq,
        )

    def utc_at(self, t_s: float) -> datetime | None:
        """UTC of a stream time, where the source knows the chunk's UTC."""
        if self.chunk.start_time_utc is None:
            return None
        return self.chunk.start_time_utc + timedelta(seconds=t_s - self.chunk.start_s)


@dataclass(frozen=True, slots=True)
class Track:
    """A signal followed across chunks."""

    track_id: int
    label: str
    f_low_hz: float  # smoothed
    f_high_hz: float  # smoothed
    first_seen_s: float
    last_seen_s: float
    hits: int
    score: float
    state: TrackState = "tentative"

    def replace(self, **changes: Any) -> Track:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """A track started, was updated, or ended, while processing chunk ``chunk_seq``."""

    kind: TrackEventKind
    track: Track
    chunk_seq: int


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """What the pipeline hands the sinks for one chunk."""

    frame: Frame
    detections: tuple[Detection, ...]
    track_events: tuple[TrackEvent, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage and per detector
    late: bool = False


def _to_host(image: Any, ready_event: Any, host_buffers: Any = None) -> Any:
    """Device -> host copy of a frame image, after the event that says it is complete."""
    get = getattr(image, "get", None)
    if get is None:  # already a host array
        return image
    if ready_event is not None:
        ready_event.synchronize()  # the host waits here, once per frame, before any byte is read
    if host_buffers is not None:
        return host_buffers.download(image)
    return get()
