"""Narrow boxes named from their IQ: tone, AM, FM, OOK, or "other".

A spectrogram column at 10 MS/s is 9.77 kHz wide, so a CW carrier, an AM or
narrowband-FM voice channel and an OOK sensor packet all draw the same one- to
three-column stripe: the crop classifier (rfstream.detect.two_stage) cannot tell
them apart, but the samples can. For a box no wider than ``max_width_hz`` this
module goes back to the chunk's IQ over the box's time span and measures the
classic modulation-recognition features (Azzouz & Nandi, *Automatic Modulation
Recognition of Communication Signals*, 1996) on the box's own channel.

Channel extraction, one matrix product per box. The box's centre is mixed to DC,
low-pass filtered (a Hann-windowed sinc of ``TAPS_PER_PHASE`` taps per output
sample, passband ±1.1 box widths) and decimated by ``D`` to about three box widths,
at most ``max_samples`` output samples from the middle of the box's time span.
With ``g[n] = h[n]·exp(-jωn)`` (the mixer folded into the filter) the output is
``y[k] = exp(-jωkD) · Σ_p (X @ G)[k+p, p]`` where ``X`` is the input reshaped to
``(K, D)`` and ``G = g.reshape(P, D).T``: one BLAS product of ``K·D·P`` complex
multiply-adds (a few ms for 2048 outputs at 10 MS/s), no per-sample exponentials.

Features, on the extracted channel ``y`` (n samples) and its FFT ``Y``:

- **noise** ``N``: the median of ``|Y|²`` outside the box (0.6–0.85 box widths
  from the centre, still in the filter's passband) over ln 2 (the median of an
  exponential variable), so a neighbour covering part of that ring barely moves it;
- the box's channel ``z``: ``Y`` kept within ±0.55 box widths, back to time; its
  mean power ``P``, signal power ``S = P − N``, and ``snr_db = 10·log10(S/N)``;
- ``m2`` — the signal's own power-envelope variation, SNR-compensated: for
  ``p = |s + n|²`` with complex Gaussian noise, ``var p = var|s|² + 2NS + N²``, so
  ``m2 = (var p − 2NS − N²) / S²`` is 0 for any constant envelope (tone, FM, FSK)
  whatever the SNR (noise alone would give the Rayleigh value), ``1/d − 1`` for on-off keying at duty ``d``,
  about ``m²/2`` for AM of depth ``m``;
- the envelope's shape (smoothed over a few samples, noise subtracted, over its
  95th percentile): ``off_frac`` (time below 15 %: OOK's off time), ``mid_frac``
  (time between 30 and 70 %: AM lives there, keyed signals only cross it) and
  ``top_frac`` (time above 85 %);
- instantaneous frequency from phase differences, strong samples only (the noise
  makes the phase of weak ones meaningless): ``log10`` of its spread over the box
  width and its kurtosis (bimodal for 2-FSK, near Gaussian for voice FM);
- the fine spectrum (noise subtracted): ``carrier_frac``, the fraction of the
  signal's power in the strongest 3-bin line (a carrier: ≈1 tone, ≥0.5 AM and
  OOK, J0(β)² for FM, none for PSK/FSK), and ``occupied``, the width holding 90 %
  of it over the box width.

A multinomial logistic regression on these features (weights in
``rfstream/models/narrowband.json``, fitted by ``scripts/fit_narrowband.py`` on
synthesiser recordings of the training seeds 1000–1999) gives probabilities over
:data:`CLASSES`: tone, am, fm, ook and **other** (FSK, PSK, chirps, ...: anything
these four must not absorb). A box whose channel is too short (fewer than
``MIN_SAMPLES`` samples) or too weak (``snr_db < min_snr_db``) gets the uniform
distribution: no confident label from noise.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rfstream.detect.base import at_least, check_options, in_range, positive
from rfstream.errors import ModelError

__all__ = [
    "CLASSES",
    "DEFAULT_MODEL",
    "FEATURES",
    "NarrowbandClassifier",
    "NarrowbandModel",
    "NarrowbandOptions",
    "channel",
    "features",
]

CLASSES: tuple[str, ...] = ("tone", "am", "fm", "ook", "other")
FEATURES: tuple[str, ...] = (
    "snr_db",
    "m2",
    "off_frac",
    "mid_frac",
    "top_frac",
    "log_if_spread",
    "if_kurtosis",
    "carrier_frac",
    "occupied",
)
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "narrowband.json"
TAPS_PER_PHASE = 24  # filter length in output samples: transition ≈ 2/24 of the output rate
MIN_SAMPLES = 64  # fewer output samples than this: no features
_OUT_PER_WIDTH = 3.0  # output rate in box widths
_PASS = 1.1  # filter passband edge, box widths from the centre
_BOX = 0.55  # the box's own channel, box widths from the centre
_RING = (0.6, 0.85)  # where the noise is measured, box widths from the centre


@dataclass(frozen=True, slots=True)
class NarrowbandOptions:
    """How wide a box may be and how much of it is read (two-stage ``options`` keys ``narrowband_*``)."""

    max_width_hz: float = field(default=40e3, metadata=positive("widest box classified from IQ, Hz", high=1e9))
    max_samples: int = field(default=2048, metadata=at_least(MIN_SAMPLES, "channel samples per box", high=1 << 16))
    min_width_hz: float = field(default=2e3, metadata=positive("narrower boxes are read this wide, Hz", high=1e9))
    min_snr_db: float = field(default=3.0, metadata=in_range(-20.0, 60.0, "weaker boxes get no label"))


@dataclass(frozen=True, slots=True)
class NarrowbandModel:
    """A multinomial logistic regression over :data:`FEATURES` to :data:`CLASSES`."""

    weights: np.ndarray  # (C, F + 1), the last column the bias
    mean: np.ndarray  # (F,) feature standardisation
    scale: np.ndarray  # (F,)
    fitted_on: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike[str] = DEFAULT_MODEL) -> NarrowbandModel:
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"narrowband model {path}: cannot read: {exc}") from exc
        try:
            if tuple(record["classes"]) != CLASSES or tuple(record["features"]) != FEATURES:
                raise ValueError(f"classes/features are not {CLASSES} / {FEATURES}")
            weights = np.asarray(record["weights"], dtype=np.float64)
            mean = np.asarray(record["mean"], dtype=np.float64)
            scale = np.asarray(record["scale"], dtype=np.float64)
            if weights.shape != (len(CLASSES), len(FEATURES) + 1) or mean.shape != scale.shape != (len(FEATURES),):
                raise ValueError(f"weights {weights.shape}, mean {mean.shape}, scale {scale.shape}")
            if not (np.isfinite(weights).all() and np.isfinite(mean).all() and (scale > 0).all()):
                raise ValueError("weights, mean and scale must be finite, scale > 0")
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"narrowband model {path}: {exc}") from exc
        return cls(weights, mean, scale, dict(record.get("fitted_on", {})))

    def to_json(self) -> dict[str, Any]:
        return {
            "classes": list(CLASSES),
            "features": list(FEATURES),
            "weights": np.round(self.weights, 6).tolist(),
            "mean": np.round(self.mean, 6).tolist(),
            "scale": np.round(self.scale, 6).tolist(),
            "fitted_on": self.fitted_on,
        }

    def probabilities(self, feats: np.ndarray) -> np.ndarray:
        """``(N, F)`` features -> ``(N, C)`` probabilities."""
        x = (np.asarray(feats, dtype=np.float64) - self.mean) / self.scale
        logits = x @ self.weights[:, :-1].T + self.weights[:, -1]
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)


def _filter(decimation: int, cutoff: float) -> np.ndarray:
    """Hann-windowed sinc low-pass, ``TAPS_PER_PHASE·D`` taps, ``cutoff`` in cycles per input sample."""
    n = TAPS_PER_PHASE * decimation
    t = np.arange(n) - (n - 1) / 2.0
    h = 2.0 * cutoff * np.sinc(2.0 * cutoff * t) * np.hanning(n + 2)[1:-1]
    return h / h.sum()


def channel(
    iq: np.ndarray, fs: float, offset_hz: float, width_hz: float, max_samples: int
) -> tuple[np.ndarray, float]:
    """The box's channel: ``iq`` mixed from ``offset_hz`` to DC, filtered, decimated; and its rate.

    The output rate is about ``_OUT_PER_WIDTH`` box widths; at most ``max_samples`` outputs,
    from the middle of ``iq``.
    """
    d = max(1, int(fs // (_OUT_PER_WIDTH * width_hz)))
    h = _filter(d, min(0.5, _PASS * width_hz / fs))
    w = -2.0 * np.pi * offset_hz / fs
    g = (h * np.exp(1j * w * np.arange(h.shape[0]))).astype(np.complex64)
    rows = min(iq.shape[0] // d, max_samples + TAPS_PER_PHASE - 1)
    if rows < TAPS_PER_PHASE + MIN_SAMPLES - 1:
        return np.zeros(0, np.complex64), fs / d
    skip = (iq.shape[0] - rows * d) // 2
    x = np.ascontiguousarray(iq[skip : skip + rows * d]).reshape(rows, d)
    z = x @ g.reshape(TAPS_PER_PHASE, d).T  # (rows, P): z[r, p] = rows r against phase p
    k = rows - TAPS_PER_PHASE + 1
    y = np.zeros(k, np.complex64)
    for p in range(TAPS_PER_PHASE):
        y += z[p : p + k, p]
    y *= np.exp(1j * w * d * np.arange(k)).astype(np.complex64)  # the mixer's phase at each block start
    return y, fs / d


def _moving_mean(x: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return x
    c = np.cumsum(np.concatenate(([0.0], x)))
    return (c[width:] - c[:-width]) / width


def features(y: np.ndarray, fs_out: float, width_hz: float) -> np.ndarray | None:
    """The :data:`FEATURES` of one channel (see the module docstring); None when too short."""
    n = y.shape[0]
    if n < MIN_SAMPLES:
        return None
    spec = np.fft.fft(y.astype(np.complex128))
    power = spec.real**2 + spec.imag**2
    f = np.abs(np.fft.fftfreq(n, 1.0 / fs_out)) / width_hz
    inside = f <= _BOX
    ring = (f >= _RING[0]) & (f <= _RING[1])
    if inside.sum() < 3 or ring.sum() < 8:
        return None
    n0 = float(np.median(power[ring])) / math.log(2.0)  # per bin
    z = np.fft.ifft(np.where(inside, spec, 0.0))
    p = z.real**2 + z.imag**2
    noise = n0 * int(inside.sum()) / n**2  # noise power per sample in z
    total = float(p.mean())
    s = max(total - noise, 1e-12 * max(total, 1e-30))
    snr_db = float(np.clip(10.0 * math.log10(s / max(noise, 1e-30)), -20.0, 60.0))
    m2 = float(np.clip((p.var() - 2.0 * noise * s - noise**2) / s**2, -1.0, 6.0))

    smooth = max(1, round(fs_out / (2.0 * width_hz)))
    env = np.sqrt(np.maximum(_moving_mean(p, smooth) - noise, 0.0))
    top = float(np.quantile(env, 0.95)) or 1.0
    env /= top
    off_frac = float((env < 0.15).mean())
    mid_frac = float(((env > 0.3) & (env < 0.7)).mean())
    top_frac = float((env > 0.85).mean())

    prod = z[1:] * np.conj(z[:-1])
    strong = (p[1:] > 0.25 * top**2) & (p[:-1] > 0.25 * top**2)
    if strong.sum() >= 16:
        inst = np.angle(prod[strong]) * fs_out / (2.0 * np.pi)
        dev = inst - inst.mean()
        var = float(dev.var())
        spread = math.log10(math.sqrt(var) / width_hz + 1e-3)
        kurt = float(np.clip((dev**4).mean() / var**2 if var > 0 else 0.0, 0.0, 20.0))
    else:
        spread, kurt = -3.0, 0.0

    sig = np.clip(power[inside] - n0, 0.0, None)
    sig_total = float(sig.sum()) or 1e-30
    line = float(np.convolve(np.fft.fftshift(np.where(inside, np.clip(power - n0, 0.0, None), 0.0)), np.ones(3), "same").max())
    carrier_frac = min(1.0, line / sig_total)
    ordered = np.sort(sig)[::-1]
    held = np.searchsorted(np.cumsum(ordered), 0.9 * sig_total) + 1
    occupied = float(held * fs_out / n / width_hz)
    return np.array(
        [snr_db / 10.0, m2, off_frac, mid_frac, top_frac, spread, kurt / 5.0, carrier_frac, occupied],
        dtype=np.float64,
    )


class NarrowbandClassifier:
    """Probabilities over :data:`CLASSES` for narrow boxes of one chunk, from its IQ.

    Set up once (model, options); :meth:`classify` per frame. ``iq`` may live on a GPU
    (a CuPy array): only each box's slice is brought to the host.
    """

    def __init__(self, options: NarrowbandOptions = NarrowbandOptions(), model: NarrowbandModel | None = None):
        check_options(options, "narrowband")
        self.options = options
        self.model = model or NarrowbandModel.load()
        self._uniform = np.full(len(CLASSES), 1.0 / len(CLASSES))

    def box_features(
        self, iq: Any, fs: float, center_hz: float, start_s: float, box: tuple[float, float, float, float]
    ) -> np.ndarray | None:
        """Features of one box ``(t_start_s, t_stop_s, f_low_hz, f_high_hz)`` (absolute) of a chunk."""
        t0, t1, f_low, f_high = box
        i0 = max(0, int((t0 - start_s) * fs))
        i1 = min(int(iq.shape[0]), int(math.ceil((t1 - start_s) * fs)))
        if i1 - i0 < MIN_SAMPLES:
            return None
        width = max(f_high - f_low, self.options.min_width_hz)
        offset = 0.5 * (f_low + f_high) - center_hz
        d = max(1, int(fs // (_OUT_PER_WIDTH * width)))
        need = (self.options.max_samples + TAPS_PER_PHASE) * d  # read no more than the channel uses
        if i1 - i0 > need:
            i0 += (i1 - i0 - need) // 2
            i1 = i0 + need
        piece = iq[i0:i1]
        get = getattr(piece, "get", None)  # a CuPy slice: copy just this box to the host
        piece = np.asarray(get() if get is not None else piece, dtype=np.complex64)
        y, fs_out = channel(piece, fs, offset, width, self.options.max_samples)
        return features(y, fs_out, width)

    def classify_boxes(
        self, iq: Any, fs: float, center_hz: float, start_s: float, boxes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 4)`` physical boxes -> probabilities ``(N, C)`` and SNR estimates ``(N,)`` in dB.

        A box too short or too weak gets the uniform distribution (and SNR -inf when unmeasured).
        """
        probs = np.tile(self._uniform, (len(boxes), 1))
        snr = np.full(len(boxes), -np.inf)
        rows, feats = [], []
        for i, box in enumerate(np.asarray(boxes, dtype=np.float64)):
            f = self.box_features(iq, fs, center_hz, start_s, tuple(box))
            if f is None:
                continue
            snr[i] = 10.0 * f[0]
            if snr[i] >= self.options.min_snr_db:
                rows.append(i)
                feats.append(f)
        if rows:
            probs[rows] = self.model.probabilities(np.stack(feats))
        return probs, snr
