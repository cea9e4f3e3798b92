"""`rfstream train`: synthesize or read labelled captures, export the dataset, train, export ONNX.

One command with a seed regenerates the shipped models::

    rfstream train --out runs/ship --seed 0 --export-to rfstream/models

Without ``--data``, ``--captures`` synthetic recordings are made with
``rfstream.sources.synth.synthesize`` at seeds ``1000 + (100·seed + i) mod 1000``
(always within 1000–1999, disjoint from the evaluation seeds 1–99). With
``--data DIR`` every ``*.sigmf-meta`` under DIR is used, its labels folded onto
the taxonomy (``--label-map FILE`` adds the user's own table). ``--dataset DIR``
skips the export and trains on an already exported dataset.

After export, each model's scores are calibrated (:mod:`rfstream.train.calibrate`):
the daemon's detector for it runs on ``--validation-captures`` synthetic captures at
seeds 3000+ (disjoint from training, INT8 and evaluation seeds), its boxes are
matched to the truth, and per-label Platt scaling plus the max-F1 operating
threshold go into the model's ``rfstream.calibration`` metadata.

This module imports without torch; ``run`` checks for it first, so a missing
extra is one clear error.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rfstream.errors import ConfigError, FatalError, InputError, ModelError

MISSING_TORCH = "rfstream train needs the 'train' extra: pip install 'rfstream[train]'"
TRAIN_SEED_BASE = 1000
SCORE_THRESHOLD = 0.3  # the crop classifier's default; the frame detector's is tuned on validation


def capture_seed(seed: int, i: int) -> int:
    """Synthetic capture ``i`` of a run with ``seed``: always within 1000–1999."""
    return TRAIN_SEED_BASE + (100 * seed + i) % 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, type=Path, help="output directory (recordings, dataset, logs, models)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the synthetic captures, folds and weights"
    )
    parser.add_argument(
        "--captures", type=int, default=48, help="synthetic recordings to make (without --data)"
    )
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per synthetic recording")
    parser.add_argument(
        "--sample-rates",
        default="10e6,20e6,5e6,2.4e6",
        help="comma-separated sample rates cycled over the synthetic recordings, Hz",
    )
    parser.add_argument(
        "--snr",
        default="-5,30",
        help="in-band SNR range of the synthetic signals, dB (min,max; default -5,30)",
    )
    parser.add_argument(
        "--data", type=Path, help="train on the labelled SigMF recordings under this directory"
    )
    parser.add_argument(
        "--label-map", type=Path, help="JSON/TOML table mapping your labels onto the taxonomy"
    )
    parser.add_argument("--dataset", type=Path, help="train on an already exported dataset directory")
    parser.add_argument(
        "--models", default="frame_detector,crop_classifier", help="which models to train (comma-separated)"
    )
    for name, tp in (
        ("epochs", int),
        ("folds", int),
        ("folds-run", int),
        ("batch-size", int),
        ("lr", float),
        ("patience", int),
    ):
        parser.add_argument(f"--{name}", type=tp, help=f"override the auto-tuned {name} (both models)")
    parser.add_argument(
        "--validation-captures",
        type=int,
        default=12,
        help="synthetic captures (seeds 3000+) the score calibration is fitted on; 0 = no calibration",
    )
    parser.add_argument("--export-to", type=Path, help="copy the accepted ONNX files into this directory")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "epochs": args.epochs,
        "folds": args.folds,
        "folds_run": args.folds_run,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "patience": args.patience,
    }


def _synthesize(args: argparse.Namespace, rec_dir: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    from rfstream.sources.synth import synthesize

    try:
        rates = [float(r) for r in args.sample_rates.split(",") if r.strip()]
    except ValueError as exc:
        raise ConfigError(f"--sample-rates: not a list of numbers: {args.sample_rates!r}") from exc
    if not rates or min(rates) <= 0:
        raise ConfigError(f"--sample-rates: need positive rates, got {args.sample_rates!r}")
    try:
        snr = tuple(float(v) for v in args.snr.split(","))
    except ValueError as exc:
        raise ConfigError(f"--snr: not two numbers: {args.snr!r}") from exc
    if len(snr) != 2 or not snr[0] <= snr[1]:
        raise ConfigError(f"--snr: need MIN,MAX with MIN <= MAX, got {args.snr!r}")
    rec_dir.mkdir(parents=True, exist_ok=True)
    paths, made = [], []
    from rfstream.train.trainer import _progress

    for i in _progress(range(args.captures), desc="synthesizing"):
        seed, rate = capture_seed(args.seed, i), rates[i % len(rates)]
        base = rec_dir / f"train_{seed:04d}_{rate:.0f}_{args.duration:g}s_snr{snr[0]:g}_{snr[1]:g}"
        meta = base.with_name(base.name + ".sigmf-meta")
        # The same seed gives the same bytes: a recording from an interrupted run is reused.
        if not (meta.exists() and base.with_name(base.name + ".sigmf-data").exists()):
            meta = Path(
                synthesize(base, sample_rate_hz=rate, duration_s=args.duration, seed=seed, snr_db_range=snr)
            )
        paths.append(meta)
        made.append({"seed": seed, "sample_rate_hz": rate, "duration_s": args.duration, "snr_db": list(snr)})
    return paths, made


def _calibrate(args: argparse.Namespace, out: Path, models: list[Path], spectrogram: Any) -> dict[str, Any]:
    """Fit and store each model's score calibration on validation captures; the summaries.

    A model that cannot be calibrated (no correct box on the validation captures: an
    undertrained model) is kept uncalibrated, and the report says why.
    """
    from rfstream.train.calibrate import VALIDATION_SEEDS, calibrate_model, summary, validation_recordings
    from rfstream.train.trainer import _progress

    t0 = time.perf_counter()
    rates = [float(r) for r in args.sample_rates.split(",") if r.strip()]
    recordings = validation_recordings(
        out / "validation",
        args.validation_captures,
        rates=rates,
        duration_s=args.duration,
        progress=lambda it: _progress(it, desc="validation captures"),
    )
    seeds = list(VALIDATION_SEEDS[: len(recordings)])
    result: dict[str, Any] = {}
    for path in models:
        try:
            cal = calibrate_model(path, recordings, seeds=seeds, spectrogram=spectrogram)
        except ModelError as exc:
            result[path.stem] = {"error": str(exc)}
            print(f"{path.stem}: not calibrated: {exc}", file=sys.stderr)
            continue
        result[path.stem] = summary(cal)
        print(f"{path.stem} calibration: {json.dumps(result[path.stem])}", file=sys.stderr)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def run(args: argparse.Namespace) -> int:
    try:
        import torch
    except ImportError as exc:
        raise ConfigError(MISSING_TORCH) from exc

    from rfstream.config import SpectrogramConfig
    from rfstream.labels import LABELS
    from rfstream.train import dataset as ds
    from rfstream.train import trainer
    from rfstream.train.autotune import autotune
    from rfstream.train.export import export_crop_classifier, export_frame_detector

    if args.validation_captures < 0:
        raise ConfigError(f"--validation-captures: need >= 0, got {args.validation_captures}")
    models = {m.strip() for m in args.models.split(",") if m.strip()}
    if not models or not models <= {"frame_detector", "crop_classifier"}:
        raise ConfigError(f"--models: choose from frame_detector, crop_classifier; got {args.models!r}")
    started = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    spectrogram = SpectrogramConfig()
    synthetic: list[dict[str, Any]] = []
    if args.dataset is not None:
        data_dir = args.dataset
    else:
        if args.data is not None:
            recordings = sorted(args.data.rglob("*.sigmf-meta"))
            if not recordings:
                raise InputError(f"--data {args.data}: no *.sigmf-meta recordings under it")
        else:
            recordings, synthetic = _synthesize(args, out / "recordings")
        data_dir = out / "dataset"
        ds.export_dataset(
            recordings,
            data_dir,
            spectrogram=spectrogram,
            label_map=ds.load_label_map(args.label_map),
            seed=args.seed,
            progress=lambda it: trainer._progress(it, desc="exporting frames"),
            synthetic=synthetic,
        )
    data = ds.load_frames(data_dir)
    manifest = data.manifest
    spec = manifest.get("spectrogram", {})
    normalisation = {
        "dynamic_range_db": float(spec.get("dynamic_range_db", spectrogram.dynamic_range_db)),
        "floor_offset_db": float(spec.get("floor_offset_db", spectrogram.floor_offset_db)),
        "nfft": int(spec.get("nfft", spectrogram.nfft)),
    }
    summary_base = {
        "frames": len(data),
        "label_counts": manifest.get("label_counts", {}),
        "recordings": len(manifest.get("recordings", [])),
        "synthetic_seeds": [s["seed"] for s in manifest.get("synthetic", [])],
        "seed": args.seed,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    log_path = out / "train_log.jsonl"
    report: dict[str, Any] = {"dataset": str(data_dir)}
    accepted: list[Path] = []

    if "frame_detector" in models:
        hp = autotune("frame_detector", len(data), _overrides(args))
        print(f"frame detector: {len(data)} frames, {hp}", file=sys.stderr)
        result = trainer.train_frame_detector(data, hp, seed=args.seed, log_path=log_path)
        # The weights, for re-export or fine-tuning (not a model the daemon loads: no `.pt` suffix).
        torch.save(result.model.state_dict(), out / "frame_detector.state_dict.pth")
        val_idx = result.extra["val_idx"]
        decoder, score_threshold, tuned = trainer.tune_decoder(
            *trainer.predict_frames(result.model, data.images[val_idx]), data, val_idx
        )
        path = out / "frame_detector.onnx"
        diff = export_frame_detector(
            result.model,
            path,
            labels=LABELS,
            input_size=(data.images.shape[1], data.images.shape[2]),
            normalisation={**normalisation, "input": "raw [0,1] frame; no scaling outside the graph"},
            score_threshold=score_threshold,
            decoder=decoder,
            training={
                **summary_base,
                "hyperparameters": hp.as_dict(),
                "best_fold": result.fold,
                "folds": result.folds,
                "validation": tuned,
            },
        )
        report["frame_detector"] = {
            "validation": tuned,
            "decoder": decoder,
            "score_threshold": score_threshold,
            "onnx_max_abs_diff": diff,
            "hp": hp.as_dict(),
        }
        accepted.append(path)

    if "crop_classifier" in models:
        crops_meta = json.loads((data_dir / "crops.json").read_text(encoding="utf-8"))
        x, y, names = trainer.crop_arrays(data, crops_meta)
        if len(y) < 2:
            raise InputError(f"dataset {data_dir}: too few crops to train the crop classifier ({len(y)})")
        hp = autotune("crop_classifier", len(y), _overrides(args))
        print(f"crop classifier: {len(y)} crops, {hp}", file=sys.stderr)
        groups = [trainer.recording_of(n) for n in names]
        result = trainer.train_crop_classifier(x, y, groups, hp, seed=args.seed, log_path=log_path)
        torch.save(result.model.state_dict(), out / "crop_classifier.state_dict.pth")
        path = out / "crop_classifier.onnx"
        counts = {LABELS[i]: int((y == i).sum()) for i in range(len(LABELS)) if (y == i).any()}
        diff = export_crop_classifier(
            result.model,
            path,
            labels=LABELS,
            size=crops_meta["size"],
            normalisation={
                **normalisation,
                "input": "raw [0,1] crops from rfstream.detect.crops.extract_crops; no scaling outside the graph",
                "pad_frac": crops_meta["pad_frac"],
                "min_pad_px": crops_meta["min_pad_px"],
            },
            score_threshold=SCORE_THRESHOLD,
            training={
                **summary_base,
                "crops": len(y),
                "crop_label_counts": counts,
                "hyperparameters": hp.as_dict(),
                "best_fold": result.fold,
                "folds": result.folds,
                "validation": result.metrics,
            },
        )
        report["crop_classifier"] = {
            "validation": result.metrics,
            "onnx_max_abs_diff": diff,
            "hp": hp.as_dict(),
        }
        accepted.append(path)

    if accepted and args.validation_captures > 0:
        from dataclasses import fields

        known = {f.name for f in fields(SpectrogramConfig)}
        used = SpectrogramConfig(
            backend="numpy", **{k: v for k, v in spec.items() if k in known and k != "backend"}
        )
        report["calibration"] = _calibrate(args, out, accepted, used)

    if args.export_to is not None:
        args.export_to.mkdir(parents=True, exist_ok=True)
        for path in accepted:
            shutil.copyfile(path, args.export_to / path.name)
    report["seconds"] = round(time.perf_counter() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    print(json.dumps(report, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m rfstream.train.cli``) until the top-level CLI wires it in."""
    parser = argparse.ArgumentParser(prog="rfstream train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except FatalError as exc:
        print(f"rfstream: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
