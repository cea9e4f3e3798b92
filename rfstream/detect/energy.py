"""The model-free energy detector: noise floor, threshold, connected components, boxes.

It knows nothing about any signal generator; every threshold comes from the
noise statistics of the frame it is looking at:

1. **Smooth** the image twice, with a running mean along time (``smooth_t``
   rows) and one along frequency (``smooth_f`` columns): matched to long narrow
   carriers and to short wideband pulses respectively, each cuts the 1–3 dB
   pixel noise by about the square root of its length without smearing a
   one-column carrier or a one-row pulse into the noise. A pixel counts when it
   stands out in either (steps 3–4 run on both and OR the masks).
2. **Floor baseline per frequency column**: a low percentile over time of each
   column (``baseline_percentile``; signals on for less than the rest of the
   frame do not lift it), then a running median across frequency over
   ``baseline_window_frac`` of the width. The median across frequency ignores
   always-on narrow carriers (narrower than half the window) and follows
   sloped floors and filter roll-off at the band edges (a median over a
   straight slope is the value at its centre), so neither becomes a detection.
   Edges reflect, which errs towards a higher floor, not false alarms.
3. **Robust noise statistics** of each floor-removed image on a strided sample:
   centre ``mu`` = median, spread ``sigma`` = median − 15.87th percentile. The
   lower side is used because signals only ever add to the upper side, so up to
   about half the frame may be occupied without inflating ``sigma``.
4. **Hysteresis threshold**: a component needs at least one *seed* pixel above
   ``mu + max(seed_sigma·sigma, min_margin_db)`` and grows over the pixels
   above ``mu + max(grow_sigma·sigma, min_margin_db·grow_sigma/seed_sigma)``;
   in ``otsu`` mode the seed level is raised to Otsu's split of the
   floor-removed image where that is higher (never lowered: on a pure-noise
   frame Otsu would split the noise in two).
5. **Morphological closing** of the grown mask (``closing_t`` × ``closing_f``)
   bridges the small holes of keyed or hopping-within-band signals, then
   ``scipy.ndimage.label`` / ``find_objects`` give components and boxes.
6. Components smaller than ``min_time_px`` × ``min_freq_px`` or
   ``min_area_px`` are dropped, as is a component lying entirely within
   ``dc_guard_px`` columns of the centre frequency (the DC spike of
   direct-conversion receivers such as the RTL-SDR — a real carrier exactly at
   DC is missed for this; set ``dc_guard_px = 0`` to keep it).

**Box edges** are then trimmed to where the box's mean profile along each axis
(unsmoothed image minus the floor) reaches ``edge_fraction`` of its peak, which
undoes the spread that smoothing, growing and closing add around strong signals.

**Score**: the component's mean SNR in dB (mean over its pixels of the larger
of the two smoothed levels above the floor, times the image's dB per unit) mapped monotonically
onto [0, 1] as ``snr / (snr + score_half_db)`` — 0 dB → 0, ``score_half_db`` → 0.5,
approaching 1 for strong signals.

Limitations: an always-on signal wider than half the baseline window becomes
part of the floor; signals closer than the closing size merge into one box.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.ndimage

from rfstream.config import DetectorConfig
from rfstream.detect.base import at_least, check_options, in_range, parse_options, positive
from rfstream.types import Detection, Frame

__all__ = ["EnergyDetector", "EnergyOptions"]


@dataclass(frozen=True, slots=True)
class EnergyOptions:
    """Settings of the energy detector (``[[detectors]] kind = "energy"``, table ``options``)."""

    method: Literal["floor", "otsu"] = "floor"  # seed threshold: noise floor + margin, or Otsu (never lower)
    seed_sigma: float = field(default=5.0, metadata=positive("seed margin above the floor, robust sigmas"))
    grow_sigma: float = field(default=2.5, metadata=positive("grow margin above the floor, robust sigmas"))
    min_margin_db: float = field(default=2.0, metadata=at_least(0.0, "seed margin never below this, dB"))
    smooth_t: int = field(default=5, metadata=at_least(1, "running mean along time, rows"))
    smooth_f: int = field(default=5, metadata=at_least(1, "running mean along frequency, columns"))
    baseline_percentile: float = field(
        default=20.0, metadata=in_range(0.0, 100.0, "per-column percentile over time for the floor")
    )
    baseline_window_frac: float = field(
        default=0.125,
        metadata=in_range(0.0, 1.0, "running-median window across frequency, fraction of width"),
    )
    closing_t: int = field(default=3, metadata=at_least(1, "closing size, rows (1 = none)"))
    closing_f: int = field(default=3, metadata=at_least(1, "closing size, columns (1 = none)"))
    min_time_px: int = field(default=2, metadata=at_least(1, "smallest box height, rows"))
    min_freq_px: int = field(default=1, metadata=at_least(1, "smallest box width, columns"))
    min_area_px: int = field(default=12, metadata=at_least(1, "smallest component, pixels"))
    max_detections: int = field(default=100, metadata=positive("most boxes per frame, best scores first"))
    dc_guard_px: int = field(default=2, metadata=at_least(0, "drop components within ± this of DC"))
    score_half_db: float = field(default=10.0, metadata=positive("mean SNR that scores 0.5, dB"))
    dynamic_range_db: float = field(
        default=50.0, metadata=positive("dB per image unit; must equal spectrogram.dynamic_range_db")
    )
    stats_stride: int = field(default=4, metadata=at_least(1, "sample every Nth row/column for statistics"))
    edge_fraction: float = field(
        default=0.5, metadata=in_range(0.0, 1.0, "trim box edges below this fraction of the peak profile")
    )


class EnergyDetector:
    """Threshold + connected components on one Frame. See the module docstring.

    ``propose(image, dc_column)`` is the cheap core (pixel boxes and scores as
    arrays), shared with the two-stage detector; ``detect(frame)`` wraps it into
    Detections labelled ``"unknown"``.
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
    ) -> None:
        check_options(options, f"detectors.{name}.options")
        self.name = name
        self.options = options
        self.priority = priority
        self.score_threshold = max(0.0, float(score_threshold))
        self.xp = xp
        if xp is np:
            import scipy.ndimage as ndi

            self._to_host = np.asarray
        else:  # CuPy: same calls through cupyx; labelling results come back to the host
            import cupyx.scipy.ndimage as ndi

            self._to_host = xp.asnumpy
        self._ndi = ndi
        o = options
        self._unit_db = float(o.dynamic_range_db)
        self._min_seed = o.min_margin_db / self._unit_db
        self._min_grow = self._min_seed * o.grow_sigma / o.seed_sigma
        self._shape: tuple[int, int] | None = None

    @classmethod
    def from_config(
        cls, cfg: DetectorConfig, xp: Any = np, *, dynamic_range_db: float | None = None
    ) -> EnergyDetector:
        """Build from a ``[[detectors]]`` record; ``options`` are checked key by key.

        ``score_threshold < 0`` means the default (0: keep every component); ``labels`` does
        not apply (everything is ``"unknown"``). ``dynamic_range_db``: pass
        ``spectrogram.dynamic_range_db`` so dB margins and scores are right; an explicit
        ``options.dynamic_range_db`` wins.
        """
        options = parse_options(EnergyOptions, cfg.options, f"detectors.{cfg.name}.options")
        if dynamic_range_db is not None and "dynamic_range_db" not in cfg.options:
            options = dataclasses.replace(options, dynamic_range_db=float(dynamic_range_db))
        threshold = cfg.score_threshold if cfg.score_threshold >= 0 else 0.0
        return cls(cfg.name, options, priority=cfg.priority, score_threshold=threshold, xp=xp)

    # --- lifecycle ----------------------------------------------------------------------------
    def warmup(self, frame_shape: tuple[int, int]) -> None:
        self._allocate(tuple(frame_shape))  # type: ignore[arg-type]
        noise = np.random.default_rng(0).normal(0.12, 0.03, size=frame_shape).astype(np.float32)
        self.propose(self.xp.asarray(noise))

    def close(self) -> None:
        self._shape = None

    def _allocate(self, shape: tuple[int, int]) -> None:
        xp, o = self.xp, self.options
        h, w = shape
        self._pad_t = xp.empty((h + o.smooth_t - 1, w), dtype=xp.float32)
        self._pad_f = xp.empty((h, w + o.smooth_f - 1), dtype=xp.float32)
        self._along_t = xp.empty((h, w), dtype=xp.float32)
        self._along_f = xp.empty((h, w), dtype=xp.float32)
        window = max(3, round(o.baseline_window_frac * w) | 1)  # odd, so centred
        self._baseline_window = min(window, w if w % 2 else w - 1) if w >= 3 else 1
        self._shape = shape

    # --- the work -----------------------------------------------------------------------------
    def _box_mean(self, image: Any, k: int, axis: int, pad: Any, out: Any) -> Any:
        """Running mean of length ``k`` along ``axis``, edges replicated; sliced adds into buffers."""
        xp = self.xp
        if k <= 1:
            xp.copyto(out, image)
            return out
        before, n = k // 2, image.shape[axis]
        if axis == 0:
            pad[before : before + n] = image
            pad[:before] = image[:1]
            pad[before + n :] = image[-1:]
            xp.copyto(out, pad[0:n])
            for j in range(1, k):
                xp.add(out, pad[j : j + n], out=out)
        else:
            pad[:, before : before + n] = image
            pad[:, :before] = image[:, :1]
            pad[:, before + n :] = image[:, -1:]
            xp.copyto(out, pad[:, 0:n])
            for j in range(1, k):
                xp.add(out, pad[:, j : j + n], out=out)
        out *= np.float32(1.0 / k)
        return out

    def _floor_baseline(self, smooth: Any) -> Any:
        """Per-column noise floor: low percentile over time, running median across frequency."""
        xp, o = self.xp, self.options
        sample = xp.ascontiguousarray(smooth[:: o.stats_stride].T)  # columns contiguous: fast partition
        n = sample.shape[1]
        k = min(n - 1, int(o.baseline_percentile / 100.0 * (n - 1)))
        column_floor = xp.partition(sample, k, axis=1)[:, k]
        if self._baseline_window <= 1:
            return column_floor
        return self._ndi.median_filter(column_floor, size=self._baseline_window, mode="reflect")

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

    def _close(self, mask: Any) -> Any:
        """Binary closing with a rectangle; outside the image counts as set so edges don't erode.

        Separable sliced OR/AND passes: several times faster than ndimage's generic binary
        morphology on a 1024×1024 mask.
        """
        o = self.options
        for axis, k in ((0, o.closing_t), (1, o.closing_f)):
            if k > 1:
                mask = _sweep(self.xp, mask, k, axis, k // 2, grow=True)
                mask = _sweep(self.xp, mask, k, axis, k - 1 - k // 2, grow=False)
        return mask

    def propose(self, image: Any, dc_column: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pixel boxes ``(N, 4)`` as ``x0, y0, x1, y1`` (float64, host) and scores ``(N,)``.

        Best scores first, at most ``max_detections``, scores ≥ the detector's threshold.
        ``dc_column``: the column of the centre frequency (for the DC guard), or None.
        """
        xp, o, ndi = self.xp, self.options, self._ndi
        image = xp.asarray(image, dtype=xp.float32)
        if image.ndim != 2 or min(image.shape) < 1:
            return np.zeros((0, 4)), np.zeros(0)
        if self._shape != image.shape:
            self._allocate(image.shape)
        # Two matched smoothings: along time (long narrow carriers) and along frequency (short
        # wideband pulses); a pixel counts when either stands out from its own noise.
        along_t = self._box_mean(image, o.smooth_t, 0, self._pad_t, self._along_t)
        along_f = self._box_mean(image, o.smooth_f, 1, self._pad_f, self._along_f)
        baseline = self._floor_baseline(along_t)
        seed_mask = grow_mask = None
        centres = []
        for residual in (along_t, along_f):
            residual -= baseline[None, :]
            sample = self._to_host(residual[:: o.stats_stride, :: o.stats_stride]).ravel()
            q16, mu = (float(q) for q in np.percentile(sample, [15.87, 50.0]))
            sigma = max(mu - q16, 1e-6)
            seed = mu + max(o.seed_sigma * sigma, self._min_seed)
            if o.method == "otsu":
                seed = max(seed, self._otsu(sample))
            grow = mu + max(o.grow_sigma * sigma, self._min_grow)
            centres.append(mu)
            residual -= np.float32(mu)  # now in "above the floor" units, for the score
            seeds, grows = residual > seed - mu, residual > grow - mu
            seed_mask = seeds if seed_mask is None else xp.logical_or(seed_mask, seeds)
            grow_mask = grows if grow_mask is None else xp.logical_or(grow_mask, grows)
        level = xp.maximum(along_t, along_f, out=along_t)
        floor = self._to_host(baseline) + np.float32(centres[0])  # the raw image's floor, per column

        mask = self._close(grow_mask)
        labels, n = ndi.label(mask)
        labels = self._to_host(labels)
        seeded = np.unique(labels[self._to_host(seed_mask)])
        seeded = seeded[seeded > 0]
        if seeded.size == 0:
            return np.zeros((0, 4)), np.zeros(0)
        # Renumber the seeded components 1..k; everything else becomes background.
        lut = np.zeros(n + 1, dtype=np.int32)
        lut[seeded] = np.arange(1, seeded.size + 1, dtype=np.int32)
        kept = lut[labels]
        slices = scipy.ndimage.find_objects(kept)
        flat = kept.ravel()
        where = np.flatnonzero(flat)
        ids = flat[where]
        area = np.bincount(ids, minlength=seeded.size + 1)[1:]
        sums = np.bincount(ids, weights=self._to_host(level).ravel()[where], minlength=seeded.size + 1)[1:]

        boxes = np.array(
            [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in slices], dtype=np.float64
        ).reshape(-1, 4)
        snr_db = np.maximum(sums / np.maximum(area, 1) * self._unit_db, 0.0)
        scores = snr_db / (snr_db + o.score_half_db)
        keep = (
            (boxes[:, 3] - boxes[:, 1] >= o.min_time_px)
            & (boxes[:, 2] - boxes[:, 0] >= o.min_freq_px)
            & (area >= o.min_area_px)
            & (scores >= self.score_threshold)
        )
        boxes, scores = boxes[keep], scores[keep]
        # Best first; ties broken by position so the output does not depend on label numbering.
        order = np.lexsort((boxes[:, 1], boxes[:, 0], -scores))[: o.max_detections]
        boxes, scores = boxes[order], scores[order]
        if o.edge_fraction > 0 and boxes.shape[0]:
            boxes = _trim_edges(self._to_host(image), floor, boxes, o.edge_fraction)
        if dc_column is not None and o.dc_guard_px > 0:
            lo, hi = math.floor(dc_column) - o.dc_guard_px, math.floor(dc_column) + o.dc_guard_px + 1
            outside = ~((boxes[:, 0] >= lo) & (boxes[:, 2] <= hi))
            boxes, scores = boxes[outside], scores[outside]
        return boxes, scores

    def detect(self, frame: Frame) -> list[Detection]:
        dc_column = (frame.chunk.center_freq_hz - frame.f0_hz) / frame.df_hz
        boxes, scores = self.propose(frame.image, dc_column)
        return [
            frame.detection(x0, y0, x1, y1, score=s, label="unknown", detector=self.name)
            for (x0, y0, x1, y1), s in zip(boxes.tolist(), scores.tolist(), strict=True)
        ]


def _trim_edges(image: np.ndarray, floor: np.ndarray, boxes: np.ndarray, fraction: float) -> np.ndarray:
    """Pull each box's edges in to the first/last row and column whose mean over the box reaches
    ``fraction`` of the profile's peak (unsmoothed image minus the per-column ``floor``).

    Smoothing and closing spread a strong signal's component by a pixel or more on each side,
    which matters for narrow carriers and short pulses; averaging the raw image along the
    other axis of the box makes the profile quiet enough to find the true edge. Only trims.
    """
    out = boxes.copy()
    for i, (x0, y0, x1, y1) in enumerate(boxes.astype(np.int64).tolist()):
        region = image[y0:y1, x0:x1] - floor[None, x0:x1]
        # Frequency first, then time over the kept columns only, so a narrow carrier's time
        # profile is not diluted by the noise columns that smoothing added beside it.
        lo, hi = _trim_profile(region, 0, fraction)
        out[i, 0], out[i, 2] = x0 + lo, x0 + hi
        lo, hi = _trim_profile(region[:, lo:hi], 1, fraction)
        out[i, 1], out[i, 3] = y0 + lo, y0 + hi
    return out


def _trim_profile(region: np.ndarray, axis: int, fraction: float) -> tuple[int, int]:
    """First and one-past-last index (along the other axis) of the mean profile over ``axis``
    that reaches ``fraction`` of its peak. The peak is that of the profile's 3-step running
    mean, so one noisy step cannot set it, while a one-step-wide signal still does."""
    n = region.shape[1 - axis]
    if region.shape[axis] < 3:
        return 0, n  # one or two pixels per step is too noisy to trim by
    profile = region.mean(axis=axis)
    peak = (
        float(np.convolve(profile, np.full(3, 1 / 3), mode="same").max()) if n >= 3 else float(profile.max())
    )
    if peak <= 0:
        return 0, n
    above = np.flatnonzero(profile >= fraction * peak)
    return int(above[0]), int(above[-1]) + 1


def _sweep(xp: Any, mask: Any, k: int, axis: int, before: int, grow: bool) -> Any:
    """OR (grow) or AND (shrink) of ``k`` shifted copies of ``mask`` along ``axis``.

    Output ``i`` combines inputs ``i - before .. i - before + k - 1``; beyond the edge counts as
    unset when growing and as set when shrinking.
    """
    n = mask.shape[axis]
    shape = list(mask.shape)
    shape[axis] = n + k - 1
    padded = xp.full(shape, not grow, dtype=bool)
    index = [slice(None)] * mask.ndim
    index[axis] = slice(before, before + n)
    padded[tuple(index)] = mask
    index[axis] = slice(0, n)
    out = padded[tuple(index)].copy()
    combine = xp.logical_or if grow else xp.logical_and
    for j in range(1, k):
        index[axis] = slice(j, j + n)
        combine(out, padded[tuple(index)], out=out)
    return out
