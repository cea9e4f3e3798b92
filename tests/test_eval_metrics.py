"""The metrics beyond P/R/AP, on hand-built cases whose answers are known.

SNR bins, the confusion matrix, duplicates, reliability/ECE, truth widening, the
choice of truth, and the shared matching against a brute-force reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rfstream.eval import (
    FrameTruth,
    _Matching,
    clip_to_frames,
    confusion_matrix,
    count_duplicates,
    evaluate,
    recall_by_snr,
    reliability,
    score_run,
    select_truth,
    widening_note,
    widening_stats,
)
from rfstream.types import Detection


@dataclass(frozen=True)
class Truth:
    t_start_s: float
    t_stop_s: float
    f_low_hz: float
    f_high_hz: float
    label: str
    snr_db: float | None = None
    generator: str = ""


def det(t0, t1, f0, f1, score, label="unknown", seq=0) -> Detection:
    return Detection(0, 0, 1, 1, t0, t1, f0, f1, score, label, "test", chunk_seq=seq)


def on(t: Truth, score: float, label: str | None = None, seq: int = 0) -> Detection:
    return det(t.t_start_s, t.t_stop_s, t.f_low_hz, t.f_high_hz, score, label or t.label, seq)


def grid(labels, snrs=None) -> list[Truth]:
    snrs = snrs or [None] * len(labels)
    return [
        Truth(i, i + 1, 100 * i, 100 * i + 10, lab, s)
        for i, (lab, s) in enumerate(zip(labels, snrs, strict=True))
    ]


# --- recall per SNR bin -------------------------------------------------------------------------
def test_recall_per_snr_bin_counts_each_bin_and_unknown():
    truth = grid(["fm"] * 7, [-3.0, 2.0, 4.0, 7.0, 12.0, 25.0, None])
    found = [on(truth[i], 0.9) for i in (0, 2, 4, 5, 6)]
    bins = {b.name: b for b in recall_by_snr(truth, found)}
    assert [b for b in bins] == ["<0", "0–5", "5–10", "10–20", "≥20", "unknown"]
    assert (bins["<0"].n_truth, bins["<0"].recall) == (1, 1.0)
    assert (bins["0–5"].n_truth, bins["0–5"].tp, bins["0–5"].recall) == (2, 1, 0.5)
    assert (bins["5–10"].n_truth, bins["5–10"].recall) == (1, 0.0)
    assert bins["10–20"].recall == 1.0 and bins["≥20"].recall == 1.0 and bins["unknown"].recall == 1.0
    # the edges are half-open: 5.0 dB falls in 5–10, 20.0 dB in ≥20
    edge = recall_by_snr(grid(["fm", "fm"], [5.0, 20.0]), [])
    assert [b.n_truth for b in edge] == [0, 0, 1, 0, 1]


def test_recall_per_snr_bin_label_aware_needs_the_label():
    truth = grid(["fm", "psk"], [12.0, 12.0])
    found = [on(truth[0], 0.9, "psk"), on(truth[1], 0.8)]
    assert recall_by_snr(truth, found, label_aware=False)[3].recall == 1.0
    assert recall_by_snr(truth, found, label_aware=True)[3].recall == 0.5


# --- confusion matrix -----------------------------------------------------------------------------
def test_confusion_matrix_rows_columns_missed_and_false_alarms():
    truth = grid(["fm", "fm", "psk", "ook"])
    found = [
        on(truth[0], 0.9, "fm"),
        on(truth[1], 0.8, "psk"),  # an fm signal called psk
        on(truth[2], 0.7, "psk"),
        det(50, 51, 0, 10, 0.6, "tone"),  # nothing there
        det(60, 61, 0, 10, 0.5, "psk"),
        on(truth[0], 0.4, "fm"),  # a second box on truth 0: a false alarm too
    ]
    c = confusion_matrix(truth, found)
    assert c.counts == {"fm": {"fm": 1, "psk": 1}, "ook": {}, "psk": {"psk": 1}}
    assert c.missed == {"fm": 0, "ook": 1, "psk": 0}
    assert c.false_alarm == {"tone": 1, "psk": 1, "fm": 1}
    header, rows = c.rows()
    assert header == ["truth \\ detected", "fm", "psk", "tone", "missed"]
    assert rows[-1] == ["false alarm", "1", "1", "1", "-"]
    # every detection lands in exactly one cell
    total = sum(sum(r.values()) for r in c.counts.values()) + sum(c.false_alarm.values())
    assert total == len(found)
    assert "false alarm" in c.to_table()


def test_confusion_ignores_detections_of_ignored_truth():
    truth, weak = grid(["fm"]), [Truth(5, 6, 500, 510, "fm", 1.0)]
    c = confusion_matrix(truth, [on(truth[0], 0.9), on(weak[0], 0.8)], ignore=weak)
    assert c.false_alarm == {} and c.counts == {"fm": {"fm": 1}}


# --- duplicates --------------------------------------------------------------------------------------
def test_duplicates_within_a_chunk_any_label():
    a = det(0, 1, 0, 10, 0.9, "psk")
    b = det(0, 1, 0, 8, 0.8, "fm")  # IoU 0.8 with a, another label: still the same signal twice
    c = det(5, 6, 0, 10, 0.7, "fm")  # elsewhere
    d = det(0, 1, 0, 5, 0.6, "psk")  # IoU 0.5 with a: not above the threshold; 0.625 with b
    dup = count_duplicates([[a, b, c, d]])
    assert (dup.n_boxes, dup.pairs, dup.boxes_in_duplicates) == (4, 2, 3)
    assert (dup.clusters, dup.duplicates) == (2, 2)  # {a, b, d} chained through b, and {c}
    assert dup.rate == pytest.approx(0.5) and dup.per_signal == pytest.approx(1.0)


def test_duplicates_never_across_chunks_and_flat_lists_group_by_chunk_seq():
    a0, a1 = det(0, 1, 0, 10, 0.9, seq=0), det(0, 1, 0, 10, 0.9, seq=1)
    assert count_duplicates([[a0], [a1]]).duplicates == 0
    assert count_duplicates([a0, a1]).duplicates == 0
    assert count_duplicates([a0, a1, det(0, 1, 0, 10, 0.5, seq=1)]).duplicates == 1
    empty = count_duplicates([])
    assert (empty.n_boxes, empty.duplicates, empty.rate, empty.per_signal) == (0, 0, None, None)


def test_score_run_counts_truth_boxed_twice():
    truth = grid(["fm", "psk"])
    found = [on(truth[0], 0.9), on(truth[0], 0.8, "psk", seq=1), on(truth[1], 0.7)]
    rep = score_run(truth, found)
    assert rep.duplicates.truth_boxed_twice == 1
    assert rep.duplicates.duplicates == 0  # the two boxes on truth 0 sit in different chunks


# --- reliability -----------------------------------------------------------------------------------
def test_reliability_bins_and_ece():
    truth = grid(["fm"] * 6)
    found = [on(t, 0.95) for t in truth[:4]]  # four right at 0.95
    found += [det(50 + i, 51 + i, 0, 10, 0.15, "fm") for i in range(4)]  # four wrong at 0.15
    r = reliability(truth, found)
    assert r.n == 8
    by_bin = {round(b.lo, 1): b for b in r.bins}
    assert (by_bin[0.9].n, by_bin[0.9].fraction_correct) == (4, 1.0)
    assert (by_bin[0.1].n, by_bin[0.1].fraction_correct) == (4, 0.0)
    assert by_bin[0.5].n == 0 and by_bin[0.5].mean_score is None
    assert r.ece == pytest.approx((4 * 0.05 + 4 * 0.15) / 8)


def test_reliability_label_aware_agnostic_and_duplicates():
    truth = grid(["fm", "psk"])
    found = [on(truth[0], 0.8, "psk"), on(truth[1], 0.8), on(truth[1], 0.8)]  # mislabelled, right, duplicate
    aware = reliability(truth, found, label_aware=True)
    agnostic = reliability(truth, found, label_aware=False)
    assert aware.bins[8].fraction_correct == pytest.approx(1 / 3)
    assert agnostic.bins[8].fraction_correct == pytest.approx(2 / 3)  # the duplicate is still wrong
    assert reliability([], []).ece is None
    with pytest.raises(ValueError):
        reliability(truth, found, n_bins=0)


def test_perfectly_calibrated_scores_have_small_ece():
    rng = np.random.default_rng(0)
    truth = grid(["fm"] * 4000)
    found = []
    for i, t in enumerate(truth):
        p = rng.uniform()
        found.append(on(t, p) if rng.uniform() < p else det(1e5 + i, 1e5 + i + 1, 0, 10, p, "fm"))
    assert reliability(truth, found).ece < 0.03


# --- truth: which, and widened -------------------------------------------------------------------------
@dataclass(frozen=True)
class FakeFrame:
    t0_s: float = 0.0
    dt_s: float = 0.001
    f0_hz: float = 0.0
    df_hz: float = 1000.0
    height: int = 100
    width: int = 100

    @property
    def t1_s(self) -> float:
        return self.t0_s + self.height * self.dt_s

    @property
    def f1_hz(self) -> float:
        return self.f0_hz + self.width * self.df_hz


def test_truth_is_widened_to_one_column_and_one_row_inside_the_frame():
    frames = [FakeFrame(0.0), FakeFrame(0.1)]
    tone = Truth(0.0, 0.2, 50_000.0, 50_100.0, "tone")  # 100 Hz wide, spans both frames
    pulse = Truth(0.0995, 0.0996, 20_000.0, 30_000.0, "pulsed")  # 0.1 ms at the end of frame 0
    edge = Truth(0.01, 0.02, 99_990.0, 100_000.0, "tone")  # at the top of the band
    wide = Truth(0.01, 0.05, 10_000.0, 40_000.0, "psk")
    pieces = clip_to_frames([tone, pulse, edge, wide], frames)
    by = {(p.label, round(p.t_start_s, 3)): p for p in pieces}
    t0 = by[("tone", 0.0)]
    assert (t0.f_low_hz, t0.f_high_hz, t0.widened) == (49_550.0, 50_550.0, True)  # centred, 1 column
    assert by[("tone", 0.1)].t_start_s == pytest.approx(0.1)  # cut at the frame boundary
    p = by[("pulsed", 0.099)]
    assert (p.t_start_s, p.t_stop_s) == (pytest.approx(0.099), pytest.approx(0.1))  # one row, kept inside
    e = next(x for x in pieces if x.label == "tone" and x.f_high_hz == 100_000.0)
    assert e.f_low_hz == pytest.approx(99_000.0)  # moved down inside the band
    w = by[("psk", 0.01)]
    assert (w.f_low_hz, w.f_high_hz, w.widened) == (10_000.0, 40_000.0, False)
    assert len(pieces) == 5
    note = widening_note(pieces, frames)
    assert "1 column (1 kHz) × 1 row (1000.0 µs)" in note and "4 of 5" in note


def test_pieces_closer_than_one_row_on_one_band_are_joined():
    """A hopper's dwells back to back on one channel, 0.4 rows apart: no row of the frame falls in
    the gaps, so they are one piece (the union, the strongest part's SNR), scored as one signal."""
    frame = FakeFrame()  # 1 ms rows, 1 kHz columns
    dwells = [
        Truth(0.0100 + k * 0.0054, 0.0150 + k * 0.0054, 20_000.0, 30_000.0, "fsk", 8.0 + k) for k in range(3)
    ]
    pieces = clip_to_frames(dwells, [frame], kinds=["fhss"] * 3)
    assert len(pieces) == 1
    (p,) = pieces
    assert (p.t_start_s, p.t_stop_s) == (pytest.approx(0.010), pytest.approx(0.0258))
    assert (p.f_low_hz, p.f_high_hz, p.label, p.snr_db, p.parts, p.kind) == (
        20_000.0,
        30_000.0,
        "fsk",
        10.0,
        3,
        "fhss",
    )
    note = widening_note(pieces, [frame])
    assert "3 pieces less than one row apart on one band joined into 1" in note
    assert widening_stats(pieces) == {"pieces": 1, "widened": 0, "joined": 3, "joined_into": 1}
    found = [det(0.010, 0.026, 20_000.0, 30_000.0, 0.9, "fsk")]  # the one blob the frame shows
    assert evaluate(pieces, found).at(0.5).overall.tp == 1
    assert len(clip_to_frames(dwells, [frame], join=False)) == 3


def test_what_the_frame_can_tell_apart_stays_apart():
    frame = FakeFrame()
    apart = [Truth(0.010, 0.015, 20_000.0, 30_000.0, "fsk"), Truth(0.0165, 0.020, 20_000.0, 30_000.0, "fsk")]
    labels = [Truth(0.010, 0.015, 20_000.0, 30_000.0, "fsk"), Truth(0.0152, 0.020, 20_000.0, 30_000.0, "psk")]
    touching = [
        Truth(0.010, 0.020, 20_000.0, 30_000.0, "psk"),
        Truth(0.010, 0.020, 30_000.0, 40_000.0, "psk"),
    ]
    on_top = [Truth(0.0, 0.1, 10_000.0, 60_000.0, "ofdm"), Truth(0.02, 0.03, 30_000.0, 35_000.0, "ofdm")]
    for case in (apart, labels, touching, on_top):
        assert len(clip_to_frames(case, [frame])) == 2, case
    # a signal across two frames is cut at the boundary and never joined across it
    frames = [FakeFrame(0.0), FakeFrame(0.1)]
    long = [Truth(0.05, 0.15, 20_000.0, 30_000.0, "fm")]
    assert [round(p.t_stop_s, 3) for p in clip_to_frames(long, frames)] == [0.1, 0.15]


def test_kinds_must_align_with_the_truth():
    with pytest.raises(ValueError, match="2 kinds for 1 truth"):
        clip_to_frames([Truth(0.0, 0.01, 0.0, 1000.0, "fm")], [FakeFrame()], kinds=["a", "b"])


def test_widened_truth_is_matched_by_a_one_column_box():
    frame = FakeFrame()
    truth = clip_to_frames([Truth(0.0, 0.1, 50_200.0, 50_300.0, "tone")], [frame])
    found = [det(0.0, 0.1, 50_000.0, 51_000.0, 0.9, "tone")]  # the column the tone falls in
    assert evaluate(truth, found).at(0.5).overall.tp == 1
    raw = [Truth(0.0, 0.1, 50_200.0, 50_300.0, "tone")]
    assert evaluate(raw, found).at(0.5).overall.tp == 0  # unwidened it could never match


def test_select_truth_leaves_out_rfstreams_own_annotations():
    mine = Truth(0, 1, 0, 1, "fm", generator="rfstream")
    theirs = [Truth(0, 1, 0, 1, "fm", generator="scenegen 1.0.0"), Truth(0, 1, 0, 1, "fm")]
    assert select_truth([mine, *theirs]) == (theirs, [mine])


def test_frame_truth_keeps_its_old_constructor():
    assert FrameTruth(0, 1, 0, 1, "fm", None).widened is False


# --- the shared matching ----------------------------------------------------------------------------
def _brute_force(truth, dets, threshold, aware):
    """The original O(detections × truth) greedy matching, as a reference."""
    from rfstream.detect.nms import iou_matrix
    from rfstream.eval import _boxes

    order = sorted(range(len(dets)), key=lambda i: (-dets[i].score, dets[i].t_start_s, dets[i].f_low_hz))
    ranked = [dets[i] for i in order]
    iou = iou_matrix(_boxes(ranked), _boxes(truth))
    free = np.ones(len(truth), bool)
    out = []
    for i, d in enumerate(ranked):
        ok = free & (iou[i] >= threshold) & (iou[i] > 0)
        if aware:
            ok &= np.array([t.label == d.label for t in truth], bool)
        cand = np.where(ok, iou[i], -1.0)
        j = int(np.argmax(cand)) if len(truth) and cand.max() >= 0 else -1
        if j >= 0:
            free[j] = False
        out.append(j)
    return out


box = st.tuples(
    st.integers(0, 6), st.integers(1, 3), st.integers(0, 6), st.integers(1, 3), st.sampled_from(["fm", "psk"])
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(box, max_size=12),
    st.lists(st.tuples(box, st.integers(0, 4)), max_size=14),
    st.sampled_from([0.1, 0.25, 0.5]),
    st.booleans(),
)
def test_shared_matching_equals_the_brute_force_greedy(truth_spec, det_spec, threshold, aware):
    truth = [Truth(t, t + dt, f, f + df, lab) for t, dt, f, df, lab in truth_spec]
    dets = [det(t, t + dt, f, f + df, s / 4, lab) for (t, dt, f, df, lab), s in det_spec]
    got = _Matching(truth, dets).match(threshold, aware).matched.tolist()
    assert got == _brute_force(truth, dets, threshold, aware)


def test_score_run_agrees_with_evaluate():
    truth = grid(["fm", "psk", "ook", "fm"], [3.0, 8.0, 15.0, 25.0])
    found = [on(truth[0], 0.9), on(truth[1], 0.7, "fm"), det(9, 10, 0, 10, 0.6, "psk"), on(truth[3], 0.4)]
    rep = score_run(truth, found)
    assert rep.label_aware == evaluate(truth, found, label_aware=True)
    assert rep.label_agnostic == evaluate(truth, found, label_aware=False)
    data = rep.to_dict()
    assert set(data) == {
        "label_aware",
        "label_agnostic",
        "snr_recall",
        "confusion",
        "duplicates",
        "reliability",
    }
    text = rep.to_text()
    assert "recall per SNR bin" in text and "ECE" in text and "false alarm" in text
