"""Fusion: one published box per physical signal, whichever detectors found it.

The merge stage of the pipeline (``merge.mode = "fuse"``, the default; ``"class_nms"``
keeps the older class-aware NMS of :mod:`rfstream.detect.nms`). For one chunk:

1. **Cluster, class-agnostically.** Greedy NMS over every detector's boxes, ignoring labels,
   best score first (ties by box, label, detector, never by input position, so the result does
   not depend on the order detectors answered): every box whose physical IoU with a kept box
   exceeds ``merge.cluster_iou`` joins that box's cluster. A frame detector's "psk" box and the
   crop classifier's "fm" box on one burst become one cluster, not two signals.
2. **Presence** (the probability that a real signal is there, whatever its label): per detector
   the best score it gave inside the cluster; detectors that share their evidence (the energy
   detector and the two-stage classifier see the same energy proposals: ``merge.correlated``)
   count once, as their best; independent groups combine by a discounted noisy-OR,
   ``1 − (1 − p₁) · Π_{k≥2} (1 − p_k)^α`` (p₁ the strongest group, ``α`` the fitted
   ``agreement_weight``): agreeing independent detectors raise it, never past what a fully
   independent pair would. A Platt map fitted on validation data (``presence`` in the fusion
   file) makes it a calibrated probability.
3. **Label** by score-weighted vote: each detector votes for each label it gave in the cluster
   with its best score for that label (where a member's label was measured on the samples,
   ``label_source = "iq"``, a box named from its modulation by the two-stage detector's IQ
   classifiers, only such labels vote: the image models cannot tell a tone from AM or FM in one
   column, nor PSK from FSK in a crop a few pixels across); ``share(L) = votes(L) / Σ votes``. The box takes the
   label with most votes (``unknown`` only when no detector labelled it); ``score`` =
   presence × share(label), through a second fitted Platt map (``score``): the probability
   that the box is a real signal *of that label* (a box no detector labelled is ``unknown``,
   scored by its presence: the probability that a signal is there). The runner-up labels and their
   probabilities go into ``alternatives``; every detector of the cluster into ``found_by``.
4. **Box** by score-weighted voting of the cluster's boxes (each edge the weighted mean of the
   members' edges): the detectors' errors partly cancel, and the box never leaves the cluster.
5. **Fragments** of one emission become one box, and trains of one emitter share a
   ``group_id`` (:mod:`rfstream.detect.fragments`, ``merge.group_fragments``).
6. **No duplicates**: a last class-agnostic pass folds any output box overlapping a better one
   with IoU above ``merge.cluster_iou`` into it (averaging and joining fragments can move a box
   onto its neighbour), so no two published boxes of one chunk overlap by more.
7. **Publish gate**: boxes scored below the operating threshold (``merge.threshold``, or the
   fusion file's, chosen on validation data for maximum F1) are dropped, or kept with
   ``low_confidence = True`` when ``merge.keep_low_confidence`` asks for them.
8. **Unconfirmed blobs**: a box no detector labelled (``unknown``: the energy detector's alone,
   no classifier confirming it) is treated as low-confidence whatever its score, where the
   chunk's detectors include one that could have labelled it (``merge.unknown``,
   :func:`publishes_unknown`). The pipeline applies it after the tracker: a box that carries a
   labelled track on takes the track's label (``tracker.label_by_track``) and is published;
   tracks and their events are as without the rule.

The fitted numbers (Platt maps, ``agreement_weight``, threshold, and the energy detector's
calibration) live in one small JSON file, ``rfstream/models/fusion.json``, refitted by
``scripts/fit_fusion.py``; ``merge.fusion_file`` names another.

Properties (tested with hypothesis): the output does not depend on the input's order, and no two
output boxes overlap with IoU above ``cluster_iou`` (so none above 0.5: no duplicates).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from rfstream.detect.calibration import (
    IDENTITY,
    CalibrationError,
    Logistic,
    is_probability,
    json_record,
    platt,
)
from rfstream.detect.nms import WILDCARD_LABEL, _nms
from rfstream.errors import ConfigError
from rfstream.types import MAX_ALTERNATIVES, Detection

log = structlog.get_logger(__name__)

__all__ = [
    "SHIPPED_FUSION",
    "ClassNms",
    "Evidence",
    "Fuser",
    "FusionModel",
    "cluster_evidence",
    "gate",
    "gate_unknown",
    "load_fusion",
    "make_merge",
    "merge_stage",
    "noisy_or",
    "publishes_unknown",
]

SHIPPED_FUSION = Path(__file__).resolve().parent.parent / "models" / "fusion.json"


@dataclass(frozen=True)
class FusionModel:
    """The fitted numbers of fusion (one JSON file; see the module docstring)."""

    presence: Logistic = IDENTITY  # Platt map of the raw noisy-OR presence
    score: Logistic = IDENTITY  # Platt map of presence × label share
    agreement_weight: float = 0.5  # α: the exponent of every independent group but the strongest
    threshold: float = 0.5  # publish gate on the fused score
    energy: Logistic | None = None  # the energy detector's calibration (rfstream.detect.energy)
    fitted_on: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        d: dict[str, Any] = {
            "form": "rfstream.fusion",
            "version": 1,
            "presence": self.presence.to_dict(),
            "score": self.score.to_dict(),
            "agreement_weight": self.agreement_weight,
            "threshold": self.threshold,
            "energy": None if self.energy is None else self.energy.to_dict(),
            "fitted_on": dict(self.fitted_on),
        }
        return json.dumps(d, indent=1, sort_keys=True, default=float) + "\n"

    @classmethod
    def from_json(cls, text: str) -> FusionModel:
        d = json_record(text, "rfstream.fusion")
        alpha, thr = d.get("agreement_weight", 0.5), d.get("threshold", 0.5)
        for name, v in (("agreement_weight", alpha), ("threshold", thr)):
            if not is_probability(v):
                raise CalibrationError(f"'{name}' must be a number in [0, 1]")
        energy = d.get("energy")
        fitted = d.get("fitted_on", {})
        return cls(
            presence=Logistic.from_dict(d.get("presence", IDENTITY.to_dict())),
            score=Logistic.from_dict(d.get("score", IDENTITY.to_dict())),
            agreement_weight=float(alpha),
            threshold=float(thr),
            energy=None if energy is None else Logistic.from_dict(energy),
            fitted_on=fitted if isinstance(fitted, dict) else {},
        )


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int) -> FusionModel:
    del mtime_ns  # part of the key only: an edited file is read again
    return FusionModel.from_json(Path(path).read_text(encoding="utf-8"))


def load_fusion(path: str | Path = "") -> FusionModel:
    """The fusion file at ``path`` ("" = the shipped one; a missing shipped file = defaults).

    A named file that cannot be read or parsed raises :class:`rfstream.errors.ConfigError`
    naming ``merge.fusion_file``.
    """

    p = Path(path) if path else SHIPPED_FUSION
    try:
        stat = p.stat()
    except OSError as exc:
        if not path:
            return FusionModel()
        raise ConfigError(f"config key 'merge.fusion_file': cannot read {p}: {exc.strerror}") from exc
    try:
        return _load_cached(str(p), stat.st_mtime_ns)
    except (OSError, UnicodeDecodeError, CalibrationError) as exc:
        raise ConfigError(f"config key 'merge.fusion_file': {p}: {exc}") from exc


# --- the evidence of one cluster ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Evidence:
    """What a cluster's members say: raw presence, label shares, the voted box."""

    presence_raw: float
    shares: tuple[tuple[str, float], ...]  # label -> share of the votes, best first; () = unlabelled
    box: tuple[float, float, float, float]  # f_low, t_start, f_high, t_stop
    pixels: tuple[float, float, float, float]
    best: Detection  # the best-scoring member
    found_by: tuple[str, ...]
    groups: int  # independent evidence groups that found it


def _group_of(correlated: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for group in correlated:
        names = [n.strip() for n in group.split("+") if n.strip()]
        for n in names:
            out[n] = "+".join(sorted(names))
    return out


def noisy_or(probs: Iterable[float], alpha: float) -> float:
    """``1 − (1 − p₁) Π_{k≥2} (1 − p_k)^α`` over the probabilities, p₁ the largest."""
    ps = sorted((min(max(float(p), 0.0), 1.0) for p in probs), reverse=True)
    if not ps:
        return 0.0
    miss = 1.0 - ps[0]
    for p in ps[1:]:
        miss *= (1.0 - p) ** alpha
    return 1.0 - miss


def cluster_evidence(members: Sequence[Detection], group_of: Mapping[str, str], alpha: float) -> Evidence:
    """Fuse one cluster's detections (see the module docstring, steps 2–4)."""
    # a canonical order, so that the weighted sums (floating point) do not depend on the input's
    members = sorted(
        members,
        key=lambda d: (-d.score, d.f_low_hz, d.t_start_s, d.f_high_hz, d.t_stop_s, d.label, d.detector),
    )
    best_by_detector: dict[str, float] = {}
    votes: dict[tuple[str, str], float] = {}
    # a label measured on the samples (a narrow box's modulation) outvotes labels read from the
    # image, which cannot resolve a tone from AM or FM in one column
    measured = any(d.label_source == "iq" for d in members)
    for d in members:
        best_by_detector[d.detector] = max(best_by_detector.get(d.detector, 0.0), d.score)
        if d.label != WILDCARD_LABEL and (d.label_source == "iq" or not measured):
            key = (d.detector, d.label)
            votes[key] = max(votes.get(key, 0.0), d.score)
    by_group: dict[str, float] = {}
    for name, p in best_by_detector.items():
        g = group_of.get(name, name)
        by_group[g] = max(by_group.get(g, 0.0), p)
    presence = noisy_or(by_group.values(), alpha)
    per_label: dict[str, float] = {}
    for (_, label), s in votes.items():
        per_label[label] = per_label.get(label, 0.0) + s
    total = sum(per_label.values())
    shares: tuple[tuple[str, float], ...] = ()
    if total > 0:
        shares = tuple(sorted(((k, v / total) for k, v in per_label.items()), key=lambda kv: (-kv[1], kv[0])))
    w = np.array([max(d.score, 1e-6) for d in members])
    phys = np.array([(d.f_low_hz, d.t_start_s, d.f_high_hz, d.t_stop_s) for d in members])
    pix = np.array([(d.x0, d.y0, d.x1, d.y1) for d in members])
    box = tuple(float(v) for v in (w @ phys) / w.sum())
    pixels = tuple(float(v) for v in (w @ pix) / w.sum())
    best = members[0]  # the canonical order puts the best first
    found = sorted({n for d in members for n in d.found_by})
    return Evidence(presence, shares, box, pixels, best, tuple(found), len(by_group))  # type: ignore[arg-type]


def _boxes(dets: Sequence[Detection]) -> np.ndarray:
    return np.array([(d.f_low_hz, d.t_start_s, d.f_high_hz, d.t_stop_s) for d in dets], dtype=np.float64)


def _clusters(dets: Sequence[Detection], iou: float) -> list[list[int]]:
    """Class-agnostic NMS clusters, best first; members by input index."""
    boxes = _boxes(dets)
    scores = np.array([d.score for d in dets], dtype=np.float64)
    labels = np.array([d.label for d in dets])
    detectors = np.array([d.detector for d in dets])
    kept, absorbed_by = _nms(boxes, scores, None, iou, (labels, detectors), None)
    members: dict[int, list[int]] = {int(i): [] for i in kept}
    for j, i in enumerate(absorbed_by.tolist()):
        members[i].append(j)
    return [members[int(i)] for i in kept]


# --- the stage ----------------------------------------------------------------------------------------
class Fuser:
    """The fusion merge stage: built once from the merge settings, then ``process(dets)`` per chunk."""

    def __init__(
        self,
        model: FusionModel | None = None,
        *,
        cluster_iou: float = 0.3,
        correlated: Sequence[str] = ("energy+classifier",),
        threshold: float | None = None,
        keep_low_confidence: bool = False,
        group_fragments: bool = True,
    ) -> None:
        self.model = model or FusionModel()
        self.cluster_iou = float(cluster_iou)
        self.group_of = _group_of(correlated)
        self.threshold = self.model.threshold if threshold is None else float(threshold)
        self.keep_low_confidence = keep_low_confidence
        self.group_fragments = group_fragments

    def __call__(self, dets: Sequence[Detection]) -> list[Detection]:
        return self.process(dets)

    def fuse(self, dets: Sequence[Detection]) -> list[Detection]:
        """Steps 1–6: fused boxes, every one (no gate), best first."""
        if not dets:
            return []
        m = self.model
        out: list[Detection] = []
        for cluster in _clusters(dets, self.cluster_iou):
            members = [dets[j] for j in cluster]
            ev = cluster_evidence(members, self.group_of, m.agreement_weight)
            out.append(self._detection(ev.best, ev))
        if self.group_fragments and len(out) > 1:
            from rfstream.detect.fragments import group_fragments

            out = group_fragments(out)
        return _absorb_overlaps(out, self.cluster_iou)

    def _detection(self, best: Detection, ev: Evidence) -> Detection:
        m = self.model
        presence = float(platt(m.presence, ev.presence_raw))
        if ev.shares:
            label = ev.shares[0][0]
            # a label's probability never exceeds the probability that a signal is there at all
            probs = [
                (lbl, min(presence, float(platt(m.score, presence * share)))) for lbl, share in ev.shares
            ]
        else:
            # no detector labelled it: the score is the probability that a signal is there
            label, probs = WILDCARD_LABEL, [(WILDCARD_LABEL, presence)]
        f_low, t_start, f_high, t_stop = ev.box
        x0, y0, x1, y1 = ev.pixels
        return best.replace(
            x0=x0,
            y0=y0,
            x1=x1,
            y1=y1,
            f_low_hz=f_low,
            t_start_s=t_start,
            f_high_hz=f_high,
            t_stop_s=t_stop,
            score=probs[0][1],
            label=label,
            found_by=ev.found_by,
            presence=presence,
            alternatives=tuple((lbl, round(p, 4)) for lbl, p in probs[1 : 1 + MAX_ALTERNATIVES]),
        )

    def process(self, dets: Sequence[Detection]) -> list[Detection]:
        """Fuse, then gate at the operating threshold (see the module docstring)."""
        return gate(self.fuse(dets), self.threshold, self.keep_low_confidence)


def publishes_unknown(merge_cfg: Any, kinds: Iterable[str]) -> bool:
    """Whether boxes no detector labelled are published, given the ``[merge]`` settings and the
    kinds of the detectors that ran: ``merge.unknown = "publish"``, class NMS, or (``"auto"``)
    when none of them can label a box (energy detectors only, as when overload leaves only the
    energy detector running)."""
    if merge_cfg.mode != "fuse" or merge_cfg.unknown == "publish":
        return True
    if merge_cfg.unknown == "low_confidence":
        return False
    return all(kind == "energy" for kind in kinds)


def gate_unknown(dets: Sequence[Detection], keep_low_confidence: bool) -> list[Detection]:
    """Boxes no detector labelled (``unknown``) dropped, or marked ``low_confidence``; others as
    they are (step 8 of the module docstring)."""
    return _hold_back(dets, lambda d: d.label == WILDCARD_LABEL, keep_low_confidence)


def gate(dets: Sequence[Detection], threshold: float, keep_low_confidence: bool) -> list[Detection]:
    """Boxes scored at least ``threshold``; the rest dropped, or marked ``low_confidence``."""
    return _hold_back(dets, lambda d: not d.score >= threshold, keep_low_confidence)  # NaN held back


def _hold_back(
    dets: Sequence[Detection], held: Callable[[Detection], bool], keep_low_confidence: bool
) -> list[Detection]:
    """``dets`` without those ``held`` back, or with them marked ``low_confidence`` (kept, in order)."""
    if keep_low_confidence:
        return [d.replace(low_confidence=True) if held(d) else d for d in dets]
    return [d for d in dets if not held(d)]


def _absorb_overlaps(dets: list[Detection], iou: float) -> list[Detection]:
    """Fold every box overlapping a better one (IoU > ``iou``) into it; best first."""
    if len(dets) < 2:
        return dets
    clusters = _clusters(dets, iou)
    out = []
    for cluster in clusters:
        head = dets[cluster[0]]
        if len(cluster) > 1:
            found = sorted({n for j in cluster for n in dets[j].found_by})
            head = head.replace(found_by=tuple(found))
        out.append(head)
    return out


class ClassNms:
    """``merge.mode = "class_nms"``: the older class-aware NMS (:func:`nms.merge_detections`), gated."""

    def __init__(self, iou_threshold: float, class_aware: bool, threshold: float, keep_low: bool) -> None:
        self.iou_threshold, self.class_aware = iou_threshold, class_aware
        self.threshold, self.keep_low = threshold, keep_low

    def __call__(self, dets: Sequence[Detection]) -> list[Detection]:
        return self.process(dets)

    def process(self, dets: Sequence[Detection]) -> list[Detection]:
        from rfstream.detect.nms import merge_detections

        merged = merge_detections(dets, self.iou_threshold, self.class_aware)
        return gate(merged, self.threshold, self.keep_low)


def make_merge(merge_cfg: Any) -> Fuser | ClassNms:
    """The merge stage for ``[merge]`` settings (a :class:`rfstream.config.MergeConfig`)."""
    threshold = None if merge_cfg.threshold < 0 else float(merge_cfg.threshold)
    if merge_cfg.mode == "class_nms":
        return ClassNms(
            merge_cfg.iou_threshold,
            merge_cfg.class_aware,
            0.0 if threshold is None else threshold,
            merge_cfg.keep_low_confidence,
        )
    return Fuser(
        load_fusion(merge_cfg.fusion_file),
        cluster_iou=merge_cfg.cluster_iou,
        correlated=merge_cfg.correlated,
        threshold=threshold,
        keep_low_confidence=merge_cfg.keep_low_confidence,
        group_fragments=merge_cfg.group_fragments,
    )


def merge_stage(merge_cfg: Any) -> Fuser | ClassNms:
    """:func:`make_merge`, built once per distinct (frozen, hashable) ``[merge]`` settings and
    version of the fusion file.

    The pipeline calls this per chunk with its current settings, so a SIGHUP reload that changes
    ``[merge]``, or a refitted fusion file (``scripts/fit_fusion.py``), takes effect at the next chunk
    without the pipeline holding the stage itself. One ``stat`` per chunk.
    """
    path = Path(merge_cfg.fusion_file) if merge_cfg.fusion_file else SHIPPED_FUSION
    try:
        version = path.stat().st_mtime_ns
    except OSError:
        version = -1
    try:
        stage = _merge_stage(merge_cfg, version)
    except ConfigError as exc:
        # A fusion file that went bad while running (deleted, half-written, edited by hand): the
        # stream goes on with the last stage that was good for these settings, and says so once.
        good = _last_good.get(merge_cfg)
        if good is None:
            raise
        if _warned.get(merge_cfg) != version:
            _warned[merge_cfg] = version
            log.error("fusion file unusable; keeping the one loaded before", error=str(exc))
        return good
    _last_good[merge_cfg] = stage
    return stage


_last_good: dict[Any, Fuser | ClassNms] = {}
_warned: dict[Any, int] = {}


@functools.lru_cache(maxsize=4)
def _merge_stage(merge_cfg: Any, version: int) -> Fuser | ClassNms:
    del version  # part of the key only
    return make_merge(merge_cfg)
