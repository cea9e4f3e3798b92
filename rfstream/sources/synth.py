"""Synthetic labelled recordings (``rfstream synth``) and an endless synthetic source (``rfstream bench``).

A capture is complex white Gaussian noise of unit power per sample plus
signals of every kind in :data:`rfstream.labels.LABELS` (but ``unknown``):

    tone    CW carriers that drift slowly (one spans the capture, one is a burst)
    fm      narrowband FM (2.5–5 kHz deviation, audio tones), long
    am      double-sideband AM with carrier, long
    fsk     GFSK hopper, Bluetooth-like: many 1–3 ms bursts on different channels
    ofdm    Wi-Fi-like on/off bursts: 64–256 subcarriers, cyclic prefix, 20–40 % of the band
    chirp   LFM chirp trains (sawtooth sweeps)
    ook     on-off keyed packets (1–10 kBd, garage-door-remote style)
    psk     single-carrier BPSK/QPSK/8PSK/16QAM bursts with RRC pulse shaping
    pulsed  radar-like pulse trains (Hann-shaped, some with LFM inside the pulse)

Every signal instance (each hop, each burst, each train) is one SigMF
annotation with ``core:sample_start``, ``core:sample_count``,
``core:freq_lower_edge``/``core:freq_upper_edge`` (absolute Hz), ``core:label``
and ``rfstream:snr_db``.

Frequency edges are the instance's 99 % power bandwidth, measured on the
generated waveform itself (a Hann-windowed periodogram; 0.5 % of the power left
out on each side); for the drifting carriers it is the swept range by design.

SNR is in-band: the signal's mean power over its annotated extent divided by the
noise power inside its occupied bandwidth B, i.e. ``SNR = P / (B / fs)`` for
unit noise power per sample. B is floored at one 4096-point FFT bin (fs/4096) so
that a nearly pure carrier has a finite SNR. For keyed signals (OOK, pulse
trains) the mean includes the off time, so their peak power lies higher.

Generation is vectorised and signals are built only over their own extent;
the capture is written through a memory map block by block, and the pair lands
atomically (temporary names in the same directory, data renamed first, then the
metadata). The same seed gives the same bytes.
"""

from __future__ import annotations

import math
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import scipy.fft
import structlog
from scipy.signal import upfirdn
from sigmf import sigmffile

from rfstream import __version__
from rfstream.errors import InputError
from rfstream.labels import LABELS
from rfstream.sources.base import ChunkStamper, Pacer, SourceInfo, chunk_length, utc_plus
from rfstream.types import Chunk

log = structlog.get_logger(__name__)

KINDS: tuple[str, ...] = tuple(label for label in LABELS if label != "unknown")
SYNTH_DATETIME = datetime(2024, 1, 1, tzinfo=timezone.utc)  # fixed, so the metadata is deterministic too
_PIECE = 1 << 20  # samples rendered and added at a time: bounds memory for whole-capture signals
_TWO_PI = 2.0 * np.pi


@dataclass(frozen=True, slots=True)
class SynthAnnotation:
    """One signal instance in a synthetic capture (sample indices; edges relative to the centre)."""

    label: str
    sample_start: int
    sample_count: int
    f_low_hz: float
    f_high_hz: float
    snr_db: float
    comment: str


@dataclass(slots=True)
class _Instance:
    label: str
    start: int
    count: int
    render: Callable[[int, int], np.ndarray]  # (i0, n) -> complex64, unit mean power, at its carrier
    f_low_hz: float
    f_high_hz: float
    snr_db: float
    comment: str


# --- waveform helpers -------------------------------------------------------------------


def _cis(cycles: np.ndarray) -> np.ndarray:
    """exp(j 2π cycles) as complex64; ``cycles`` is reduced mod 1 in float64 first for precision."""
    ph = (_TWO_PI * np.mod(cycles, 1.0)).astype(np.float32)
    out = np.empty(ph.shape, np.complex64)
    out.real = np.cos(ph)
    out.imag = np.sin(ph)
    return out


def _carrier(freq_hz: float, fs: float, i0: int, n: int, phase_cycles: float = 0.0) -> np.ndarray:
    """exp(j 2π (f k / fs + phase)) for k in [i0, i0 + n), complex64.

    Trigonometry only on one 4096-sample block and on the block starts; the rest
    is one complex multiply per sample (an order of magnitude faster than cis).
    """
    block = 4096
    nb = -(-n // block)
    step = freq_hz / fs
    inner = _cis(step * np.arange(block, dtype=np.float64))
    starts = _cis(step * (i0 + block * np.arange(nb, dtype=np.float64)) + phase_cycles)
    return (starts[:, None] * inner[None, :]).reshape(-1)[:n]


class _Narrowband:
    """A slowly varying complex envelope on a coarse grid, linearly interpolated, moved to its carrier.

    The grid runs at 40 times the envelope's bandwidth, so interpolation images
    stay about 50 dB below the signal; the trigonometry runs on the coarse grid only.
    """

    def __init__(self, envelope: Callable[[np.ndarray], np.ndarray], fc: float, fs: float, bw_hz: float):
        self._envelope = envelope
        self._fc = fc
        self._fs = fs
        self._decim = max(1, int(fs / (40.0 * max(bw_hz, 1e3))))
        self._weights = (np.arange(self._decim, dtype=np.float32) / self._decim)[None, :]

    def __call__(self, i0: int, n: int) -> np.ndarray:
        d = self._decim
        k0 = i0 // d
        k = np.arange(k0, (i0 + n) // d + 2, dtype=np.float64)
        coarse = self._envelope(k * (d / self._fs)).astype(np.complex64)
        fine = (coarse[:-1, None] + (coarse[1:] - coarse[:-1])[:, None] * self._weights).reshape(-1)
        skip = i0 - k0 * d
        return fine[skip : skip + n] * _carrier(self._fc, self._fs, i0, n)


def _obw(x: np.ndarray, fs: float, fraction: float = 0.99) -> tuple[float, float]:
    """The band holding ``fraction`` of the power (equal tails), from a Hann-windowed averaged periodogram."""
    n = x.shape[0]
    nseg = min(n, 65536)
    starts = np.linspace(0, n - nseg, min(16, max(1, n // nseg))).astype(np.int64)
    win = np.hanning(nseg).astype(np.float32)
    psd = np.zeros(nseg, np.float64)
    for s in starts:
        psd += np.abs(scipy.fft.fft(x[s : s + nseg] * win)) ** 2
    psd = scipy.fft.fftshift(psd)
    freqs = scipy.fft.fftshift(scipy.fft.fftfreq(nseg, 1.0 / fs))
    cdf = np.cumsum(psd)
    cdf /= cdf[-1]
    tail = (1.0 - fraction) / 2.0
    df = fs / nseg
    lo = freqs[min(nseg - 1, int(np.searchsorted(cdf, tail)))] - df / 2
    hi = freqs[min(nseg - 1, int(np.searchsorted(cdf, 1.0 - tail)))] + df / 2
    return float(lo), float(hi)


def _unit_power(x: np.ndarray) -> np.ndarray:
    p = float(np.mean(np.abs(x) ** 2))
    if p > 0:
        x *= np.float32(1.0 / math.sqrt(p))
    return x


def _array_instance(
    label: str, start: int, wave: np.ndarray, fs: float, snr_db: float, comment: str
) -> _Instance:
    """A burst rendered whole: normalise it, measure its band, serve slices of it."""
    wave = _unit_power(wave.astype(np.complex64, copy=False))
    lo, hi = _obw(wave, fs)
    return _Instance(label, start, wave.shape[0], lambda i0, n: wave[i0 : i0 + n], lo, hi, snr_db, comment)


def _closed_instance(
    label: str,
    start: int,
    count: int,
    render: Callable[[int, int], np.ndarray],
    fs: float,
    snr_db: float,
    comment: str,
    band: tuple[float, float] | None = None,
) -> _Instance:
    """A long signal rendered piece by piece; its band is measured on a representative stretch."""
    if band is None:
        band = _obw(render(0, min(count, max(1 << 18, int(0.05 * fs)))), fs)
    return _Instance(label, start, count, render, band[0], band[1], snr_db, comment)


def _constellation(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    if kind == "bpsk":
        return (rng.integers(0, 2, n) * 2 - 1).astype(np.complex64)
    if kind == "qpsk":
        return _cis(rng.integers(0, 4, n) / 4.0 + 0.125)
    if kind == "8psk":
        return _cis(rng.integers(0, 8, n) / 8.0)
    levels = np.array([-3, -1, 1, 3], np.float32) / np.sqrt(10.0, dtype=np.float32)  # 16qam, unit power
    return (levels[rng.integers(0, 4, n)] + 1j * levels[rng.integers(0, 4, n)]).astype(np.complex64)


def _rrc(alpha: float, sps: int, span: int = 8) -> np.ndarray:
    """Root-raised-cosine taps, unit energy."""
    t = np.arange(-span * sps // 2, span * sps // 2 + 1, dtype=np.float64) / sps
    h = np.empty_like(t)
    at_zero = np.isclose(t, 0.0)
    at_pole = np.isclose(np.abs(t), 1.0 / (4.0 * alpha))
    rest = ~(at_zero | at_pole)
    tr = t[rest]
    h[rest] = (np.sin(np.pi * tr * (1 - alpha)) + 4 * alpha * tr * np.cos(np.pi * tr * (1 + alpha))) / (
        np.pi * tr * (1 - (4 * alpha * tr) ** 2)
    )
    h[at_zero] = 1 - alpha + 4 * alpha / np.pi
    h[at_pole] = (alpha / np.sqrt(2)) * (
        (1 + 2 / np.pi) * np.sin(np.pi / (4 * alpha)) + (1 - 2 / np.pi) * np.cos(np.pi / (4 * alpha))
    )
    return (h / np.sqrt(np.sum(h**2))).astype(np.float32)


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Box filter via cumulative sums (O(n)); turns keyed rectangles into trapezoids."""
    if width <= 1:
        return x
    c = np.cumsum(np.concatenate([np.zeros(width, x.dtype), x]), dtype=np.float64)
    return ((c[width:] - c[:-width]) / width).astype(np.float32)


def _sequence(
    rng: np.random.Generator,
    fs: float,
    n_total: int,
    dur_s: tuple[float, float],
    gap_s: tuple[float, float],
    t_from: float = 0.0,
    t_to: float | None = None,
    max_count: int | None = None,
) -> list[tuple[int, int]]:
    """Non-overlapping (start, count) bursts one after another, clipped to the capture."""
    end = n_total if t_to is None else min(n_total, int(t_to * fs))
    pos = int((t_from + rng.uniform(0, gap_s[1])) * fs)
    out = []
    while pos < end and (max_count is None or len(out) < max_count):
        count = min(int(rng.uniform(*dur_s) * fs), end - pos)
        if count >= max(16, int(0.2 * dur_s[0] * fs)):
            out.append((pos, count))
        pos += count + int(rng.uniform(*gap_s) * fs)
    if not out and end > 16:  # a capture shorter than one gap still gets one instance
        count = min(int(dur_s[0] * fs), end)
        out.append((max(0, end - count) // 2, count))
    return out


def _long_extent(rng: np.random.Generator, fs: float, n_total: int) -> tuple[int, int]:
    """Whole capture half the time, else a long burst (0.3–1.2 s)."""
    if rng.uniform() < 0.5:
        return 0, n_total
    count = min(n_total, int(rng.uniform(0.3, 1.2) * fs))
    return int(rng.integers(0, n_total - count + 1)), count


def _snr(rng: np.random.Generator, snr_range: tuple[float, float]) -> float:
    return float(rng.uniform(*snr_range))


# --- emitters: one transmitter each, yielding its instances ---------------------------------


def _emit_tone(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    extents = [(0, n_total)]
    count = min(n_total, int(rng.uniform(0.1, 0.5) * fs))
    extents.append((int(rng.integers(0, n_total - count + 1)), count))
    for start, count in extents:
        f0 = rng.uniform(-0.4, 0.4) * fs
        drift = rng.uniform(5.0, 200.0)  # Hz, slow thermal wander of an oscillator
        period = rng.uniform(0.5, 4.0)  # s
        theta = rng.uniform(0, _TWO_PI)
        phi0 = rng.uniform()

        def drift_envelope(t, drift=drift, period=period, theta=theta, phi0=phi0):
            return _cis(phi0 - drift * period / _TWO_PI * np.cos(_TWO_PI * t / period + theta))

        render = _Narrowband(drift_envelope, f0, fs, drift + 1.0 / period)
        # Carson's rule on the sinusoidal drift: the swept range plus the drift rate.
        half = drift + 1.0 / period
        yield _closed_instance(
            "tone",
            start,
            count,
            render,
            fs,
            _snr(rng, snr_range),
            f"CW drift ±{drift:.0f} Hz",
            (f0 - half, f0 + half),
        )


def _audio(rng, lo_hz: float, hi_hz: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    freqs = rng.uniform(lo_hz, hi_hz, 3)
    amps = rng.uniform(0.2, 1.0, 3)
    return freqs, amps / amps.sum(), rng.uniform(0, _TWO_PI, 3)


def _emit_fm(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    start, count = _long_extent(rng, fs, n_total)
    dev = rng.uniform(2.5e3, 5e3)
    freqs, amps, thetas = _audio(rng, 300.0, 3000.0)
    fc = rng.uniform(-0.42, 0.42) * fs

    def fm_envelope(t):
        cycles = np.zeros(t.shape, np.float64)
        for f, a, th in zip(freqs, amps, thetas, strict=True):
            cycles += (dev * a / f) * np.sin(_TWO_PI * f * t + th) / _TWO_PI
        return _cis(cycles)

    render = _Narrowband(fm_envelope, fc, fs, 2 * (dev + freqs.max()))
    yield _closed_instance("fm", start, count, render, fs, _snr(rng, snr_range), f"NBFM dev {dev:.0f} Hz")


def _emit_am(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    start, count = _long_extent(rng, fs, n_total)
    depth = rng.uniform(0.3, 0.8)
    freqs, amps, thetas = _audio(rng, 200.0, 4000.0)
    fc = rng.uniform(-0.42, 0.42) * fs
    norm = np.float32(1.0 / math.sqrt(1.0 + depth**2 * float(np.sum(amps**2)) / 2.0))

    def am_envelope(t):
        msg = np.zeros(t.shape, np.float64)
        for f, a, th in zip(freqs, amps, thetas, strict=True):
            msg += a * np.cos(_TWO_PI * f * t + th)
        return (1.0 + depth * msg) * norm

    render = _Narrowband(am_envelope, fc, fs, 2 * freqs.max())
    yield _closed_instance("am", start, count, render, fs, _snr(rng, snr_range), f"AM depth {depth:.2f}")


def _emit_fsk(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    sps = max(4, round(fs / 1e6))  # Bluetooth's 1 Msym/s where the rate allows
    rs = fs / sps
    h = float(rng.choice([0.32, 0.5]))
    spacing = 1.25 * rs
    n_ch = max(1, min(40, int(0.75 * fs / spacing)))
    centres = (np.arange(n_ch) - (n_ch - 1) / 2) * spacing
    # Gaussian frequency pulse, BT = 0.5
    sigma = math.sqrt(math.log(2)) / (_TWO_PI * 0.5)
    tg = np.arange(-2 * sps, 2 * sps + 1) / sps
    g = np.exp(-(tg**2) / (2 * sigma**2)).astype(np.float32)
    g /= g.sum()
    for start, count in _sequence(rng, fs, n_total, (1e-3, 3e-3), (2e-3, 25e-3)):
        nsym = max(8, count // sps)
        bits = (rng.integers(0, 2, nsym) * 2 - 1).astype(np.float32)
        freq = np.convolve(np.repeat(bits, sps), g, mode="same")[:count]
        fc = float(centres[rng.integers(0, n_ch)])
        cycles = np.cumsum(freq, dtype=np.float64) * (h / (2 * sps)) + (fc / fs) * np.arange(freq.shape[0])
        yield _array_instance(
            "fsk", start, _cis(cycles), fs, _snr(rng, snr_range), f"GFSK {rs / 1e3:.0f} kBd h={h}"
        )


def _emit_ofdm(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    nsub = int(rng.choice([64, 128, 256]))
    up = int(rng.choice([2, 3, 4]))  # occupied fraction of the band ≈ 0.8 / up
    size = nsub * up
    used = int(0.8 * nsub) // 2 * 2
    bins = np.concatenate([np.arange(-used // 2, 0), np.arange(1, used // 2 + 1)]) % size
    cp = size // 4
    width = 0.8 / up * fs
    fc = rng.uniform(-1, 1) * (0.44 * fs - width / 2)
    qam = str(rng.choice(["qpsk", "16qam"]))
    duration_s = n_total / fs
    t_from = rng.uniform(0, 0.3) * duration_s
    t_to = t_from + rng.uniform(0.4, 1.0) * duration_s
    for start, count in _sequence(rng, fs, n_total, (1e-3, 5e-3), (3e-3, 40e-3), t_from, t_to):
        nsym = max(1, -(-count // (size + cp)))
        spec = np.zeros((nsym, size), np.complex64)
        spec[:, bins] = _constellation(rng, qam, nsym * used).reshape(nsym, used)
        sym = scipy.fft.ifft(spec, axis=1)
        wave = np.concatenate([sym[:, -cp:], sym], axis=1).reshape(-1)[:count]
        wave = wave * _carrier(fc, fs, 0, count, rng.uniform())
        yield _array_instance(
            "ofdm", start, wave, fs, _snr(rng, snr_range), f"OFDM {nsub} subcarriers x{up} {qam} CP 1/4"
        )


def _emit_chirp(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    sweep = rng.uniform(0.05, 0.25) * fs
    fc = rng.uniform(-1, 1) * (0.44 * fs - sweep / 2)
    for start, count in _sequence(rng, fs, n_total, (0.02, 0.3), (0.05, 0.6), max_count=3):
        period = max(16, min(int(rng.uniform(0.5e-3, 5e-3) * fs), count // 4))
        rate = sweep / (period / fs)
        idx = np.arange(count, dtype=np.float64)
        tt = np.mod(idx, period) / fs
        cycles = (fc - sweep / 2) * tt + 0.5 * rate * tt**2 + (fc / fs) * (idx - np.mod(idx, period))
        yield _array_instance(
            "chirp",
            start,
            _cis(cycles),
            fs,
            _snr(rng, snr_range),
            f"LFM {sweep / 1e3:.0f} kHz / {period / fs * 1e3:.2f} ms",
        )


def _emit_ook(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    baud = rng.uniform(1e3, 10e3)
    fc = rng.uniform(-0.42, 0.42) * fs
    sps = max(2, round(fs / baud))
    for start, count in _sequence(rng, fs, n_total, (0.02, 0.15), (0.02, 0.3), max_count=6):
        nsym = max(4, -(-count // sps))
        bits = rng.integers(0, 2, nsym).astype(np.float32)
        bits[:4] = (1, 0, 1, 0)  # preamble: starts keyed on, as a real remote does
        env = _moving_average(np.repeat(bits, sps)[:count], max(1, sps // 5))  # 20 % edge ramps
        wave = _carrier(fc, fs, 0, count, rng.uniform()) * env
        yield _array_instance("ook", start, wave, fs, _snr(rng, snr_range), f"OOK {baud:.0f} Bd")


def _emit_psk(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    sps = int(rng.integers(8, 65))
    alpha = rng.uniform(0.2, 0.5)
    mod = str(rng.choice(["bpsk", "qpsk", "8psk", "16qam"]))
    width = fs / sps * (1 + alpha)
    fc = rng.uniform(-1, 1) * (0.44 * fs - width / 2)
    taps = _rrc(alpha, sps)
    for start, count in _sequence(rng, fs, n_total, (0.02, 0.4), (0.02, 0.3), max_count=4):
        nsym = -(-count // sps) + 8
        shaped = upfirdn(taps, _constellation(rng, mod, nsym), up=sps)
        lead = taps.shape[0] // 2 + 4 * sps  # skip the filter's ramp-up
        wave = shaped[lead : lead + count] * _carrier(fc, fs, 0, count, rng.uniform())
        yield _array_instance(
            "psk", start, wave, fs, _snr(rng, snr_range), f"{mod} {fs / sps / 1e3:.1f} kBd RRC {alpha:.2f}"
        )


def _emit_pulsed(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    width = int(rng.uniform(max(5e-6, 32 / fs), max(50e-6, 128 / fs)) * fs)
    pri = max(4 * width, int(rng.uniform(0.25e-3, 2e-3) * fs))
    chirped = rng.uniform() < 0.5
    sweep = min(0.2 * fs, rng.uniform(2, 10) * fs / width) if chirped else 0.0
    fc = rng.uniform(-1, 1) * (0.44 * fs - max(sweep, 4 * fs / width) / 2)
    shape = np.hanning(width + 2)[1:-1].astype(np.float32)
    tp = np.arange(width) / fs
    pulse = shape * _cis(-0.5 * sweep * tp + 0.5 * (sweep / (width / fs)) * tp**2)
    for start, count in _sequence(rng, fs, n_total, (0.03, 0.3), (0.05, 0.6), max_count=3):
        wave = np.zeros(count, np.complex64)
        offsets = np.arange(0, count - width, pri)
        if offsets.shape[0] == 0:
            continue
        idx = (offsets[:, None] + np.arange(width)[None, :]).reshape(-1)
        wave[idx] = np.tile(pulse, offsets.shape[0])
        wave *= _carrier(fc, fs, 0, count, rng.uniform())
        kind = f"LFM {sweep / 1e3:.0f} kHz" if chirped else "plain"
        yield _array_instance(
            "pulsed",
            start,
            wave,
            fs,
            _snr(rng, snr_range),
            f"pulses {width / fs * 1e6:.1f} us every {pri / fs * 1e3:.2f} ms, {kind}",
        )


_EMITTERS: dict[str, Callable[..., Iterator[_Instance]]] = {
    "tone": _emit_tone,
    "am": _emit_am,
    "fm": _emit_fm,
    "fsk": _emit_fsk,
    "ook": _emit_ook,
    "psk": _emit_psk,
    "ofdm": _emit_ofdm,
    "chirp": _emit_chirp,
    "pulsed": _emit_pulsed,
}


def render_capture(
    out: np.ndarray,
    sample_rate_hz: float,
    *,
    seed: int,
    snr_db_range: tuple[float, float] = (3.0, 30.0),
    num_signals: int | None = None,
    kinds: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[SynthAnnotation]:
    """Fill ``out`` (1-D complex64, any writable array or memmap) with noise plus signals.

    ``num_signals`` counts transmitters (each may emit many instances); None
    means one of each kind. Returns the instances that lie inside the band.
    ``progress(done, total)`` is called after each transmitter is drawn.
    """
    fs = float(sample_rate_hz)
    n_total = int(out.shape[0])
    noise_rng = np.random.default_rng([seed, 0x5EED])
    scale = np.float32(math.sqrt(0.5))
    for a in range(0, n_total, _PIECE):
        b = min(a + _PIECE, n_total)
        block = noise_rng.standard_normal(2 * (b - a), dtype=np.float32)
        block *= scale
        out[a:b] = block.view(np.complex64)
    if kinds is None:
        kinds = KINDS if num_signals is None else [KINDS[i % len(KINDS)] for i in range(num_signals)]
    floor_hz = fs / 4096.0
    annotations: list[SynthAnnotation] = []
    for index, kind in enumerate(kinds):
        rng = np.random.default_rng([seed, index])
        for inst in _EMITTERS[kind](rng, fs, n_total, snr_db_range):
            if inst.f_low_hz < -fs / 2 or inst.f_high_hz > fs / 2 or inst.count <= 0:
                continue  # outside the band: neither drawn nor annotated
            count = min(inst.count, n_total - inst.start)
            bandwidth = max(inst.f_high_hz - inst.f_low_hz, floor_hz)
            amp = np.float32(math.sqrt(10 ** (inst.snr_db / 10) * bandwidth / fs))
            for i0 in range(0, count, _PIECE):
                n = min(_PIECE, count - i0)
                a = inst.start + i0
                out[a : a + n] += amp * inst.render(i0, n)
            annotations.append(
                SynthAnnotation(
                    inst.label, inst.start, count, inst.f_low_hz, inst.f_high_hz, inst.snr_db, inst.comment
                )
            )
        if progress is not None:
            progress(index + 1, len(kinds))
    annotations.sort(key=lambda a: (a.sample_start, a.f_low_hz))
    return annotations


def synthesize(
    out_base: str | Path,
    *,
    sample_rate_hz: float = 10e6,
    duration_s: float = 2.0,
    seed: int = 1,
    center_freq_hz: float = 2.44e9,
    snr_db_range: tuple[float, float] = (3.0, 30.0),
    num_signals: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``OUT.sigmf-meta`` + ``OUT.sigmf-data`` (cf32_le); return the meta path.

    ``progress(done, total)`` reports transmitters drawn (for a progress bar).
    """
    if not sample_rate_hz > 0:
        raise InputError(f"synth: sample rate must be > 0, got {sample_rate_hz!r}")
    if not duration_s > 0:
        raise InputError(f"synth: duration must be > 0, got {duration_s!r}")
    if snr_db_range[0] > snr_db_range[1]:
        raise InputError(f"synth: SNR range {snr_db_range!r} is empty")
    if num_signals is not None and num_signals < 0:
        raise InputError(f"synth: num_signals must be >= 0, got {num_signals!r}")
    fns = sigmffile.get_sigmf_filenames(out_base)
    final_meta, final_data = fns["meta_fn"], fns["data_fn"]
    directory = final_meta.parent
    if not directory.is_dir():
        raise InputError(f"synth: output directory {directory} does not exist")
    tmp_base = directory / f".{fns['base_fn'].name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp = sigmffile.get_sigmf_filenames(tmp_base)
    n = round(duration_s * sample_rate_hz)
    try:
        data = np.memmap(tmp["data_fn"], dtype="<c8", mode="w+", shape=(n,))
        annotations = render_capture(
            data,
            sample_rate_hz,
            seed=seed,
            snr_db_range=snr_db_range,
            num_signals=num_signals,
            progress=progress,
        )
        data.flush()
        del data
        meta = _metadata(sample_rate_hz, center_freq_hz, seed, annotations)
        meta.set_data_file(tmp["data_fn"], skip_checksum=True)
        meta.tofile(tmp_base)
        os.replace(tmp["data_fn"], final_data)  # data first: a meta on disk always has its whole data
        os.replace(tmp["meta_fn"], final_meta)
    except OSError as exc:
        raise InputError(f"synth: cannot write {final_meta}: {exc}") from exc
    finally:
        for p in (tmp["data_fn"], tmp["meta_fn"]):
            p.unlink(missing_ok=True)
    log.debug("synthesized", path=str(final_meta), samples=n, annotations=len(annotations))
    return final_meta


def _metadata(
    fs: float, center_freq_hz: float, seed: int, annotations: Sequence[SynthAnnotation]
) -> sigmffile.SigMFFile:
    meta = sigmffile.SigMFFile(
        global_info={
            "core:datatype": "cf32_le",
            "core:sample_rate": float(fs),
            "core:description": f"rfstream synthetic capture, seed {seed}; SNR in-band over the 99 % bandwidth",
            "core:recorder": f"rfstream {__version__} synth",
            "core:extensions": [{"name": "rfstream", "version": __version__, "optional": True}],
        }
    )
    meta.add_capture(
        0,
        metadata={
            "core:frequency": float(center_freq_hz),
            "core:datetime": SYNTH_DATETIME.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
    )
    for a in annotations:
        meta.add_annotation(
            a.sample_start,
            a.sample_count,
            metadata={
                "core:freq_lower_edge": float(center_freq_hz + a.f_low_hz),
                "core:freq_upper_edge": float(center_freq_hz + a.f_high_hz),
                "core:label": a.label,
                "core:comment": a.comment,
                "core:generator": "rfstream synth",
                "rfstream:snr_db": round(a.snr_db, 2),
            },
        )
    return meta


class SynthSource:
    """An endless stream of synthetic chunks for benchmarks.

    A buffer of about one second (whole chunks, at most 2**25 samples) is
    generated once and cycled, so a benchmark measures the pipeline, not the
    generator. Chunks are read-only views into that buffer: a stage that wants
    to change samples must copy them.
    """

    def __init__(
        self,
        sample_rate_hz: float,
        *,
        chunk_ms: float = 200.0,
        seed: int = 0,
        center_freq_hz: float = 2.44e9,
        realtime: bool = False,
        buffer_s: float = 1.0,
    ) -> None:
        if not sample_rate_hz > 0:
            raise InputError(f"synth source: sample rate must be > 0, got {sample_rate_hz!r}")
        if not chunk_ms > 0:
            raise InputError(f"synth source: chunk_ms must be > 0, got {chunk_ms!r}")
        self._rate = float(sample_rate_hz)
        self._chunk = chunk_length(chunk_ms, sample_rate_hz)
        chunks = max(1, min(math.ceil(buffer_s * self._rate / self._chunk), (1 << 25) // self._chunk))
        buf = np.empty(chunks * self._chunk, np.complex64)
        render_capture(buf, self._rate, seed=seed)
        buf.flags.writeable = False
        self._buf = buf
        self._chunks_in_buffer = chunks
        self._center = float(center_freq_hz)
        self._realtime = realtime
        self._closed = threading.Event()
        self.info = SourceInfo(
            sample_rate_hz=self._rate,
            center_freq_hz=self._center,
            description=f"synthetic signals at {self._rate / 1e6:g} MS/s (seed {seed})",
            total_samples=None,
            start_time_utc=datetime.now(timezone.utc),
        )

    def __iter__(self) -> Iterator[Chunk]:
        stamper = ChunkStamper(self._rate)
        pacer = Pacer(self._rate, self._closed) if self._realtime else None
        n = self._chunk
        i = 0
        while not self._closed.is_set():
            k = i % self._chunks_in_buffer
            if pacer is not None and not pacer.wait((i + 1) * n):
                return
            yield stamper.stamp(
                self._buf[k * n : (k + 1) * n],
                start_sample=i * n,
                center_freq_hz=self._center,
                start_time_utc=utc_plus(self.info.start_time_utc, i * n, self._rate),
            )
            i += 1

    def close(self) -> None:
        self._closed.set()
