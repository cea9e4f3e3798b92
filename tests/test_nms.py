"""NMS invariants (hypothesis) and pixel <-> physical round trips through Frame."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rfstream.detect.nms import iou_matrix, merge_detections, nms_indices
from rfstream.types import Chunk, Detection, Frame


def _frame(h: int = 64, w: int = 128, *, t0: float = 1.0, dt: float = 0.001, f0: float = 100e6, df=1e3):
    chunk = Chunk(
        iq=np.zeros(16, np.complex64),
        sample_rate_hz=w * df,
        center_freq_hz=f0 + w * df / 2,
        start_sample=0,
        seq=3,
        arrived_ns=0,
    )
    return Frame(image=np.zeros((h, w), np.float32), t0_s=t0, dt_s=dt, f0_hz=f0, df_hz=df, chunk=chunk)


FRAME = _frame()
LABELS = ("fm", "psk", "unknown")
DETECTORS = ("a", "b", "c")


@st.composite
def detections(draw, max_size: int = 14) -> list[Detection]:
    n = draw(st.integers(0, max_size))
    out = []
    for _ in range(n):
        x0 = draw(st.integers(0, 100))
        y0 = draw(st.integers(0, 50))
        x1 = x0 + draw(st.integers(1, 27))
        y1 = y0 + draw(st.integers(1, 13))
        score = draw(st.sampled_from([0.1, 0.3, 0.5, 0.5, 0.9]))  # ties on purpose
        out.append(
            FRAME.detection(
                x0,
                y0,
                x1,
                y1,
                score=score,
                label=draw(st.sampled_from(LABELS)),
                detector=draw(st.sampled_from(DETECTORS)),
            )
        )
    return out


def _key(d: Detection):
    return (d.x0, d.y0, d.x1, d.y1, d.score, d.label, d.detector, d.found_by)


def _phys(d: Detection) -> np.ndarray:
    return np.array([[d.f_low_hz, d.t_start_s, d.f_high_hz, d.t_stop_s]])


@settings(max_examples=60, deadline=None)
@given(
    dets=detections(),
    seed=st.integers(0, 2**16),
    class_aware=st.booleans(),
    thr=st.sampled_from([0.3, 0.5, 0.7]),
)
def test_merge_is_order_independent_idempotent_and_a_subset(dets, seed, class_aware, thr):
    merged = merge_detections(dets, thr, class_aware)
    shuffled = list(dets)
    random.Random(seed).shuffle(shuffled)
    again = merge_detections(shuffled, thr, class_aware)
    assert sorted(map(_key, merged)) == sorted(map(_key, again))
    assert merge_detections(merged, thr, class_aware) == merged  # idempotent
    inputs = {(d.x0, d.y0, d.x1, d.y1, d.score, d.label, d.detector) for d in dets}
    assert {k[:7] for k in map(_key, merged)} <= inputs  # only input boxes come out
    # Every input detector is accounted for in some kept box's found_by.
    assert {d.detector for d in dets} == {n for d in merged for n in d.found_by}
    for d in merged:
        assert list(d.found_by) == sorted(set(d.found_by))
    for i, a in enumerate(merged):
        for b in merged[i + 1 :]:
            if class_aware and a.label != b.label and "unknown" not in (a.label, b.label):
                continue
            assert iou_matrix(_phys(a), _phys(b))[0, 0] <= thr


@settings(max_examples=60, deadline=None)
@given(dets=detections(), seed=st.integers(0, 2**16), use_labels=st.booleans())
def test_nms_indices_invariants(dets, seed, use_labels):
    boxes = np.array([(d.x0, d.y0, d.x1, d.y1) for d in dets], dtype=np.float64).reshape(-1, 4)
    scores = np.array([d.score for d in dets])
    labels = np.array([d.label for d in dets]) if use_labels else None
    kept = nms_indices(boxes, scores, labels, 0.5)
    perm = np.random.default_rng(seed).permutation(len(dets))
    kept_p = nms_indices(boxes[perm], scores[perm], None if labels is None else labels[perm], 0.5)
    as_set = lambda k, b, s: sorted(map(tuple, np.c_[b[k], s[k]].tolist()))  # noqa: E731
    assert as_set(kept, boxes, scores) == as_set(kept_p, boxes[perm], scores[perm])
    kb = boxes[kept]
    again = nms_indices(kb, scores[kept], None if labels is None else labels[kept], 0.5)
    assert sorted(again.tolist()) == list(range(len(kept)))
    iou = iou_matrix(kb, kb)
    same = np.ones_like(iou, bool) if labels is None else labels[kept][:, None] == labels[kept][None, :]
    np.fill_diagonal(same, False)
    assert not np.any((iou > 0.5) & same)


def test_class_aware_keeps_overlapping_boxes_of_different_labels():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7])
    labels = np.array(["fm", "psk", "fm"])
    assert sorted(nms_indices(boxes, scores, labels, 0.5).tolist()) == [0, 1]
    assert nms_indices(boxes, scores, None, 0.5).tolist() == [0]


def test_merge_records_found_by_and_unknown_yields_to_labelled():
    a = FRAME.detection(10, 10, 30, 20, score=0.9, label="unknown", detector="energy")
    b = FRAME.detection(11, 10, 30, 21, score=0.6, label="fm", detector="onnx")
    c = FRAME.detection(11, 10, 31, 20, score=0.5, label="fm", detector="trt")
    far = FRAME.detection(80, 40, 90, 50, score=0.2, label="unknown", detector="energy")
    merged = merge_detections([a, b, c, far], 0.5, class_aware=True)
    assert [(d.detector, d.found_by) for d in merged] == [
        ("onnx", ("energy", "onnx", "trt")),
        ("energy", ("energy",)),
    ]
    agnostic = merge_detections([a, b, c, far], 0.5, class_aware=False)
    assert agnostic[0].detector == "energy" and agnostic[0].found_by == ("energy", "onnx", "trt")


def test_merge_uses_physical_boxes_across_frame_sizes():
    small = _frame(32, 64, df=2e3, dt=0.002)  # same span, half the pixels
    big = FRAME.detection(20, 10, 40, 30, score=0.8, label="fm", detector="big")
    same = small.detection(10, 5, 20, 15, score=0.7, label="fm", detector="small")
    assert (same.x0, same.x1) != (big.x0, big.x1)
    merged = merge_detections([big, same], 0.5)
    assert len(merged) == 1 and merged[0].found_by == ("big", "small")


def test_empty_inputs():
    assert merge_detections([]) == []
    assert nms_indices(np.zeros((0, 4)), np.zeros(0), None, 0.5).size == 0


finite = st.floats(-1e3, 1e3, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(
    t0=finite,
    dt=st.floats(1e-6, 1.0),
    f0=st.floats(-1e9, 6e9),
    df=st.floats(1.0, 1e6),
    x0=st.floats(0, 1000),
    w=st.floats(0, 500),
    y0=st.floats(0, 1000),
    h=st.floats(0, 500),
)
def test_pixel_physical_round_trip(t0, dt, f0, df, x0, w, y0, h):
    frame = _frame(t0=t0, dt=dt, f0=f0, df=df)
    phys = frame.to_physical(x0, y0, x0 + w, y0 + h)
    back = frame.to_pixels(*phys)
    np.testing.assert_allclose(
        back, (x0, y0, x0 + w, y0 + h), rtol=1e-6, atol=1e-6 * (1 + abs(f0) / df + abs(t0) / dt)
    )
    # Clipping: boxes that start inside the image (a box wholly outside comes out inverted;
    # reported to the owner of types.py).
    x0, y0 = min(x0, frame.width), min(y0, frame.height)
    det = frame.detection(x0, y0, x0 + w, y0 + h, score=2.0, label="fm", detector="x")
    assert 0 <= det.x0 <= det.x1 <= frame.width and 0 <= det.y0 <= det.y1 <= frame.height
    assert det.score == 1.0 and det.chunk_seq == 3
    assert (det.t_start_s, det.t_stop_s, det.f_low_hz, det.f_high_hz) == frame.to_physical(
        det.x0, det.y0, det.x1, det.y1
    )
