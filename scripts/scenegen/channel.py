"""Impairments: each transmitter's path (offset, drift, phase noise, multipath, fading) and the receiver.

The receiver's noise is made in the frequency domain, so its colour (tilt, ripple,
roll-off at the band edges), its spurs and its DC offset cost one inverse FFT; the
same PSD function gives each signal's in-band noise for the SNR. After the signals
are added: IQ imbalance, the ADC's gain and clipping, and quantisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

TAU = 2.0 * math.pi


# --- one transmitter's path ------------------------------------------------------------------------
@dataclass(frozen=True)
class Path:
    drift_hz_per_s: float  # carrier drift
    linewidth_hz: float  # phase noise (Wiener), the oscillator's 3 dB linewidth
    delays: tuple[float, ...] = ()  # multipath echoes, seconds
    gains: tuple[complex, ...] = ()
    doppler_hz: float = 0.0  # > 0: slow fading with this Doppler spread
    rician_k: float = 0.0  # line-of-sight power over scattered power


def draw_path(rng: np.random.Generator, fs: float, bw_hz: float) -> Path:
    drift = rng.normal(0.0, 20.0) if rng.random() < 0.5 else 0.0
    linewidth = float(np.exp(rng.uniform(np.log(0.5), np.log(100.0))))
    delays: tuple[float, ...] = ()
    gains: tuple[complex, ...] = ()
    if rng.random() < 0.4:  # echoes spread over a fraction of a symbol to a few symbols
        spread_s = rng.uniform(0.2, 3.0) / max(bw_hz, 1e3)
        k = int(rng.integers(1, 4))
        d = np.sort(rng.uniform(0.1, 1.0, k)) * spread_s
        p = np.exp(-rng.uniform(0.5, 3.0) * np.arange(1, k + 1))
        g = np.sqrt(p) * np.exp(1j * rng.uniform(0, TAU, k))
        delays, gains = tuple(float(v) for v in d), tuple(complex(v) for v in g)
    doppler = 0.0
    k_factor = 0.0
    if rng.random() < 0.35:
        doppler = float(np.exp(rng.uniform(np.log(0.5), np.log(40.0))))
        k_factor = float(rng.choice([0.0, 1.0, 4.0, 10.0]))
    return Path(float(drift), linewidth, delays, gains, doppler, k_factor)


def fading_gain(rng: np.random.Generator, t_s: np.ndarray, doppler_hz: float, k_factor: float) -> np.ndarray:
    """A complex gain with unit mean power at times ``t_s``: a sum of sinusoids (Clarke), Rician if k > 0."""
    paths = 12
    angles = rng.uniform(0, TAU, paths)
    phases = rng.uniform(0, TAU, paths)
    scattered = np.exp(
        1j * (TAU * doppler_hz * np.cos(angles)[:, None] * t_s[None, :] + phases[:, None])
    ).sum(0)
    scattered /= math.sqrt(paths)
    los = np.exp(1j * rng.uniform(0, TAU))
    return math.sqrt(k_factor / (k_factor + 1)) * los + math.sqrt(1 / (k_factor + 1)) * scattered


def apply_path(
    rng: np.random.Generator, x: np.ndarray, fs: float, path: Path, offset_hz: float
) -> np.ndarray:
    """Echoes, then one complex gain per sample: fading, drift, phase noise and the frequency offset.

    Fading, drift and phase noise change slowly, so they are evaluated once per block of
    about 4 µs (one sample at low rates); the offset's fast rotation is one block-long
    vector reused for every block (an outer product), which keeps this cheap for long
    emissions.
    """
    n = x.size
    if path.delays:
        y = x.copy()
        for d_s, g in zip(path.delays, path.gains, strict=True):
            d = round(d_s * fs)
            if 0 < d < n:
                y[d:] += np.complex64(g) * x[: n - d]
        x = y
    block = int(np.clip(round(fs * 4e-6), 1, 64))
    nb = -(-n // block)
    tb = np.arange(nb, dtype=np.float64) * (block / fs)
    slow = TAU * offset_hz * tb + np.pi * path.drift_hz_per_s * tb**2 + rng.uniform(0, TAU)
    if path.linewidth_hz > 0:
        slow += np.cumsum(rng.standard_normal(nb) * math.sqrt(TAU * path.linewidth_hz * block / fs))
    gain = np.exp(1j * slow)
    if path.doppler_hz > 0:
        gain = gain * fading_gain(rng, tb, path.doppler_hz, path.rician_k)
    base = np.exp(1j * TAU * offset_hz * np.arange(block) / fs)
    rot = (gain.astype(np.complex64)[:, None] * base.astype(np.complex64)[None, :]).ravel()[:n]
    return (x * rot).astype(np.complex64, copy=False)


# --- the receiver -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Receiver:
    name: str  # float | sdr12 | rtl8
    datatype: str  # what the recording is written as
    bits: int | None  # ADC resolution; None: no quantisation (floating point)
    headroom_db: float  # full scale above the record's RMS (small: the strongest bursts clip)
    tilt_db: float  # noise floor slope from -fs/2 to +fs/2
    ripple_db: float
    ripple_cycles: float
    ripple_phase: float
    rolloff_db: float  # attenuation at the band edge (anti-alias filter)
    rolloff_start: float  # as a fraction of fs/2
    iq_gain_db: float
    iq_phase_deg: float
    dc_db: float | None  # DC offset power relative to the noise per sample
    spurs: tuple[tuple[float, float], ...] = field(default_factory=tuple)  # (Hz offset, dB re noise/sample)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "datatype": self.datatype,
            "bits": self.bits,
            "headroom_db": round(self.headroom_db, 2),
            "noise_tilt_db": round(self.tilt_db, 2),
            "noise_ripple_db": round(self.ripple_db, 2),
            "rolloff_db": round(self.rolloff_db, 2),
            "iq_gain_db": round(self.iq_gain_db, 3),
            "iq_phase_deg": round(self.iq_phase_deg, 3),
            "dc_offset_db": None if self.dc_db is None else round(self.dc_db, 2),
            "spurs": [{"offset_hz": round(f, 1), "level_db": round(p, 2)} for f, p in self.spurs],
        }


RECEIVERS = ("float", "sdr12", "rtl8")


def draw_receiver(rng: np.random.Generator, fs: float, kind: str | None = None) -> Receiver:
    kind = kind or str(rng.choice(RECEIVERS, p=[0.3, 0.4, 0.3]))
    if kind not in RECEIVERS:
        raise ValueError(f"unknown receiver {kind!r}; expected one of {', '.join(RECEIVERS)}")
    n_spurs = 0 if kind == "float" else int(rng.integers(0, 4))
    # faint spurs: -36..-26 dB per sample below the noise, i.e. 0-10 dB above one 4096-point bin
    spurs = tuple(
        (float(rng.uniform(-0.45, 0.45) * fs), float(rng.uniform(-36.0, -26.0))) for _ in range(n_spurs)
    )
    return Receiver(
        name=kind,
        datatype={"float": "cf32_le", "sdr12": "ci16_le", "rtl8": "cu8"}[kind],
        bits={"float": None, "sdr12": 12, "rtl8": 8}[kind],
        headroom_db=float(rng.uniform(11.0, 15.0) if kind == "rtl8" else rng.uniform(12.0, 20.0)),
        tilt_db=float(rng.uniform(-4.0, 4.0)),
        ripple_db=float(rng.uniform(0.0, 1.5)),
        ripple_cycles=float(rng.uniform(0.5, 4.0)),
        ripple_phase=float(rng.uniform(0, TAU)),
        rolloff_db=float(rng.uniform(3.0, 15.0)),
        rolloff_start=float(rng.uniform(0.88, 0.95)),
        iq_gain_db=0.0 if kind == "float" else float(rng.uniform(-0.3, 0.3)),
        iq_phase_deg=0.0 if kind == "float" else float(rng.uniform(-2.0, 2.0)),
        dc_db=None if kind == "float" else float(rng.uniform(-34.0, -24.0)),
        spurs=spurs,
    )


def noise_psd(rx: Receiver, f_hz: np.ndarray, fs: float) -> np.ndarray:
    """Noise power per sample per unit of normalised bandwidth (white unit-power noise: 1)."""
    u = np.asarray(f_hz, dtype=np.float64) / (fs / 2)  # -1 .. 1
    db = 0.5 * rx.tilt_db * u + rx.ripple_db * np.sin(np.pi * rx.ripple_cycles * u + rx.ripple_phase)
    edge = np.clip((np.abs(u) - rx.rolloff_start) / (1.0 - rx.rolloff_start), 0.0, 1.0)
    db -= rx.rolloff_db * (0.5 - 0.5 * np.cos(np.pi * edge))
    return 10.0 ** (db / 10.0)


def band_noise_power(rx: Receiver, lo_hz: float, hi_hz: float, fs: float) -> float:
    """Noise power inside [lo, hi] (Hz from the centre) per sample, as the PSD integrates it."""
    f = np.linspace(lo_hz, hi_hz, 65)
    return float(noise_psd(rx, f, fs).mean() * (hi_hz - lo_hz) / fs)


def noise_spectrum(rng: np.random.Generator, rx: Receiver, m: int, fs: float) -> np.ndarray:
    """The spectrum (``m`` bins, FFT order) of coloured receiver noise with its spurs and DC offset.

    ``ifft(spectrum) * sqrt(m)`` is the noise in time; signals may be added to the spectrum
    first (``scene.py`` adds the long emissions there) so one inverse FFT makes them all.
    """
    z = rng.standard_normal((2, m), dtype=np.float32)
    spec = np.empty(m, dtype=np.complex64)
    spec.real = z[0]
    spec.imag = z[1]
    del z
    # the PSD is smooth: evaluate it on 4096 bands and hold it across each band's bins
    k = 4096
    edges = np.linspace(0, m, k + 1).round().astype(np.int64)
    f_mid = ((edges[:-1] + edges[1:]) / 2 - m / 2) * (fs / m)
    amp = np.repeat(np.sqrt(noise_psd(rx, f_mid, fs) / 2.0).astype(np.float32), np.diff(edges))
    spec *= np.fft.ifftshift(amp)  # shifted order (-fs/2 first) -> FFT order
    del amp
    root_m = math.sqrt(m)
    for offset, level_db in rx.spurs:
        b = round(offset / fs * m) % m
        spec[b] += np.complex64(10 ** (level_db / 20) * root_m * np.exp(1j * rng.uniform(0, TAU)))
    if rx.dc_db is not None:
        spec[0] += np.complex64(10 ** (rx.dc_db / 20) * root_m * np.exp(1j * rng.uniform(0, TAU)))
    return spec


def finish(rx: Receiver, x: np.ndarray) -> tuple[np.ndarray, float]:
    """IQ imbalance, the ADC's gain, clipping and quantisation: (samples to write, fraction clipped)."""
    g = 10 ** (rx.iq_gain_db / 20)
    phi = math.radians(rx.iq_phase_deg)
    if g != 1.0 or phi != 0.0:
        mu = np.complex64((1 + g * np.exp(-1j * phi)) / 2)
        nu = np.complex64((1 - g * np.exp(1j * phi)) / 2)
        x = mu * x + nu * np.conj(x)
    if rx.bits is None:
        return x.astype(np.complex64, copy=False), 0.0
    rms = math.sqrt(float(np.mean(x.real**2 + x.imag**2)) / 2)
    scale = 10 ** (-rx.headroom_db / 20) / max(rms, 1e-30)
    iq = np.empty((x.size, 2), dtype=np.float32)
    iq[:, 0] = x.real * scale
    iq[:, 1] = x.imag * scale
    clipped = float(np.mean(np.any(np.abs(iq) > 1.0, axis=1)))
    np.clip(iq, -1.0, 1.0, out=iq)
    if rx.datatype == "cu8":
        out = np.round(iq * 127.5 + 127.5).clip(0, 255).astype(np.uint8)
    else:  # ci16_le carrying a 12-bit ADC, MSB-aligned
        q = 2 ** (rx.bits - 1) - 1
        out = (np.round(iq * q) * 2 ** (16 - rx.bits)).astype("<i2")
    return out, clipped
