"""The models shipped in rfstream/models/: they load, carry the contract's metadata, and work.

No torch needed: ONNX Runtime, the real synthesizer and the real spectrogram stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import rfstream
from rfstream.config import SpectrogramConfig
from rfstream.detect.crops import extract_crops
from rfstream.detect.decode import decode_frame_detector
from rfstream.dsp.spectrogram import Spectrogrammer
from rfstream.labels import LABELS
from rfstream.sources.synth import render_capture
from rfstream.train.dataset import box_iou, frame_boxes
from rfstream.types import Chunk

MODELS = Path(rfstream.__file__).parent / "models"
RATE = 10e6
CENTER = 2.44e9


def _metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _strong_frame(seed: int):
    """One 200 ms frame of a synthetic capture (evaluation seed range) with strong signals.

    One transmitter of each family, ideal waveforms in white noise (no channel or receiver
    effects): the scene these checks were written for.
    """
    iq = np.empty(int(0.2 * RATE), np.complex64)
    anns = render_capture(iq, RATE, seed=seed, snr_db_range=(18.0, 30.0), realism="clean", density="medium")
    chunk = Chunk(iq, RATE, CENTER, start_sample=0, seq=0, arrived_ns=0)
    frame = Spectrogrammer(SpectrogramConfig()).process(chunk)

    class A:  # the Annotation fields frame_boxes reads
        def __init__(self, a):
            self.t_start_s, self.t_stop_s = a.sample_start / RATE, (a.sample_start + a.sample_count) / RATE
            self.f_low_hz, self.f_high_hz, self.label = CENTER + a.f_low_hz, CENTER + a.f_high_hz, a.label

    return frame, frame_boxes(frame, [A(a) for a in anns])


@pytest.fixture(scope="module")
def strong_frames():
    """Ten such frames (seeds 1-10): one frame's handful of signals says little about a model."""
    return [_strong_frame(seed) for seed in range(1, 11)]


def big_boxes(truth):
    """Signals big enough to see: at least 8 rows and 4 columns of the frame."""
    return [b for b in truth if b["y_max"] - b["y_min"] >= 8 and b["x_max"] - b["x_min"] >= 4]


@pytest.mark.parametrize(
    ("name", "task", "size"),
    [
        ("frame_detector.onnx", "frame_detector", [1024, 1024]),
        ("crop_classifier.onnx", "crop_classifier", [64, 64]),
    ],
)
def test_shipped_model_metadata(name, task, size):
    path = MODELS / name
    assert path.exists(), f"{path} is not shipped"
    assert path.stat().st_size < 4 * 2**20  # a few MB at most
    meta = _metadata(path)
    assert meta["rfstream.format"] == "1" and meta["rfstream.task"] == task
    labels = json.loads(meta["rfstream.labels"])
    assert labels == list(LABELS)
    assert json.loads(meta["rfstream.input_size"]) == size
    norm = json.loads(meta["rfstream.normalisation"])
    cfg = SpectrogramConfig()
    assert (norm["dynamic_range_db"], norm["floor_offset_db"], norm["nfft"]) == (
        cfg.dynamic_range_db,
        cfg.floor_offset_db,
        cfg.nfft,
    )
    assert 0.0 < float(meta["rfstream.score_threshold"]) < 1.0
    training = json.loads(meta["rfstream.training"])
    assert training["frames"] > 0 and all(1000 <= s <= 1999 for s in training["synthetic_seeds"])
    model = onnx.load(str(path))
    assert model.opset_import[0].version >= 17
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param  # dynamic batch axis
    if task == "frame_detector":
        assert json.loads(meta["rfstream.decoder"])["stride"] == 4


def test_frame_detector_finds_strong_signals(strong_frames):
    path = MODELS / "frame_detector.onnx"
    meta = _metadata(path)
    labels = json.loads(meta["rfstream.labels"])
    decoder = json.loads(meta["rfstream.decoder"])
    session = _session(path)
    found_all, right_label = [], []
    for frame, truth in strong_frames:
        obj, probs = session.run(None, {"image": frame.image[None, None]})
        assert obj.shape == (1, 1, 256, 256) and probs.shape == (1, len(labels), 256, 256)
        dets = decode_frame_detector(
            obj[0], probs[0], frame, labels=labels, score_threshold=0.3, detector_name="fd", **decoder
        )
        big = big_boxes(truth)
        t = np.array([[b["x_min"], b["y_min"], b["x_max"], b["y_max"]] for b in big]).reshape(-1, 4)
        d = np.array([[x.x0, x.y0, x.x1, x.y1] for x in dets]).reshape(-1, 4)
        iou = box_iou(t, d)
        found = iou.max(axis=1) >= 0.5 if len(d) else np.zeros(len(t), bool)
        found_all.extend(found.tolist())
        best = iou.argmax(axis=1) if len(d) else np.zeros(len(t), int)
        right_label += [big[i]["label"] == dets[best[i]].label for i in np.flatnonzero(found)]
    assert len(found_all) >= 50
    assert np.mean(found_all) >= 0.6, f"found {sum(found_all)} of {len(found_all)} strong signals"
    assert np.mean(right_label) >= 0.6, f"{sum(right_label)} of {len(right_label)} labelled right"


def test_crop_classifier_labels_strong_signals(strong_frames):
    session = _session(MODELS / "crop_classifier.onnx")
    pairs = []
    for frame, truth in strong_frames:
        big = big_boxes(truth)
        boxes = np.array([[b["x_min"], b["y_min"], b["x_max"], b["y_max"]] for b in big]).reshape(-1, 4)
        (probs,) = session.run(None, {"crops": extract_crops(frame.image, boxes)})
        assert probs.shape == (len(big), len(LABELS)) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
        pairs += [(LABELS[i], b["label"]) for i, b in zip(probs.argmax(axis=1), big, strict=True)]
    right = np.mean([p == t for p, t in pairs])
    assert right >= 0.6, pairs
    # background crops (pure noise regions) are "unknown" more often than not
    noise = np.array([[x, 900, x + 30, 1000] for x in range(0, 1000, 100)], float)
    crops = extract_crops(np.random.default_rng(0).normal(0.12, 0.03, (1024, 1024)).astype(np.float32), noise)
    (probs,) = _session(MODELS / "crop_classifier.onnx").run(None, {"crops": crops})
    assert np.mean(probs.argmax(axis=1) == LABELS.index("unknown")) >= 0.5
