"""Spectrogram stage: golden tests against SciPy in float64, streaming invariance, axes, cost."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.signal
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

from rfstream.config import SpectrogramConfig
from rfstream.dsp.spectrogram import Spectrogrammer, resample_matrix
from rfstream.types import Chunk


def noise_and_tone(n: int, rate: float, tone_hz: float, seed: int = 0, tone_amp: float = 4.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    iq = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)
    iq += tone_amp * np.exp(2j * np.pi * tone_hz * np.arange(n) / rate)
    return iq.astype(np.complex64)


def chunks_of(iq: np.ndarray, rate: float, sizes: list[int], fc: float = 100e6) -> list[Chunk]:
    out, pos = [], 0
    for seq, size in enumerate(sizes):
        out.append(
            Chunk(
                iq=iq[pos : pos + size],
                sample_rate_hz=rate,
                center_freq_hz=fc,
                start_sample=pos,
                seq=seq,
                arrived_ns=0,
            )
        )
        pos += size
    return out


def reference_power(iq: np.ndarray, rate: float, nfft: int, hop: int, window: str = "hann") -> np.ndarray:
    """Per-bin STFT power in float64 by SciPy, ascending frequency: ``[n_slices, nfft]``."""
    _, _, ref = scipy.signal.spectrogram(
        iq.astype(np.complex128),
        fs=rate,
        window=window,
        nperseg=nfft,
        noverlap=nfft - hop,
        detrend=False,
        return_onesided=False,
        scaling="density",
        mode="psd",
    )
    return np.fft.fftshift(ref.T * rate, axes=1)  # density -> per-bin power, ascending frequency


def reference_image(power: np.ndarray, height: int, width: int) -> np.ndarray:
    """Float64 power image: each column the total power of the bins it covers, rows area-averaged."""
    n_slices, nfft = power.shape
    freq = resample_matrix(nfft, width).astype(np.float64) * (nfft / width)  # mean -> sum
    time = resample_matrix(n_slices, height).astype(np.float64)
    return time @ (freq @ power.T).T


@pytest.mark.parametrize(
    ("window", "nfft", "hop"),
    [("hann", 1024, 512), ("blackman", 1024, 512), ("boxcar", 1024, 512), ("hann", 1001, 400)],
)
def test_power_matches_scipy_float64(window, nfft, hop):
    rate = 1e6
    iq = noise_and_tone(20_000, rate, 123_456.0)
    sp = Spectrogrammer(SpectrogramConfig(nfft=nfft, hop=hop, window=window, width=256, height=64))
    power, first = sp.power(chunks_of(iq, rate, [iq.size])[0])
    ref = reference_power(iq, rate, nfft, hop, window)
    assert first == 0
    assert power.shape == ref.shape and power.dtype == np.float32
    # float32 throughout: the FFT's rounding is ~1e-7 of a slice's total power, so the weakest
    # bins (the window's sidelobes around the tone) carry the largest relative error.
    rel = np.abs(power - ref) / ref
    assert rel.max() < 1e-3


@pytest.mark.parametrize(
    ("nfft", "hop", "width", "height", "n"),
    [
        (1024, 512, 256, 64, 100_000),  # k = 4 bins per column, 194 slices onto 64 rows
        (1024, 512, 256, 500, 100_000),  # 194 slices repeated onto 500 rows
        (1000, 400, 300, 64, 100_000),  # non-integer bins per column: the sparse path
        (4096, 2048, 1024, 1024, 1_000_000),  # the default geometry, 487 slices
    ],
)
def test_binned_power_and_image_match_scipy_float64(nfft, hop, width, height, n):
    rate = 5e6
    iq = noise_and_tone(n, rate, 1.234e6, tone_amp=3.0)
    cfg = SpectrogramConfig(nfft=nfft, hop=hop, width=width, height=height)
    binned, first = Spectrogrammer(cfg).binned_power(chunks_of(iq, rate, [n])[0])
    ref = reference_image(reference_power(iq, rate, nfft, hop), height, width)
    assert first == 0 and binned.shape == (height, width) and binned.dtype == np.float32
    assert (np.abs(binned - ref) / ref).max() < 1e-3
    # The normalised frame against the same float64 reference through the documented mapping.
    image = Spectrogrammer(cfg).process(chunks_of(iq, rate, [n])[0]).image
    db = 10 * np.log10(ref)
    want = np.clip((db - np.median(db[::3, ::3]) + cfg.floor_offset_db) / cfg.dynamic_range_db, 0, 1)
    assert np.abs(image - want).max() < 1e-4  # 0.005 dB


def test_dc_removal_reads_the_neighbour_bin():
    rate, nfft = 1e6, 1024
    iq = noise_and_tone(20_000, rate, 0.0, tone_amp=20.0)  # a strong carrier exactly at DC
    cfg = SpectrogramConfig(nfft=nfft, hop=512, width=256, height=64, remove_dc=True)
    power, _ = Spectrogrammer(cfg).power(chunks_of(iq, rate, [iq.size])[0])
    np.testing.assert_array_equal(power[:, nfft // 2], power[:, nfft // 2 + 1])
    plain, _ = Spectrogrammer(SpectrogramConfig(nfft=nfft, hop=512, width=256, height=64)).power(
        chunks_of(iq, rate, [iq.size])[0]
    )
    assert (plain[:, nfft // 2] > 3 * plain[:, nfft // 2 + 1]).all()  # hann: the neighbour is -6 dB


def test_threads_and_block_size_do_not_change_the_frame():
    rate = 10e6
    iq = noise_and_tone(700_000, rate, 2.2e6, seed=5)
    frames = {}
    for workers, block in ((1, 64), (3, 64), (2, 5)):
        sp = Spectrogrammer(SpectrogramConfig(), workers=workers, block_slices=block)
        frames[workers, block] = [sp.process(c).image for c in chunks_of(iq, rate, [300_000, 400_000])]
        sp.close()
        assert sp.workers == workers
    for a, b in zip(frames[1, 64], frames[3, 64], strict=True):
        np.testing.assert_array_equal(a, b)  # each block is computed alone, whichever thread
    for a, b in zip(frames[1, 64], frames[2, 5], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_chunk_allocates_only_its_frame():
    rate = 10e6
    iq = noise_and_tone(2_000_000, rate, 1e6)  # 976 slices: a 32 MB complex STFT if materialised
    sp = Spectrogrammer(SpectrogramConfig(), workers=2)
    a, b = chunks_of(iq, rate, [1_000_000, 1_000_000])
    sp.process(a)  # the first chunk of a geometry plans its blocks
    tracemalloc.start()
    try:
        frame = sp.process(b)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < frame.image.nbytes + (2 << 20)


def test_the_cpu_stage_does_not_import_the_gpu_stage():
    """spectrogram.py imports neither gpu.py nor the factory that picks it (one-way dependencies)."""
    import ast
    import pathlib

    import rfstream.dsp.spectrogram as module

    tree = ast.parse(pathlib.Path(module.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not imported & {"rfstream.dsp.gpu", "rfstream.dsp.factory"}


def test_chunked_stream_equals_one_long_transform():
    rate, hop = 2e6, 2048
    iq = noise_and_tone(100_000, rate, -300e3, seed=3)
    whole, _ = Spectrogrammer(SpectrogramConfig()).power(chunks_of(iq, rate, [iq.size])[0])
    sp = Spectrogrammer(SpectrogramConfig())
    parts = [sp.power(c) for c in chunks_of(iq, rate, [10_001, 33_333, 4_000, 52_666])]
    firsts = [p[1] for p in parts if p[0].shape[0]]
    stitched = np.concatenate([p[0] for p in parts if p[1] >= 0])
    # Every slice starts at a multiple of hop, and no sample falls between chunks.
    assert all(f % hop == 0 for f in firsts)
    assert stitched.shape[0] >= whole.shape[0] - 1
    n = min(stitched.shape[0], whole.shape[0])
    np.testing.assert_allclose(stitched[:n], whole[:n], rtol=1e-5)


def test_parseval_noise_floor_reads_noise_power():
    rate = 1e6
    rng = np.random.default_rng(7)
    iq = ((rng.standard_normal(400_000) + 1j * rng.standard_normal(400_000)) * np.sqrt(2.5 / 2)).astype(
        np.complex64
    )
    power, _ = Spectrogrammer(SpectrogramConfig()).power(chunks_of(iq, rate, [iq.size])[0])
    # The window scaling makes white noise of power p per sample read p per bin on average.
    assert power.mean() == pytest.approx(2.5, rel=0.02)


def test_parseval_rectangular_window_conserves_energy():
    rate, nfft = 1e6, 1024
    iq = noise_and_tone(nfft * 8, rate, 50e3, seed=1)
    sp = Spectrogrammer(SpectrogramConfig(nfft=nfft, hop=nfft, window="boxcar", width=256, height=8))
    power, _ = sp.power(chunks_of(iq, rate, [iq.size])[0])
    # boxcar: scale 1/nfft, so sum over bins = sum |X|^2 / nfft = sum |x|^2 (Parseval), per slice.
    per_slice = np.abs(iq.astype(np.complex128).reshape(8, nfft)) ** 2
    np.testing.assert_allclose(power.sum(axis=1), per_slice.sum(axis=1), rtol=1e-4)


def test_frame_axes_place_a_tone_and_tile_time():
    rate, fc, tone = 20e6, 915e6, 3.3e6
    n = int(0.2 * rate)
    iq = noise_and_tone(2 * n, rate, tone, tone_amp=2.0)
    sp = Spectrogrammer(SpectrogramConfig())
    f1, f2 = (sp.process(c) for c in chunks_of(iq, rate, [n, n], fc=fc))
    assert f1.image.shape == (1024, 1024) and f1.image.dtype == np.float32
    assert f1.image.min() >= 0.0 and f1.image.max() <= 1.0
    col = int(np.argmax(f1.image.mean(axis=0)))
    lo, hi = f1.f0_hz + col * f1.df_hz, f1.f0_hz + (col + 1) * f1.df_hz
    assert lo <= fc + tone < hi
    assert f1.f0_hz == pytest.approx(fc - rate / 2, abs=rate / 4096)
    assert f1.f1_hz == pytest.approx(fc + rate / 2, abs=rate / 4096)
    assert f2.t0_s == pytest.approx(f1.t1_s, abs=1e-12)  # rows of consecutive frames tile time
    # the noise floor sits at floor_offset_db / dynamic_range_db
    assert float(np.median(f1.image)) == pytest.approx(6.0 / 50.0, abs=0.02)


def test_short_recording_is_upsampled_and_tiny_one_is_padded():
    rate = 250e3
    iq = noise_and_tone(50_000, rate, 20e3)  # 23 slices -> 1024 rows
    frame = Spectrogrammer(SpectrogramConfig()).process(chunks_of(iq, rate, [iq.size])[0])
    assert frame.image.shape == (1024, 1024)
    assert frame.t1_s <= iq.size / rate + 1e-9
    tiny = Spectrogrammer(SpectrogramConfig()).process(chunks_of(iq[:1000], rate, [1000])[0])
    assert tiny.image.shape == (1024, 1024) and np.isfinite(tiny.image).all()


def test_non_integer_bin_ratio_uses_area_resampling():
    rate = 1e6
    iq = noise_and_tone(200_000, rate, 250e3)
    frame = Spectrogrammer(SpectrogramConfig(nfft=1000, hop=500, width=300, height=100)).process(
        chunks_of(iq, rate, [iq.size])[0]
    )
    col = int(np.argmax(frame.image.mean(axis=0)))
    assert frame.f0_hz + col * frame.df_hz <= 100e6 + 250e3 < frame.f0_hz + (col + 1) * frame.df_hz + 1


def test_gap_restarts_the_transform():
    rate = 1e6
    iq = noise_and_tone(40_000, rate, 1e3)
    sp = Spectrogrammer(SpectrogramConfig())
    a, b = chunks_of(iq, rate, [20_000, 20_000])
    sp.power(a)
    gapped = Chunk(
        iq=b.iq,
        sample_rate_hz=rate,
        center_freq_hz=b.center_freq_hz,
        start_sample=25_000,
        seq=1,
        arrived_ns=0,
        gap_before_samples=5_000,
    )
    _, first = sp.power(gapped)
    assert first == 25_000


@settings(max_examples=40, deadline=None)
@given(n_in=st.integers(1, 3000), n_out=st.integers(1, 1200))
def test_resample_matrix_conserves_mean(n_in, n_out):
    m = resample_matrix(n_in, n_out)
    x = np.random.default_rng(n_in).random(n_in)
    y = m @ x
    assert y.shape == (n_out,)
    assert y.mean() == pytest.approx(x.mean(), rel=1e-4)
    assert np.all(y >= x.min() - 1e-6) and np.all(y <= x.max() + 1e-6)


@pytest.mark.parametrize("name", ["hann", "hamming", "blackman", "boxcar", "flattop", ("kaiser", 8.0)])
@pytest.mark.parametrize("n", [16, 1023, 4096])
def test_windows_are_scipys_periodic_windows(name, n):
    """The common windows are computed without importing scipy.signal; the others come from it."""
    import scipy.signal

    from rfstream.dsp.spectrogram import window_values

    want = scipy.signal.get_window(name, n, fftbins=True)
    np.testing.assert_allclose(window_values(name, n), want, rtol=0, atol=1e-14)
