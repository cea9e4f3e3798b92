"""Fit a learned model's score calibration on validation captures and store it in the model.

What a published score means is settled here, at training time (see
:mod:`rfstream.detect.calibration`): after a model is trained and exported, the
*detector the daemon runs* (``OnnxFrameDetector`` for a frame detector,
``TwoStageDetector`` — energy proposals + the crop classifier — for a crop
classifier) is run on held-out **validation** captures, and its boxes are matched
to the truth exactly as the evaluation matches them:

- validation captures come from the synthesiser at seeds 3000–3099
  (:data:`VALIDATION_SEEDS`), disjoint from the training seeds (1000–1999), the
  INT8 activation-range frames (2000–2099) and the evaluation seeds
  (``scripts/eval_suite.py``: 1–99);
- each capture is replayed in 200 ms chunks through the daemon's spectrogram; the
  truth is cut per frame and widened to the frame's resolution (one column, one
  row; pieces of one band less than a row apart joined: :func:`rfstream.eval.clip_to_frames`);
- a box is *correct* when the label-aware, one-to-one matching of
  :mod:`rfstream.eval` (boxes in descending score, IoU ≥ 0.5, equal label) gives
  it a truth box — so a duplicate is wrong, as it is for a subscriber;
- the detector runs without calibration and with its threshold lowered to
  :data:`FLOOR`, so the fit sees the raw scores of nearly every box it can make.

The fit: Platt scaling (``σ(a·logit(raw) + b)``) per label that has at least
:data:`MIN_BOXES` boxes, with at least :data:`MIN_EACH` correct and wrong ones;
the other labels share one fit on all boxes (``default``). The operating threshold
is the calibrated score that maximises F1 against all the truth
(:func:`rfstream.detect.calibration.max_f1_threshold`). ``fitted_on`` records the
seeds, counts, the ECE of the raw scores and of the calibrated ones (in-sample,
and held out: a two-fold fit by capture, each half scored by the fit on the other),
and precision/recall/F1 at the threshold.

The record goes into the ONNX file as ``rfstream.calibration`` (the rest of the
file is unchanged). Calibrate an existing model (the shipped ones, or after
re-quantising)::

    python -m rfstream.train.calibrate rfstream/models/frame_detector.onnx --work runs/val
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rfstream.config import SpectrogramConfig
from rfstream.detect.calibration import (
    Calibration,
    expected_calibration_error,
    fit_platt,
    max_f1_threshold,
)
from rfstream.errors import FatalError, InputError, ModelError

__all__ = [
    "FLOOR",
    "MIN_BOXES",
    "VALIDATION_SEEDS",
    "Scored",
    "calibrate_model",
    "collect",
    "fit_calibration",
    "validation_recordings",
    "write_calibration",
]

VALIDATION_SEEDS = range(3000, 3100)
FLOOR = 0.02  # raw-score threshold while collecting: below it a box is never worth publishing
MIN_BOXES = 40  # boxes of one label for a fit of its own
MIN_EACH = 5  # and at least this many correct and wrong ones
MATCH_IOU = 0.5
DEFAULT_RATES = (10e6, 20e6, 5e6, 2.4e6)


@dataclass(frozen=True)
class Scored:
    """A detector's boxes on validation captures: label, raw score, correct?, capture index."""

    labels: np.ndarray  # object array of str
    raw: np.ndarray  # float64
    correct: np.ndarray  # bool
    capture: np.ndarray  # int: which capture each box came from
    n_truth: int  # truth pieces (all labels) over the captures
    truth_by_label: dict[str, int]

    def subset(self, mask: np.ndarray, n_truth: int) -> Scored:
        return Scored(self.labels[mask], self.raw[mask], self.correct[mask], self.capture[mask], n_truth, {})


def validation_recordings(
    work: str | Path,
    n: int = 12,
    *,
    rates: Sequence[float] = DEFAULT_RATES,
    duration_s: float = 1.0,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
) -> list[Path]:
    """``n`` synthetic validation captures in ``work`` (seeds 3000+, rates cycled); reused when present."""
    from rfstream.sources.synth import synthesize

    if n < 1 or n > len(VALIDATION_SEEDS):
        raise InputError(f"validation captures: need 1..{len(VALIDATION_SEEDS)}, got {n}")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    out = []
    items = range(n)
    for i in progress(items) if progress else items:
        seed, rate = VALIDATION_SEEDS[i], float(rates[i % len(rates)])
        base = work / f"val_{seed}_{rate:.0f}_{duration_s:g}s"
        meta = base.with_name(base.name + ".sigmf-meta")
        if not (meta.exists() and base.with_name(base.name + ".sigmf-data").exists()):
            meta = Path(synthesize(base, sample_rate_hz=rate, duration_s=duration_s, seed=seed))
        out.append(meta)
    return out


def _frames(path: Path, cfg: SpectrogramConfig) -> list[Any]:
    from rfstream.dsp.spectrogram import Spectrogrammer
    from rfstream.sources.sigmf import SigMFSource

    spectrogrammer = Spectrogrammer(cfg)
    source = SigMFSource(path, chunk_ms=200.0)
    try:
        return [spectrogrammer.process(chunk) for chunk in source]
    finally:
        source.close()


def collect(
    detector: Any, recordings: Sequence[str | Path], *, spectrogram: SpectrogramConfig | None = None
) -> Scored:
    """Run ``detector`` over every frame of the recordings; each box's label, score and correctness."""
    from rfstream.eval import _Matching, clip_to_frames, select_truth
    from rfstream.sources.sigmf import read_annotations

    cfg = spectrogram or SpectrogramConfig(backend="numpy")
    labels: list[Any] = []
    raw: list[float] = []
    correct: list[bool] = []
    capture: list[int] = []
    truth_by_label: dict[str, int] = {}
    n_truth = 0
    warmed = False
    for k, path in enumerate(recordings):
        frames = _frames(Path(path), cfg)
        if not frames:
            continue
        if not warmed:
            detector.warmup(tuple(frames[0].host_image().shape))
            warmed = True
        dets = [d for frame in frames for d in detector.detect(frame)]
        truth = clip_to_frames(select_truth(read_annotations(path))[0], frames)
        n_truth += len(truth)
        for t in truth:
            truth_by_label[t.label] = truth_by_label.get(t.label, 0) + 1
        m = _Matching(truth, dets)
        r = m.match(MATCH_IOU, True)
        labels.extend(m.det_labels.tolist())
        raw.extend(m.scores.tolist())
        correct.extend((r.matched >= 0).tolist())
        capture.extend([k] * len(m.dets))
    return Scored(
        np.array(labels, dtype=object),
        np.array(raw, dtype=np.float64),
        np.array(correct, dtype=bool),
        np.array(capture, dtype=np.int64),
        n_truth,
        dict(sorted(truth_by_label.items())),
    )


def _fit(s: Scored, min_boxes: int) -> Calibration:
    if len(s.raw) == 0:
        return Calibration()
    default = fit_platt(s.raw, s.correct)
    per_label = {}
    for label in sorted(set(s.labels.tolist())):
        m = s.labels == label
        ok = int(s.correct[m].sum())
        if m.sum() >= min_boxes and ok >= MIN_EACH and int(m.sum()) - ok >= MIN_EACH:
            per_label[label] = fit_platt(s.raw[m], s.correct[m])
    return Calibration(per_label=per_label, default=default)


def fit_calibration(
    s: Scored, *, min_boxes: int = MIN_BOXES, meta: dict[str, Any] | None = None
) -> Calibration:
    """Per-label Platt scaling, shared fallback, max-F1 threshold, and what it was fitted on."""
    if len(s.raw) == 0 or s.n_truth == 0 or not s.correct.any():
        raise ModelError(
            f"calibration: nothing to fit ({len(s.raw)} boxes, {int(s.correct.sum())} correct, "
            f"{s.n_truth} truth boxes)"
        )
    cal = _fit(s, min_boxes)
    calibrated = cal.scores(s.labels, s.raw)
    threshold, f1 = max_f1_threshold(calibrated, s.correct, s.n_truth)
    above = calibrated >= threshold
    tp = int((above & s.correct).sum())
    # Held out: two halves by capture, each scored by the fit on the other.
    held = np.full(len(s.raw), np.nan)
    halves = s.capture % 2
    for h in (0, 1):
        train, test = halves != h, halves == h
        if train.any() and test.any() and s.correct[train].any():
            held[test] = _fit(s.subset(train, 0), min_boxes).scores(s.labels[test], s.raw[test])
    ok = np.isfinite(held)
    per_label = {
        label: {
            "boxes": int((s.labels == label).sum()),
            "correct": int(s.correct[s.labels == label].sum()),
            "truth": s.truth_by_label.get(label, 0),
            "own_fit": label in cal.per_label,
        }
        for label in sorted(set(s.labels.tolist()) | set(s.truth_by_label))
    }
    fitted_on = {
        **(meta or {}),
        "boxes": len(s.raw),
        "correct": int(s.correct.sum()),
        "truth": s.n_truth,
        "iou": MATCH_IOU,
        "matching": (
            "label-aware, one-to-one, truth widened to 1 column x 1 row, pieces closer than a row joined "
            "(rfstream.eval)"
        ),
        "raw_floor": FLOOR,
        "ece_raw": round(expected_calibration_error(s.raw, s.correct), 4),
        "ece_calibrated": round(expected_calibration_error(calibrated, s.correct), 4),
        "ece_calibrated_heldout": (
            round(expected_calibration_error(held[ok], s.correct[ok]), 4) if ok.any() else None
        ),
        "at_threshold": {
            "f1": round(f1, 4),
            "precision": round(tp / max(int(above.sum()), 1), 4),
            "recall": round(tp / s.n_truth, 4),
        },
        "per_label": per_label,
    }
    return dataclasses.replace(cal, threshold=round(float(threshold), 4), fitted_on=fitted_on)


def write_calibration(path: str | Path, calibration: Calibration) -> None:
    """Put ``calibration`` into the model file's ``rfstream.calibration`` (everything else unchanged)."""
    import onnx

    from rfstream.detect.models import read_metadata

    path = Path(path)
    model = onnx.load(str(path))
    for prop in list(model.metadata_props):
        if prop.key == "rfstream.calibration":
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = "rfstream.calibration", calibration.to_json()
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)
    read_metadata(path)  # the file still reads as an rfstream model, calibration included


def _detector(path: Path, spec: SpectrogramConfig, threads: int = 2) -> Any:
    """The daemon's detector for this model, uncalibrated, its threshold lowered to FLOOR."""
    from rfstream.detect.models import read_metadata

    meta = dataclasses.replace(read_metadata(path), calibration=Calibration())
    if meta.task == "frame_detector":
        from rfstream.detect.ort import OnnxFrameDetector

        return OnnxFrameDetector(
            "frame", path, meta=meta, score_threshold=FLOOR, providers="cpu", threads=threads
        )
    if meta.task == "crop_classifier":
        from rfstream.detect.energy import EnergyProposer, energy_options
        from rfstream.detect.two_stage import TwoStageDetector, TwoStageOptions

        proposer = EnergyProposer(energy_options({}, "calibration", spec.dynamic_range_db, spec.hop))
        return TwoStageDetector(
            "classifier",
            proposer,
            path,
            meta=meta,
            score_threshold=FLOOR,
            options=TwoStageOptions(providers="cpu", threads=threads),
        )
    raise ModelError(f"model {path}: cannot calibrate a {meta.task}")


def calibrate_model(
    path: str | Path,
    recordings: Sequence[str | Path],
    *,
    seeds: Sequence[int] = (),
    write: bool = True,
    spectrogram: SpectrogramConfig | None = None,
) -> Calibration:
    """Fit ``path``'s calibration on ``recordings`` and (``write``) store it in the file.

    ``spectrogram``: the frames the model was trained on (default: the daemon's defaults).
    """
    path = Path(path)
    spec = spectrogram or SpectrogramConfig(backend="numpy")
    detector = _detector(path, spec)
    try:
        scored = collect(detector, recordings, spectrogram=spec)
    finally:
        detector.close()
    cal = fit_calibration(
        scored,
        meta={"captures": len(recordings), "seeds": list(seeds), "detector": type(detector).__name__},
    )
    if write:
        write_calibration(path, cal)
    return cal


def summary(cal: Calibration) -> dict[str, Any]:
    """The figures worth printing: threshold, ECE raw/calibrated/held out, P/R/F1 at the threshold."""
    f = cal.fitted_on
    return {
        "threshold": cal.threshold,
        "labels_fitted": sorted(cal.per_label),
        **{k: f.get(k) for k in ("boxes", "correct", "truth", "ece_raw", "ece_calibrated")},
        "ece_calibrated_heldout": f.get("ece_calibrated_heldout"),
        "at_threshold": f.get("at_threshold"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m rfstream.train.calibrate", description=__doc__.splitlines()[0]
    )
    p.add_argument("models", nargs="+", type=Path, help="rfstream .onnx models (changed in place)")
    p.add_argument("--work", type=Path, required=True, help="where the validation captures go")
    p.add_argument("--captures", type=int, default=12, help="validation captures (default 12)")
    p.add_argument("--duration", type=float, default=1.0, help="seconds per capture (default 1)")
    p.add_argument("--dry-run", action="store_true", help="fit and print, leave the files alone")
    args = p.parse_args(argv)
    try:
        recordings = validation_recordings(args.work, args.captures, duration_s=args.duration)
        seeds = list(VALIDATION_SEEDS[: args.captures])
        for model in args.models:
            if not model.is_file():
                raise InputError(f"{model}: no such model file")
            cal = calibrate_model(model, recordings, seeds=seeds, write=not args.dry_run)
            print(json.dumps({"model": str(model), **summary(cal)}))
    except FatalError as exc:
        print(f"rfstream: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
