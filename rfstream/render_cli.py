"""``rfstream render`` (a plugin verb with config: ``add_arguments`` / ``config_overrides`` / ``run``).

Kept apart from rfstream/render.py so that parsing the command line imports neither NumPy nor
matplotlib.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from rfstream.errors import InputError, SinkError

__all__ = ["add_arguments", "config_overrides", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Draw a recording's waterfall with axes in MHz and seconds, a dB colour bar, a legend, "
        "its annotations (dashed white) and, with --detect, rfstream's detections (solid, by label)."
    )
    p.add_argument("recording", help="a .sigmf-meta / .sigmf-data / .sigmf archive, or a raw IQ file")
    p.add_argument(
        "--annotations",
        metavar="FILE",
        action="append",
        default=[],
        help="also draw the annotations of this .sigmf-meta (e.g. from replay --annotate; repeatable)",
    )
    p.add_argument("-o", "--out", metavar="OUT.png", help="output PNG (default: RECORDING's name + .png)")
    p.add_argument(
        "--detect", action="store_true", help="run the configured detectors and draw what they find"
    )
    p.add_argument("--no-truth", action="store_true", help="do not draw the recording's own annotations")
    p.add_argument("--rate", type=float, help="raw files: sample rate in Hz")
    p.add_argument("--freq", type=float, help="raw files: centre frequency in Hz")
    p.add_argument("--datatype", help="raw files: SigMF datatype, e.g. cu8, ci16_le, cf32_le")
    p.add_argument("--channel", type=int, help="channel of a multi-channel recording (default 0)")
    p.add_argument("--capture-index", type=int, help="draw only this SigMF capture segment")
    p.add_argument("--height", type=int, default=1400, help="most time rows in the picture (default 1400)")


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "source.path": args.recording,
        "source.realtime": False,
        "source.loop": False,
        "publish.endpoint": "",
        "publish.annotations": "",
    }
    if args.datatype or args.rate:
        out["source.kind"] = "raw"
    for attr, key in (
        ("rate", "source.sample_rate_hz"),
        ("freq", "source.center_freq_hz"),
        ("datatype", "source.datatype"),
        ("channel", "source.channel"),
        ("capture_index", "source.capture_index"),
    ):
        value = getattr(args, attr)
        if value is not None:
            out[key] = value
    return out


def run(args: argparse.Namespace, cfg: Any) -> int:
    from rfstream.render import (
        Waterfall,
        boxes_from_annotations,
        boxes_from_detections,
        db_range,
        describe,
        draw_png,
    )
    from rfstream.runner import assemble
    from rfstream.types import Detection

    if args.height < 16:
        raise InputError(f"--height must be >= 16, got {args.height}")
    out = Path(args.out) if args.out else _default_out(args.recording)
    if not out.parent.is_dir():
        raise SinkError(f"cannot write {out}: directory {out.parent} does not exist")
    extra: list[Any] = []
    for path in args.annotations:
        extra.extend(_read_annotations(path))
    truth = [] if args.no_truth else _own_annotations(cfg)

    detections: list[Detection] = []
    waterfall = Waterfall(width=1024)

    def keep(result: Any) -> None:
        waterfall.add(result.frame)
        detections.extend(result.detections)

    pipeline = assemble(cfg, lossless=True, on_result=keep, detectors=None if args.detect else [])
    info = pipeline.source.info
    chunk_samples = max(1.0, cfg.source.chunk_ms * 1e-3 * info.sample_rate_hz)
    frames = max(1, math.ceil((info.total_samples or chunk_samples) / chunk_samples))
    # about args.height rows in all, at least 8 per frame: a long recording costs little memory
    waterfall.rows_per_frame = max(8, min(256, args.height // frames))
    pipeline.run()
    boxes = boxes_from_annotations(truth) + boxes_from_annotations(extra) + boxes_from_detections(detections)
    draw_png(
        waterfall,
        boxes,
        out,
        title=describe(Path(args.recording).name, waterfall),
        db_range=db_range(cfg.spectrogram),
    )
    if not getattr(args, "quiet", False):
        shown = sum(1 for b in boxes if not b.truth)
        print(f"wrote {out}: {shown} detections, {len(boxes) - shown} annotations")
    return 0


def _default_out(recording: str) -> Path:
    name = Path(recording).name
    for suffix in (".sigmf-meta", ".sigmf-data", ".sigmf"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return Path(name + ".png")


def _read_annotations(path: str) -> list[Any]:
    from rfstream.sources.sigmf import read_annotations

    return read_annotations(path)


def _own_annotations(cfg: Any) -> list[Any]:
    """The recording's own annotations (SigMF only; a raw file has none)."""
    if cfg.source.kind != "sigmf":
        return []
    from rfstream.sources.raw import datatype_from_extension

    if datatype_from_extension(cfg.source.path) is not None:
        return []
    return _read_annotations(cfg.source.path)
