"""The CuPy side of the spectrogram stage: pinned staging, a dedicated stream, fused kernels, "frame ready".

The DSP itself is rfstream.dsp.spectrogram.Spectrogrammer, written once against
``xp``; this module only adds what a GPU needs around it:

- :class:`PinnedStager` — each chunk's IQ is copied into a page-locked host
  buffer and from there to the device with an asynchronous copy on the stage's
  stream (a copy from pageable memory would block the host and go through a
  hidden staging buffer anyway). Two host slots alternate, each guarded by an
  event, so filling the next chunk's slot never races the copy of the last one.
- :class:`GpuSpectrogrammer` — runs ``Spectrogrammer.process`` with its own
  non-blocking CUDA stream current, then records a "frame ready" event on that
  stream. The event goes to the detectors on ``Frame.ready_event`` (each
  TensorRT stream waits on it; no host synchronisation). Until the Frame has
  that field, the stage waits for the event on the host before returning,
  which is correct from any thread, at the cost of one synchronisation.
- Fused elementwise kernels for the per-pixel steps (``power``: |X|²·scale in
  one pass over the complex STFT; ``log_normalise``: clamp, log10, scale, shift
  and clip in one pass instead of five). The Spectrogrammer uses them through
  the backend hooks described in docs/gpu.md once they are wired in.

NOTE: none of this has been run on a GPU in this project's development or CI;
see docs/gpu.md.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from rfstream.config import SpectrogramConfig
from rfstream.dsp.backend import Backend, cupy_backend
from rfstream.errors import ConfigError
from rfstream.types import Chunk, Frame

__all__ = ["GpuSpectrogrammer", "PinnedStager", "log_normalise", "power"]

_TINY = 1e-20


def _cupy() -> Any:
    try:
        import cupy
    except ImportError as exc:
        raise ConfigError("the GPU spectrogram needs CuPy: pip install 'rfstream[gpu]'") from exc
    return cupy


class PinnedStager:
    """Host IQ -> device through pinned buffers and async copies on ``stream`` (None: the current stream)."""

    def __init__(self, stream: Any = None, *, slots: int = 2, capacity: int = 0) -> None:
        self._cp = cp = _cupy()
        self._stream = stream
        self._slots = max(1, slots)
        self._next = 0
        self._host: list[np.ndarray] = []
        self._dev: list[Any] = []
        self._copied = [cp.cuda.Event(disable_timing=True) for _ in range(self._slots)]
        self._used = [False] * self._slots
        self._capacity = 0
        if capacity:
            self._grow(capacity)

    def _grow(self, n: int) -> None:
        import cupyx

        cp = self._cp
        for event, used in zip(self._copied, self._used, strict=True):
            if used:
                event.synchronize()  # old buffers may still be in flight
        self._capacity = n
        self._host = [cupyx.empty_pinned((n,), dtype=np.complex64) for _ in range(self._slots)]
        self._dev = [cp.empty((n,), dtype=cp.complex64) for _ in range(self._slots)]

    def to_device(self, iq: Any) -> Any:
        """A device complex64 copy of 1-D ``iq`` (device arrays pass through untouched).

        The result is a view of a staging slot: valid until ``slots`` further calls. The
        Spectrogrammer copies it into its own buffer at once, on the same stream.
        """
        cp = self._cp
        if isinstance(iq, cp.ndarray):
            return iq
        if iq.ndim != 1 or iq.dtype != np.complex64:
            return cp.asarray(iq)  # not chunk IQ: no staging
        n = int(iq.shape[0])
        if n > self._capacity:
            self._grow(max(n, int(self._capacity * 1.25)))
        slot = self._next
        self._next = (slot + 1) % self._slots
        if self._used[slot]:
            self._copied[slot].synchronize()  # this slot's last async copy must have left the host buffer
        host, dev = self._host[slot][:n], self._dev[slot][:n]
        np.copyto(host, iq, casting="same_kind")
        stream = self._stream or cp.cuda.get_current_stream()
        dev.set(host, stream=stream)  # asynchronous: the source is pinned
        self._copied[slot].record(stream)
        self._used[slot] = True
        return dev


class GpuSpectrogrammer:
    """Spectrogrammer on CuPy with its own stream and a "frame ready" event per frame."""

    def __init__(self, cfg: SpectrogramConfig | None = None, backend: Backend | None = None) -> None:
        from rfstream.dsp.spectrogram import Spectrogrammer

        cp = _cupy()
        self._cp = cp
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.stager = PinnedStager(self.stream)
        base = backend or cupy_backend()
        if base.name != "cupy":
            raise ConfigError("GpuSpectrogrammer needs the cupy backend")
        # Same DSP code; only the host->device step and the stream differ.
        self.backend = dataclasses.replace(
            base, to_device=self.stager.to_device, synchronize=self.stream.synchronize
        )
        cfg = cfg or SpectrogramConfig()
        # The fused log/normalise kernel replaces the array kernel's five-call version.
        normalise = functools.partial(
            log_normalise, dynamic_range_db=cfg.dynamic_range_db, floor_offset_db=cfg.floor_offset_db
        )
        self.inner = Spectrogrammer(cfg, self.backend, normalise=normalise)
        self.cfg = self.inner.cfg
        self._has_ready_field = "ready_event" in {f.name for f in dataclasses.fields(Frame)}

    def reset(self) -> None:
        self.inner.reset()

    def process(self, chunk: Chunk) -> Frame:
        cp = self._cp
        with self.stream:
            frame = self.inner.process(chunk)
        ready = cp.cuda.Event(disable_timing=True)  # one per frame: a pipelined consumer may lag a frame
        ready.record(self.stream)
        if self._has_ready_field:
            return dataclasses.replace(frame, ready_event=ready)
        # Without Frame.ready_event a detector on another thread could not order its stream after
        # this one (non-blocking streams do not sync with the default stream): wait on the host.
        ready.synchronize()
        return frame


# --- fused per-pixel kernels --------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _kernels() -> tuple[Any, Any]:
    cp = _cupy()
    power_kernel = cp.ElementwiseKernel(
        "T x, float32 scale",
        "float32 p",
        "p = (x.real() * x.real() + x.imag() * x.imag()) * scale",
        "rfstream_power",
    )
    # y = clip(log10(max(x, tiny)) * log_scale - offset[0], 0, 1), offset = floor*log_scale - log_offset
    normalise_kernel = cp.ElementwiseKernel(
        "float32 x, raw float32 offset, float32 log_scale",
        "float32 y",
        "y = fminf(fmaxf(log10f(fmaxf(x, 1e-20f)) * log_scale - offset[0], 0.0f), 1.0f)",
        "rfstream_log_normalise",
    )
    return power_kernel, normalise_kernel


def power(spec: Any, scale: float, out: Any = None) -> Any:
    """|X|²·scale of a complex64 CuPy array in one kernel (float32)."""
    kernel, _ = _kernels()
    return kernel(spec, np.float32(scale), out) if out is not None else kernel(spec, np.float32(scale))


def log_normalise(image: Any, *, dynamic_range_db: float, floor_offset_db: float, stride: int = 3) -> Any:
    """Power image -> [0, 1] in place, exactly like Spectrogrammer's normalisation.

    The floor is the median of log10 over a strided sample (a small gather + sort);
    everything else is one fused pass over the image.
    """
    cp = _cupy()
    _, kernel = _kernels()
    log_scale = np.float32(10.0 / dynamic_range_db)
    log_offset = np.float32(floor_offset_db / dynamic_range_db)
    floor = cp.median(cp.log10(cp.maximum(image[::stride, ::stride], np.float32(_TINY))))
    offset = (floor * log_scale - log_offset).astype(cp.float32).reshape(1)
    return kernel(image, offset, log_scale, image)
