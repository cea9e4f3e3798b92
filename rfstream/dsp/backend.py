"""Array backends: NumPy/SciPy on the CPU, CuPy/cuFFT on a CUDA GPU.

DSP code takes a :class:`Backend` (or just its ``xp``) as a value, chosen once
at construction; nothing branches on the backend per chunk.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rfstream.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Backend:
    name: str  # "numpy" | "cupy"
    xp: Any  # the array module
    fft: Callable[[Any], Any]  # complex FFT along the last axis, may overwrite its input
    as_strided: Callable[..., Any]
    to_host: Callable[[Any], np.ndarray]
    to_device: Callable[[np.ndarray], Any]
    synchronize: Callable[[], None]
    to_sparse: Callable[[Any], Any]  # scipy.sparse CSR -> the backend's CSR
    workers: int = 1  # host threads the CPU DSP may use (FFT / spectrogram blocks); decided once

    @property
    def is_gpu(self) -> bool:
        return self.name != "numpy"


def cuda_available() -> bool:
    """True where CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDARuntimeError, a broken driver: all mean "no"
        return False


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; the machine's count where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def numpy_backend(workers: int | None = None) -> Backend:
    """NumPy/SciPy; ``workers`` host threads for the DSP (None: the cores available, at most 4)."""
    import scipy.fft

    workers = max(1, int(workers)) if workers else min(4, available_cores())

    def fft(x: np.ndarray) -> np.ndarray:
        # pocketfft keeps complex64 in single precision; overwrite_x saves a 64 MB copy per chunk.
        return scipy.fft.fft(x, axis=-1, workers=workers, overwrite_x=True)

    return Backend(
        name="numpy",
        xp=np,
        fft=fft,
        as_strided=np.lib.stride_tricks.as_strided,
        to_host=np.asarray,
        to_device=np.asarray,
        synchronize=lambda: None,
        to_sparse=lambda m: m,
        workers=workers,
    )


def cupy_backend() -> Backend:
    try:
        import cupy
        import cupy.fft
        import cupyx.scipy.sparse
        from cupy.lib.stride_tricks import as_strided
    except ImportError as exc:
        raise ConfigError("spectrogram.backend 'cupy' needs CuPy: pip install 'rfstream[gpu]'") from exc
    if not cuda_available():
        raise ConfigError("spectrogram.backend 'cupy': no CUDA device is visible")

    def fft(x: Any) -> Any:
        # cuFFT plans are cached by CuPy per shape, so the plan is built on the first chunk only.
        return cupy.fft.fft(x, axis=-1, overwrite_x=True)

    return Backend(
        name="cupy",
        xp=cupy,
        fft=fft,
        as_strided=as_strided,
        to_host=cupy.asnumpy,
        to_device=cupy.asarray,
        synchronize=lambda: cupy.cuda.get_current_stream().synchronize(),
        to_sparse=cupyx.scipy.sparse.csr_matrix,
    )


def get_backend(name: str = "auto") -> Backend:
    """Pick the array backend once: ``auto`` takes CuPy where CUDA exists, else NumPy."""
    if name == "numpy":
        return numpy_backend()
    if name == "cupy":
        return cupy_backend()
    if name == "auto":
        return cupy_backend() if cuda_available() else numpy_backend()
    raise ConfigError(f"config key 'spectrogram.backend': unknown backend {name!r}")
