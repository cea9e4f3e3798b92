"""Waveforms: about forty transmitter types, each a ``plan`` (its fixed parameters) and a ``render``.

Written for scenegen alone; nothing here comes from rfstream. Every render returns
complex baseband centred on 0 Hz at the scene's sample rate, with mean power 1
over its *on* samples (a keyed or pulsed waveform is silent between), and the
fraction of samples that are on. The carrier offset, drift, phase noise,
multipath and fading are the channel's (``channel.py``), not the waveform's.

``plan(rng, fs)`` draws what stays fixed for one transmitter (symbol rate, order,
FFT size, deviation, ...) and its *activity* (how its emissions are spread in
time; see ``scene.py``); it returns None when the type cannot fit at this sample
rate. ``render(rng, plan, n, fs)`` makes one emission of at most ``n`` samples
(keyed waveforms may stop early, on the end of an element).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft as sfft
from scipy.signal import fftconvolve, firwin, oaconvolve

TAU = 2.0 * math.pi
Plan = dict[str, Any]
Wave = tuple[np.ndarray, float]  # (complex64 samples, fraction of samples that are on)
MAX_BW_FRACTION = 0.4  # of the sample rate: room for offsets inside the receiver's flat passband


# --- pulses and helpers ---------------------------------------------------------------------------
def rrc_pulse(beta: float, sps: int, span: int) -> np.ndarray:
    """Root-raised-cosine impulse response, ``span`` symbols long, unit energy."""
    t = np.arange(-span * sps // 2, span * sps // 2 + 1, dtype=np.float64) / sps
    h = np.empty_like(t)
    at_zero = np.isclose(t, 0.0)
    at_pole = np.isclose(np.abs(t), 1.0 / (4.0 * beta)) if beta > 0 else np.zeros_like(t, bool)
    rest = ~(at_zero | at_pole)
    tr = t[rest]
    h[rest] = (np.sin(np.pi * tr * (1 - beta)) + 4 * beta * tr * np.cos(np.pi * tr * (1 + beta))) / (
        np.pi * tr * (1 - (4 * beta * tr) ** 2)
    )
    h[at_zero] = 1.0 - beta + 4.0 * beta / np.pi
    if at_pole.any():
        h[at_pole] = (beta / math.sqrt(2)) * (
            (1 + 2 / np.pi) * math.sin(np.pi / (4 * beta)) + (1 - 2 / np.pi) * math.cos(np.pi / (4 * beta))
        )
    return h / np.sqrt(np.sum(h**2))


def gaussian_pulse(bt: float, sps: int, span: int = 4) -> np.ndarray:
    """Gaussian filter of bandwidth-time product ``bt``, unit DC gain (for frequency pulses)."""
    t = np.arange(-span * sps // 2, span * sps // 2 + 1, dtype=np.float64) / sps
    h = np.exp(-2.0 * (np.pi * bt * t) ** 2 / math.log(2.0))
    return h / h.sum()


def shape(symbols: np.ndarray, sps: int, pulse: np.ndarray) -> np.ndarray:
    """Symbols -> pulse-shaped samples (``len(symbols) * sps``), the pulse's delay removed."""
    up = np.zeros(len(symbols) * sps, dtype=np.complex64)
    up[::sps] = symbols
    y = oaconvolve(up, pulse.astype(np.float32))  # overlap-add: memory stays O(n) for long emissions
    d = (len(pulse) - 1) // 2
    return y[d : d + len(up)]


def ramps(x: np.ndarray, k: int) -> np.ndarray:
    """Raised-cosine ramps of ``k`` samples at both ends (a transmitter's power-up and -down)."""
    k = int(min(k, len(x) // 2))
    if k >= 1:
        w = 0.5 - 0.5 * np.cos(np.pi * (np.arange(k) + 0.5) / k)
        x[:k] *= w
        x[-k:] *= w[::-1]
    return x


def unit_power(x: np.ndarray, on: np.ndarray | None = None) -> Wave:
    """Scale to mean power 1 over the on samples; return (samples, on fraction)."""
    p2 = np.abs(x) ** 2
    if on is None:
        duty, p = 1.0, float(p2.mean())
    else:
        duty = float(on.mean()) if on.size else 0.0
        p = float(p2[on].mean()) if on.any() else 0.0
    if p > 0:
        x = x * np.float32(1.0 / math.sqrt(p))
    return x.astype(np.complex64, copy=False), max(duty, 1e-6)


def sps_for(fs: float, rate: float) -> int:
    return max(2, round(fs / rate))


def _upsample_linear(values: np.ndarray, src_rate: float, n: int, fs: float) -> np.ndarray:
    """Linear interpolation of a slowly varying sequence onto ``n`` samples at ``fs``."""
    pos = np.arange(n, dtype=np.float64) * (src_rate / fs)
    grid = np.arange(values.size, dtype=np.float64)
    if np.iscomplexobj(values):
        return (np.interp(pos, grid, values.real) + 1j * np.interp(pos, grid, values.imag)).astype(
            np.complex64
        )
    return np.interp(pos, grid, values).astype(np.float32)


def _phase_to_iq(phase: np.ndarray) -> np.ndarray:
    """exp(j·phase) in complex64: wrapped in float64 first (large phases), then float32 cos/sin."""
    phase = np.asarray(phase, dtype=np.float64)
    p = (phase - np.floor(phase * (1.0 / TAU)) * TAU).astype(np.float32)
    out = np.empty(p.shape, dtype=np.complex64)
    out.real = np.cos(p)
    out.imag = np.sin(p)
    return out


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


# --- constellations ------------------------------------------------------------------------------
def psk_points(m: int) -> np.ndarray:
    return np.exp(1j * (TAU * np.arange(m) / m + (np.pi / m if m == 4 else 0.0))).astype(np.complex64)


def qam_points(m: int) -> np.ndarray:
    k = round(math.sqrt(m))
    levels = np.arange(k) * 2 - (k - 1)
    pts = (levels[:, None] + 1j * levels[None, :]).ravel()
    return (pts / np.sqrt(np.mean(np.abs(pts) ** 2))).astype(np.complex64)


CONSTELLATIONS: dict[str, np.ndarray] = {
    "bpsk": np.array([1, -1], dtype=np.complex64),
    "qpsk": psk_points(4),
    "8psk": psk_points(8),
    "16qam": qam_points(16),
    "64qam": qam_points(64),
    "256qam": qam_points(256),
}


# --- audio-like messages -------------------------------------------------------------------------
def voice(
    rng: np.random.Generator, n: int, fs: float, audio_bw: float, *, analytic: bool = False
) -> np.ndarray:
    """A speech-like message: band-limited coloured noise with formant bumps and a syllabic envelope.

    Real and peak-normalised (``analytic=False``), or one-sided complex (positive
    frequencies only, for SSB). Made in the frequency domain at ``fs`` itself, so long
    messages should be made at a low rate (the scene renders long emissions so).
    """
    f = sfft.fftfreq(n, 1.0 / fs)
    af = np.abs(f)
    band = (af >= min(200.0, 0.1 * audio_bw)) & (af <= audio_bw)
    mag = np.zeros(n, dtype=np.float64)
    mag[band] = 1.0 / np.sqrt(af[band] / audio_bw + 0.05)
    for _ in range(3):  # formants
        fc, w = rng.uniform(0.1, 0.8) * audio_bw, rng.uniform(0.03, 0.1) * audio_bw
        mag[band] += 1.5 * np.exp(-0.5 * ((af[band] - fc) / w) ** 2)
    if analytic:
        mag[f < 0] = 0.0
    spec = mag * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    m = sfft.ifft(spec, workers=1)
    if not analytic:
        m = m.real
    # syllables: a smooth random envelope at ~4 Hz with pauses
    ne = math.ceil(n * 8.0 / fs) + 2
    env = np.clip(rng.standard_normal(ne) + 0.6, 0.15, None)  # pauses keep some breath and room noise
    m = m * np.interp(np.arange(n) * 8.0 / fs, np.arange(ne), env)
    m = m / (np.max(np.abs(m)) + 1e-12)
    return m.astype(np.complex64 if analytic else np.float32)


# --- the registry ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Modulation:
    name: str
    activity: str  # continuous | ptt | packets | hopper | tdma | train | replies | keyed (see scene.py)
    plan: Callable[[np.random.Generator, float], Plan | None]
    render: Callable[[np.random.Generator, Plan, int, float], Wave]
    description: str


MODULATIONS: dict[str, Modulation] = {}


def _register(name: str, activity: str, description: str):
    def wrap(pair: tuple[Callable, Callable]) -> tuple[Callable, Callable]:
        MODULATIONS[name] = Modulation(name, activity, pair[0], pair[1], description)
        return pair

    return wrap


def _cap(fs: float, bw: float) -> float:
    return min(bw, MAX_BW_FRACTION * fs)


# --- tones ---------------------------------------------------------------------------------------------
def _plan_cw(rng: np.random.Generator, fs: float) -> Plan:
    return {"bw_hz": 50.0, "drift_hz": 0.0}


def _plan_cw_drift(rng: np.random.Generator, fs: float) -> Plan:
    d = _cap(fs, _log_uniform(rng, 200.0, 5e3)) * rng.choice([-1, 1])
    return {"bw_hz": abs(d), "drift_hz": float(d)}


def _render_cw(rng: np.random.Generator, p: Plan, n: int, fs: float) -> Wave:
    t = np.arange(n, dtype=np.float64) / max(n, 1)
    # drift_hz over the whole emission: frequency f(t) = drift·t/T, phase = 2π·drift·T·t²/2
    phase = np.pi * p["drift_hz"] * (n / fs) * t**2
    return unit_power(_phase_to_iq(phase))


_register("cw", "continuous", "unmodulated carrier")((_plan_cw, _render_cw))
_register(
    "cw_drift", "continuous", "carrier drifting by hundreds of Hz to kHz (a cheap oscillator warming up)"
)((_plan_cw_drift, _render_cw))


# --- analog AM / FM ------------------------------------------------------------------------------------
def _plan_am(kind: str) -> Callable[[np.random.Generator, float], Plan | None]:
    def plan(rng: np.random.Generator, fs: float) -> Plan | None:
        audio = min(rng.uniform(2.8e3, 8e3), fs / 16)
        if audio < 1e3:
            return None
        bw = audio if kind.startswith("ssb") else 2 * audio
        return {"bw_hz": bw, "audio_hz": audio, "index": rng.uniform(0.3, 0.95), "kind": kind}

    return plan


def _render_am(rng: np.random.Generator, p: Plan, n: int, fs: float) -> Wave:
    kind = p["kind"]
    if kind in ("ssb_usb", "ssb_lsb"):
        m = voice(rng, n, fs, p["audio_hz"], analytic=True)
        return unit_power(np.conj(m) if kind == "ssb_lsb" else m)
    m = voice(rng, n, fs, p["audio_hz"])
    x = (1.0 + p["index"] * m) if kind == "dsb" else m
    return unit_power(x.astype(np.complex64))


for _kind, _desc in (
    ("dsb", "double-sideband AM with carrier, voice"),
    ("dsb_sc", "double-sideband suppressed-carrier AM, voice"),
    ("ssb_usb", "single-sideband AM (upper), voice"),
    ("ssb_lsb", "single-sideband AM (lower), voice"),
):
    _register(f"am_{_kind}", "ptt" if _kind.startswith("ssb") else "continuous", _desc)(
        (_plan_am(_kind), _render_am)
    )


def _plan_nbfm(rng: np.random.Generator, fs: float) -> Plan | None:
    dev = rng.uniform(2e3, 5e3)
    audio = rng.uniform(2.8e3, 3.4e3)
    bw = 2 * (dev + audio)
    if bw > MAX_BW_FRACTION * fs:
        return None
    return {
        "bw_hz": bw,
        "dev_hz": dev,
        "audio_hz": audio,
        "ctcss_hz": float(rng.choice([0.0, 67.0, 100.0, 151.4])),
    }


def _render_fm_voice(rng: np.random.Generator, p: Plan, n: int, fs: float) -> Wave:
    m = voice(rng, n, fs, p["audio_hz"]).astype(np.float64)
    if p["ctcss_hz"]:
        m = 0.85 * m + 0.15 * np.sin(TAU * p["ctcss_hz"] * np.arange(n) / fs)
    return unit_power(_phase_to_iq(TAU * p["dev_hz"] * np.cumsum(m) / fs))


_register("nbfm_voice", "ptt", "narrowband FM voice (2–5 kHz deviation), some with a CTCSS tone")(
    (_plan_nbfm, _render_fm_voice)
)


def _plan_wbfm(rng: np.random.Generator, fs: float) -> Plan | None:
    dev = min(75e3, fs / 16)
    bw = 2 * (dev + 53e3)
    if bw > MAX_BW_FRACTION * fs:
        return None
    return {"bw_hz": bw, "dev_hz": dev, "stereo": bool(rng.random() < 0.7)}


def _render_wbfm(rng: np.random.Generator, p: Plan, n: int, fs: float) -> Wave:
    t = np.arange(n) / fs
    left = voice(rng, n, fs, 15e3).astype(np.float64)
    right = voice(rng, n, fs, 15e3).astype(np.float64) if p["stereo"] else left
    mpx = 0.45 * (left + right)
    if p["stereo"]:
        mpx += 0.1 * np.sin(TAU * 19e3 * t) + 0.45 * (left - right) * np.sin(TAU * 38e3 * t)
    return unit_power(_phase_to_iq(TAU * p["dev_hz"] * np.cumsum(mpx) / fs))


_register("wbfm_broadcast", "continuous", "broadcast FM, 75 kHz deviation, stereo multiplex")(
    (_plan_wbfm, _render_wbfm)
)


def _plan_tv(rng: np.random.Generator, fs: float) -> Plan | None:
    bw = min(rng.uniform(1.5e6, 6e6), MAX_BW_FRACTION * fs)
    if bw < 1e6:
        return None
    return {"bw_hz": bw, "scale": bw / 6e6}


def _render_tv(rng: np.random.Generator, p: Plan, n: int, fs: float) -> Wave:
    """Negative-modulation vestigial-sideband video with a line structure, plus an FM sound carrier."""
    s = p["scale"]
    line = max(16, round(64e-6 / s * fs))
    n_lines = n // line + 2
    sync, porch = max(1, round(0.073 * line)), max(1, round(0.18 * line))
    pixels = 400
    # a picture: smooth shapes that drift slowly from frame to frame
    rows = 300
    base = np.cumsum(rng.standard_normal((rows, pixels)), axis=1)
    base = (base - base.min()) / (np.ptp(base) + 1e-9)
    bars = np.repeat(rng.uniform(0, 1, 8), pixels // 8)[None, :]
    picture = 0.6 * base + 0.4 * bars
    lines = picture[np.arange(n_lines) % rows]
    active = line - sync - porch
    luma = _upsample_linear(lines.ravel(), pixels / active, n_lines * active, 1.0).reshape(n_lines, active)
    amp = np.empty((n_lines, line), dtype=np.float32)
    amp[:, :sync] = 1.0  # sync tip: full carrier
    amp[:, sync : sync + porch] = 0.75  # blanking
    amp[:, sync + porch :] = 0.75 - 0.6 * luma  # white is low carrier
    a = amp.ravel()[:n]
    # vestigial sideband: pass -0.75·s .. +4.2·s MHz around the vision carrier
    lo, hi = -0.75e6 * s, 4.2e6 * s
    taps = firwin(129, 0.5 * (hi - lo), fs=fs) * np.exp(
        1j * TAU * 0.5 * (lo + hi) * (np.arange(129) - 64) / fs
    )
    video = oaconvolve(a.astype(np.complex64), taps.astype(np.complex64))[64 : 64 + n]
    sound_dev = 25e3 * s
    k = np.arange(n, dtype=np.float64)
    tone = np.cumsum(np.sin(TAU * 1e3 * k / fs)) * (TAU * sound_dev / fs)
    sound = 0.2 * _phase_to_iq(TAU * 4.5e6 * s * k / fs + tone)
    centre = _phase_to_iq(-TAU * 2.1e6 * s * k / fs)  # the channel (-0.75 .. +4.95 MHz·s) centred on 0
    return unit_power(((video + sound) * centre).astype(np.complex64))


_register("analog_tv", "continuous", "analog-TV-like: VSB video with sync, FM sound carrier (scaled to fit)")(
    (_plan_tv, _render_tv)
)


# --- FSK family ------------------------------------------------------------------------------------
def _plan_fsk(order: int, h_range: tuple[float, float], bt: float | None, rate_range: tuple[float, float]):
    def plan(rng: np.random.Generator, fs: float) -> Plan | None:
        h = rng.uniform(*h_range)
        rate = _log_uniform(rng, *rate_range)
        bw = ((order - 1) * h + 2.0) * rate
        if bw > MAX_BW_FRACTION * fs:
            rate = MAX_BW_FRACTION * fs / ((order - 1) * h + 2.0)
            bw = MAX_BW_FRACTION * fs
        if fs / rate < 4:
            return None
        return {"bw_hz": bw, "order": order, "h": h, "rate_hz": rate, "bt": bt}

    return plan


def _render_fsk(rng: np.random.Generator, p: Plan, n: int, fs: float) -> Wave:
    sps = sps_for(fs, p["rate_hz"])
    n_sym = n // sps + 1
    m = p["order"]
    levels = (2 * rng.integers(0, m, n_sym) - (m - 1)).astype(np.float64)
    freq = np.repeat(levels, sps)[:n] * (0.5 * p["h"] * fs / sps)
    if p["bt"]:
        freq = fftconvolve(freq, gaussian_pulse(p["bt"], sps), mode="same")
    x = _phase_to_iq(TAU * np.cumsum(freq) / fs)
    return unit_power(ramps(x, sps // 2))


for _name, _order, _h, _bt, _rates, _act, _desc in (
    ("fsk2", 2, (0.8, 2.0), None, (1.2e3, 100e3), "packets", "2-FSK, rectangular (pagers, telemetry)"),
    ("fsk4", 4, (0.3, 0.8), None, (2.4e3, 50e3), "packets", "4-FSK, rectangular (DMR-like)"),
    ("fsk8", 8, (0.5, 1.0), None, (1e3, 20e3), "packets", "8-FSK, rectangular"),
    ("gfsk", 2, (0.3, 0.6), 0.5, (50e3, 1e6), "packets", "GFSK BT 0.5 (Bluetooth-LE-like)"),
    ("gmsk", 2, (0.5, 0.5), 0.3, (9.6e3, 300e3), "packets", "GMSK BT 0.3"),
    ("msk", 2, (0.5, 0.5), None, (9.6e3, 500e3), "packets", "MSK (h = 0.5, rectangular)"),
    (
        "fhss_gfsk",
        2,
        (0.3, 0.5),
        0.5,
        (50e3, 500e3),
        "hopper",
        "GFSK frequency hopper, one annotation per hop",
    ),
    ("gsm_tdma", 2, (0.5, 0.5), 0.3, (135e3, 271e3), "tdma", "GMSK TDMA bursts in 8-slot frames (GSM-like)"),
):
    _register(_name, _act, _desc)((_plan_fsk(_order, _h, _bt, _rates), _render_fsk))


def _plan_dtmf(rng: np.random.Generator, fs: float) -> Plan | None:
    width = min(_log_uniform(rng, 2e3, 60e3), MAX_BW_FRACTION * fs)
    low = -0.5 * width + width * np.array([0.0, 0.07, 0.15, 0.24])
    high = 0.5 * width - width * np.array([0.24, 0.15, 0.07, 0.0])
    return {"bw_hz": width, "low_hz": low.tolist(), "high_hz": high.tolist()}


def _render_dtmf(rng: np.random.Generator, p: Plan, n: int, fs: float) -> Wave:
    k = np.arange(n, dtype=np.float64) / fs
    f1, f2 = rng.choice(p["low_hz"]), rng.choice(p["high_hz"])
    x = _phase_to_iq(TAU * f1 * k) + _phase_to_iq(TAU * f2 * k + rng.uniform(0, TAU))
    return unit_power(ramps(x, round(2e-3 * fs)))


_register("dtmf_like", "packets", "dual-tone multi-frequency digits keyed on RF (one annotation per digit)")(
    (_plan_dtmf, _render_dtmf)
)


# --- on-off keying / ASK -------------------------------------------------------------------------------
def _plan_ook(coding: str) -> Callable[[np.random.Generator, float], Plan | None]:
    def plan(rng: np.random.Generator, fs: float) -> Plan | None:
        rate = min(_log_uniform(rng, 500.0, 20e3), fs / 40)
        if coding == "ask4":
            beta = rng.uniform(0.3, 0.6)
            return {"bw_hz": rate * (1 + beta), "rate_hz": rate, "coding": coding, "beta": beta}
        return {"bw_hz": 6 * rate, "rate_hz": rate, "coding": coding, "rise": rng.uniform(0.05, 0.2)}

    return plan


def _keyed(bits: np.ndarray, sps: int, rise: float) -> tuple[np.ndarray, np.ndarray]:
    """On/off chips -> an envelope with finite rise time; also the on mask."""
    env = np.repeat(bits.astype(np.float32), sps)
    k = max(1, round(rise * sps))
    if k > 1:  # a moving average (O(n) via a running sum): the transmitter's rise and fall
        c = np.concatenate([[0.0], np.cumsum(np.pad(env, (k // 2, k - 1 - k // 2)), dtype=np.float64)])
        env = ((c[k:] - c[:-k]) / k).astype(np.float32)
    return env, env > 0.5


def _render_ook(rng: np.random.Generator, p: Plan, n: int, fs: float) -> Wave:
    sps = sps_for(fs, p["rate_hz"])
    n_chips = max(8, n // sps)
    coding = p["coding"]
    if coding == "ask4":
        sym = rng.integers(1, 5, n_chips).astype(np.complex64) / 4.0
        x = shape(sym, sps, rrc_pulse(p["beta"], sps, 8)).astype(np.complex64)
        return unit_power(ramps(x, sps))
    if coding == "pwm":  # each bit: a short (0) or long (1) mark then a space, period 3 chips
        bits = rng.integers(0, 2, n_chips // 3 + 1)
        chips = np.stack([np.ones_like(bits), bits, np.zeros_like(bits)], axis=1).ravel()
    elif coding == "manchester":
        bits = rng.integers(0, 2, n_chips // 2 + 1)
        chips = np.stack([bits, 1 - bits], axis=1).ravel()
    else:  # plain OOK: a 1010 preamble then data
        bits = rng.integers(0, 2, n_chips)
        bits[: min(8, n_chips)] = np.arange(min(8, n_chips)) % 2 == 0
        chips = bits
    chips = chips[: n // sps]
    chips[0] = 1  # the emission starts and ends on a mark
    last = np.flatnonzero(chips)[-1]
    chips = chips[: last + 1]
    env, on = _keyed(chips, sps, p["rise"])
    return unit_power(env.astype(np.complex64), on)


for _name, _coding, _desc in (
    ("ook", "plain", "OOK packets, 1010 preamble (garage remotes, sensors)"),
    ("ook_pwm", "pwm", "pulse-width-coded OOK (rtl_433-style weather sensors)"),
    ("ook_manchester", "manchester", "Manchester-coded OOK"),
    ("ask4", "ask4", "4-level ASK with RRC shaping"),
):
    _register(_name, "packets", _desc)((_plan_ook(_coding), _render_ook))

_MORSE = {
    "a": ".-", "b": "-...", "c": "-.-.", "d": "-..", "e": ".", "f": "..-.", "g": "--.", "h": "....",
    "i": "..", "j": ".---", "k": "-.-", "l": ".-..", "m": "--", "n": "-.", "o": "---", "p": ".--.",
    "q": "--.-", "r": ".-.", "s": "...", "t": "-", "u": "..-", "v": "...-", "w": ".--", "x": "-..-",
    "y": "-.--", "z": "--..", "0": "-----", "1": ".----", "5": ".....",
}  # fmt: skip


def _plan_morse(rng: np.random.Generator, fs: float) -> Plan:
    wpm = rng.uniform(12, 35)
    return {"bw_hz": 100.0, "unit_s": 1.2 / wpm}


def _render_morse(rng: np.random.Generator, p: Plan, n: int, fs: float) -> Wave:
    """One word: dots 1 unit, dashes 3, gaps 1 inside a letter and 3 between letters."""
    unit = max(2, round(p["unit_s"] * fs))
    units: list[int] = []
    letters = list(_MORSE)
    while len(units) * unit < n:
        code = _MORSE[letters[int(rng.integers(len(letters)))]]
        for i, ch in enumerate(code):
            units += [1] * (1 if ch == "." else 3)
            units += [0] * (1 if i < len(code) - 1 else 3)
    units = units[: n // unit]
    while units and units[-1] == 0:
        units.pop()
    if not units:
        units = [1]
    env, on = _keyed(np.array(units), unit, 0.1)
    return unit_power(env[:n].astype(np.complex64), on[:n])


_register("cw_morse", "keyed", "Morse code keyed carrier (one annotation per word)")(
    (_plan_morse, _render_morse)
)


# --- single-carrier PSK / QAM ---------------------------------------------------------------------------
def _plan_linear(const: str, shaping: str, rate_range: tuple[float, float]):
    def plan(rng: np.random.Generator, fs: float) -> Plan | None:
        beta = rng.uniform(0.2, 0.5) if shaping == "rrc" else 0.5
        rate = min(_log_uniform(rng, *rate_range), MAX_BW_FRACTION * fs / (1 + beta))
        if fs / rate < 2:
            return None
        return {"bw_hz": rate * (1 + beta), "rate_hz": rate, "const": const, "beta": beta, "shaping": shaping}

    return plan


def _render_linear(rng: np.random.Generator, p: Plan, n: int, fs: float) -> Wave:
    sps = sps_for(fs, p["rate_hz"])
    n_sym = n // sps + 1
    const = p["const"]
    if const == "pi4dqpsk":
        steps = np.array([1, 3, 5, 7]) * (np.pi / 4)
        sym = np.exp(1j * np.cumsum(steps[rng.integers(0, 4, n_sym)])).astype(np.complex64)
    elif const == "oqpsk":
        sym = CONSTELLATIONS["qpsk"][rng.integers(0, 4, n_sym)]
    else:
        pts = CONSTELLATIONS[const]
        sym = pts[rng.integers(0, len(pts), n_sym)]
    pulse = rrc_pulse(p["beta"], sps, 10) if p["shaping"] == "rrc" else gaussian_pulse(0.5, sps, 3)
    if const == "oqpsk":  # Q delayed by half a symbol
        i = shape(sym.real.astype(np.complex64), sps, pulse)
        q = shape(sym.imag.astype(np.complex64), sps, pulse)
        half = sps // 2
        x = i.real + 1j * np.concatenate([np.zeros(half), q.real[: len(q) - half]])
    else:
        x = shape(sym, sps, pulse)
    x = x[:n].astype(np.complex64)
    return unit_power(ramps(x, sps))


for _name, _const, _shape, _rates, _act, _desc in (
    ("bpsk", "bpsk", "rrc", (10e3, 2e6), "packets", "BPSK, RRC"),
    ("qpsk", "qpsk", "rrc", (10e3, 3e6), "packets", "QPSK, RRC"),
    ("oqpsk", "oqpsk", "rrc", (50e3, 2e6), "packets", "offset QPSK, RRC"),
    ("pi4dqpsk", "pi4dqpsk", "rrc", (12e3, 50e3), "packets", "π/4-DQPSK, RRC (TETRA/TDMA-radio-like)"),
    ("8psk", "8psk", "rrc", (20e3, 2e6), "packets", "8PSK, RRC"),
    ("16qam", "16qam", "rrc", (50e3, 3e6), "packets", "16QAM, RRC"),
    ("64qam", "64qam", "rrc", (100e3, 3e6), "packets", "64QAM, RRC"),
    ("256qam", "256qam", "rrc", (200e3, 3e6), "continuous", "256QAM, RRC (cable/microwave-link-like)"),
    ("bpsk_gauss", "bpsk", "gauss", (5e3, 500e3), "packets", "BPSK with Gaussian shaping"),
    ("tdma_qpsk", "qpsk", "rrc", (20e3, 500e3), "tdma", "QPSK TDMA bursts in slotted frames"),
):
    _register(_name, _act, _desc)((_plan_linear(_const, _shape, _rates), _render_linear))


# --- DSSS ------------------------------------------------------------------------------------------------
BARKER11 = np.array([1, -1, 1, 1, -1, 1, 1, 1, -1, -1, -1], dtype=np.float32)
BARKER13 = np.array([1, 1, 1, 1, 1, -1, -1, 1, 1, -1, 1, -1, 1], dtype=np.float32)


def m_sequence(degree: int = 7) -> np.ndarray:
    """A maximal-length ±1 sequence from a Fibonacci LFSR (x^7 + x^6 + 1, or x^9 + x^5 + 1)."""
    taps = {7: (7, 6), 9: (9, 5)}[degree]
    state = [1] * degree
    out = []
    for _ in range(2**degree - 1):
        out.append(state[-1])
        fb = state[taps[0] - 1] ^ state[taps[1] - 1]
        state = [fb, *state[:-1]]
    return 1.0 - 2.0 * np.array(out, dtype=np.float32)


def _plan_dsss(code: str):
    def plan(rng: np.random.Generator, fs: float) -> Plan | None:
        chip = min(_log_uniform(rng, 500e3, 11e6), MAX_BW_FRACTION * fs / 1.5)
        if fs / chip < 2:
            return None
        return {"bw_hz": 1.5 * chip, "chip_hz": chip, "code": code}

    return plan


def _render_dsss(rng: np.random.Generator, p: Plan, n: int, fs: float) -> Wave:
    sps = sps_for(fs, p["chip_hz"])
    code = BARKER11 if p["code"] == "barker11" else m_sequence(7)
    n_bits = n // (sps * len(code)) + 1
    if p["code"] == "barker11":
        chips = (np.repeat(1 - 2 * rng.integers(0, 2, n_bits), len(code)) * np.tile(code, n_bits)).astype(
            np.complex64
        )
    else:
        i = np.repeat(1 - 2 * rng.integers(0, 2, n_bits), len(code)) * np.tile(code, n_bits)
        q = np.repeat(1 - 2 * rng.integers(0, 2, n_bits), len(code)) * np.roll(np.tile(code, n_bits), 17)
        chips = ((i + 1j * q) / math.sqrt(2)).astype(np.complex64)
    x = shape(chips, sps, rrc_pulse(0.5, sps, 8))[:n].astype(np.complex64)
    return unit_power(ramps(x, sps))


_register("dsss_barker", "packets", "DSSS BPSK spread by Barker-11 (802.11b-like)")(
    (_plan_dsss("barker11"), _render_dsss)
)
_register("dsss_pn", "packets", "DSSS QPSK spread by a 127-chip m-sequence")(
    (_plan_dsss("pn127"), _render_dsss)
)


# --- OFDM -------------------------------------------------------------------------------------------------
def _plan_ofdm(
    nfft: int, used: int, cp: float, bw_range: tuple[float, float], style: str
) -> Callable[[np.random.Generator, float], Plan | None]:
    def plan(rng: np.random.Generator, fs: float) -> Plan | None:
        bw = min(_log_uniform(rng, *bw_range), MAX_BW_FRACTION * fs)
        spacing = bw / used
        os = max(1, round(fs / (spacing * nfft)))
        spacing = fs / (nfft * os)
        if used * spacing > MAX_BW_FRACTION * fs * 1.01:
            return None
        half = used // 2
        carriers = np.concatenate([np.arange(-half, 0), np.arange(1, half + 1)])
        if style == "dvb":
            carriers = np.arange(-half, half + 1)
        if style == "nulls":  # one to three clusters of switched-off carriers
            for _ in range(int(rng.integers(1, 4))):
                start = int(rng.integers(-half, half - 12))
                carriers = carriers[(carriers < start) | (carriers >= start + int(rng.integers(4, 13)))]
        order = str(rng.choice(["bpsk", "qpsk", "16qam", "64qam"]))
        bw = float(np.ptp(carriers) + 1) * spacing
        return {
            "bw_hz": bw,
            "nfft": nfft,
            "cp_frac": cp,
            "carriers": carriers.tolist(),
            "spacing_hz": spacing,
            "order": order,
            "style": style,
            # long emissions are made at a low rate: one where the carrier spacing stays exact
            "render_rate_hz": max(1, math.ceil(4 * bw / (nfft * spacing))) * nfft * spacing,
        }

    return plan


def _render_ofdm(rng: np.random.Generator, p: Plan, n: int, fs: float) -> Wave:
    os = max(1, round(fs / (p["nfft"] * p["spacing_hz"])))  # the carrier spacing, at this rate
    m = p["nfft"] * os
    cp = max(1, round(p["cp_frac"] * m))
    n_sym = n // (m + cp) + 1
    carriers = np.array(p["carriers"])
    pts = CONSTELLATIONS[p["order"]]
    spec = np.zeros((n_sym, m), dtype=np.complex64)
    spec[:, carriers % m] = pts[rng.integers(0, len(pts), (n_sym, carriers.size))]
    style = p["style"]
    if style == "wifi":  # four BPSK pilots, and a short training field in front
        spec[:, np.array([-21, -7, 7, 21]) % m] = np.array([1, 1, 1, -1], np.complex64)
        stf = np.zeros(m, np.complex64)
        k = np.arange(-24, 25, 4)
        k = k[k != 0]
        stf[k % m] = math.sqrt(13 / 6) * (1 + 1j) * (1 - 2 * rng.integers(0, 2, k.size))
        spec[0] = stf
        spec[1] = stf
    elif style == "dvb":  # scattered boosted pilots every 12 carriers, shifting by 3 per symbol
        idx = np.arange(n_sym)[:, None]
        pilot = ((carriers[None, :] - carriers[0] - 3 * (idx % 4)) % 12) == 0
        rows, cols = np.nonzero(pilot)
        spec[rows, carriers[cols] % m] = 4.0 / 3.0
    elif style == "lte":  # reference signals every 6 carriers in one symbol of seven
        ref = (np.arange(n_sym) % 7) == 0
        spec[np.ix_(ref, carriers[::6] % m)] = (1 + 1j) / math.sqrt(2)
    sym = sfft.ifft(spec, axis=1, workers=1).astype(np.complex64)
    x = np.concatenate([sym[:, m - cp :], sym], axis=1).ravel()[:n]
    return unit_power(ramps(x, cp))


for _name, _nfft, _used, _cp, _bw, _style, _act, _desc in (
    (
        "ofdm_wifi",
        64,
        52,
        0.25,
        (1e6, 20e6),
        "wifi",
        "packets",
        "Wi-Fi-like OFDM bursts: 64-FFT, CP 1/4, pilots, STF",
    ),
    ("ofdm_256", 256, 200, 0.125, (500e3, 10e6), "plain", "packets", "256-FFT OFDM, CP 1/8, null DC"),
    (
        "ofdm_lte",
        1024,
        600,
        0.07,
        (1.4e6, 10e6),
        "lte",
        "continuous",
        "LTE-like OFDM: 1024-FFT, 600 carriers, reference signals",
    ),
    (
        "ofdm_dvb",
        2048,
        1705,
        0.25,
        (1.5e6, 8e6),
        "dvb",
        "continuous",
        "DVB-T-like 2k OFDM, scattered pilots, CP 1/4",
    ),
    (
        "ofdm_nulls",
        128,
        100,
        0.125,
        (300e3, 5e6),
        "nulls",
        "packets",
        "128-FFT OFDM with clusters of null carriers",
    ),
    ("ofdm_tdd", 512, 400, 0.1, (1e6, 10e6), "plain", "tdma", "OFDM in TDD frames (WiMAX/5G-like bursts)"),
):
    _register(_name, _act, _desc)((_plan_ofdm(_nfft, _used, _cp, _bw, _style), _render_ofdm))


# --- chirps --------------------------------------------------------------------------------------------------
def _plan_lora(rng: np.random.Generator, fs: float) -> Plan | None:
    bw = float(rng.choice([125e3, 250e3, 500e3]))
    bw = min(bw, MAX_BW_FRACTION * fs * 0.75)
    sf = int(rng.integers(7, 11))
    while sf > 7 and (2**sf / bw) * 30 > 0.6:
        sf -= 1
    payload = int(rng.integers(8, 24))
    return {"bw_hz": bw, "sf": sf, "payload": payload, "len_s": (12.25 + payload) * 2**sf / bw}


def _render_lora(rng: np.random.Generator, p: Plan, n: int, fs: float) -> Wave:
    bw, sf = p["bw_hz"], p["sf"]
    s = max(8, round((2**sf / bw) * fs))
    values = np.concatenate([np.zeros(8), [24, 32], rng.integers(0, 2**sf, p["payload"])]) / 2**sf
    t = np.arange(s) / s
    up = np.mod(values[:, None] + t[None, :], 1.0) * bw - bw / 2
    down = (0.5 - t) * bw
    freq = np.concatenate([up[:10].ravel(), down, down, down[: s // 4], up[10:].ravel()])[:n]
    return unit_power(ramps(_phase_to_iq(TAU * np.cumsum(freq) / fs), 8))


_register("lora_css", "packets", "LoRa-like chirp spread spectrum: preamble, sync, down-chirps, payload")(
    (_plan_lora, _render_lora)
)


def _plan_fmcw(shape_: str):
    def plan(rng: np.random.Generator, fs: float) -> Plan | None:
        bw = min(_log_uniform(rng, 100e3, 8e6), MAX_BW_FRACTION * fs)
        return {"bw_hz": bw, "sweep_s": _log_uniform(rng, 100e-6, 20e-3), "shape": shape_}

    return plan


def _render_fmcw(rng: np.random.Generator, p: Plan, n: int, fs: float) -> Wave:
    u = np.mod(np.arange(n) / (p["sweep_s"] * fs) + rng.random(), 1.0)
    if p["shape"] == "triangle":
        u = 1.0 - np.abs(2.0 * u - 1.0)
    freq = (u - 0.5) * p["bw_hz"]
    return unit_power(_phase_to_iq(TAU * np.cumsum(freq) / fs))


_register("fmcw_saw", "continuous", "FMCW sawtooth sweeps")((_plan_fmcw("saw"), _render_fmcw))
_register("fmcw_triangle", "continuous", "FMCW triangular sweeps")((_plan_fmcw("triangle"), _render_fmcw))


# --- pulsed ---------------------------------------------------------------------------------------------------
def _plan_radar(code: str):
    def plan(rng: np.random.Generator, fs: float) -> Plan | None:
        width = _log_uniform(rng, 1e-6, 50e-6)
        if code == "lfm":
            bw = min(_log_uniform(rng, 0.5e6, 10e6), MAX_BW_FRACTION * fs)
        elif code == "barker13":
            bw = min(2 * 13 / width, MAX_BW_FRACTION * fs)
            width = max(width, 2 * 13 / bw)
        else:
            bw = min(4.0 / width, MAX_BW_FRACTION * fs)
            width = max(width, 4.0 / bw)
        pri = _log_uniform(rng, max(20 * width, 200e-6), 3e-3)
        return {
            "bw_hz": bw,
            "width_s": width,
            "pri_s": pri,
            "code": code,
            "train_s": (rng.uniform(5e-3, 30e-3), rng.uniform(40e-3, 120e-3)),
            "scan_s": rng.uniform(0.15, 0.6),
        }

    return plan


def _pulse(p: Plan, fs: float) -> np.ndarray:
    k = max(4, round(p["width_s"] * fs))
    t = np.arange(k) / k
    if p["code"] == "lfm":
        x = _phase_to_iq(np.pi * p["bw_hz"] * p["width_s"] * (t - 0.5) ** 2)
    elif (
        p["code"] == "barker13"
    ):  # chips with a finite transition (a third of a chip), as transmitters filter them
        chips = BARKER13[np.minimum((t * 13).astype(int), 12)]
        w = max(2, round(k / 39))
        x = np.convolve(chips, np.ones(w) / w, mode="same").astype(np.complex64)
    else:
        x = np.ones(k, np.complex64)
    rise = max(1, round(0.1 * k)) if p["code"] != "lfm" else max(1, round(0.03 * k))
    return ramps(x.astype(np.complex64), rise)


def _render_radar(rng: np.random.Generator, p: Plan, n: int, fs: float) -> Wave:
    pulse = _pulse(p, fs)
    pri = max(len(pulse) + 1, round(p["pri_s"] * fs))
    starts = np.arange(0, max(1, n - len(pulse) + 1), pri)
    x = np.zeros(starts[-1] + len(pulse), np.complex64)
    idx = starts[:, None] + np.arange(len(pulse))[None, :]
    x[idx] = pulse[None, :]
    on = np.zeros(x.size, bool)
    on[idx] = True
    return unit_power(x[:n], on[:n])


for _code, _desc in (
    ("rect", "radar pulse trains, plain pulses (one annotation per dwell)"),
    ("lfm", "radar pulse trains, LFM inside each pulse"),
    ("barker13", "radar pulse trains, Barker-13 phase-coded pulses"),
):
    _register(f"radar_{_code}", "train", _desc)((_plan_radar(_code), _render_radar))


def _plan_adsb(rng: np.random.Generator, fs: float) -> Plan:
    stretch = max(1.0, 3.0 / (0.5e-6 * fs))  # at low rates a half-microsecond pulse gets at least 3 samples
    return {
        "bw_hz": min(2e6 / stretch, MAX_BW_FRACTION * fs),
        "stretch": stretch,
        "rate_hz": rng.uniform(20, 150),
    }


def _render_adsb(rng: np.random.Generator, p: Plan, n: int, fs: float) -> Wave:
    """Mode-S-like: four preamble pulses, then 112 bits of pulse-position modulation (1 µs each)."""
    half = 0.5e-6 * p["stretch"]
    starts = [0.0, 2 * half, 7 * half, 9 * half]
    bits = rng.integers(0, 2, 112)
    starts += [16 * half + 2 * half * i + (0 if b else half) for i, b in enumerate(bits)]
    total = round((16 * half + 224 * half) * fs)
    width = max(2, round(half * fs))
    x = np.zeros(total, np.complex64)
    idx = np.round(np.array(starts) * fs).astype(int)[:, None] + np.arange(width)[None, :]
    x[idx] = 1.0
    on = np.abs(x) > 0
    taps = max(2, round(0.35e-6 * p["stretch"] * fs))  # transmitters shape their pulses' edges
    w = np.hanning(taps + 2)[1:-1]
    x = np.convolve(x, w / w.sum(), mode="same").astype(np.complex64)
    return unit_power(x[:n], on[:n])


_register("adsb_ppm", "replies", "ADS-B / Mode-S-like pulse-position replies (120 µs)")(
    (_plan_adsb, _render_adsb)
)
