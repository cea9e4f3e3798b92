"""Scoring detections against labelled truth: precision, recall, F1 and AP.

Pure functions on boxes in time × frequency; no files, no pipeline.

- **IoU** is computed on the physical boxes (``t_start_s..t_stop_s`` ×
  ``f_low_hz..f_high_hz``).
- **Matching**, per IoU threshold: detections in descending score (ties: earlier,
  then lower frequency), each matched to the still-unmatched truth box with the
  highest IoU ≥ the threshold. One truth per detection and one detection per truth:
  a second detection of the same signal is a false positive.
- **Label modes**: ``label_aware=True`` matches only equal labels; ``False``
  matches any label (for detectors that do not classify). ``None`` (the default)
  picks agnostic when every detection is ``"unknown"`` (the energy detector), else
  aware.
- **Per label**: in label-aware mode, P/R/F1/AP for each label over the truth and
  the detections of that label. In agnostic mode, detections have no meaningful
  label, so per truth label only recall (and the counts) is reported — computed
  from the one class-agnostic matching; precision and AP are None.
- **AP** is the all-point interpolated average precision (PASCAL VOC 2010+): the
  area under the precision–recall curve after making precision monotonically
  non-increasing.
- **Undefined** values are None (JSON ``null``, ``-`` in the table): precision with
  no detections, recall and AP with no truth. F1 is ``2·TP / (detections + truth)``,
  which is 0 rather than undefined when one side is empty and None only when both are.
- **Per frame**: detectors see one frame (one chunk) at a time, so a signal that
  outlasts a chunk is found once per chunk. :func:`clip_to_frames` cuts the truth
  into the same per-frame pieces, widened to at least one pixel (a detector cannot
  place an edge finer than its frame's resolution), before scoring.
- **Ignored truth** (``ignore=``): detections matching one of these boxes (and no
  scored truth) are neither true nor false positives — the usual way to score only
  truth above an SNR without punishing a detector for finding weaker signals; see
  :func:`split_by_snr`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rfstream.detect.nms import iou_matrix
from rfstream.types import Detection

__all__ = [
    "EvalReport",
    "FrameTruth",
    "Metrics",
    "ThresholdResult",
    "TruthBox",
    "average_precision",
    "clip_to_frames",
    "evaluate",
    "filter_by_snr",
    "split_by_snr",
]

_UNKNOWN = "unknown"


@runtime_checkable
class TruthBox(Protocol):
    """A labelled signal; ``rfstream.sources.sigmf.Annotation`` is one (and has ``snr_db``)."""

    t_start_s: float
    t_stop_s: float
    f_low_hz: float
    f_high_hz: float
    label: str


@dataclass(frozen=True, slots=True)
class Metrics:
    """Counts and rates for one IoU threshold and one label (or all labels)."""

    n_truth: int
    n_detections: int | None  # None: not defined for a truth label in label-agnostic mode
    tp: int
    fp: int | None
    fn: int
    precision: float | None
    recall: float | None
    f1: float | None
    ap: float | None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Metrics:
        return cls(**{name: data[name] for name in cls.__slots__})  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class ThresholdResult:
    iou_threshold: float
    overall: Metrics
    per_label: dict[str, Metrics] = field(default_factory=dict)
    mean_iou: float | None = None  # over the matched pairs

    def to_dict(self) -> dict[str, Any]:
        return {
            "iou_threshold": self.iou_threshold,
            "overall": self.overall.to_dict(),
            "per_label": {k: v.to_dict() for k, v in sorted(self.per_label.items())},
            "mean_iou": self.mean_iou,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ThresholdResult:
        return cls(
            iou_threshold=float(data["iou_threshold"]),
            overall=Metrics.from_dict(data["overall"]),
            per_label={k: Metrics.from_dict(v) for k, v in data["per_label"].items()},
            mean_iou=data["mean_iou"],
        )


@dataclass(frozen=True, slots=True)
class EvalReport:
    """The result of :func:`evaluate`: one :class:`ThresholdResult` per IoU threshold."""

    label_aware: bool
    n_truth: int
    n_detections: int
    n_ignored_detections: tuple[int, ...]  # per threshold: detections that matched ignored truth
    results: tuple[ThresholdResult, ...]

    def at(self, iou_threshold: float) -> ThresholdResult:
        for r in self.results:
            if math.isclose(r.iou_threshold, iou_threshold):
                return r
        raise KeyError(f"no result at IoU {iou_threshold}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (plain dicts, lists, numbers, None)."""
        return {
            "label_aware": self.label_aware,
            "n_truth": self.n_truth,
            "n_detections": self.n_detections,
            "n_ignored_detections": list(self.n_ignored_detections),
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalReport:
        return cls(
            label_aware=bool(data["label_aware"]),
            n_truth=int(data["n_truth"]),
            n_detections=int(data["n_detections"]),
            n_ignored_detections=tuple(int(v) for v in data["n_ignored_detections"]),
            results=tuple(ThresholdResult.from_dict(r) for r in data["results"]),
        )

    def to_table(self) -> str:
        """An aligned text table: one row per IoU threshold and label ("all" first)."""
        header = ("IoU", "label", "truth", "dets", "TP", "FP", "FN", "prec", "recall", "F1", "AP")
        rows = [header]
        for r in self.results:
            items = [("all", r.overall), *sorted(r.per_label.items())]
            for label, m in items:
                rows.append(
                    (
                        f"{r.iou_threshold:g}",
                        label,
                        str(m.n_truth),
                        _cell(m.n_detections),
                        str(m.tp),
                        _cell(m.fp),
                        str(m.fn),
                        _cell(m.precision),
                        _cell(m.recall),
                        _cell(m.f1),
                        _cell(m.ap),
                    )
                )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = []
        for n, row in enumerate(rows):
            cells = [
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(cells).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        mode = "label-aware" if self.label_aware else "label-agnostic"
        lines.append(f"({mode} matching; {self.n_truth} truth, {self.n_detections} detections)")
        return "\n".join(lines)


def _cell(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _boxes(items: Sequence[Any]) -> np.ndarray:
    # x = frequency, y = time, like the pixel boxes; IoU does not care about units.
    return np.array(
        [(b.f_low_hz, b.t_start_s, b.f_high_hz, b.t_stop_s) for b in items], dtype=np.float64
    ).reshape(-1, 4)


def average_precision(is_tp: Sequence[bool] | np.ndarray, n_truth: int) -> float | None:
    """All-point interpolated AP of a ranked list (best first) of TP/FP flags."""
    if n_truth <= 0:
        return None
    flags = np.asarray(is_tp, dtype=bool)
    if flags.size == 0:
        return 0.0
    tp = np.cumsum(flags)
    fp = np.cumsum(~flags)
    recall = np.concatenate(([0.0], tp / n_truth, [1.0]))
    precision = np.concatenate(([1.0], tp / (tp + fp), [0.0]))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def _metrics(n_truth: int, flags: np.ndarray, n_det: int | None, tp: int) -> Metrics:
    fp = None if n_det is None else n_det - tp
    precision = None if not n_det else tp / n_det
    recall = None if n_truth == 0 else tp / n_truth
    if n_det is None:
        f1 = None
        ap = None
    else:
        f1 = None if n_truth + n_det == 0 else 2.0 * tp / (n_truth + n_det)
        ap = average_precision(flags, n_truth)
    return Metrics(
        n_truth=n_truth,
        n_detections=n_det,
        tp=tp,
        fp=fp,
        fn=n_truth - tp,
        precision=precision,
        recall=recall,
        f1=f1,
        ap=ap,
    )


def _match(iou: np.ndarray, allowed: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy: row by row (detections, best first) take the best free column. Returns column or -1."""
    n_det, n_truth = iou.shape
    matched = np.full(n_det, -1, dtype=np.int64)
    free = np.ones(n_truth, dtype=bool)
    for i in range(n_det):
        candidates = np.where(allowed[i] & free & (iou[i] >= threshold), iou[i], -1.0)
        if n_truth and candidates.max() >= 0:
            j = int(np.argmax(candidates))  # ties: the lower truth index
            matched[i] = j
            free[j] = False
    return matched


def evaluate(
    truth: Sequence[TruthBox],
    detections: Sequence[Detection],
    iou_thresholds: Iterable[float] = (0.5, 0.25),
    *,
    label_aware: bool | None = None,
    ignore: Sequence[TruthBox] = (),
) -> EvalReport:
    """Score ``detections`` against ``truth`` at each IoU threshold. See the module docstring."""
    thresholds = tuple(float(t) for t in iou_thresholds)
    if label_aware is None:
        label_aware = any(d.label != _UNKNOWN for d in detections)
    order = sorted(
        range(len(detections)),
        key=lambda i: (-detections[i].score, detections[i].t_start_s, detections[i].f_low_hz),
    )
    dets = [detections[i] for i in order]
    det_labels = np.array([d.label for d in dets], dtype=object)
    truth_labels = np.array([t.label for t in truth], dtype=object)
    iou = iou_matrix(_boxes(dets), _boxes(truth))
    iou_ignored = iou_matrix(_boxes(dets), _boxes(ignore))
    if label_aware:
        allowed = det_labels[:, None] == truth_labels[None, :]
        allowed_ignored = det_labels[:, None] == np.array([t.label for t in ignore], dtype=object)[None, :]
    else:
        allowed = np.ones(iou.shape, dtype=bool)
        allowed_ignored = np.ones(iou_ignored.shape, dtype=bool)
    labels = sorted(set(truth_labels.tolist()) | (set(det_labels.tolist()) if label_aware else set()))

    results = []
    ignored_counts = []
    for threshold in thresholds:
        matched = _match(iou, allowed, threshold)
        # Unmatched detections that hit ignored truth drop out of the ranking.
        hits_ignored = (matched < 0) & np.any(allowed_ignored & (iou_ignored >= threshold), axis=1)
        counted = ~hits_ignored
        ignored_counts.append(int(hits_ignored.sum()))
        flags = matched[counted] >= 0
        overall = _metrics(len(truth), flags, int(counted.sum()), int(flags.sum()))
        per_label: dict[str, Metrics] = {}
        for label in labels:
            truth_mask = truth_labels == label
            n_truth = int(truth_mask.sum())
            if label_aware:
                mine = counted & (det_labels == label)
                flags_l = matched[mine] >= 0
                per_label[label] = _metrics(n_truth, flags_l, int(mine.sum()), int(flags_l.sum()))
            else:
                tp = int(np.isin(np.flatnonzero(truth_mask), matched[matched >= 0]).sum())
                per_label[label] = _metrics(n_truth, np.zeros(0, bool), None, tp)
        pairs = matched >= 0
        mean_iou = float(iou[np.flatnonzero(pairs), matched[pairs]].mean()) if pairs.any() else None
        results.append(ThresholdResult(threshold, overall, per_label, mean_iou))
    return EvalReport(
        label_aware=bool(label_aware),
        n_truth=len(truth),
        n_detections=len(detections),
        n_ignored_detections=tuple(ignored_counts),
        results=tuple(results),
    )


def split_by_snr(truth: Iterable[Any], min_snr_db: float) -> tuple[list[Any], list[Any]]:
    """Split truth into (scored, ignored): scored has ``snr_db >= min_snr_db``.

    Truth without a known SNR (no ``snr_db`` attribute, or None/NaN) is scored. Pass the
    second list as ``evaluate(..., ignore=...)`` so detections of weaker signals do not
    count as false positives.
    """
    scored, ignored = [], []
    for t in truth:
        snr = getattr(t, "snr_db", None)
        if snr is None or (isinstance(snr, float) and math.isnan(snr)) or snr >= min_snr_db:
            scored.append(t)
        else:
            ignored.append(t)
    return scored, ignored


def filter_by_snr(truth: Iterable[Any], min_snr_db: float) -> list[Any]:
    """Only the truth with ``snr_db >= min_snr_db`` (unknown SNR kept); see :func:`split_by_snr`."""
    return split_by_snr(truth, min_snr_db)[0]


@dataclass(frozen=True, slots=True)
class FrameTruth:
    """One truth box cut to one frame's time span (and at least one pixel in each axis)."""

    t_start_s: float
    t_stop_s: float
    f_low_hz: float
    f_high_hz: float
    label: str
    snr_db: float | None


def clip_to_frames(truth: Iterable[Any], frames: Iterable[Any]) -> list[FrameTruth]:
    """Cut each truth box into the pieces that fall inside each frame's time span.

    ``frames`` are :class:`rfstream.types.Frame` (or anything with ``t0_s``, ``t1_s``,
    ``dt_s``, ``f0_hz``, ``f1_hz``, ``df_hz``). Boxes are also clipped to the frame's
    band; a piece narrower than a pixel is widened about its centre to one pixel.
    """
    truth = list(truth)
    out: list[FrameTruth] = []
    for frame in frames:
        for t in truth:
            t0, t1 = max(t.t_start_s, frame.t0_s), min(t.t_stop_s, frame.t1_s)
            f0, f1 = max(t.f_low_hz, frame.f0_hz), min(t.f_high_hz, frame.f1_hz)
            if t1 <= t0 and not (t.t_start_s == t.t_stop_s and frame.t0_s <= t0 < frame.t1_s):
                continue
            if f1 <= f0 and not (t.f_low_hz == t.f_high_hz and frame.f0_hz <= f0 < frame.f1_hz):
                continue
            t0, t1 = _at_least(t0, t1, frame.dt_s)
            f0, f1 = _at_least(f0, f1, frame.df_hz)
            out.append(FrameTruth(t0, t1, f0, f1, t.label, getattr(t, "snr_db", None)))
    return out


def _at_least(lo: float, hi: float, width: float) -> tuple[float, float]:
    if hi - lo >= width:
        return lo, hi
    mid = 0.5 * (lo + hi)
    return mid - 0.5 * width, mid + 0.5 * width
