"""Tiny hand-built ONNX models carrying rfstream metadata, for the inference tests.

They do not depend on any trained weights: the frame detector average-pools the
image (objectness = mean brightness of a stride×stride cell) and a fixed 1×1 conv
+ softmax turns that into two classes (bright → "tone", dim → "unknown"); the crop
classifier does the same on the mean of each crop. Other test modules import the
builders from here; the tests below check the builders themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from rfstream.types import Chunk, Frame

NORMALISATION = {"dynamic_range_db": 50.0, "floor_offset_db": 6.0, "nfft": 4096}
FRAME_LABELS = ["tone", "unknown"]
CROP_LABELS = ["tone", "fsk", "unknown"]


def props(
    task: str, labels, input_size, *, decoder=None, threshold=0.3, normalisation=None
) -> dict[str, str]:
    out = {
        "rfstream.format": "1",
        "rfstream.task": task,
        "rfstream.labels": json.dumps(list(labels)),
        "rfstream.input_size": json.dumps(list(input_size)),
        "rfstream.normalisation": json.dumps(normalisation or NORMALISATION),
        "rfstream.score_threshold": str(threshold),
        "rfstream.training": json.dumps({"note": "hand-built test model"}),
    }
    if decoder is not None:
        out["rfstream.decoder"] = json.dumps(decoder)
    return out


def _save(graph: onnx.GraphProto, path: Path, metadata: dict[str, str] | None) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.17
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def frame_detector(
    path: Path,
    *,
    size: tuple[int, int] = (64, 64),
    stride: int = 4,
    batch: int | str = "N",
    metadata: dict[str, str] | None = None,
    with_metadata: bool = True,
    sleep_like_work: int = 0,
) -> Path:
    """image[N,1,H,W] -> objectness = avgpool(image), class_probs = softmax(conv1x1(objectness)).

    ``sleep_like_work`` > 0 adds that many chained 3×3 convolutions on the full image (real
    CPU work, for the fan-out tests) whose result is multiplied by 0 into objectness.
    """
    h, w = size
    nodes = [
        helper.make_node(
            "AveragePool", ["image"], ["objectness"], kernel_shape=[stride, stride], strides=[stride, stride]
        ),
        helper.make_node("Conv", ["objectness", "cw", "cb"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["class_probs"], axis=1),
    ]
    inits = [
        numpy_helper.from_array(np.array([[[[20.0]]], [[[-20.0]]]], dtype=np.float32), "cw"),
        numpy_helper.from_array(np.array([-10.0, 10.0], dtype=np.float32), "cb"),
    ]
    if sleep_like_work:
        nodes[0] = helper.make_node(
            "AveragePool",
            ["image_w"],
            ["objectness"],
            kernel_shape=[stride, stride],
            strides=[stride, stride],
        )
        inits.append(numpy_helper.from_array(np.full((1, 1, 3, 3), 0.1, dtype=np.float32), "k"))
        inits.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"))
        prev = "image"
        for i in range(sleep_like_work):
            nodes.append(helper.make_node("Conv", [prev, "k"], [f"c{i}"], pads=[1, 1, 1, 1]))
            prev = f"c{i}"
        work = [
            helper.make_node("Mul", [prev, "zero"], ["nothing"]),
            helper.make_node("Add", ["image", "nothing"], ["image_w"]),
        ]
        nodes = nodes[3:] + work + nodes[:3]  # topological order: the work first
    graph = helper.make_graph(
        nodes,
        "tiny_frame_detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 1, h, w])],
        [
            helper.make_tensor_value_info(
                "objectness", TensorProto.FLOAT, [batch, 1, h // stride, w // stride]
            ),
            helper.make_tensor_value_info(
                "class_probs", TensorProto.FLOAT, [batch, 2, h // stride, w // stride]
            ),
        ],
        inits,
    )
    meta = (
        metadata
        if metadata is not None
        else props("frame_detector", FRAME_LABELS, size, decoder={"stride": stride, "refine": False})
    )
    return _save(graph, path, meta if with_metadata else None)


def crop_classifier(path: Path, *, size: int = 64, metadata: dict[str, str] | None = None) -> Path:
    """crops[N,1,S,S] -> probs = softmax(mean(crop) * a + b): bright → tone, medium → fsk, dim → unknown."""
    nodes = [
        helper.make_node("ReduceMean", ["crops"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["m", "ax"], ["m1"]),
        helper.make_node("MatMul", ["m1", "a"], ["l0"]),
        helper.make_node("Add", ["l0", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    # logits(m) = a*m + b: tone wins for m > 0.4, fsk for 0.22 < m < 0.4, unknown below 0.22
    inits = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "ax"),
        numpy_helper.from_array(np.array([[50.0, 25.0, 0.0]], dtype=np.float32), "a"),
        numpy_helper.from_array(np.array([-20.0, -10.0, -4.5], dtype=np.float32), "b"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_crop_classifier",
        [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["N", 1, size, size])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    meta = metadata if metadata is not None else props("crop_classifier", CROP_LABELS, (size, size))
    return _save(graph, path, meta)


def make_frame(image: np.ndarray, *, rate: float = 1e6, fc: float = 100e6, seq: int = 0) -> Frame:
    h, w = image.shape
    hop = 2048  # one STFT slice per row, as the spectrogram's geometry would say for this image
    chunk = Chunk(
        iq=np.zeros(h * hop, dtype=np.complex64),
        sample_rate_hz=rate,
        center_freq_hz=fc,
        start_sample=seq * h * hop,
        seq=seq,
        arrived_ns=0,
    )
    return Frame(
        image=image, t0_s=chunk.start_s, dt_s=hop / rate, f0_hz=fc - rate / 2, df_hz=rate / w, chunk=chunk
    )


def noise_image(size=(64, 64), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0.12, 0.02, size=size), 0, 1).astype(np.float32)


# --- the builders themselves ----------------------------------------------------------------------
def test_frame_detector_graph_runs_with_dynamic_batch(tmp_path):
    path = frame_detector(tmp_path / "fd.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.zeros((3, 1, 64, 64), dtype=np.float32)
    x[:, :, 8:16, 20:28] = 0.9
    objectness, class_probs = session.run(None, {"image": x})
    assert objectness.shape == (3, 1, 16, 16) and class_probs.shape == (3, 2, 16, 16)
    assert objectness[0, 0, 2, 5] > 0.85 and class_probs[0, 0, 2, 5] > 0.99  # bright cell: tone
    assert class_probs[0, 1, 0, 0] > 0.99  # dark cell: unknown
    assert session.get_modelmeta().custom_metadata_map["rfstream.task"] == "frame_detector"


def test_crop_classifier_graph_separates_brightness(tmp_path):
    path = crop_classifier(tmp_path / "cc.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    crops = np.stack([np.full((1, 64, 64), v, dtype=np.float32) for v in (0.8, 0.3, 0.1)])
    (probs,) = session.run(None, {"crops": crops})
    assert probs.shape == (3, 3)
    assert list(probs.argmax(axis=1)) == [0, 1, 2]
