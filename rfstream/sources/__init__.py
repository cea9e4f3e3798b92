"""Where Chunks come from: SigMF recordings, raw IQ files, the synthesiser, a live SDR.

``open_source(cfg)`` builds the one the configuration names. Every source
follows :class:`rfstream.sources.base.Source`: an ``info`` record, iteration
over Chunks, and a thread-safe ``close()``.
"""

from __future__ import annotations

from pathlib import Path

from rfstream.config import SourceConfig
from rfstream.errors import InputError
from rfstream.sources.base import Source, SourceInfo

__all__ = ["Source", "SourceInfo", "open_source"]

DEFAULT_SYNTH_RATE_HZ = 20e6


def open_source(cfg: SourceConfig, *, min_chunk_samples: int = 1, pinned: bool = False) -> Source:
    """The source ``cfg.kind`` names, set up from ``cfg``; InputError where it cannot be used.

    ``min_chunk_samples``: the chunk policy's floor for file sources (the pipeline passes
    ``spectrogram.nfft``: no chunk but a stream's tail is shorter than one FFT; see
    :class:`rfstream.sources.raw.MappedReplay`). ``pinned``: the CUDA backend is active, so a
    live SDR reads into page-locked buffers.
    """
    kind = cfg.kind
    if cfg.capture_index >= 0 and kind != "sigmf" and (kind != "raw" or cfg.capture_index > 0):
        what = "a raw IQ file has one capture, number 0" if kind == "raw" else f"a {kind} source has none"
        raise InputError(f"capture {cfg.capture_index} does not exist: {what} (source.capture_index)")
    if kind == "sigmf":
        from rfstream.sources.raw import datatype_from_extension
        from rfstream.sources.sigmf import SigMFSource

        if not cfg.path:
            raise InputError("a SigMF source needs a path (.sigmf-meta, .sigmf-data or .sigmf)")
        # A raw file given as a recording: replay it as raw where the rate is known.
        if datatype_from_extension(cfg.path) is not None and cfg.sample_rate_hz > 0:
            if cfg.capture_index > 0:
                raise InputError(
                    f"capture {cfg.capture_index} does not exist: a raw IQ file has one, number 0"
                )
            return _raw(cfg, min_chunk_samples)
        return SigMFSource(
            cfg.path,
            chunk_ms=cfg.chunk_ms,
            channel=cfg.channel,
            realtime=cfg.realtime,
            loop=cfg.loop,
            capture_index=cfg.capture_index,
            min_chunk_samples=min_chunk_samples,
            verify_checksum=cfg.verify_checksum,
            allow_external_dataset=cfg.allow_external_dataset,
        )
    if kind == "raw":
        if not cfg.path:
            raise InputError("a raw IQ source needs a path")
        return _raw(cfg, min_chunk_samples)
    if kind == "synth":
        from rfstream.sources.synth import SynthSource

        return SynthSource(
            cfg.sample_rate_hz or DEFAULT_SYNTH_RATE_HZ,
            chunk_ms=cfg.chunk_ms,
            center_freq_hz=cfg.center_freq_hz or 2.44e9,
            realtime=cfg.realtime,
        )
    if kind == "soapy":
        from rfstream.sources.soapy import SoapySource

        return SoapySource(cfg, pinned=pinned)
    raise InputError(f"unknown source kind {kind!r}; expected sigmf, raw, synth or soapy")


def _raw(cfg: SourceConfig, min_chunk_samples: int) -> Source:
    from rfstream.sources.raw import RawSource

    return RawSource(
        Path(cfg.path),
        datatype=cfg.datatype,
        sample_rate_hz=cfg.sample_rate_hz,
        center_freq_hz=cfg.center_freq_hz,
        chunk_ms=cfg.chunk_ms,
        realtime=cfg.realtime,
        loop=cfg.loop,
        channel=cfg.channel,
        min_chunk_samples=min_chunk_samples,
    )
