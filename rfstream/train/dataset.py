"""Dataset export: labelled SigMF recordings → the daemon's frames as PNG + boxes.

Layout of an exported dataset directory::

    manifest.json                 frames, label counts, recordings, spectrogram settings
    frames/<rec>_<k>.png          8-bit grayscale frame (pixel = round(255 × image))
    frames/<rec>_<k>_bboxes.json  {"image", "width", "height", "bboxes": [{"label",
                                   "x_min", "y_min", "x_max", "y_max", "snr_db"?}]}
    crops.json                    boxes for the crop classifier (see below)

Frames are made by the daemon's own code — ``SigMFSource`` chunks (200 ms) through
``Spectrogrammer`` — so the normalisation is exactly what the models see live.
Box coordinates are frame pixels (x = frequency column, y = time row, continuous
edges as in rfstream.types): each annotation's physical box goes through
``Frame.to_pixels``, is clipped to the frame, and is dropped when less than one
row or column of it is visible in that frame. Labels are folded onto the
taxonomy (rfstream.labels) with ``map_label`` and an optional user table.
A box keeps its annotation's ``snr_db`` where there is one; boxes below
``IGNORE_BELOW_DB`` (0 dB in-band) are *faint*: training neither asks the
models to find them nor punishes them for it (see rfstream/train/trainer.py).

Crops (``crops.json``: ``{"size", "pad_frac", "min_pad_px", "crops": [{"image",
"label", "source", "x_min", ...}]}``) come from the same frames:
``proposal`` — energy-detector proposals whose best IoU with a truth box is
≥ 0.5 take that box's label; proposals whose best IoU is < 0.1 are
``unknown`` (background: noise, fragments, receiver spurs the synthesiser draws
unannotated; at most 48 per frame, a random subset); the ambiguous ones in between are
left out. ``noise`` — ``unknown`` too: up to 8 boxes per frame shaped like that frame's
proposals (any of them, or log-uniform sizes on a frame without any) placed at random
where they touch no truth box, plus one thin box on the DC column when that is clear of
truth: the background class must also hold for plain noise floor and the DC spike,
which the energy detector rarely proposes on its own, or the classifier learns that
"unknown" only means *a fragment of something* and names a bare patch of noise a signal
(it called pure-noise crops ``chirp`` before these). ``jitter`` — each
truth box, once, with its edges moved
by up to 10 % of its size, so the classifier also learns boxes that are not
exactly what the energy detector draws. The pixels themselves are cut at
training time by :func:`rfstream.detect.crops.extract_crops`, the function the
two-stage detector uses live.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rfstream.config import SpectrogramConfig
from rfstream.detect.nms import iou_matrix
from rfstream.errors import InputError
from rfstream.labels import LABELS, map_label
from rfstream.types import Frame

__all__ = [
    "FrameSet",
    "box_iou",
    "export_dataset",
    "frame_boxes",
    "load_frames",
    "load_label_map",
    "propose_crops",
]

Proposer = Callable[[Frame], np.ndarray]  # frame -> [N, 4] pixel boxes

MATCH_IOU = 0.5
BACKGROUND_IOU = 0.1
IGNORE_BELOW_DB = 0.0  # truth fainter than this (in-band SNR) is neither target nor miss
JITTERS_PER_BOX = 1
MAX_BACKGROUND_PER_FRAME = 48  # background proposals kept per frame (a random subset)
NOISE_PER_FRAME = 8  # random truth-free boxes per frame (background class: plain noise floor)
NOISE_TRIES = 20  # placements tried per noise box before giving up (crowded frames)
JITTER_FRAC = 0.10


def load_label_map(path: str | Path | None) -> dict[str, str]:
    """A user's label table: JSON or TOML ``{"their label": "taxonomy label"}``.

    Targets must be taxonomy labels (or their aliases); keys are matched case-insensitively.
    """
    if path is None:
        return {}
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib
            table = tomllib.loads(text)
        else:
            table = json.loads(text)
    except (OSError, ValueError) as exc:
        raise InputError(f"label map {path}: cannot read it: {exc}") from exc
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise InputError(f"label map {path}: must map label strings to taxonomy labels")
    for key, target in table.items():
        if map_label(target) == "unknown" and target.strip().lower() != "unknown":
            raise InputError(
                f"label map {path}: {key!r} maps to {target!r}, not a taxonomy label ({', '.join(LABELS)})"
            )
    return {str(k).strip().lower(): v for k, v in table.items()}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``[len(a), len(b)]`` of x0, y0, x1, y1 boxes (:func:`rfstream.detect.nms.iou_matrix`)."""
    return iou_matrix(a, b)


def frame_boxes(frame: Frame, annotations: Iterable[Any]) -> list[dict]:
    """The annotations visible in ``frame`` as clipped pixel boxes (labels already on the taxonomy)."""
    boxes = []
    for ann in annotations:
        x0, y0, x1, y1 = frame.to_pixels(ann.t_start_s, ann.t_stop_s, ann.f_low_hz, ann.f_high_hz)
        x0, x1 = max(0.0, min(x0, x1)), min(float(frame.width), max(x0, x1))
        y0, y1 = max(0.0, min(y0, y1)), min(float(frame.height), max(y0, y1))
        # At least one row and one column visible; a narrow tone (< 1 column) keeps one column.
        if y1 - y0 < 1.0 or x1 <= 0.0 or x0 >= frame.width or x1 - x0 <= 0.0:
            continue
        if x1 - x0 < 1.0:
            mid = 0.5 * (x0 + x1)
            x0, x1 = max(0.0, mid - 0.5), min(float(frame.width), mid + 0.5)
        box = {
            "label": map_label(ann.label),
            "x_min": round(x0, 2),
            "y_min": round(y0, 2),
            "x_max": round(x1, 2),
            "y_max": round(y1, 2),
        }
        snr = getattr(ann, "snr_db", None)
        if snr is not None:
            box["snr_db"] = round(float(snr), 2)
        boxes.append(box)
    return boxes


def _jitter(box: np.ndarray, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    moved = box + rng.uniform(-JITTER_FRAC, JITTER_FRAC, 4) * np.array([w, h, w, h])
    moved[[0, 2]] = np.clip(np.sort(moved[[0, 2]]), 0, width)
    moved[[1, 3]] = np.clip(np.sort(moved[[1, 3]]), 0, height)
    return moved


def propose_crops(
    truth: np.ndarray,
    truth_labels: Sequence[str],
    proposals: np.ndarray,
    *,
    rng: np.random.Generator,
    size: tuple[int, int],
    faint: Sequence[bool] = (),
    dc_column: float | None = None,
) -> list[tuple[np.ndarray, str, str]]:
    """(box, label, source) training crops of one frame: matched/background proposals, noise
    boxes clear of truth, jittered truth.

    ``faint`` truth boxes (below ``IGNORE_BELOW_DB``) get no jittered crop: a proposal that found
    one is labelled by it, but the classifier is not asked to name what cannot be seen.
    ``dc_column``: the centre frequency's column (one thin ``noise`` box there when clear of truth).
    """
    out: list[tuple[np.ndarray, str, str]] = []
    background: list[np.ndarray] = []
    proposals = np.asarray(proposals, dtype=np.float64).reshape(-1, 4)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 4)
    if len(proposals):
        if len(truth):
            iou = box_iou(proposals, truth)
            best, which = iou.max(axis=1), iou.argmax(axis=1)
        else:
            best, which = np.zeros(len(proposals)), np.zeros(len(proposals), dtype=int)
        for box, b, w in zip(proposals, best, which, strict=True):
            if b >= MATCH_IOU:
                out.append((box, truth_labels[w], "proposal"))
            elif b < BACKGROUND_IOU:
                background.append(box)
        if len(background) > MAX_BACKGROUND_PER_FRAME:
            keep = rng.choice(len(background), MAX_BACKGROUND_PER_FRAME, replace=False)
            background = [background[i] for i in sorted(keep)]
        out.extend((box, "unknown", "proposal") for box in background)
    height, width = size
    out.extend((box, "unknown", "noise") for box in _noise_boxes(truth, proposals, rng, size, dc_column))
    faint = list(faint) or [False] * len(truth)
    for box, label, dim in zip(truth, truth_labels, faint, strict=True):
        if not dim:
            out.extend((_jitter(box, rng, width, height), label, "jitter") for _ in range(JITTERS_PER_BOX))
    return out


def _clear_of(box: np.ndarray, truth: np.ndarray) -> bool:
    """``box`` overlaps no truth box at all (touching edges allowed)."""
    if not len(truth):
        return True
    return not bool(
        np.any(
            (box[0] < truth[:, 2]) & (truth[:, 0] < box[2]) & (box[1] < truth[:, 3]) & (truth[:, 1] < box[3])
        )
    )


def _noise_boxes(
    truth: np.ndarray,
    proposals: np.ndarray,
    rng: np.random.Generator,
    size: tuple[int, int],
    dc_column: float | None,
) -> list[np.ndarray]:
    """Background boxes on bare noise floor: proposal-shaped, placed at random, clear of all truth."""
    height, width = size
    out: list[np.ndarray] = []
    for _ in range(NOISE_PER_FRAME):
        for _ in range(NOISE_TRIES):
            if len(proposals):
                p = proposals[rng.integers(len(proposals))]
                w, h = max(p[2] - p[0], 1.0), max(p[3] - p[1], 1.0)
            else:
                w, h = np.exp(rng.uniform(0.0, np.log(width / 4))), np.exp(rng.uniform(0.0, np.log(height)))
            w, h = min(w, width), min(h, height)
            x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
            box = np.array([x0, y0, x0 + w, y0 + h])
            if _clear_of(box, truth):
                out.append(box)
                break
    if dc_column is not None and 0 <= dc_column < width:
        w, h = rng.uniform(1.0, 6.0), np.exp(rng.uniform(np.log(8.0), np.log(height)))
        y0 = rng.uniform(0, height - h)
        box = np.array([max(0.0, dc_column - w / 2), y0, min(float(width), dc_column + w / 2), y0 + h])
        if _clear_of(box, truth):
            out.append(box)
    return out


def _energy_proposer() -> Proposer:
    from rfstream.detect.energy import EnergyDetector

    detector = EnergyDetector()

    def propose(frame: Frame) -> np.ndarray:
        dc_column = (frame.chunk.center_freq_hz - frame.f0_hz) / frame.df_hz
        return detector.propose(frame.host_image(), dc_column)[0]

    return propose


def _annotations_of(path: Path, table: Mapping[str, str] | None) -> list[Any]:
    from rfstream.sources.sigmf import read_annotations

    return list(read_annotations(path, label_table=table))


def _frames_of(path: Path, cfg: SpectrogramConfig, chunk_ms: float) -> Iterable[Frame]:
    from rfstream.dsp.spectrogram import Spectrogrammer
    from rfstream.sources.sigmf import SigMFSource

    spectrogrammer = Spectrogrammer(cfg)
    source = SigMFSource(path, chunk_ms=chunk_ms)
    try:
        for chunk in source:
            yield spectrogrammer.process(chunk)
    finally:
        source.close()


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


def export_dataset(
    recordings: Sequence[str | Path],
    out_dir: str | Path,
    *,
    spectrogram: SpectrogramConfig | None = None,
    chunk_ms: float = 200.0,
    label_map: Mapping[str, str] | None = None,
    proposer: Proposer | None = None,
    seed: int = 0,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
    synthetic: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Export every frame of every recording; returns (and writes) the manifest.

    ``spectrogram`` defaults to the daemon's defaults; ``proposer`` gives the crop
    proposals of a frame (default: the energy detector); ``synthetic`` describes
    synthesized recordings (seed, rate, duration) for the manifest.
    """
    spectrogram = spectrogram or SpectrogramConfig()
    out = Path(out_dir)
    frames_dir = out / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    proposer = proposer or _energy_proposer()
    rng = np.random.default_rng(seed)
    label_counts: Counter[str] = Counter()
    crop_counts: Counter[str] = Counter()
    crops: list[dict[str, Any]] = []
    sources: list[dict[str, Any]] = []
    n_frames = 0
    paths = [Path(p) for p in recordings]
    for path in progress(paths) if progress else paths:
        annotations = _annotations_of(path, label_map)
        stem = path.name.removesuffix(".sigmf-meta").removesuffix(".sigmf-data").removesuffix(".sigmf")
        rec_frames = 0
        for k, frame in enumerate(_frames_of(path, spectrogram, chunk_ms)):
            image = np.asarray(frame.host_image(), dtype=np.float32)
            name = f"{stem}_{k:04d}"
            pixels = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(frames_dir / f"{name}.png", optimize=False)
            boxes = frame_boxes(frame, annotations)
            _write_json(
                frames_dir / f"{name}_bboxes.json",
                {"image": f"{name}.png", "width": frame.width, "height": frame.height, "bboxes": boxes},
            )
            label_counts.update(b["label"] for b in boxes)
            truth = np.array([[b["x_min"], b["y_min"], b["x_max"], b["y_max"]] for b in boxes]).reshape(-1, 4)
            faint = [b.get("snr_db", IGNORE_BELOW_DB) < IGNORE_BELOW_DB for b in boxes]
            dc_column = (frame.chunk.center_freq_hz - frame.f0_hz) / frame.df_hz
            for box, label, kind in propose_crops(
                truth,
                [b["label"] for b in boxes],
                proposer(frame),
                rng=rng,
                size=image.shape,
                faint=faint,
                dc_column=dc_column,
            ):
                crops.append(
                    {
                        "image": f"{name}.png",
                        "label": label,
                        "source": kind,
                        **dict(
                            zip(("x_min", "y_min", "x_max", "y_max"), np.round(box, 2).tolist(), strict=True)
                        ),
                    }
                )
                crop_counts[label] += 1
            rec_frames += 1
        sources.append({"path": str(path), "frames": rec_frames, "annotations": len(annotations)})
        n_frames += rec_frames
    if n_frames == 0:
        raise InputError(f"dataset export: no frames from {len(paths)} recording(s)")
    from rfstream.detect.crops import extract_crops  # the parameters recorded are its defaults

    defaults = extract_crops.__kwdefaults__
    _write_json(
        out / "crops.json",
        {
            "size": defaults["size"],
            "pad_frac": defaults["pad_frac"],
            "min_pad_px": defaults["min_pad_px"],
            "crops": crops,
        },
    )
    manifest = {
        "format": 1,
        "frames": n_frames,
        "labels": list(LABELS),
        "label_counts": dict(sorted(label_counts.items())),
        "crops": len(crops),
        "crop_label_counts": dict(sorted(crop_counts.items())),
        "recordings": sources,
        "synthetic": [dict(item) for item in synthetic],
        "spectrogram": asdict(spectrogram),
        "chunk_ms": chunk_ms,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_json(out / "manifest.json", manifest)
    return manifest


@dataclass(frozen=True, slots=True)
class FrameSet:
    """An exported dataset in memory: frames as uint8, boxes and label indices per frame."""

    names: tuple[str, ...]
    images: np.ndarray  # [N, H, W] uint8
    boxes: tuple[np.ndarray, ...]  # per frame [k, 4] float32 pixel boxes
    labels: tuple[np.ndarray, ...]  # per frame [k] int64 indices into LABELS
    manifest: dict[str, Any]
    faint: tuple[np.ndarray, ...] = ()  # per frame [k] bool: SNR below IGNORE_BELOW_DB (ignored)

    def faint_of(self, i: int) -> np.ndarray:
        """Which boxes of frame ``i`` are too faint to be targets (all False without SNRs)."""
        return self.faint[i] if self.faint else np.zeros(len(self.boxes[i]), dtype=bool)

    def __len__(self) -> int:
        return len(self.names)


def load_frames(dataset_dir: str | Path) -> FrameSet:
    """Read an exported dataset (manifest, PNGs, bboxes JSON) back."""
    root = Path(dataset_dir)
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        box_files = sorted((root / "frames").glob("*_bboxes.json"))
    except (OSError, ValueError) as exc:
        raise InputError(f"dataset {root}: no readable manifest.json ({exc})") from exc
    if not box_files:
        raise InputError(f"dataset {root}: no frames/*_bboxes.json")
    index = {label: i for i, label in enumerate(LABELS)}
    names, images, boxes, labels, faint = [], [], [], [], []
    for f in box_files:
        entry = json.loads(f.read_text(encoding="utf-8"))
        with Image.open(f.parent / entry["image"]) as img:
            images.append(np.asarray(img.convert("L"), dtype=np.uint8))
        b = entry["bboxes"]
        names.append(entry["image"])
        boxes.append(
            np.array([[x["x_min"], x["y_min"], x["x_max"], x["y_max"]] for x in b], np.float32).reshape(-1, 4)
        )
        labels.append(np.array([index[map_label(x["label"])] for x in b], dtype=np.int64))
        faint.append(np.array([x.get("snr_db", IGNORE_BELOW_DB) < IGNORE_BELOW_DB for x in b], dtype=bool))
    return FrameSet(tuple(names), np.stack(images), tuple(boxes), tuple(labels), manifest, tuple(faint))
