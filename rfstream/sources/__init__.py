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


def open_source(cfg: SourceConfig, *, pinned: bool = False) -> Source:
    """The source ``cfg.kind`` names, set up from ``cfg``; InputError where it cannot be used.

    ``pinned``: the CUDA backend is active, so a live SDR reads into page-locked buffers.
    """
    kind = cfg.kind
    if kind == "sigmf":
        from rfstream.sources.raw import datatype_from_extension
        from rfstream.sources.sigmf import SigMFSource

        if not cfg.path:
            raise InputError("a SigMF source needs a path (.sigmf-meta, .sigmf-data or .sigmf)")
        # A raw file given as a recording: replay it as raw where the rate is known.
        if datatype_from_extension(cfg.path) is not None and cfg.sample_rate_hz > 0:
            return _raw(cfg)
        return SigMFSource(
            cfg.path,
            chunk_ms=cfg.chunk_ms,
            channel=cfg.channel,
            realtime=cfg.realtime,
            loop=cfg.loop,
            capture_index=cfg.capture_index,
        )
    if kind == "raw":
        if not cfg.path:
            raise InputError("a raw IQ source needs a path")
        return _raw(cfg)
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


def _raw(cfg: SourceConfig) -> Source:
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
    )
