"""Scenes: transmitters placed in frequency and time, each emission annotated from its own waveform.

A scene is a receiver (noise colour, spurs, DC offset, IQ imbalance, ADC) and a set of
transmitters. Each transmitter is one modulation (``waveforms.MODULATIONS``) with
fixed parameters, a centre frequency, a path (``channel.Path``), an SNR, and an
*activity* that spreads its emissions in time:

    continuous  one long emission (the whole scene, or a long part of it)
    ptt         push-to-talk: one to three transmissions of 0.3–1.5 s
    packets     Poisson-spaced packets of a type-dependent length
    hopper      hop trains: dwells on channels across a hop band, one emission per dwell
    tdma        bursts in the active slots of 8-slot frames
    train       radar dwells (pulse trains) repeating every scan period
    replies     short replies at random times (ADS-B-like)
    keyed       Morse words, one emission per word

Layouts: ``random`` spreads the centres over the band; ``banded`` crowds the narrow
transmitters into one sub-band. Either way a share of transmitters is placed
*adjacent* to another (touching in frequency, 0–10 % apart) and a few narrow ones
*overlapping* a wide continuous one (both annotated). Emissions of other
transmitters never collide unless one is an overlapper: a candidate emission whose
nominal box meets an existing one is dropped.

Every emission becomes one annotation: its sample extent; its frequency edges,
the 99 % occupied bandwidth measured on the emission itself after its path
(Blackman–Harris-windowed periodogram, 0.5 % of the power left out on each side);
``core:label`` the family (``families.FAMILY``); ``scenegen:label`` the fine type;
and the SNR (``scenegen:snr_db``, also written as ``rfstream:snr_db`` so rfstream's
``--min-snr`` can read it).

**SNR** = the emission's mean power over its *on* samples (a keyed or pulsed
emission's silences excluded) / the receiver noise power inside its occupied band
(the noise PSD integrated over the band, the band floored at fs/4096).
Drawn per transmitter: 10 % from −5…0 dB, the rest from 0…30 dB.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

import numpy as np
import scipy.fft as sfft
from scipy.signal.windows import blackmanharris

from . import __version__
from .channel import Path, apply_path, band_noise_power, draw_path, draw_receiver, finish, noise_spectrum
from .families import FAMILY
from .waveforms import MAX_BW_FRACTION, MODULATIONS, Modulation

DENSITIES = {"sparse": (3, 6), "medium": (8, 14), "crowded": (18, 28)}
LAYOUTS = ("random", "banded")
RESOLVE = 1.0 / 1000  # of fs: transmitters closer than this in frequency could not be told apart
PASSBAND = 0.44  # of fs: centres and edges stay inside ±PASSBAND·fs, clear of the receiver's roll-off
SNR_FLOOR_BINS = 4096  # the SNR's band is at least fs / 4096

# Emission lengths (seconds) for packet types; others are set by their activity.
PACKET_LENGTH_S: dict[str, tuple[float, float]] = {
    "fsk2": (5e-3, 80e-3),
    "fsk4": (5e-3, 60e-3),
    "fsk8": (10e-3, 80e-3),
    "gfsk": (0.3e-3, 3e-3),
    "gmsk": (2e-3, 30e-3),
    "msk": (1e-3, 20e-3),
    "dtmf_like": (40e-3, 90e-3),
    "ook": (10e-3, 120e-3),
    "ook_pwm": (20e-3, 150e-3),
    "ook_manchester": (10e-3, 100e-3),
    "ask4": (5e-3, 60e-3),
    "bpsk": (1e-3, 40e-3),
    "qpsk": (1e-3, 40e-3),
    "oqpsk": (1e-3, 10e-3),
    "pi4dqpsk": (10e-3, 60e-3),
    "8psk": (1e-3, 30e-3),
    "16qam": (1e-3, 30e-3),
    "64qam": (1e-3, 20e-3),
    "bpsk_gauss": (2e-3, 40e-3),
    "dsss_barker": (0.5e-3, 5e-3),
    "dsss_pn": (1e-3, 10e-3),
    "ofdm_wifi": (0.1e-3, 3e-3),
    "ofdm_256": (0.5e-3, 10e-3),
    "ofdm_nulls": (0.5e-3, 10e-3),
}
MAX_CONTINUOUS = 6  # long emissions cost the most to make; a scene has at most this many transmitters of them


@dataclass
class Transmitter:
    ident: int
    mod: Modulation
    plan: dict[str, Any]
    center_hz: float  # offset from the recording's centre frequency
    snr_db: float
    path: Path
    rng: np.random.Generator
    overlapper: bool = False
    hop_offsets_hz: tuple[float, ...] = ()

    @property
    def bw_hz(self) -> float:
        return float(self.plan["bw_hz"])

    @property
    def span_hz(self) -> tuple[float, float]:
        """The band its emissions may occupy (all hop channels for a hopper)."""
        lo = min(self.hop_offsets_hz, default=0.0)
        hi = max(self.hop_offsets_hz, default=0.0)
        return self.center_hz + lo - self.bw_hz / 2, self.center_hz + hi + self.bw_hz / 2


@dataclass(frozen=True)
class Emission:
    start: int
    max_len: int
    offset_hz: float  # from the transmitter's centre (hops)


# --- time: activities ------------------------------------------------------------------------------
def _poisson_starts(
    rng: np.random.Generator, n: int, fs: float, rate_hz: float, lengths: np.ndarray
) -> list[int]:
    starts, t = [], float(rng.exponential(1.0 / rate_hz))
    for length in lengths:
        s = round(t * fs)
        if s + length > n:
            break
        starts.append(s)
        t += length / fs + rng.exponential(1.0 / rate_hz)
    return starts


def schedule(tx: Transmitter, n: int, fs: float) -> list[Emission]:
    rng, p, act = tx.rng, tx.plan, tx.mod.activity
    dur = n / fs
    out: list[Emission] = []
    if act == "continuous":
        if rng.random() < 0.6:
            return [Emission(0, n, 0.0)]
        length = rng.uniform(0.3, 0.9) * dur
        start = rng.uniform(0, dur - length)
        return [Emission(round(start * fs), round(length * fs), 0.0)]
    if act == "ptt":
        k = int(rng.integers(1, 4))
        lengths = np.minimum(rng.uniform(0.3, 1.5, k), dur / k * 0.8)
        gaps = rng.dirichlet(np.ones(k + 1)) * (dur - lengths.sum())
        t = gaps[0]
        for length, gap in zip(lengths, gaps[1:], strict=True):
            out.append(Emission(round(t * fs), round(length * fs), 0.0))
            t += length + gap
        return out
    if act == "packets":
        if "len_s" in p:  # the waveform knows its own length (LoRa: preamble + payload)
            lo = hi = float(p["len_s"]) * 1.001
        else:
            lo, hi = PACKET_LENGTH_S.get(tx.mod.name, (1e-3, 20e-3))
        count = 400
        lengths = np.round(rng.uniform(lo, hi, count) * fs).astype(int)
        duty = rng.uniform(0.05, 0.3)
        rate = duty / ((lo + hi) / 2)
        return [
            Emission(s, int(L), 0.0)
            for s, L in zip(_poisson_starts(rng, n, fs, rate, lengths), lengths, strict=False)
        ]
    if act == "replies":
        length = round(240 * 0.5e-6 * p["stretch"] * fs) + 4
        lengths = np.full(2000, length)
        return [Emission(s, length, 0.0) for s in _poisson_starts(rng, n, fs, p["rate_hz"], lengths)]
    if act == "hopper":
        dwell = round(rng.uniform(0.6e-3, 8e-3) * fs)
        t = round(rng.uniform(0, 0.3) * n)
        while t + dwell <= n:
            burst_end = min(n, t + round(rng.uniform(0.05, 0.4) * fs))
            while t + dwell <= burst_end:
                if rng.random() < 0.8:
                    off = float(rng.choice(tx.hop_offsets_hz))
                    out.append(Emission(t, round(dwell * rng.uniform(0.7, 0.95)), off))
                t += dwell
            t += round(rng.uniform(0.05, 0.5) * fs)
        return out
    if act == "tdma":
        if tx.mod.name == "gsm_tdma":
            slot = 577e-6 * 270.833e3 / p["rate_hz"]
        else:
            slot = rng.uniform(1e-3, 10e-3)
        slot_n = round(slot * fs)
        frame_n = 8 * slot_n
        active = sorted(rng.choice(8, int(rng.integers(1, 5)), replace=False).tolist())
        # neighbouring active slots are one burst (the guard between them is short): group them
        runs: list[tuple[int, int]] = []
        for s_ in active:
            if runs and runs[-1][0] + runs[-1][1] == s_:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((s_, 1))
        on_from = round(rng.uniform(0, 0.4) * n)
        on_to = n if rng.random() < 0.5 else round(rng.uniform(0.6, 1.0) * n)
        frames = range(on_from, on_to - frame_n + 1, frame_n)
        return [
            Emission(f0 + first * slot_n, round(slot_n * (count - 0.07)), 0.0)
            for f0 in frames
            for first, count in runs
        ]
    if act == "train":
        scan = round(p["scan_s"] * fs)
        t = round(rng.uniform(0, 1) * scan)
        while t < n:
            length = round(rng.uniform(*p["train_s"]) * fs)
            if t + length <= n:
                out.append(Emission(t, length, 0.0))
            t += scan
        return out
    if act == "keyed":
        unit = p["unit_s"] * fs
        t = round(rng.uniform(0, 0.5) * n)
        while t < n - 8 * unit:
            length = min(round(rng.uniform(8, 30) * unit), n - t)
            out.append(Emission(t, length, 0.0))
            t += length + round(7 * unit)
        return out
    raise ValueError(f"unknown activity {act!r}")  # pragma: no cover - a waveform table bug


# --- frequency: layouts ------------------------------------------------------------------------------
def _fits(center: float, half: float, fs: float) -> bool:
    return -PASSBAND * fs <= center - half and center + half <= PASSBAND * fs


def place(
    rng: np.random.Generator,
    tx: Transmitter,
    placed: list[Transmitter],
    fs: float,
    layout: str,
    sub: tuple[float, float],
) -> bool:
    """Choose the transmitter's centre; False if it cannot fit anywhere."""
    half = max(tx.bw_hz, RESOLVE * fs) / 2
    if tx.mod.activity == "hopper":
        width = min(rng.uniform(0.2, 0.7) * 2 * PASSBAND * fs, 2 * PASSBAND * fs - tx.bw_hz)
        k = max(2, int(width // (tx.bw_hz * rng.uniform(1.1, 2.0))))
        tx.hop_offsets_hz = tuple(np.linspace(-width / 2, width / 2, k).tolist())
        half = width / 2 + tx.bw_hz / 2
    long_bands = [t.span_hz for t in placed if t.mod.activity in ("continuous", "ptt")]
    wide = [t for t in placed if t.mod.activity == "continuous" and t.bw_hz > 6 * tx.bw_hz]
    roll = rng.random()
    if roll < 0.08 and wide and tx.mod.activity != "hopper":  # a narrow signal on top of a wide one
        host = wide[int(rng.integers(len(wide)))]
        lo, hi = host.span_hz
        if hi - lo >= 2 * half:  # a host narrower than the resolvable width cannot carry it
            tx.center_hz = float(rng.uniform(lo + half, hi - half))
            tx.overlapper = True
            return True
    if roll < 0.33 and placed and tx.mod.activity != "hopper":  # touching a neighbour
        for _ in range(10):
            nb = placed[int(rng.integers(len(placed)))]
            lo, hi = nb.span_hz
            gap = rng.uniform(0.0, 0.1) * max(tx.bw_hz, RESOLVE * fs)
            center = hi + gap + half if rng.random() < 0.5 else lo - gap - half
            if _fits(center, half, fs) and not _hits(center, half, long_bands):
                tx.center_hz = float(center)
                return True
    lo_c, hi_c = -PASSBAND * fs + half, PASSBAND * fs - half
    if layout == "banded" and tx.bw_hz < 0.05 * fs:
        lo_c, hi_c = max(lo_c, sub[0] + half), min(hi_c, sub[1] - half)
    if hi_c < lo_c:
        return False
    for _ in range(30):
        center = rng.uniform(lo_c, hi_c)
        # a hopper's band is wide and mostly empty: its hops dodge the others one by one
        if tx.mod.activity == "hopper" or not _hits(center, half, long_bands):
            tx.center_hz = float(center)
            return True
    return False


def _hits(center: float, half: float, bands: list[tuple[float, float]]) -> bool:
    return any(center - half < hi and center + half > lo for lo, hi in bands)


class _Occupancy:
    """Boxes already taken (start, stop, low, high); vectorised overlap test."""

    def __init__(self) -> None:
        self.boxes = np.zeros((0, 4))

    def free(self, box: tuple[float, float, float, float]) -> bool:
        b = self.boxes
        if not len(b):
            return True
        hit = (b[:, 0] < box[1]) & (box[0] < b[:, 1]) & (b[:, 2] < box[3]) & (box[2] < b[:, 3])
        return not bool(hit.any())

    def take(self, box: tuple[float, float, float, float]) -> None:
        self.boxes = np.vstack([self.boxes, box])


# --- measuring an emission ----------------------------------------------------------------------------
def occupied_band(
    x: np.ndarray, fs: float, nominal_bw_hz: float, fraction: float = 0.99
) -> tuple[float, float]:
    """The band holding ``fraction`` of the emission's power (Hz from the centre), from its periodogram."""
    n = x.size
    want = 16.0 * fs / max(nominal_bw_hz, fs / 2**16)
    nper = int(2 ** np.clip(np.ceil(np.log2(want)), 6, 16))
    if n < nper:
        nper = max(16, 2 ** int(np.floor(np.log2(max(n, 16)))))
    n_seg = max(1, n // nper)
    if n >= nper:
        segs = x[: n_seg * nper].reshape(n_seg, nper)
    else:
        segs = np.zeros((1, nper), np.complex64)
        segs[0, :n] = x
    if n_seg > 64:  # long emissions: 64 segments spread over the ones that carry power
        energy = np.einsum("ij,ij->i", segs.real, segs.real) + np.einsum("ij,ij->i", segs.imag, segs.imag)
        live = np.flatnonzero(energy > 0.1 * energy.max())
        segs = segs[live[np.linspace(0, live.size - 1, 64).round().astype(int)]]
    spec = np.abs(sfft.fft(segs * blackmanharris(nper).astype(np.float32), axis=1, workers=1)) ** 2
    psd = sfft.fftshift(spec.sum(axis=0))
    f = sfft.fftshift(sfft.fftfreq(nper, 1.0 / fs))
    cdf = np.cumsum(psd) / psd.sum()
    tail = (1.0 - fraction) / 2
    lo = f[int(np.searchsorted(cdf, tail))]
    hi = f[min(nper - 1, int(np.searchsorted(cdf, 1.0 - tail)))]
    df = fs / nper
    return float(lo - df / 2), float(hi + df / 2)


# --- the scene -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneSummary:
    meta_path: FsPath
    data_path: FsPath
    annotations: int
    transmitters: int
    density: str
    layout: str
    receiver: str
    clipped_fraction: float


def _pick_types(
    rng: np.random.Generator, fs: float, count: int, types: tuple[str, ...] | None
) -> list[tuple[Modulation, dict]]:
    names = list(types) if types else sorted(MODULATIONS)
    unknown = [t for t in names if t not in MODULATIONS]
    if unknown:
        raise ValueError(
            f"unknown modulation(s) {', '.join(unknown)}; known: {', '.join(sorted(MODULATIONS))}"
        )
    out: list[tuple[Modulation, dict]] = []
    long_count = 0
    bag: list[str] = []
    attempts = 0
    while len(out) < count and attempts < 20 * count:
        attempts += 1
        if not bag:
            bag = [names[i] for i in rng.permutation(len(names))]
        mod = MODULATIONS[bag.pop()]
        is_long = mod.activity in ("continuous", "ptt")
        if is_long and long_count >= MAX_CONTINUOUS:
            continue
        plan = mod.plan(rng, fs)
        if plan is None or plan["bw_hz"] > MAX_BW_FRACTION * fs * 1.01:
            continue
        long_count += is_long
        out.append((mod, plan))
    return out


def generate_scene(
    out_base: str | os.PathLike[str],
    *,
    seed: int,
    sample_rate_hz: float = 10e6,
    duration_s: float = 2.0,
    center_freq_hz: float = 915e6,
    density: str | None = None,
    layout: str | None = None,
    receiver: str | None = None,
    types: tuple[str, ...] | None = None,
    snr_db: tuple[float, float] = (0.0, 30.0),
    low_snr_share: float = 0.1,
) -> SceneSummary:
    """Write ``OUT.sigmf-meta`` + ``OUT.sigmf-data`` for one seed. The same arguments give the same bytes."""
    fs = float(sample_rate_hz)
    if not fs > 0 or not duration_s > 0:
        raise ValueError("sample rate and duration must be > 0")
    n = round(duration_s * fs)
    root = np.random.SeedSequence(seed)
    scene_ss, noise_ss, tx_ss = root.spawn(3)
    rng = np.random.default_rng(scene_ss)
    density = density or str(rng.choice(list(DENSITIES), p=[0.3, 0.4, 0.3]))
    if density not in DENSITIES:
        raise ValueError(f"unknown density {density!r}; expected one of {', '.join(DENSITIES)}")
    layout = layout or str(rng.choice(LAYOUTS))
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    rx = draw_receiver(rng, fs, receiver)
    width = rng.uniform(0.25, 0.5) * 2 * PASSBAND * fs
    lo_sub = rng.uniform(-PASSBAND * fs, PASSBAND * fs - width)
    sub = (lo_sub, lo_sub + width)

    count = int(rng.integers(DENSITIES[density][0], DENSITIES[density][1] + 1))
    picks = _pick_types(rng, fs, count, types)
    # long emitters first: they claim their bands, the bursty ones fit around them
    picks.sort(key=lambda mp: mp[0].activity not in ("continuous", "ptt"))
    tx_seeds = tx_ss.spawn(len(picks))
    placed: list[Transmitter] = []
    for i, (mod, plan) in enumerate(picks):
        trng = np.random.default_rng(tx_seeds[i])
        snr = trng.uniform(-5.0, 0.0) if trng.random() < low_snr_share else trng.uniform(*snr_db)
        tx = Transmitter(i, mod, plan, 0.0, float(snr), draw_path(trng, fs, plan["bw_hz"]), trng)
        if place(rng, tx, placed, fs, layout, sub):
            placed.append(tx)

    m = sfft.next_fast_len(n)
    spectrum = noise_spectrum(np.random.default_rng(noise_ss), rx, m, fs)
    bursts = np.zeros(n, dtype=np.complex64)
    occupancy = _Occupancy()
    annotations: list[dict[str, Any]] = []
    for tx in placed:
        for em in schedule(tx, n, fs):
            if em.max_len < 16:
                continue
            center = tx.center_hz + em.offset_hz
            half = max(tx.bw_hz, RESOLVE * fs) / 2
            box = (em.start, em.start + em.max_len, center - half, center + half)
            if not tx.overlapper and not occupancy.free(box):
                continue
            made = _emit(tx, em, center, fs, n, m, rx, spectrum, bursts)
            if made is None:
                continue
            start, count, lo, hi = made
            if not tx.overlapper:
                occupancy.take((start, start + count, center - half, center + half))
            annotations.append(_annotation(tx, start, count, center_freq_hz + lo, center_freq_hz + hi))
    signal = sfft.ifft(spectrum, workers=1, overwrite_x=True)[:n]
    del spectrum
    signal *= np.complex64(math.sqrt(m))
    signal += bursts
    del bursts
    data, clipped = finish(rx, signal)
    del signal
    meta_path, data_path = _write(
        out_base,
        data,
        rx.datatype,
        fs,
        center_freq_hz,
        annotations,
        {
            "scenegen:seed": int(seed),
            "scenegen:density": density,
            "scenegen:layout": layout,
            "scenegen:receiver": rx.describe(),
            "scenegen:clipped_fraction": round(clipped, 6),
            "scenegen:transmitters": [
                {
                    "id": t.ident,
                    "label": t.mod.name,
                    "family": FAMILY[t.mod.name],
                    "offset_hz": round(t.center_hz, 1),
                    "bw_hz": round(t.bw_hz, 1),
                    "snr_db": round(t.snr_db, 2),
                    "activity": t.mod.activity,
                    "overlaps_another": t.overlapper,
                }
                for t in placed
            ],
        },
    )
    return SceneSummary(
        meta_path, data_path, len(annotations), len(placed), density, layout, rx.name, clipped
    )


def _emit(
    tx: Transmitter,
    em: Emission,
    center: float,
    fs: float,
    n: int,
    m: int,
    rx: Any,
    spectrum: np.ndarray,
    bursts: np.ndarray,
) -> tuple[int, int, float, float] | None:
    """Make one emission, measure it, scale it to its SNR and add it; (start, count, low Hz, high Hz).

    A narrowband emission that lasts is made at a low rate r and added to the noise's
    spectrum before the one inverse FFT (at r the whole record is ``m·r/fs`` samples, so
    this costs little, and the shift to its centre is a move of bins). Short or wideband
    emissions are made at the full rate and added in time.
    """
    want = float(tx.plan.get("render_rate_hz", max(4.0 * tx.bw_hz, 4e3)))
    m_low = sfft.next_fast_len(math.ceil(m * want / fs))
    low = want <= fs / 4 and 2 * m_low <= em.max_len
    rate = fs * m_low / m if low else fs
    length = int(em.max_len * rate / fs) if low else em.max_len
    x, duty = tx.mod.render(tx.rng, tx.plan, length, rate)
    x = x[:length]
    if x.size < 16:
        return None
    x = apply_path(tx.rng, x, rate, tx.path, 0.0 if low else center)
    p_on = float(np.mean(x.real**2 + x.imag**2)) / duty
    if not p_on > 0:  # nothing was sent
        return None
    lo, hi = occupied_band(x, rate, tx.bw_hz)
    if low:
        lo, hi = lo + center, hi + center
    band = max(hi - lo, fs / SNR_FLOOR_BINS)
    mid = 0.5 * (lo + hi)
    noise = band_noise_power(rx, mid - band / 2, mid + band / 2, fs)
    x *= np.float32(math.sqrt(10 ** (tx.snr_db / 10) * noise / p_on))
    if not low:
        bursts[em.start : em.start + x.size] += x
        return em.start, int(x.size), lo, hi
    first = round(em.start * m_low / m)
    x = x[: m_low - first]
    record = np.zeros(m_low, dtype=np.complex64)
    record[first : first + x.size] = x
    spec = sfft.fft(record, workers=1)
    k = np.round(sfft.fftfreq(m_low, 1.0 / m_low)).astype(np.int64) + round(center / fs * m)
    keep = np.abs(k) < m // 2  # nothing wraps around the band's edge
    # x(t) = ifft(spectrum)·sqrt(m): a record upsampled by m/m_low has spectrum (m/m_low)·fft(record)
    spectrum[k[keep] % m] += spec[keep] * np.complex64(math.sqrt(m) / m_low)
    start = round(first * m / m_low)
    return start, min(round(x.size * m / m_low), n - start), lo, hi


def _annotation(tx: Transmitter, start: int, count: int, f_lo: float, f_hi: float) -> dict[str, Any]:
    snr = round(tx.snr_db, 2)
    return {
        "core:sample_start": int(start),
        "core:sample_count": int(count),
        "core:freq_lower_edge": round(f_lo, 1),
        "core:freq_upper_edge": round(f_hi, 1),
        "core:label": FAMILY[tx.mod.name],
        "core:generator": f"scenegen {__version__}",
        "scenegen:label": tx.mod.name,
        "scenegen:transmitter": tx.ident,
        "scenegen:snr_db": snr,
        "rfstream:snr_db": snr,
    }


# --- SigMF, written by hand --------------------------------------------------------------------------
def _write(
    out_base: str | os.PathLike[str],
    data: np.ndarray,
    datatype: str,
    fs: float,
    center_freq_hz: float,
    annotations: list[dict[str, Any]],
    extra_global: dict[str, Any],
) -> tuple[FsPath, FsPath]:
    base = FsPath(out_base)
    if base.name.endswith((".sigmf-meta", ".sigmf-data")):
        base = base.with_name(base.name.rsplit(".", 1)[0])
    meta_path = base.with_name(base.name + ".sigmf-meta")
    data_path = base.with_name(base.name + ".sigmf-data")
    if not base.parent.is_dir():
        raise FileNotFoundError(f"output directory {base.parent} does not exist")
    raw = np.ascontiguousarray(data)
    if raw.dtype == np.complex64:
        raw = raw.view(np.float32).astype("<f4", copy=False)
    digest = hashlib.sha512(raw.tobytes()).hexdigest()
    meta = {
        "global": {
            "core:datatype": datatype,
            "core:sample_rate": fs,
            "core:version": "1.0.0",
            "core:sha512": digest,
            "core:description": "scenegen synthetic wideband scene (independent of rfstream's synthesiser)",
            "core:recorder": f"scenegen {__version__}",
            "core:extensions": [
                {"name": "scenegen", "version": __version__, "optional": True},
                {"name": "rfstream", "version": "1.0.0", "optional": True},
            ],
            **extra_global,
        },
        "captures": [
            {
                "core:sample_start": 0,
                "core:frequency": float(center_freq_hz),
                "core:datetime": "2024-06-01T12:00:00Z",
            }
        ],
        "annotations": sorted(annotations, key=lambda a: (a["core:sample_start"], a["core:freq_lower_edge"])),
    }
    tag = uuid.uuid4().hex[:8]
    tmp_data = data_path.with_name(f".{data_path.name}.{tag}.tmp")
    tmp_meta = meta_path.with_name(f".{meta_path.name}.{tag}.tmp")
    try:
        raw.tofile(tmp_data)
        tmp_meta.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp_data, data_path)
        os.replace(tmp_meta, meta_path)
    finally:
        for tmp in (tmp_data, tmp_meta):
            if tmp.exists():
                tmp.unlink()
    return meta_path, data_path
