"""The shipped INT8 frame detector: made from the shipped FP32 one, same contract, same findings.

Retraining ``frame_detector.onnx`` without re-quantising makes the first test fail; regenerate with

    python scripts/quantize_model.py rfstream/models/frame_detector.onnx rfstream/models/frame_detector_int8.onnx

(deterministic: the calibration frames come from fixed synthesiser seeds) and check its AP there.
"""

from __future__ import annotations

import json

import numpy as np
from test_shipped_models import MODELS, strong_frame  # noqa: F401 - a fixture

from rfstream.config import Config
from rfstream.detect.models import file_sha256, read_onnx_metadata
from rfstream.detect.ort import OnnxFrameDetector
from rfstream.train.dataset import box_iou

FP32, INT8 = MODELS / "frame_detector.onnx", MODELS / "frame_detector_int8.onnx"


def test_int8_model_is_quantised_from_the_shipped_fp32_model():
    props = read_onnx_metadata(INT8)
    record = json.loads(props.pop("rfstream.quantization"))
    assert record["source_sha256"] == file_sha256(FP32), "re-run scripts/quantize_model.py"
    assert record["mode"] == "static"
    assert props == read_onnx_metadata(FP32)  # the same contract: labels, input, decoder, threshold


def test_int8_is_the_default_frame_detector():
    (frame,) = [d for d in Config().detectors if d.name == "frame"]
    assert frame.model == "frame_detector_int8" and frame.kind == "onnx"


def _found(dets, truth) -> tuple[float, float]:
    """Share of the big truth boxes found (IoU >= 0.5), and of those, the share labelled right."""
    big = [b for b in truth if b["y_max"] - b["y_min"] >= 8 and b["x_max"] - b["x_min"] >= 4]
    t = np.array([[b["x_min"], b["y_min"], b["x_max"], b["y_max"]] for b in big])
    d = np.array([[x.x0, x.y0, x.x1, x.y1] for x in dets]).reshape(-1, 4)
    iou = box_iou(t, d)
    found = iou.max(axis=1) >= 0.5
    best = iou.argmax(axis=1)
    right = [big[i]["label"] == dets[best[i]].label for i in np.flatnonzero(found)]
    return float(found.mean()), float(np.mean(right)) if right else 0.0


def test_int8_finds_what_fp32_finds(strong_frame):  # noqa: F811 - the fixture
    frame, truth = strong_frame
    scores = {}
    for path in (FP32, INT8):
        det = OnnxFrameDetector(path.stem, path, providers="cpu", threads=1)
        scores[path.stem] = _found(det.detect(frame), truth)
    (fp32_found, fp32_right), (int8_found, int8_right) = (
        scores["frame_detector"],
        scores["frame_detector_int8"],
    )
    assert fp32_found >= 0.6
    assert int8_found >= fp32_found - 0.1, scores
    assert int8_right >= fp32_right - 0.1, scores
