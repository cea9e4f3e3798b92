"""The tracker over a stream of 200 ms chunks."""

from __future__ import annotations

import numpy as np
import pytest

from rfstream.config import TrackerConfig
from rfstream.track import Tracker
from rfstream.types import Chunk, Frame

RATE, FC, CHUNK_S = 1e6, 100e6, 0.2


def frame(seq: int, *, gap_samples: int = 0) -> Frame:
    """Chunk ``seq`` of a stream (1024 x 1024 pixels, 200 ms, 1 MHz wide)."""
    n = int(RATE * CHUNK_S)
    chunk = Chunk(
        iq=np.zeros(n, np.complex64),
        sample_rate_hz=RATE,
        center_freq_hz=FC,
        start_sample=seq * n + gap_samples,
        seq=seq,
        arrived_ns=0,
        gap_before_samples=gap_samples,
    )
    return Frame(
        image=np.zeros((1024, 1024), np.float32),
        t0_s=chunk.start_s,
        dt_s=CHUNK_S / 1024,
        f0_hz=FC - RATE / 2,
        df_hz=RATE / 1024,
        chunk=chunk,
    )


def det(fr: Frame, x0, x1, y0=0, y1=1024, *, label="unknown", score=0.5):
    return fr.detection(x0, y0, x1, y1, score=score, label=label, detector="energy")


def kinds(events):
    return [(e.kind, e.track.track_id, e.track.state) for e in events]


def test_continuing_signal_keeps_its_id_confirms_and_ends_after_the_gap():
    tr = Tracker(TrackerConfig(max_gap_s=0.5, confirm_hits=2, smoothing=0.5))
    f0 = frame(0)
    assert kinds(tr.update(f0, [det(f0, 100, 120, 512, 1024)])) == [("start", 1, "tentative")]
    f1 = frame(1)
    events = tr.update(f1, [det(f1, 102, 122)])  # continues across the chunk boundary, drifting
    assert kinds(events) == [("update", 1, "confirmed")]
    track = events[0].track
    assert track.hits == 2 and track.first_seen_s == f0.t0_s + 0.1 and track.last_seen_s == f1.t1_s
    # Smoothed edges: halfway between the old edge and the new one.
    assert abs(track.f_low_hz - (f0.f0_hz + 101 * f0.df_hz)) < 1e-6
    f2 = frame(2)
    assert kinds(tr.update(f2, [det(f2, 101, 121, 0, 300)])) == [("update", 1, "confirmed")]
    assert [t.track_id for t in tr.tracks()] == [1]
    # Last seen at 0.4586 s: at the end of chunk 3 (0.8 s) it is within max_gap_s ...
    assert tr.update(frame(3), []) == []
    # ... at the end of chunk 4 (1.0 s) past it, so it ends.
    events = tr.update(frame(4), [])
    assert kinds(events) == [("end", 1, "ended")] and events[0].chunk_seq == 4
    assert tr.tracks() == []
    f6 = frame(6)
    assert kinds(tr.update(f6, [det(f6, 100, 120)])) == [("start", 2, "tentative")]  # a new id
    assert kinds(tr.finish()) == [("end", 2, "ended")]
    assert tr.finish() == []


def test_simultaneous_signals_and_hopping_bursts_are_separate_tracks():
    tr = Tracker(TrackerConfig(confirm_hits=3))
    f0 = frame(0)
    events = tr.update(f0, [det(f0, 600, 700), det(f0, 100, 110)])
    assert kinds(events) == [("start", 1, "tentative"), ("start", 2, "tentative")]
    assert events[0].track.f_low_hz < events[1].track.f_low_hz  # ids follow time, then frequency
    # Hopping bursts: three hops, two of them back on 300-310 within the chunk.
    f1 = frame(1)
    hops = [det(f1, 300, 310, 0, 50), det(f1, 500, 510, 100, 150), det(f1, 300, 310, 200, 250)]
    events = tr.update(f1, [det(f1, 600, 700), det(f1, 100, 110), *hops])
    got = {e.track.track_id: (e.kind, e.track.hits) for e in events}
    assert got == {1: ("update", 2), 2: ("update", 2), 3: ("start", 2), 4: ("start", 1)}


def test_a_label_that_changes_keeps_one_track_and_the_vote_decides():
    """A burst cut by a chunk boundary may be voted psk in one chunk and fsk in the next: one signal,
    one id, its label the score-weighted vote; an unlabelled detection never outvotes a label."""
    tr = Tracker(TrackerConfig(confirm_hits=2))
    f0 = frame(0)
    tr.update(f0, [det(f0, 100, 200, label="psk", score=0.9), det(f0, 400, 500, label="unknown", score=0.9)])
    f1 = frame(1)
    events = tr.update(
        f1,
        [det(f1, 100, 200, label="fsk", score=0.5), det(f1, 400, 500, label="ofdm", score=0.3)],
    )
    by_id = {e.track.track_id: e for e in events}
    assert set(by_id) == {1, 2}  # no new track for a label that changed
    assert by_id[1].kind == "update" and by_id[1].track.label == "psk"  # 0.9 psk beats 0.5 fsk
    assert by_id[2].kind == "update" and by_id[2].track.label == "ofdm"  # a label beats unknown
    f2 = frame(2)
    events = tr.update(f2, [det(f2, 100, 200, label="fsk", score=0.6)])
    assert [(e.track.track_id, e.track.label) for e in events if e.kind == "update"] == [(1, "fsk")]


def test_a_narrow_signal_of_another_label_inside_a_wide_one_is_another_track():
    tr = Tracker(TrackerConfig(confirm_hits=1))
    f0 = frame(0)
    tr.update(f0, [det(f0, 0, 1000, label="ofdm", score=0.9)])
    f1 = frame(1)
    events = tr.update(f1, [det(f1, 0, 1000, label="ofdm", score=0.9), det(f1, 500, 502, label="tone")])
    assert sorted((e.kind, e.track.track_id, e.track.label) for e in events) == [
        ("start", 2, "tone"),
        ("update", 1, "ofdm"),
    ]
    (ofdm,) = [t for t in tr.tracks() if t.track_id == 1]
    assert ofdm.f_high_hz - ofdm.f_low_hz > 0.9 * det(f1, 0, 1000).bandwidth_hz  # not dragged to the tone


def test_stream_gap_ends_tracks_by_time():
    tr = Tracker(TrackerConfig(max_gap_s=0.5))
    f0 = frame(0)
    tr.update(f0, [det(f0, 100, 200)])
    later = frame(1, gap_samples=int(RATE))  # a second of samples lost
    events = tr.update(later, [det(later, 100, 200)])
    assert kinds(events) == [("end", 1, "ended"), ("start", 2, "tentative")]


def test_confirm_hits_one_and_tolerance():
    tr = Tracker(TrackerConfig(confirm_hits=1, freq_tolerance_hz=5e3))
    f0 = frame(0)
    assert kinds(tr.update(f0, [det(f0, 100, 101)])) == [("start", 1, "confirmed")]
    f1 = frame(1)
    # 3 columns (~2.9 kHz) away: joins only because of the 5 kHz tolerance.
    assert kinds(tr.update(f1, [det(f1, 104, 105)])) == [("update", 1, "confirmed")]
    strict = Tracker(TrackerConfig(confirm_hits=1))
    strict.update(f0, [det(f0, 100, 101)])
    assert [e.kind for e in strict.update(f1, [det(f1, 104, 105)])] == ["start"]


def test_a_hop_train_keeps_one_track_across_chunks():
    """Fusion gives a hopper's dwells of one chunk one group_id: the tracker follows the train as one
    emitter (one id), not one track per channel; an ungrouped carrier beside it is its own track."""
    tr = Tracker(TrackerConfig(max_gap_s=0.5, confirm_hits=2))
    ids = set()
    for seq in range(3):
        fr = frame(seq)
        channels = [
            (100 + 37 * ((k + seq) % 5), 40 * k + 10) for k in range(6)
        ]  # a different order each chunk
        hops = [det(fr, x, x + 20, y, y + 30, label="fsk").replace(group_id=1) for x, y in channels]
        carrier = det(fr, 900, 903, label="tone")
        events = tr.update(fr, [*hops, carrier])
        ids |= {e.track.track_id for e in events if e.track.label == "fsk"}
        assert sum(1 for e in events if e.track.label == "fsk") == 1
    assert len(ids) == 1
    (train,) = [t for t in tr.tracks() if t.label == "fsk"]
    assert train.state == "confirmed" and train.hits == 3
    assert train.f_high_hz - train.f_low_hz > 100 * frame(0).df_hz  # the span it hops over
    assert len(tr.tracks()) == 2  # the train and the carrier


def test_detections_take_their_tracks_label_and_keep_their_own_as_an_alternative():
    """An FM voice channel in a pause looks like a carrier for one chunk: published with the
    track's label (the vote so far), its own label first among the alternatives with its score."""
    tr = Tracker(TrackerConfig(confirm_hits=1))
    f0 = frame(0)
    first = [det(f0, 100, 104, label="fm", score=0.8), det(f0, 600, 700, label="unknown", score=0.4)]
    tr.update(f0, first)
    assert tr.relabel(first) == first  # a track's first detection keeps its own label
    f1 = frame(1)
    pause = det(f1, 100, 104, label="tone", score=0.5).replace(alternatives=(("fm", 0.3), ("am", 0.1)))
    blob = det(f1, 600, 700, label="unknown", score=0.4)
    new = det(f1, 300, 310, label="ook", score=0.6)
    tr.update(f1, [pause, blob, new])
    out = tr.relabel([pause, blob, new])
    assert out[0].label == "fm" and out[0].alternatives == (("tone", 0.5), ("am", 0.1))
    assert (out[0].score, out[0].f_low_hz, out[0].t_start_s) == (pause.score, pause.f_low_hz, pause.t_start_s)
    assert out[1] == blob and out[2] == new  # an unknown track labels nothing; a new track is its own
    f2 = frame(2)
    tones = [det(f2, 100, 104, label="tone", score=0.9)]
    tr.update(f2, tones)
    assert tr.relabel(tones)[0].label == "tone"  # 0.5 + 0.9 tone now outvote 0.8 fm
    with pytest.raises(ValueError, match="last update"):
        tr.relabel([*tones, *tones])


def test_a_trains_members_keep_their_own_labels():
    """A hop or pulse train is one track (one id), but each hop is its own signal, named by its own
    evidence: relabelling by the train's vote made labels worse on validation recordings."""
    tr = Tracker(TrackerConfig(confirm_hits=1))
    f0 = frame(0)
    hops0 = [
        det(f0, 100 + 50 * k, 120 + 50 * k, 880 + 36 * k, 910 + 36 * k, label="fsk", score=0.9).replace(
            group_id=1
        )
        for k in range(4)
    ]
    tr.update(f0, hops0)
    f1 = frame(1)
    hops1 = [
        det(
            f1, 100 + 50 * k, 120 + 50 * k, 40 * k, 40 * k + 30, label="psk" if k == 2 else "fsk", score=0.5
        ).replace(group_id=3)
        for k in range(4)
    ]
    events = tr.update(f1, hops1)
    assert [(e.kind, e.track.track_id, e.track.label) for e in events] == [("update", 1, "fsk")]
    assert [d.label for d in tr.relabel(hops1)] == ["fsk", "fsk", "psk", "fsk"]


def test_low_confidence_boxes_are_not_tracked_nor_relabelled():
    tr = Tracker(TrackerConfig(confirm_hits=1))
    f0 = frame(0)
    tr.update(f0, [det(f0, 100, 104, label="fm", score=0.8)])
    f1 = frame(1)
    weak = det(f1, 100, 104, label="tone", score=0.1).replace(low_confidence=True)
    other = det(f1, 500, 600, label="psk", score=0.1).replace(low_confidence=True)
    assert tr.update(f1, [weak, other]) == []  # no start for the weak box, no update of the fm track
    assert tr.relabel([weak, other]) == [weak, other]
    assert [t.label for t in tr.tracks()] == ["fm"]


def test_a_later_burst_on_the_same_channel_keeps_its_own_label():
    """Joined to the track (one id, within max_gap_s) but not carrying it on: another transmission
    on the channel, perhaps another transmitter, is named by its own evidence."""
    tr = Tracker(TrackerConfig(confirm_hits=1, max_gap_s=0.5))
    f0 = frame(0)
    tr.update(f0, [det(f0, 100, 104, 0, 100, label="fm", score=0.9)])  # over by 0.02 s
    f1 = frame(1)
    later = [det(f1, 100, 104, 500, 600, label="tone", score=0.5)]  # at 0.3 s
    events = tr.update(f1, later)
    assert [(e.kind, e.track.track_id) for e in events] == [("update", 1)]
    assert tr.relabel(later) == later
