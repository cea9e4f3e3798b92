"""Crop extraction and the frame-detector decoder (pure NumPy: no torch needed)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rfstream.detect.crops import crop_windows, extract_crops
from rfstream.detect.decode import decode_frame_detector
from rfstream.errors import InputError, ModelError
from rfstream.types import Chunk, Frame


def _frame(image: np.ndarray, *, t0_s=1.0, dt_s=2e-4, f0_hz=100e6, df_hz=1e4) -> Frame:
    chunk = Chunk(np.zeros(0, np.complex64), 10e6, 105e6, start_sample=0, seq=7, arrived_ns=0)
    return Frame(image=image, t0_s=t0_s, dt_s=dt_s, f0_hz=f0_hz, df_hz=df_hz, chunk=chunk)


# --- extract_crops ---------------------------------------------------------------------------
def test_crops_shape_dtype_and_empty():
    img = np.random.default_rng(0).random((128, 256), dtype=np.float32)
    out = extract_crops(img, np.array([[10, 20, 50, 40], [0, 0, 256, 128]], float))
    assert out.shape == (2, 1, 64, 64) and out.dtype == np.float32
    assert extract_crops(img, np.zeros((0, 4))).shape == (0, 1, 64, 64)


def test_letterbox_keeps_aspect_and_fills_with_floor():
    img = np.full((200, 400), 0.1, np.float32)
    img[50:60, 100:300] = 0.9  # wide, short signal
    crop = extract_crops(img, np.array([[100.0, 50.0, 300.0, 60.0]]), pad_frac=0.0, min_pad_px=0)[0, 0]
    rows_with_signal = np.flatnonzero(crop.max(axis=1) > 0.5)
    cols_with_signal = np.flatnonzero(crop.max(axis=0) > 0.5)
    assert len(cols_with_signal) == 64  # the long side fills the crop
    assert 2 <= len(rows_with_signal) <= 5  # 10/200 of 64 ≈ 3 rows: aspect kept
    assert crop[0, 0] == pytest.approx(0.1)  # letterbox bar = the frame's floor (its median)


def test_one_pixel_tone_survives_downsampling():
    img = np.zeros((1024, 1024), np.float32)
    img[:, 500] = 1.0  # a one-column carrier across the whole frame
    crop = extract_crops(img, np.array([[0.0, 0.0, 1024.0, 1024.0]]))[0, 0]
    # area averaging: the column holding the tone reads 1/16 (one of 16 input columns), every row
    assert np.count_nonzero(crop.max(axis=0)) == 1
    assert crop.max(axis=0).max() == pytest.approx(1 / 16)
    assert np.count_nonzero(crop.max(axis=1)) == 64


def test_crops_bad_input_is_one_clear_error():
    img = np.zeros((32, 32), np.float32)
    with pytest.raises(InputError, match=r"\[N, 4\]"):
        extract_crops(img, np.zeros((3, 3)))
    with pytest.raises(InputError, match="NaN"):
        extract_crops(img, np.array([[0, 0, np.nan, 4]]))
    with pytest.raises(InputError, match="2-D"):
        extract_crops(np.zeros(5), np.zeros((1, 4)))


@settings(max_examples=60, deadline=None)
@given(
    x0=st.floats(-50, 300),
    y0=st.floats(-50, 200),
    w=st.floats(0, 400),
    h=st.floats(0, 300),
)
def test_windows_always_inside_and_nonempty(x0, y0, w, h):
    box = np.array([[x0, y0, x0 + w, y0 + h]])
    (wx0, wy0, wx1, wy1) = crop_windows(box, 150, 250)[0]
    assert 0 <= wx0 < wx1 <= 250 and 0 <= wy0 < wy1 <= 150
    crop = extract_crops(np.random.default_rng(1).random((150, 250), dtype=np.float32), box)
    assert crop.shape == (1, 1, 64, 64) and np.isfinite(crop).all()
    assert crop.min() >= 0.0 and crop.max() <= 1.0
    # letterboxed: the resampled window's long side spans the whole crop
    ww, wh = wx1 - wx0, wy1 - wy0
    assert max(ww, wh) > 0


# --- decode_frame_detector -------------------------------------------------------------------
LABELS = ("tone", "fsk", "ofdm")


def test_decode_hand_made_map_gives_boxes_in_physical_units():
    h = w = 64  # heatmap of a 256x256 frame at stride 4
    obj = np.zeros((1, h, w), np.float32)
    probs = np.full((3, h, w), 1 / 3, np.float32)
    obj[0, 10:20, 5:8] = 0.9  # component A: rows 10..19, cols 5..7
    probs[:, 10:20, 5:8] = np.array([0.1, 0.8, 0.1])[:, None, None]
    obj[0, 40:42, 30:50] = 0.7  # component B
    probs[:, 40:42, 30:50] = np.array([0.05, 0.05, 0.9])[:, None, None]
    obj[0, 60, 60] = 0.99  # a single cell: below min_cells
    frame = _frame(np.zeros((256, 256), np.float32))
    dets = decode_frame_detector(
        obj, probs, frame, labels=LABELS, stride=4, score_threshold=0.1, detector_name="fd", refine=False
    )
    dets.sort(key=lambda d: d.x0)
    assert [d.label for d in dets] == ["fsk", "ofdm"]
    a, b = dets
    assert (a.x0, a.y0, a.x1, a.y1) == (20.0, 40.0, 32.0, 80.0)
    assert a.f_low_hz == pytest.approx(100e6 + 20 * 1e4) and a.f_high_hz == pytest.approx(100e6 + 32 * 1e4)
    assert a.t_start_s == pytest.approx(1.0 + 40 * 2e-4) and a.t_stop_s == pytest.approx(1.0 + 80 * 2e-4)
    assert a.score == pytest.approx(0.9 * 0.8) and b.score == pytest.approx(0.7 * 0.9)
    assert a.detector == "fd" and a.chunk_seq == 7
    # the score threshold drops B
    kept = decode_frame_detector(
        obj, probs, frame, labels=LABELS, stride=4, score_threshold=0.7, detector_name="fd"
    )
    assert [d.label for d in kept] == ["fsk"]


def test_decode_refines_box_to_the_pixels():
    img = np.full((256, 256), 0.12, np.float32)
    img[41:79, 22:25] = 0.8  # the real signal is narrower than its cells
    obj = np.zeros((1, 64, 64), np.float32)
    obj[0, 10:20, 5:7] = 0.9
    probs = np.zeros((3, 64, 64), np.float32)
    probs[0] = 1.0
    (d,) = decode_frame_detector(
        obj, probs, _frame(img), labels=LABELS, stride=4, score_threshold=0.0, detector_name="fd"
    )
    assert (d.x0, d.y0, d.x1, d.y1) == (22.0, 41.0, 25.0, 79.0)


def test_decode_empty_and_bad_shapes():
    frame = _frame(np.zeros((64, 64), np.float32))
    obj = np.zeros((1, 16, 16), np.float32)
    probs = np.zeros((3, 16, 16), np.float32)
    assert (
        decode_frame_detector(
            obj, probs, frame, labels=LABELS, stride=4, score_threshold=0.5, detector_name="x"
        )
        == []
    )
    with pytest.raises(ModelError, match="do not fit"):
        decode_frame_detector(
            obj, probs[:2], frame, labels=LABELS, stride=4, score_threshold=0.5, detector_name="x"
        )


def test_decode_keeps_crossing_signals_apart():
    obj = np.zeros((1, 64, 64), np.float32)
    probs = np.zeros((3, 64, 64), np.float32)
    probs[0] = 1.0
    obj[0, :, 30] = 0.9  # a carrier over the whole frame (label tone)
    obj[0, 10:14, 5:60] = 0.9  # two OFDM bursts it crosses
    obj[0, 40:44, 5:60] = 0.9
    probs[:, 10:14, 5:60] = probs[:, 40:44, 5:60] = np.array([0.0, 0.0, 1.0])[:, None, None]
    probs[:, 10:14, 30] = probs[:, 40:44, 30] = np.array([0.5, 0.0, 0.5])[:, None]  # shared cells
    dets = decode_frame_detector(
        obj,
        probs,
        _frame(np.zeros((256, 256), np.float32)),
        labels=LABELS,
        stride=4,
        score_threshold=0.1,
        detector_name="fd",
        refine=False,
    )
    boxes = sorted((d.label, d.x0, d.y0, d.x1, d.y1) for d in dets)
    assert boxes == [
        ("ofdm", 20.0, 40.0, 240.0, 56.0),
        ("ofdm", 20.0, 160.0, 240.0, 176.0),
        ("tone", 120.0, 0.0, 124.0, 256.0),
    ]


def _carrier_under_bursts(gap_rows: int):
    """A one-cell-wide tone over the whole frame; two wide OFDM bursts win its cells where they cross."""
    obj = np.zeros((1, 64, 64), np.float32)
    probs = np.zeros((3, 64, 64), np.float32)
    probs[0] = 1.0
    obj[0, :, 30] = 0.9
    for r0 in (10, 40):
        obj[0, r0 : r0 + gap_rows, 5:60] = 0.9
        probs[:, r0 : r0 + gap_rows, 5:60] = np.array([0.0, 0.0, 1.0])[:, None, None]
    return obj, probs


def _decode(obj, probs, image=None, **kw):
    image = np.zeros((256, 256), np.float32) if image is None else image
    return decode_frame_detector(
        obj, probs, _frame(image), labels=LABELS, stride=4, score_threshold=0.1, detector_name="fd", **kw
    )


def test_a_carrier_crossed_by_wider_signals_stays_one_box():
    obj, probs = _carrier_under_bursts(4)
    bridged = [d for d in _decode(obj, probs, refine=False) if d.label == "tone"]
    assert [(d.x0, d.y0, d.x1, d.y1) for d in bridged] == [(120.0, 0.0, 124.0, 256.0)]
    split = [d for d in _decode(obj, probs, refine=False, bridge_cells=0) if d.label == "tone"]
    assert len(split) == 3  # without bridging: three pieces
    # The bursts keep their own boxes, and a gap longer than bridge_cells is not bridged.
    assert sum(d.label == "ofdm" for d in _decode(obj, probs, refine=False)) == 2
    obj, probs = _carrier_under_bursts(20)
    assert sum(d.label == "tone" for d in _decode(obj, probs, refine=False, bridge_cells=8)) == 3


def test_bridging_never_glues_wide_bursts_of_one_channel():
    obj = np.zeros((1, 64, 64), np.float32)
    probs = np.zeros((3, 64, 64), np.float32)
    probs[1] = 1.0  # fsk everywhere
    for r0 in (5, 15, 25):  # three hops on one channel, 6 cells apart
        obj[0, r0 : r0 + 4, 20:40] = 0.9
    obj[0, 9:15, 30] = 0.9  # a narrow sliver of signal between two of them
    obj[0, 19:25, 10] = 0.9  # and a carrier-like sliver beside them
    hops = sorted((d.y0, d.y1) for d in _decode(obj, probs, refine=False, min_cells=8) if d.x1 - d.x0 > 40)
    assert hops == [(20.0, 36.0), (60.0, 76.0), (100.0, 116.0)] or len(hops) == 2


def test_a_sub_column_carrier_gets_a_one_column_box_centred_on_its_power():
    img = np.full((256, 256), 0.12, np.float32)
    img[:, 121] = 0.8  # the carrier lies mostly in column 121, partly in 122
    img[:, 122] = 0.5
    obj = np.zeros((1, 64, 64), np.float32)
    obj[0, :, 30] = 0.9
    probs = np.zeros((3, 64, 64), np.float32)
    probs[0] = 1.0
    (d,) = _decode(obj, probs, img)
    centre = (121.5 * 0.68 + 122.5 * 0.38) / (0.68 + 0.38)
    assert d.x1 - d.x0 == pytest.approx(1.0) and 0.5 * (d.x0 + d.x1) == pytest.approx(centre, abs=1e-3)
    assert (d.y0, d.y1) == (0.0, 256.0)
    (wide,) = _decode(obj, probs, img, narrow_px=0)
    assert (wide.x0, wide.x1) == (121.0, 123.0)  # the plain refinement: two whole columns


def test_a_signal_two_columns_wide_keeps_both_columns():
    img = np.full((256, 256), 0.12, np.float32)
    img[:, 121:123] = 0.8
    obj = np.zeros((1, 64, 64), np.float32)
    obj[0, :, 30] = 0.9
    probs = np.zeros((3, 64, 64), np.float32)
    probs[0] = 1.0
    (d,) = _decode(obj, probs, img)
    assert (d.x0, d.x1) == (121.0, 123.0)
