"""TensorRT backend. Engine tests need TensorRT + a CUDA GPU and skip cleanly without them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_onnx_tiny import crop_classifier, frame_detector, make_frame, noise_image

from rfstream.detect import models
from rfstream.detect.tensorrt import _calibration_batches
from rfstream.dsp.backend import cuda_available
from rfstream.errors import ModelError


def _tensorrt():
    pytest.importorskip("cupy")
    trt = pytest.importorskip("tensorrt")
    if not cuda_available():
        pytest.skip("no CUDA device")
    return trt


def test_without_tensorrt_the_backend_is_a_clear_model_error(tmp_path):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    from rfstream.detect.tensorrt import TensorRTFrameDetector

    onnx_path = frame_detector(tmp_path / "fd.onnx")
    engine = tmp_path / "fd.engine"
    engine.write_bytes(b"x")
    target = models.EngineTarget("GPU", "8.7", "10.0.0")
    models.write_engine_sidecar(engine, onnx_path, target, precision="fp16")
    with pytest.raises(ModelError, match="needs tensorrt and cupy"):
        TensorRTFrameDetector("trt", engine)


def test_calibration_inputs_from_png_and_npy(tmp_path):
    for i in range(5):
        Image.fromarray((noise_image((64, 64), seed=i) * 255).astype(np.uint8)).save(tmp_path / f"f{i}.png")
    np.save(tmp_path / "more.npy", np.zeros((3, 64, 64), dtype=np.float32))
    batches = _calibration_batches(tmp_path, (64, 64), batch=4)
    assert [b.shape for b in batches] == [(4, 1, 64, 64), (4, 1, 64, 64)]
    assert 0.05 < float(batches[0][1:].mean()) < 0.2  # PNG scaled to [0, 1]
    np.save(tmp_path / "bad.npy", np.zeros((10, 10), dtype=np.float32))
    with pytest.raises(ModelError, match=r"bad.npy is not 64x64"):
        _calibration_batches(tmp_path, (64, 64), batch=4)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=r"has no .png or .npy"):
        _calibration_batches(empty, (64, 64), 4)


@pytest.mark.tensorrt
def test_engine_build_and_run_matches_onnx_runtime(tmp_path):
    _tensorrt()
    from rfstream.detect.onnx import OnnxFrameDetector
    from rfstream.detect.tensorrt import TensorRTFrameDetector

    onnx_path = frame_detector(tmp_path / "fd.onnx")
    engine = models.build_engine(onnx_path, fp16=False)
    assert models.sidecar_path(engine).is_file()
    resolved = models.resolve_model("fd", search_dirs=[tmp_path])
    assert resolved.kind == "engine" and resolved.warnings == ()
    trt_det = TensorRTFrameDetector("trt", engine)
    trt_det.warmup((64, 64))
    ort_det = OnnxFrameDetector("ort", onnx_path, providers="cpu")
    image = noise_image()
    image[8:24, 16:32] = 0.9
    import cupy as cp

    for img in (image, cp.asarray(image)):  # host frame (staged) and device frame (zero-copy)
        got = trt_det.detect(make_frame(img))
        want = ort_det.detect(make_frame(image))
        assert [(d.x0, d.y0, d.x1, d.y1, d.label) for d in got] == [
            (d.x0, d.y0, d.x1, d.y1, d.label) for d in want
        ]
        assert got[0].score == pytest.approx(want[0].score, abs=1e-3)
    trt_det.close()


@pytest.mark.tensorrt
def test_classifier_engine_batches(tmp_path):
    _tensorrt()
    from rfstream.detect.tensorrt import TensorRTModel

    onnx_path = crop_classifier(tmp_path / "cc.onnx")
    engine = models.build_engine(onnx_path, fp16=False, max_batch=4)
    model = TensorRTModel(engine)
    crops = np.stack([np.full((1, 64, 64), v, dtype=np.float32) for v in (0.8, 0.3, 0.1, 0.8, 0.3, 0.1)])
    (probs,) = model.run(crops)  # 6 > max batch 4: two enqueues
    assert list(probs.argmax(axis=1)) == [0, 1, 2, 0, 1, 2]
    model.close()
