"""Host buffer rings: a fixed set of equal buffers, lent out one array at a time.

Two stages need host memory that is reused rather than allocated per chunk: the
SoapySDR reader (a chunk's IQ) and the GPU spectrogram's device->host door (a
frame's image). On a CUDA machine that memory must be *pinned* (page-locked):
only then is a copy between host and device truly asynchronous, and it skips the
driver's hidden staging copy (cudaMemcpyAsync "only works on page-locked host
memory", CUDA runtime API reference). On the CPU the same ring is plain NumPy.

A :class:`HostRing` hands out **leases**: ``lease()`` returns a NumPy array
viewing one free buffer, or None when every buffer is lent. The buffer comes
back to the ring when the lease *and every view derived from it* are garbage:
each lease is a fresh array made on the raw buffer object (not on an array), so
NumPy's view collapsing makes every slice, reshape or ``.view`` of it keep the
lease alive (``arr.base`` of a derived view is the lease, whose own base is the
buffer). Holding any part of a chunk's IQ or a frame's host image therefore
keeps that buffer out of the ring; nothing is overwritten under a reader.

Pinned buffers come from ``cupy.cuda.alloc_pinned_memory`` (documented to
return a ``PinnedMemoryPointer``, which exports the buffer protocol; the same
call ``cupyx.empty_pinned`` makes) and are allocated once, when the ring is
built.
"""

from __future__ import annotations

import mmap
import queue
import threading
import weakref
from typing import Any

import numpy as np

__all__ = ["HostRing", "buffer_owner", "is_pinned", "pinned_bytes"]


class HostRing:
    """``slots`` host buffers of ``shape``/``dtype``, lent as arrays that return on garbage collection."""

    def __init__(self, shape: tuple[int, ...] | int, dtype: Any, slots: int, *, pinned: bool = False) -> None:
        self.shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.count = int(np.prod(self.shape, dtype=np.int64))
        if slots < 1:
            raise ValueError("a host ring needs at least one slot")
        self.pinned = pinned
        if pinned:
            _PINNED_RINGS.add(self)
        nbytes = max(1, self.count * self.dtype.itemsize)
        self._buffers = [_alloc_pinned(nbytes) if pinned else _alloc_plain(nbytes) for _ in range(slots)]
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()  # finalizers may run on any thread
        for i in range(slots):
            self._free.put(i)
        self._lock = threading.Lock()
        self.leases = 0  # arrays handed out
        self.exhausted = 0  # lease() calls that found every buffer lent

    @property
    def slots(self) -> int:
        return len(self._buffers)

    @property
    def nbytes(self) -> int:
        """Host memory the ring holds (allocated once)."""
        return self.slots * max(1, self.count * self.dtype.itemsize)

    def free_slots(self) -> int:
        return self._free.qsize()

    def lease(self) -> np.ndarray | None:
        """A writable array on a free buffer, or None when every buffer is lent."""
        try:
            slot = self._free.get_nowait()
        except queue.Empty:
            with self._lock:
                self.exhausted += 1
            return None
        # A fresh array on the raw buffer: derived views collapse onto it (not onto a shared
        # parent array), so the slot is free again only when the last of them is gone.
        flat = np.ndarray((self.count,), dtype=self.dtype, buffer=self._buffers[slot])
        weakref.finalize(flat, self._free.put, slot)
        with self._lock:
            self.leases += 1
        return flat.reshape(self.shape)

    def stats(self) -> dict[str, Any]:
        return {
            "slots": self.slots,
            "free": self.free_slots(),
            "bytes": self.nbytes,
            "pinned": self.pinned,
            "leases": self.leases,
            "exhausted": self.exhausted,
        }


# Live pinned rings, for the memory report only (rfstream.runtime.resources): page-locked host
# memory is a scarce resource the health message should show.
_PINNED_RINGS: weakref.WeakSet[HostRing] = weakref.WeakSet()


def pinned_bytes() -> int:
    """Pinned host memory held by live :class:`HostRing` instances."""
    return sum(ring.nbytes for ring in list(_PINNED_RINGS))


def _alloc_plain(nbytes: int) -> mmap.mmap:
    # Anonymous memory: page-aligned (a bytearray is not aligned), and not an ndarray, which
    # NumPy would collapse views onto (defeating the lease; see the module docstring).
    return mmap.mmap(-1, nbytes)


def _alloc_pinned(nbytes: int) -> Any:
    try:
        import cupy
    except ImportError as exc:  # callers decide pinned-ness from the backend, which needs CuPy
        raise RuntimeError(f"pinned host memory needs CuPy: {exc}") from exc
    return cupy.cuda.alloc_pinned_memory(nbytes)


def buffer_owner(array: Any) -> Any:
    """The object that owns ``array``'s memory: the first non-array base (None for an owning array)."""
    base = getattr(array, "base", None)
    while isinstance(base, np.ndarray):
        base = base.base
    return base


def is_pinned(array: Any) -> bool:
    """True where ``array`` views CuPy pinned memory (a :class:`HostRing` lease or ``cupyx.empty_pinned``).

    Answers without touching CUDA, from the owning buffer object's type, and is False
    wherever CuPy has not been imported (nothing can be pinned by CuPy then).
    """
    import sys

    cupy = sys.modules.get("cupy")
    if cupy is None:
        return False
    pointer = getattr(getattr(cupy, "cuda", None), "PinnedMemoryPointer", None)
    return pointer is not None and isinstance(buffer_owner(array), pointer)
