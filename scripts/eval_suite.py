#!/usr/bin/env python3
"""Score every configured detector, and their merged output, on fresh synthetic recordings.

    python scripts/eval_suite.py --seeds 1-10 --rate 10e6 --duration 2 --out eval_suite.json

Synthesises one labelled recording per seed (evaluation seeds 1-99 are never used
in training, which uses 1000-1999), computes each frame once with the daemon's own
spectrogram stage, runs every detector of the default configuration on it, merges
them exactly as the pipeline does, and scores each against the recording's
annotations cut to each frame (rfstream.eval.clip_to_frames). Learned detectors are
scored label-aware (the label must match); the energy detector, which does not
label, label-agnostic. Prints a markdown table and writes the full reports as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rfstream.config import Config
from rfstream.detect.nms import merge_detections
from rfstream.detect.registry import build_detectors
from rfstream.dsp.spectrogram import Spectrogrammer
from rfstream.eval import clip_to_frames, evaluate, split_by_snr
from rfstream.sources.sigmf import SigMFSource, read_annotations
from rfstream.sources.synth import synthesize


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-", 1)
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="1-10", help="evaluation seeds, e.g. 1-10 or 3,5,7 (default 1-10)")
    p.add_argument("--rate", type=float, default=10e6, help="sample rate in S/s (default 10e6)")
    p.add_argument("--duration", type=float, default=2.0, help="seconds per recording (default 2)")
    p.add_argument("--min-snr", type=float, default=None, help="score only truth with SNR >= this (dB)")
    p.add_argument("--workdir", default=None, help="where the recordings go (default: a temporary directory)")
    p.add_argument("--out", default=None, help="JSON report")
    args = p.parse_args(argv)

    cfg = Config()
    detectors = build_detectors(cfg.detectors, cfg.spectrogram)
    names = [d.name for d in detectors]
    found: dict[str, list[Any]] = {name: [] for name in [*names, "merged"]}
    truth: list[Any] = []
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rfstream-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for seed in _seeds(args.seeds):
        base = work / f"eval_{int(args.rate)}_{seed}"
        meta = Path(f"{base}.sigmf-meta")
        if not meta.exists():
            synthesize(base, sample_rate_hz=args.rate, duration_s=args.duration, seed=seed)
        spectrogram = Spectrogrammer(cfg.spectrogram)
        frames = []
        for chunk in SigMFSource(meta):
            frame = spectrogram.process(chunk)
            frames.append(frame)
            per_frame = []
            for det in detectors:
                dets = det.detect(frame)
                found[det.name].extend(dets)
                per_frame.extend(dets)
            found["merged"].extend(
                merge_detections(
                    per_frame, iou_threshold=cfg.merge.iou_threshold, class_aware=cfg.merge.class_aware
                )
            )
        truth.extend(clip_to_frames(read_annotations(meta), frames))
        print(f"seed {seed}: {len(frames)} frames", file=sys.stderr)

    ignored: list[Any] = []
    if args.min_snr is not None:
        truth, ignored = split_by_snr(truth, args.min_snr)
    reports = {}
    rows = []
    for name, dets in found.items():
        aware = name != "energy"
        report = evaluate(truth, dets, label_aware=aware, ignore=ignored).to_dict()
        reports[name] = report
        at = {r["iou_threshold"]: r["overall"] for r in report["results"]}
        rows.append(
            f"| {name} | {'yes' if aware else 'no'} | {len(dets)} | {at[0.5]['ap']:.3f} | {at[0.5]['recall']:.3f} "
            f"| {at[0.5]['precision']:.3f} | {at[0.25]['ap']:.3f} | {at[0.25]['recall']:.3f} |"
        )
    header = (
        f"{len(truth)} truth boxes (per frame), seeds {args.seeds}, {args.rate / 1e6:g} MS/s, "
        f"{args.duration:g} s each" + (f", SNR >= {args.min_snr:g} dB" if args.min_snr is not None else "")
    )
    table = "\n".join(
        [
            header,
            "",
            "| detector | labels must match | detections | AP@0.5 | recall@0.5 | precision@0.5 | AP@0.25 | recall@0.25 |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps({"table": table, "reports": reports}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
