"""OnnxFrameDetector on real ONNX Runtime sessions over tiny models."""

from __future__ import annotations

import numpy as np
import pytest
from test_onnx_tiny import frame_detector, make_frame, noise_image, props

from rfstream.detect.models import InferenceFailed
from rfstream.detect.ort import OnnxFrameDetector, OrtModel, select_providers
from rfstream.errors import ConfigError, ModelError


def bright_box(image: np.ndarray, x0: int, y0: int, x1: int, y1: int, value: float = 0.9) -> np.ndarray:
    image = image.copy()
    image[y0:y1, x0:x1] = value
    return image


def test_detects_a_bright_box_in_physical_units(tmp_path):
    det = OnnxFrameDetector("fd", frame_detector(tmp_path / "fd.onnx"), providers="cpu", threads=1)
    det.warmup((64, 64))
    image = bright_box(noise_image(), 16, 8, 32, 24)
    frame = make_frame(image, rate=1e6, fc=100e6)
    found = det.detect(frame)
    assert len(found) == 1
    d = found[0]
    assert (d.x0, d.y0, d.x1, d.y1) == (16.0, 8.0, 32.0, 24.0)  # stride 4, refine off
    assert d.label == "tone" and d.detector == "fd"
    assert d.f_low_hz == pytest.approx(100e6 - 0.5e6 + 16 * 1e6 / 64)
    assert d.f_high_hz == pytest.approx(100e6 - 0.5e6 + 32 * 1e6 / 64)
    assert d.t_start_s == pytest.approx(8 * 2048 / 1e6) and d.t_stop_s == pytest.approx(24 * 2048 / 1e6)
    assert 0.5 < d.score <= 1.0
    assert det.detect(make_frame(noise_image(seed=1))) == []


def test_labels_kept_and_threshold(tmp_path):
    path = frame_detector(tmp_path / "fd.onnx")
    frame = make_frame(bright_box(noise_image(), 16, 8, 32, 24))
    assert OnnxFrameDetector("a", path, labels_kept=["fsk"], providers="cpu").detect(frame) == []
    assert OnnxFrameDetector("b", path, score_threshold=0.99, providers="cpu").detect(frame) == []
    assert len(OnnxFrameDetector("c", path, labels_kept=["tone"], providers="cpu").detect(frame)) == 1


def test_non_contiguous_and_float64_frames_use_the_staging_buffer(tmp_path):
    det = OnnxFrameDetector("fd", frame_detector(tmp_path / "fd.onnx"), providers="cpu")
    image = bright_box(noise_image(), 16, 8, 32, 24).astype(np.float64)
    assert len(det.detect(make_frame(image))) == 1
    wide = np.asfortranarray(bright_box(noise_image(), 16, 8, 32, 24))
    assert len(det.detect(make_frame(wide))) == 1


def test_frame_of_the_wrong_size_fails_that_frame_only(tmp_path):
    det = OnnxFrameDetector("fd", frame_detector(tmp_path / "fd.onnx"), providers="cpu")
    with pytest.raises(InferenceFailed, match="frame is 32x32, the model takes 64x64"):
        det.detect(make_frame(noise_image((32, 32))))
    with pytest.raises(ModelError, match="takes 64x64 frames, the spectrogram makes 128x128"):
        det.warmup((128, 128))


def test_crop_classifier_is_not_a_frame_detector(tmp_path):
    from test_onnx_tiny import crop_classifier

    with pytest.raises(ModelError, match="is a crop_classifier; kind 'onnx' needs a frame_detector"):
        OnnxFrameDetector("fd", crop_classifier(tmp_path / "cc.onnx"))


def test_fixed_batch_graph_is_fed_in_slices(tmp_path):
    path = frame_detector(tmp_path / "fd1.onnx", batch=1)
    model = OrtModel(path, providers="cpu")
    assert model.max_batch == 1
    objectness, class_probs = model.run(np.zeros((3, 1, 64, 64), dtype=np.float32))
    assert objectness.shape == (3, 1, 16, 16) and class_probs.shape == (3, 2, 16, 16)


def test_run_error_becomes_inference_failed(tmp_path):
    model = OrtModel(frame_detector(tmp_path / "fd.onnx"), providers="cpu")
    with pytest.raises(InferenceFailed, match="ONNX Runtime run failed"):
        model.run(np.zeros((1, 1, 64, 64), dtype=np.float64))  # wrong dtype: ORT refuses


def test_output_shape_mismatch_caught_at_warmup(tmp_path):
    # Metadata claims 3 labels; the graph's conv makes 2 channels, declared without a count.
    meta = props("frame_detector", ["tone", "fsk", "unknown"], (64, 64), decoder={"stride": 4})
    path = frame_detector(tmp_path / "fd.onnx", metadata=meta)
    import onnx

    model = onnx.load(str(path))
    dim = model.graph.output[1].type.tensor_type.shape.dim[1]
    dim.ClearField("dim_value")
    dim.dim_param = "C"
    onnx.save(model, str(path))
    # ONNX Runtime infers the channel count from the graph, so this is caught at load; where it
    # cannot infer it, the warm-up run catches it.
    with pytest.raises(
        ModelError, match=r"has 2 classes but rfstream.labels names 3|does not fit objectness"
    ):
        OnnxFrameDetector("fd", path, providers="cpu").warmup((64, 64))


def test_provider_selection():
    assert select_providers("cpu") == ["CPUExecutionProvider"]
    auto = select_providers("auto")
    assert auto[-1] == "CPUExecutionProvider"
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert auto == ["CPUExecutionProvider"]
        with pytest.raises(ConfigError, match="CUDAExecutionProvider is not available"):
            select_providers("cuda")
    with pytest.raises(ConfigError, match="is not one of"):
        select_providers("tpu")
