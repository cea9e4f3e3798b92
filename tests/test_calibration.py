"""Score calibration: fitting, the operating threshold, and the model-metadata round trip."""

from __future__ import annotations

import numpy as np
import pytest

from rfstream.detect.calibration import (
    IDENTITY,
    Calibration,
    CalibrationError,
    expected_calibration_error,
    fit_platt,
    max_f1_threshold,
)
from rfstream.detect.models import ModelError, ModelMetadata, packaged_model_dir, read_metadata


def _overconfident(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores that say 0.9 where the truth is right 60 % of the time, 0.2 where it is 10 %."""
    rng = np.random.default_rng(seed)
    raw = np.where(rng.random(n) < 0.5, 0.9, 0.2)
    correct = rng.random(n) < np.where(raw > 0.5, 0.6, 0.1)
    return raw, correct


def test_platt_fit_makes_an_overconfident_score_honest():
    raw, correct = _overconfident(4000)
    model = fit_platt(raw, correct)
    cal = Calibration(per_label={"psk": model})
    after = cal.scores(["psk"] * raw.size, raw)
    assert abs(cal.score("psk", 0.9) - 0.6) < 0.05
    assert abs(cal.score("psk", 0.2) - 0.1) < 0.05
    assert expected_calibration_error(after, correct) < 0.03 < expected_calibration_error(raw, correct)
    assert cal.score("fm", 0.9) == pytest.approx(0.9, abs=1e-6)  # unfitted labels: identity


def test_max_f1_threshold_cuts_between_the_populations():
    scores = np.array([0.95, 0.9, 0.85, 0.3, 0.2, 0.1])
    correct = np.array([True, True, True, False, False, False])
    cut, f1 = max_f1_threshold(scores, correct, n_truth=3)
    assert cut == pytest.approx(0.85) and f1 == pytest.approx(1.0)


def test_round_trip_through_model_metadata():
    props = read_metadata(packaged_model_dir() / "frame_detector.onnx").to_props()
    raw, correct = _overconfident(500)
    cal = Calibration(per_label={"psk": fit_platt(raw, correct)}, threshold=0.42, fitted_on={"boxes": 500})
    props["rfstream.calibration"] = cal.to_json()
    meta = ModelMetadata.from_props(props, "test.onnx")
    assert meta.calibration == cal
    assert ModelMetadata.from_props(meta.to_props(), "again.onnx").calibration == cal


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "[]",
        '{"form": "isotonic"}',
        '{"form": "platt", "threshold": 2}',
        '{"form": "platt", "per_label": {"psk": {"features": ["a"], "weights": [1, 2]}}}',
        '{"form": "platt", "per_label": {"nosuchlabel": {"features": ["logit_score", "bias"], "weights": [1, 0]}}}',
    ],
)
def test_a_bad_calibration_record_is_a_model_error(text):
    props = read_metadata(packaged_model_dir() / "frame_detector.onnx").to_props()
    props["rfstream.calibration"] = text
    with pytest.raises(ModelError, match=r"rfstream\.calibration"):
        ModelMetadata.from_props(props, "bad.onnx")


def test_identity_is_the_default():
    assert Calibration().is_identity and Calibration().default == IDENTITY
    with pytest.raises(CalibrationError):
        Calibration.from_json('{"form": "platt", "default": {"features": [], "weights": []}}')


def test_precision_threshold_is_the_lowest_cut_reaching_the_target():
    from rfstream.detect.calibration import precision_threshold

    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    right = np.array([1, 1, 0, 1, 0, 0])
    assert precision_threshold(scores, right, 0.75) == 0.6  # 3 of the top 4
    assert precision_threshold(scores, right, 1.0) == 0.8
    assert precision_threshold(scores, np.zeros(6), 0.5) is None
    assert precision_threshold(np.array([]), np.array([]), 0.5) is None
    # equal scores cannot be cut apart: the cut lies below the whole run
    assert precision_threshold(np.array([0.9, 0.5, 0.5]), np.array([1, 1, 0]), 0.9) == 0.9
