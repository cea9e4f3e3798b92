"""TwoStageDetector: real energy proposals, real crops, one batched ONNX Runtime call."""

from __future__ import annotations

import numpy as np
import pytest
from test_onnx_tiny import crop_classifier, frame_detector, make_frame, noise_image

from rfstream.detect.base import Proposer
from rfstream.detect.energy import EnergyDetector, EnergyOptions, EnergyProposer
from rfstream.detect.two_stage import TwoStageDetector, TwoStageOptions, combine_scores
from rfstream.errors import ModelError


def scene() -> np.ndarray:
    """128x128 noise with a bright square (tone-like to the tiny classifier) and a medium one (fsk)."""
    image = noise_image((128, 128))
    image[10:34, 20:44] = 1.0
    image[70:94, 80:104] = 0.55
    return image


class CountingClassifier:
    """Wraps the real ORT classifier to count calls and batch sizes (the batching is the point)."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def run(self, batch):
        self.batches.append(batch.shape[0])
        return self.inner.run(batch)


def two_stage(tmp_path, **kwargs) -> TwoStageDetector:
    path = crop_classifier(tmp_path / "cc.onnx")
    options = TwoStageOptions(providers="cpu", threads=1, **kwargs.pop("options", {}))
    proposer = kwargs.pop("proposer", None) or EnergyProposer()
    return TwoStageDetector("ts", proposer, path, options=options, **kwargs)


def test_labels_each_proposal_in_one_batched_call(tmp_path):
    det = two_stage(tmp_path)
    det.warmup((128, 128))
    det.classifier = CountingClassifier(det.classifier)
    frame = make_frame(scene(), rate=2e6, fc=433e6)
    found = sorted(det.detect(frame), key=lambda d: d.y0)
    assert det.classifier.batches == [2]  # both crops, one call
    assert [d.label for d in found] == ["tone", "fsk"]
    tone = found[0]
    assert 18 <= tone.x0 <= 20 and 44 <= tone.x1 <= 46 and 8 <= tone.y0 <= 10 and 34 <= tone.y1 <= 36
    assert tone.f_low_hz == pytest.approx(frame.f0_hz + tone.x0 * frame.df_hz)
    assert tone.t_stop_s == pytest.approx(frame.t0_s + tone.y1 * frame.dt_s)
    assert all(d.detector == "ts" and 0 < d.score <= 1 for d in found)


def test_background_proposals_are_dropped_unless_kept(tmp_path):
    image = noise_image((128, 128))
    image[40:60, 40:60] = 0.2  # a faint blob: energy sees it, the classifier calls it unknown
    frame = make_frame(image)
    assert len(EnergyDetector().detect(frame)) == 1
    assert two_stage(tmp_path).detect(frame) == []
    kept = two_stage(tmp_path, options={"keep_unknown": True}).detect(frame)
    assert [d.label for d in kept] == ["unknown"]


def test_labels_kept_and_threshold(tmp_path):
    frame = make_frame(scene())
    assert [d.label for d in two_stage(tmp_path, labels_kept=["fsk"]).detect(frame)] == ["fsk"]
    assert two_stage(tmp_path, score_threshold=0.999).detect(frame) == []
    assert two_stage(tmp_path).detect(make_frame(noise_image((128, 128), seed=3))) == []


def test_score_combination():
    np.testing.assert_allclose(combine_scores([0.64, 0.0, 1.0], [0.25, 1.0, 1.0], 0.5), [0.4, 0.0, 1.0])
    np.testing.assert_allclose(combine_scores([0.3], [0.9], 1.0), [0.9])
    np.testing.assert_allclose(combine_scores([0.3], [0.9], 0.0), [0.3])


def test_frame_detector_model_is_refused(tmp_path):
    with pytest.raises(ModelError, match="is a frame_detector; kind 'two_stage' needs a crop_classifier"):
        TwoStageDetector("ts", EnergyProposer(), frame_detector(tmp_path / "fd.onnx"))


def test_energy_and_two_stage_share_one_proposal_pass_per_frame(tmp_path, monkeypatch):
    """One proposer handed to both detectors computes each frame once, whichever asks first."""
    from rfstream.detect.fanout import FanOut

    calls = []
    original = EnergyProposer._candidates

    def counting(self, *args, **kwargs):
        calls.append(id(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EnergyProposer, "_candidates", counting)
    shared = EnergyProposer()
    assert isinstance(shared, Proposer)
    energy, ts = EnergyDetector("energy", proposer=shared), two_stage(tmp_path, proposer=shared)
    with FanOut([energy, ts]) as fan:
        for seq in range(3):
            results, _ = fan.run(make_frame(scene(), rate=2e6, fc=433e6, seq=seq))
            assert len(results["energy"]) == 2 and len(results["ts"]) == 2
    assert calls == [id(shared)] * 3  # one pass per frame


def test_detectors_with_their_own_proposers_compute_separately(tmp_path, monkeypatch):
    calls = []
    original = EnergyProposer._candidates
    monkeypatch.setattr(EnergyProposer, "_candidates", lambda self, *a: calls.append(1) or original(self, *a))
    frame = make_frame(scene(), rate=2e6, fc=433e6)
    energy = EnergyDetector("energy", EnergyOptions(seed_sigma=6.0))
    ts = two_stage(tmp_path)
    assert len(energy.detect(frame)) == 2 and len(ts.detect(frame)) == 2
    assert len(calls) == 2


def test_an_energy_detector_is_a_proposer_sharing_its_own(tmp_path):
    # raw SNR scores (no calibration), so 0.9 is above every box of this scene
    energy = EnergyDetector("energy", EnergyOptions(calibration="none"), score_threshold=0.9)
    assert isinstance(energy, Proposer)
    ts = two_stage(tmp_path, proposer=energy)
    frame = make_frame(scene(), rate=2e6, fc=433e6)
    assert energy.detect(frame) == [] and len(ts.detect(frame)) == 2


def test_a_shared_proposer_applies_each_detectors_own_threshold(tmp_path):
    shared = EnergyProposer(EnergyOptions(calibration="none"))  # raw SNR scores: both below 0.9
    frame = make_frame(scene(), rate=2e6, fc=433e6)
    strict = EnergyDetector("strict", proposer=shared, score_threshold=0.9)
    ts = two_stage(tmp_path, proposer=shared)
    assert strict.detect(frame) == []  # both boxes score below 0.9 on energy alone
    assert len(ts.detect(frame)) == 2  # the proposals the two-stage sees are not thresholded
