"""Scoring detections against labelled truth: AP, precision, recall, SNR bins, confusion, duplicates, calibration.

Pure functions on boxes in time × frequency; no files, no pipeline.

- **IoU** is computed on the physical boxes (``t_start_s..t_stop_s`` ×
  ``f_low_hz..f_high_hz``).
- **Matching**, per IoU threshold: detections in descending score (ties: earlier,
  then lower frequency), each matched to the still-unmatched truth box with the
  highest IoU ≥ the threshold (IoU 0 never matches). One truth per detection and
  one detection per truth: a second detection of the same signal is a false positive.
- **Label modes**: ``label_aware=True`` matches only equal labels; ``False``
  matches any label (for detectors that do not classify, and to judge the boxes
  alone). ``None`` (the default of :func:`evaluate`) picks agnostic when every
  detection is ``"unknown"`` (the energy detector), else aware.
- **Per label**: in label-aware mode, P/R/F1/AP for each label over the truth and
  the detections of that label. In agnostic mode, detections have no meaningful
  label, so per truth label only recall (and the counts) is reported — computed
  from the one class-agnostic matching; precision and AP are None.
- **AP** is the all-point interpolated average precision (PASCAL VOC 2010+): the
  area under the precision–recall curve after making precision monotonically
  non-increasing. It ranks by ``score``; precision and recall count every box
  given, so for a pipeline's published boxes they are the figures *at its
  operating threshold* (the pipeline drops boxes below it before publishing).
- **Undefined** values are None (JSON ``null``, ``-`` in the table): precision with
  no detections, recall and AP with no truth. F1 is ``2·TP / (detections + truth)``,
  which is 0 rather than undefined when one side is empty and None only when both are.
- **Per frame**: detectors see one frame (one chunk) at a time, so a signal that
  outlasts a chunk is found once per chunk. :func:`clip_to_frames` cuts the truth
  into the same per-frame pieces and widens each piece to the frame's resolution —
  at least one column wide and one row tall, kept inside the frame — because a
  detector cannot place an edge finer than a pixel. :func:`widening_note` says so
  in one line.
- **Ignored truth** (``ignore=``): detections matching one of these boxes (and no
  scored truth) are neither true nor false positives — the usual way to score only
  truth above an SNR without punishing a detector for finding weaker signals; see
  :func:`split_by_snr`. Every metric below honours it.

Beyond P/R/AP (:func:`evaluate`), :func:`score_run` gathers everything a run is
judged by, from one matching:

- **Recall per SNR bin** (:func:`recall_by_snr`): truth binned by its ``snr_db``
  (default edges 0, 5, 10, 20 dB: ``<0``, ``0–5``, ``5–10``, ``10–20``, ``≥20``, and
  ``unknown``), recall of each bin under the run's one matching.
- **Confusion matrix** (:func:`confusion_matrix`): truth label × detected label for
  pairs matched label-agnostically at IoU 0.5, a ``missed`` column (truth nobody
  boxed) and a ``false alarm`` row (boxes on no truth).
- **Duplicates** (:func:`count_duplicates`): boxes of one chunk overlapping another
  box of the same chunk with IoU > 0.5, whatever their labels. ``duplicates`` is the
  number of boxes beyond one per overlap cluster (what a subscriber sees too many);
  it should be 0. Also counted: truth boxes that more than one box covers at IoU ≥ 0.5.
- **Reliability** (:func:`reliability`): detections binned by ``score`` (10 equal
  bins); per bin the mean score and the fraction that are true positives under the
  one-to-one matching at IoU 0.5 (so a duplicate is wrong, as it is for a user).
  ECE = Σ (n_bin / n) · |fraction correct − mean score|. A calibrated score has
  ECE near 0. Both label-aware (the box must carry the truth's label) and
  label-agnostic.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from rfstream.detect.nms import iou_matrix
from rfstream.types import Detection

__all__ = [
    "SNR_EDGES_DB",
    "Confusion",
    "Duplicates",
    "EvalReport",
    "FrameTruth",
    "Metrics",
    "Reliability",
    "ReliabilityBin",
    "RunReport",
    "SnrBin",
    "ThresholdResult",
    "TruthBox",
    "average_precision",
    "clip_to_frames",
    "confusion_matrix",
    "count_duplicates",
    "evaluate",
    "filter_by_snr",
    "join_unresolved",
    "recall_by_group",
    "recall_by_snr",
    "reliability",
    "score_run",
    "select_truth",
    "split_by_snr",
    "widening_note",
    "widening_stats",
]

_UNKNOWN = "unknown"
SNR_EDGES_DB: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0)
MISSED = "missed"
FALSE_ALARM = "false alarm"
RFSTREAM_GENERATOR = "rfstream"  # core:generator of the annotations rfstream writes (sinks/sigmf_annotations)


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
        rows = []
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
        mode = "label-aware" if self.label_aware else "label-agnostic"
        footer = f"({mode} matching; {self.n_truth} truth, {self.n_detections} detections)"
        return _text_table(header, rows, left=2) + "\n" + footer


def _cell(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> str:
    """Aligned columns: the first ``left`` columns to the left, the rest to the right."""
    rows = [tuple(header), *(tuple(r) for r in rows)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


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


# --- the one matching every metric shares -------------------------------------------------------
_BLOCK = 1024  # detections per IoU block: memory stays O(block × truth), not O(detections × truth)


def _candidates(a: np.ndarray, b: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per box of ``a``: the boxes of ``b`` it overlaps (IoU > 0), best IoU first, ties by index."""
    out: list[tuple[np.ndarray, np.ndarray]] = []
    empty = (np.zeros(0, np.int64), np.zeros(0, np.float64))
    if len(b) == 0:
        return [empty] * len(a)
    for start in range(0, len(a), _BLOCK):
        iou = iou_matrix(a[start : start + _BLOCK], b)
        for row in iou:
            js = np.flatnonzero(row > 0)
            if js.size == 0:
                out.append(empty)
                continue
            vals = row[js]
            order = np.lexsort((js, -vals))
            out.append((js[order], vals[order]))
    return out


@dataclass(frozen=True, slots=True)
class _Match:
    matched: np.ndarray  # per ranked detection: the truth index it matched, or -1
    iou: np.ndarray  # per ranked detection: the matched IoU (0 where unmatched)
    ignored: np.ndarray  # per ranked detection: unmatched, but on ignored truth (not counted)

    @property
    def counted(self) -> np.ndarray:
        return ~self.ignored


class _Matching:
    """Detections ranked once, candidate pairs computed once; ``match(threshold, aware)`` is cheap."""

    def __init__(self, truth: Sequence[Any], detections: Sequence[Detection], ignore: Sequence[Any] = ()):
        order = sorted(
            range(len(detections)),
            key=lambda i: (-detections[i].score, detections[i].t_start_s, detections[i].f_low_hz),
        )
        self.truth = list(truth)
        self.dets = [detections[i] for i in order]
        self.det_labels = np.array([d.label for d in self.dets], dtype=object)
        self.truth_labels = np.array([t.label for t in self.truth], dtype=object)
        self.ignore_labels = np.array([t.label for t in ignore], dtype=object)
        self.scores = np.array([d.score for d in self.dets], dtype=np.float64)
        boxes = _boxes(self.dets)
        self._cand = _candidates(boxes, _boxes(self.truth))
        self._cand_ignored = _candidates(boxes, _boxes(list(ignore)))
        self._cache: dict[tuple[float, bool], _Match] = {}

    def match(self, threshold: float, label_aware: bool) -> _Match:
        key = (float(threshold), bool(label_aware))
        if key not in self._cache:
            self._cache[key] = self._match(*key)
        return self._cache[key]

    def _match(self, threshold: float, label_aware: bool) -> _Match:
        n = len(self.dets)
        matched = np.full(n, -1, dtype=np.int64)
        ious = np.zeros(n, dtype=np.float64)
        free = np.ones(len(self.truth), dtype=bool)
        for i, (js, vals) in enumerate(self._cand):
            for j, v in zip(js.tolist(), vals.tolist(), strict=True):
                if v < threshold:
                    break
                if free[j] and (not label_aware or self.truth_labels[j] == self.det_labels[i]):
                    matched[i], ious[i], free[j] = j, v, False
                    break
        ignored = np.zeros(n, dtype=bool)
        for i, (js, vals) in enumerate(self._cand_ignored):
            if matched[i] >= 0 or js.size == 0:
                continue
            ok = vals >= threshold
            if label_aware:
                ok &= self.ignore_labels[js] == self.det_labels[i]
            ignored[i] = bool(ok.any())
        return _Match(matched, ious, ignored)

    def covered_more_than_once(self, threshold: float) -> int:
        """Truth boxes that two or more detections overlap with IoU ≥ ``threshold`` (any label)."""
        hits: Counter[int] = Counter()
        for js, vals in self._cand:
            hits.update(js[vals >= threshold].tolist())
        return sum(1 for count in hits.values() if count > 1)


def _evaluate(m: _Matching, thresholds: Sequence[float], label_aware: bool) -> EvalReport:
    labels = sorted(set(m.truth_labels.tolist()) | (set(m.det_labels.tolist()) if label_aware else set()))
    results = []
    ignored_counts = []
    for threshold in thresholds:
        r = m.match(threshold, label_aware)
        counted = r.counted
        ignored_counts.append(int(r.ignored.sum()))
        flags = r.matched[counted] >= 0
        overall = _metrics(len(m.truth), flags, int(counted.sum()), int(flags.sum()))
        per_label: dict[str, Metrics] = {}
        found = r.matched[r.matched >= 0]
        for label in labels:
            truth_mask = m.truth_labels == label
            n_truth = int(truth_mask.sum())
            if label_aware:
                mine = counted & (m.det_labels == label)
                flags_l = r.matched[mine] >= 0
                per_label[label] = _metrics(n_truth, flags_l, int(mine.sum()), int(flags_l.sum()))
            else:
                tp = int(np.isin(np.flatnonzero(truth_mask), found).sum())
                per_label[label] = _metrics(n_truth, np.zeros(0, bool), None, tp)
        pairs = r.matched >= 0
        mean_iou = float(r.iou[pairs].mean()) if pairs.any() else None
        results.append(ThresholdResult(threshold, overall, per_label, mean_iou))
    return EvalReport(
        label_aware=bool(label_aware),
        n_truth=len(m.truth),
        n_detections=len(m.dets),
        n_ignored_detections=tuple(ignored_counts),
        results=tuple(results),
    )


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
    return _evaluate(_Matching(truth, detections, ignore), thresholds, bool(label_aware))


# --- recall per SNR bin --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SnrBin:
    """Recall of the truth whose SNR lies in ``[lo_db, hi_db)``; ``name`` "unknown": no SNR."""

    name: str
    lo_db: float | None
    hi_db: float | None
    n_truth: int
    tp: int
    recall: float | None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


def _snr_of(t: Any) -> float | None:
    snr = getattr(t, "snr_db", None)
    if snr is None:
        return None
    snr = float(snr)
    return None if math.isnan(snr) else snr


def _bin_name(lo: float | None, hi: float | None) -> str:
    if lo is None:
        return f"<{hi:g}"
    if hi is None:
        return f"≥{lo:g}"
    return f"{lo:g}–{hi:g}"


def _snr_bins(m: _Matching, r: _Match, edges: Sequence[float]) -> tuple[SnrBin, ...]:
    found = np.zeros(len(m.truth), dtype=bool)
    found[r.matched[r.matched >= 0]] = True
    snrs = [_snr_of(t) for t in m.truth]
    known = np.array([s is not None for s in snrs], dtype=bool)
    values = np.array([s if s is not None else np.nan for s in snrs], dtype=np.float64)
    bounds = [None, *sorted(float(e) for e in edges), None]
    out = []
    for lo, hi in itertools.pairwise(bounds):
        mask = known.copy()
        if lo is not None:
            mask &= values >= lo
        if hi is not None:
            mask &= values < hi
        n = int(mask.sum())
        tp = int(found[mask].sum())
        out.append(SnrBin(_bin_name(lo, hi), lo, hi, n, tp, tp / n if n else None))
    n = int((~known).sum())
    if n:
        tp = int(found[~known].sum())
        out.append(SnrBin("unknown", None, None, n, tp, tp / n))
    return tuple(out)


def recall_by_snr(
    truth: Sequence[TruthBox],
    detections: Sequence[Detection],
    *,
    iou_threshold: float = 0.5,
    label_aware: bool = False,
    edges_db: Sequence[float] = SNR_EDGES_DB,
    ignore: Sequence[TruthBox] = (),
) -> tuple[SnrBin, ...]:
    """Recall per SNR bin (edges in dB; below the first and from the last open-ended)."""
    m = _Matching(truth, detections, ignore)
    return _snr_bins(m, m.match(iou_threshold, label_aware), edges_db)


def recall_by_group(
    truth: Sequence[TruthBox],
    detections: Sequence[Detection],
    groups: Sequence[str],
    *,
    iou_threshold: float = 0.5,
    label_aware: bool = False,
    ignore: Sequence[TruthBox] = (),
) -> dict[str, tuple[int, int, float | None]]:
    """Recall per group of truth (``groups[i]`` names truth ``i``'s group, e.g. a generator's fine
    label): ``{group: (n_truth, tp, recall)}`` under the one matching."""
    if len(groups) != len(truth):
        raise ValueError(f"{len(groups)} groups for {len(truth)} truth boxes")
    m = _Matching(truth, detections, ignore)
    r = m.match(iou_threshold, label_aware)
    found = np.zeros(len(truth), dtype=bool)
    found[r.matched[r.matched >= 0]] = True
    out: dict[str, tuple[int, int, float | None]] = {}
    for g in sorted(set(groups)):
        mask = np.array([x == g for x in groups], dtype=bool)
        n, tp = int(mask.sum()), int(found[mask].sum())
        out[g] = (n, tp, tp / n if n else None)
    return out


# --- confusion matrix ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Confusion:
    """Truth label × detected label for label-agnostically matched pairs.

    ``counts[truth][detected]``; ``missed[truth]``: truth no box matched;
    ``false_alarm[detected]``: boxes that matched no truth (nor ignored truth).
    """

    iou_threshold: float
    truth_labels: tuple[str, ...]
    detected_labels: tuple[str, ...]
    counts: dict[str, dict[str, int]]
    missed: dict[str, int]
    false_alarm: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "iou_threshold": self.iou_threshold,
            "truth_labels": list(self.truth_labels),
            "detected_labels": list(self.detected_labels),
            "counts": {t: dict(row) for t, row in self.counts.items()},
            "missed": dict(self.missed),
            "false_alarm": dict(self.false_alarm),
        }

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows: one row per truth label, then the false-alarm row."""
        header = ["truth \\ detected", *self.detected_labels, MISSED]
        rows = [
            [t, *(str(self.counts[t].get(d, 0)) for d in self.detected_labels), str(self.missed.get(t, 0))]
            for t in self.truth_labels
        ]
        rows.append([FALSE_ALARM, *(str(self.false_alarm.get(d, 0)) for d in self.detected_labels), "-"])
        return header, rows

    def to_table(self) -> str:
        header, rows = self.rows()
        return _text_table(header, rows)


def _confusion(m: _Matching, r: _Match, threshold: float) -> Confusion:
    truth_labels = tuple(sorted(set(m.truth_labels.tolist())))
    detected_labels = tuple(sorted(set(m.det_labels[r.counted].tolist())))
    counts: dict[str, dict[str, int]] = {t: {} for t in truth_labels}
    false_alarm: dict[str, int] = {}
    for i in np.flatnonzero(r.counted):
        d = m.det_labels[i]
        j = r.matched[i]
        if j >= 0:
            row = counts[m.truth_labels[j]]
            row[d] = row.get(d, 0) + 1
        else:
            false_alarm[d] = false_alarm.get(d, 0) + 1
    found = np.zeros(len(m.truth), dtype=bool)
    found[r.matched[r.matched >= 0]] = True
    missed = {t: int((~found & (m.truth_labels == t)).sum()) for t in truth_labels}
    return Confusion(threshold, truth_labels, detected_labels, counts, missed, false_alarm)


def confusion_matrix(
    truth: Sequence[TruthBox],
    detections: Sequence[Detection],
    *,
    iou_threshold: float = 0.5,
    ignore: Sequence[TruthBox] = (),
) -> Confusion:
    """The confusion matrix of a label-agnostic matching (see :class:`Confusion`)."""
    m = _Matching(truth, detections, ignore)
    return _confusion(m, m.match(iou_threshold, False), iou_threshold)


# --- duplicates --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Duplicates:
    """Boxes of one chunk that overlap another box of that chunk above the IoU threshold.

    ``duplicates``: boxes beyond one per cluster of mutually overlapping boxes (0 when
    every signal is boxed once); ``boxes_in_duplicates``: boxes overlapping at least one
    other; ``pairs``: overlapping pairs; ``rate``: duplicates per box; ``per_signal``:
    duplicates per cluster (one cluster ≈ one signal boxed); ``truth_boxed_twice``: truth
    boxes that two or more boxes cover at IoU ≥ the threshold (None without truth).
    """

    iou_threshold: float
    n_boxes: int
    n_chunks: int
    clusters: int
    duplicates: int
    boxes_in_duplicates: int
    pairs: int
    truth_boxed_twice: int | None = None

    @property
    def rate(self) -> float | None:
        return self.duplicates / self.n_boxes if self.n_boxes else None

    @property
    def per_signal(self) -> float | None:
        return self.duplicates / self.clusters if self.clusters else None

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]
        out["rate"] = self.rate
        out["per_signal"] = self.per_signal
        return out

    def summary(self) -> str:
        twice = (
            "" if self.truth_boxed_twice is None else f"; {self.truth_boxed_twice} truth boxes boxed twice"
        )
        return (
            f"duplicates (boxes of one chunk with IoU > {self.iou_threshold:g}): {self.duplicates} extra boxes "
            f"in {self.n_boxes} ({_cell(self.rate)} per box, {_cell(self.per_signal)} per signal), "
            f"{self.pairs} overlapping pairs{twice}"
        )


def _components(adjacent: np.ndarray) -> int:
    """How many connected components a symmetric boolean adjacency matrix has."""
    from rfstream.detect.fragments import connected_components

    return len(connected_components(adjacent.shape[0], adjacent))


def count_duplicates(
    groups: Iterable[Sequence[Detection]] | Sequence[Detection], *, iou_threshold: float = 0.5
) -> Duplicates:
    """Count duplicates per chunk. ``groups``: one sequence of boxes per chunk (a pipeline's
    ChunkResult.detections), or one flat sequence of Detections grouped by ``chunk_seq``."""
    groups = list(groups)
    if groups and isinstance(groups[0], Detection):
        by_seq: dict[int, list[Detection]] = {}
        for d in groups:  # type: ignore[assignment]
            by_seq.setdefault(d.chunk_seq, []).append(d)  # type: ignore[union-attr]
        groups = list(by_seq.values())
    n_boxes = clusters = duplicates = involved = pairs = 0
    for group in groups:
        n = len(group)
        n_boxes += n
        if n == 0:
            continue
        iou = iou_matrix(_boxes(group), _boxes(group))
        adjacent = iou > iou_threshold
        np.fill_diagonal(adjacent, False)
        pairs += int(np.triu(adjacent, 1).sum())
        involved += int(adjacent.any(axis=1).sum())
        c = _components(adjacent)
        clusters += c
        duplicates += n - c
    return Duplicates(iou_threshold, n_boxes, len(groups), clusters, duplicates, involved, pairs)


# --- reliability -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    lo: float
    hi: float
    n: int
    mean_score: float | None
    fraction_correct: float | None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Reliability:
    """Score bins vs the fraction of their boxes that are true positives; ECE over the bins."""

    label_aware: bool
    iou_threshold: float
    n: int
    ece: float | None
    bins: tuple[ReliabilityBin, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label_aware": self.label_aware,
            "iou_threshold": self.iou_threshold,
            "n": self.n,
            "ece": self.ece,
            "bins": [b.to_dict() for b in self.bins],
        }

    def to_table(self) -> str:
        rows = [
            [f"{b.lo:.1f}–{b.hi:.1f}", str(b.n), _cell(b.mean_score), _cell(b.fraction_correct)]
            for b in self.bins
        ]
        mode = "label-aware" if self.label_aware else "label-agnostic"
        return (
            _text_table(["score", "boxes", "mean score", "fraction correct"], rows)
            + f"\n({mode}, IoU {self.iou_threshold:g}; ECE {_cell(self.ece)} over {self.n} boxes)"
        )


def _reliability(m: _Matching, r: _Match, threshold: float, label_aware: bool, n_bins: int) -> Reliability:
    counted = r.counted
    scores = np.clip(m.scores[counted], 0.0, 1.0)
    correct = r.matched[counted] >= 0
    index = np.minimum((scores * n_bins).astype(np.int64), n_bins - 1)
    bins = []
    ece = 0.0
    for b in range(n_bins):
        mask = index == b
        k = int(mask.sum())
        if k:
            mean_score, frac = float(scores[mask].mean()), float(correct[mask].mean())
            ece += k * abs(frac - mean_score)
        else:
            mean_score = frac = None
        bins.append(ReliabilityBin(b / n_bins, (b + 1) / n_bins, k, mean_score, frac))
    n = int(scores.size)
    return Reliability(bool(label_aware), threshold, n, ece / n if n else None, tuple(bins))


def reliability(
    truth: Sequence[TruthBox],
    detections: Sequence[Detection],
    *,
    iou_threshold: float = 0.5,
    label_aware: bool = True,
    n_bins: int = 10,
    ignore: Sequence[TruthBox] = (),
) -> Reliability:
    """The reliability table and expected calibration error (see the module docstring)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    m = _Matching(truth, detections, ignore)
    return _reliability(m, m.match(iou_threshold, label_aware), iou_threshold, label_aware, n_bins)


# --- everything about one run ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunReport:
    """Every metric of one set of detections, from one matching (see :func:`score_run`)."""

    label_aware: EvalReport
    label_agnostic: EvalReport
    snr_recall_aware: tuple[SnrBin, ...]
    snr_recall_agnostic: tuple[SnrBin, ...]
    confusion: Confusion
    duplicates: Duplicates
    reliability_aware: Reliability
    reliability_agnostic: Reliability

    def to_dict(self) -> dict[str, Any]:
        return {
            "label_aware": self.label_aware.to_dict(),
            "label_agnostic": self.label_agnostic.to_dict(),
            "snr_recall": {
                "label_aware": [b.to_dict() for b in self.snr_recall_aware],
                "label_agnostic": [b.to_dict() for b in self.snr_recall_agnostic],
            },
            "confusion": self.confusion.to_dict(),
            "duplicates": self.duplicates.to_dict(),
            "reliability": {
                "label_aware": self.reliability_aware.to_dict(),
                "label_agnostic": self.reliability_agnostic.to_dict(),
            },
        }

    def snr_table(self) -> str:
        rows = [
            [a.name, str(a.n_truth), _cell(a.recall), _cell(b.recall)]
            for a, b in zip(self.snr_recall_agnostic, self.snr_recall_aware, strict=True)
        ]
        iou = self.confusion.iou_threshold
        return _text_table(["SNR dB", "truth", f"recall@{iou:g} any label", f"recall@{iou:g} label"], rows)

    def reliability_table(self) -> str:
        """Both reliability tables side by side, with their ECE."""
        a, g = self.reliability_aware, self.reliability_agnostic
        rows = [
            [
                f"{x.lo:.1f}–{x.hi:.1f}",
                str(x.n),
                _cell(x.mean_score),
                _cell(x.fraction_correct),
                _cell(y.fraction_correct),
            ]
            for x, y in zip(a.bins, g.bins, strict=True)
        ]
        header = ["score", "boxes", "mean score", "correct (label)", "correct (any label)"]
        return (
            f"reliability at IoU {a.iou_threshold:g}: score bins vs the fraction of their boxes that are true positives\n"
            + _text_table(header, rows)
            + f"\nECE {_cell(a.ece)} label-aware, {_cell(g.ece)} label-agnostic ({a.n} boxes)"
        )

    def to_text(self, *, main_label_aware: bool = True) -> str:
        """Every table, the main P/R/AP table first (label-aware unless told otherwise)."""
        main = self.label_aware if main_label_aware else self.label_agnostic
        other = self.label_agnostic if main_label_aware else self.label_aware
        o = other.results[0]
        other_mode = "label-aware" if other.label_aware else "label-agnostic"
        return "\n\n".join(
            [
                main.to_table(),
                f"{other_mode} at IoU {o.iou_threshold:g}: AP {_cell(o.overall.ap)}, "
                f"precision {_cell(o.overall.precision)}, recall {_cell(o.overall.recall)}",
                "recall per SNR bin\n" + self.snr_table(),
                f"confusion (label-agnostic matching at IoU {self.confusion.iou_threshold:g})\n"
                + self.confusion.to_table(),
                self.duplicates.summary(),
                self.reliability_table(),
            ]
        )


def score_run(
    truth: Sequence[TruthBox],
    detections: Sequence[Detection],
    *,
    groups: Iterable[Sequence[Detection]] | None = None,
    ignore: Sequence[TruthBox] = (),
    iou_thresholds: Iterable[float] = (0.5, 0.25),
    iou_threshold: float = 0.5,
    snr_edges_db: Sequence[float] = SNR_EDGES_DB,
    n_bins: int = 10,
) -> RunReport:
    """Every metric of ``detections`` against ``truth``.

    ``iou_thresholds`` for the P/R/AP tables; ``iou_threshold`` for the SNR bins, the
    confusion matrix, duplicates and reliability. ``groups``: the detections per chunk
    as published (else grouped by ``chunk_seq``) for the duplicate count.
    """
    thresholds = tuple(float(t) for t in iou_thresholds)
    m = _Matching(truth, detections, ignore)
    aware = m.match(iou_threshold, True)
    agnostic = m.match(iou_threshold, False)
    dup = count_duplicates(groups if groups is not None else list(detections), iou_threshold=iou_threshold)
    dup = Duplicates(
        dup.iou_threshold,
        dup.n_boxes,
        dup.n_chunks,
        dup.clusters,
        dup.duplicates,
        dup.boxes_in_duplicates,
        dup.pairs,
        m.covered_more_than_once(iou_threshold),
    )
    return RunReport(
        label_aware=_evaluate(m, thresholds, True),
        label_agnostic=_evaluate(m, thresholds, False),
        snr_recall_aware=_snr_bins(m, aware, snr_edges_db),
        snr_recall_agnostic=_snr_bins(m, agnostic, snr_edges_db),
        confusion=_confusion(m, agnostic, iou_threshold),
        duplicates=dup,
        reliability_aware=_reliability(m, aware, iou_threshold, True, n_bins),
        reliability_agnostic=_reliability(m, agnostic, iou_threshold, False, n_bins),
    )


# --- truth: which annotations, cut and widened per frame -------------------------------------------
def select_truth(annotations: Iterable[Any]) -> tuple[list[Any], list[Any]]:
    """Split a recording's annotations into (truth, rfstream's own detections).

    rfstream's AnnotationWriter marks every annotation it writes with
    ``core:generator = "rfstream"`` (read as ``Annotation.generator``); scoring
    against those would score rfstream against itself.
    """
    truth, own = [], []
    for a in annotations:
        (own if getattr(a, "generator", "") == RFSTREAM_GENERATOR else truth).append(a)
    return truth, own


def split_by_snr(truth: Iterable[Any], min_snr_db: float) -> tuple[list[Any], list[Any]]:
    """Split truth into (scored, ignored): scored has ``snr_db >= min_snr_db``.

    Truth without a known SNR (no ``snr_db`` attribute, or None/NaN) is scored. Pass the
    second list as ``evaluate(..., ignore=...)`` so detections of weaker signals do not
    count as false positives.
    """
    scored, ignored = [], []
    for t in truth:
        snr = _snr_of(t)
        if snr is None or snr >= min_snr_db:
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
    widened: bool = False  # narrower than a column or shorter than a row before widening
    parts: int = 1  # annotations joined into this piece (closer in time than one row, one band)
    kind: str = ""  # the generator's own type, where the caller gave one (eval_suite's per-type table)


def clip_to_frames(
    truth: Iterable[Any],
    frames: Iterable[Any],
    *,
    kinds: Sequence[str] | None = None,
    join: bool = True,
) -> list[FrameTruth]:
    """Cut each truth box into the pieces that fall inside each frame's time span.

    ``frames`` are :class:`rfstream.types.Frame` (or anything with ``t0_s``, ``t1_s``,
    ``dt_s``, ``f0_hz``, ``f1_hz``, ``df_hz``). Boxes are also clipped to the frame's
    band. A piece narrower than one column (``df_hz``) or shorter than one row
    (``dt_s``) is widened about its centre to one column / one row and then moved,
    if needed, to lie inside the frame, where every detector box lies. Then, with
    ``join``, pieces of one frame that the frame cannot tell apart become one
    (:func:`join_unresolved`). ``kinds``, aligned with ``truth``, is carried into
    each piece's ``kind``.
    """
    truth = list(truth)
    kind_of = [""] * len(truth) if kinds is None else [str(k) for k in kinds]
    if len(kind_of) != len(truth):
        raise ValueError(f"{len(kind_of)} kinds for {len(truth)} truth boxes")
    out: list[FrameTruth] = []
    for frame in frames:
        pieces: list[FrameTruth] = []
        for t, kind in zip(truth, kind_of, strict=True):
            t0, t1 = max(t.t_start_s, frame.t0_s), min(t.t_stop_s, frame.t1_s)
            f0, f1 = max(t.f_low_hz, frame.f0_hz), min(t.f_high_hz, frame.f1_hz)
            if t1 <= t0 and not (t.t_start_s == t.t_stop_s and frame.t0_s <= t0 < frame.t1_s):
                continue
            if f1 <= f0 and not (t.f_low_hz == t.f_high_hz and frame.f0_hz <= f0 < frame.f1_hz):
                continue
            widened = (t1 - t0) < frame.dt_s or (f1 - f0) < frame.df_hz
            t0, t1 = _at_least(t0, t1, frame.dt_s, frame.t0_s, frame.t1_s)
            f0, f1 = _at_least(f0, f1, frame.df_hz, frame.f0_hz, frame.f1_hz)
            snr = getattr(t, "snr_db", None)
            pieces.append(FrameTruth(t0, t1, f0, f1, t.label, snr, widened, 1, kind))
        out.extend(join_unresolved(pieces, frame.dt_s) if join else pieces)
    return out


def join_unresolved(pieces: Sequence[FrameTruth], dt_s: float) -> list[FrameTruth]:
    """Join the pieces of one frame that are one blob at the frame's time resolution.

    Two pieces are joined when they carry the same label, lie on one band (bandwidths within a
    factor 2, overlapping in frequency over at least half the narrower) and are apart in time
    by less than one row (``dt_s``), or overlap: a hopper's dwells back to back on one channel,
    TDMA bursts with guard times of tens of µs, replies closer than a row. No STFT row of the
    frame falls into such a gap, so no detector can draw the pieces apart; like a piece
    shorter than one row (widened to one), they are scored as what the frame shows. The joined
    piece is the union of the boxes, with the highest SNR of its parts (the strongest part is
    what makes it visible), ``parts`` the number joined and the first part's ``kind``. Repeated
    until nothing joins; pieces keep their order (a joined one takes its first part's place).
    """
    items = list(pieces)
    while len(items) > 1:
        lo = np.array([p.f_low_hz for p in items])
        hi = np.array([p.f_high_hz for p in items])
        t0 = np.array([p.t_start_s for p in items])
        t1 = np.array([p.t_stop_s for p in items])
        labels = np.array([p.label for p in items])
        bw = hi - lo
        overlap = np.minimum(hi[:, None], hi[None, :]) - np.maximum(lo[:, None], lo[None, :])
        narrow = np.minimum(bw[:, None], bw[None, :])
        wide = np.maximum(bw[:, None], bw[None, :])
        gap = np.maximum(t0[:, None], t0[None, :]) - np.minimum(t1[:, None], t1[None, :])
        linked = (
            (labels[:, None] == labels[None, :])
            & (overlap >= 0.5 * narrow)
            & (wide <= 2.0 * narrow)
            & (gap < dt_s)
        )
        np.fill_diagonal(linked, False)
        if not linked.any():
            break
        _, component = connected_components(csr_matrix(linked), directed=False)
        groups: dict[int, list[FrameTruth]] = {}
        for c, p in zip(component.tolist(), items, strict=True):
            groups.setdefault(c, []).append(p)
        items = [_joined(parts) for parts in groups.values()]
    return items


def _joined(parts: Sequence[FrameTruth]) -> FrameTruth:
    if len(parts) == 1:
        return parts[0]
    snrs = [p.snr_db for p in parts if p.snr_db is not None and not math.isnan(p.snr_db)]
    first = min(parts, key=lambda p: (p.t_start_s, p.f_low_hz))
    return FrameTruth(
        min(p.t_start_s for p in parts),
        max(p.t_stop_s for p in parts),
        min(p.f_low_hz for p in parts),
        max(p.f_high_hz for p in parts),
        parts[0].label,
        max(snrs) if snrs else None,
        any(p.widened for p in parts),
        sum(p.parts for p in parts),
        first.kind,
    )


def _at_least(lo: float, hi: float, width: float, lo_limit: float, hi_limit: float) -> tuple[float, float]:
    if hi - lo >= width:
        return lo, hi
    mid = 0.5 * (lo + hi)
    lo, hi = mid - 0.5 * width, mid + 0.5 * width
    if hi_limit - lo_limit >= width:  # keep the widened piece inside the frame
        shift = max(0.0, lo_limit - lo) - max(0.0, hi - hi_limit)
        lo, hi = lo + shift, hi + shift
    return lo, hi


def widening_note(pieces: Sequence[FrameTruth], frames: Sequence[Any]) -> str:
    """One line saying how truth was widened to the frames' resolution before scoring."""
    n = sum(1 for p in pieces if p.widened)
    joined = [p for p in pieces if p.parts > 1]
    if frames:
        df = sorted({float(f.df_hz) for f in frames})
        dt = sorted({float(f.dt_s) for f in frames})
        col = f"{_hz(df[0])}" if len(df) == 1 else f"{_hz(df[0])}–{_hz(df[-1])}"
        row = f"{dt[0] * 1e6:.1f} µs" if len(dt) == 1 else f"{dt[0] * 1e6:.1f}–{dt[-1] * 1e6:.1f} µs"
        res = f"1 column ({col}) × 1 row ({row})"
    else:
        res = "1 column × 1 row"
    text = (
        f"truth cut per frame and widened to the frame's resolution before scoring: at least {res}; "
        f"{n} of {len(pieces)} truth pieces widened"
    )
    if joined:
        text += (
            f"; {sum(p.parts for p in joined)} pieces less than one row apart on one band joined "
            f"into {len(joined)}"
        )
    return text


def _hz(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.3g} MHz"
    if value >= 1e3:
        return f"{value / 1e3:.3g} kHz"
    return f"{value:.3g} Hz"


def widening_stats(pieces: Sequence[FrameTruth]) -> dict[str, int]:
    joined = [p for p in pieces if p.parts > 1]
    return {
        "pieces": len(pieces),
        "widened": sum(1 for p in pieces if p.widened),
        "joined": sum(p.parts for p in joined),
        "joined_into": len(joined),
    }
