"""``rfstream models list|info|build-engine``: the model manager on the command line.

rfstream/cli.py wires it as a plugin verb (``add_arguments`` / ``run``); the model-file
contract itself (metadata, resolution, compatibility) stays in rfstream/detect/models.py.
Errors are ModelError (the CLI prints them as one line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from rfstream.detect import models
from rfstream.errors import ModelError

__all__ = ["add_arguments", "list_models", "model_info", "run"]


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
    build.add_argument(
        "--strongly-typed",
        action="store_true",
        help="TensorRT 10: take every precision from the ONNX graph (no FP16/INT8 flags)",
    )
    build.add_argument("--dir", action="append", default=[], help="also search this directory (repeatable)")


def list_models(search_dirs: Iterable[str | os.PathLike[str]] | None = None) -> list[dict[str, Any]]:
    """One row per model file in the search directories: name, kind, task, labels, path (or error)."""
    rows: list[dict[str, Any]] = []
    dirs = [Path(d) for d in (models.default_search_dirs() if search_dirs is None else search_dirs)]
    for d in models.unique_paths(dirs):
        if not d.is_dir():
            continue
        for path in sorted(p for p in d.iterdir() if p.suffix in models.SUFFIXES and p.is_file()):
            row: dict[str, Any] = {"name": path.stem, "kind": path.suffix[1:], "path": str(path)}
            try:
                meta = models.read_metadata(path)
            except ModelError as exc:
                row["error"] = str(exc)
            else:
                row.update(task=meta.task, labels=list(meta.labels), input_size=list(meta.input_size))
            rows.append(row)
    return rows


def model_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything ``rfstream models info`` shows about one file: metadata, size, sha256, I/O."""
    p = Path(path)
    meta = models.read_metadata(p)
    info: dict[str, Any] = {
        "path": str(p),
        "kind": p.suffix[1:],
        "bytes": p.stat().st_size,
        "sha256": models.file_sha256(p),
        "task": meta.task,
        "labels": list(meta.labels),
        "input_size": list(meta.input_size),
        "normalisation": dict(meta.normalisation),
        "score_threshold": meta.score_threshold,
        "decoder": dict(meta.decoder),
        "training": dict(meta.training),
    }
    if p.suffix == ".onnx":
        from rfstream.detect.ort import OrtModel

        model = OrtModel(p, meta, providers="cpu", threads=1)
        info["inputs"] = model.describe_inputs()
        info["outputs"] = model.describe_outputs()
    elif p.suffix == ".engine":
        side = models.read_sidecar(p)
        info["built_for"] = {
            k: side.get(k) for k in ("gpu_name", "compute_capability", "tensorrt_version", "precision")
        }
        info["onnx_sha256"] = side.get("onnx_sha256")
    return info


def _dirs(extra: list[str]) -> list[Path]:
    return [Path(d) for d in extra] + models.default_search_dirs()


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    command = args.models_command
    if command == "list":
        rows = list_models(_dirs(args.dir))
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
        print(json.dumps(model_info(resolved.path), indent=2, default=str), file=out)
        return 0
    if command == "build-engine":
        resolved = models.resolve_model(args.model, search_dirs=_dirs(args.dir), suffixes=(".onnx",))
        from rfstream.detect.trt_engine import build_engine

        engine = build_engine(
            resolved.path,
            args.output,
            fp16=args.fp16,
            int8_calibration_frames=args.int8,
            max_batch=args.max_batch,
            workspace_mib=args.workspace_mib,
            strongly_typed=args.strongly_typed,
        )
        print(f"wrote {engine} and {models.sidecar_path(engine).name}", file=out)
        return 0
    raise AssertionError(f"unhandled models command {command!r}")  # pragma: no cover - argparse guards it
