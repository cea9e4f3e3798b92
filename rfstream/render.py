"""Pictures a person can read: a waterfall with axes, a dB colour bar, a legend and labelled boxes.

``rfstream render RECORDING`` and ``rfstream demo`` draw through here; the web
viewer (rfstream/web/) paints with the same colour map (:data:`LUT`) and the
same colour per label (:data:`LABEL_COLOURS`), so a label looks the same in a
PNG and in the browser.

What the picture promises:

- time runs down (seconds since the recording began), frequency runs across in
  MHz (absolute RF), the colour bar is in dB above the noise floor (the
  spectrogram normalises every frame to its own median, see
  rfstream/dsp/spectrogram.py);
- rfstream's detections are **solid** boxes, one colour per label; annotations
  from the recording or another file (truth) are **dashed white** boxes; the
  legend names both;
- box labels ("psk 0.87") never overlap: each is placed at the first free spot
  around its box, best scores first, and a box with no free spot keeps its
  colour and is counted in the footnote instead of smearing text over others.

The waterfall is built while the pipeline runs (:class:`Waterfall`, fed one
Frame at a time and max-pooled to a bounded size, so a long recording costs
little memory; max rather than mean so that a burst one row long stays
visible) and drawn once with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from rfstream.errors import SinkError
from rfstream.types import Detection, Frame

__all__ = [
    "LABEL_COLOURS",
    "LUT",
    "TRUTH_COLOUR",
    "Box",
    "Picture",
    "Waterfall",
    "boxes_from_annotations",
    "boxes_from_detections",
    "draw_png",
    "label_colour",
]

log = structlog.get_logger(__name__)

# Viridis, sampled at nine anchors and interpolated to 256 steps: perceptually even, readable in grey,
# and free of matplotlib so the web viewer can carry the same table.
_ANCHORS = np.array(
    [
        [68, 1, 84],
        [71, 44, 122],
        [59, 81, 139],
        [44, 113, 142],
        [33, 144, 141],
        [39, 173, 129],
        [92, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=np.float64,
)
LUT = (
    np.stack(
        [
            np.interp(np.linspace(0, len(_ANCHORS) - 1, 256), np.arange(len(_ANCHORS)), _ANCHORS[:, c])
            for c in range(3)
        ],
        axis=1,
    )
    .round()
    .astype(np.uint8)
)

# One colour per label, chosen to stand apart from each other and from the colour map; every box and
# label is drawn over a dark halo so that it reads on the yellow of a strong signal as on the noise.
LABEL_COLOURS: dict[str, str] = {
    "tone": "#ff8c1a",
    "am": "#f06bd0",
    "fm": "#ff4040",
    "fsk": "#00e5ff",
    "ook": "#ff33ff",
    "psk": "#b6ff3b",
    "ofdm": "#ffd21f",
    "chirp": "#ffa3b5",
    "pulsed": "#5aa0ff",
    "unknown": "#e6e6e6",
}
_EXTRA_COLOURS = ("#9b7bff", "#38d9a9", "#ffb86b", "#c0eb75", "#74c0fc", "#f783ac")
TRUTH_COLOUR = "#ffffff"


def label_colour(label: str) -> str:
    """The colour of a label: fixed for the taxonomy, a stable pick for any other name."""
    if label in LABEL_COLOURS:
        return LABEL_COLOURS[label]
    return _EXTRA_COLOURS[sum(map(ord, label)) % len(_EXTRA_COLOURS)]


@dataclass(frozen=True, slots=True)
class Box:
    """One thing to outline: a detection (``truth=False``, with a score) or an annotation (truth)."""

    t_start_s: float
    t_stop_s: float
    f_low_hz: float
    f_high_hz: float
    label: str
    score: float | None
    truth: bool


def boxes_from_detections(detections: Iterable[Detection]) -> list[Box]:
    return [
        Box(d.t_start_s, d.t_stop_s, d.f_low_hz, d.f_high_hz, d.label, float(d.score), False)
        for d in detections
    ]


def boxes_from_annotations(annotations: Iterable[Any]) -> list[Box]:
    """SigMF annotations (rfstream.sources.sigmf.Annotation): rfstream's own are detections, the rest truth."""
    out = []
    for a in annotations:
        ours = getattr(a, "generator", "") == "rfstream"
        out.append(
            Box(
                a.t_start_s,
                a.t_stop_s,
                a.f_low_hz,
                a.f_high_hz,
                a.label,
                getattr(a, "score", None) if ours else None,
                not ours,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Picture:
    """What draw_png drew: the file, its boxes, those left without a text label, the labels' extents."""

    path: Path
    boxes: int
    unlabelled: int  # no free spot
    repeats: int  # the same signal named just above
    label_extents: tuple[tuple[float, float, float, float], ...]


# --- the waterfall, built frame by frame ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Strip:
    t0_s: float
    t1_s: float
    image: np.ndarray  # rows x columns in [0, 1], max-pooled


class Waterfall:
    """Frames of one stream, max-pooled as they arrive to at most ``rows_per_frame`` × ``width``.

    Only frames of the first tuning are kept (a retuned recording draws its first band);
    ``skipped_frames`` counts the others.
    """

    def __init__(self, *, rows_per_frame: int = 256, width: int = 1024) -> None:
        if rows_per_frame < 1 or width < 1:
            raise ValueError("rows_per_frame and width must be >= 1")
        self.rows_per_frame = rows_per_frame
        self.width = width
        self._strips: list[_Strip] = []
        self.f0_hz = math.nan
        self.f1_hz = math.nan
        self.center_freq_hz = math.nan
        self.sample_rate_hz = math.nan
        self.skipped_frames = 0

    def add(self, frame: Frame) -> None:
        if not self._strips:
            self.f0_hz, self.f1_hz = frame.f0_hz, frame.f1_hz
            self.center_freq_hz = frame.chunk.center_freq_hz
            self.sample_rate_hz = frame.chunk.sample_rate_hz
        elif not (math.isclose(frame.f0_hz, self.f0_hz) and math.isclose(frame.f1_hz, self.f1_hz)):
            self.skipped_frames += 1
            return
        image = np.asarray(frame.host_image(), dtype=np.float32)
        self._strips.append(_Strip(frame.t0_s, frame.t1_s, _max_pool(image, self.rows_per_frame, self.width)))

    @property
    def empty(self) -> bool:
        return not self._strips

    @property
    def t0_s(self) -> float:
        return self._strips[0].t0_s if self._strips else 0.0

    @property
    def t1_s(self) -> float:
        return self._strips[-1].t1_s if self._strips else 0.0

    def grid(self, max_rows: int = 1400) -> np.ndarray:
        """The picture on an even time grid (rows × columns in [0, 1]; NaN where there was no signal).

        Strips land by their own times, so a short last chunk or a gap in the recording
        is drawn where it happened, not stretched.
        """
        if not self._strips:
            raise SinkError("nothing to draw: the recording produced no frames")
        rows = min(max_rows, sum(s.image.shape[0] for s in self._strips))
        span = max(self.t1_s - self.t0_s, 1e-12)
        width = self._strips[0].image.shape[1]
        grid = np.full((rows, width), np.nan, dtype=np.float32)
        for s in self._strips:
            n = s.image.shape[0]
            centres = s.t0_s + (np.arange(n) + 0.5) * (s.t1_s - s.t0_s) / n
            index = np.clip(((centres - self.t0_s) / span * rows).astype(int), 0, rows - 1)
            np.fmax.at(grid, index, s.image)
            # a strip coarser than the grid fills every grid row it covers, not one in several
            first = int(np.clip((s.t0_s - self.t0_s) / span * rows, 0, rows - 1))
            last = int(np.clip(math.ceil((s.t1_s - self.t0_s) / span * rows) - 1, 0, rows - 1))
            for g in range(first, last + 1):
                if np.isnan(grid[g, 0]):
                    t = self.t0_s + (g + 0.5) * span / rows
                    src = min(n - 1, max(0, int((t - s.t0_s) / (s.t1_s - s.t0_s) * n)))
                    grid[g] = s.image[src]
        return grid


def _max_pool(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Max over blocks so that ``image`` is at most ``rows`` × ``cols`` (blocks may differ by one)."""
    h, w = image.shape
    r_edges = np.linspace(0, h, min(rows, h) + 1).astype(int)
    c_edges = np.linspace(0, w, min(cols, w) + 1).astype(int)
    pooled = np.maximum.reduceat(image, r_edges[:-1], axis=0)
    return np.maximum.reduceat(pooled, c_edges[:-1], axis=1)


# --- drawing ---------------------------------------------------------------------------------------
def draw_png(
    waterfall: Waterfall,
    boxes: Sequence[Box],
    out: str | Path,
    *,
    title: str,
    db_range: tuple[float, float],
    max_labels: int = 400,
    dpi: int = 100,
) -> Picture:
    """Draw the waterfall, its boxes, a dB colour bar and a legend into ``out`` (PNG)."""
    import logging

    # matplotlib's first run logs "generated new fontManager" at INFO: not news for a user.
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle
    from matplotlib.patheffects import withStroke

    grid = waterfall.grid()
    db_low, db_high = db_range
    db = db_low + grid * (db_high - db_low)
    f_lo, f_hi = waterfall.f0_hz / 1e6, waterfall.f1_hz / 1e6
    t0, t1 = waterfall.t0_s, waterfall.t1_s

    fig = plt.figure(figsize=(12.8, 8.0), dpi=dpi)
    try:
        ax = fig.add_axes((0.07, 0.08, 0.62, 0.80))
        cax = fig.add_axes((0.705, 0.08, 0.014, 0.80))
        # no signal there (a gap in the recording): near-black
        cmap = ListedColormap(LUT / 255.0, name="rfstream").with_extremes(bad="#101010")
        im = ax.imshow(
            np.ma.masked_invalid(db),
            extent=(f_lo, f_hi, t1, t0),
            aspect="auto",
            cmap=cmap,
            vmin=db_low,
            vmax=db_high,
            interpolation="nearest",
        )
        bar = fig.colorbar(im, cax=cax)
        bar.set_label("dB above the noise floor (median of each 200 ms frame)")
        ax.set_xlabel("frequency (MHz)")
        ax.set_ylabel("time since the start of the recording (s)")
        ax.set_xlim(f_lo, f_hi)
        ax.set_ylim(t1, t0)
        ax.ticklabel_format(axis="x", useOffset=False, style="plain")
        fc = waterfall.center_freq_hz / 1e6
        ax.axvline(fc, color="#ffffff", alpha=0.25, linewidth=0.8, linestyle=":")
        ax.set_title(title, loc="left", fontsize=11)

        halo = [withStroke(linewidth=2.6, foreground="#000000")]
        visible = [b for b in boxes if b.t_stop_s >= t0 and b.t_start_s <= t1]
        for b in visible:
            colour = TRUTH_COLOUR if b.truth else label_colour(b.label)
            rect = Rectangle(
                (b.f_low_hz / 1e6, b.t_start_s),
                max(b.f_high_hz - b.f_low_hz, 0.0) / 1e6,
                max(b.t_stop_s - b.t_start_s, 0.0),
                fill=False,
                edgecolor=colour,
                linewidth=1.1 if b.truth else 1.4,
                linestyle=(0, (3, 2)) if b.truth else "solid",
                path_effects=halo,
                zorder=3 if b.truth else 4,
            )
            ax.add_patch(rect)
        unlabelled, repeats, placed = _place_labels(fig, ax, visible, max_labels=max_labels, halo=halo)

        counts: dict[str, int] = {}
        for b in visible:
            if not b.truth:
                counts[b.label] = counts.get(b.label, 0) + 1
        handles = [
            Line2D([], [], color=label_colour(label), linewidth=2.4, label=f"{label} ({counts[label]})")
            for label in sorted(counts, key=lambda k: (-counts[k], k))
        ]
        truth = sum(1 for b in visible if b.truth)
        if truth:
            handles.append(
                Line2D(
                    [],
                    [],
                    color="#555555",
                    linewidth=1.6,
                    linestyle=(0, (3, 2)),
                    label=f"annotation / truth ({truth})",
                )
            )
        if handles:
            fig.legend(
                handles=handles,
                loc="upper left",
                bbox_to_anchor=(0.79, 0.88),
                frameon=False,
                title="detections (solid) by label",
                alignment="left",
                fontsize=9,
                title_fontsize=9,
            )
        notes = []
        if unlabelled:
            notes.append(f"{unlabelled} boxes left without a text label for lack of room (colour per legend)")
        if waterfall.skipped_frames:
            notes.append(f"{waterfall.skipped_frames} frames of another tuning not drawn")
        if notes:
            fig.text(0.07, 0.015, "; ".join(notes), fontsize=8, color="#444444")
        out = Path(out)
        try:
            fig.savefig(out, format="png", dpi=dpi)
        except OSError as exc:
            raise SinkError(f"cannot write {out}: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)
    return Picture(out, len(visible), unlabelled, repeats, tuple(placed))


def _place_labels(
    fig: Any, ax: Any, boxes: Sequence[Box], *, max_labels: int, halo: list[Any]
) -> tuple[int, int, list[tuple[float, float, float, float]]]:
    """Put "label score" beside each box at the first spot free of other labels.

    A box with the same label and edges as one named just above it (a carrier, chunk after
    chunk) is not named again. Returns how many boxes found no spot, how many were such
    repeats, and the placed labels' extents (display pixels).

    Best scores first (truth after detections), so the strongest findings are the ones named.
    Candidate spots, in order: above the box, below it, to its right, to its left, inside its top.
    """
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed: list[tuple[float, float, float, float]] = []
    named: list[tuple[str, float, float, float]] = []  # (label, x0, x1, top) of the boxes named so far
    repeats = 0
    order = sorted(boxes, key=lambda b: (b.truth, -(b.score or 0.0)))
    unlabelled = 0
    to_px = ax.transData.transform
    for i, b in enumerate(order):
        if i >= max_labels:
            unlabelled += len(order) - i
            break
        text = b.label if b.score is None else f"{b.label} {b.score:.2f}"
        if b.truth:
            text = f"truth: {b.label}"
        (x0, y_top), (x1, y_bot) = (
            to_px((b.f_low_hz / 1e6, b.t_start_s)),
            to_px((b.f_high_hz / 1e6, b.t_stop_s)),
        )
        y_hi, y_lo = max(y_top, y_bot), min(y_top, y_bot)  # display y grows upwards
        if any(
            lab == b.label and abs(nx0 - x0) < 4 and abs(nx1 - x1) < 4 and abs(ny - y_hi) < 90
            for lab, nx0, nx1, ny in named
        ):
            repeats += 1  # the same signal a chunk later, named just above: its colour says enough
            continue
        artist = ax.text(
            0,
            0,
            text,
            fontsize=7.5,
            color=TRUTH_COLOUR if b.truth else label_colour(b.label),
            fontstyle="italic" if b.truth else "normal",
            transform=None,
            path_effects=halo,
            zorder=6,
        )
        extent = artist.get_window_extent(renderer)
        w, h = extent.width + 2, extent.height + 1
        spots = [
            (x0, y_hi + 1),  # above
            (x0, y_lo - h - 1),  # below
            (x1 + 2, y_hi - h),  # right
            (x0 - w - 2, y_hi - h),  # left
            (x0 + 1, y_hi - h - 1),  # inside, top-left
        ]
        for sx, sy in spots:
            rect = (sx, sy, sx + w, sy + h)
            inside = (
                rect[0] >= frame.x0 and rect[2] <= frame.x1 and rect[1] >= frame.y0 and rect[3] <= frame.y1
            )
            if inside and not any(_overlaps(rect, other) for other in placed):
                placed.append(rect)
                named.append((b.label, x0, x1, y_hi))
                artist.set_position((sx + 1, sy + 1 + extent.height * 0.2))
                break
        else:
            artist.remove()
            unlabelled += 1
    return unlabelled, repeats, placed


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def db_range(spectrogram_cfg: Any) -> tuple[float, float]:
    """The dB (above the noise floor) that image values 0 and 1 stand for, from the spectrogram settings."""
    low = -float(spectrogram_cfg.floor_offset_db)
    return low, low + float(spectrogram_cfg.dynamic_range_db)


def describe(name: str, waterfall: Waterfall) -> str:
    """The picture's title: file, rate, centre, span."""
    return (
        f"{name}  —  {waterfall.sample_rate_hz / 1e6:g} MS/s, centre {waterfall.center_freq_hz / 1e6:.4f} MHz, "
        f"{waterfall.t1_s - waterfall.t0_s:.3f} s"
    )
