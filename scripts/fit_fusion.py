#!/usr/bin/env python3
"""Refit fusion's numbers on validation recordings: the energy calibration, the presence and score
maps, the agreement weight and the operating threshold; write them as a fusion file.

    python scripts/fit_fusion.py                      # writes rfstream/models/fusion.json
    python scripts/fit_fusion.py --seeds 500-509 --duration 1 --out /tmp/fusion.json

Run it again after the models change (``rfstream train``): the fusion numbers describe how far each
detector's scores can be believed, and a new model moves them.

Validation seeds of rfstream's synthesiser: **500–599** (default 500–531, at 10, 20, 5 and 2.4 MS/s
in turn, the training rates: an energy box's shape means something else at each rate). They are disjoint from
the evaluation seeds of ``scripts/eval_suite.py`` / README (1–99), the training seeds of
``rfstream train`` (1000–1999), its INT8 calibration frames (2000–2099) and the captures each
model's own score calibration is fitted on (3000–3099); the script refuses any seed outside 500–599.
``--rate`` takes a comma-separated list, cycled over the seeds.

Steps (every detector of the configuration, default: the shipped set, through the real pipeline):

1. Replay each recording; record each detector's boxes per chunk (the energy detector with
   ``calibration = "none"``, so its raw SNR scores are seen). Truth: the annotations cut per frame
   and widened to the frame's resolution (``rfstream.eval.clip_to_frames``).
2. **Energy calibration**: a logistic regression (``calibration.fit_logistic``) of "this box matches
   a truth box at IoU ≥ 0.5, any label" on the box's features
   (``rfstream.detect.energy.calibration_features``: SNR, size, shape and fill, recorded with each
   box by ``EnergyDetector.measure``).
3. **Fusion**: the recorded boxes, energy ones recalibrated, fused per chunk for each agreement
   weight α in a small grid; Platt maps for presence (target: matches truth, any label) and for the
   score (target: matches truth of its label); the α with the lowest log loss of the score wins.
4. **Operating threshold**: over the boxes the gate can publish (without ``merge.unknown =
   "publish"``, the labelled ones: ``rfstream.detect.fuse.publishes_unknown``), the score cut with
   the maximum F1 over the validation set, or with
   ``--target-precision P`` the lowest cut whose boxes are right at least P of the time (the most
   recall at a promised precision; max F1 where no cut reaches it); a labelled box being right when
   it matches truth of its label, an ``unknown`` one (no detector labelled it, scored by its
   presence) when it matches truth of any label. With today's models a precision of 0.8 costs much
   of the recall (validation: recall 0.21 at precision 0.80, against 0.34 at 0.65 for max F1),
   so max F1 is the shipped default.

Matching is one-to-one per chunk, best score first (``rfstream.eval``'s rule), IoU ≥ 0.5.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from eval_suite import Recorder, make_recording, run_recording, wrap  # noqa: E402

from rfstream.config import load_config  # noqa: E402
from rfstream.detect.calibration import (  # noqa: E402
    PLATT_FEATURES,
    expected_calibration_error,
    fit_logistic,
    fit_platt,
    max_f1_threshold,
    platt,
    precision_threshold,
)
from rfstream.detect.energy import ENERGY_FEATURES  # noqa: E402
from rfstream.detect.fuse import SHIPPED_FUSION, Fuser, FusionModel, publishes_unknown  # noqa: E402
from rfstream.detect.nms import iou_matrix  # noqa: E402
from rfstream.eval import clip_to_frames, select_truth  # noqa: E402
from rfstream.runner import build_detectors  # noqa: E402
from rfstream.sources.sigmf import read_annotations  # noqa: E402

VALIDATION_SEEDS = range(500, 600)
EVAL_SEEDS = range(1, 100)  # scripts/eval_suite.py, README
TRAIN_SEEDS = range(1000, 2000)  # rfstream/train/cli.py
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def match(dets: list[Any], truth: list[Any], label_aware: bool, iou: float = 0.5) -> np.ndarray:
    """1 for each detection that takes a truth box (best score first, one-to-one), else 0."""
    hit = np.zeros(len(dets))
    if not dets or not truth:
        return hit
    boxes_d = [(d.f_low_hz, d.t_start_s, d.f_high_hz, d.t_stop_s) for d in dets]
    boxes_t = [(t.f_low_hz, t.t_start_s, t.f_high_hz, t.t_stop_s) for t in truth]
    m = iou_matrix(boxes_d, boxes_t)
    if label_aware:
        same = np.array([[d.label == t.label for t in truth] for d in dets])
        m = np.where(same, m, 0.0)
    taken = np.zeros(len(truth), dtype=bool)
    for i in sorted(range(len(dets)), key=lambda k: (-dets[k].score, dets[k].t_start_s, dets[k].f_low_hz)):
        row = np.where(taken, 0.0, m[i])
        j = int(np.argmax(row))
        if row[j] >= iou and row[j] > 0:
            taken[j] = True
            hit[i] = 1.0
    return hit


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))) if p.size else 0.0


@dataclasses.dataclass
class Chunk:
    truth: list[Any]
    found: dict[str, list[Any]]  # detector name -> its boxes
    energy_features: dict[str, np.ndarray]  # energy detector name -> its boxes' calibration features


class EnergyRecorder(Recorder):
    """A Recorder of an energy detector (raw scores) that also keeps its boxes' calibration
    features (``EnergyDetector.measure``: the same boxes in the same order, from its cache)."""

    def reset(self) -> None:
        super().reset()
        self.features: dict[int, np.ndarray] = {}

    def detect(self, frame: Any) -> list[Any]:
        found = super().detect(frame)
        features = self.inner.measure(frame)[2]
        if len(features) != len(found):
            raise RuntimeError(f"{self.name}: its features do not match its boxes")
        self.features[frame.chunk.seq] = features
        return found


def collect(args: argparse.Namespace, cfg: Any, work: Path) -> tuple[list[Chunk], list[str]]:
    detectors = build_detectors(cfg)
    energy_names = [c.name for c in cfg.detectors if c.enabled and c.kind == "energy"]
    recorders = [EnergyRecorder(d) if d.name in energy_names else wrap(d) for d in detectors]
    chunks: list[Chunk] = []
    try:
        for i, seed in enumerate(args.seeds):
            t0 = time.monotonic()
            rate = args.rates[i % len(args.rates)]
            meta = make_recording("synth", work, seed, rate, args.duration, None)
            results = run_recording(cfg, meta, recorders)
            annotations, _ = select_truth(read_annotations(meta))
            for r in results:
                frame = r.frame
                truth = clip_to_frames(annotations, [frame])
                seq = frame.chunk.seq
                found = {rec.name: list(rec.found.get(seq, [])) for rec in recorders}
                features = {
                    rec.name: rec.features.get(seq, np.zeros((0, len(ENERGY_FEATURES))))
                    for rec in recorders
                    if isinstance(rec, EnergyRecorder)
                }
                chunks.append(Chunk(truth, found, features))
            print(f"seed {seed}: {len(results)} chunks in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    finally:
        for d in detectors:
            d.close()
    return chunks, energy_names


def fit(
    chunks: list[Chunk],
    energy_names: list[str],
    cfg: Any,
    half_db: float,
    target_precision: float | None = None,
) -> FusionModel:
    # --- 2. energy calibration --------------------------------------------------------------------
    feats, ys = [], []
    for c in chunks:
        for name in energy_names:
            dets = c.found[name]
            if not dets:
                continue
            feats.append(c.energy_features[name])
            ys.append(match(dets, c.truth, label_aware=False))
    energy = None
    report: dict[str, Any] = {}
    if feats:
        x, y = np.concatenate(feats), np.concatenate(ys)
        energy = fit_logistic(x, y, ENERGY_FEATURES)
        raw = np.clip(x[:, 0] * 10.0 / (x[:, 0] * 10.0 + half_db), 0, 1)
        report["energy"] = {
            "boxes": int(y.size),
            "true": int(y.sum()),
            "ece_raw": round(expected_calibration_error(raw, y), 4),
            "ece_calibrated": round(expected_calibration_error(energy(x), y), 4),
        }
        for c in chunks:  # the energy boxes as the calibrated detector will publish them
            for name in energy_names:
                dets = c.found[name]
                if dets:
                    scores = energy(c.energy_features[name])
                    c.found[name] = [d.replace(score=float(p)) for d, p in zip(dets, scores, strict=True)]

    # --- 3. fusion maps and α ---------------------------------------------------------------------
    n_truth = sum(len(c.truth) for c in chunks)
    best: tuple[float, Any] | None = None
    for alpha in ALPHAS:
        fuser = Fuser(
            FusionModel(agreement_weight=alpha),
            cluster_iou=cfg.merge.cluster_iou,
            correlated=cfg.merge.correlated,
            threshold=0.0,
            group_fragments=cfg.merge.group_fragments,
        )
        pres, share, y_any, y_label, labelled = [], [], [], [], []
        for c in chunks:
            fused = fuser.fuse([d for dets in c.found.values() for d in dets])
            if not fused:
                continue
            p = np.array([d.presence for d in fused])
            pres.append(p)
            share.append(np.array([d.score for d in fused]) / np.maximum(p, 1e-9))
            y_any.append(match(fused, c.truth, label_aware=False))
            y_label.append(match(fused, c.truth, label_aware=True))
            labelled.append(np.array([d.label != "unknown" for d in fused]))
        if not pres:
            continue
        p, s, ya, yl, lab = map(np.concatenate, (pres, share, y_any, y_label, labelled))
        presence_map = fit_platt(p, ya)
        p_cal = platt(presence_map, p)
        score_map = fit_platt(p_cal[lab] * s[lab], yl[lab])
        # a box nobody labelled is scored by its presence and is right when a signal is there
        final = np.where(lab, platt(score_map, p_cal * s), p_cal)
        yl = np.where(lab, yl, ya)
        loss = log_loss(final, yl)
        print(f"alpha {alpha}: {p.size} fused boxes, score log loss {loss:.4f}", file=sys.stderr)
        if best is None or loss < best[0]:
            best = (loss, (alpha, presence_map, score_map, p * s, final, yl, ya, p_cal, p, lab))
    if best is None:
        return FusionModel(energy=energy, fitted_on={"note": "no boxes to fit on"})
    alpha, presence_map, score_map, raw_score, final, yl, ya, p_cal, p_raw, lab = best[1]
    # --- 4. operating threshold -------------------------------------------------------------------
    # over the boxes the gate can publish: unless unknown ones are published (merge.unknown),
    # the labelled ones only
    publish_all = publishes_unknown(cfg.merge, [c.kind for c in cfg.detectors if c.enabled])
    gated = np.ones_like(lab) if publish_all else lab
    threshold, _ = max_f1_threshold(final[gated], yl[gated], n_truth)
    rule = "max F1"
    if target_precision is not None:
        cut = precision_threshold(final[gated], yl[gated], target_precision)
        if cut is not None:
            threshold, rule = cut, f"precision >= {target_precision:g}"
        else:
            print(f"no threshold reaches precision {target_precision:g}: max F1 instead", file=sys.stderr)
    kept = (final >= threshold) & gated
    report["fusion"] = {
        "fused_boxes": int(final.size),
        "truth_pieces": n_truth,
        "agreement_weight": alpha,
        "ece_score_raw": round(expected_calibration_error(raw_score, yl), 4),
        "ece_score_calibrated": round(expected_calibration_error(final, yl), 4),
        "ece_presence_raw": round(expected_calibration_error(p_raw, ya), 4),
        "ece_presence_calibrated": round(expected_calibration_error(p_cal, ya), 4),
        "threshold_rule": rule,
        "threshold_over": "every box" if publish_all else "labelled boxes",
        "threshold_f1": round(float(2 * yl[kept].sum() / (kept.sum() + n_truth)) if n_truth else 0.0, 4),
        "precision_at_threshold": round(float(yl[kept].mean()) if kept.any() else 0.0, 4),
        "recall_at_threshold": round(float(yl[kept].sum()) / max(n_truth, 1), 4),
        "precision_at_threshold_any_label": round(float(ya[kept].mean()) if kept.any() else 0.0, 4),
    }
    return FusionModel(
        presence=presence_map,
        score=score_map,
        agreement_weight=alpha,
        threshold=round(float(threshold), 6),
        energy=energy,
        fitted_on=report,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--seeds",
        default="500-531",
        help="validation seeds of the synthesiser, within 500-599 (default 500-531)",
    )
    p.add_argument(
        "--rate",
        default="10e6,20e6,5e6,2.4e6",
        help="sample rate(s), S/s, comma-separated, cycled over the seeds (default 10e6,20e6,5e6,2.4e6: "
        "the training rates; the calibration must hold at every rate a user runs)",
    )
    p.add_argument("--duration", type=float, default=1.0, help="seconds per recording (default 1)")
    p.add_argument("--config", default=None, help="rfstream TOML config (default: the built-in defaults)")
    p.add_argument("--workdir", default=None, help="where the recordings go (default: a temporary directory)")
    p.add_argument(
        "--out", default=str(SHIPPED_FUSION), help="fusion file to write (default: the shipped one)"
    )
    p.add_argument(
        "--target-precision",
        type=float,
        default=0.0,
        help="operating threshold: the lowest score whose boxes are right this often on the validation "
        "set (label-aware); 0 (default) = the maximum-F1 threshold",
    )
    args = p.parse_args(argv)
    if not 0.0 <= args.target_precision < 1.0:
        p.error(f"--target-precision: expected a fraction in [0, 1), got {args.target_precision:g}")
    try:
        args.seeds = _seeds(args.seeds)
    except ValueError:
        p.error(f"--seeds: expected e.g. 500-515 or 500,503, got {args.seeds!r}")
    try:
        args.rates = [float(r) for r in args.rate.split(",") if r.strip()]
    except ValueError:
        p.error(f"--rate: expected sample rates in S/s, e.g. 10e6 or 10e6,2.4e6, got {args.rate!r}")
    if not args.rates or not all(1e3 <= r <= 1e9 for r in args.rates):
        p.error(f"--rate: expected sample rates between 1e3 and 1e9 S/s, got {args.rate!r}")
    if args.duration <= 0 or args.duration > 60:
        p.error(f"--duration: expected seconds in (0, 60], got {args.duration:g}")
    clash = [s for s in args.seeds if s in EVAL_SEEDS or s in TRAIN_SEEDS or s not in VALIDATION_SEEDS]
    if clash:
        p.error(f"--seeds: {clash[:5]} are not validation seeds (500-599; 1-99 evaluate, 1000-1999 train)")
    cfg = load_config(args.config, overrides={"publish.endpoint": "", "publish.annotations": ""})
    # the energy detector's raw scores are what its calibration is fitted on
    dets = []
    for c in cfg.detectors:
        options = dict(c.options)
        if c.kind == "energy":
            options["calibration"] = "none"
        elif c.kind == "two_stage":
            options["energy"] = {**dict(options.get("energy", {})), "calibration": "none"}
        dets.append(dataclasses.replace(c, options=options))
    cfg = dataclasses.replace(cfg, detectors=tuple(dets))
    half = [c.options.get("score_half_db", 10.0) for c in cfg.detectors if c.kind == "energy"]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rfstream-fit-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    chunks, energy_names = collect(args, cfg, work)
    model = fit(chunks, energy_names, cfg, float(half[0]) if half else 10.0, args.target_precision or None)
    model = dataclasses.replace(
        model,
        fitted_on={
            **model.fitted_on,
            "seeds": args.seeds,
            "rates_hz": args.rates,
            "duration_s": args.duration,
            "detectors": [c.name for c in cfg.detectors if c.enabled],
            "features_energy": list(ENERGY_FEATURES),
            "platt_features": list(PLATT_FEATURES),
        },
    )
    # a temp file renamed over the old one: a running daemon never reads a half-written file
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(model.to_json(), encoding="utf-8")
    os.replace(tmp, out)
    print(model.to_json())
    print(f"wrote {args.out} ({time.monotonic() - started:.0f} s; recordings in {work})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
