"""Crops for the crop classifier: pad, clip and letterbox boxes into one batch.

Training (``rfstream train``) and inference (the two-stage detector) both call
:func:`extract_crops`, so the classifier sees exactly what it was trained on.

Each box is padded by ``max(min_pad_px, pad_frac × side)`` on every side (the
classifier sees the signal's edges and a little noise around it), clipped to the
image, and resampled by exact area averaging so that its longer side becomes
``size`` pixels while the aspect ratio is kept (a tone stays a thin line, a burst
stays a short bar). Downsampling averages — a one-pixel tone in a wide crop keeps
its energy instead of vanishing between nearest-neighbour samples — and
upsampling repeats pixels. The resampled crop sits in the centre of a
``size × size`` canvas filled with the frame's noise floor: the median of a
strided sample of the image (about ``floor_offset_db / dynamic_range_db`` for a
normalised frame; the two-stage detector passes ``Frame.noise_floor``, exactly
that, instead of measuring it), so the letterbox bars look like empty spectrum,
not signal.
"""

from __future__ import annotations

import numpy as np

from rfstream.errors import InputError
from rfstream.types import Frame

__all__ = ["crop_windows", "extract_crops", "frame_noise_floor", "noise_floor"]


def noise_floor(image: np.ndarray) -> float:
    """The frame's noise level: the median of every 8th row and column (cheap, robust)."""
    return float(np.median(image[::8, ::8]))


def frame_noise_floor(frame: Frame) -> float:
    """The noise floor the spectrogram stage put on the frame, else :func:`noise_floor` of its image."""
    return frame.noise_floor if frame.noise_floor is not None else noise_floor(frame.host_image())


def crop_windows(
    boxes: np.ndarray, height: int, width: int, *, pad_frac: float = 0.15, min_pad_px: float = 2.0
) -> np.ndarray:
    """Padded, clipped integer windows ``[N, 4]`` (x0, y0, x1, y1) the crops are cut from.

    Every window holds at least one pixel, even for a degenerate or off-image box.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    pad_x = np.maximum(min_pad_px, pad_frac * (b[:, 2] - b[:, 0]))
    pad_y = np.maximum(min_pad_px, pad_frac * (b[:, 3] - b[:, 1]))
    x0 = np.clip(np.floor(b[:, 0] - pad_x), 0, width - 1)
    y0 = np.clip(np.floor(b[:, 1] - pad_y), 0, height - 1)
    x1 = np.clip(np.ceil(b[:, 2] + pad_x), x0 + 1, width)
    y1 = np.clip(np.ceil(b[:, 3] + pad_y), y0 + 1, height)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)


def _area_index(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Segment starts and lengths mapping ``n_in`` cells onto ``n_out`` (for np.add.reduceat)."""
    starts = (np.arange(n_out) * n_in) // n_out
    counts = np.diff(starts, append=n_in)
    # reduceat returns the element itself for an empty segment (upsampling): count it once.
    return starts, np.maximum(counts, 1)


def _resample(region: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    rows, n_rows = _area_index(region.shape[0], out_h)
    cols, n_cols = _area_index(region.shape[1], out_w)
    out = np.add.reduceat(region, rows, axis=0) / n_rows[:, None]
    return np.add.reduceat(out, cols, axis=1) / n_cols[None, :]


def extract_crops(
    image: np.ndarray,
    boxes: np.ndarray,
    *,
    size: int = 64,
    pad_frac: float = 0.15,
    min_pad_px: float = 2.0,
    fill: float | None = None,
) -> np.ndarray:
    """Cut, pad and letterbox every box of ``image`` into one ``[N, 1, size, size]`` float32 batch.

    ``image`` is the H×W normalised frame (host array); ``boxes`` are pixel boxes
    ``[N, 4]`` as (x0, y0, x1, y1) floats. ``fill`` is the letterbox value; None
    takes :func:`noise_floor` of the image.
    """
    img = np.asarray(image)
    if img.ndim != 2 or img.shape[0] < 1 or img.shape[1] < 1:
        raise InputError(f"extract_crops: image must be a non-empty 2-D array, got shape {img.shape}")
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 1, size, size), dtype=np.float32)
    if b.ndim != 2 or b.shape[1] != 4:
        raise InputError(f"extract_crops: boxes must be [N, 4] (x0, y0, x1, y1), got shape {b.shape}")
    if not np.all(np.isfinite(b)):
        raise InputError("extract_crops: boxes contain NaN or infinite coordinates")
    height, width = img.shape
    windows = crop_windows(b, height, width, pad_frac=pad_frac, min_pad_px=min_pad_px)
    out = np.empty((len(windows), 1, size, size), dtype=np.float32)
    out.fill(noise_floor(img) if fill is None else fill)
    for i, (x0, y0, x1, y1) in enumerate(windows):
        region = img[y0:y1, x0:x1].astype(np.float32, copy=False)
        h, w = region.shape
        scale = size / max(h, w)
        out_h = min(size, max(1, round(h * scale)))
        out_w = min(size, max(1, round(w * scale)))
        top, left = (size - out_h) // 2, (size - out_w) // 2
        out[i, 0, top : top + out_h, left : left + out_w] = _resample(region, out_h, out_w)
    return out
