"""Waveforms of the synthesiser: one emitter per family, each drawing one of its variants.

An emitter is one transmitter; it yields its instances (each burst, hop, packet or
long transmission is one annotation). See :mod:`rfstream.sources.synth` for the
taxonomy (families and fine labels) and docs/taxonomy.md for how they map.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy.signal import upfirdn

from rfstream.sources.synth.channel import cis, impair

_TWO_PI = 2.0 * np.pi
# Whether bursts get channel effects (render_capture sets it per capture: "world" yes, "clean" no).
channel_effects: contextvars.ContextVar[bool] = contextvars.ContextVar("channel_effects", default=False)


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
    fine: str  # the waveform's own name (rfstream:modulation), e.g. "gfsk", "qam16", "lora"


# --- waveform helpers -------------------------------------------------------------------


def _carrier(freq_hz: float, fs: float, i0: int, n: int, phase_cycles: float = 0.0) -> np.ndarray:
    """exp(j 2π (f k / fs + phase)) for k in [i0, i0 + n), complex64.

    Trigonometry only on one 4096-sample block and on the block starts; the rest
    is one complex multiply per sample (an order of magnitude faster than cis).
    """
    block = 4096
    nb = -(-n // block)
    step = freq_hz / fs
    inner = cis(step * np.arange(block, dtype=np.float64))
    starts = cis(step * (i0 + block * np.arange(nb, dtype=np.float64)) + phase_cycles)
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
    label: str,
    start: int,
    wave: np.ndarray,
    fs: float,
    snr_db: float,
    comment: str,
    fine: str,
    rng: np.random.Generator | None = None,
) -> _Instance:
    """A burst rendered whole: channel effects (with ``rng``), normalise it, measure its band, serve slices."""
    wave = wave.astype(np.complex64, copy=False)
    if rng is not None and channel_effects.get():
        wave, effects = impair(wave, rng, fs)
        if effects:
            comment = f"{comment}; {', '.join(effects)}"
    wave = _unit_power(wave)
    lo, hi = _obw(wave, fs)
    return _Instance(
        label, start, wave.shape[0], lambda i0, n: wave[i0 : i0 + n], lo, hi, snr_db, comment, fine
    )


def _closed_instance(
    label: str,
    start: int,
    count: int,
    render: Callable[[int, int], np.ndarray],
    fs: float,
    snr_db: float,
    comment: str,
    fine: str,
    band: tuple[float, float] | None = None,
) -> _Instance:
    """A long signal rendered piece by piece; its band is measured on a representative stretch."""
    if band is None:
        band = _obw(render(0, min(count, max(1 << 18, int(0.05 * fs)))), fs)
    return _Instance(label, start, count, render, band[0], band[1], snr_db, comment, fine)


def _constellation(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """Unit-power symbols: bpsk, qpsk, 8psk, qam16 (also "16qam"), qam64."""
    if kind == "bpsk":
        return (rng.integers(0, 2, n) * 2 - 1).astype(np.complex64)
    if kind == "qpsk":
        return cis(rng.integers(0, 4, n) / 4.0 + 0.125)
    if kind == "8psk":
        return cis(rng.integers(0, 8, n) / 8.0)
    m = 8 if kind == "qam64" else 4
    levels = np.arange(-(m - 1), m, 2, dtype=np.float32)
    levels /= np.sqrt(2.0 * np.mean(levels**2), dtype=np.float32)
    return (levels[rng.integers(0, m, n)] + 1j * levels[rng.integers(0, m, n)]).astype(np.complex64)


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


def _choose(rng: np.random.Generator, options: tuple[str, ...], p: tuple[float, ...] | None = None) -> str:
    return str(rng.choice(options, p=p))


def _voice(rng: np.random.Generator, duration_s: float, top_hz: float = 3400.0) -> Callable:
    """A speech-like message in [-1, 1]: band-limited noise (300 Hz – ``top_hz``) with syllables.

    Returns ``msg(t)`` (interpolated on a fixed grid) and stores its running integral
    as ``msg.integral(t)`` (for FM), so long captures render piece by piece.
    """
    rate = 4.0 * top_hz
    n = int(duration_s * rate) + 4
    spec = scipy.fft.fft(rng.standard_normal(n))
    f = np.abs(scipy.fft.fftfreq(n, 1.0 / rate))
    spec[(f < 300.0) | (f > top_hz)] = 0.0
    audio = scipy.fft.ifft(spec).real
    syllables = scipy.fft.fft(rng.standard_normal(n))
    syllables[np.abs(scipy.fft.fftfreq(n, 1.0 / rate)) > 4.0] = 0.0
    env = np.abs(scipy.fft.ifft(syllables).real)
    msg = audio * env
    msg /= max(float(np.max(np.abs(msg))), 1e-12)
    grid = np.arange(n) / rate
    integral = np.concatenate([[0.0], np.cumsum(msg[:-1])]) / rate

    def at(t: np.ndarray) -> np.ndarray:
        return np.interp(t, grid, msg)

    at.integral = lambda t: np.interp(t, grid, integral)  # type: ignore[attr-defined]
    return at


def _gaussian_pulse(bt: float, sps: int) -> np.ndarray:
    sigma = math.sqrt(math.log(2)) / (_TWO_PI * bt)
    tg = np.arange(-2 * sps, 2 * sps + 1) / sps
    g = np.exp(-(tg**2) / (2 * sigma**2)).astype(np.float32)
    return g / g.sum()


def _cpfsk(symbols: np.ndarray, sps: int, h: float, count: int, bt: float | None = None) -> np.ndarray:
    """Continuous-phase FSK of ``symbols`` (±1, ±3 ...) with index ``h``; Gaussian-filtered if ``bt``."""
    freq = np.repeat(symbols.astype(np.float32), sps)
    if bt is not None:
        freq = np.convolve(freq, _gaussian_pulse(bt, sps), mode="same")
    freq = freq[:count]
    return cis(np.cumsum(freq, dtype=np.float64) * (h / (2 * sps)))


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
            return cis(phi0 - drift * period / _TWO_PI * np.cos(_TWO_PI * t / period + theta))

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
            "cw",
            (f0 - half, f0 + half),
        )


def _audio(rng, lo_hz: float, hi_hz: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    freqs = rng.uniform(lo_hz, hi_hz, 3)
    amps = rng.uniform(0.2, 1.0, 3)
    return freqs, amps / amps.sum(), rng.uniform(0, _TWO_PI, 3)


def _emit_fm(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    start, count = _long_extent(rng, fs, n_total)
    variant = _choose(rng, ("nfm", "fm-voice", "wfm"), (0.4, 0.4, 0.2))
    if variant == "wfm" and fs < 1e6:
        variant = "fm-voice"
    fc = rng.uniform(-0.42, 0.42) * fs
    if variant == "nfm":
        dev = rng.uniform(2.5e3, 5e3)
        freqs, amps, thetas = _audio(rng, 300.0, 3000.0)
        top = float(freqs.max())

        def fm_envelope(t):
            cycles = np.zeros(t.shape, np.float64)
            for f, a, th in zip(freqs, amps, thetas, strict=True):
                cycles += (dev * a / f) * np.sin(_TWO_PI * f * t + th) / _TWO_PI
            return cis(cycles)

        comment = f"NBFM tones dev {dev:.0f} Hz"
    else:
        wide = variant == "wfm"
        dev = rng.uniform(50e3, 75e3) if wide else rng.uniform(2.5e3, 5e3)
        top = 15e3 if wide else 3400.0
        msg = _voice(rng, count / fs, top)

        def fm_envelope(t):  # t counts from the instance's start
            return cis(dev * msg.integral(t))

        comment = f"{'WFM' if wide else 'NBFM'} voice dev {dev / 1e3:.1f} kHz"
    render = _Narrowband(fm_envelope, fc, fs, 2 * (dev + top))
    yield _closed_instance("fm", start, count, render, fs, _snr(rng, snr_range), comment, variant)


def _emit_am(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    start, count = _long_extent(rng, fs, n_total)
    variant = _choose(rng, ("am", "am-voice"))
    depth = rng.uniform(0.3, 0.9)
    fc = rng.uniform(-0.42, 0.42) * fs
    if variant == "am":
        freqs, amps, thetas = _audio(rng, 200.0, 4000.0)
        norm = np.float32(1.0 / math.sqrt(1.0 + depth**2 * float(np.sum(amps**2)) / 2.0))
        top = float(freqs.max())

        def am_envelope(t):
            msg = np.zeros(t.shape, np.float64)
            for f, a, th in zip(freqs, amps, thetas, strict=True):
                msg += a * np.cos(_TWO_PI * f * t + th)
            return (1.0 + depth * msg) * norm

    else:
        top = float(rng.choice([3400.0, 5000.0]))  # voice; broadcast AM to 5 kHz
        msg = _voice(rng, count / fs, top)
        norm = np.float32(1.0 / math.sqrt(1.0 + depth**2 * 0.1))

        def am_envelope(t):  # t counts from the instance's start
            return (1.0 + depth * msg(t)) * norm

    render = _Narrowband(am_envelope, fc, fs, 2 * top)
    yield _closed_instance(
        "am", start, count, render, fs, _snr(rng, snr_range), f"AM depth {depth:.2f} ({variant})", variant
    )


def _emit_fsk(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    variant = _choose(rng, ("gfsk-hop", "2fsk", "4fsk", "gmsk"), (0.4, 0.2, 0.2, 0.2))
    if variant == "gfsk-hop":
        yield from _fsk_hopper(rng, fs, n_total, snr_range)
        return
    # One channel, packets: symbol rates from 1 kBd to fs/16.
    rs = math.exp(rng.uniform(math.log(1e3), math.log(max(2e3, fs / 16))))
    sps = max(4, round(fs / rs))
    rs = fs / sps
    levels = 4 if variant == "4fsk" else 2
    h = 0.5 if variant == "gmsk" else float(rng.uniform(0.5, 2.0))
    bt = 0.3 if variant == "gmsk" else (0.5 if rng.uniform() < 0.5 else None)
    width = rs * (h * (levels - 1) + 1.5)
    fc = rng.uniform(-1, 1) * (0.44 * fs - width / 2)
    dur = (max(0.002, 32 / rs), max(0.05, 256 / rs))
    for start, count in _sequence(rng, fs, n_total, dur, (0.005, 0.3), max_count=8):
        nsym = -(-count // sps) + 1
        symbols = 2 * rng.integers(0, levels, nsym) - (levels - 1)
        wave = _cpfsk(symbols, sps, h, count, bt) * _carrier(fc, fs, 0, count, rng.uniform())
        yield _array_instance(
            "fsk",
            start,
            wave,
            fs,
            _snr(rng, snr_range),
            f"{variant} {rs / 1e3:.1f} kBd h={h:.2f}" + (f" BT={bt}" if bt else ""),
            variant,
            rng,
        )


def _fsk_hopper(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    sps = max(4, round(fs / 1e6))  # Bluetooth's 1 Msym/s where the rate allows
    rs = fs / sps
    h = float(rng.choice([0.32, 0.5]))
    spacing = 1.25 * rs
    n_ch = max(1, min(40, int(0.75 * fs / spacing)))
    centres = (np.arange(n_ch) - (n_ch - 1) / 2) * spacing
    for start, count in _sequence(rng, fs, n_total, (1e-3, 3e-3), (2e-3, 25e-3)):
        nsym = max(8, count // sps + 1)
        bits = (rng.integers(0, 2, nsym) * 2 - 1).astype(np.float32)
        fc = float(centres[rng.integers(0, n_ch)])
        wave = _cpfsk(bits, sps, h, count, 0.5) * _carrier(fc, fs, 0, count)
        yield _array_instance(
            "fsk", start, wave, fs, _snr(rng, snr_range), f"GFSK hopper {rs / 1e3:.0f} kBd h={h}", "gfsk", rng
        )


def _emit_ofdm(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    nfft = int(rng.choice([64, 128, 256, 512, 1024, 2048]))
    frac = rng.uniform(0.05, 0.45)  # occupied fraction of the band
    used = max(8, int(rng.uniform(0.6, 0.9) * nfft) // 2 * 2)
    size = max(nfft, round(used / frac))
    bins = np.concatenate([np.arange(-used // 2, 0), np.arange(1, used // 2 + 1)]) % size  # DC null
    nulls = rng.uniform(0, 0.1)  # a few null carriers beside the DC one
    keep = rng.random(bins.shape[0]) >= nulls
    bins = bins[keep]
    cp_frac = float(rng.choice([1 / 4, 1 / 8, 1 / 16, 1 / 32]))
    cp = max(1, int(size * cp_frac))
    width = used / size * fs
    fc = rng.uniform(-1, 1) * (0.44 * fs - width / 2)
    qam = _choose(rng, ("qpsk", "qam16", "qam64"))
    duration_s = n_total / fs
    t_from = rng.uniform(0, 0.3) * duration_s
    t_to = t_from + rng.uniform(0.4, 1.0) * duration_s
    sym_s = (size + cp) / fs
    dur = (max(1e-3, 4 * sym_s), max(5e-3, 20 * sym_s))
    continuous = rng.uniform() < 0.35  # a broadcast / downlink carrier: on for the whole stretch
    extents = [_long_extent(rng, fs, n_total)] if continuous else None
    for start, count in extents or _sequence(rng, fs, n_total, dur, (3e-3, 40e-3), t_from, t_to):
        nsym = max(1, -(-count // (size + cp)))
        spec = np.zeros((nsym, size), np.complex64)
        spec[:, bins] = _constellation(rng, qam, nsym * bins.shape[0]).reshape(nsym, bins.shape[0])
        sym = scipy.fft.ifft(spec, axis=1)
        wave = np.concatenate([sym[:, -cp:], sym], axis=1).reshape(-1)[:count]
        wave = wave * _carrier(fc, fs, 0, count, rng.uniform())
        yield _array_instance(
            "ofdm",
            start,
            wave,
            fs,
            _snr(rng, snr_range),
            f"OFDM FFT {nfft}, {bins.shape[0]} used of {size}, CP 1/{round(1 / cp_frac)}, {qam}"
            + (", continuous" if continuous else ""),
            "ofdm",
            None if continuous else rng,
        )


def _emit_chirp(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    if rng.uniform() < 0.4:
        yield from _lora(rng, fs, n_total, snr_range)
        return
    sweep = rng.uniform(0.02, 0.25) * fs
    fc = rng.uniform(-1, 1) * (0.44 * fs - sweep / 2)
    down = rng.uniform() < 0.3
    for start, count in _sequence(rng, fs, n_total, (0.02, 0.3), (0.05, 0.6), max_count=3):
        period = max(16, min(int(rng.uniform(0.5e-3, 5e-3) * fs), count // 4))
        rate = sweep / (period / fs) * (-1 if down else 1)
        idx = np.arange(count, dtype=np.float64)
        tt = np.mod(idx, period) / fs
        f_start = fc + (sweep / 2 if down else -sweep / 2)
        cycles = f_start * tt + 0.5 * rate * tt**2 + (fc / fs) * (idx - np.mod(idx, period))
        yield _array_instance(
            "chirp",
            start,
            cis(cycles),
            fs,
            _snr(rng, snr_range),
            f"LFM {'down' if down else 'up'} {sweep / 1e3:.0f} kHz / {period / fs * 1e3:.2f} ms",
            "lfm",
            rng,
        )


def _lora(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    """LoRa-like packets: 8 up-chirps, 2 down-chirps, then cyclically shifted data chirps."""
    bw = fs * rng.uniform(1 / 80, 1 / 8)
    sf = int(rng.integers(6, 11))
    sym = max(16, round(2**sf / bw * fs))
    while sym / fs > 4e-3 and sf > 5:
        sf -= 1
        sym = max(16, round(2**sf / bw * fs))
    fc = rng.uniform(-1, 1) * (0.44 * fs - bw / 2)
    tt = np.arange(sym) / fs
    slope = bw / (sym / fs)
    for start, _ in _sequence(rng, fs, n_total, (0.02, 0.1), (0.05, 0.5), max_count=3):
        n_data = int(rng.integers(8, 32))
        pieces = []
        for kind in ["up"] * 8 + ["down"] * 2 + ["data"] * n_data:
            shift = rng.uniform(0, bw) if kind == "data" else 0.0
            if kind == "down":
                f = bw / 2 - slope * tt
            else:
                f = np.mod(-bw / 2 + shift + slope * tt + bw / 2, bw) - bw / 2
            pieces.append(f)
        inst = np.concatenate(pieces) + fc
        count = min(inst.shape[0], n_total - start)
        if count < sym:
            continue
        wave = cis(np.cumsum(inst[:count], dtype=np.float64) / fs)
        yield _array_instance(
            "chirp",
            start,
            wave,
            fs,
            _snr(rng, snr_range),
            f"LoRa-like SF{sf} BW {bw / 1e3:.0f} kHz, {n_data} symbols",
            "lora",
            rng,
        )


def _emit_ook(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    variant = _choose(rng, ("ook", "ask", "ook-pwm"), (0.4, 0.3, 0.3))
    baud = rng.uniform(1e3, 10e3)
    fc = rng.uniform(-0.42, 0.42) * fs
    sps = max(2, round(fs / baud))
    depth = rng.uniform(0.5, 0.9) if variant == "ask" else 1.0
    for start, count in _sequence(rng, fs, n_total, (0.02, 0.15), (0.02, 0.3), max_count=6):
        nsym = max(4, -(-count // sps))
        if variant == "ook-pwm":  # each bit one period: on for 1/3 (0) or 2/3 (1), then off
            bits = rng.integers(0, 2, -(-nsym // 3) + 1)
            on = np.where(bits[:, None] == 1, [1, 1, 0], [1, 0, 0]).reshape(-1).astype(np.float32)
            keyed = np.repeat(on, sps)[:count]
        else:
            bits = rng.integers(0, 2, nsym).astype(np.float32)
            bits[:4] = (1, 0, 1, 0)  # preamble: starts keyed on, as a real remote does
            keyed = np.repeat(bits, sps)[:count]
        if keyed.shape[0] < count:
            keyed = np.pad(keyed, (0, count - keyed.shape[0]))
        env = _moving_average(1.0 - depth + depth * keyed, max(1, sps // 5))  # 20 % edge ramps
        wave = _carrier(fc, fs, 0, count, rng.uniform()) * env
        yield _array_instance(
            "ook",
            start,
            wave,
            fs,
            _snr(rng, snr_range),
            f"{variant} {baud:.0f} Bd depth {depth:.2f}",
            variant,
            rng,
        )


def _rrc_burst(rng, mod: str, sps: int, alpha: float, count: int) -> np.ndarray:
    taps = _rrc(alpha, sps)
    nsym = -(-count // sps) + 8
    shaped = upfirdn(taps, _constellation(rng, mod, nsym), up=sps)
    lead = taps.shape[0] // 2 + 4 * sps  # skip the filter's ramp-up
    return shaped[lead : lead + count]


def _emit_psk(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    variant = _choose(rng, ("single", "dsss", "tdma"), (0.6, 0.2, 0.2))
    alpha = rng.uniform(0.2, 0.5)
    if variant == "dsss":
        chips = int(rng.choice([11, 31, 127]))
        sps = int(rng.integers(2, 9))  # samples per chip: 1/8 .. 1/2 of the band
        code = (rng.integers(0, 2, chips) * 2 - 1).astype(np.float32)
        width = fs / sps * (1 + alpha)
        fc = rng.uniform(-1, 1) * (0.44 * fs - width / 2)
        taps = _rrc(alpha, sps)
        for start, count in _sequence(rng, fs, n_total, (2e-3, 0.05), (5e-3, 0.3), max_count=5):
            nbits = -(-count // (sps * chips)) + 2
            data = rng.integers(0, 2, nbits) * 2 - 1
            chipseq = (data[:, None] * code[None, :]).reshape(-1).astype(np.complex64)
            shaped = upfirdn(taps, chipseq, up=sps)[taps.shape[0] // 2 :][:count]
            if shaped.shape[0] < count:
                continue
            wave = shaped * _carrier(fc, fs, 0, count, rng.uniform())
            yield _array_instance(
                "psk",
                start,
                wave,
                fs,
                _snr(rng, snr_range),
                f"DSSS BPSK {chips} chips, {fs / sps / 1e3:.0f} kchip/s",
                "dsss",
                rng,
            )
        return
    mod = _choose(rng, ("bpsk", "qpsk", "8psk", "qam16", "qam64"))
    # From about two columns of the frame to 1/6 of the band.
    sps = round(math.exp(rng.uniform(math.log(6), math.log(600))))
    width = fs / sps * (1 + alpha)
    fc = rng.uniform(-1, 1) * (0.44 * fs - width / 2)
    if variant == "tdma":
        slot = rng.uniform(0.5e-3, 5e-3)
        frame_slots = int(rng.integers(4, 9))
        active = rng.random(frame_slots) < 0.5
        active[0] = True
        t0 = rng.uniform(0, 0.5) * n_total / fs  # active for 30–300 ms, at most 24 bursts
        t_end = t0 + rng.uniform(0.03, 0.3)
        k = n_bursts = 0
        while n_bursts < 24:
            s_idx = k % frame_slots
            begin = int((t0 + k * slot) * fs)
            count = int(0.9 * slot * fs)  # guard time between slots
            if begin + count > n_total or begin > t_end * fs:
                break
            if active[s_idx] and count >= 4 * sps:
                n_bursts += 1
                wave = _rrc_burst(rng, mod, sps, alpha, count) * _carrier(fc, fs, 0, count, rng.uniform())
                yield _array_instance(
                    "psk",
                    begin,
                    wave,
                    fs,
                    _snr(rng, snr_range),
                    f"TDMA slot {s_idx}/{frame_slots} of {slot * 1e3:.2f} ms, {mod} {fs / sps / 1e3:.1f} kBd",
                    "tdma",
                    rng,
                )
            k += 1
        return
    continuous = rng.uniform() < 0.35  # a continuous carrier (satellite, broadcast, a link's downlink)
    extents = [_long_extent(rng, fs, n_total)] if continuous else None
    for start, count in extents or _sequence(rng, fs, n_total, (0.005, 0.4), (0.02, 0.3), max_count=4):
        wave = _rrc_burst(rng, mod, sps, alpha, count) * _carrier(fc, fs, 0, count, rng.uniform())
        yield _array_instance(
            "psk",
            start,
            wave,
            fs,
            _snr(rng, snr_range),
            f"{mod} {fs / sps / 1e3:.1f} kBd RRC {alpha:.2f}" + (", continuous" if continuous else ""),
            mod,
            None if continuous else rng,
        )


def _emit_pulsed(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    if fs >= 2e6 and rng.uniform() < 0.35:
        yield from _adsb(rng, fs, n_total, snr_range)
        return
    width = int(rng.uniform(max(5e-6, 32 / fs), max(50e-6, 128 / fs)) * fs)
    pri = max(4 * width, int(rng.uniform(0.25e-3, 2e-3) * fs))
    chirped = rng.uniform() < 0.5
    sweep = min(0.2 * fs, rng.uniform(2, 10) * fs / width) if chirped else 0.0
    fc = rng.uniform(-1, 1) * (0.44 * fs - max(sweep, 4 * fs / width) / 2)
    shape = np.hanning(width + 2)[1:-1].astype(np.float32)
    tp = np.arange(width) / fs
    pulse = shape * cis(-0.5 * sweep * tp + 0.5 * (sweep / (width / fs)) * tp**2)
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
            "radar-lfm" if chirped else "radar",
            rng,
        )


ADSB_PREAMBLE_US = (0.0, 1.0, 3.5, 4.5)  # pulse starts of the Mode S preamble (0.5 µs pulses)


def _adsb(rng, fs, n_total, snr_range) -> Iterator[_Instance]:
    """Mode S extended squitters: 8 µs preamble + 112 bits of 1 µs pulse-position code (120 µs)."""
    fc = rng.uniform(-0.3, 0.3) * fs
    rate = rng.uniform(20.0, 150.0)  # replies per second
    t = rng.exponential(1.0 / rate)
    us = fs * 1e-6
    while True:
        start = int(t * fs)
        count = int(120 * us)
        if start + count > n_total:
            break
        env = np.zeros(count, np.float32)
        bits = rng.integers(0, 2, 112)
        starts = list(ADSB_PREAMBLE_US) + [8.0 + i + (0.0 if b else 0.5) for i, b in enumerate(bits)]
        for s in starts:
            a, b = int(s * us), int((s + 0.5) * us)
            env[a : max(b, a + 1)] = 1.0
        wave = env * _carrier(fc, fs, 0, count, rng.uniform())
        yield _array_instance(
            "pulsed",
            start,
            wave,
            fs,
            _snr(rng, snr_range),
            "ADS-B-like Mode S squitter, 1 Mb/s PPM",
            "adsb",
            rng,
        )
        t += 120e-6 + rng.exponential(1.0 / rate)


EMITTERS: dict[str, Callable[..., Iterator[_Instance]]] = {
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

# The fine labels (``rfstream:modulation``) each family's emitter can draw.
FINE_LABELS: dict[str, tuple[str, ...]] = {
    "tone": ("cw",),
    "am": ("am", "am-voice"),
    "fm": ("nfm", "fm-voice", "wfm"),
    "fsk": ("gfsk", "2fsk", "4fsk", "gmsk"),
    "ook": ("ook", "ask", "ook-pwm"),
    "psk": ("bpsk", "qpsk", "8psk", "qam16", "qam64", "dsss", "tdma"),
    "ofdm": ("ofdm",),
    "chirp": ("lfm", "lora"),
    "pulsed": ("radar", "radar-lfm", "adsb"),
}
