#!/usr/bin/env python3
"""Quantise an rfstream ONNX model to INT8 and compare it with the original (AP and speed).

    python scripts/quantize_model.py rfstream/models/frame_detector.onnx /tmp/frame_detector.int8.onnx
    python scripts/quantize_model.py SRC DST --mode dynamic --no-compare
    python scripts/quantize_model.py SRC DST --compare-only        # DST already exists

Static quantisation (QDQ, U8 activations / S8 per-channel weights) calibrates on frames the
synthesiser draws with seeds no training or evaluation uses; see rfstream.detect.quantize.
For a frame detector the comparison scores both models on the same evaluation recordings
(seeds 1-10 by default, label-aware AP as scripts/eval_suite.py scores them) and times one
frame at 1 and 2 threads. Ship the INT8 model only if it loses at most 0.01 AP@0.5 and is faster.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rfstream.detect.models import read_metadata
from rfstream.detect.quantize import compare_models, quantize_model
from rfstream.errors import RfstreamError


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-", 1)
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", help="the rfstream .onnx model")
    p.add_argument("dst", help="where the INT8 model goes")
    p.add_argument("--mode", choices=("static", "dynamic"), default="static")
    p.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="minmax")
    p.add_argument("--frames", type=int, default=16, help="calibration frames (default 16)")
    p.add_argument("--quantize-heads", action="store_true", help="quantise the output heads too")
    p.add_argument("--quantize-input-layer", action="store_true", help="quantise the first layer too")
    p.add_argument("--no-compare", action="store_true", help="skip the AP and timing comparison")
    p.add_argument("--compare-only", action="store_true", help="only compare (DST exists)")
    p.add_argument("--seeds", default="1-10", help="evaluation seeds (default 1-10)")
    p.add_argument("--rate", type=float, default=10e6, help="evaluation sample rate (default 10e6)")
    p.add_argument("--workdir", default=None, help="where the evaluation recordings go")
    p.add_argument("--out", default=None, help="write the comparison as JSON")
    args = p.parse_args(argv)
    try:
        started = time.monotonic()
        if not args.compare_only:
            quantize_model(
                args.src,
                args.dst,
                mode=args.mode,
                method=args.method,
                n_calibration=args.frames,
                float_heads=not args.quantize_heads,
                float_input_layer=not args.quantize_input_layer,
            )
            src_kb, dst_kb = Path(args.src).stat().st_size / 1024, Path(args.dst).stat().st_size / 1024
            print(f"wrote {args.dst} ({dst_kb:.0f} KiB; {args.src}: {src_kb:.0f} KiB)", file=sys.stderr)
        if args.no_compare:
            return 0
        if read_metadata(args.src).task != "frame_detector":
            print("comparison: frame detectors only (the crop classifier is scored by eval_suite.py)")
            return 0
        report = compare_models(
            {"fp32": args.src, "int8": args.dst},
            seeds=_seeds(args.seeds),
            rate_hz=args.rate,
            workdir=args.workdir,
        )
    except RfstreamError as exc:
        print(f"quantize_model: error: {exc}", file=sys.stderr)
        return 1
    m = report["models"]
    print(f"{report['frames']} frames, {report['truth']} truth boxes, {report['rate_hz'] / 1e6:g} MS/s")
    print("| model | AP@0.5 | AP@0.25 | ms 1 thread | ms 2 threads | CPU ms 1 thread | CPU ms 2 threads |")
    print("|---|---|---|---|---|---|---|")
    for name, r in m.items():
        print(
            f"| {name} | {r['ap50']:.3f} | {r['ap25']:.3f} | {r['ms_1_threads']} | {r['ms_2_threads']} "
            f"| {r['cpu_ms_1_threads']} | {r['cpu_ms_2_threads']} |"
        )
    loss = m["fp32"]["ap50"] - m["int8"]["ap50"]
    faster = m["int8"]["cpu_ms_1_threads"] < m["fp32"]["cpu_ms_1_threads"]
    verdict = "ship" if loss <= 0.01 and faster else "keep FP32"
    print(f"AP@0.5 loss {loss:+.3f}, INT8 {'faster' if faster else 'not faster'} on one thread: {verdict}")
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
