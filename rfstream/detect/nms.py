"""Non-maximum suppression: one box per signal, whichever detectors found it.

:func:`nms_indices` works on plain arrays; :func:`merge_detections` on Detections.

Properties (tested with hypothesis):

- **Order-independent.** Boxes are visited best first, ties broken by a stable key
  (score, then the box coordinates, then label, then detector), never by input
  position, so shuffling the input gives the same output.
- **Idempotent.** No two kept boxes that could suppress each other overlap above
  the threshold, so merging the output again changes nothing.
- **Class-aware** mode suppresses only boxes of the same label, with one
  exception: ``"unknown"`` (the energy detector's label) is a wildcard — an
  unknown box overlapping a kept box of *any* label is suppressed by it, and
  labelled boxes are visited before unknown ones, so a model's labelled box
  wins over the energy detector's box of the same signal (whose detector is
  then recorded in ``found_by``). Class-agnostic mode ignores labels.

:func:`merge_detections` compares Detections by their **physical** boxes
(seconds × hertz), not pixels, so detections from frames of different sizes
(detectors running at different input resolutions) still merge. IoU is
invariant to the units of each axis, so seconds and hertz need no scaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rfstream.types import Detection

__all__ = ["WILDCARD_LABEL", "iou_matrix", "merge_detections", "nms_indices"]

WILDCARD_LABEL = "unknown"


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4); boxes are x0, y0, x1, y1.

    Empty boxes (zero width or height) have IoU 0 with everything, themselves included.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0.0, None) * np.clip(ih, 0.0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0.0, None) * np.clip(a[:, 3] - a[:, 1], 0.0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(b[:, 3] - b[:, 1], 0.0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _visit_order(boxes: np.ndarray, scores: np.ndarray, keys: Sequence[np.ndarray]) -> np.ndarray:
    """Best first; ties by box coordinates, then by the extra keys (labels, detectors)."""
    # np.lexsort sorts by the last key first.
    columns = [*reversed(keys), boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], -scores]
    return np.lexsort(columns)


def _nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray | None,
    iou_threshold: float,
    tie_keys: Sequence[np.ndarray],
    wildcard: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Kept indices (visit order) and, for every input, the index of the box that absorbed it."""
    n = boxes.shape[0]
    keys = list(tie_keys)
    is_wild = np.zeros(n, dtype=bool)
    if labels is not None:
        if wildcard is not None:
            is_wild = labels == wildcard
            keys = [labels, *keys]
        else:
            keys = [labels, *keys]
    order = _visit_order(boxes, scores, keys)
    if labels is not None and wildcard is not None:
        # Labelled boxes first: a wildcard may be absorbed by a labelled box, never the reverse.
        order = order[np.argsort(is_wild[order], kind="stable")]
    overlap = iou_matrix(boxes, boxes) > iou_threshold
    if labels is not None:
        overlap &= (labels[:, None] == labels[None, :]) | is_wild[None, :]
    absorbed_by = np.full(n, -1, dtype=np.int64)
    kept: list[int] = []
    for i in order.tolist():
        if absorbed_by[i] >= 0:
            continue
        kept.append(i)
        victims = overlap[i] & (absorbed_by < 0)
        absorbed_by[victims] = i
        absorbed_by[i] = i
    return np.asarray(kept, dtype=np.int64), absorbed_by


def nms_indices(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray | Sequence[Any] | None,
    iou_threshold: float,
    *,
    wildcard: Any = None,
) -> np.ndarray:
    """Greedy NMS. Returns the kept indices into ``boxes``, best first (wildcards last).

    ``boxes``: (N, 4) ``x0, y0, x1, y1``; ``labels``: None for class-agnostic NMS, else one
    label per box (only equal labels suppress each other). ``wildcard``: a label that any
    label may suppress (see the module docstring); None disables. A box is suppressed when
    its IoU with a kept box is *above* ``iou_threshold``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {scores.shape[0]} scores")
    label_array = None if labels is None else np.asarray(labels)
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    kept, _ = _nms(boxes, scores, label_array, iou_threshold, (), wildcard)
    return kept


def merge_detections(
    dets: Sequence[Detection], iou_threshold: float = 0.5, class_aware: bool = True
) -> list[Detection]:
    """Merge the detections of several detectors (or one) for one chunk.

    Keeps the best-scoring Detection of each cluster and records in its ``found_by``
    every detector of the cluster (sorted, unique). IoU is on the physical boxes.
    Output is best first (in class-aware mode, ``"unknown"`` ones after the labelled ones).
    """
    if not dets:
        return []
    boxes = np.array([(d.f_low_hz, d.t_start_s, d.f_high_hz, d.t_stop_s) for d in dets], dtype=np.float64)
    scores = np.array([d.score for d in dets], dtype=np.float64)
    labels = np.array([d.label for d in dets])
    detectors = np.array([d.detector for d in dets])
    kept, absorbed_by = _nms(
        boxes,
        scores,
        labels if class_aware else None,
        iou_threshold,
        (labels, detectors) if not class_aware else (detectors,),
        WILDCARD_LABEL if class_aware else None,
    )
    found: dict[int, set[str]] = {int(i): set() for i in kept}
    for j, i in enumerate(absorbed_by.tolist()):
        found[i].update(dets[j].found_by)
    out = []
    for i in kept.tolist():
        names = tuple(sorted(found[i]))
        d = dets[i]
        out.append(d if d.found_by == names else d.replace(found_by=names))
    return out
