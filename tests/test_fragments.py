"""Fragment grouping on constructed scenes: pieces of one emission become one box, trains share a group,
and two signals touching in frequency stay two. Boxes as the detectors give them (physical units)."""

from __future__ import annotations

import pytest

from rfstream.detect.fragments import group_fragments
from rfstream.detect.fuse import Fuser
from rfstream.types import Detection

MHZ = 1e6


def det(f0, f1, t0, t1, score=0.8, label="unknown", detector="energy"):
    return Detection(f0, t0, f1, t1, t0, t1, f0, f1, score, label, detector)


def spans(dets):
    return sorted(
        (round(d.f_low_hz), round(d.f_high_hz), round(d.t_start_s, 4), round(d.t_stop_s, 4)) for d in dets
    )


def test_ofdm_burst_with_null_carriers_is_one_box():
    """A 10 MHz OFDM burst whose null-carrier clusters split the energy into four sub-bands."""
    edges = [(0.0, 2.4), (2.6, 4.9), (5.1, 7.4), (7.6, 10.0)]
    pieces = [
        det(a * MHZ, b * MHZ, 0.020, 0.180, 0.6 + 0.05 * i, "ofdm", "frame") for i, (a, b) in enumerate(edges)
    ]
    (one,) = group_fragments(pieces)
    assert (one.f_low_hz, one.f_high_hz, one.t_start_s, one.t_stop_s) == (0.0, 10 * MHZ, 0.020, 0.180)
    assert one.label == "ofdm" and one.score == pytest.approx(0.75)  # the best piece's evidence


def test_faded_burst_is_one_box():
    """A 100 ms burst cut by a 4 ms fade: a gap short relative to the burst."""
    a = det(1 * MHZ, 1.2 * MHZ, 0.050, 0.100, 0.7, "psk", "frame")
    b = det(1.01 * MHZ, 1.2 * MHZ, 0.104, 0.150, 0.6, "psk", "frame")
    (one,) = group_fragments([a, b])
    assert (one.t_start_s, one.t_stop_s) == (0.050, 0.150)
    assert (one.f_low_hz, one.f_high_hz) == (1 * MHZ, 1.2 * MHZ)


def test_tdma_bursts_a_guard_time_apart_stay_two():
    """Two bursts of one TDMA channel as the energy detector boxes them (scenegen's GSM-like
    channel: a 0.6 ms burst, then two slots together, 0.2 ms apart once the box edges are padded):
    two signals, not one faded burst."""
    a = det(914.19 * MHZ, 914.45 * MHZ, 0.1146, 0.1155, 0.6, "fsk", "classifier")
    b = det(914.19 * MHZ, 914.45 * MHZ, 0.1157, 0.1179, 0.9, "fsk", "classifier")
    assert spans(group_fragments([a, b])) == spans([a, b])


def test_wideband_analog_video_is_one_box():
    """A 6 MHz analog TV channel as the energy detector sees it: the vision carrier, its sidebands in
    pieces, the colour and sound carriers, all inside the frame detector's box of the channel."""
    channel = det(10 * MHZ, 16 * MHZ, 0.0, 0.2, 0.7, "am", "frame")
    parts = [
        det(10.0 * MHZ, 11.2 * MHZ, 0.0, 0.2, 0.5),  # vestigial sideband + vision carrier
        det(11.3 * MHZ, 13.1 * MHZ, 0.0, 0.2, 0.45),
        det(13.2 * MHZ, 14.6 * MHZ, 0.0, 0.2, 0.4),  # colour subcarrier region
        det(15.4 * MHZ, 15.6 * MHZ, 0.0, 0.2, 0.6),  # sound carrier
    ]
    # the shorter pieces the 77-box failure was made of: bits of lines between sync pulses
    parts += [det(12.0 * MHZ, 12.8 * MHZ, 0.01 * k, 0.01 * k + 0.004, 0.3) for k in range(1, 8)]
    out = Fuser(threshold=0.0).process([channel, *parts])
    assert len(out) == 1
    assert (out[0].f_low_hz, out[0].f_high_hz) == pytest.approx((10 * MHZ, 16 * MHZ), rel=1e-3)
    assert out[0].label == "am"


def test_hop_train_stays_one_box_per_hop_and_shares_a_group():
    """A frequency hopper: 2 ms dwells on different channels, 1 ms apart. Each dwell is a signal of its
    own (what a decoder wants), the train is one emitter: one group_id."""
    channels = [3.0, 7.5, 1.2, 5.1, 8.8, 2.4]
    hops = [
        det(c * MHZ, c * MHZ + 0.5 * MHZ, 0.010 + 0.003 * k, 0.012 + 0.003 * k, 0.7, "fsk", "frame")
        for k, c in enumerate(channels)
    ]
    other = det(4.0 * MHZ, 4.2 * MHZ, 0.0, 0.2, 0.9, "tone", "frame")
    out = group_fragments([*hops, other])
    assert len(out) == len(hops) + 1
    groups = {d.group_id for d in out if d.label == "fsk"}
    assert len(groups) == 1 and groups.pop() >= 1
    assert next(d for d in out if d.label == "tone").group_id == -1


def test_pulse_train_shares_a_group():
    pulses = [
        det(2 * MHZ, 2.6 * MHZ, 0.01 + 0.02 * k, 0.012 + 0.02 * k, 0.6, "pulsed", "frame") for k in range(5)
    ]
    out = group_fragments(pulses)
    assert len(out) == 5 and len({d.group_id for d in out}) == 1


@pytest.mark.parametrize("gap_mhz", [0.0, 0.02])
def test_two_signals_touching_in_frequency_stay_two(gap_mhz):
    """Two carriers side by side (touching or nearly): different labels, or different times, keep two boxes."""
    a = det(1.0 * MHZ, 1.5 * MHZ, 0.0, 0.2, 0.8, "psk", "frame")
    b = det((1.5 + gap_mhz) * MHZ, 2.0 * MHZ, 0.0, 0.2, 0.7, "fsk", "frame")
    assert spans(group_fragments([a, b])) == spans([a, b])
    c = det((1.5 + gap_mhz) * MHZ, 2.0 * MHZ, 0.05, 0.12, 0.7, "psk", "frame")  # same label, other times
    assert spans(group_fragments([a, c])) == spans([a, c])


def test_a_narrow_signal_on_a_wide_one_stays():
    wide = det(0.0, 10 * MHZ, 0.0, 0.2, 0.8, "ofdm", "frame")
    narrow = det(4 * MHZ, 4.1 * MHZ, 0.0, 0.2, 0.7, "tone", "frame")
    assert len(group_fragments([wide, narrow])) == 2


def test_bursts_of_one_channel_far_apart_stay_apart():
    """TDMA-like bursts on one channel with guard times not short relative to them: separate signals."""
    bursts = [
        det(1 * MHZ, 1.2 * MHZ, 0.02 + 0.04 * k, 0.04 + 0.04 * k, 0.7, "psk", "frame") for k in range(4)
    ]
    out = group_fragments(bursts)
    assert len(out) == 4 and len({d.group_id for d in out}) == 1  # one train


def test_grouping_is_order_independent():
    edges = [(0.0, 2.4), (2.6, 4.9), (5.1, 7.4), (7.6, 10.0)]
    pieces = [det(a * MHZ, b * MHZ, 0.02, 0.18, 0.6, "ofdm", "frame") for a, b in edges]
    pieces += [
        det(20 * MHZ, 20.5 * MHZ, 0.01 + 0.003 * k, 0.012 + 0.003 * k, 0.7, "fsk", "frame") for k in range(3)
    ]
    assert spans(group_fragments(pieces)) == spans(group_fragments(list(reversed(pieces))))


def test_the_tones_of_one_packet_inside_its_box_are_one_box():
    """An OOK/FSK packet as an RTL-SDR shows it (rtl_433 Sensible Living): two spectral lines, each boxed
    by the energy detector, inside the frame detector's box of the packet: one signal. A single line on
    a wide signal is not enough to call them one (the narrow-on-wide test above)."""
    packet = det(-18.1e3, 16.6e3, 0.389, 0.487, 0.61, "psk", "frame")
    low = det(-18.3e3, -17.1e3, 0.389, 0.478, 0.75, "ook", "classifier")
    high = det(4.4e3, 7.3e3, 0.389, 0.487, 0.88, "ook", "classifier")
    (one,) = group_fragments([packet, low, high])
    assert (one.f_low_hz, one.f_high_hz) == (-18.3e3, 16.6e3) and one.label == "ook"
    assert set(one.found_by) == {"frame", "classifier"}


def _px(f0, f1, t0, t1, score, label, detector, row_s=0.2e-3, col_hz=10e3):
    """A detection whose pixel box matches its physical one (rows of 0.2 ms, columns of 10 kHz)."""
    return Detection(f0 / col_hz, t0 / row_s, f1 / col_hz, t1 / row_s, t0, t1, f0, f1, score, label, detector)


def test_tdma_bursts_inside_a_frame_detector_box_over_the_channel_stay_one_box_each():
    """The frame detector boxes a TDMA channel over the whole frame; the energy detector boxes each
    1.2 ms burst. The bursts are the signals: the envelope is dropped, the bursts stay apart."""
    envelope = _px(1.0 * MHZ, 1.3 * MHZ, 0.0, 0.2, 0.5, "fsk", "frame")
    bursts = [
        _px(1.0 * MHZ, 1.3 * MHZ, s, s + 1.2e-3, 0.6, "unknown", "energy") for s in (0.01, 0.0148, 0.0196)
    ]
    out = group_fragments([envelope, *bursts])
    assert spans(out) == spans(bursts)


def test_pulses_inside_a_box_over_their_train_are_one_box():
    """Radar pulses (one row each, shorter than BURST_ROWS) inside the frame detector's box of their
    train are that train: one box, as before."""
    train = _px(2.0 * MHZ, 2.5 * MHZ, 0.01, 0.03, 0.6, "pulsed", "frame")
    pulses = [
        _px(2.0 * MHZ, 2.5 * MHZ, 0.01 + 2e-3 * k, 0.0102 + 2e-3 * k, 0.5, "unknown", "energy")
        for k in range(10)
    ]
    out = group_fragments([train, *pulses])
    assert spans(out) == spans([train])
