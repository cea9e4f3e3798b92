"""Calibrated learned scores: fitted at training time, stored in the model, applied by the detectors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_onnx_tiny import crop_classifier, frame_detector, make_frame, noise_image
from test_two_stage import scene

from rfstream.detect.calibration import PLATT_FEATURES, Calibration, Logistic, expected_calibration_error
from rfstream.detect.energy import EnergyProposer
from rfstream.detect.models import packaged_model_dir, read_metadata
from rfstream.detect.ort import OnnxFrameDetector
from rfstream.detect.two_stage import TwoStageDetector, TwoStageOptions
from rfstream.train.calibrate import (
    VALIDATION_SEEDS,
    Scored,
    calibrate_model,
    fit_calibration,
    validation_recordings,
    write_calibration,
)

# σ(logit(raw) − 2): an overconfident model's scores pulled down (0.9 -> 0.55, 0.5 -> 0.12)
DOWN = Logistic(PLATT_FEATURES, (1.0, -2.0))


def bright(image, x0, y0, x1, y1, value=0.9):
    image = image.copy()
    image[y0:y1, x0:x1] = value
    return image


def test_validation_seeds_are_disjoint_from_training_evaluation_and_int8_frames():
    from rfstream.detect.quantize import CALIBRATION_SEEDS
    from rfstream.train.cli import capture_seed

    training = {capture_seed(s, i) for s in range(10) for i in range(1000)}
    evaluation = set(range(1, 100))  # scripts/eval_suite.py --seeds (synth)
    val = set(VALIDATION_SEEDS)
    assert not val & training and not val & evaluation and not val & set(CALIBRATION_SEEDS)


def test_frame_detector_publishes_calibrated_scores_and_thresholds_on_that_scale(tmp_path):
    path = frame_detector(tmp_path / "fd.onnx")
    frame = make_frame(bright(noise_image(), 16, 8, 32, 24))
    (raw,) = OnnxFrameDetector("raw", path, providers="cpu").detect(frame)
    cal = Calibration(per_label={"tone": DOWN}, threshold=0.05)
    write_calibration(path, cal)
    assert read_metadata(path).calibration == cal
    (calibrated,) = OnnxFrameDetector("cal", path, providers="cpu").detect(frame)
    assert calibrated.score == pytest.approx(cal.score("tone", raw.score), abs=1e-6)
    assert calibrated.score < raw.score - 0.05
    assert (calibrated.x0, calibrated.x1) == (raw.x0, raw.x1)
    # The config's threshold is on the calibrated scale: just above the calibrated score drops it.
    assert (
        OnnxFrameDetector("t", path, score_threshold=calibrated.score + 0.01, providers="cpu").detect(frame)
        == []
    )
    # The calibration's operating threshold is the default: above the box's score, nothing.
    write_calibration(
        path, Calibration(per_label={"tone": DOWN}, threshold=min(1.0, calibrated.score + 0.01))
    )
    assert OnnxFrameDetector("d", path, providers="cpu").detect(frame) == []


def test_two_stage_publishes_calibrated_scores(tmp_path):
    path = crop_classifier(tmp_path / "cc.onnx")
    frame = make_frame(scene(), rate=2e6, fc=433e6)

    def run():
        det = TwoStageDetector(
            "ts", EnergyProposer(), path, options=TwoStageOptions(providers="cpu", threads=1)
        )
        return sorted(det.detect(frame), key=lambda d: d.y0)

    before = run()
    assert [d.label for d in before] == ["tone", "fsk"]
    cal = Calibration(per_label={"tone": DOWN}, threshold=0.01)
    write_calibration(path, cal)
    after = run()
    assert [d.label for d in after] == ["tone", "fsk"]
    assert after[0].score == pytest.approx(cal.score("tone", before[0].score), abs=1e-6)
    assert after[1].score == pytest.approx(before[1].score, abs=1e-6)  # no fit of its own: identity default


def _scored(seed: int = 0) -> Scored:
    """Overconfident raw scores: psk right 30 % at 0.8, tone right 80 % at 0.6, a rare fm label."""
    rng = np.random.default_rng(seed)
    labels, raw, correct = [], [], []
    for label, n, p_of in (
        ("psk", 600, lambda s: 0.3 * s),
        ("tone", 600, lambda s: np.minimum(1.0, 1.2 * s)),
        ("fm", 10, lambda s: s),
    ):
        s = rng.uniform(0.05, 0.95, n)
        labels += [label] * n
        raw.append(s)
        correct.append(rng.random(n) < p_of(s))
    raw_a, correct_a = np.concatenate(raw), np.concatenate(correct)
    capture = rng.integers(0, 6, raw_a.size)
    return Scored(np.array(labels, dtype=object), raw_a, correct_a, capture, int(correct_a.sum()) + 50, {})


def test_fit_per_label_with_a_shared_fallback_and_an_operating_threshold():
    s = _scored()
    cal = fit_calibration(s)
    assert set(cal.per_label) == {"psk", "tone"}  # fm: 10 boxes, shares the default fit
    assert cal.score("psk", 0.8) == pytest.approx(0.24, abs=0.07)
    assert cal.score("tone", 0.6) == pytest.approx(0.72, abs=0.07)
    f = cal.fitted_on
    assert f["ece_calibrated"] < 0.05 < f["ece_raw"]
    assert f["ece_calibrated_heldout"] < f["ece_raw"]
    assert f["ece_raw"] == pytest.approx(expected_calibration_error(s.raw, s.correct), abs=1e-3)
    # Max F1 keeps the confident tones and drops most of the psk boxes.
    assert 0.0 < cal.threshold < 1.0
    published = cal.scores(s.labels, s.raw) >= cal.threshold
    assert published[s.labels == "tone"].mean() > published[s.labels == "psk"].mean()
    assert f["per_label"]["fm"] == {
        "boxes": 10,
        "correct": int(s.correct[s.labels == "fm"].sum()),
        "truth": 0,
        "own_fit": False,
    }


def test_nothing_to_fit_is_a_model_error():
    from rfstream.errors import ModelError

    empty = Scored(np.zeros(0, object), np.zeros(0), np.zeros(0, bool), np.zeros(0, int), 0, {})
    with pytest.raises(ModelError, match="nothing to fit"):
        fit_calibration(empty)


def test_calibrating_the_shipped_frame_detector_on_validation_captures(tmp_path):
    """End to end on real components: synth captures, the daemon's spectrogram and ONNX detector."""
    model = tmp_path / "frame_detector.onnx"
    shutil.copyfile(packaged_model_dir() / "frame_detector.onnx", model)
    recordings = validation_recordings(tmp_path / "val", 2, rates=(5e6,), duration_s=0.4)
    assert [r.name for r in recordings] == [
        "val_3000_5000000_0.4s.sigmf-meta",
        "val_3001_5000000_0.4s.sigmf-meta",
    ]
    cal = calibrate_model(model, recordings, seeds=[3000, 3001])
    meta = read_metadata(model)
    assert meta.calibration == cal and not cal.is_identity
    f = cal.fitted_on
    assert f["captures"] == 2 and f["boxes"] > 0 and 0 < f["correct"] <= f["truth"]
    assert 0.0 <= f["ece_calibrated"] <= f["ece_raw"] + 0.02
    assert 0.0 < cal.threshold < 1.0
