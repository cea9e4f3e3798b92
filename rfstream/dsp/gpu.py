"""The CuPy side of the spectrogram stage: pinned staging, a dedicated stream, "frame ready", the host door.

The DSP itself is rfstream.dsp.spectrogram.Spectrogrammer, written once against
``xp``; this module only adds what a GPU needs around it:

- :class:`PinnedStager` — host -> device. Each chunk's IQ reaches the device
  with an asynchronous ``cudaMemcpyAsync`` on the stage's stream. IQ that is
  already in pinned memory (the SoapySDR reader's ring on a CUDA machine, see
  rfstream.hostmem) is copied straight from there; pageable IQ (a file replay)
  is first copied into one of two pinned staging slots (an async copy from
  pageable memory would block the host and go through the driver's own hidden
  staging buffer anyway). Each slot is guarded by an event, so refilling it
  never races its last copy, and a pinned source is kept alive until its copy
  has completed.
- :class:`GpuSpectrogrammer` — runs ``Spectrogrammer.process`` with its own
  non-blocking CUDA stream current, then records a "frame ready" event on that
  stream and hands it on in ``Frame.ready_event``. Device readers order
  themselves after it without a host wait (each TensorRT stream calls
  ``stream.wait_event``); host readers go through ``Frame.host_image()``, which
  waits on the event once and copies once, into :class:`HostImageRing`.
- :class:`HostImageRing` — the device -> host door's memory: a small ring of
  pinned host buffers owned by the spectrogrammer and reused frame after frame
  (no pinned allocation per frame). A frame's host image holds its buffer until
  the image (and every view of it) is garbage, so a sink or detector that keeps
  it never sees it overwritten; when every buffer is held the copy falls back to
  pageable memory and is counted.
- Fused elementwise kernels for the per-pixel steps (``power``: |X|²·scale in
  one pass over the complex STFT; ``log_normalise``: clamp, log10, scale, shift
  and clip in one pass instead of five).

CuPy API facts this relies on (docs.cupy.dev, CuPy 13): ``cupy.cuda.Stream(non_blocking=True)``
does not synchronise with the legacy default stream; ``Stream.wait_event`` makes
future work on a stream wait for an event without blocking the host;
``Event(block=True)`` makes ``Event.synchronize()`` sleep instead of spin
(cudaEventBlockingSync; without it cudaEventSynchronize busy-waits, CUDA runtime
API); ``Event.done`` queries without waiting; ``cupy.asnumpy``/``ndarray.get``
take ``stream`` and ``out`` (CuPy 13 adds ``blocking=True`` as the default,
CuPy 12 ran a copy with a stream asynchronously, so the code synchronises the
copy stream itself); ``cupy.cuda.runtime.memcpyAsync(dst, src, size, kind,
stream_ptr)`` is the thin cudaMemcpyAsync wrapper.

NOTE: none of this has been run on a GPU in this project's development or CI;
see docs/gpu.md.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from typing import Any

import numpy as np

from rfstream.config import SpectrogramConfig
from rfstream.dsp.backend import Backend, cupy_backend
from rfstream.errors import ConfigError
from rfstream.hostmem import HostRing, is_pinned
from rfstream.types import Chunk, Frame

__all__ = ["GpuSpectrogrammer", "HostImageRing", "PinnedStager", "log_normalise", "power"]

_TINY = 1e-20
HOST_IMAGE_SLOTS = 8  # frames whose host image may be alive at once before copies fall back to pageable


def _cupy() -> Any:
    try:
        import cupy
    except ImportError as exc:
        raise ConfigError("the GPU spectrogram needs CuPy: pip install 'rfstream[gpu]'") from exc
    return cupy


class PinnedStager:
    """Host IQ -> device through async copies on ``stream`` (None: the current stream)."""

    def __init__(self, stream: Any = None, *, slots: int = 2, capacity: int = 0) -> None:
        self._cp = cp = _cupy()
        self._stream = stream
        self._slots = max(1, slots)
        self._next = 0
        self._host: list[np.ndarray] = []  # pinned staging for pageable IQ
        self._dev: list[Any] = []
        self._copied = [cp.cuda.Event(disable_timing=True) for _ in range(self._slots)]
        self._used = [False] * self._slots
        self._held: list[Any] = [None] * self._slots  # a pinned source, alive until its copy is done
        self._capacity = 0
        self.direct = 0  # chunks copied straight from pinned memory
        self.staged = 0  # chunks copied through a pinned staging slot
        if capacity:
            self._grow(capacity)

    def _grow(self, n: int) -> None:
        import cupyx

        cp = self._cp
        for i in range(self._slots):
            if self._used[i]:
                self._copied[i].synchronize()  # old buffers may still be in flight
            self._held[i] = None
        self._capacity = n
        self._host = [cupyx.empty_pinned((n,), dtype=np.complex64) for _ in range(self._slots)]
        self._dev = [cp.empty((n,), dtype=cp.complex64) for _ in range(self._slots)]

    def to_device(self, iq: Any) -> Any:
        """A device complex64 copy of 1-D ``iq`` (device arrays pass through untouched).

        The result is a view of a device slot: valid until ``slots`` further calls. The
        Spectrogrammer copies it into its own buffers at once, on the same stream.
        """
        cp = self._cp
        if isinstance(iq, cp.ndarray):
            return iq
        if iq.ndim != 1 or iq.dtype != np.complex64:
            return cp.asarray(iq)  # not chunk IQ: no staging
        n = int(iq.shape[0])
        if n > self._capacity:
            self._grow(max(n, int(self._capacity * 1.25)))
        for i in range(self._slots):  # let go of pinned sources whose copies have landed
            if self._held[i] is not None and self._copied[i].done:
                self._held[i] = None
        slot = self._next
        self._next = (slot + 1) % self._slots
        if self._used[slot]:
            self._copied[slot].synchronize()  # this slot's last copy must be done with its source
            self._held[slot] = None
        dev = self._dev[slot][:n]
        if is_pinned(iq) and iq.flags.c_contiguous:
            src = iq  # already page-locked (the SoapySDR ring on CUDA): no host-side copy at all
            self._held[slot] = iq  # the source's ring buffer must not be reused before the copy ends
            self.direct += 1
        else:
            src = self._host[slot][:n]
            np.copyto(src, iq, casting="same_kind")
            self.staged += 1
        stream = self._stream or cp.cuda.get_current_stream()
        # cudaMemcpyAsync from page-locked memory: returns at once, ordered on ``stream``.
        cp.cuda.runtime.memcpyAsync(
            int(dev.data.ptr),
            int(src.ctypes.data),
            src.nbytes,
            cp.cuda.runtime.memcpyHostToDevice,
            stream.ptr,
        )
        self._copied[slot].record(stream)
        self._used[slot] = True
        return dev

    def stats(self) -> dict[str, int]:
        return {"direct": self.direct, "staged": self.staged, "capacity_samples": self._capacity}


class HostImageRing:
    """Pinned host buffers for frame images: ``download(image)`` is Frame.host_image()'s copy.

    ``pinned=False`` (no CUDA needed) gives plain buffers and copies on the current
    stream; it exists for CPU tests of the door's logic with a fake device array.
    """

    def __init__(self, shape: tuple[int, int], slots: int = HOST_IMAGE_SLOTS, *, pinned: bool = True) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        # Copies get their own non-blocking stream: they never queue behind the next chunk's
        # spectrogram work, and never sync with the legacy default stream.
        self._stream = _cupy().cuda.Stream(non_blocking=True) if pinned else None
        self.ring = HostRing(self.shape, np.float32, slots, pinned=pinned)
        self.pageable = 0  # copies that found every buffer held (or an image of another shape)
        self._lock = threading.Lock()  # frames are brought home from several detector threads

    def download(self, image: Any) -> np.ndarray:
        """One device -> host copy of a complete image (the caller has waited on its ready event)."""
        out = self.ring.lease() if tuple(image.shape) == self.shape and image.dtype == np.float32 else None
        if out is None:
            with self._lock:
                self.pageable += 1
            return image.get()
        if self._stream is None:
            image.get(out=out)
        else:
            image.get(stream=self._stream, out=out)
            self._stream.synchronize()  # CuPy 12 returned early when given a stream; 13 already waited
        return out

    def stats(self) -> dict[str, Any]:
        return {**self.ring.stats(), "pageable_copies": self.pageable}


class GpuSpectrogrammer:
    """Spectrogrammer on CuPy with its own stream, a "frame ready" event per frame, and the host door."""

    def __init__(
        self,
        cfg: SpectrogramConfig | None = None,
        backend: Backend | None = None,
        *,
        host_slots: int = HOST_IMAGE_SLOTS,
    ) -> None:
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
        self.host_images = HostImageRing((self.cfg.height, self.cfg.width), host_slots)

    def reset(self) -> None:
        self.inner.reset()

    def close(self) -> None:
        self.inner.close()

    def process(self, chunk: Chunk) -> Frame:
        """Enqueue the chunk's spectrogram on this stage's stream; return at once with its ready event.

        The image is a fresh allocation from CuPy's pool on this stream, so the next chunk
        never writes into a frame a detector is still reading; a device reader keeps the
        Frame until its own stream has finished with the image.
        """
        cp = self._cp
        with self.stream:
            frame = self.inner.process(chunk)
        # One event per frame (a pipelined consumer may lag a frame); blocking, so a host wait
        # in Frame.host_image() sleeps rather than spinning a core.
        ready = cp.cuda.Event(block=True, disable_timing=True)
        ready.record(self.stream)
        return dataclasses.replace(frame, ready_event=ready, host_buffers=self.host_images)

    def stats(self) -> dict[str, Any]:
        return {"host_images": self.host_images.stats(), "h2d": self.stager.stats()}


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
