"""The energy detector on synthetic spectrograms and on the real Spectrogrammer's frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rfstream.config import DetectorConfig, SpectrogramConfig
from rfstream.detect.base import Detector
from rfstream.detect.energy import (
    EnergyDetector,
    EnergyOptions,
    frame_rows_per_slice,
    measured_rows_per_slice,
)
from rfstream.detect.nms import iou_matrix
from rfstream.dsp.spectrogram import Spectrogrammer
from rfstream.errors import ConfigError
from rfstream.types import Chunk, Frame

LOOKS = 8  # STFT power bins averaged per pixel (4 frequency bins x 2 slices at 20 MS/s)


def noise_image(
    rng: np.random.Generator,
    h: int = 1024,
    w: int = 1024,
    signals=(),
    floor_db: np.ndarray | None = None,
    extra_columns: dict[int, float] | None = None,
) -> np.ndarray:
    """A spectrogram image made like the real one: power-domain noise (mean of LOOKS
    exponentials), signals as extra power, dB, then 0 = median - 6 dB, 1 unit = 50 dB.

    ``signals``: (x0, y0, x1, y1, snr_db) pixel boxes; ``floor_db``: per-column floor shape;
    ``extra_columns``: always-on lines {column: snr_db} (DC spike, carriers)."""
    floor = np.ones(w) if floor_db is None else 10 ** (floor_db / 10)
    power = rng.gamma(LOOKS, 1.0 / LOOKS, size=(h, w)) * floor[None, :]
    for x0, y0, x1, y1, snr_db in signals:
        power[y0:y1, x0:x1] += (
            10 ** (snr_db / 10) * floor[None, x0:x1] * rng.gamma(LOOKS, 1.0 / LOOKS, (y1 - y0, x1 - x0))
        )
    for col, snr_db in (extra_columns or {}).items():
        power[:, col] += 10 ** (snr_db / 10) * floor[col]
    db = 10 * np.log10(power)
    median = np.median(db[::3, ::3])
    return np.clip((db - (median - 6.0)) / 50.0, 0.0, 1.0).astype(np.float32)


def make_frame(image: np.ndarray, *, rate: float = 20e6, fc: float = 2.4e9, seq: int = 0) -> Frame:
    h, w = image.shape
    chunk = Chunk(
        iq=np.zeros(8, np.complex64),
        sample_rate_hz=rate,
        center_freq_hz=fc,
        start_sample=0,
        seq=seq,
        arrived_ns=0,
    )
    return Frame(image=image, t0_s=0.0, dt_s=0.2 / h, f0_hz=fc - rate / 2, df_hz=rate / w, chunk=chunk)


def best_iou(dets, box) -> float:
    if not dets:
        return 0.0
    got = np.array([(d.x0, d.y0, d.x1, d.y1) for d in dets])
    return float(iou_matrix(got, np.array([box[:4]], float)).max())


SIGNALS = [
    (100, 100, 160, 400, 8.0),  # a burst
    (500, 0, 503, 1024, 12.0),  # a narrow carrier, on for the whole frame
    (700, 600, 900, 700, 4.0),  # weak and wide
    (300, 800, 312, 830, 10.0),  # short and narrow
    (40, 20, 240, 24, 10.0),  # a 4-row pulse, wideband
]


@pytest.fixture(scope="module")
def detector() -> EnergyDetector:
    det = EnergyDetector()
    det.warmup((1024, 1024))
    return det


def test_finds_each_rectangle(detector):
    frame = make_frame(noise_image(np.random.default_rng(1), signals=SIGNALS))
    dets = detector.detect(frame)
    for sig in SIGNALS:
        assert best_iou(dets, sig) >= 0.5, (sig, [(d.x0, d.y0, d.x1, d.y1) for d in dets])
    assert len(dets) == len(SIGNALS)
    for d in dets:
        assert d.label == "unknown" and d.detector == "energy" and 0 < d.score < 1
    # Both are plain signals to the calibration; the raw score follows SNR: the 12 dB carrier
    # outscores the 4 dB block.
    by_box = {(d.x0, d.y0): d.score for d in dets}
    assert by_box[(500.0, 0.0)] > 0.9 and by_box[(700.0, 600.0)] > 0.9
    raw = {
        (d.x0, d.y0): d.score for d in EnergyDetector(options=EnergyOptions(calibration="none")).detect(frame)
    }
    assert raw[(500.0, 0.0)] > raw[(700.0, 600.0)]


def test_no_false_detections_on_noise(detector):
    total = sum(
        len(detector.detect(make_frame(noise_image(np.random.default_rng(100 + s))))) for s in range(20)
    )
    assert total <= 1


def test_rolled_off_sloped_floor_and_dc_spike(detector):
    w = 1024
    f = np.linspace(-1, 1, w)
    # 6 dB tilt across the band, 20 dB roll-off over the outer 8 % at each edge (RTL-SDR-like).
    floor_db = 3.0 * f - 20.0 * np.clip((np.abs(f) - 0.84) / 0.16, 0, None) ** 2
    dc = w // 2
    total_false = 0
    for seed in range(6):
        rng = np.random.default_rng(200 + seed)
        image = noise_image(rng, floor_db=floor_db, extra_columns={dc: 15.0})
        total_false += len(detector.detect(make_frame(image)))
    assert total_false <= 1
    # An always-on carrier away from DC is a signal; the same line at DC is the receiver's spike.
    image = noise_image(np.random.default_rng(7), floor_db=floor_db, extra_columns={dc: 15.0, 300: 15.0})
    dets = detector.detect(make_frame(image))
    assert [(d.x0, d.x1, d.y0, d.y1) for d in dets] == [(300.0, 301.0, 0.0, 1024.0)]
    unguarded = EnergyDetector(options=EnergyOptions(dc_guard_px=0)).detect(make_frame(image))
    assert sorted(d.x0 for d in unguarded) == [300.0, float(dc)]


def test_signals_on_a_rolled_off_floor_are_found(detector):
    f = np.linspace(-1, 1, 1024)
    floor_db = 4.0 * f - 20.0 * np.clip((np.abs(f) - 0.84) / 0.16, 0, None) ** 2
    sigs = [(40, 100, 70, 300, 10.0), (600, 500, 640, 900, 6.0)]  # the first sits on the roll-off
    dets = detector.detect(make_frame(noise_image(np.random.default_rng(3), signals=sigs, floor_db=floor_db)))
    for sig in sigs:
        assert best_iou(dets, sig) >= 0.5
    assert len(dets) == 2


def test_otsu_mode():
    det = EnergyDetector("otsu", EnergyOptions(method="otsu"))
    strong = [(100, 100, 200, 400, 15.0), (600, 50, 604, 1000, 20.0)]
    dets = det.detect(make_frame(noise_image(np.random.default_rng(11), signals=strong)))
    assert all(best_iou(dets, s) >= 0.5 for s in strong) and len(dets) == 2
    assert all(d.detector == "otsu" for d in dets)
    total = sum(
        len(det.detect(make_frame(noise_image(np.random.default_rng(300 + s), 512, 512)))) for s in range(5)
    )
    assert total == 0


def test_a_crowded_frame_is_boxed_whole():
    """150 bursts in one frame (a busy ISM band): every one boxed by the default settings, not
    the strongest 100 (the cap is set for crowded scenes, not for a typical one)."""
    bursts = [(6 * i + 4, (i * 137) % 800, 6 * i + 7, (i * 137) % 800 + 120, 15.0) for i in range(150)]
    dets = EnergyDetector().detect(make_frame(noise_image(np.random.default_rng(5), signals=bursts)))
    assert len(dets) == 150 and all(best_iou(dets, b) >= 0.5 for b in bursts)


def test_limits_score_threshold_and_degenerate_images():
    image = noise_image(np.random.default_rng(1), signals=SIGNALS)
    assert len(EnergyDetector(options=EnergyOptions(max_detections=2)).detect(make_frame(image))) == 2
    high = EnergyDetector(score_threshold=0.75).detect(make_frame(image))
    assert high and all(d.score >= 0.75 for d in high) and len(high) < len(SIGNALS)
    det = EnergyDetector()
    for image in (
        np.zeros((64, 64), np.float32),
        np.ones((64, 64), np.float32),
        np.zeros((1, 5), np.float32),
    ):
        assert det.detect(make_frame(image)) == []


def test_from_config_and_option_errors_name_the_key():
    cfg = DetectorConfig(
        name="e1",
        kind="energy",
        priority=3,
        score_threshold=0.2,
        options={"seed_sigma": 6, "method": "otsu", "closing_f": 5},
    )
    det = EnergyDetector.from_config(cfg)
    assert isinstance(det, Detector) and det.kind == "energy"
    assert (det.name, det.priority, det.score_threshold) == ("e1", 3, 0.2)
    assert det.options.seed_sigma == 6.0 and det.options.method == "otsu" and det.options.closing_f == 5
    assert EnergyDetector.from_config(DetectorConfig()).score_threshold == 0.0
    assert EnergyDetector.from_config(DetectorConfig(), dynamic_range_db=60).options.dynamic_range_db == 60.0
    bad = {
        "margin_db": r"config key 'detectors.e1.options.margin_db': unknown key",
        "seed_sigma": r"'detectors.e1.options.seed_sigma': must be > 0",
        "method": r"'detectors.e1.options.method': 'mean' is not one of floor, otsu",
        "smooth_t": r"'detectors.e1.options.smooth_t': expected an integer",
    }
    values = {"margin_db": 3.0, "seed_sigma": -1.0, "method": "mean", "smooth_t": "three"}
    for key, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            EnergyDetector.from_config(DetectorConfig(name="e1", options={key: values[key]}))
    with pytest.raises(ConfigError, match=r"detectors\.energy\.options\.min_area_px"):
        EnergyDetector(options=EnergyOptions(min_area_px=0))


def _band_noise(rng, n, rate, f_lo, f_hi, power):
    spec = np.fft.fft(rng.normal(size=n) + 1j * rng.normal(size=n))
    freqs = np.fft.fftfreq(n, 1 / rate)
    spec[(freqs < f_lo) | (freqs >= f_hi)] = 0
    x = np.fft.ifft(spec)
    return x * np.sqrt(power / np.mean(np.abs(x) ** 2))


def test_real_spectrogram_frames():
    """IQ -> the real Spectrogrammer -> detector; truth boxes in physical units."""
    rate, fc, n = 1e6, 100e6, 200_000
    rng = np.random.default_rng(5)
    t = np.arange(n) / rate
    iq = (rng.normal(size=n) + 1j * rng.normal(size=n)) / np.sqrt(2)
    on = (t >= 0.05) & (t < 0.15)
    iq += on * 0.1 * np.exp(2j * np.pi * 150e3 * t)  # a tone burst at fc + 150 kHz
    burst = (t >= 0.02) & (t < 0.08)
    iq += burst * _band_noise(rng, n, rate, -300e3, -100e3, 1.0)  # 200 kHz wide, ~4 dB over the floor
    chunk = Chunk(
        iq=iq.astype(np.complex64),
        sample_rate_hz=rate,
        center_freq_hz=fc,
        start_sample=0,
        seq=0,
        arrived_ns=0,
    )
    spec = Spectrogrammer(SpectrogramConfig(backend="numpy", nfft=1024, hop=512, height=256, width=256))
    frame = spec.process(chunk)
    dets = EnergyDetector().detect(frame)
    truth = np.array(
        [
            (fc + 150e3 - 1e3, 0.05, fc + 150e3 + 1e3, 0.15),
            (fc - 300e3, 0.02, fc - 100e3, 0.08),
        ]
    )
    got = np.array([(d.f_low_hz, d.t_start_s, d.f_high_hz, d.t_stop_s) for d in dets]).reshape(-1, 4)
    iou = iou_matrix(got, truth)
    assert len(dets) == 2, got
    # The tone is narrower than a column, so judge it on time and on containing the frequency.
    tone = dets[int(np.argmax(iou[:, 0] > 0))]
    assert tone.f_low_hz <= fc + 150e3 <= tone.f_high_hz and tone.bandwidth_hz <= 3 * frame.df_hz
    assert abs(tone.t_start_s - 0.05) < 0.005 and abs(tone.t_stop_s - 0.15) < 0.005
    assert iou[:, 1].max() >= 0.7


# --- frame geometry, low sample rates, real captures ----------------------------------------
def _chunks(iq: np.ndarray, rate: float, fc: float, per_chunk: int):
    for seq, start in enumerate(range(0, iq.size, per_chunk)):
        yield Chunk(
            iq=iq[start : start + per_chunk].astype(np.complex64),
            sample_rate_hz=rate,
            center_freq_hz=fc,
            start_sample=start,
            seq=seq,
            arrived_ns=0,
        )


def _default_frames(iq: np.ndarray, rate: float, fc: float = 100e6) -> list[Frame]:
    spec = Spectrogrammer(SpectrogramConfig(backend="numpy"))  # nfft 4096, hop 2048, 1024 x 1024
    return [spec.process(c) for c in _chunks(iq, rate, fc, round(0.2 * rate))]


@pytest.mark.parametrize("rate", [0.25e6, 2.4e6])
def test_rows_per_slice_from_the_frame_and_from_the_image_agree(rate):
    rng = np.random.default_rng(9)
    n = round(0.2 * rate)
    (frame,) = _default_frames((rng.normal(size=n) + 1j * rng.normal(size=n)) / np.sqrt(2), rate)
    from_frame = frame_rows_per_slice(frame, 2048)
    assert from_frame == pytest.approx(2048 * 1024 / (0.2 * rate), rel=0.1)  # hop / samples per row
    assert measured_rows_per_slice(frame.image) == pytest.approx(from_frame, rel=0.15)


def test_weak_tone_at_a_low_sample_rate_is_found_in_every_frame():
    """2.4 MS/s: each STFT slice fills ~4.4 rows, so per-pixel smoothing along time gains
    nothing; counting the smoothing in slices (and integrating over the component) does."""
    rate, fc, n = 2.4e6, 100e6, 3 * 480_000
    rng = np.random.default_rng(21)
    t = np.arange(n) / rate
    f_tone = 300.3e3
    iq = (rng.normal(size=n) + 1j * rng.normal(size=n)) / np.sqrt(2) + 0.06 * np.exp(2j * np.pi * f_tone * t)
    frames = _default_frames(iq, rate, fc)
    det = EnergyDetector()
    for frame in frames:
        col = int((fc + f_tone - frame.f0_hz) / frame.df_hz)
        floor = np.median(frame.image[:, col - 40 : col - 10])
        excess_db = (np.median(frame.image[:, col]) - floor) * 50.0
        assert 5.0 < excess_db < 8.0  # the tone stands 6-7 dB over the floor in its column
        dets = det.detect(frame)
        hits = [d for d in dets if d.f_low_hz <= fc + f_tone <= d.f_high_hz]
        assert len(hits) == 1 and hits[0].t_stop_s - hits[0].t_start_s > 0.9 * (frame.t1_s - frame.t0_s)
        assert len(dets) == 1, [(d.f_low_hz, d.t_start_s) for d in dets]


@pytest.mark.parametrize("rate", [0.25e6, 2.4e6])
def test_no_false_detections_on_noise_at_low_sample_rates(rate):
    rng = np.random.default_rng(33)
    n = 4 * round(0.2 * rate)
    frames = _default_frames((rng.normal(size=n) + 1j * rng.normal(size=n)) / np.sqrt(2), rate)
    det = EnergyDetector()
    assert sum(len(det.detect(f)) for f in frames) <= 1


CAPTURES = Path(__file__).resolve().parents[1].parent / "shared" / "captures"
ADSB = CAPTURES / "dump1090_modes1.sigmf-meta"


@pytest.mark.skipif(not ADSB.exists(), reason="../shared/captures not present")
def test_adsb_bursts_in_a_real_rtl_sdr_capture():
    """cu8 at 2 MS/s, 0.178 s: Mode S replies (64–120 µs, ~15 dB) between 0.02 and 0.17 s,
    each far shorter than one 2 ms STFT slice, plus the receiver's DC offset and spurs."""
    from rfstream.sources.sigmf import SigMFSource

    spec = Spectrogrammer(SpectrogramConfig(backend="numpy"))
    source = SigMFSource(ADSB)
    try:
        frames = [spec.process(chunk) for chunk in source]
    finally:
        source.close()
    dets = [d for f in frames for d in EnergyDetector().detect(f)]
    duration = frames[-1].t1_s
    # The receiver's always-on spur (a narrow line over the whole capture) is a real signal;
    # everything else must be a burst inside 0.02-0.17 s (one 2 ms slice of slack).
    bursts = [d for d in dets if d.t_stop_s - d.t_start_s < 0.5 * duration]
    assert len(bursts) >= 5
    for d in bursts:
        assert d.t_start_s >= 0.015 and d.t_stop_s <= 0.175, (d.t_start_s, d.t_stop_s)
        assert d.f_low_hz >= 1089e6 and d.f_high_hz <= 1091e6
    assert len(dets) - len(bursts) <= 2


def test_scores_are_calibrated_by_the_fusion_file(tmp_path):
    """The published score is the fitted logistic of the box's SNR and shape; "none" is the raw score."""
    import dataclasses as dc

    from rfstream.detect.calibration import Logistic
    from rfstream.detect.energy import ENERGY_FEATURES, calibration_features
    from rfstream.detect.fuse import FusionModel
    from rfstream.errors import ConfigError

    frame = make_frame(noise_image(np.random.default_rng(1), signals=SIGNALS))
    raw = EnergyDetector(options=EnergyOptions(calibration="none")).detect(frame)
    # a made-up fit that prefers wide boxes: the order changes, the boxes do not
    fit = Logistic(
        ENERGY_FEATURES,
        tuple(20.0 if f == "log2_width_cols" else -1.0 if f == "bias" else 0.0 for f in ENERGY_FEATURES),
    )
    path = tmp_path / "fusion.json"
    path.write_text(FusionModel(energy=fit).to_json())
    calibrated = EnergyDetector(options=EnergyOptions(calibration=str(path))).detect(frame)
    assert sorted((d.x0, d.y0) for d in calibrated) == sorted((d.x0, d.y0) for d in raw)
    by_box = {(d.x0, d.y0, d.x1, d.y1): d.score for d in raw}
    for d in calibrated:
        box = np.array([[d.x0, d.y0, d.x1, d.y1]])
        want = fit(
            calibration_features(box, np.array([by_box[(d.x0, d.y0, d.x1, d.y1)]]), (1024, 1024), 10.0)
        )
        assert d.score == pytest.approx(float(want[0]))
    assert [d.score for d in calibrated] == sorted((d.score for d in calibrated), reverse=True)
    with pytest.raises(ConfigError, match="fusion_file"):
        EnergyDetector(options=dc.replace(EnergyOptions(), calibration=str(tmp_path / "missing.json")))


def test_fill_tells_a_burst_from_a_sweep_across_its_box():
    """A burst fills its box; a chirp's diagonal (or a scatter of noise) does not, and the shipped
    calibration, fitted on validation recordings, believes a fuller box more at the same SNR."""
    from rfstream.detect.energy import ENERGY_FEATURES

    burst = (100, 100, 160, 140, 10.0)
    sweep = [(500 + 3 * k, 300 + k, 503 + 3 * k, 301 + k, 10.0) for k in range(40)]  # 3 columns a row
    det = EnergyDetector()
    boxes, _, features = det.measure(
        make_frame(noise_image(np.random.default_rng(3), signals=[burst, *sweep]))
    )
    fill = dict(
        zip(map(tuple, boxes[:, :2].tolist()), features[:, ENERGY_FEATURES.index("fill")], strict=True)
    )
    assert fill[(100.0, 100.0)] >= 0.9
    assert fill[(500.0, 300.0)] <= 0.2
    fuller = features.copy()
    fuller[:, ENERGY_FEATURES.index("fill")] = 1.0
    emptier = features.copy()
    emptier[:, ENERGY_FEATURES.index("fill")] = 0.3
    assert np.all(det.calibration(fuller) > det.calibration(emptier))


# --- bursts in time: split where the transmitter is off, keyed bits and radar trains kept whole ----
def _keyed(rng, n, rate, on: np.ndarray, f_lo: float, f_hi: float, snr_db: float) -> np.ndarray:
    """Unit noise plus a band-limited signal gated by the boolean mask ``on`` (one value per sample)."""
    noise = (rng.normal(size=n) + 1j * rng.normal(size=n)) / np.sqrt(2)
    power = 10 ** (snr_db / 10) * (f_hi - f_lo) / rate  # in-band SNR
    return noise + on * _band_noise(rng, n, rate, f_lo, f_hi, power)


def _boxes_on(dets, f_lo, f_hi):
    return sorted(
        (d for d in dets if d.f_high_hz > 100e6 + f_lo and d.f_low_hz < 100e6 + f_hi),
        key=lambda d: d.t_start_s,
    )


def test_tdma_bursts_are_one_box_each():
    """Bursts of 1.2 ms every 4.8 ms on one channel (TDMA): the smoothing and closing join them,
    the split at the silent rows gives one box per burst."""
    rate, n = 10e6, 2_000_000
    rng = np.random.default_rng(41)
    t = np.arange(n) / rate
    on = (t % 4.8e-3) < 1.2e-3
    (frame,) = _default_frames(_keyed(rng, n, rate, on, 1e6, 1.5e6, 20.0), rate)
    boxes = _boxes_on(EnergyDetector().detect(frame), 1e6, 1.5e6)
    starts = np.arange(0, 0.2 - 1.2e-3, 4.8e-3)
    truth = np.array([(100e6 + 1e6, s, 100e6 + 1.5e6, s + 1.2e-3) for s in starts])
    got = np.array([(d.f_low_hz, d.t_start_s, d.f_high_hz, d.t_stop_s) for d in boxes]).reshape(-1, 4)
    matched = iou_matrix(got, truth).max(axis=0) >= 0.5
    assert matched.mean() >= 0.9, (matched.mean(), len(boxes))
    assert max(d.t_stop_s - d.t_start_s for d in boxes) < 2 * 1.2e-3 + 1e-3  # none spans two bursts


@pytest.mark.parametrize("baud", [1000, 2000])
def test_keyed_bits_of_one_packet_stay_one_box(baud):
    """A pulse-width keyed packet (each bit on for a third or two thirds of its period, as most
    remote sensors send) whose marks are shorter than the split's shortest burst: marks and spaces
    are one emission, one box. (At 500 bit/s and below, marks of 4+ slices are cut apart: a stated
    limitation, docs/architecture.md.)"""
    rate, n = 10e6, 2_000_000
    rng = np.random.default_rng(42)
    bits = rng.integers(0, 2, int(0.1 * baud))
    unit = np.where(bits[:, None] == 1, [1, 1, 0], [1, 0, 0]).reshape(-1)
    keyed = np.repeat(unit, round(rate / baud) // 3).astype(bool)
    start = round(0.05 * rate)
    on = np.zeros(n, bool)
    on[start : start + keyed.size] = keyed
    (frame,) = _default_frames(_keyed(rng, n, rate, on, -2e6, -1.97e6, 25.0), rate)
    boxes = _boxes_on(EnergyDetector().detect(frame), -2e6, -1.97e6)
    assert len(boxes) == 1, [(d.t_start_s, d.t_stop_s) for d in boxes]
    assert boxes[0].t_start_s < 0.052 and boxes[0].t_stop_s > 0.148


def test_irregular_short_pulses_are_one_slice_each_and_a_regular_train_is_one_box():
    """120 µs replies at irregular times (ADS-B-like) are boxed one by one, each one STFT slice
    tall, where the reply is; 20 µs radar pulses every 1 ms are one train."""
    rate, n = 10e6, 2_000_000
    rng = np.random.default_rng(43)
    t = np.arange(n) / rate
    replies = np.array([0.012, 0.031, 0.047, 0.081, 0.096, 0.133, 0.151, 0.178])
    on_replies = np.zeros(n, bool)
    for s in replies:
        on_replies |= (t >= s) & (t < s + 120e-6)
    on_radar = ((t % 1e-3) < 20e-6) & (t > 0.02) & (t < 0.12)
    iq = _keyed(rng, n, rate, on_replies, 2e6, 4e6, 25.0)
    iq += _keyed(rng, n, rate, on_radar, -4e6, -3e6, 30.0)
    (frame,) = _default_frames(iq, rate)
    dets = EnergyDetector().detect(frame)
    reply_boxes = _boxes_on(dets, 2e6, 4e6)
    slice_s = 2048 / rate
    assert len(reply_boxes) == replies.size, [(d.t_start_s, d.t_stop_s) for d in reply_boxes]
    for d, s in zip(reply_boxes, replies, strict=True):
        assert d.t_stop_s - d.t_start_s == pytest.approx(slice_s, rel=0.1)
        assert d.t_start_s - slice_s / 2 <= s + 60e-6 <= d.t_stop_s + slice_s / 2
    (train,) = _boxes_on(dets, -4e6, -3e6)
    assert train.t_start_s < 0.022 and train.t_stop_s > 0.118


def test_a_carrier_is_one_column_even_under_a_burst():
    """A 15 dB carrier straddling two columns (the window's main lobe lights both) is boxed one
    column wide where its power is; a stronger burst across it for 60 ms does not widen its box."""
    rate, n = 10e6, 2_000_000
    rng = np.random.default_rng(44)
    t = np.arange(n) / rate
    df = rate / 1024
    f_tone = 1e6 + 0.5 * df  # on a column boundary
    iq = (rng.normal(size=n) + 1j * rng.normal(size=n)) / np.sqrt(2)
    iq += np.sqrt(10**1.5 * 4 / 4096) * np.exp(2j * np.pi * f_tone * t)  # 15 dB in one 4096-bin
    burst = (t > 0.05) & (t < 0.11)
    iq += burst * _band_noise(rng, n, rate, f_tone - 6 * df, f_tone + 8 * df, 5.0)
    (frame,) = _default_frames(iq, rate)
    dets = EnergyDetector().detect(frame)
    tone = [d for d in dets if d.t_stop_s - d.t_start_s > 0.15]
    assert len(tone) == 1, [(d.f_low_hz - 100e6, d.t_start_s, d.t_stop_s) for d in dets]
    (d,) = tone
    assert d.f_high_hz - d.f_low_hz == pytest.approx(df, rel=0.01)
    assert d.f_low_hz <= 100e6 + f_tone <= d.f_high_hz


def test_an_ook_packet_broken_by_a_run_of_spaces_is_joined():
    """NRZ on-off keying at 4 kBd: a run of zeros (about 1 ms) breaks the mask in two; the pieces
    are narrow (a keyed carrier), on one channel and close, so they are one packet again."""
    rate, n = 10e6, 2_000_000
    rng = np.random.default_rng(42)
    bits = rng.integers(0, 2, 400)
    bits[:4] = 1, 0, 1, 0
    start = round(0.05 * rate)
    on = np.zeros(n, bool)
    sps = round(rate / 4e3)
    on[start : start + bits.size * sps] = np.repeat(bits, sps).astype(bool)
    (frame,) = _default_frames(_keyed(rng, n, rate, on, -2e6, -1.98e6, 25.0), rate)
    boxes = _boxes_on(EnergyDetector().detect(frame), -2e6, -1.98e6)
    assert len(boxes) == 1, [(d.t_start_s, d.t_stop_s) for d in boxes]
    assert boxes[0].t_start_s < 0.052 and boxes[0].t_stop_s > 0.148


def test_a_cw_burst_crossed_by_hops_is_boxed_apart_from_them():
    """A carrier on for 80 ms of the 200 ms frame (not a frame-long carrier) crossed by five 1 MHz
    wide, 2 ms hops: the carrier is one narrow box over its own span, each hop one box across it,
    and the hops on either side of the carrier stay whole (one box spanning it)."""
    rate, n = 10e6, 2_000_000
    rng = np.random.default_rng(45)
    t = np.arange(n) / rate
    df = rate / 1024
    f_tone = 1e6 + 0.5 * df
    iq = (rng.normal(size=n) + 1j * rng.normal(size=n)) / np.sqrt(2)
    cw = (t > 0.06) & (t < 0.14)
    iq += cw * np.sqrt(10**2.0 * 4 / 4096) * np.exp(2j * np.pi * f_tone * t)  # 20 dB in one 4096-bin
    hops = [0.068, 0.083, 0.097, 0.112, 0.126]
    for s in hops:
        on = (t >= s) & (t < s + 2e-3)
        iq += on * _band_noise(rng, n, rate, f_tone - 0.4e6, f_tone + 0.6e6, 10 ** (15 / 10) * 0.1)
    (frame,) = _default_frames(iq, rate)
    dets = EnergyDetector().detect(frame)
    seen = [
        (round((d.f_low_hz - 100e6) / 1e3), round((d.f_high_hz - 100e6) / 1e3), d.t_start_s, d.t_stop_s)
        for d in dets
    ]
    carrier = np.array([(100e6 + f_tone - df / 2, 0.06, 100e6 + f_tone + df / 2, 0.14)])
    hop_truth = np.array([(100e6 + f_tone - 0.4e6, s, 100e6 + f_tone + 0.6e6, s + 2e-3) for s in hops])
    got = np.array([(d.f_low_hz, d.t_start_s, d.f_high_hz, d.t_stop_s) for d in dets]).reshape(-1, 4)
    assert iou_matrix(got, carrier).max() >= 0.5, seen
    assert (iou_matrix(got, hop_truth).max(axis=0) >= 0.5).all(), seen
