"""Synthetic labelled recordings (``rfstream synth``) and an endless synthetic source (``rfstream bench``).

A capture is noise of unit power per sample plus signals of every family in
:data:`rfstream.labels.LABELS` (but ``unknown``), each emitter drawing one of its
variants (the *fine label*, annotated as ``rfstream:modulation``; docs/taxonomy.md):

    tone    CW carriers that drift slowly (one spans the capture, one is a burst)   cw
    am      double-sideband AM with carrier: audio tones, or speech-like audio      am, am-voice
    fm      narrowband FM with tones or speech; broadcast-like wideband FM          nfm, fm-voice, wfm
    fsk     GFSK hopper (Bluetooth-like); 2-FSK, 4-FSK and GMSK packets on one channel
                                                                                    gfsk, 2fsk, 4fsk, gmsk
    ook     on-off keyed packets, ASK (partial depth), pulse-width keyed sensors    ook, ask, ook-pwm
    psk     single-carrier BPSK/QPSK/8PSK/16QAM/64QAM with RRC shaping, two columns
            to a sixth of the band, bursts or continuous; DSSS (11–127 chips);
            TDMA slot bursts                                                        bpsk … qam64, dsss, tdma
    ofdm    on/off bursts or a continuous carrier: FFT 64–2048, cyclic prefix
            1/4–1/32, DC and random null carriers, 5–45 % of the band              ofdm
    chirp   LFM up/down sawtooth trains; LoRa-like packets (preamble, data chirps) lfm, lora
    pulsed  radar pulse trains (plain or LFM); ADS-B-like 1090ES squitters         radar, radar-lfm, adsb

Channel effects per burst (drift, phase noise, multipath, fading) and receiver
effects per capture (coloured floor, spurs, DC offset, IQ imbalance, band-edge
roll-off, 8-bit ADC with clipping) are drawn from the seed
(:mod:`rfstream.sources.synth.channel`; ``realism="clean"`` leaves them out). The
scene's density is drawn from the seed too: sparse (2–4 transmitters), medium
(one per family) or crowded (12–18, signals next to and over each other).

Every signal instance (each hop, each burst, each train) is one SigMF
annotation with ``core:sample_start``, ``core:sample_count``,
``core:freq_lower_edge``/``core:freq_upper_edge`` (absolute Hz), ``core:label``
(the family), ``rfstream:modulation`` (the fine label) and ``rfstream:snr_db``.
Receiver artefacts (spurs, DC, IQ images) are never annotated.

Frequency edges are the instance's 99 % power bandwidth, measured on the
generated waveform itself, after its channel effects (a Hann-windowed
periodogram; 0.5 % of the power left out on each side); for the drifting
carriers it is the swept range by design.

SNR is in-band: the signal's mean power over its annotated extent divided by the
noise power inside its occupied bandwidth B, i.e. ``SNR = P / (B / fs)`` for
unit noise power per sample. B is floored at one 4096-point FFT bin (fs/4096) so
that a nearly pure carrier has a finite SNR. For keyed signals (OOK, pulse
trains) the mean includes the off time, so their peak power lies higher. A
coloured floor or a band-edge roll-off moves the local SNR by a few dB.

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
import structlog
from sigmf import sigmffile

from rfstream import __version__
from rfstream.errors import InputError
from rfstream.labels import LABELS
from rfstream.sources.base import ChunkStamper, Pacer, SourceInfo, chunk_length, utc_plus
from rfstream.sources.synth.channel import Receiver
from rfstream.sources.synth.waves import EMITTERS, FINE_LABELS, channel_effects
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
    fine: str = ""  # rfstream:modulation, the waveform's own name


__all__ = [
    "DENSITIES",
    "FINE_LABELS",
    "KINDS",
    "REALISMS",
    "SynthAnnotation",
    "SynthSource",
    "render_capture",
    "scene_kinds",
    "synthesize",
]

DENSITIES = ("sparse", "medium", "crowded")
REALISMS = ("world", "clean")


def scene_kinds(seed: int, density: str | None = None) -> tuple[str, list[str]]:
    """The scene's density (drawn from the seed unless given) and its transmitters' families."""
    rng = np.random.default_rng([seed, 0xD5])
    drawn = str(rng.choice(DENSITIES, p=(0.3, 0.4, 0.3)))
    density = density or drawn
    if density == "sparse":
        return density, [str(k) for k in rng.choice(KINDS, int(rng.integers(2, 5)), replace=False)]
    if density == "medium":
        return density, list(KINDS)
    extra = [str(k) for k in rng.choice(KINDS, int(rng.integers(3, 10)))]
    return density, list(KINDS) + extra


def render_capture(
    out: np.ndarray,
    sample_rate_hz: float,
    *,
    seed: int,
    snr_db_range: tuple[float, float] = (3.0, 30.0),
    num_signals: int | None = None,
    kinds: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    realism: str = "world",
    density: str | None = None,
) -> list[SynthAnnotation]:
    """Fill ``out`` (1-D complex64, any writable array or memmap) with noise plus signals.

    ``num_signals`` counts transmitters (each may emit many instances), cycling
    through the families; None: the scene's ``density`` (sparse, medium, crowded;
    None: drawn from the seed) decides. ``realism`` "world" adds the channel and
    receiver effects, "clean" leaves white noise and ideal waveforms. Returns the
    instances that lie inside the band. ``progress(done, total)`` is called after
    each transmitter is drawn.
    """
    if realism not in REALISMS:
        raise InputError(f"synth: realism must be one of {', '.join(REALISMS)}, got {realism!r}")
    if density is not None and density not in DENSITIES:
        raise InputError(f"synth: density must be one of {', '.join(DENSITIES)}, got {density!r}")
    world = realism == "world"
    fs = float(sample_rate_hz)
    n_total = int(out.shape[0])
    noise_rng = np.random.default_rng([seed, 0x5EED])
    receiver = Receiver.draw(np.random.default_rng([seed, 0xEC]), fs) if world else Receiver(fs)
    scale = np.float32(math.sqrt(0.5))
    for a in range(0, n_total, _PIECE):
        b = min(a + _PIECE, n_total)
        block = noise_rng.standard_normal(2 * (b - a), dtype=np.float32)
        block *= scale
        out[a:b] = receiver.colour(block.view(np.complex64))
    if kinds is None:
        if num_signals is None:
            density, kinds = scene_kinds(seed, density)
        else:
            kinds = [KINDS[i % len(KINDS)] for i in range(num_signals)]
    floor_hz = fs / 4096.0
    annotations: list[SynthAnnotation] = []
    token = channel_effects.set(world)
    try:
        for index, kind in enumerate(kinds):
            rng = np.random.default_rng([seed, index])
            for inst in EMITTERS[kind](rng, fs, n_total, snr_db_range):
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
                        inst.label,
                        inst.start,
                        count,
                        inst.f_low_hz,
                        inst.f_high_hz,
                        inst.snr_db,
                        inst.comment,
                        inst.fine,
                    )
                )
            if progress is not None:
                progress(index + 1, len(kinds))
    finally:
        channel_effects.reset(token)
    if world:
        for a in range(0, n_total, _PIECE):
            b = min(a + _PIECE, n_total)
            out[a:b] = receiver.apply(np.asarray(out[a:b]), a)
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
    realism: str = "world",
    density: str | None = None,
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
    if realism not in REALISMS:
        raise InputError(f"synth: realism must be one of {', '.join(REALISMS)}, got {realism!r}")
    if density is not None and density not in DENSITIES:
        raise InputError(f"synth: density must be one of {', '.join(DENSITIES)}, got {density!r}")
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
            realism=realism,
            density=density,
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
                "rfstream:modulation": a.fine or a.label,
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
