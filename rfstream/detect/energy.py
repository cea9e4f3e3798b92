"""The model-free energy detector: noise floor, threshold, connected components, boxes.

It knows nothing about any signal generator; every threshold comes from the
noise statistics of the frame it is looking at, and from the frame's geometry:

0. **Geometry.** At low sample rates the spectrogram has fewer STFT slices than
   image rows and repeats each slice over ``rows_per_slice`` rows (2.4 MS/s at
   hop 2048 and 200 ms per 1024-row frame: 4.4 rows per slice; 250 kS/s: 44).
   Averaging copies of one slice removes no noise, so every length along time
   below is counted in *slices*, and the number of independent samples in a
   component is its area divided by ``rows_per_slice``. ``detect`` derives it
   from the frame (``hop / (dt_s · sample_rate)``); ``propose`` takes it as an
   argument or, when not given, measures it from the image (how often a row
   repeats its predecessor exactly).
1. **Smooth** the image twice, with a running mean along time (``smooth_t``
   slices) and one along frequency (``smooth_f`` columns): matched to long narrow
   carriers and to short wideband pulses respectively, each cuts the 1–3 dB
   pixel noise by about the square root of its length without smearing a
   one-column carrier or a one-slice pulse into the noise. A pixel counts when it
   stands out in either (steps 3–4 run on both and OR the masks).
2. **Floor baseline per frequency column**: a low percentile over time of each
   column (``baseline_percentile``; signals on for less than the rest of the
   frame do not lift it), then a running median across frequency over
   ``baseline_window_frac`` of the width. The median across frequency ignores
   always-on narrow carriers (narrower than half the window) and follows
   sloped floors and filter roll-off at the band edges (a median over a
   straight slope is the value at its centre), so neither becomes a detection.
   Edges reflect, which errs towards a higher floor, not false alarms.
3. **Robust noise statistics** of the raw and of each smoothed image, floor
   removed, on a strided sample: centre ``mu`` = median, spread ``sigma`` =
   median − 15.87th percentile. The lower side is used because signals only
   ever add to the upper side, so up to about half the frame may be occupied
   without inflating ``sigma``. Measured, not modelled, so correlated pixels
   (repeated rows, overlapping windows, 8-bit quantisation) are accounted for.
4. **Hysteresis threshold**: *seed* pixels lie above
   ``mu + max(seed_sigma·sigma, min_margin_db)``; components grow over the
   pixels above ``mu + max(grow_sigma·sigma, min_margin_db·grow_sigma/seed_sigma)``;
   in ``otsu`` mode the seed level is raised to Otsu's split of the
   floor-removed image where that is higher (never lowered: on a pure-noise
   frame Otsu would split the noise in two).
5. **Morphological closing** of the grown mask (``closing_t`` × ``closing_f``)
   bridges the small holes of keyed or hopping-within-band signals, then one
   ``scipy.ndimage.label`` gives the components; their statistics come from
   ``np.bincount`` over the masked pixels (no Python loop per component).
   **Carriers apart from what crosses them**: columns set in at least
   ``carrier_fraction`` of the rows are labelled on their own, and the bursts
   without them, bridged across a carrier where a burst sits on both sides (one
   box spanning it). The same split is applied inside every component at least
   16 rows tall: a carrier on for only part of the frame (a CW burst, a voice
   channel) is on in most rows *of its component*; where its columns fill at
   most a third of the component's width and the rest fills at most 35 % of
   its rows (hops or packets crossing it, not a weak wideband signal whose
   columns each light up half the time), carrier and bursts become separate
   components. Before this, a CW burst crossed by hops was one box, the carrier's,
   and every hop was lost.
6. **Acceptance**: a component is kept when it holds a seed pixel *or* its
   integrated SNR reaches ``accept_sigma``: the mean excess of the raw image
   over the floor, in units of the raw pixel sigma, times
   ``sqrt(area / rows_per_slice)`` (the independent samples it spans). A weak
   carrier a few dB over the floor never seeds a pixel at low sample rates but
   integrates to tens of sigmas over a frame. Components smaller than
   ``min_time_px`` × ``min_freq_px`` or ``min_area_px`` are dropped, as is a
   component lying entirely within ``dc_guard_px`` columns of the centre
   frequency (the DC spike of direct-conversion receivers such as the RTL-SDR —
   a real carrier exactly at DC is missed for this; set ``dc_guard_px = 0`` to
   keep it).

**Bursts in time**: smoothing and closing join the bursts of one channel (TDMA slots,
packets, hops that return to a channel) into one component. Each box is cut where its
signal is off: its row profile (raw image minus floor, averaged over its columns) falls
below ``split_fraction`` of its on level and within three profile sigmas of the floor
for at least ``split_gap_slices`` slices. Only boxes standing 8 sigmas clear are cut, a
gap separates two bursts only where the runs on both sides last at least 4 slices
(shorter runs are pulses or keyed bits of one emission), and only boxes wide enough for
a time-bandwidth product of 40 over such a burst (5 columns at any sample rate with the
default frame) are cut: an OOK packet's marks, a keyed carrier as wide as its keying
rate, stay one box. Below about 500 bit/s, marks of 4 slices and more are cut apart
(a limitation).

**Keyed carriers**: boxes narrower than the split's column limit on the same columns, at
most ``train_gap_slices`` apart, are the pieces of one keyed packet (a run of spaces broke
the mask) and are joined, whatever their length.

**Pulse trains**: pulses (boxes at most ``pulse_max_slices`` long) that repeat at
the same frequency (frequency overlap at least half the narrower one) with gaps of
at most ``train_gap_slices`` are one emission — a radar's or a beacon's train — when
they repeat at one interval (at least three, three quarters of the intervals within
20 % of a whole multiple of the median one) or when they are narrow (a keyed carrier's
marks), and are reported as one box scored by their mean, instead of dozens of blips.
Pulses at irregular times (ADS-B replies of
different aircraft) stay one box each, and every lone pulse box, smeared by the STFT
window over up to ``pulse_max_slices``, becomes one slice tall about the row centroid
of its excess power: where the pulse is.

**Box edges** are then trimmed to where the box's mean profile along each axis
(unsmoothed image minus the floor) reaches ``edge_fraction`` of its peak, which
undoes the spread that smoothing, growing and closing add around strong signals.
A carrier's box (at least ``carrier_fraction`` of the frame tall) takes the median
over its rows for its column profile, so a burst across it does not widen it; a box
at most two columns wide (a carrier narrower than a column, whose window main lobe
lights the two columns it straddles) becomes one column about its power centroid.

**Score**: the component's mean SNR in dB (mean over its pixels of the raw image
above the floor, times the image's dB per unit) mapped monotonically onto
[0, 1] as ``snr / (snr + score_half_db)`` — 0 dB → 0, ``score_half_db`` → 0.5,
approaching 1 for strong signals.

**Calibration**: the detector publishes the probability that a box is a real signal, not the
raw SNR score: a logistic regression on the box's features (:func:`calibration_features`: mean
SNR, its logarithm, the logarithms of its width in columns and of its length in STFT slices (short
blobs of noise and long bursts of signal differ most there), height as a share of the frame, how
much it looks like a narrow full-height line — the shape of receiver spurs — and its *fill*, the
share of its pixels at least :data:`FILL_LEVEL_DB` over the floor: a burst fills its box, a piece
of a chirp's diagonal or a scatter of noise does not), fitted on validation recordings by
``scripts/fit_fusion.py`` and stored as ``energy`` in the fusion file (:meth:`EnergyDetector.measure`
gives the fit exactly the features the detector scores). ``calibration = "none"`` publishes the
raw score; the proposals a two-stage detector scores are always raw.

**Cost**: every full-frame array is allocated once per frame shape; running
means are sliced adds / one cumulative sum in float32; statistics use a
strided sample; per-component work is ``bincount`` over the masked pixels.

Limitations: an always-on signal wider than half the baseline window becomes
part of the floor; signals closer than the closing size, or touching in time
and frequency (a burst beside another burst, a burst on a wideband signal that
is on for most of its rows), merge into one box.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.ndimage

from rfstream.config import DetectorConfig
from rfstream.detect.base import at_least, check_options, in_range, parse_options, positive
from rfstream.limits import MAX_IMAGE_SIDE, MAX_NFFT
from rfstream.types import Detection, Frame

__all__ = [
    "EnergyDetector",
    "EnergyOptions",
    "EnergyProposer",
    "energy_options",
    "frame_rows_per_slice",
    "measured_rows_per_slice",
]

_Q16 = 15.87  # percentile one sigma below the median of a normal
_SLICED_MAX = 12  # running means up to this long by sliced adds, longer by a running sum


@dataclass(frozen=True, slots=True)
class EnergyOptions:
    """Settings of the energy detector (``[[detectors]] kind = "energy"``, table ``options``)."""

    method: Literal["floor", "otsu"] = "floor"  # seed threshold: noise floor + margin, or Otsu (never lower)
    seed_sigma: float = field(default=5.0, metadata=positive("seed margin above the floor, robust sigmas"))
    grow_sigma: float = field(default=2.5, metadata=positive("grow margin above the floor, robust sigmas"))
    min_margin_db: float = field(default=2.0, metadata=at_least(0.0, "seed margin never below this, dB"))
    accept_sigma: float = field(
        default=8.0, metadata=positive("keep an unseeded component whose integrated SNR reaches this, sigmas")
    )
    smooth_t: int = field(
        default=5, metadata=at_least(1, "running mean along time, STFT slices", high=MAX_IMAGE_SIDE)
    )
    smooth_f: int = field(
        default=5, metadata=at_least(1, "running mean along frequency, columns", high=MAX_IMAGE_SIDE)
    )
    baseline_percentile: float = field(
        default=20.0, metadata=in_range(0.0, 100.0, "per-column percentile over time for the floor")
    )
    baseline_window_frac: float = field(
        default=0.125,
        metadata=in_range(0.0, 1.0, "running-median window across frequency, fraction of width"),
    )
    closing_t: int = field(
        default=3, metadata=at_least(1, "closing size, rows (1 = none)", high=MAX_IMAGE_SIDE)
    )
    closing_f: int = field(
        default=3, metadata=at_least(1, "closing size, columns (1 = none)", high=MAX_IMAGE_SIDE)
    )
    min_time_px: int = field(
        default=2, metadata=at_least(1, "smallest box height, rows", high=MAX_IMAGE_SIDE)
    )
    min_freq_px: int = field(
        default=1, metadata=at_least(1, "smallest box width, columns", high=MAX_IMAGE_SIDE)
    )
    min_area_px: int = field(
        default=12, metadata=at_least(1, "smallest component, pixels", high=MAX_IMAGE_SIDE**2)
    )
    # A crowded band holds 150+ bursts per frame; at 100 the weakest real ones were cut (issue 8)
    max_detections: int = field(default=300, metadata=positive("most boxes per frame, best scores first"))
    pulse_max_slices: float = field(default=3.0, metadata=positive("a box this short (slices) is a pulse"))
    split_gap_slices: float = field(
        default=1.0,
        metadata=at_least(0.0, "split a box where its signal is off this long (slices; 0 = off)"),
    )
    split_fraction: float = field(
        default=0.2, metadata=in_range(0.0, 1.0, "a row is off below this fraction of the box's on level")
    )
    train_gap_slices: float = field(
        default=12.0,
        metadata=at_least(0.0, "pulses this close (slices) at one frequency form a train (0 = off)"),
    )
    carrier_fraction: float = field(
        default=0.6, metadata=in_range(0.0, 1.0, "a column set in this share of rows is a carrier (1 = off)")
    )
    dc_guard_px: int = field(
        default=2, metadata=at_least(0, "drop components within ± this of DC", high=MAX_IMAGE_SIDE)
    )
    score_half_db: float = field(default=10.0, metadata=positive("mean SNR that scores 0.5, dB"))
    dynamic_range_db: float = field(
        default=50.0, metadata=positive("dB per image unit; must equal spectrogram.dynamic_range_db")
    )
    hop: int = field(
        default=2048, metadata=at_least(1, "STFT hop, samples; must equal spectrogram.hop", high=MAX_NFFT)
    )
    stats_stride: int = field(
        default=8, metadata=at_least(1, "sample every Nth row/column for statistics", high=MAX_IMAGE_SIDE)
    )
    edge_fraction: float = field(
        default=0.35, metadata=in_range(0.0, 1.0, "trim box edges below this fraction of the peak profile")
    )
    # The detector's published score: "" = calibrated by the shipped rfstream/models/fusion.json,
    # "none" = the raw SNR score, else the path of a fusion file (scripts/fit_fusion.py writes one).
    calibration: str = ""


def frame_rows_per_slice(frame: Frame, hop: int) -> float:
    """Image rows per STFT slice (> 1 where the spectrogram repeated slices to fill its height)."""
    return hop / max(frame.dt_s * frame.chunk.sample_rate_hz, 1e-12)


def measured_rows_per_slice(image: np.ndarray, columns: int = 64) -> float:
    """Rows per STFT slice measured from the image: how often a row repeats the one before.

    Area resampling copies a slice into every row it covers whole and mixes two slices in
    the row that straddles a boundary, so with ``r`` rows per slice about ``(r - 2) / r`` of
    adjacent pairs are equal. Below two rows per slice no pair is equal and 1 is returned
    (the smoothing then errs towards too short, never too long).
    """
    h, w = image.shape
    if h < 3:
        return 1.0
    sample = image[:, :: max(1, w // columns)]
    equal = float(np.count_nonzero((sample[1:] == sample[:-1]).all(axis=1))) / (h - 1)
    if equal <= 0.0:
        return 1.0
    return float(min(h, 2.0 / max(1.0 - equal, 2.0 / h)))


class EnergyProposer:
    """The energy detector's core: one frame in, pixel boxes and scores out. See the module docstring.

    One instance per distinct :class:`EnergyOptions`, shared by every detector that wants these
    proposals (the energy detector and a two-stage detector's proposal stage): the registry
    builds it once and hands it to both, and :meth:`for_frame` computes each frame once,
    however many of them ask (the others wait for that result). Its full-frame buffers are
    allocated once per frame shape, so one computation runs at a time.
    """

    def __init__(
        self, options: EnergyOptions = EnergyOptions(), *, xp: Any = np, where: str = "energy"
    ) -> None:
        check_options(options, where)
        self.options = options
        # Full-frame smoothing and thresholds run on ``xp`` (CuPy keeps them on the GPU);
        # the masks come back to the host for labelling and the per-component statistics.
        self.xp = xp
        self._to_host = np.asarray if xp is np else xp.asnumpy
        # Seed pixels only matter inside the grown mask: on the host they are tested there only
        # (a gather of the masked pixels); on a device as two full-frame comparisons.
        self._seeded_at = self._seeded_gather if xp is np else self._seeded_full
        o = options
        self._unit_db = float(o.dynamic_range_db)
        self._min_seed = np.float32(o.min_margin_db / self._unit_db)
        self._min_grow = np.float32(self._min_seed * o.grow_sigma / o.seed_sigma)
        self._shape: tuple[int, int] | None = None
        self._lock = threading.Lock()  # one computation at a time: the buffers are shared
        # the last two frames' (boxes, scores, fill), newest last
        self._recent: list[tuple[Frame, tuple[np.ndarray, np.ndarray, np.ndarray]]] = []

    # --- lifecycle ----------------------------------------------------------------------------
    def warmup(self, frame_shape: tuple[int, int]) -> None:
        with self._lock:
            self._allocate(tuple(frame_shape))  # type: ignore[arg-type]
        noise = np.random.default_rng(0).normal(0.12, 0.03, size=frame_shape).astype(np.float32)
        self.propose(self.xp.asarray(noise), rows_per_slice=1.0)

    def close(self) -> None:
        with self._lock:
            self._shape = None
            self._recent.clear()

    def _allocate(self, shape: tuple[int, int]) -> None:
        xp, o = self.xp, self.options
        h, w = shape
        self._cum = xp.empty((2 * h + 1, w), dtype=xp.float32)  # running sum along time, padded
        self._along_t = xp.empty((h, w), dtype=xp.float32)
        self._along_f = xp.empty((h, w), dtype=xp.float32)
        self._grow = xp.empty((h, w), dtype=bool)
        self._tmp = xp.empty((h, w), dtype=bool)
        self._labels = np.empty((h, w), dtype=np.int32)
        self._residual = np.empty((h, w), dtype=np.float32)  # raw image minus floor, host
        window = max(3, round(o.baseline_window_frac * w) | 1)  # odd, so centred
        self._baseline_window = min(window, w if w % 2 else w - 1) if w >= 3 else 1
        self._shape = shape

    # --- per frame ----------------------------------------------------------------------------
    def for_frame(self, frame: Frame, score_threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Boxes and scores of ``frame`` (see :meth:`propose`), computed once per frame.

        The result of the last few frames is kept with the Frame itself (compared by identity,
        the Frame held, so no identity can be reused while it is kept); each caller then
        applies its own ``score_threshold``.
        """
        boxes, scores, _ = self.measure(frame, score_threshold)
        return boxes, scores

    def measure(
        self, frame: Frame, score_threshold: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`for_frame`'s boxes and scores and each box's fill: the share of its pixels at
        least :data:`FILL_LEVEL_DB` over the floor (a burst fills its box, a chirp's diagonal or a
        scatter of noise does not; one of the calibration's features)."""
        dc_column = (frame.chunk.center_freq_hz - frame.f0_hz) / frame.df_hz
        with self._lock:
            found = [result for seen, result in self._recent if seen is frame]
            if found:
                boxes, scores, fill = found[0]
            else:
                rows = frame_rows_per_slice(frame, self.options.hop)
                boxes, scores, fill = self._candidates(frame.host_image(), rows)
                self._recent = [*self._recent[-1:], (frame, (boxes, scores, fill))]
        keep = self._select(boxes, scores, score_threshold, dc_column)
        return boxes[keep], scores[keep], fill[keep]

    def propose(
        self,
        image: Any,
        dc_column: float | None = None,
        rows_per_slice: float | None = None,
        score_threshold: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pixel boxes ``(N, 4)`` as ``x0, y0, x1, y1`` (float64, host) and scores ``(N,)``.

        Best scores first, at most ``max_detections``, scores ≥ ``score_threshold``.
        ``dc_column``: the column of the centre frequency (for the DC guard), or None.
        ``rows_per_slice``: image rows per STFT slice (:func:`frame_rows_per_slice`); None
        measures it from the image. Not cached (tools, training): detectors use ``for_frame``.
        """
        if rows_per_slice is None:
            rows_per_slice = measured_rows_per_slice(np.asarray(self._to_host(image)))
        with self._lock:
            boxes, scores, _ = self._candidates(image, rows_per_slice)
        keep = self._select(boxes, scores, score_threshold, dc_column)
        return boxes[keep], scores[keep]

    def _select(
        self, boxes: np.ndarray, scores: np.ndarray, threshold: float, dc_column: float | None
    ) -> np.ndarray:
        """Indices kept: threshold, the best ``max_detections``, then no component at DC (copies)."""
        o = self.options
        good = np.flatnonzero(scores >= threshold)[: o.max_detections]
        if dc_column is not None and o.dc_guard_px > 0:
            lo, hi = math.floor(dc_column) - o.dc_guard_px, math.floor(dc_column) + o.dc_guard_px + 1
            at_dc = (boxes[good, 0] >= lo) & (boxes[good, 2] <= hi)
            good = good[~at_dc]
        return good

    # --- the work -----------------------------------------------------------------------------
    def _mean_t(self, image: Any, k: int) -> Any:
        """Running mean of ``k`` rows, edges replicated, into a preallocated buffer.

        Short windows: ``k - 1`` sliced adds. Long ones (many rows per slice at low sample
        rates): a running sum row by row and one difference; NumPy's ``cumsum`` along the
        outer axis is an order of magnitude slower than either.
        """
        xp, out = self.xp, self._along_t
        h = image.shape[0]
        if k <= 1:
            xp.copyto(out, image)
            return out
        if k <= _SLICED_MAX:
            _sliced_mean(xp, image, k, 0, out)
            return out
        before = k // 2
        cum = self._cum[: h + k]
        cum[0] = 0.0
        cum[1 + before : 1 + before + h] = image
        cum[1 : 1 + before] = image[:1]
        cum[1 + before + h :] = image[-1:]
        for i in range(1, h + k):
            xp.add(cum[i - 1], cum[i], out=cum[i])
        xp.subtract(cum[k : k + h], cum[:h], out=out)
        out *= np.float32(1.0 / k)
        return out

    def _mean_f(self, image: Any, k: int) -> Any:
        """Running mean of ``k`` columns, edges replicated, into a preallocated buffer."""
        if k <= 1:
            self.xp.copyto(self._along_f, image)
        else:
            _sliced_mean(self.xp, image, k, 1, self._along_f)
        return self._along_f

    def _floor_baseline(self, smooth: Any) -> np.ndarray:
        """Per-column noise floor (host float32): low percentile over time, running median across."""
        o = self.options
        sample = self._to_host(smooth[:: o.stats_stride]).T.copy()  # columns contiguous: fast partition
        n = sample.shape[1]
        k = min(n - 1, int(o.baseline_percentile / 100.0 * (n - 1)))
        column_floor = np.partition(sample, k, axis=1)[:, k]
        if self._baseline_window > 1:
            column_floor = scipy.ndimage.median_filter(
                column_floor, size=self._baseline_window, mode="reflect"
            )
        return column_floor.astype(np.float32)

    def _stats(self, x: Any, baseline: np.ndarray) -> tuple[float, float, np.ndarray]:
        """Median, robust sigma (median − 15.87th percentile) and the sample of ``x`` − floor."""
        s = self.options.stats_stride
        sample = (self._to_host(x[::s, ::s]) - baseline[None, ::s]).ravel()
        n = sample.size
        k16, k50 = int(_Q16 / 100.0 * (n - 1)), (n - 1) // 2
        part = np.partition(sample, (k16, k50))
        mu = float(part[k50])
        return mu, max(mu - float(part[k16]), 1e-6), sample

    @staticmethod
    def _otsu(values: np.ndarray) -> float:
        hist, edges = np.histogram(values, bins=256)
        centres = 0.5 * (edges[:-1] + edges[1:])
        w0 = np.cumsum(hist).astype(np.float64)
        m0 = np.cumsum(hist * centres)
        total, total_mean = w0[-1], m0[-1]
        w1 = total - w0
        with np.errstate(divide="ignore", invalid="ignore"):
            between = (total_mean * w0 - total * m0) ** 2 / (w0 * w1)
        between[~np.isfinite(between)] = 0.0
        return float(centres[int(np.argmax(between))])

    def _thresholds(self, x: Any, baseline: np.ndarray) -> tuple[Any, Any]:
        """Per-column seed and grow levels (on ``xp``) for one smoothed image."""
        o = self.options
        mu, sigma, sample = self._stats(x, baseline)
        seed = max(o.seed_sigma * sigma, self._min_seed)
        if o.method == "otsu":
            seed = max(seed, self._otsu(sample) - mu)
        grow = max(o.grow_sigma * sigma, self._min_grow)
        xp = self.xp
        return xp.asarray(baseline + np.float32(mu + seed)), xp.asarray(baseline + np.float32(mu + grow))

    def _close(self, mask: Any) -> Any:
        """Binary closing with a rectangle; outside the image counts as set so edges don't erode.

        Separable sliced OR/AND passes in preallocated buffers: several times faster than
        ndimage's generic binary morphology on a 1024×1024 mask.
        """
        o, a, b = self.options, mask, self._tmp
        for axis, k in ((0, o.closing_t), (1, o.closing_f)):
            if k > 1:
                _sweep(a, b, k, axis, k // 2, grow=True)
                _sweep(b, a, k, axis, k - 1 - k // 2, grow=False)
        return a

    def _label(self, mask: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
        """Connected components, with carriers labelled apart from the bursts that cross them;
        the number of burst components (labels ``1..n_bursts``) and of all.

        A carrier runs the whole frame, so every burst whose skirt touches it would join one
        giant component. Columns set in at least ``carrier_fraction`` of the rows are labelled
        on their own, the bursts without them (:func:`_label_carriers`). :func:`_split_components`
        then applies the same split inside each burst component (``_candidates``).
        """
        o = self.options
        if o.carrier_fraction >= 1.0:
            n = int(scipy.ndimage.label(mask, output=labels))
            return n, n
        return _label_carriers(mask, labels, o.carrier_fraction, self._reach)

    @property
    def _reach(self) -> int:
        """How far smoothing and closing spread a carrier sideways, columns."""
        return self.options.smooth_f // 2 + self.options.closing_f // 2

    def _seeded_gather(
        self, where: np.ndarray, cols: np.ndarray, along_t: Any, along_f: Any, seed_t: Any, seed_f: Any
    ) -> np.ndarray:
        """Which masked pixels (flat indices ``where``, columns ``cols``) are seeds, testing only them."""
        seeded = along_t.ravel()[where] > seed_t[cols]
        seeded |= along_f.ravel()[where] > seed_f[cols]
        return seeded

    def _seeded_full(
        self, where: np.ndarray, cols: np.ndarray, along_t: Any, along_f: Any, seed_t: Any, seed_f: Any
    ) -> np.ndarray:
        xp, seed, tmp = self.xp, self._tmp, self._grow  # the grow mask is on the host by now
        xp.greater(along_t, seed_t[None, :], out=seed)
        xp.logical_or(seed, xp.greater(along_f, seed_f[None, :], out=tmp), out=seed)
        return self._to_host(seed).ravel()[where]

    def _candidates(self, image: Any, rows_per_slice: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every accepted component's box, score and fill (:meth:`measure`), best first, before
        threshold and DC guard.

        Call with the lock held (the full-frame buffers are this instance's).
        """
        xp, o = self.xp, self.options
        image = xp.asarray(image, dtype=xp.float32)
        if image.ndim != 2 or min(image.shape) < 1:
            return np.zeros((0, 4)), np.zeros(0), np.zeros(0)
        if self._shape != image.shape:
            self._allocate(image.shape)
        h, w = image.shape
        rows = max(1.0, float(rows_per_slice))  # < 1: several slices per row, rows independent
        # Two matched smoothings: along time (long narrow carriers) and along frequency (short
        # wideband pulses); a pixel counts when either stands out from its own noise.
        along_t = self._mean_t(image, min(h, max(1, round(o.smooth_t * rows))))
        along_f = self._mean_f(image, min(w, o.smooth_f))
        baseline = self._floor_baseline(along_t)
        mu_raw, sigma_raw, _ = self._stats(image, baseline)
        grow, tmp = self._grow, self._tmp
        seed_t, grow_t = self._thresholds(along_t, baseline)
        seed_f, grow_f = self._thresholds(along_f, baseline)
        xp.greater(along_t, grow_t[None, :], out=grow)
        xp.logical_or(grow, xp.greater(along_f, grow_f[None, :], out=tmp), out=grow)
        mask = self._to_host(self._close(grow))
        labels = self._labels
        n_bursts, n = self._label(mask, labels)
        if n == 0:
            return np.zeros((0, 4)), np.zeros(0), np.zeros(0)

        # Per-component statistics over the masked pixels only (a small part of the frame).
        host = self._to_host(image)
        floor = baseline + np.float32(mu_raw)  # the raw image's floor, per column
        residual = np.subtract(host, floor[None, :], out=self._residual)
        ys, xs = np.nonzero(mask)  # masked pixels in raster order
        where = ys * w + xs
        ids = labels.ravel()[where]
        every: np.ndarray | None = _bounding_boxes(ys, xs, ids, np.arange(1, n + 1), n)  # label k: row k-1
        if o.carrier_fraction < 1.0 and n_bursts:
            # a carrier on for part of the frame, crossed by bursts: split inside its component
            n_split = _split_components(
                labels, every[:n_bursts], n, o.carrier_fraction, self._reach, CARRIER_MIN_ROWS
            )
            if n_split > n:
                n, every = n_split, None
                ids = labels.ravel()[where]
        area = np.bincount(ids, minlength=n + 1)
        excess = np.bincount(ids, weights=residual.ravel()[where], minlength=n + 1)
        seeded = self._seeded_at(where, xs, along_t, along_f, seed_t, seed_f)
        seeded = np.bincount(ids[seeded], minlength=n + 1) > 0
        mean = excess / np.maximum(area, 1)
        # Integrated SNR: mean excess in pixel sigmas × sqrt(independent samples spanned).
        z = mean / sigma_raw * np.sqrt(area / rows)
        keep = (seeded | (z >= o.accept_sigma)) & (area >= o.min_area_px)
        keep[0] = False
        kept = np.flatnonzero(keep)
        if kept.size == 0:
            return np.zeros((0, 4)), np.zeros(0), np.zeros(0)
        boxes = _bounding_boxes(ys, xs, ids, kept, n) if every is None else every[kept - 1]
        mean = mean[kept]
        fits = (boxes[:, 3] - boxes[:, 1] >= o.min_time_px) & (boxes[:, 2] - boxes[:, 0] >= o.min_freq_px)
        boxes, mean = boxes[fits], mean[fits]
        if o.edge_fraction > 0 and boxes.shape[0]:
            # The score is the mean over the trimmed box: the component itself carries the
            # noise pixels that smoothing and closing added around narrow signals.
            boxes, mean = _trim_edges(residual, boxes, o.edge_fraction, o.carrier_fraction * h)
        # Narrower boxes are keyed carriers (SPLIT_MIN_TB): never cut in time, joined when broken.
        # A column times a slice is hop / width in time × bandwidth, at any sample rate.
        keyed_cols = SPLIT_MIN_TB * w / (SPLIT_MIN_PIECE_SLICES * o.hop)
        if o.split_gap_slices > 0 and boxes.shape[0]:
            boxes, mean = _split_in_time(
                residual,
                boxes,
                mean,
                sigma=sigma_raw,
                fraction=o.split_fraction,
                min_gap=o.split_gap_slices * rows,
                min_rows=o.min_time_px,
                min_piece_rows=SPLIT_MIN_PIECE_SLICES * rows,
                min_columns=keyed_cols,
                edge_fraction=o.edge_fraction,
            )
        if o.train_gap_slices > 0 and boxes.shape[0] > 1:
            boxes, mean = _join_keyed(boxes, mean, keyed_cols=keyed_cols, max_gap=o.train_gap_slices * rows)
            boxes, mean = _group_pulse_trains(
                boxes,
                mean,
                max_rows=o.pulse_max_slices * rows,
                max_gap=o.train_gap_slices * rows,
                keyed_cols=keyed_cols,
            )
        if boxes.shape[0]:
            boxes = _narrow_pulses(residual, boxes, o.pulse_max_slices * rows, rows)
            boxes = _narrow_lines(residual, boxes)
        snr_db = np.maximum(mean * self._unit_db, 0.0)
        scores = snr_db / (snr_db + o.score_half_db)
        fill = _fill(residual, boxes, FILL_LEVEL_DB / self._unit_db)
        # Best first; ties broken by position so the output does not depend on label numbering.
        order = np.lexsort((boxes[:, 1], boxes[:, 0], -scores))
        return boxes[order], scores[order], fill[order]


class EnergyDetector:
    """The model-free energy detector: an :class:`EnergyProposer`'s boxes as Detections.

    Labels are ``"unknown"``. ``proposer``: the shared proposer to use (the registry passes
    the one a two-stage detector with the same options also uses); None builds one.
    """

    kind = "energy"

    def __init__(
        self,
        name: str = "energy",
        options: EnergyOptions = EnergyOptions(),
        *,
        priority: int = 0,
        score_threshold: float = 0.0,
        xp: Any = np,
        proposer: EnergyProposer | None = None,
        calibration: Any = None,
    ) -> None:
        self.name = name
        self.proposer = proposer or EnergyProposer(options, xp=xp, where=f"detectors.{name}.options")
        self.priority = priority
        self.score_threshold = max(0.0, float(score_threshold))
        self.calibration = calibration if calibration is not None else _calibration(self.options)

    @property
    def options(self) -> EnergyOptions:
        return self.proposer.options

    @classmethod
    def from_config(
        cls,
        cfg: DetectorConfig,
        xp: Any = np,
        *,
        dynamic_range_db: float | None = None,
        hop: int | None = None,
        proposer: EnergyProposer | None = None,
    ) -> EnergyDetector:
        """Build from a ``[[detectors]]`` record; ``options`` are checked key by key.

        ``score_threshold < 0`` means the default (0: keep every component); ``labels`` does
        not apply (everything is ``"unknown"``). ``dynamic_range_db`` and ``hop``: pass
        ``spectrogram.dynamic_range_db`` and ``spectrogram.hop`` so dB margins, scores and the
        frame geometry are right; explicit ``options`` win. ``proposer``: a shared proposer
        built from the same options (:func:`energy_options`).
        """
        options = energy_options(cfg.options, f"detectors.{cfg.name}.options", dynamic_range_db, hop)
        if proposer is not None and proposer.options != options:
            raise ValueError(f"detector {cfg.name!r}: the shared proposer has other options")
        threshold = cfg.score_threshold if cfg.score_threshold >= 0 else 0.0
        return cls(
            cfg.name, options, priority=cfg.priority, score_threshold=threshold, xp=xp, proposer=proposer
        )

    def warmup(self, frame_shape: tuple[int, int]) -> None:
        self.proposer.warmup(frame_shape)

    def close(self) -> None:
        self.proposer.close()

    def propose(
        self, image: Any, dc_column: float | None = None, rows_per_slice: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pixel boxes and scores of one image with this detector's threshold (not cached)."""
        return self.proposer.propose(image, dc_column, rows_per_slice, self.score_threshold)

    def for_frame(self, frame: Frame, score_threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Its proposer's boxes for ``frame``: an EnergyDetector is a Proposer too (the same one)."""
        return self.proposer.for_frame(frame, score_threshold)

    def detect(self, frame: Frame) -> list[Detection]:
        boxes, scores, features = self.measure(frame)
        if self.calibration is not None:
            scores = self.calibration(features)
            keep = np.flatnonzero(scores >= self.score_threshold)
            keep = keep[np.argsort(-scores[keep], kind="stable")]
            boxes, scores = boxes[keep], scores[keep]
        return [
            frame.detection(x0, y0, x1, y1, score=s, label="unknown", detector=self.name)
            for (x0, y0, x1, y1), s in zip(boxes.tolist(), scores.tolist(), strict=True)
        ]

    def measure(self, frame: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixel boxes, raw SNR scores and calibration features (:func:`calibration_features`) of
        ``frame``'s boxes, in the proposer's order: without a calibration, only those over the
        detector's threshold; with one, every box (its threshold applies to the calibrated score).
        ``scripts/fit_fusion.py`` fits the calibration on exactly these features."""
        threshold = self.score_threshold if self.calibration is None else 0.0
        boxes, raw, fill = self.proposer.measure(frame, threshold)
        features = calibration_features(
            boxes,
            raw,
            frame.image.shape,
            self.options.score_half_db,
            frame_rows_per_slice(frame, self.options.hop),
            fill,
        )
        return boxes, raw, features


ENERGY_FEATURES = (
    "snr_10db",
    "log_snr",
    "log2_width_cols",
    "log2_height_slices",
    "height_share",
    "tall_narrow",
    "fill",
    "bias",
)
FILL_LEVEL_DB = 3.0  # a box's pixel at least this far over the floor counts towards its fill


def calibration_features(
    boxes: np.ndarray,
    raw_scores: np.ndarray,
    frame_shape: tuple[int, ...],
    score_half_db: float,
    rows_per_slice: float = 1.0,
    fill: np.ndarray | None = None,
) -> np.ndarray:
    """Features of the energy detector's boxes for its calibration (:data:`ENERGY_FEATURES`).

    ``boxes``: pixel ``x0, y0, x1, y1``; ``raw_scores``: the SNR scores ``snr / (snr + half)``;
    ``rows_per_slice``: the frame's (:func:`frame_rows_per_slice`), so that a box's length counts
    its independent STFT slices at any sample rate; ``fill``: each box's share of pixels
    :data:`FILL_LEVEL_DB` over the floor (:meth:`EnergyProposer.measure`), None: 1 (filled).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.clip(np.asarray(raw_scores, dtype=np.float64), 0.0, 1.0 - 1e-6)
    snr = np.clip(score_half_db * s / (1.0 - s), 0.0, 60.0)
    height, width = float(frame_shape[0]), float(frame_shape[1])
    cols = np.maximum(boxes[:, 2] - boxes[:, 0], 1.0) * (1024.0 / width)  # in 1024-column units
    slices = np.maximum((boxes[:, 3] - boxes[:, 1]) / max(float(rows_per_slice), 1.0), 1.0)
    share = np.clip((boxes[:, 3] - boxes[:, 1]) / height, 0.0, 1.0)
    tall_narrow = (share >= 0.9) / cols
    filled = np.ones_like(snr) if fill is None else np.clip(np.asarray(fill, dtype=np.float64), 0.0, 1.0)
    return np.stack(
        [
            snr / 10.0,
            np.log1p(snr),
            np.log2(cols) / 10.0,
            np.log2(slices) / 10.0,
            share,
            tall_narrow,
            filled,
            np.ones_like(snr),
        ],
        axis=1,
    )


def _calibration(options: EnergyOptions) -> Any:
    """The logistic map of ``options.calibration`` (see EnergyOptions), or None for raw scores."""
    if options.calibration == "none":
        return None
    from rfstream.detect.fuse import load_fusion

    model = load_fusion(options.calibration).energy
    if model is not None and tuple(model.features) != ENERGY_FEATURES:
        return None  # a file fitted on other features: keep raw scores rather than misapply it
    return model


def energy_options(
    options: Any, where: str, dynamic_range_db: float | None = None, hop: int | None = None
) -> EnergyOptions:
    """``EnergyOptions`` from a config table, the spectrogram's dB scale and hop filled in unless set."""
    parsed = parse_options(EnergyOptions, options, where)
    if dynamic_range_db is not None and "dynamic_range_db" not in options:
        parsed = dataclasses.replace(parsed, dynamic_range_db=float(dynamic_range_db))
    if hop is not None and "hop" not in options:
        parsed = dataclasses.replace(parsed, hop=int(hop))
    return parsed


CARRIER_MIN_ROWS = 16  # a component this many rows tall may hold a carrier crossed by bursts
CARRIER_PARTS = 3  # a carrier crossed by bursts fills at most 1/this of its component's width
CARRIER_CROSSING_SHARE = 0.35  # crossing bursts fill at most this share of the carrier's rows (median column)


def _label_carriers(mask: np.ndarray, labels: np.ndarray, fraction: float, reach: int) -> tuple[int, int]:
    """Label ``mask`` into ``labels`` (same shape) with its carriers apart; the number of burst
    components (labels ``1..n_bursts``) and of all components (the carriers after the bursts).

    Columns set in at least ``fraction`` of the mask's rows (widened by ``reach``: the smoothing
    and closing spread a carrier sideways) are carriers, labelled on their own; the rest is
    labelled without them, bridged across a carrier where a burst sits on both sides of it (a
    wideband burst over a carrier stays one box). One ``ndimage.label`` pass for the bursts; the
    carriers are labelled on their own few columns, packed side by side with an empty column
    between runs that are not adjacent, which numbers them as labelling them in place would.
    """
    h, w = mask.shape
    cols = np.flatnonzero(_carrier_columns(mask, fraction, reach))
    if cols.size == 0:
        n = int(scipy.ndimage.label(mask, output=labels))
        return n, n
    bursts = mask.copy()
    bursts[:, cols] = False
    # Bridge each run of carrier columns [a, b) in the rows where the burst mask is set on both
    # sides (the run's own pixels take the carrier's label below; unset ones stay background).
    breaks = np.flatnonzero(np.diff(cols) > 1)  # a run ends after cols[i] for i in breaks
    starts = np.concatenate(([cols[0]], cols[breaks + 1]))
    stops = np.concatenate((cols[breaks] + 1, [cols[-1] + 1]))
    for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
        if a > 0 and b < w:
            bursts[:, a:b] = (mask[:, a - 1] & mask[:, b])[:, None]
    n_bursts = int(scipy.ndimage.label(bursts, output=labels))
    # Carriers stay whole (a bridged burst keeps its pixels on both sides, so its box still
    # spans the carrier): every masked pixel of a carrier column takes its carrier's label.
    packed_col = np.arange(cols.size) + np.searchsorted(breaks, np.arange(cols.size), side="left")
    packed = np.zeros((h, cols.size + breaks.size), dtype=bool)
    packed[:, packed_col] = mask[:, cols]
    carrier_labels, n_carriers = scipy.ndimage.label(packed)
    in_place = carrier_labels[:, packed_col]
    in_place[in_place > 0] += n_bursts
    labels[:, cols] = in_place
    return n_bursts, n_bursts + int(n_carriers)


def _carrier_columns(mask: np.ndarray, fraction: float, reach: int) -> np.ndarray:
    """Which columns of ``mask`` belong to a carrier: set in at least ``fraction`` of its rows,
    widened by ``reach`` columns on each side (smoothing and closing spread a carrier sideways)."""
    occupied = np.add.reduce(mask, axis=0, dtype=np.int32) >= fraction * mask.shape[0]
    if reach and occupied.any():
        return scipy.ndimage.binary_dilation(occupied, iterations=reach)
    return occupied


def _split_components(
    labels: np.ndarray, bursts: np.ndarray, n: int, fraction: float, reach: int, min_rows: int
) -> int:
    """Apply :func:`_label_carriers` inside each burst component (label ``k`` with its box
    ``bursts[k - 1]``, x0, y0, x1, y1; ``labels`` holds ``n`` labels and is changed in place) at
    least ``min_rows`` tall whose carrier columns (on in ``fraction`` of the component's own
    rows, widened by ``reach``) fill at most a third of its width while the rest fills few of
    those rows: a carrier on for part of the frame, crossed by wider bursts (a CW burst or a voice
    carrier and the hops across it), which would otherwise be one box, the carrier's. Pieces after
    the first get new labels from ``n + 1``; returns the new count.

    The frame's carriers (labels ``len(bursts) + 1 .. n``) inside the component's box take part
    as carriers, so a burst bridged across one stays one piece. A component that is all carrier (a
    tone, a CW burst, a 2-FSK pair of lines) or has none (a wideband burst, a chirp) is left as
    it is.
    """
    total, n_bursts = n, len(bursts)
    b = bursts.astype(np.int64)
    tall = (b[:, 3] - b[:, 1] >= min_rows) & (b[:, 2] - b[:, 0] >= CARRIER_PARTS * (2 * reach + 1))
    for k in (np.flatnonzero(tall) + 1).tolist():
        x0, y0, x1, y1 = b[k - 1].tolist()
        region = labels[y0:y1, x0:x1]
        own = region == k
        h, w = own.shape
        carrier = _carrier_columns(own, fraction, reach)
        if not carrier.any() or CARRIER_PARTS * int(carrier.sum()) > w:
            continue
        # Bursts crossing a carrier fill few of its rows; a weak wideband signal whose columns are
        # each set in about half the rows (a few reaching ``fraction`` by chance) is one signal.
        rest = np.add.reduce(own[:, ~carrier], axis=0, dtype=np.int32)
        rest = rest[rest > 0]
        if rest.size == 0 or float(np.median(rest)) > CARRIER_CROSSING_SHARE * h:
            continue
        sub = np.zeros(own.shape, dtype=np.int32)
        frame_carriers = (region > n_bursts) & (region <= n)  # not pieces split off before
        _label_carriers(own | frame_carriers, sub, fraction, reach)
        ids, inverse = np.unique(sub[own], return_inverse=True)
        if ids.size < 2:
            continue
        # the first piece keeps the label k, the others are numbered after every label so far
        new = np.concatenate(([k], np.arange(total + 1, total + ids.size)))
        region[own] = new[inverse.ravel()]
        total += ids.size - 1
    return total


def _bounding_boxes(ys: np.ndarray, xs: np.ndarray, ids: np.ndarray, kept: np.ndarray, n: int) -> np.ndarray:
    """Boxes ``(len(kept), 4)`` x0, y0, x1, y1 (float64) of the labels ``kept`` (ascending).

    From the masked pixels' rows ``ys``, columns ``xs`` and labels ``ids``: what
    ``find_objects`` gives, without scanning the whole label image.
    """
    slot = np.full(n + 1, -1, dtype=np.int64)
    slot[kept] = np.arange(kept.size)
    j = slot[ids]
    sel = j >= 0
    j, y, x = j[sel], ys[sel], xs[sel]
    x0, y0 = np.full(kept.size, np.iinfo(np.int64).max), np.full(kept.size, np.iinfo(np.int64).max)
    x1, y1 = np.full(kept.size, -1), np.full(kept.size, -1)
    np.minimum.at(x0, j, x)
    np.minimum.at(y0, j, y)
    np.maximum.at(x1, j, x)
    np.maximum.at(y1, j, y)
    return np.stack([x0, y0, x1 + 1, y1 + 1], axis=1).astype(np.float64)  # x1, y1: one past the last


def _trim_edges(
    residual: np.ndarray, boxes: np.ndarray, fraction: float, tall_rows: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pull each box's edges in to the first/last row and column whose mean over the box reaches
    ``fraction`` of the profile's peak (``residual``: the unsmoothed image minus its floor);
    also return the mean of ``residual`` over each trimmed box.

    Smoothing and closing spread a strong signal's component by a pixel or more on each side,
    which matters for narrow carriers and short pulses; averaging the raw image along the
    other axis of the box makes the profile quiet enough to find the true edge. Only trims.
    A box at least ``tall_rows`` tall (a carrier) takes its column profile as the *median* over
    its rows: a burst that touches the carrier for a while does not widen the carrier's box.
    """
    out = boxes.copy()
    mean = np.empty(boxes.shape[0])
    for i, (x0, y0, x1, y1) in enumerate(boxes.astype(np.int64).tolist()):
        region = residual[y0:y1, x0:x1]
        # Frequency first, then time over the kept columns only, so a narrow carrier's time
        # profile is not diluted by the noise columns that smoothing added beside it.
        robust = tall_rows is not None and y1 - y0 >= tall_rows
        lo, hi = _trim_profile(region, 0, fraction, median=robust)
        out[i, 0], out[i, 2] = x0 + lo, x0 + hi
        region = region[:, lo:hi]
        lo, hi = _trim_profile(region, 1, fraction)
        out[i, 1], out[i, 3] = y0 + lo, y0 + hi
        mean[i] = float(region[lo:hi].mean())
    return out, mean


SPLIT_MIN_SIGMAS = 8.0  # a box's on level must stand this many profile sigmas clear to be split
SPLIT_OFF_SIGMAS = 3.0  # and an off row lies within this many sigmas of the floor
SPLIT_MIN_PIECE_SLICES = 4.0  # runs shorter than this (slices) are bits or pulses, never split apart
# Only boxes wide relative to a burst's shortest length are split: a burst of modulated symbols
# (TDMA, packets) spans a time-bandwidth product of tens to hundreds, a keyed carrier's mark a few
# (its bandwidth is about its keying rate, plus drift), so an OOK packet's marks are never cut apart.
SPLIT_MIN_TB = 40.0


def _split_in_time(
    residual: np.ndarray,
    boxes: np.ndarray,
    mean: np.ndarray,
    *,
    sigma: float,
    fraction: float,
    min_gap: float,
    min_rows: int,
    min_piece_rows: float,
    min_columns: float,
    edge_fraction: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut each box where its signal is off: TDMA bursts, packets and hops on one channel, which
    smoothing and closing joined into one component, become one box each.

    The box's row profile (the unsmoothed image minus the floor, averaged over its columns) is
    *off* in a row below both ``fraction`` of its on level (the 90th percentile of the profile)
    and :data:`SPLIT_OFF_SIGMAS` sigmas of the profile's noise (the pixel sigma over the square
    root of the columns averaged); a run of off rows at least ``min_gap`` rows long (one STFT
    slice by default: a transmitter that was silent for a whole window) splits the box. Only
    boxes whose on level stands :data:`SPLIT_MIN_SIGMAS` sigmas clear are cut: in a weak signal
    a noisy row is not a gap. A piece shorter than ``min_rows`` is dropped; each piece's edges
    are trimmed again (:func:`_trim_edges`), as the whole box's were.
    """
    keep = np.ones(boxes.shape[0], dtype=bool)
    pieces_out: list[tuple[int, int, int, int]] = []
    gap = max(1, round(min_gap))
    min_piece = max(1, round(min_piece_rows))
    for i, (x0, y0, x1, y1) in enumerate(boxes.astype(np.int64).tolist()):
        if y1 - y0 < 2 * min_rows + gap or x1 - x0 < min_columns:
            continue
        profile = residual[y0:y1, x0:x1].mean(axis=1)
        noise = sigma / math.sqrt(max(1, x1 - x0))
        k90 = int(0.9 * (profile.size - 1))
        on = float(np.partition(profile, k90)[k90])
        if on < SPLIT_MIN_SIGMAS * noise:
            continue
        on_rows = profile >= min(fraction * on, SPLIT_OFF_SIGMAS * noise)
        pieces = _bursts(_runs(on_rows, gap), min_piece)
        if len(pieces) == 1:
            continue
        keep[i] = False
        pieces_out.extend((x0, y0 + a, x1, y0 + b) for a, b in pieces if b - a >= min_rows)
    if not pieces_out:
        return boxes[keep], mean[keep]
    # every piece's edges trimmed again, as the whole boxes' were, in one pass
    cut = np.array(pieces_out, dtype=np.float64)
    if edge_fraction > 0:
        cut, cut_mean = _trim_edges(residual, cut, edge_fraction)
    else:
        cut_mean = np.array([float(residual[y0:y1, x0:x1].mean()) for x0, y0, x1, y1 in pieces_out])
    return np.concatenate([boxes[keep], cut]), np.concatenate([mean[keep], cut_mean])


def _runs(on: np.ndarray, min_gap: int) -> list[tuple[int, int]]:
    """``[a, b)`` spans of ``on`` separated by at least ``min_gap`` off steps (shorter gaps are bridged)."""
    idx = np.flatnonzero(on)
    if idx.size == 0:
        return [(0, on.size)]
    cut = np.flatnonzero(np.diff(idx) > min_gap)
    starts = np.concatenate(([idx[0]], idx[cut + 1]))
    stops = np.concatenate((idx[cut] + 1, [idx[-1] + 1]))
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def _bursts(runs: list[tuple[int, int]], min_piece: int) -> list[tuple[int, int]]:
    """Join ``runs`` into bursts: a gap separates two bursts only where the runs on both sides of it
    are at least ``min_piece`` long; shorter runs are the keyed bits or pulses of one emission
    (an OOK packet's marks), which stay together."""
    out = [runs[0]]
    for (pa, pb), (a, b) in itertools.pairwise(runs):
        if pb - pa >= min_piece and b - a >= min_piece:
            out.append((a, b))
        else:
            out[-1] = (out[-1][0], b)
    return out


def _trim_profile(region: np.ndarray, axis: int, fraction: float, median: bool = False) -> tuple[int, int]:
    """First and one-past-last index (along the other axis) of the mean (or ``median``) profile
    over ``axis`` that reaches ``fraction`` of its peak. The peak is that of the profile's 3-step
    running mean, so one noisy step cannot set it, while a one-step-wide signal still does."""
    n = region.shape[1 - axis]
    if region.shape[axis] < 3:
        return 0, n  # one or two pixels per step is too noisy to trim by
    profile = np.median(region, axis=axis) if median else region.mean(axis=axis)
    peak = (
        float(np.convolve(profile, np.full(3, 1 / 3), mode="same").max()) if n >= 3 else float(profile.max())
    )
    if peak <= 0:
        return 0, n
    above = np.flatnonzero(profile >= fraction * peak)
    return int(above[0]), int(above[-1]) + 1


def _sliced_mean(xp: Any, image: Any, k: int, axis: int, out: Any) -> None:
    """Running mean of ``k`` (< the axis length) along ``axis`` into ``out``, edges replicated.

    The interior is ``k - 1`` sliced adds straight from the image (no padded copy); the
    ``k - 1`` edge rows (columns) are then redone from their clipped windows.
    """
    n = image.shape[axis]
    before, after = k // 2, k - 1 - k // 2
    k = min(k, n)

    def part(a: int, b: int) -> Any:  # rows (columns) a..b-1 of image / out along axis
        return image[a:b] if axis == 0 else image[:, a:b]

    if axis == 0:
        src, inner, m = image, out[before : n - after], n
    else:
        # Along rows, on the flattened frame: contiguous adds are several times faster than
        # adds over column-offset 2-D views; the columns whose window wraps into the next
        # row are the edge columns, redone below.
        src, m = image.reshape(-1), image.size
        inner = out.reshape(-1)[before : m - after]
    xp.add(src[0 : m - k + 1], src[1 : m - k + 2], out=inner)
    for j in range(2, k):
        xp.add(inner, src[j : m - k + 1 + j], out=inner)
    inner *= np.float32(1.0 / k)
    edge = image[:1] if axis == 0 else image[:, :1]
    for i in list(range(before)) + list(range(n - after, n)):
        lo, hi = i - before, i + after + 1
        total = part(max(lo, 0), min(hi, n)).sum(axis=axis, keepdims=True)
        if lo < 0:
            total += -lo * edge
        if hi > n:
            total += (hi - n) * (image[-1:] if axis == 0 else image[:, -1:])
        if axis == 0:
            out[i : i + 1] = total * np.float32(1.0 / k)
        else:
            out[:, i : i + 1] = total * np.float32(1.0 / k)


def _sweep(src: Any, out: Any, k: int, axis: int, before: int, grow: bool) -> None:
    """``out`` = OR (grow) or AND (shrink) of ``k`` shifted copies of ``src`` along ``axis``.

    Output ``i`` combines inputs ``i - before .. i - before + k - 1``; beyond the edge counts as
    unset when growing and as set when shrinking, so a shift simply skips the rows (columns)
    it would take from outside.
    """
    n = src.shape[axis]
    out[...] = src
    combine = np.logical_or if grow else np.logical_and
    for j in range(k):
        shift = j - before  # out[i] takes src[i + shift]
        if shift == 0 or abs(shift) >= n:
            continue
        if shift > 0:
            dst, take = slice(0, n - shift), slice(shift, n)
        else:
            dst, take = slice(-shift, n), slice(0, n + shift)
        if axis == 0:
            combine(out[dst], src[take], out=out[dst])
        else:
            combine(out[:, dst], src[:, take], out=out[:, dst])


def _chain(boxes: np.ndarray, which: np.ndarray, max_gap: float) -> tuple[list[list[int]], list[np.ndarray]]:
    """Chain boxes ``which`` in time order: each joins the first chain it overlaps in frequency
    by at least half the narrower of the two and follows (starts) within ``max_gap`` rows of its
    end. Returns the chains (box indices) and their spans (``x0, y0, x1, y1``)."""
    chains: list[list[int]] = []
    spans: list[np.ndarray] = []
    for i in which[np.argsort(boxes[which, 1], kind="stable")].tolist():
        x0, y0, x1, y1 = boxes[i]
        for members, span in zip(chains, spans, strict=True):
            overlap = min(x1, span[2]) - max(x0, span[0])
            if overlap >= 0.5 * min(x1 - x0, span[2] - span[0]) and y0 - span[3] <= max_gap:
                members.append(i)
                span[:] = (min(x0, span[0]), span[1], max(x1, span[2]), max(y1, span[3]))
                break
        else:
            chains.append([i])
            spans.append(boxes[i].copy())
    return chains, spans


def _join_keyed(
    boxes: np.ndarray, mean: np.ndarray, *, keyed_cols: float, max_gap: float
) -> tuple[np.ndarray, np.ndarray]:
    """Join the pieces of a keyed carrier: boxes narrower than ``keyed_cols`` (a carrier keyed on
    and off is about as wide as its keying rate) on the same columns (overlap at least half the
    narrower) and at most ``max_gap`` rows apart are the marks of one packet, which a run of
    spaces broke into pieces. Chained in time order (:func:`_chain`); the joined
    box's mean is the pieces' mean weighted by their rows. Other boxes pass."""
    narrow = np.flatnonzero((boxes[:, 2] - boxes[:, 0]) < keyed_cols)
    if narrow.size < 2:
        return boxes, mean
    groups, spans = _chain(boxes, narrow, max_gap)
    if len(groups) == narrow.size:
        return boxes, mean
    rows = boxes[:, 3] - boxes[:, 1]
    keep = np.ones(boxes.shape[0], dtype=bool)
    keep[narrow] = False
    joined_mean = [float(np.average(mean[m], weights=np.maximum(rows[m], 1e-9))) for m in groups]
    return (
        np.concatenate([boxes[keep], np.array(spans).reshape(-1, 4)]),
        np.concatenate([mean[keep], np.asarray(joined_mean)]),
    )


def _group_pulse_trains(
    boxes: np.ndarray, mean: np.ndarray, *, max_rows: float, max_gap: float, keyed_cols: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Join pulses that repeat at one frequency into one box per train (see the module docstring).

    Pulses are chained in time order (:func:`_chain`); other boxes pass.
    """
    short = (boxes[:, 3] - boxes[:, 1]) <= max_rows
    if np.count_nonzero(short) < 2:
        return boxes, mean
    trains, spans = _chain(boxes, np.flatnonzero(short), max_gap)
    # A wide pulse train is one emission only where it is regular (a radar's pulses at its
    # repetition interval); wide pulses at irregular times (ADS-B replies of different aircraft)
    # stay one box each. Narrow pulses (under ``keyed_cols`` columns: a carrier keyed on and off,
    # as wide as its keying rate) are the marks of one packet whatever their timing: data.
    regular = [_regular(boxes[m, 1]) or float(np.max(boxes[m, 2] - boxes[m, 0])) < keyed_cols for m in trains]
    alone = [i for m, r in zip(trains, regular, strict=True) if not r for i in m]
    trains = [m for m, r in zip(trains, regular, strict=True) if r]
    spans = [s for s, r in zip(spans, regular, strict=True) if r]
    keep = np.concatenate([np.flatnonzero(~short), np.asarray(alone, dtype=np.int64)])
    out_boxes = [boxes[keep], np.array(spans).reshape(-1, 4)]
    out_mean = [mean[keep], np.array([mean[m].mean() for m in trains])]
    return np.concatenate(out_boxes), np.concatenate(out_mean)


TRAIN_MIN_PULSES = 3
TRAIN_JITTER = 0.2  # an interval within this fraction of a multiple of the median one is regular
TRAIN_REGULAR_SHARE = 0.75


def _regular(starts: np.ndarray) -> bool:
    """Whether pulses starting at these rows repeat at one interval: at least
    ``TRAIN_MIN_PULSES``, and ``TRAIN_REGULAR_SHARE`` of the intervals within ``TRAIN_JITTER`` of a
    whole multiple of the median interval (a missed pulse doubles one)."""
    if starts.size < TRAIN_MIN_PULSES:
        return False
    steps = np.diff(np.sort(starts))
    median = float(np.median(steps))
    if median <= 0:
        return False
    ratio = steps / median
    near = (np.abs(ratio - np.round(ratio)) <= TRAIN_JITTER) & (np.round(ratio) >= 1)
    return float(np.mean(near)) >= TRAIN_REGULAR_SHARE


def _narrow_lines(residual: np.ndarray, boxes: np.ndarray, max_cols: float = 2.0) -> np.ndarray:
    """A box at most ``max_cols`` wide is a carrier narrower than a column that the window's main
    lobe spread over the two columns it straddles: its box becomes one column about the column
    centroid of its excess power (as the frame detector's decoder does, ``decode.refine_box``)."""
    return _to_centroid(residual, boxes, axis=1, max_size=max_cols, size=1.0)


def _narrow_pulses(residual: np.ndarray, boxes: np.ndarray, max_rows: float, rows: float) -> np.ndarray:
    """A box at most ``max_rows`` tall is a pulse shorter than the STFT window, which smeared it
    over the slices whose windows it falls in: its box becomes one slice (``rows`` rows) about the
    row centroid of its excess power, which is where the pulse is."""
    return _to_centroid(residual, boxes, axis=0, max_size=max_rows, size=rows)


def _fill(residual: np.ndarray, boxes: np.ndarray, level: float) -> np.ndarray:
    """Each box's share of pixels of ``residual`` (the raw image minus its floor) at least ``level``
    over it, counted over every pixel the box touches (at least one: a centroid box one column or
    one slice wide may straddle two)."""
    h, w = residual.shape
    out = np.empty(boxes.shape[0])
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        c0, r0 = min(int(x0), w - 1), min(int(y0), h - 1)
        c1, r1 = max(c0 + 1, min(math.ceil(x1), w)), max(r0 + 1, min(math.ceil(y1), h))
        out[i] = float(np.count_nonzero(residual[r0:r1, c0:c1] >= level)) / ((r1 - r0) * (c1 - c0))
    return out


def _to_centroid(
    residual: np.ndarray, boxes: np.ndarray, *, axis: int, max_size: float, size: float
) -> np.ndarray:
    """Boxes longer than ``size`` but at most ``max_size`` along ``axis`` (0: rows, 1: columns)
    shrink to ``size`` about the centroid of their excess power along it, kept inside the box."""
    lo_i, hi_i = (1, 3) if axis == 0 else (0, 2)
    out = boxes.copy()
    extent = boxes[:, hi_i] - boxes[:, lo_i]
    for i in np.flatnonzero((extent <= max_size) & (extent > size)).tolist():
        x0, y0, x1, y1 = boxes[i].astype(np.int64).tolist()
        profile = np.clip(residual[y0:y1, x0:x1].mean(axis=1 - axis), 0.0, None)
        if profile.sum() <= 0:
            continue
        start, stop = (y0, y1) if axis == 0 else (x0, x1)
        centre = start + 0.5 + float(np.dot(np.arange(profile.size), profile) / profile.sum())
        lo = min(max(centre - size / 2, float(start)), float(stop) - size)
        out[i, lo_i], out[i, hi_i] = lo, lo + size
    return out
