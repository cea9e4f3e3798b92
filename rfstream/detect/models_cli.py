"""``rfstream models list|info|build-engine``: the model manager on the command line.

The lead wires it in rfstream/cli.py: ``models_cli.add_arguments(subparser)`` and
``return models_cli.run(args)``. Errors are ModelError (the CLI prints them as one line).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from rfstream.detect import models

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", required=True, metavar="{list,info,build-engine}")
    ls = sub.add_parser("list", help="models in the search directories")
    ls.add_argument("--dir", action="append", default=[], help="also search this directory (repeatable)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    info = sub.add_parser("info", help="metadata, inputs and outputs of one model")
    info.add_argument("model", help="a model file, or a name resolved like the daemon does")
    info.add_argument("--dir", action="append", default=[], help="also search this directory (repeatable)")
    build = sub.add_parser("build-engine", help="build a TensorRT engine for this GPU from an ONNX model")
    build.add_argument("model", help="an .onnx file or a model name")
    build.add_argument("-o", "--output", help="engine path (default: next to the ONNX file, .engine)")
    build.add_argument("--no-fp16", dest="fp16", action="store_false", help="build in FP32")
    build.add_argument("--int8", metavar="DIR", help="INT8 with calibration inputs (PNG/.npy) from DIR")
    build.add_argument(
        "--max-batch", type=int, help="largest batch (default: 1 for frame detectors, 256 for classifiers)"
    )
    build.add_argument("--workspace-mib", type=int, default=1024, help="builder workspace (default 1024)")
    build.add_argument("--dir", action="append", default=[], help="also search this directory (repeatable)")


def _dirs(extra: list[str]) -> list[Path]:
    return [Path(d) for d in extra] + models.default_search_dirs()


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    command = args.models_command
    if command == "list":
        rows = models.list_models(_dirs(args.dir))
        if args.json:
            for row in rows:
                print(json.dumps(row), file=out)
            return 0
        if not rows:
            print("no models found", file=out)
        for row in rows:
            what = row.get("error") or f"{row['task']}  labels={','.join(row['labels'])}"
            print(f"{row['name']:<24} {row['kind']:<7} {what}  ({row['path']})", file=out)
        return 0
    if command == "info":
        resolved = models.resolve_model(args.model, search_dirs=_dirs(args.dir))
        for warning in resolved.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(json.dumps(models.model_info(resolved.path), indent=2, default=str), file=out)
        return 0
    if command == "build-engine":
        resolved = models.resolve_model(args.model, search_dirs=_dirs(args.dir), suffixes=(".onnx",))
        engine = models.build_engine(
            resolved.path,
            args.output,
            fp16=args.fp16,
            int8_calibration_frames=args.int8,
            max_batch=args.max_batch,
            workspace_mib=args.workspace_mib,
        )
        print(f"wrote {engine} and {models.sidecar_path(engine).name}", file=out)
        return 0
    raise AssertionError(f"unhandled models command {command!r}")  # pragma: no cover - argparse guards it
