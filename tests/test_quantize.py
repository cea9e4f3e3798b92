"""INT8 quantisation with ONNX Runtime: real quantised sessions on tiny rfstream models."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from test_onnx_tiny import crop_classifier, frame_detector, make_frame, noise_image

from rfstream.detect.models import read_metadata, read_onnx_metadata
from rfstream.detect.ort import OnnxFrameDetector, OrtModel
from rfstream.detect.quantize import quantize_model
from rfstream.errors import ModelError


def _calibration(n: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        image = noise_image((64, 64), seed=i)
        x0, y0 = rng.integers(0, 48, size=2)
        image[y0 : y0 + 12, x0 : x0 + 12] = rng.uniform(0.4, 1.0)
        out.append(image[None, None])
    return out


@pytest.fixture
def fp32(tmp_path):
    return frame_detector(tmp_path / "fd.onnx", sleep_like_work=2)  # two 3x3 convs on the image


def test_static_int8_model_keeps_the_contract_and_the_float_ends(fp32, tmp_path):
    dst = quantize_model(fp32, tmp_path / "fd.int8.onnx", calibration=_calibration())
    props, source = read_onnx_metadata(dst), read_onnx_metadata(fp32)
    record = json.loads(props.pop("rfstream.quantization"))
    assert props == source  # the rfstream contract travels unchanged
    assert record["mode"] == "static" and record["per_channel"] is True
    graph = onnx.load(str(dst)).graph
    ops = [n.op_type for n in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # The frame itself is never quantised: no QuantizeLinear reads the graph input.
    assert not [n for n in graph.node if n.op_type == "QuantizeLinear" and "image" in n.input]
    assert read_metadata(dst).task == "frame_detector"
    model, reference = OrtModel(dst, providers="cpu", threads=1), OrtModel(fp32, providers="cpu", threads=1)
    batch = _calibration(1)[0]
    for got, want in zip(model.run(batch), reference.run(batch), strict=True):
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=0.05)


def test_int8_frame_detector_finds_the_same_box(fp32, tmp_path):
    dst = quantize_model(fp32, tmp_path / "fd.int8.onnx", calibration=_calibration())
    image = noise_image((64, 64))
    image[8:24, 16:32] = 0.9
    frame = make_frame(image)
    boxes = {}
    for name, path in (("fp32", fp32), ("int8", dst)):
        det = OnnxFrameDetector(name, path, providers="cpu", threads=1)
        det.warmup((64, 64))
        boxes[name] = [(d.x0, d.y0, d.x1, d.y1, d.label) for d in det.detect(frame)]
    assert boxes["int8"] == boxes["fp32"] == [(16.0, 8.0, 32.0, 24.0, "tone")]


def test_dynamic_mode_and_a_crop_classifier(tmp_path):
    src = crop_classifier(tmp_path / "cc.onnx")
    dst = quantize_model(src, tmp_path / "cc.int8.onnx", mode="dynamic")
    assert json.loads(read_onnx_metadata(dst)["rfstream.quantization"])["mode"] == "dynamic"
    crops = np.full((3, 1, 64, 64), 0.9, dtype=np.float32)
    (probs,) = OrtModel(dst, providers="cpu", threads=1).run(crops)
    assert probs.shape == (3, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_a_file_that_is_not_an_rfstream_model_is_refused(tmp_path):
    plain = frame_detector(tmp_path / "plain.onnx", with_metadata=False)
    with pytest.raises(ModelError):
        quantize_model(plain, tmp_path / "out.onnx", calibration=_calibration())
    with pytest.raises(ModelError, match="no calibration inputs"):
        quantize_model(frame_detector(tmp_path / "fd.onnx"), tmp_path / "out.onnx", calibration=[])
