"""ONNX export with rfstream metadata, validated against torch before it is accepted.

The file gets a dynamic batch axis, opset 17, and the model contract's
``metadata_props`` (all values strings, JSON where structured):

    rfstream.format          "1"
    rfstream.task            "frame_detector" | "crop_classifier"
    rfstream.labels          JSON list, the model's class order
    rfstream.input_size      JSON [H, W]
    rfstream.normalisation   JSON {"dynamic_range_db", "floor_offset_db", "nfft", "input"}
    rfstream.score_threshold "0.5"
    rfstream.decoder         JSON {"stride", ...} (frame detector only)
    rfstream.training        JSON summary of the data and the run

torch 2.13 exports with the TorchScript-based exporter (``dynamo=False``): it
needs nothing beyond torch and onnx, and these plain conv nets trace exactly.
(The dynamo exporter would need onnxscript, which rfstream does not depend on.)

Validation: the written file runs in ONNX Runtime on random inputs (batch 1 and
3, so the dynamic axis is exercised) and every output must match the torch
model within ``tolerance`` (1e-4 max abs). A file that fails is deleted and
ModelError raised.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rfstream.detect.calibration import Calibration
from rfstream.errors import ModelError
from rfstream.train.models import (
    CropClassifier,
    CropClassifierExport,
    FrameDetector,
    FrameDetectorExport,
)

OPSET = 17
TOLERANCE = 1e-4


def metadata(
    *,
    task: str,
    labels: Sequence[str],
    input_size: Sequence[int],
    normalisation: Mapping[str, Any],
    score_threshold: float,
    training: Mapping[str, Any],
    decoder: Mapping[str, Any] | None = None,
    calibration: Calibration | None = None,
) -> dict[str, str]:
    """The rfstream metadata_props of a model, as strings."""
    props = {
        "rfstream.format": "1",
        "rfstream.task": task,
        "rfstream.labels": json.dumps(list(labels)),
        "rfstream.input_size": json.dumps([int(v) for v in input_size]),
        "rfstream.normalisation": json.dumps(dict(normalisation)),
        "rfstream.score_threshold": repr(float(score_threshold)),
        "rfstream.training": json.dumps(dict(training), sort_keys=True, default=str),
    }
    if decoder is not None:
        props["rfstream.decoder"] = json.dumps(dict(decoder))
    if calibration is not None:
        props["rfstream.calibration"] = calibration.to_json()
    return props


def _export(
    module: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    input_name: str,
    output_names: Sequence[str],
    props: Mapping[str, str],
) -> None:
    import onnx

    module = module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {name: {0: "N"} for name in (input_name, *output_names)}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo (which needs onnxscript).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "rfstream"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def validate(
    module: torch.nn.Module,
    path: Path,
    input_shape: Sequence[int],
    *,
    tolerance: float = TOLERANCE,
    seed: int = 0,
) -> float:
    """Run the ONNX file and the torch module on the same random inputs; the max abs difference.

    Raises ModelError (and deletes the file) when they disagree by more than ``tolerance``.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        path.unlink(missing_ok=True)
        raise ModelError(f"{path}: ONNX Runtime cannot load the exported model: {exc}") from exc
    rng = np.random.default_rng(seed)
    input_name = session.get_inputs()[0].name
    worst = 0.0
    module = module.eval()
    for batch in (1, 3):
        x = rng.random((batch, *input_shape), dtype=np.float32)
        with torch.no_grad():
            expected = module(torch.from_numpy(x))
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(None, {input_name: x})
        for e, g in zip(expected, got, strict=True):
            if tuple(e.shape) != g.shape:
                path.unlink(missing_ok=True)
                raise ModelError(f"{path}: ONNX output shape {g.shape} != torch {tuple(e.shape)}")
            worst = max(worst, float(np.max(np.abs(e.numpy() - g))))
    if not worst < tolerance:
        path.unlink(missing_ok=True)
        raise ModelError(f"{path}: ONNX outputs differ from torch by {worst:.2e} (limit {tolerance:.0e})")
    return worst


def export_frame_detector(
    model: FrameDetector,
    path: str | Path,
    *,
    labels: Sequence[str],
    input_size: Sequence[int],
    normalisation: Mapping[str, Any],
    score_threshold: float,
    decoder: Mapping[str, Any],
    training: Mapping[str, Any],
) -> float:
    """Export and validate the frame detector; returns the max abs difference seen."""
    path = Path(path)
    wrapped = FrameDetectorExport(model).eval()
    h, w = (int(v) for v in input_size)
    props = metadata(
        task="frame_detector",
        labels=labels,
        input_size=(h, w),
        normalisation=normalisation,
        score_threshold=score_threshold,
        training=training,
        decoder={"stride": model.stride, **decoder},
    )
    _export(wrapped, torch.zeros(1, 1, h, w), path, "image", ("objectness", "class_probs"), props)
    return validate(wrapped, path, (1, h, w))


def export_crop_classifier(
    model: CropClassifier,
    path: str | Path,
    *,
    labels: Sequence[str],
    size: int,
    normalisation: Mapping[str, Any],
    score_threshold: float,
    training: Mapping[str, Any],
) -> float:
    """Export and validate the crop classifier; returns the max abs difference seen."""
    path = Path(path)
    wrapped = CropClassifierExport(model).eval()
    props = metadata(
        task="crop_classifier",
        labels=labels,
        input_size=(size, size),
        normalisation=normalisation,
        score_threshold=score_threshold,
        training=training,
    )
    _export(wrapped, torch.zeros(1, 1, size, size), path, "crops", ("probs",), props)
    return validate(wrapped, path, (1, size, size))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The rfstream metadata of an ONNX file, JSON values decoded (for tests and `models info`)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for prop in model.metadata_props:
        if prop.key.startswith("rfstream."):
            try:
                out[prop.key] = json.loads(prop.value)
            except json.JSONDecodeError:
                out[prop.key] = prop.value
    return out
