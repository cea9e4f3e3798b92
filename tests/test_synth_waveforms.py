"""Each waveform variant and each channel/receiver effect of the synthesiser has the property it claims."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from rfstream.sources.synth import DENSITIES, FINE_LABELS, KINDS, render_capture, scene_kinds
from rfstream.sources.synth import waves as w
from rfstream.sources.synth.channel import Receiver, drift, fading_gain, multipath, phase_noise

FS = 2e6


def instances(kind: str, fine: str, *, fs: float = FS, n: int = int(0.4 * FS), tries: int = 60) -> list:
    """The instances of the first emitter seed whose variant is ``fine`` (no channel effects)."""
    for seed in range(tries):
        out = list(w.EMITTERS[kind](np.random.default_rng([seed, 77]), fs, n, (20.0, 20.0)))
        if out and all(i.fine == fine for i in out):
            return out
    raise AssertionError(f"no {kind}/{fine} in {tries} seeds")


def wave_of(inst) -> np.ndarray:
    return np.asarray(inst.render(0, inst.count), dtype=np.complex128)


def inst_freq(x: np.ndarray, fs: float) -> np.ndarray:
    return np.angle(x[1:] * np.conj(x[:-1])) * fs / (2 * np.pi)


def psd(x: np.ndarray, fs: float, nfft: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    segs = x[: len(x) // nfft * nfft].reshape(-1, nfft) * np.hanning(nfft)
    p = np.fft.fftshift((np.abs(np.fft.fft(segs, axis=1)) ** 2).mean(axis=0))
    return np.fft.fftshift(np.fft.fftfreq(nfft, 1 / fs)), p


def test_every_fine_label_belongs_to_one_family_and_the_families_are_the_model_labels():
    assert set(FINE_LABELS) == set(KINDS)
    fine = [f for fs in FINE_LABELS.values() for f in fs]
    assert len(fine) == len(set(fine))


@pytest.mark.parametrize("mod", ["bpsk", "qpsk", "8psk", "qam16", "qam64"])
def test_constellations_have_unit_power_and_their_size(mod):
    sym = w._constellation(np.random.default_rng(0), mod, 20000)
    assert np.mean(np.abs(sym) ** 2) == pytest.approx(1.0, rel=0.03)
    size = {"bpsk": 2, "qpsk": 4, "8psk": 8, "qam16": 16, "qam64": 64}[mod]
    assert len(np.unique(np.round(sym, 4))) == size


@pytest.mark.parametrize(("sps", "alpha"), [(8, 0.35), (40, 0.25)])
def test_rrc_shaped_psk_occupies_the_symbol_rate_times_one_plus_alpha(sps, alpha):
    x = w._rrc_burst(np.random.default_rng(1), "qpsk", sps, alpha, 200_000)
    lo, hi = w._obw(x.astype(np.complex64), FS)
    assert hi - lo == pytest.approx(FS / sps * (1 + alpha), rel=0.15)


def test_ofdm_has_a_null_dc_carrier_and_the_band_it_claims():
    (inst, *_) = instances("ofdm", "ofdm", n=int(0.4 * FS))
    x = wave_of(inst)
    fc = 0.5 * (inst.f_low_hz + inst.f_high_hz)
    f, p = psd(x, FS, 16384)
    inside = p[(f > inst.f_low_hz) & (f < inst.f_high_hz)]
    at_dc = p[np.argmin(np.abs(f - fc))]
    assert at_dc < 0.3 * np.median(inside)  # the null carrier at the centre


def test_two_and_four_fsk_use_two_and_four_tones():
    for fine, levels in (("2fsk", 2), ("4fsk", 4)):
        for inst in instances("fsk", fine, tries=200):
            x = wave_of(inst)
            fi = inst_freq(x, FS)
            centre = np.median(fi)
            lo, hi = np.percentile(fi - centre, [0.5, 99.5])
            pad = 0.2 * (hi - lo)
            hist, _ = np.histogram(fi - centre, bins=80, range=(lo - pad, hi + pad))
            peaks = [i for i in range(1, 79) if hist[i] >= hist[i - 1] and hist[i] > hist[i + 1]]
            strong = [i for i in peaks if hist[i] > 0.25 * hist.max()]
            assert len(strong) == levels, (fine, inst.comment, strong)
            break


def test_gmsk_turns_the_phase_a_quarter_cycle_per_symbol():
    inst = instances("fsk", "gmsk", tries=200)[0]
    rs = float(inst.comment.split()[1]) * 1e3
    sps = round(FS / rs)
    x = wave_of(inst)
    carrier = np.median(inst_freq(x, FS))
    phase = np.unwrap(np.angle(x * np.exp(-2j * np.pi * carrier * np.arange(x.size) / FS)))
    per_symbol = np.abs(np.diff(phase[::sps]))
    # A run of equal bits turns the phase by h·π = π/2 per symbol; Gaussian ISI makes alternations less.
    assert np.percentile(per_symbol, 90) == pytest.approx(np.pi / 2, rel=0.1)
    assert per_symbol.max() < 1.15 * np.pi / 2


def test_ook_keys_on_and_off_and_ask_keeps_a_floor():
    ook = np.abs(wave_of(instances("ook", "ook")[0]))
    assert 0.2 < np.mean(ook > 0.5 * ook.max()) < 0.8  # a duty cycle, not a carrier
    assert np.percentile(ook, 5) < 0.05 * ook.max()  # off means off
    ask = instances("ook", "ask")[0]
    depth = float(ask.comment.split()[-1])
    env = np.abs(wave_of(ask))
    assert np.percentile(env, 5) / env.max() == pytest.approx(1 - depth, abs=0.08)


def test_pwm_keyed_bits_are_short_or_long_pulses():
    env = np.abs(wave_of(instances("ook", "ook-pwm")[0]))
    on = env > 0.5 * env.max()
    edges = np.flatnonzero(np.diff(on.astype(int)))
    lengths = np.diff(edges)[::2] if on[edges[0] + 1] else np.diff(edges)[1::2]
    short, long_ = np.percentile(lengths, 10), np.percentile(lengths, 90)
    assert long_ / short == pytest.approx(2.0, rel=0.25)


def test_am_envelope_depth_and_fm_deviation():
    am = instances("am", "am")[0]
    depth = float(am.comment.split()[2])
    env = np.abs(wave_of(am))
    measured = (env.max() - env.min()) / (env.max() + env.min())
    assert measured == pytest.approx(depth, abs=0.1)
    fm = instances("fm", "nfm")[0]
    dev = float(fm.comment.split()[-2])
    fi = inst_freq(wave_of(fm), FS)
    assert np.max(np.abs(fi - np.median(fi))) <= 1.1 * dev
    assert np.percentile(np.abs(fi - np.median(fi)), 99) > 0.3 * dev


def test_voice_has_syllables():
    msg = w._voice(np.random.default_rng(3), 2.0)
    t = np.arange(0, 2.0, 1 / 16000)
    x = msg(t)
    assert np.max(np.abs(x)) == pytest.approx(1.0, abs=0.05)
    loudness = np.sqrt(np.convolve(x**2, np.ones(800) / 800, mode="valid"))[::400]  # 50 ms windows
    assert np.percentile(loudness, 90) > 4 * np.percentile(loudness, 10)


def test_lora_preamble_chirps_sweep_the_bandwidth():
    inst = instances("chirp", "lora", fs=FS, n=int(0.5 * FS))[0]
    bw = float(inst.comment.split("BW ")[1].split()[0]) * 1e3
    sf = int(inst.comment.split("SF")[1].split()[0])
    sym = round(2**sf / bw * FS)
    fi = inst_freq(wave_of(inst)[: 2 * sym], FS)[5 : sym - 5]
    assert fi.max() - fi.min() == pytest.approx(bw, rel=0.1)
    assert np.mean(np.diff(fi) > 0) > 0.95  # up-chirp


def test_adsb_squitter_is_120_us_of_ppm_after_the_preamble():
    fs = 10e6
    inst = instances("pulsed", "adsb", fs=fs, n=int(0.2 * fs), tries=200)[0]
    assert inst.count == 1200
    env = np.abs(wave_of(inst)) > 0.5
    us = 10

    def on(t0):
        return env[int(t0 * us) : int((t0 + 0.5) * us)].mean() > 0.5

    assert [on(t) for t in (0, 1, 3.5, 4.5)] == [True] * 4
    assert [on(t) for t in (0.5, 1.5, 2.0, 2.5, 3.0)] == [False] * 5
    for bit in range(112):  # exactly one pulse per bit, in its first or second half
        assert on(8 + bit) != on(8.5 + bit)


def test_dsss_spreads_to_the_chip_rate():
    inst = instances("psk", "dsss", tries=200)[0]
    chip_rate = float(inst.comment.split(", ")[1].split()[0]) * 1e3
    assert inst.f_high_hz - inst.f_low_hz == pytest.approx(chip_rate * 1.35, rel=0.3)


def test_tdma_bursts_share_a_carrier_in_slots():
    bursts = instances("psk", "tdma", n=int(0.6 * FS), tries=200)
    assert len(bursts) >= 2
    centres = {round(0.5 * (b.f_low_hz + b.f_high_hz), -3) for b in bursts}
    assert max(centres) - min(centres) < 0.05 * FS
    slot = float(bursts[0].comment.split(" of ")[1].split()[0]) * 1e-3
    starts = np.array([b.start for b in bursts]) / FS
    gaps = np.diff(starts) / slot
    assert np.allclose(gaps, np.round(gaps), atol=0.02) and (gaps > 0.98).all()


# --- channel effects ------------------------------------------------------------------------------
def tone(n: int = 200_000, f: float = 100e3) -> np.ndarray:
    return np.exp(2j * np.pi * f * np.arange(n) / FS).astype(np.complex64)


def test_drift_moves_the_frequency_by_what_it_says():
    fi = inst_freq(drift(tone(), 4e3, FS).astype(np.complex128), FS)
    assert fi[-1000:].mean() - fi[:1000].mean() == pytest.approx(4e3, rel=0.02)


def test_phase_noise_broadens_a_line_to_about_its_linewidth():
    x = phase_noise(tone(400_000), 200.0, FS, np.random.default_rng(0)).astype(np.complex128)
    _, p = psd(x, FS, 65536)
    peak = np.argmax(p)
    half = np.flatnonzero(p > p[peak] / 2)
    width = (half.max() - half.min() + 1) * FS / 65536
    assert 60.0 < width < 800.0  # a clean tone stays in one or two bins (30–60 Hz)


def test_multipath_makes_the_channel_frequency_selective():
    taps = np.zeros(8, complex)
    taps[0], taps[7] = 1.0, 0.7
    _, p = psd(multipath(noise(400_000), taps).astype(np.complex128), FS)
    assert 10 * np.log10(p.max() / p.min()) > 10.0  # notches of 1 - 0.7 against peaks of 1.7


def test_fading_gain_has_unit_power_and_fades():
    g = fading_gain(2_000_000, FS, 0.0, np.array([5.0, 11.0, 17.0]), np.array([0.1, 0.5, 0.9]))
    assert np.mean(np.abs(g) ** 2) == pytest.approx(1.0, rel=0.25)
    assert np.abs(g).min() < 0.3 * np.abs(g).max()


# --- receiver effects -----------------------------------------------------------------------------
def noise(n: int = 1 << 18, seed: int = 0) -> np.ndarray:
    r = np.random.default_rng(seed).standard_normal((2, n)).astype(np.float32) * math.sqrt(0.5)
    return (r[0] + 1j * r[1]).astype(np.complex64)


def test_dc_offset_and_spurs_are_where_they_are_put():
    rx = Receiver(FS, dc=0.1 + 0.0j, spurs=[(250e3, 0.1)])
    y = rx.apply(noise(), 0)
    assert np.mean(y) == pytest.approx(0.1, abs=0.005)
    f, p = psd(y.astype(np.complex128), FS)
    floor = np.median(p)
    assert p[np.argmin(np.abs(f - 250e3))] > 10 * floor and p[np.argmin(np.abs(f))] > 10 * floor


def test_iq_imbalance_leaves_an_image_at_the_expected_level():
    g, ph = 1.03, math.radians(2.0)
    rx = Receiver(FS, iq_gain=g, iq_phase_rad=ph)
    y = rx.apply(tone(), 0).astype(np.complex128)
    f, p = psd(y, FS)
    image = p[np.argmin(np.abs(f + 100e3))] / p[np.argmin(np.abs(f - 100e3))]
    expected = abs((1 - g * np.exp(1j * ph)) / (1 + g * np.exp(-1j * ph))) ** 2
    assert 10 * np.log10(image) == pytest.approx(10 * np.log10(expected), abs=1.5)


def test_rolloff_fades_the_band_edges_and_adc_quantises_to_8_bits():
    from scipy.signal import firwin

    rx = Receiver(FS, rolloff=firwin(47, 0.85).astype(np.float32))
    y = np.concatenate([rx.apply(b, i * 65536) for i, b in enumerate(noise(1 << 18).reshape(4, -1))])
    f, p = psd(y.astype(np.complex128), FS)
    assert np.mean(p[np.abs(f) > 0.47 * FS]) < 0.1 * np.mean(p[np.abs(f) < 0.3 * FS])
    adc = Receiver(FS, adc_lsb=2.0)
    q = adc.apply(noise() * 300, 0)  # far over full scale: clipped
    scale = 2.0 / math.sqrt(0.5)
    levels = q.real * scale
    assert np.allclose(levels, np.round(levels), atol=1e-3)
    assert levels.min() >= -128 and levels.max() <= 127 and np.mean(np.abs(levels) >= 126.5) > 0.5


def test_coloured_floor_has_the_shape_of_its_filter_and_unit_power():
    taps = np.array([1.0, 0.3j, -0.2], np.complex64)
    rx = Receiver(FS, floor_taps=taps / np.sqrt(np.sum(np.abs(taps) ** 2)))
    y = rx.colour(noise(1 << 19)).astype(np.complex128)
    assert np.mean(np.abs(y) ** 2) == pytest.approx(1.0, rel=0.03)
    f, p = psd(y, FS, 256)
    shape = rx.floor_shape(f / FS)
    assert 10 * np.log10(shape.max() / shape.min()) > 3.0  # a visible tilt/ripple
    measured = p / p.mean()
    assert np.allclose(10 * np.log10(measured), 10 * np.log10(shape / shape.mean()), atol=0.8)


def test_world_capture_is_deterministic_and_clean_has_none_of_it():
    a = np.empty(500_000, np.complex64)
    b = np.empty(500_000, np.complex64)
    ann_a = render_capture(a, FS, seed=5, density="crowded")
    ann_b = render_capture(b, FS, seed=5, density="crowded")
    assert ann_a == ann_b and np.array_equal(a, b)
    quiet = np.empty(500_000, np.complex64)
    assert render_capture(quiet, FS, seed=5, num_signals=0, realism="clean") == []
    assert np.mean(np.abs(quiet) ** 2) == pytest.approx(1.0, rel=0.02) and abs(np.mean(quiet)) < 0.01


def test_scene_density_ranges_from_sparse_to_crowded():
    counts = {d: [len(scene_kinds(s, d)[1]) for s in range(20)] for d in DENSITIES}
    assert all(2 <= c <= 4 for c in counts["sparse"])
    assert all(c == len(KINDS) for c in counts["medium"])
    assert all(12 <= c <= 18 for c in counts["crowded"])
    drawn = Counter(scene_kinds(s)[0] for s in range(60))
    assert set(drawn) == set(DENSITIES)


def test_snr_range_down_to_minus_five_db_is_annotated():
    x = np.empty(400_000, np.complex64)
    anns = render_capture(x, FS, seed=2, snr_db_range=(-5.0, 30.0), density="crowded")
    snrs = np.array([a.snr_db for a in anns])
    assert snrs.min() < 0.0 and snrs.max() > 20.0 and (snrs >= -5.0).all()
