"""GPU spectrogram (CuPy). CUDA tests skip cleanly where CuPy or a CUDA device is absent."""

from __future__ import annotations

import numpy as np
import pytest

from rfstream.config import SpectrogramConfig
from rfstream.dsp.backend import cuda_available
from rfstream.dsp.spectrogram import Spectrogrammer
from rfstream.errors import ConfigError
from rfstream.types import Chunk


def _cuda():
    cupy = pytest.importorskip("cupy")
    if not cuda_available():
        pytest.skip("no CUDA device")
    return cupy


def chunks(n_chunks=3, size=200_000, rate=2e6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_chunks):
        iq = (rng.standard_normal(size) + 1j * rng.standard_normal(size)).astype(np.complex64) / np.sqrt(2)
        t = np.arange(k * size, (k + 1) * size) / rate
        iq += (3.0 * np.exp(2j * np.pi * 250e3 * t)).astype(np.complex64)
        out.append(
            Chunk(
                iq=iq, sample_rate_hz=rate, center_freq_hz=100e6, start_sample=k * size, seq=k, arrived_ns=0
            )
        )
    return out


def test_without_cupy_the_gpu_stage_is_a_clear_config_error():
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    from rfstream.dsp.gpu import GpuSpectrogrammer, PinnedStager

    with pytest.raises(ConfigError, match="needs CuPy"):
        GpuSpectrogrammer(SpectrogramConfig())
    with pytest.raises(ConfigError, match="needs CuPy"):
        PinnedStager()


@pytest.mark.cuda
@pytest.mark.parametrize(
    "cfg",
    [
        SpectrogramConfig(height=256, width=256, nfft=1024, hop=512),
        SpectrogramConfig(height=200, width=300, nfft=1000, hop=400),
    ],
)
def test_cupy_spectrogram_matches_numpy(cfg):
    cp = _cuda()
    from rfstream.dsp.gpu import GpuSpectrogrammer

    cpu = Spectrogrammer(cfg)
    gpu = GpuSpectrogrammer(cfg)
    for chunk in chunks():
        want = cpu.process(chunk)
        got = gpu.process(chunk)
        assert isinstance(got.image, cp.ndarray)
        np.testing.assert_allclose(cp.asnumpy(got.image), want.image, atol=1e-4)
        assert (got.t0_s, got.dt_s, got.f0_hz, got.df_hz) == pytest.approx(
            (want.t0_s, want.dt_s, want.f0_hz, want.df_hz)
        )


@pytest.mark.cuda
def test_pinned_stager_round_trips_and_reuses_slots():
    cp = _cuda()
    from rfstream.dsp.gpu import PinnedStager

    stager = PinnedStager(cp.cuda.Stream(non_blocking=True), slots=2)
    data = [c.iq for c in chunks(4, size=10_000)]
    for iq in data:
        dev = stager.to_device(iq)
        np.testing.assert_array_equal(cp.asnumpy(dev), iq)
    assert stager.to_device(cp.asarray(data[0])) is not None


@pytest.mark.cuda
def test_fused_kernels_match_numpy():
    cp = _cuda()
    from rfstream.dsp.gpu import log_normalise, power

    rng = np.random.default_rng(1)
    spec = (rng.standard_normal((64, 128)) + 1j * rng.standard_normal((64, 128))).astype(np.complex64)
    np.testing.assert_allclose(cp.asnumpy(power(cp.asarray(spec), 0.5)), (np.abs(spec) ** 2) * 0.5, rtol=1e-5)
    image = rng.exponential(1.0, size=(90, 120)).astype(np.float32)
    want = np.log10(np.maximum(image, 1e-20))
    floor = np.median(want[::3, ::3])
    want = np.clip(want * 0.2 - (floor * 0.2 - 6 / 50), 0, 1)
    got = log_normalise(cp.asarray(image), dynamic_range_db=50.0, floor_offset_db=6.0)
    np.testing.assert_allclose(cp.asnumpy(got), want, atol=1e-5)
