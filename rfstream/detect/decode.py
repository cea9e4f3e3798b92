"""Decode the frame detector's heatmaps into Detections (pure NumPy/SciPy).

The frame detector predicts, on a grid ``stride`` times coarser than the frame,
an objectness map (probability that a cell lies inside a signal) and a class
map (softmax over the model's labels). Decoding:

1. threshold objectness at ``mask_threshold``; per label, the cells whose best
   label it is or whose probability for it is at least ``class_threshold`` form
   that label's mask, and its 4-connected components (``scipy.ndimage.label``)
   are the candidate signals. Per-label components keep crossing signals apart:
   a carrier running through an OFDM burst would otherwise join every burst it
   crosses into one component (the model is trained to split a shared cell's
   probability between the labels covering it). Where the other signal wins a
   cell, the crossed one loses it: gaps of at most ``bridge_cells`` (16) cells
   along time between a label's narrow components (at most two cells wide:
   carriers) are bridged through cells that are signal (objectness above the
   threshold), so a carrier under OFDM bursts and hops stays one box;
2. the component's cell extent × ``stride`` is its box in frame pixels;
3. ``refine`` (default on) tightens that box to sub-cell precision from the
   frame image itself: inside the box grown by one cell, the column profile
   (mean over rows) and then the row profile are cut at half their peak height
   above the frame's noise floor (``Frame.noise_floor``, set by the spectrogram
   stage; measured from the image only for frames without it) — the heatmap
   says *where* a signal is, the pixels say *exactly how wide*. A box that
   comes out at most ``narrow_px`` (2) columns wide — a carrier narrower than a
   column — becomes one column wide, centred on the power-weighted centre of the
   columns around it (likewise rows, for a pulse shorter than a row), so a
   sub-column signal's box straddles two columns where the signal does;
4. label = argmax of the component's mean class probabilities; raw score = mean
   objectness over the component × that class probability; components smaller
   than ``min_cells`` are dropped;
5. calibration: a model whose metadata carries ``rfstream.calibration`` (per-label
   Platt scaling fitted on validation captures at training time, see
   :mod:`rfstream.train.calibrate`) publishes the calibrated score — the
   probability that the box is a real signal of that label — and its threshold
   is on that scale (the calibration's max-F1 operating threshold unless the
   config sets one). Components whose (calibrated) score is below
   ``score_threshold`` are dropped.

The box goes through ``frame.detection`` so pixel→physical conversion stays in
the Frame.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.ndimage

from rfstream.detect.calibration import Calibration
from rfstream.detect.crops import frame_noise_floor
from rfstream.errors import ModelError
from rfstream.types import Detection, Frame

__all__ = ["FrameDecoder", "decode_frame_detector", "model_threshold", "refine_box"]

_FOUR_CONNECTED = scipy.ndimage.generate_binary_structure(2, 1)


def _extent(profile: np.ndarray, floor: float, frac: float) -> tuple[int, int] | None:
    """First and one-past-last index where ``profile`` is above the cut, or None."""
    peak = float(profile.max())
    if peak <= floor:
        return None
    above = np.flatnonzero(profile >= floor + frac * (peak - floor))
    return int(above[0]), int(above[-1]) + 1


NARROW_CELLS = 2  # components at most this many cells wide are carriers that bridging may join


@functools.lru_cache(maxsize=8)
def _bridge(cells: int) -> np.ndarray:
    return np.ones((2 * cells + 1, 1), dtype=bool)


def _split_bridged(class_mask: np.ndarray, mask: np.ndarray, cells: int) -> list[np.ndarray]:
    """``class_mask`` as [wide part, narrow part with gaps of ≤ ``cells`` along time bridged].

    A narrow signal crossed by a wider one (a carrier under OFDM bursts and hops) loses its
    label where the other wins. Components at most ``NARROW_CELLS`` wide (carriers) are joined
    across such gaps, in their own columns, through cells that are signal (``mask``) but not
    part of a wide component of the same label. The two parts are labelled separately, so a
    bridge never glues wide components (hops on one channel) together.
    """
    components, n = scipy.ndimage.label(class_mask, structure=_FOUR_CONNECTED)
    if n < 2:
        return [class_mask]
    narrow = np.zeros_like(class_mask)
    for index, window in enumerate(scipy.ndimage.find_objects(components), start=1):
        if window is not None and window[1].stop - window[1].start <= NARROW_CELLS:
            narrow[window] |= components[window] == index
    if not narrow.any():
        return [class_mask]
    wide = class_mask & ~narrow
    padded = np.pad(narrow, ((cells, cells), (0, 0)))  # no erosion at the frame's edges
    closed = scipy.ndimage.binary_closing(padded, structure=_bridge(cells))[cells:-cells]
    return [wide, (closed & mask & ~wide) | narrow]


EVEN_SPLIT = 0.7  # two columns this close in power are a signal two columns wide, not one between them


def _centroid(profile: np.ndarray, lo: int, hi: int, floor: float, inner: tuple[int, int]) -> float | None:
    """Power-weighted centre (profile indices, cell centres at +0.5) of ``profile[lo:hi]``.

    None when there is no power, or when the ``inner`` span (the refined extent) is two cells
    of about equal power: a signal that really is two cells wide keeps its two cells.
    """
    lo, hi = max(0, lo), min(profile.shape[0], hi)
    w = np.clip(profile[lo:hi] - floor, 0.0, None)
    total = float(w.sum())
    if hi <= lo or total <= 0.0:
        return None
    a, b = inner
    if b - a == 2 and a >= lo and b <= hi:
        pair = w[a - lo : b - lo]
        if float(pair.min()) >= EVEN_SPLIT * float(pair.max()):
            return None
    return float(np.dot(w, np.arange(lo, hi) + 0.5) / total)


def refine_box(
    image: Any,
    box: tuple[int, int, int, int],
    *,
    floor: float,
    grow: int,
    frac: float = 0.5,
    narrow_px: int = 2,
) -> tuple[float, float, float, float]:
    """Tighten a coarse pixel box (x0, y0, x1, y1) on the image's own energy profile.

    Returns the coarse box unchanged when the profile shows nothing above the floor.
    A box that comes out at most ``narrow_px`` columns wide (a carrier narrower than a
    column) becomes one column wide, centred on the power-weighted centre of the columns
    around it: where a sub-column signal lies between two columns, the box straddles them
    as the signal does. Two columns of about equal power (within ``EVEN_SPLIT``) stay two. The same holds for rows (a pulse shorter than a row). 0 turns it off.
    """
    x0, y0, x1, y1 = box
    height, width = int(image.shape[0]), int(image.shape[1])
    gx0, gy0 = max(0, x0 - grow), max(0, y0 - grow)
    gx1, gy1 = min(width, x1 + grow), min(height, y1 + grow)
    region = np.asarray(image[gy0:gy1, gx0:gx1], dtype=np.float32)
    col_profile = region.mean(axis=0)
    cols = _extent(col_profile, floor, frac)
    if cols is None:
        return float(x0), float(y0), float(x1), float(y1)
    row_profile = region[:, cols[0] : cols[1]].mean(axis=1)
    rows = _extent(row_profile, floor, frac)
    rows = rows or (y0 - gy0, y1 - gy0)
    # Each edge moves at most ``grow`` pixels from the coarse box.
    rx0 = min(max(gx0 + cols[0], x0 - grow), x0 + grow)
    rx1 = max(min(gx0 + cols[1], x1 + grow), x1 - grow, rx0 + 1)
    ry0 = min(max(gy0 + rows[0], y0 - grow), y0 + grow)
    ry1 = max(min(gy0 + rows[1], y1 + grow), y1 - grow, ry0 + 1)
    out = [float(rx0), float(ry0), float(rx1), float(ry1)]
    if narrow_px > 0 and rx1 - rx0 <= narrow_px:
        c = _centroid(col_profile, rx0 - gx0 - 1, rx1 - gx0 + 1, floor, (rx0 - gx0, rx1 - gx0))
        if c is not None:
            out[0], out[2] = gx0 + c - 0.5, gx0 + c + 0.5
    if narrow_px > 0 and ry1 - ry0 <= narrow_px:
        c = _centroid(row_profile, ry0 - gy0 - 1, ry1 - gy0 + 1, floor, (ry0 - gy0, ry1 - gy0))
        if c is not None:
            out[1], out[3] = gy0 + c - 0.5, gy0 + c + 0.5
    return out[0], out[1], out[2], out[3]


def decode_frame_detector(
    objectness: np.ndarray,
    class_probs: np.ndarray,
    frame: Frame,
    *,
    labels: Sequence[str],
    stride: int,
    score_threshold: float,
    detector_name: str,
    mask_threshold: float = 0.5,
    class_threshold: float = 0.3,
    min_cells: int = 2,
    refine: bool = True,
    refine_frac: float = 0.5,
    narrow_px: int = 2,
    bridge_cells: int = 16,
    calibration: Calibration | None = None,
    **_params: Any,
) -> list[Detection]:
    """Heatmaps of one frame (``objectness [1,h,w]``, ``class_probs [C,h,w]``) -> Detections.

    ``calibration``: raw score -> calibrated score per label (None: raw scores);
    ``score_threshold`` applies to the score published. Unknown keyword parameters
    (from a newer model's ``rfstream.decoder``) are ignored.
    """
    obj = np.asarray(objectness, dtype=np.float32)
    probs = np.asarray(class_probs, dtype=np.float32)
    if obj.ndim == 3 and obj.shape[0] == 1:
        obj = obj[0]
    if obj.ndim != 2 or probs.ndim != 3 or probs.shape[1:] != obj.shape or probs.shape[0] != len(labels):
        raise ModelError(
            f"frame detector outputs do not fit: objectness {objectness.shape}, class_probs "
            f"{class_probs.shape}, {len(labels)} labels"
        )
    mask = obj >= mask_threshold
    if not mask.any():
        return []
    best = probs.argmax(axis=0)
    floor = frame_noise_floor(frame) if refine else 0.0
    detections: list[Detection] = []
    for c, label in enumerate(labels):
        # A cell joins label c's mask when c is its best label or probable enough (overlaps).
        class_mask = mask & ((best == c) | (probs[c] >= class_threshold))
        if not class_mask.any():
            continue
        parts = _split_bridged(class_mask, mask, bridge_cells) if bridge_cells > 0 else [class_mask]
        for part in parts:
            detections.extend(
                _components(
                    part,
                    obj,
                    probs,
                    c,
                    label,
                    frame,
                    stride,
                    min_cells,
                    score_threshold,
                    refine,
                    refine_frac,
                    narrow_px,
                    floor,
                    calibration,
                    detector_name,
                )
            )
    return detections


def _components(
    part: np.ndarray,
    obj: np.ndarray,
    probs: np.ndarray,
    c: int,
    label: str,
    frame: Frame,
    stride: int,
    min_cells: int,
    score_threshold: float,
    refine: bool,
    refine_frac: float,
    narrow_px: int,
    floor: float,
    calibration: Calibration | None,
    detector_name: str,
) -> list[Detection]:
    """The Detections of one label's mask (or part of it): its 4-connected components."""
    detections: list[Detection] = []
    components, _ = scipy.ndimage.label(part, structure=_FOUR_CONNECTED)
    for index, window in enumerate(scipy.ndimage.find_objects(components), start=1):
        if window is None:
            continue
        inside = components[window] == index
        if int(inside.sum()) < min_cells:
            continue
        score = float(obj[window][inside].mean()) * float(probs[c][window][inside].mean())
        if calibration is not None:
            score = calibration.score(label, score)
        if score < score_threshold:
            continue
        rows, cols = window
        box = (cols.start * stride, rows.start * stride, cols.stop * stride, rows.stop * stride)
        if refine:
            x0, y0, x1, y1 = refine_box(
                frame.host_image(), box, floor=floor, grow=stride, frac=refine_frac, narrow_px=narrow_px
            )
        else:
            x0, y0, x1, y1 = (float(v) for v in box)
        detections.append(frame.detection(x0, y0, x1, y1, score=score, label=label, detector=detector_name))
    return detections


def model_threshold(meta: Any) -> tuple[Calibration | None, float]:
    """A model's calibration (None when it has none) and its default threshold on that scale.

    A calibrated model's threshold is its calibration's operating threshold (max F1 on
    validation data) when it has one, else ``rfstream.score_threshold``.
    """
    calibration = getattr(meta, "calibration", None)
    if calibration is None or calibration.is_identity:
        return None, float(meta.score_threshold)
    threshold = calibration.threshold
    return calibration, float(meta.score_threshold if threshold is None else threshold)


@dataclass(frozen=True, slots=True)
class FrameDecoder:
    """A frame detector's outputs -> Detections, set up once from the model's metadata.

    Every frame-detector backend (ONNX Runtime, TensorRT, TorchScript) runs its model its own
    way and hands the two output maps here: the task check, the score threshold, the decoder
    parameters and the ``labels_kept`` filter live in one place.
    """

    detector_name: str
    labels: tuple[str, ...]
    stride: int
    score_threshold: float  # on the calibrated scale when ``calibration`` is set
    labels_kept: frozenset[str]
    params: Mapping[str, Any]
    calibration: Calibration | None = None

    @classmethod
    def for_model(
        cls,
        name: str,
        meta: Any,
        model_path: Any,
        kind: str,
        *,
        score_threshold: float | None = None,
        labels_kept: Sequence[str] = (),
        overrides: Mapping[str, Any] | None = None,
    ) -> FrameDecoder:
        """From a model's ``ModelMetadata``; ModelError when the model is not a frame detector.

        A calibrated model (``meta.calibration``) publishes calibrated scores; its default
        threshold is the calibration's operating threshold, and ``score_threshold`` (from the
        config) is read on the calibrated scale.
        """
        if meta.task != "frame_detector":
            raise ModelError(
                f"detector {name!r}: model {model_path} is a {meta.task}; kind {kind!r} needs a "
                f"frame_detector (a crop classifier belongs to kind 'two_stage')"
            )
        params = {k: v for k, v in meta.decoder.items() if k != "stride"}
        params.update(overrides or {})
        calibration, default = model_threshold(meta)
        return cls(
            detector_name=name,
            labels=tuple(meta.labels),
            stride=int(meta.decoder["stride"]),
            score_threshold=default if score_threshold is None else float(score_threshold),
            labels_kept=frozenset(labels_kept),
            params=params,
            calibration=calibration,
        )

    def __call__(self, objectness: Any, class_probs: Any, frame: Frame) -> list[Detection]:
        """Batch-of-one outputs ``[1, 1, h, w]`` and ``[1, C, h, w]`` for ``frame``."""
        found = decode_frame_detector(
            objectness[0],
            class_probs[0],
            frame,
            labels=self.labels,
            stride=self.stride,
            score_threshold=self.score_threshold,
            detector_name=self.detector_name,
            calibration=self.calibration,
            **self.params,
        )
        return [d for d in found if d.label in self.labels_kept] if self.labels_kept else found
