"""Scoring with hand-made cases whose P/R/F1/AP are known."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from rfstream.eval import EvalReport, average_precision, evaluate, filter_by_snr, split_by_snr
from rfstream.types import Detection


@dataclass(frozen=True)
class Truth:
    t_start_s: float
    t_stop_s: float
    f_low_hz: float
    f_high_hz: float
    label: str
    snr_db: float | None = None


def det(t0, t1, f0, f1, score, label="unknown") -> Detection:
    return Detection(
        x0=0,
        y0=0,
        x1=1,
        y1=1,
        t_start_s=t0,
        t_stop_s=t1,
        f_low_hz=f0,
        f_high_hz=f1,
        score=score,
        label=label,
        detector="test",
    )


T = [
    Truth(0, 1, 0, 10, "fm"),
    Truth(2, 3, 20, 30, "psk"),
    Truth(4, 5, 40, 50, "fm"),
    Truth(6, 7, 60, 70, "psk"),
]


def exact(t: Truth, score: float, label: str = "unknown") -> Detection:
    return det(t.t_start_s, t.t_stop_s, t.f_low_hz, t.f_high_hz, score, label)


def test_perfect():
    r = evaluate(T, [exact(t, 0.9) for t in T]).at(0.5).overall
    assert (r.tp, r.fp, r.fn, r.precision, r.recall, r.f1, r.ap) == (4, 0, 0, 1.0, 1.0, 1.0, 1.0)


def test_half_found_with_false_positives_ranked_in_between():
    dets = [exact(T[0], 0.9), det(10, 11, 0, 10, 0.8), exact(T[1], 0.7), det(12, 13, 0, 10, 0.6)]
    r = evaluate(T, dets).at(0.5).overall
    assert (r.tp, r.fp, r.fn) == (2, 2, 2)
    assert (r.precision, r.recall, r.f1) == (0.5, 0.5, 0.5)
    # PR points: (0.25, 1), (0.25, .5), (0.5, 2/3), (0.5, .5): AP = 0.25*1 + 0.25*2/3.
    assert r.ap == pytest.approx(0.25 + 0.25 * 2 / 3)


def test_none_found_and_empty_sides():
    r = evaluate(T, [det(10, 11, 0, 10, 0.5)]).at(0.5).overall
    assert (r.tp, r.fp, r.fn, r.precision, r.recall, r.f1, r.ap) == (0, 1, 4, 0.0, 0.0, 0.0, 0.0)
    r = evaluate(T, []).at(0.5).overall
    assert (r.precision, r.recall, r.f1, r.ap) == (None, 0.0, 0.0, 0.0)
    r = evaluate([], [det(0, 1, 0, 1, 0.5)]).at(0.5).overall
    assert (r.precision, r.recall, r.f1, r.ap) == (0.0, None, 0.0, None)
    r = evaluate([], []).at(0.5).overall
    assert (r.precision, r.recall, r.f1, r.ap) == (None, None, None, None)


def test_duplicates_are_false_positives():
    dets = [exact(T[0], 0.9), exact(T[0], 0.8), exact(T[0], 0.7)]
    r = evaluate(T[:1], dets).at(0.5).overall
    assert (r.tp, r.fp, r.precision, r.recall, r.ap) == (1, 2, 1 / 3, 1.0, 1.0)


def test_iou_threshold_matters():
    # Half the time span: IoU 0.5 with T[0] ... a third: IoU 1/3, found at 0.25 but not at 0.5.
    dets = [det(0, 0.5, 0, 10, 0.9), det(2, 2 + 1 / 3, 20, 30, 0.8)]
    report = evaluate(T[:2], dets, (0.5, 0.25))
    assert report.at(0.5).overall.tp == 1 and report.at(0.25).overall.tp == 2
    assert report.at(0.25).mean_iou == pytest.approx((0.5 + 1 / 3) / 2)
    with pytest.raises(KeyError):
        report.at(0.75)


def test_per_label_aware_and_agnostic():
    dets = [exact(T[0], 0.9, "fm"), exact(T[1], 0.8, "fm"), exact(T[2], 0.7, "fm"), exact(T[3], 0.6, "psk")]
    aware = evaluate(T, dets, label_aware=True).at(0.5)
    assert aware.overall.tp == 3  # T[1] is psk, detected as fm: no match in label-aware mode
    fm, psk = aware.per_label["fm"], aware.per_label["psk"]
    assert (fm.tp, fm.fp, fm.fn, fm.precision, fm.recall) == (2, 1, 0, 2 / 3, 1.0)
    assert (psk.tp, psk.fp, psk.fn, psk.precision, psk.recall) == (1, 0, 1, 1.0, 0.5)
    agnostic = evaluate(T, dets, label_aware=False).at(0.5)
    assert agnostic.overall.tp == 4 and agnostic.per_label["psk"].recall == 1.0
    # The energy detector's "unknown" detections switch to agnostic by default; per-label
    # recall is against truth labels, precision is undefined.
    energy = evaluate(T, [exact(T[0], 0.9), exact(T[1], 0.8), exact(T[3], 0.7)])
    assert not energy.label_aware
    r = energy.at(0.5)
    assert (r.per_label["fm"].recall, r.per_label["psk"].recall) == (0.5, 1.0)
    assert r.per_label["fm"].precision is None and r.per_label["fm"].ap is None


def test_ignored_truth_and_snr_filter():
    truth = [Truth(0, 1, 0, 10, "fm", 20.0), Truth(2, 3, 20, 30, "fm", 2.0), Truth(4, 5, 40, 50, "fm")]
    scored, ignored = split_by_snr(truth, 6.0)
    assert scored == [truth[0], truth[2]] and ignored == [truth[1]]
    assert filter_by_snr(truth, 6.0) == scored
    dets = [exact(truth[0], 0.9), exact(truth[1], 0.8)]
    plain = evaluate(scored, dets).at(0.5)
    assert (plain.overall.tp, plain.overall.fp) == (1, 1)
    kind = evaluate(scored, dets, ignore=ignored)
    assert (kind.at(0.5).overall.tp, kind.at(0.5).overall.fp, kind.n_ignored_detections) == (1, 0, (1, 1))


def test_average_precision_helper():
    assert average_precision([True, True], 2) == 1.0
    assert average_precision([False, True], 1) == 0.5
    assert average_precision([], 3) == 0.0 and average_precision([True], 0) is None


def test_json_round_trip_and_table():
    dets = [exact(T[0], 0.9, "fm"), det(10, 11, 0, 10, 0.5, "psk")]
    report = evaluate(T, dets, (0.5, 0.25), label_aware=True)
    data = json.loads(json.dumps(report.to_dict()))
    assert data == report.to_dict()
    assert EvalReport.from_dict(data) == report
    table = report.to_table()
    lines = table.splitlines()
    assert lines[0].split() == [
        "IoU",
        "label",
        "truth",
        "dets",
        "TP",
        "FP",
        "FN",
        "prec",
        "recall",
        "F1",
        "AP",
    ]
    assert len({len(line) for line in lines[2:-1]} | {len(lines[0])}) <= 2  # aligned columns
    assert any(line.split()[:2] == ["0.5", "fm"] for line in lines)
    assert "label-aware" in lines[-1]
