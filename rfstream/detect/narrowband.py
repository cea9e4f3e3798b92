"""Narrow boxes named from their IQ: tone, AM, FM, OOK, or "other".

A spectrogram column at 10 MS/s is 9.77 kHz wide, so a CW carrier, an AM or
narrowband-FM voice channel and an OOK sensor packet all draw the same one- to
three-column stripe: the crop classifier (rfstream.detect.two_stage) cannot tell
them apart, but the samples can. For a box no wider than ``max_width_hz`` this
module goes back to the chunk's IQ over the box's time span and measures the
classic modulation-recognition features (Azzouz & Nandi, *Automatic Modulation
Recognition of Communication Signals*, 1996) on the box's own channel.

Channel extraction, one matrix product per piece. Up to ``max_samples // SEGMENT``
pieces of ``SEGMENT`` output samples are read, spread evenly over the box's time
span (a voice channel's syllables and pauses, a packet's bits; a box shorter than
one piece is read as one shorter run). For each, the box's centre is mixed to DC,
low-pass filtered (a Hann-windowed sinc of ``TAPS_PER_PHASE`` taps per output
sample, passband ±1.1 box widths, boxes narrower than ``min_width_hz`` read that
wide) and decimated by ``D`` to about three box widths. With
``g[n] = h[n]·exp(-jωn)`` (the mixer folded into the filter) the output is
``y[k] = exp(-jωkD) · Σ_p (X @ G)[k+p, p]`` where ``X`` is the input reshaped to
``(K, D)`` and ``G = g.reshape(P, D).T``: one BLAS product of ``K·D·P`` complex
multiply-adds, no per-sample exponentials; 1–3 ms per box on one core at 10 MS/s.

Features, on the pieces (spectra are taken per piece, never across a jump in time):

- **noise** ``N``: the median, over the bins 0.6–0.85 box widths from the centre
  (outside the box, still in the filter's passband), of the pieces' averaged
  Hann-windowed periodograms, corrected for the median's bias, so a neighbour
  covering part of that ring barely moves it;
- the box's channel ``z``: each piece's FFT kept within ±0.55 box widths, back to time; its
  mean power ``P``, signal power ``S = P − N``, and ``snr_db = 10·log10(S/N)``;
- ``m2`` — the signal's own power-envelope variation, SNR-compensated: for
  ``p = |s + n|²`` with complex Gaussian noise, ``var p = var|s|² + 2NS + N²``, so
  ``m2 = (var p − 2NS − N²) / S²`` is 0 for any constant envelope (tone, FM, FSK)
  whatever the SNR (noise alone would give the Rayleigh value), ``1/d − 1`` for
  on-off keying at duty ``d``,
  about ``m²/2`` for AM of depth ``m``; also its ``log10`` (a voice channel's
  0.02 must stand apart from a carrier's 0.002);
- the envelope's shape (smoothed over a few samples, noise subtracted, over its
  95th percentile): ``off_frac`` (time below 15 %: OOK's off time), ``mid_frac``
  (time between 30 and 70 %: AM lives there, keyed signals only cross it) and
  ``top_frac`` (time above 85 %);
- instantaneous frequency from phase differences, strong samples only (the noise
  makes the phase of weak ones meaningless): ``log10`` of its spread over the box
  width, about each piece's own mean (drift between pieces is not modulation), and
  its kurtosis (bimodal for 2-FSK, near Gaussian for voice FM); the same
  spread from phase steps over ``LAG`` samples, and its ratio to the first (audio-rate
  FM keeps its spread, white frequency noise — the receiver's, or an oscillator's
  phase noise — averages down);
- the fine spectrum (noise subtracted): ``carrier_frac``, the fraction of the
  signal's power in the strongest 3-bin line (a carrier: ≈1 tone, ≥0.5 AM and
  OOK, J0(β)² for FM, none for PSK/FSK) and ``log10(1 − carrier_frac)`` (the
  sidebands), ``sideband_z`` (the power beyond 3 bins of the line as a z-score
  against the noise: ≈0 for a carrier at any SNR, large for audible sidebands), and
  ``occupied``, the width holding 90 % of it over the box width.

A multinomial logistic regression on these features and on the same features
times an SNR reliability (0 at 3 dB rising to 1 at 15 dB: what the envelope says
at 20 dB it does not say at 5; :func:`expand`), weights in
``rfstream/models/narrowband.json``, fitted by ``scripts/fit_narrowband.py`` on
synthesiser recordings of the training seeds 1000–1999, gives probabilities over
:data:`CLASSES`: tone, am, fm, ook and **other** (FSK, PSK, chirps, ...: anything
these four must not absorb). A box whose channel is too short (fewer than
``MIN_SAMPLES`` samples) or too weak (``snr_db < min_snr_db``) gets the uniform
distribution: no confident label from noise.

**Wide boxes** (the two-stage detector's step 5, :func:`wideband_classifier`): the same reading
and features, plus :func:`wide_features` (the lines left in the spectra of ``z²``, ``z⁴``,
``z⁸``, the in-band spectrum's flatness and shape, the box's length), through a second model of
the same form (``rfstream/models/wideband.json``, ``scripts/fit_narrowband.py --wide``) to
:data:`WIDE_CLASSES`: chirp, fm, fsk, ofdm, psk, pulsed and *other*.
"""

from __future__ import annotations

import functools
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
    "DEFAULT_WIDE_MODEL",
    "FEATURES",
    "WIDE_CLASSES",
    "WIDE_FEATURES",
    "NarrowbandClassifier",
    "NarrowbandModel",
    "NarrowbandOptions",
    "channel",
    "expand",
    "features",
    "wide_features",
    "wideband_classifier",
    "wideband_model",
]

CLASSES: tuple[str, ...] = ("tone", "am", "fm", "ook", "other")
FEATURES: tuple[str, ...] = (
    "snr_db",
    "m2",
    "log_m2",
    "off_frac",
    "mid_frac",
    "top_frac",
    "log_if_spread",
    "if_kurtosis",
    "log_if_spread_lag",
    "if_lag_ratio",
    "carrier_frac",
    "log_sideband",
    "sideband_z",
    "occupied",
)
# Wider boxes (the two-stage option ``wideband``): the same measurements and a few that part
# the digital families (:func:`wide_features`), to these labels ("other": am, ook, tone, ...).
WIDE_CLASSES: tuple[str, ...] = ("chirp", "fm", "fsk", "ofdm", "psk", "pulsed", "other")
WIDE_FEATURES: tuple[str, ...] = (
    *FEATURES,
    "line_x2",
    "line_x4",
    "line_x8",
    "flatness",
    "centre_edge",
    "log_duration_ms",
)
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "narrowband.json"
DEFAULT_WIDE_MODEL = DEFAULT_MODEL.with_name("wideband.json")
TAPS_PER_PHASE = 12  # filter length in output samples: transition ≈ 2/12 of the output rate
MIN_SAMPLES = 64  # fewer output samples than this: no features
SEGMENT = 512  # samples per periodogram of the fine spectrum
LAG = 4  # phase steps over this many samples for the smoothed frequency spread
_OUT_PER_WIDTH = 3.0  # output rate in box widths
_PASS = 1.1  # filter passband edge, box widths from the centre
_BOX = 0.55  # the box's own channel, box widths from the centre
_RING = (0.6, 0.85)  # where the noise is measured, box widths from the centre


@dataclass(frozen=True, slots=True)
class NarrowbandOptions:
    """How wide a box may be and how much of it is read (two-stage ``options`` keys ``narrowband_*``)."""

    max_width_hz: float = field(
        default=40e3, metadata=positive("widest box classified from IQ, Hz", high=1e9)
    )
    max_samples: int = field(
        default=2048, metadata=at_least(MIN_SAMPLES, "channel samples per box", high=1 << 16)
    )
    min_width_hz: float = field(
        default=10e3, metadata=positive("narrower boxes are read this wide, Hz", high=1e9)
    )
    min_snr_db: float = field(default=3.0, metadata=in_range(-20.0, 60.0, "weaker boxes get no label"))


@dataclass(frozen=True, slots=True)
class NarrowbandModel:
    """A multinomial logistic regression over ``features`` to ``classes``: :data:`FEATURES` to
    :data:`CLASSES` for narrow boxes, :data:`WIDE_FEATURES` to :data:`WIDE_CLASSES` for wide ones."""

    weights: np.ndarray  # (C, 2F + 1) over expand(features), the last column the bias
    mean: np.ndarray  # (2F,) standardisation of expand(features)
    scale: np.ndarray  # (2F,)
    fitted_on: dict[str, Any] = field(default_factory=dict)
    classes: tuple[str, ...] = CLASSES
    features: tuple[str, ...] = FEATURES

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        classes: tuple[str, ...] = CLASSES,
        features: tuple[str, ...] = FEATURES,
    ) -> NarrowbandModel:
        """The model in ``path``, which must be over ``features`` to ``classes``."""
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"IQ classifier model {path}: cannot read: {exc}") from exc
        try:
            if tuple(record["classes"]) != classes or tuple(record["features"]) != features:
                raise ValueError(f"classes/features are not {classes} / {features}")
            weights = np.asarray(record["weights"], dtype=np.float64)
            mean = np.asarray(record["mean"], dtype=np.float64)
            scale = np.asarray(record["scale"], dtype=np.float64)
            width = 2 * len(features)  # expand(): the features and their SNR-weighted copies
            if weights.shape != (len(classes), width + 1) or not mean.shape == scale.shape == (width,):
                raise ValueError(f"weights {weights.shape}, mean {mean.shape}, scale {scale.shape}")
            if not (np.isfinite(weights).all() and np.isfinite(mean).all() and (scale > 0).all()):
                raise ValueError("weights, mean and scale must be finite, scale > 0")
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"IQ classifier model {path}: {exc}") from exc
        return cls(weights, mean, scale, dict(record.get("fitted_on", {})), classes, features)

    def to_json(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "features": list(self.features),
            "weights": np.round(self.weights, 6).tolist(),
            "mean": np.round(self.mean, 6).tolist(),
            "scale": np.round(self.scale, 6).tolist(),
            "fitted_on": self.fitted_on,
        }

    def probabilities(self, feats: np.ndarray) -> np.ndarray:
        """``(N, F)`` features -> ``(N, C)`` probabilities."""
        x = (expand(np.asarray(feats, dtype=np.float64)) - self.mean) / self.scale
        logits = x @ self.weights[:, :-1].T + self.weights[:, -1]
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)


def wideband_model(path: str | os.PathLike[str] = DEFAULT_WIDE_MODEL) -> NarrowbandModel:
    """The wide-box model: :data:`WIDE_FEATURES` to :data:`WIDE_CLASSES`."""
    return NarrowbandModel.load(path, classes=WIDE_CLASSES, features=WIDE_FEATURES)


def wideband_classifier(
    max_width_hz: float = 40e3, model: NarrowbandModel | None = None
) -> NarrowbandClassifier:
    """The IQ classifier of boxes wider than ``max_width_hz``, as the two-stage detector runs it
    (the shipped wide model unless ``model``)."""
    return NarrowbandClassifier(NarrowbandOptions(max_width_hz=max_width_hz), model or wideband_model())


def expand(feats: np.ndarray) -> np.ndarray:
    """``(N, F)`` -> ``(N, 2F)``: the features, and the features times the SNR's reliability.

    Envelope and spectral features mean little at 3 dB and much at 20 dB; a linear model
    cannot multiply, so it is handed ``r·x`` with ``r`` rising from 0 at 3 dB to 1 at 15 dB.
    """
    r = np.clip((10.0 * feats[:, :1] - 3.0) / 12.0, 0.0, 1.0)
    return np.hstack([feats, r * feats])


@functools.lru_cache(maxsize=64)
def _filter(decimation: int, cutoff: float) -> np.ndarray:
    """Hann-windowed sinc low-pass, ``TAPS_PER_PHASE·D`` taps, ``cutoff`` in cycles per input sample."""
    n = TAPS_PER_PHASE * decimation
    t = np.arange(n) - (n - 1) / 2.0
    h = 2.0 * cutoff * np.sinc(2.0 * cutoff * t) * np.hanning(n + 2)[1:-1]
    h /= h.sum()
    h.flags.writeable = False  # shared by every caller through the cache
    return h


def channel(
    iq: np.ndarray, fs: float, offset_hz: float, width_hz: float, max_samples: int
) -> tuple[np.ndarray, float]:
    """The box's channel: ``iq`` mixed from ``offset_hz`` to DC, filtered, decimated; and its rate.

    The output rate is about ``_OUT_PER_WIDTH`` box widths; at most ``max_samples`` outputs,
    from the middle of ``iq``. ``iq`` may be ``(k, n)``: k pieces of one box, read in one product
    (each piece's mixer starts at phase 0: a constant phase per piece, which no feature sees).
    """
    d = max(1, int(fs // (_OUT_PER_WIDTH * width_hz)))
    h = _filter(d, min(0.5, _PASS * width_hz / fs))
    w = -2.0 * np.pi * offset_hz / fs
    g = (h * np.exp(1j * w * np.arange(h.shape[0]))).astype(np.complex64)
    n = iq.shape[-1]
    rows = min(n // d, max_samples + TAPS_PER_PHASE - 1)
    if rows < TAPS_PER_PHASE + MIN_SAMPLES - 1:
        return np.zeros((*iq.shape[:-1], 0), np.complex64), fs / d
    skip = (n - rows * d) // 2
    x = np.ascontiguousarray(iq[..., skip : skip + rows * d]).reshape(*iq.shape[:-1], rows, d)
    z = x @ g.reshape(TAPS_PER_PHASE, d).T  # (..., rows, P): z[r, p] = rows r against phase p
    k = rows - TAPS_PER_PHASE + 1
    y = np.zeros((*iq.shape[:-1], k), np.complex64)
    for p in range(TAPS_PER_PHASE):
        y += z[..., p : p + k, p]
    y *= np.exp(1j * w * d * np.arange(k)).astype(np.complex64)  # the mixer's phase at each block start
    return y, fs / d


def _moving_mean(x: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return x
    c = np.cumsum(np.concatenate(([0.0], x)))
    return (c[width:] - c[:-width]) / width


def _frequency_deviation(
    z: np.ndarray, power: np.ndarray, floor: float, lag: int, fs_out: float
) -> tuple[np.ndarray, bool]:
    """Instantaneous frequency (Hz) from phase steps over ``lag`` samples, strong samples only,
    less each piece's own mean: a carrier drifting from piece to piece is not modulation."""
    step = np.angle(z[:, lag:] * np.conj(z[:, :-lag])) * fs_out / (2.0 * np.pi * lag)
    strong = (power[:, lag:] > floor) & (power[:, :-lag] > floor)
    count = strong.sum(axis=1)
    mean = np.where(strong, step, 0.0).sum(axis=1) / np.maximum(count, 1)
    dev = (step - mean[:, None])[strong]
    return dev, dev.shape[0] >= 16


def features(
    pieces: np.ndarray, fs_out: float, width_hz: float, duration_s: float | None = None
) -> np.ndarray | None:
    """The :data:`FEATURES` of one channel read as ``(k, m)`` pieces (see the module docstring);
    given the box's ``duration_s``, the :data:`WIDE_FEATURES` (:func:`wide_features`).

    None when too short. Spectra are taken per piece, so a piece boundary (a jump in time)
    never lies inside one.
    """
    if pieces.ndim != 2 or pieces.size < MIN_SAMPLES:
        return None
    if pieces.shape[0] == 1:  # one short run: two halves give the noise estimate two looks
        m = pieces.shape[1] // 2
        pieces = pieces[:, : 2 * m].reshape(2, m)
    k, m = pieces.shape
    # Noise and the fine spectrum: Hann-windowed periodograms of the pieces, averaged (a piece
    # is short enough that a drifting carrier stays one line, long enough to part it from
    # AM's sidebands).
    win = np.hanning(m + 2)[1:-1]
    segs = np.fft.fft(pieces * win, axis=1)
    seg_power = segs.real**2 + segs.imag**2  # (k, m)
    fseg = np.abs(np.fft.fftfreq(m, 1.0 / fs_out)) / width_hz
    in_seg = fseg <= _BOX
    ring = (fseg >= _RING[0]) & (fseg <= _RING[1])
    if in_seg.sum() < 3 or ring.sum() < 4:
        return None
    # The median of a mean of k exponentials is about (1 - 1/(3k)) of its mean.
    n0_seg = float(np.median(seg_power[:, ring].mean(axis=0))) / (1.0 - 1.0 / (3.0 * k))
    density = n0_seg / float((win**2).sum())  # noise power per sample, whole output band

    spec = np.fft.fft(pieces, axis=1)
    z = np.fft.ifft(np.where(in_seg, spec, 0.0), axis=1)  # the box's own channel, per piece
    p2 = z.real**2 + z.imag**2
    p = p2.ravel()
    noise = density * float(in_seg.sum()) / m  # noise power per sample in z
    total = float(p.mean())
    s = max(total - noise, 1e-12 * max(total, 1e-30))
    snr_db = float(np.clip(10.0 * math.log10(s / max(noise, 1e-30)), -20.0, 60.0))
    m2 = float(np.clip((p.var() - 2.0 * noise * s - noise**2) / s**2, -1.0, 3.0))

    smooth = max(1, round(fs_out / (2.0 * width_hz)))
    env = np.sqrt(np.maximum(_moving_mean(p, smooth) - noise, 0.0))
    top = float(np.quantile(env, 0.95)) or 1.0
    env /= top
    off_frac = float((env < 0.15).mean())
    mid_frac = float(((env > 0.3) & (env < 0.7)).mean())
    top_frac = float((env > 0.85).mean())

    floor = 0.25 * top**2
    dev, ok = _frequency_deviation(z, p2, floor, 1, fs_out)
    if ok:
        var = float(dev.var())
        spread = math.log10(math.sqrt(var) / width_hz + 1e-3)
        kurt = float(np.clip((dev**4).mean() / var**2 if var > 0 else 0.0, 0.0, 20.0))
    else:
        spread, kurt = -3.0, 0.0
    # The same spread from phase steps over LAG samples: audio-rate FM and FSK keep it, while
    # white frequency noise (the receiver's noise, an oscillator's phase noise) averages down.
    dev_lag, ok_lag = _frequency_deviation(z, p2, floor, LAG, fs_out)
    lag_spread = math.log10(float(dev_lag.std()) / width_hz + 1e-3) if ok and ok_lag else spread

    sig = np.clip(np.fft.fftshift(np.where(in_seg, seg_power - n0_seg, 0.0), axes=1), 0.0, None)
    sig_total = float(sig.sum()) or 1e-30
    lines = sig[:, :-2] + sig[:, 1:-1] + sig[:, 2:]  # 3-bin sums: a Hann-windowed line
    carrier_frac = min(1.0, float(lines.max(axis=1).sum()) / sig_total)
    sideband = math.log10(max(1.0 - carrier_frac, 1e-3))
    # Sidebands against the noise, not the carrier: the excess power in the box beyond 3 bins
    # of each piece's line, as a z-score (each Hann bin of noise alone: mean and spread n0).
    # A carrier leaves ~0 whatever its SNR; an AM voice channel's faint audio stands out.
    shifted = np.fft.fftshift(seg_power - n0_seg, axes=1)
    box = np.fft.fftshift(in_seg)
    centre = lines.argmax(axis=1) + 1
    away = box[None, :] & (np.abs(np.arange(m)[None, :] - centre[:, None]) > 3)
    count = int(away.sum())
    excess = float(shifted[away].sum()) / (n0_seg * math.sqrt(count)) if count else 0.0
    sideband_z = math.copysign(math.log10(1.0 + abs(excess)), excess)
    mean_sig = np.sort(sig.sum(axis=0))[::-1]
    held = np.searchsorted(np.cumsum(mean_sig), 0.9 * sig_total) + 1
    occupied = float(held * fs_out / m / width_hz)
    base = np.array(
        [
            snr_db / 10.0,
            m2,
            math.log10(min(max(m2, 1e-3), 3.0)),
            off_frac,
            mid_frac,
            top_frac,
            spread,
            kurt / 5.0,
            lag_spread,
            lag_spread - spread,
            carrier_frac,
            sideband,
            sideband_z,
            occupied,
        ],
        dtype=np.float64,
    )
    if duration_s is None:
        return base
    band = seg_power[:, in_seg].mean(axis=0) - n0_seg
    return np.concatenate([base, wide_features(z, total, band, fseg[in_seg], n0_seg, duration_s)])


def wide_features(
    z: np.ndarray, power: float, band: np.ndarray, band_freq: np.ndarray, noise: float, duration_s: float
) -> np.ndarray:
    """What parts the digital families, from the box's channel ``z`` (``(k, m)`` pieces of mean
    power ``power``) and its spectrum less the noise ``noise`` per bin, ``band``, at ``band_freq``
    box widths:

    - ``line_x2``, ``line_x4``, ``line_x8``: ``log10`` of the peak over the mean of the power
      spectrum of ``z^n`` (pieces summed): raising a PSK signal to the power of its constellation
      order wipes the modulation and leaves a line (BPSK at 2, QPSK at 4, 8PSK at 8; QAM weaker at
      4); FSK, OFDM, chirps and noise leave none (a carrier leaves one at every power);
    - ``flatness``: geometric over arithmetic mean of the spectrum within 0.4 box widths of the
      centre (OFDM ~1, a raised-cosine PSK lower, 2-FSK's two humps lower still);
    - ``centre_edge``: ``log10`` of the power near the centre over that towards the edges;
    - ``log_duration_ms``: the box's length (a slot, a packet, a pulse or a whole frame).
    """
    zn = z / math.sqrt(max(power, 1e-30))
    lines = []
    for _ in (2, 4, 8):  # z², z⁴, z⁸ by squaring
        zn = zn * zn
        spec = np.fft.fft(zn, axis=1)
        s = (spec.real**2 + spec.imag**2).sum(axis=0)
        lines.append(math.log10(float(s.max()) / (float(s.mean()) + 1e-30) + 1e-9))
    floor = max(noise * 1e-2, 1e-30)  # bins at the noise: 20 dB under it, not log(0)
    inner = np.clip(band[band_freq <= 0.4], floor, None)
    flatness = float(np.exp(np.log(inner).mean()) / inner.mean()) if inner.size else 0.0
    centre = float(np.clip(band[band_freq <= 0.15], 0.0, None).mean()) if (band_freq <= 0.15).any() else 0.0
    edge_sel = (band_freq > 0.25) & (band_freq <= 0.45)
    edge = float(np.clip(band[edge_sel], 0.0, None).mean()) if edge_sel.any() else 0.0
    centre_edge = math.log10(max(centre, floor) / max(edge, floor))
    return np.array(
        [*lines, flatness, centre_edge, math.log10(max(duration_s, 1e-6) * 1e3)], dtype=np.float64
    )


class NarrowbandClassifier:
    """Probabilities over the model's classes for boxes of one chunk, from its IQ: :data:`CLASSES`
    for narrow boxes (the default model), :data:`WIDE_CLASSES` with :func:`wideband_model`.

    Set up once (model, options); :meth:`classify_boxes` per frame. ``iq`` may live on a GPU
    (a CuPy array): only each box's slice is brought to the host.
    """

    def __init__(
        self, options: NarrowbandOptions = NarrowbandOptions(), model: NarrowbandModel | None = None
    ):
        check_options(options, "narrowband")
        self.options = options
        self.model = model or NarrowbandModel.load()
        self.classes = self.model.classes
        self._wide = self.model.features == WIDE_FEATURES
        self._uniform = np.full(len(self.classes), 1.0 / len(self.classes))

    def box_features(
        self, iq: Any, fs: float, center_hz: float, start_s: float, box: tuple[float, float, float, float]
    ) -> np.ndarray | None:
        """Features of one box ``(t_start_s, t_stop_s, f_low_hz, f_high_hz)`` (absolute) of a chunk."""
        t0, t1, f_low, f_high = box
        i0 = max(0, int((t0 - start_s) * fs))
        i1 = min(int(iq.shape[0]), math.ceil((t1 - start_s) * fs))
        if i1 - i0 < MIN_SAMPLES:
            return None
        width = max(f_high - f_low, self.options.min_width_hz)
        offset = 0.5 * (f_low + f_high) - center_hz
        d = max(1, int(fs // (_OUT_PER_WIDTH * width)))
        # Up to max_samples // SEGMENT pieces of SEGMENT samples spread over the box's span (a
        # voice channel's syllables and pauses, a packet's bits), read no more than they use.
        per_piece = (SEGMENT + TAPS_PER_PHASE) * d
        count = min(max(1, self.options.max_samples // SEGMENT), (i1 - i0) // per_piece)
        if count == 0:  # shorter than one piece: one run of what there is
            starts, per_piece, out_len = [i0], i1 - i0, self.options.max_samples
        else:
            starts = np.linspace(i0, i1 - per_piece, count).astype(np.int64).tolist()
            out_len = SEGMENT
        runs = []
        for a in starts:
            piece = iq[a : a + per_piece]
            get = getattr(piece, "get", None)  # a CuPy slice: copy just this piece to the host
            runs.append(np.asarray(get() if get is not None else piece, dtype=np.complex64))
        pieces, fs_out = channel(np.stack(runs), fs, offset, width, out_len)
        if len(runs) > 1:
            pieces = pieces[:, :SEGMENT]
        return features(pieces, fs_out, width, t1 - t0 if self._wide else None)

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
