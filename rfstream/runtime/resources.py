"""Memory in use, for the ``health`` message and ``rfstream bench``: host RSS, ONNX Runtime arenas, GPU.

:func:`memory_snapshot` returns one plain dict (msgpack- and JSON-ready):

- ``rss_bytes`` / ``peak_rss_bytes`` — this process's resident set now
  (``/proc/self/statm``) and its peak (``getrusage``); None where unknown.
- ``pinned_host_bytes`` — page-locked host memory held by rfstream's buffer
  rings (the SoapySDR ring on CUDA, the GPU spectrogram's host-image ring).
- ``onnxruntime`` — the arena settings every rfstream session is built with
  (rfstream.detect.ort.SESSION_MEMORY; only a note where no session was ever
  built in this process). ONNX Runtime's Python API does not
  expose how much of an arena is in use (the C API's ``OrtAllocator::GetStats``
  has no Python binding), so this is the configuration, and it says so.
- ``gpu`` — None unless CuPy is already loaded in this process (the CPU path
  never imports it just to report); else CuPy's device memory pool
  (``MemoryPool.used_bytes()`` / ``total_bytes()``) and the device's free and
  total memory (``cupy.cuda.runtime.memGetInfo()``, i.e. cudaMemGetInfo, which
  also sees TensorRT's and ONNX Runtime's allocations, and other processes').

:func:`batch_for_memory` sizes a batch from free device memory (the crop
classifier's batch on a GPU). Both are cheap enough to call once a second.
"""

from __future__ import annotations

import os
import resource
import sys
from typing import Any

__all__ = ["batch_for_memory", "device_free_bytes", "gpu_memory", "memory_snapshot"]

ORT_USAGE_NOTE = "configured settings; ONNX Runtime's Python API does not expose arena usage"
ORT_NONE_NOTE = "no ONNX Runtime session in this process"


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            resident_pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int | None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def gpu_memory() -> dict[str, Any] | None:
    """CuPy pool and device memory, or None where CuPy is not loaded or no device answers."""
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return None
    try:
        pool = cupy.get_default_memory_pool()
        free, total = cupy.cuda.runtime.memGetInfo()
        device = int(cupy.cuda.Device().id)
    except Exception as exc:  # CUDARuntimeError and friends: report, never fail a health message
        return {"error": " ".join(str(exc).split())[:200]}
    return {
        "device": device,
        "pool_used_bytes": int(pool.used_bytes()),
        "pool_total_bytes": int(pool.total_bytes()),
        "device_free_bytes": int(free),
        "device_total_bytes": int(total),
        "device_used_bytes": int(total) - int(free),
    }


def device_free_bytes() -> int | None:
    """Free device memory (cudaMemGetInfo) plus what CuPy's pool holds unused, or None without CuPy."""
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return None
    try:
        free, _ = cupy.cuda.runtime.memGetInfo()
        pooled = cupy.get_default_memory_pool().free_bytes()  # freed blocks the pool will hand out again
    except Exception:  # no usable device: the caller keeps its default
        return None
    return int(free) + int(pooled)


def batch_for_memory(
    per_item_bytes: int, free_bytes: int | None, *, cap: int, fraction: float = 0.25, floor: int = 1
) -> int:
    """The largest batch whose ``per_item_bytes`` fit in ``fraction`` of ``free_bytes``, in [floor, cap].

    ``free_bytes`` None (no GPU, or unknown) gives ``cap``: nothing to size against.
    A quarter of free memory by default leaves room for the spectrogram, the other
    detectors and a second process on the same GPU.
    """
    cap = max(1, int(cap))
    floor = max(1, min(int(floor), cap))
    if free_bytes is None or per_item_bytes <= 0:
        return cap
    fits = int(max(0, free_bytes) * fraction) // int(per_item_bytes)
    return max(floor, min(cap, fits))


def memory_snapshot() -> dict[str, Any]:
    """Host and device memory now (see the module docstring for each field).

    Imports nothing heavy: it runs in the pipeline's thread about once a second, and a
    process without ONNX Runtime sessions (an energy-only run) reports none.
    """
    from rfstream.hostmem import pinned_bytes

    onnx = sys.modules.get("rfstream.detect.ort")  # loaded wherever a session was built
    rss = _rss_bytes()
    return {
        "rss_bytes": rss,
        "peak_rss_bytes": max(filter(None, (_peak_rss_bytes(), rss)), default=None),
        "pinned_host_bytes": pinned_bytes(),
        "onnxruntime": ({**onnx.SESSION_MEMORY, "note": ORT_USAGE_NOTE} if onnx else {"note": ORT_NONE_NOTE}),
        "gpu": gpu_memory(),
    }
