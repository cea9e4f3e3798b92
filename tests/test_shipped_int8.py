"""The shipped INT8 frame detector: made from the shipped FP32 one, same contract, same findings.

Retraining ``frame_detector.onnx`` without re-quantising makes the first test fail; regenerate with

    python scripts/quantize_model.py rfstream/models/frame_detector.onnx rfstream/models/frame_detector_int8.onnx

(deterministic: the calibration frames come from fixed synthesiser seeds) and check its AP there.
"""

from __future__ import annotations

import json

import numpy as np
from test_shipped_models import MODELS, big_boxes, strong_frames  # noqa: F401 - a fixture

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


def _found(dets, truth) -> tuple[list[bool], list[bool]]:
    """Per big truth box: found (IoU >= 0.5)?; per found one: labelled right?"""
    big = big_boxes(truth)
    t = np.array([[b["x_min"], b["y_min"], b["x_max"], b["y_max"]] for b in big]).reshape(-1, 4)
    d = np.array([[x.x0, x.y0, x.x1, x.y1] for x in dets]).reshape(-1, 4)
    if not len(d):
        return [False] * len(t), []
    iou = box_iou(t, d)
    found = iou.max(axis=1) >= 0.5
    best = iou.argmax(axis=1)
    return found.tolist(), [big[i]["label"] == dets[best[i]].label for i in np.flatnonzero(found)]


def test_int8_finds_what_fp32_finds(strong_frames):  # noqa: F811 - the fixture
    scores = {}
    for path in (FP32, INT8):
        det = OnnxFrameDetector(path.stem, path, providers="cpu", threads=1)
        found, right = [], []
        for frame, truth in strong_frames:
            f, r = _found(det.detect(frame), truth)
            found += f
            right += r
        scores[path.stem] = (float(np.mean(found)), float(np.mean(right)) if right else 0.0)
    (fp32_found, fp32_right), (int8_found, int8_right) = (
        scores["frame_detector"],
        scores["frame_detector_int8"],
    )
    assert fp32_found >= 0.5  # at the operating threshold (max F1 on validation captures, weak signals too)
    assert int8_found >= fp32_found - 0.1, scores
    assert int8_right >= fp32_right - 0.1, scores
