"""Build the spectrogram stage for a backend: the one place that picks the GPU class.

The dependencies run one way: this module imports ``spectrogram`` (and, only for
CuPy, ``gpu``); ``gpu`` imports ``spectrogram``; ``spectrogram`` imports neither.
"""

from __future__ import annotations

from typing import Any

from rfstream.config import SpectrogramConfig
from rfstream.dsp.backend import Backend
from rfstream.dsp.spectrogram import Spectrogrammer

__all__ = ["make_spectrogrammer"]


def make_spectrogrammer(cfg: SpectrogramConfig, backend: Backend, *, workers: int | None = None) -> Any:
    """The spectrogram stage for ``backend``: on CuPy the GPU stage (pinned staging, its own stream).

    ``workers``: host threads for the CPU stage (None: ``backend.workers``).
    """
    if backend.name == "cupy":
        from rfstream.dsp.gpu import GpuSpectrogrammer

        return GpuSpectrogrammer(cfg, backend)
    return Spectrogrammer(cfg, backend, workers=workers)
