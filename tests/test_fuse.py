"""Fusion: one box per signal across detectors, label vote, presence, the publish gate, the config."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rfstream.config import load_config
from rfstream.detect.calibration import Logistic
from rfstream.detect.fuse import (
    ClassNms,
    Fuser,
    FusionModel,
    load_fusion,
    make_merge,
    merge_stage,
    noisy_or,
)
from rfstream.detect.nms import iou_matrix
from rfstream.errors import ConfigError
from rfstream.types import Detection


def det(f0, f1, t0, t1, score, label="unknown", detector="energy"):
    return Detection(f0, t0, f1, t1, t0, t1, f0, f1, score, label, detector)


def boxes(dets):
    return [(d.f_low_hz, d.t_start_s, d.f_high_hz, d.t_stop_s) for d in dets]


def test_one_box_per_signal_with_label_vote_and_alternatives():
    found = [
        det(100, 200, 0.0, 1.0, 0.8, "psk", "frame"),
        det(102, 198, 0.0, 1.0, 0.6, "fm", "classifier"),
        det(101, 199, 0.01, 1.0, 0.7, "unknown", "energy"),
    ]
    (out,) = Fuser(threshold=0.0).process(found)
    assert out.label == "psk"  # 0.8 of the votes for psk, 0.6 for fm
    assert out.found_by == ("classifier", "energy", "frame")
    assert dict(out.alternatives) == {"fm": pytest.approx(out.presence * 0.6 / 1.4, abs=1e-3)}
    assert out.score == pytest.approx(out.presence * 0.8 / 1.4)
    # the box is the score-weighted mean of the members' boxes
    assert out.f_low_hz == pytest.approx((100 * 0.8 + 102 * 0.6 + 101 * 0.7) / 2.1)


def test_independent_detectors_agreeing_raise_presence_correlated_ones_do_not():
    alone = Fuser(threshold=0.0).process([det(0, 10, 0, 1, 0.6, "psk", "frame")])[0]
    with_energy = Fuser(threshold=0.0).process(
        [det(0, 10, 0, 1, 0.6, "psk", "frame"), det(0, 10, 0, 1, 0.6, "unknown", "energy")]
    )[0]
    assert with_energy.presence > alone.presence
    assert with_energy.presence < 1 - 0.4 * 0.4 + 1e-9  # discounted: never beyond full independence
    # energy and classifier share the energy proposals: together they count once
    pair = Fuser(threshold=0.0).process(
        [det(0, 10, 0, 1, 0.6, "unknown", "energy"), det(0, 10, 0, 1, 0.6, "fsk", "classifier")]
    )[0]
    assert pair.presence == pytest.approx(0.6)
    assert noisy_or([0.6, 0.6], 1.0) == pytest.approx(0.84) and noisy_or([], 0.5) == 0.0


def test_energy_alone_is_unknown_with_its_score():
    (out,) = Fuser(threshold=0.0).process([det(0, 10, 0, 1, 0.42)])
    assert out.label == "unknown" and out.score == pytest.approx(0.42) and out.alternatives == ()


def test_two_signals_stay_two_and_labels_do_not_make_duplicates():
    found = [
        det(0, 10, 0, 1, 0.9, "psk", "frame"),
        det(0, 10, 0, 1, 0.8, "fm", "classifier"),  # class NMS would keep both
        det(50, 60, 0, 1, 0.7, "tone", "frame"),
    ]
    out = Fuser(threshold=0.0).process(found)
    assert len(out) == 2
    nms = ClassNms(0.5, True, 0.0, False).process(found)
    assert len(nms) == 3  # the older behaviour, kept as an option


def test_gate_drops_or_marks_low_confidence():
    found = [det(0, 10, 0, 1, 0.9, "psk", "frame"), det(50, 60, 0, 1, 0.2, "tone", "frame")]
    assert [d.label for d in Fuser(threshold=0.5).process(found)] == ["psk"]
    kept = Fuser(threshold=0.5, keep_low_confidence=True).process(found)
    assert [(d.label, d.low_confidence) for d in kept] == [("psk", False), ("tone", True)]


box = st.tuples(
    st.floats(0, 90), st.floats(1, 30), st.floats(0, 0.9), st.floats(0.01, 0.3), st.floats(0.01, 1.0)
).map(lambda t: (t[0], t[0] + t[1], t[2], t[2] + t[3], t[4]))
labelled = st.tuples(
    box, st.sampled_from(["psk", "fm", "unknown"]), st.sampled_from(["frame", "energy", "cls"])
)


@settings(max_examples=60, deadline=None)
@given(st.lists(labelled, max_size=14), st.randoms(use_true_random=False))
def test_fusion_is_order_independent_and_leaves_no_duplicates(items, rnd: random.Random):
    found = [det(b[0], b[1], b[2], b[3], b[4], lbl, name) for b, lbl, name in items]
    fuser = Fuser(threshold=0.0, cluster_iou=0.3)
    out = fuser.process(found)
    shuffled = list(found)
    rnd.shuffle(shuffled)
    again = fuser.process(shuffled)
    assert [(b, d.label, round(d.score, 9)) for b, d in zip(boxes(out), out, strict=True)] == [
        (b, d.label, round(d.score, 9)) for b, d in zip(boxes(again), again, strict=True)
    ]
    if len(out) > 1:
        iou = iou_matrix(boxes(out), boxes(out))
        for i in range(len(out)):
            iou[i, i] = 0.0
        assert iou.max() <= 0.3 + 1e-9


def test_fitted_maps_and_threshold_come_from_the_fusion_file(tmp_path):
    model = FusionModel(
        presence=Logistic(("logit_score", "bias"), (1.0, 1.0)),
        threshold=0.7,
        agreement_weight=0.25,
        fitted_on={"seeds": [200, 201]},
    )
    path = tmp_path / "fusion.json"
    path.write_text(model.to_json())
    assert load_fusion(path) == model
    cfg = load_config(overrides={"merge.fusion_file": str(path)})
    stage = make_merge(cfg.merge)
    assert isinstance(stage, Fuser) and stage.threshold == 0.7
    (out,) = stage.process([det(0, 10, 0, 1, 0.5)])
    assert out.presence == pytest.approx(1 / (1 + 2.718281828**-1.0), rel=1e-6)
    cfg = load_config(overrides={"merge.fusion_file": str(path), "merge.threshold": "0.1"})
    assert make_merge(cfg.merge).threshold == 0.1
    assert merge_stage(cfg.merge) is merge_stage(cfg.merge)  # built once per settings
    import os

    path.write_text(dataclasses.replace(model, threshold=0.3).to_json())  # refitted in place
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    cfg = load_config(overrides={"merge.fusion_file": str(path)})
    assert merge_stage(cfg.merge).threshold == 0.3  # read again at the next chunk


def test_the_shipped_fusion_file_parses_and_has_a_threshold():
    model = load_fusion()
    assert 0.0 < model.threshold < 1.0
    json.loads(FusionModel().to_json())


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("merge.mode", "wbf", "is not one of fuse, class_nms"),
        ("merge.threshold", "1.5", "must lie in"),
        ("merge.cluster_iou", "-0.1", "must lie in"),
    ],
)
def test_bad_merge_settings_name_the_key(key, value, words):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        load_config(overrides={key: value})
    assert words in str(info.value)


def test_an_unreadable_fusion_file_names_the_key(tmp_path):
    bad = tmp_path / "f.json"
    bad.write_text('{"form": "something else"}')
    for path in (bad, tmp_path / "missing.json"):
        cfg = load_config(overrides={"merge.fusion_file": str(path)})
        with pytest.raises(ConfigError, match=r"merge\.fusion_file"):
            make_merge(cfg.merge)


def test_class_nms_mode_is_the_older_merge():
    cfg = load_config(overrides={"merge.mode": "class_nms"})
    stage = make_merge(cfg.merge)
    assert isinstance(stage, ClassNms) and stage.threshold == 0.0


def test_sigmf_annotations_carry_the_fused_fields():
    from rfstream.sinks.sigmf_annotations import detection_annotation

    found = [det(100, 200, 0.0, 1.0, 0.8, "psk", "frame"), det(102, 198, 0.0, 1.0, 0.6, "fm", "classifier")]
    (fused,) = Fuser(threshold=0.0).process(found)
    a = detection_annotation(fused, 1000.0)
    assert a["core:label"] == "psk" and a["rfstream:presence"] == pytest.approx(fused.presence)
    assert set(a["rfstream:alternatives"]) == {"fm"} and "rfstream:group_id" not in a
    assert "rfstream:presence" not in detection_annotation(found[0], 1000.0)  # not fused: as before


def test_a_fusion_file_that_goes_bad_while_running_keeps_the_last_good_stage(tmp_path):
    import os

    path = tmp_path / "fusion.json"
    path.write_text(FusionModel(threshold=0.4).to_json())
    cfg = load_config(overrides={"merge.fusion_file": str(path)})
    good = merge_stage(cfg.merge)
    path.write_text('{"form": "half-writ')  # a refit caught half-way, or a hand edit
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert merge_stage(cfg.merge) is good  # the stream goes on with what it had


def test_a_bad_fusion_file_fails_the_start_in_one_line(tmp_path):
    import subprocess
    import sys

    from rfstream.sources.synth import synthesize

    meta = synthesize(tmp_path / "cap", sample_rate_hz=1e6, duration_s=0.2, seed=1)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rfstream",
            "replay",
            str(meta),
            "--no-publish",
            "--set",
            f"merge.fusion_file={tmp_path / 'missing.json'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("rfstream: error:") and "merge.fusion_file" in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr and "first chunk" not in proc.stderr


def test_a_relative_fusion_file_in_a_config_file_lives_beside_it(tmp_path, monkeypatch):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "fusion.json").write_text(FusionModel(threshold=0.55).to_json())
    conf = tmp_path / "etc" / "rfstream.toml"
    conf.write_text('[merge]\nfusion_file = "fusion.json"\n')
    monkeypatch.chdir(tmp_path)  # not the config's folder
    cfg = load_config(conf)
    assert make_merge(cfg.merge).threshold == 0.55


def test_a_label_measured_on_the_samples_outvotes_the_image_models():
    """A narrow box: the frame detector reads 'tone' from the image (it cannot tell AM from a tone
    in one column), the two-stage detector measured AM on the IQ. AM wins, whatever the scores; the
    image's guess is not even an alternative. Without the measurement the stronger vote wins."""
    f0, f1 = 100e6, 100.01e6
    frame_tone = det(f0, f1, 0.0, 0.2, 0.9, "tone", "frame")
    measured_am = det(f0, f1, 0.0, 0.2, 0.5, "am", "classifier").replace(label_source="iq")
    (out,) = Fuser(threshold=0.0).fuse([frame_tone, measured_am])
    assert out.label == "am" and out.alternatives == ()
    assert set(out.found_by) == {"frame", "classifier"}
    (out,) = Fuser(threshold=0.0).fuse([frame_tone, measured_am.replace(label_source="")])
    assert out.label == "tone" and [lbl for lbl, _ in out.alternatives] == ["am"]


def test_unknown_boxes_are_published_only_without_a_labelling_detector():
    """``merge.unknown``: "auto" holds an unlabelled box back where a detector that labels ran,
    publishes it where only energy detectors ran; "publish" and "low_confidence" say so; class NMS
    publishes."""
    from rfstream.detect.fuse import gate_unknown, publishes_unknown

    default = load_config().merge
    assert not publishes_unknown(default, ["energy", "onnx", "two_stage"])
    assert publishes_unknown(default, ["energy"])  # energy alone, or overload left only it
    assert publishes_unknown(load_config(overrides={"merge.unknown": "publish"}).merge, ["energy", "onnx"])
    held = load_config(overrides={"merge.unknown": "low_confidence"}).merge
    assert not publishes_unknown(held, ["energy"])
    assert publishes_unknown(load_config(overrides={"merge.mode": "class_nms"}).merge, ["energy", "onnx"])
    with pytest.raises(ConfigError, match=r"merge\.unknown"):
        load_config(overrides={"merge.unknown": "sometimes"})
    a = det(1e6, 2e6, 0.0, 0.1, 0.9)
    b = det(3e6, 4e6, 0.0, 0.1, 0.9, "fsk", "classifier")
    assert gate_unknown([a, b], keep_low_confidence=False) == [b]
    marked = gate_unknown([a, b], keep_low_confidence=True)
    assert [d.low_confidence for d in marked] == [True, False]
