"""Channel and receiver effects of the synthesiser.

Per emission (:func:`impair`, on bursts rendered whole), each with its own probability:

    drift       linear frequency drift over the burst (oscillator warming up, Doppler)
    phase noise a random-walk phase (Lorentzian line of 10–300 Hz)
    multipath   2–3 taps within a few µs (frequency-selective), and
    fading      a slow Rician gain (Doppler 2–30 Hz) along the burst

The burst is normalised to unit mean power afterwards and its band measured on the
impaired waveform, so annotations and SNR hold for what is drawn.

Per capture (:class:`Receiver`, drawn from the seed, applied block by block to
the whole capture), each with its own probability:

    coloured floor   the noise through a 3-tap FIR: a smooth tilt/ripple of up to about ±3 dB
                     across the band (unit mean power kept)
    spurs            1–3 exactly stable, unannotated carriers, faint (2–8 dB in a 4096-bin FFT)
    DC spike         an unannotated constant offset (8–25 dB in a 4096-bin FFT)
    IQ imbalance     0.5–3 % gain and 0.5–3° phase error: a faint image of every signal
    band-edge roll-off  a low-pass FIR at 0.40–0.47 of the rate: signals and floor fade at the edges
    8-bit ADC        the noise scaled to 1.5–6 LSB, clipped at ±127 and rounded (strong signals clip)

None of these is annotated: they are what a detector must learn to ignore.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import firwin, lfilter, lfilter_zi

_TWO_PI = 2.0 * np.pi


def drift(wave: np.ndarray, total_hz: float, fs: float) -> np.ndarray:
    """A linear frequency drift of ``total_hz`` over the burst (starting at its carrier)."""
    t = np.arange(wave.shape[0], dtype=np.float64) / fs
    span = max(t[-1], 1.0 / fs)
    return (wave * cis(0.5 * (total_hz / span) * t**2)).astype(np.complex64, copy=False)


def _coarse(values: np.ndarray, n: int, step: int) -> np.ndarray:
    """Linear interpolation of ``values`` (one per ``step`` samples, from sample 0) onto ``n`` samples."""
    return np.interp(np.arange(n) / step, np.arange(values.shape[0]), values).astype(np.float32)


def phase_noise(wave: np.ndarray, linewidth_hz: float, fs: float, rng: np.random.Generator) -> np.ndarray:
    """A random-walk phase: a Lorentzian line ``linewidth_hz`` wide (3 dB).

    The walk is drawn every ``step`` samples (its spectrum lies far below fs/step) and
    interpolated linearly.
    """
    n = wave.shape[0]
    step = max(1, min(64, int(fs / (200.0 * max(linewidth_hz, 1.0)))))
    coarse = np.cumsum(rng.standard_normal(n // step + 2) * math.sqrt(_TWO_PI * linewidth_hz * step / fs))
    return (wave * cis(_coarse(coarse, n, step) / _TWO_PI)).astype(np.complex64, copy=False)


def multipath(wave: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """The burst through a tapped delay line (``taps[k]``: gain of the echo k samples late)."""
    return np.convolve(wave, taps.astype(np.complex64))[: wave.shape[0]].astype(np.complex64)


def fading_gain(n: int, fs: float, k: float, dopplers: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """A Rician gain along ``n`` samples: line of sight (factor ``k``) plus scatterers, unit mean power.

    Evaluated every ``step`` samples (Doppler ≤ 30 Hz: far below the grid's rate) and interpolated.
    """
    step = max(1, int(fs / (50.0 * max(float(np.max(dopplers)), 1.0))))
    t = np.arange(n // step + 2, dtype=np.float64) * (step / fs)
    scatter = sum(cis(d * t + p) for d, p in zip(dopplers, phases, strict=True)) / math.sqrt(len(dopplers))
    g = (math.sqrt(k) + scatter) / math.sqrt(k + 1.0)
    out = np.empty(n, np.complex64)
    out.real = _coarse(g.real, n, step)
    out.imag = _coarse(g.imag, n, step)
    return out


def impair(wave: np.ndarray, rng: np.random.Generator, fs: float) -> tuple[np.ndarray, list[str]]:
    """Channel effects on one burst (complex64 in, complex64 out), each drawn at random, and their names."""
    n = wave.shape[0]
    effects: list[str] = []
    if n < 64:
        return wave, effects
    if rng.uniform() < 0.4:  # linear drift, up to a few kHz over the burst
        total = rng.uniform(-1, 1) * min(5e3, 0.01 * fs)
        wave = drift(wave, total, fs)
        effects.append(f"drift {total:+.0f} Hz")
    if rng.uniform() < 0.3:
        linewidth = rng.uniform(10.0, 300.0)
        wave = phase_noise(wave, linewidth, fs, rng)
        effects.append(f"phase noise {linewidth:.0f} Hz")
    if rng.uniform() < 0.3:
        span = max(2, int(rng.uniform(0.3e-6, 3e-6) * fs))
        taps = np.zeros(span + 1, np.complex128)
        taps[0] = 1.0
        for _ in range(int(rng.integers(1, 3))):
            taps[int(rng.integers(1, span + 1))] += rng.uniform(0.2, 0.7) * cis(np.array(rng.uniform()))
        wave = multipath(wave, taps)
        effects.append(f"multipath {span / fs * 1e6:.1f} us")
    if rng.uniform() < 0.3 and n / fs > 5e-3:
        k = rng.uniform(0.0, 3.0)  # Rician K: 0 is Rayleigh
        gain = fading_gain(n, fs, k, rng.uniform(2.0, 30.0, 3), rng.uniform(0, 1, 3))
        wave = (wave * gain).astype(np.complex64)
        effects.append(f"fading K={k:.1f}")
    return wave, effects


def cis(cycles: np.ndarray) -> np.ndarray:
    """exp(j 2π cycles) as complex64 (reduced mod 1 in float64, trigonometry in float32)."""
    ph = (_TWO_PI * np.mod(cycles, 1.0)).astype(np.float32)
    out = np.empty(ph.shape, np.complex64)
    out.real = np.cos(ph)
    out.imag = np.sin(ph)
    return out


@dataclass
class Receiver:
    """A capture's receiver: effects drawn once from the seed, applied block by block."""

    fs: float
    floor_taps: np.ndarray | None = None  # FIR colouring the noise floor (unit power gain)
    spurs: list[tuple[float, float]] = field(default_factory=list)  # (Hz, amplitude)
    dc: complex = 0j
    iq_gain: float = 1.0
    iq_phase_rad: float = 0.0
    rolloff: np.ndarray | None = None  # FIR taps
    adc_lsb: float | None = None  # noise RMS per component, in LSB
    _zi: np.ndarray | None = None

    @classmethod
    def draw(cls, rng: np.random.Generator, fs: float) -> Receiver:
        rx = cls(fs)
        if rng.uniform() < 0.6:
            taps = np.array([1.0, *(rng.uniform(0.05, 0.3, 2) * cis(rng.uniform(0, 1, 2)))], np.complex64)
            rx.floor_taps = taps / np.float32(np.sqrt(np.sum(np.abs(taps) ** 2)))
        if rng.uniform() < 0.3:
            bin_power = fs / 4096.0 / fs  # noise power in one bin of a 4096-point FFT
            ref = rng.uniform(0.02, 0.2) * fs
            for k in range(int(rng.integers(1, 4))):
                f = (k + 1) * ref * rng.choice([-1.0, 1.0])
                if abs(f) < 0.45 * fs:
                    rx.spurs.append((f, math.sqrt(bin_power * 10 ** (rng.uniform(2.0, 8.0) / 10))))
        if rng.uniform() < 0.5:
            power = 10 ** (rng.uniform(8.0, 25.0) / 10) / 4096.0
            rx.dc = complex(math.sqrt(power) * np.exp(1j * rng.uniform(0, _TWO_PI)))
        if rng.uniform() < 0.4:
            rx.iq_gain = 1.0 + rng.uniform(-0.03, 0.03)
            rx.iq_phase_rad = math.radians(rng.uniform(-3.0, 3.0))
        if rng.uniform() < 0.5:
            cutoff = rng.uniform(0.80, 0.94)  # of Nyquist
            rx.rolloff = firwin(int(rng.choice([31, 47, 63])), cutoff).astype(np.float32)
        if rng.uniform() < 0.4:
            rx.adc_lsb = float(rng.uniform(1.5, 6.0))
        return rx

    def describe(self) -> list[str]:
        out = []
        if self.floor_taps is not None:
            out.append("coloured floor")
        if self.spurs:
            out.append(f"{len(self.spurs)} spur(s)")
        if self.dc:
            out.append("DC offset")
        if self.iq_gain != 1.0 or self.iq_phase_rad:
            out.append("IQ imbalance")
        if self.rolloff is not None:
            out.append("band-edge roll-off")
        if self.adc_lsb is not None:
            out.append(f"8-bit ADC, noise {self.adc_lsb:.1f} LSB")
        return out

    def floor_shape(self, freqs: np.ndarray) -> np.ndarray:
        """The floor's power gain at ``freqs`` (fractions of the rate, -0.5..0.5); 1 when white."""
        if self.floor_taps is None:
            return np.ones_like(freqs)
        k = np.arange(self.floor_taps.shape[0])
        return np.abs(np.exp(-2j * np.pi * np.outer(freqs, k)) @ self.floor_taps) ** 2

    def colour(self, noise: np.ndarray) -> np.ndarray:
        """White noise (complex64) through the floor's FIR."""
        if self.floor_taps is None:
            return noise
        return np.convolve(noise, self.floor_taps)[: noise.shape[0]].astype(np.complex64, copy=False)

    def apply(self, block: np.ndarray, i0: int) -> np.ndarray:
        """The receiver's effects on samples ``i0 ..`` of the capture (blocks in order)."""
        x = block
        if self.spurs or self.dc:
            k = np.arange(i0, i0 + x.shape[0], dtype=np.float64)
            extra = np.full(x.shape[0], self.dc, np.complex128)
            for f, a in self.spurs:
                extra += a * cis(f / self.fs * k)
            x = x + extra.astype(np.complex64)
        if self.iq_gain != 1.0 or self.iq_phase_rad:
            g, p = self.iq_gain, self.iq_phase_rad
            mu = (1 + g * np.exp(-1j * p)) / 2
            nu = (1 - g * np.exp(1j * p)) / 2
            x = (mu * x + nu * np.conj(x)).astype(np.complex64)
        if self.rolloff is not None:
            if self._zi is None:
                self._zi = lfilter_zi(self.rolloff, [1.0]).astype(np.complex64) * 0
            x, self._zi = lfilter(self.rolloff, [1.0], x, zi=self._zi)
            x = x.astype(np.complex64)
        if self.adc_lsb is not None:
            scale = np.float32(self.adc_lsb / math.sqrt(0.5))  # unit-power noise -> adc_lsb RMS per rail
            q = np.empty(x.shape, np.complex64)
            q.real = np.clip(np.rint(x.real * scale), -128, 127)
            q.imag = np.clip(np.rint(x.imag * scale), -128, 127)
            x = q / scale
        return x
