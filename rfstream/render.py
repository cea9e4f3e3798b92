"""Waterfall PNGs: frames stacked in time (oldest at the top), detection boxes drawn on top."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rfstream.errors import SinkError
from rfstream.types import Detection, Frame

# A perceptual dark-blue -> green -> yellow ramp (viridis anchors), interpolated to 256 steps.
_ANCHORS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)
LUT = np.stack(
    [np.interp(np.linspace(0, 4, 256), np.arange(5), _ANCHORS[:, c]) for c in range(3)], axis=1
).astype(np.uint8)

_LABEL_COLOURS = {
    "tone": (255, 255, 255),
    "am": (255, 160, 0),
    "fm": (255, 80, 80),
    "fsk": (0, 200, 255),
    "ook": (255, 0, 255),
    "psk": (160, 255, 160),
    "ofdm": (255, 255, 0),
    "chirp": (255, 120, 200),
    "pulsed": (120, 160, 255),
    "unknown": (255, 64, 64),
}


def render_waterfall(
    frames: Sequence[Frame],
    detections: Sequence[Detection],
    out: str | Path,
    *,
    rows_per_frame: int = 192,
    width: int = 1024,
) -> Path:
    """Write a PNG of ``frames`` (consecutive, one stream) with ``detections`` boxed and labelled."""
    from PIL import Image, ImageDraw

    if not frames:
        raise SinkError("nothing to render: the run produced no frames")
    strips = []
    for frame in frames:
        image = np.asarray(frame.host_image(), dtype=np.float32)
        rows = np.linspace(0, image.shape[0], rows_per_frame + 1).astype(int)
        cols = np.linspace(0, image.shape[1], width + 1).astype(int)
        reduced = np.add.reduceat(np.add.reduceat(image, rows[:-1], axis=0), cols[:-1], axis=1)
        reduced /= np.outer(np.diff(rows), np.diff(cols))
        strips.append(LUT[np.clip(reduced * 255, 0, 255).astype(np.uint8)])
    picture = Image.fromarray(np.concatenate(strips, axis=0), mode="RGB")
    draw = ImageDraw.Draw(picture)
    t0, t1 = frames[0].t0_s, frames[-1].t1_s
    f0, f1 = frames[0].f0_hz, frames[0].f1_hz
    height = picture.height
    for det in detections:
        x0 = (det.f_low_hz - f0) / (f1 - f0) * width
        x1 = (det.f_high_hz - f0) / (f1 - f0) * width
        y0 = (det.t_start_s - t0) / (t1 - t0) * height
        y1 = (det.t_stop_s - t0) / (t1 - t0) * height
        colour = _LABEL_COLOURS.get(det.label, (255, 64, 64))
        draw.rectangle([x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)], outline=colour, width=1)
        draw.text((x0 + 2, max(0.0, y0 - 11)), f"{det.label} {det.score:.2f}", fill=colour)
    out = Path(out)
    try:
        picture.save(out, format="PNG")
    except OSError as exc:
        raise SinkError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return out
