"""Concurrent fan-out: every enabled detector sees every frame at the same time.

On the CPU the detectors run in a thread pool — ONNX Runtime, NumPy and SciPy
release the GIL in their heavy loops, so a chunk costs about the slowest
detector, not the sum. The calling thread runs one detector itself rather than
idling while it waits.

On the GPU a detector may split its work in two (``submit(frame)`` enqueues on
its own CUDA stream, ``collect()`` waits and decodes): the fan-out submits every
such detector from the calling thread first — their streams then all wait on
the same "frame ready" event and overlap on the device — runs the CPU
detectors meanwhile, and collects last.

A detector that raises is counted and logged once per change of state (first
failure, a different error, recovery), its result is empty, and the other
detectors are unaffected. Merging across detectors is
:func:`rfstream.detect.nms.merge_detections`; the fan-out does not merge.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import structlog

from rfstream.detect.base import AsyncDetector, Detector
from rfstream.errors import ConfigError
from rfstream.types import Detection, Frame

__all__ = ["FanOut"]

log = structlog.get_logger(__name__)

Result = tuple[list[Detection], float, bool]  # detections, milliseconds, succeeded


class FanOut:
    """Run detectors concurrently on one frame; ``run(frame) -> (detections by name, ms by name)``."""

    def __init__(self, detectors: Sequence[Detector], *, workers: int | None = None) -> None:
        names = [d.name for d in detectors]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"detector names must be unique; repeated: {', '.join(dupes)}")
        self.detectors = list(detectors)
        self._by_name = {d.name: d for d in self.detectors}
        self._async = {d.name for d in self.detectors if isinstance(d, AsyncDetector)}
        # The caller runs one CPU detector itself, so n detectors at once need n-1 pool threads;
        # ``workers`` = 0 runs them one after another in the caller (a thread budget of one core).
        workers = max(1, len(self.detectors) - 1) if workers is None else max(0, int(workers))
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="rfstream-detect")
        self._enabled: tuple[str, ...] = tuple(names)
        self.errors: dict[str, int] = dict.fromkeys(names, 0)  # run-time failures per detector
        self._last_error: dict[str, str | None] = dict.fromkeys(names)
        self.last_total_ms = 0.0  # wall time of the last run (about the slowest detector)

    # --- load shedding ----------------------------------------------------------------------------
    @property
    def enabled(self) -> tuple[str, ...]:
        return self._enabled

    def set_enabled(self, names: Iterable[str]) -> None:
        """Run only these detectors from the next frame on (the load-shedding policy's lever)."""
        wanted = set(names)
        unknown = wanted - set(self._by_name)
        if unknown:
            raise ConfigError(f"unknown detector(s): {', '.join(sorted(unknown))}")
        self._enabled = tuple(d.name for d in self.detectors if d.name in wanted)

    def shed_order(self) -> list[str]:
        """Detector names in the order load shedding drops them: lowest priority first."""
        ranked = sorted(enumerate(self.detectors), key=lambda item: (item[1].priority, -item[0]))
        return [d.name for _, d in ranked]

    # --- per frame ----------------------------------------------------------------------------------
    def _ran(self, name: str, exc: BaseException | None) -> None:
        """Count a failure; log only when a detector's state changes."""
        message = None if exc is None else f"{type(exc).__name__}: {exc}"
        if exc is not None:
            self.errors[name] += 1
        previous = self._last_error[name]
        if message == previous:
            return
        self._last_error[name] = message
        if message is None:
            log.info("detector recovered", detector=name, failures=self.errors[name])
        else:
            log.warning(
                "detector failed; its result is empty",
                detector=name,
                error=message,
                failures=self.errors[name],
            )

    def _call(self, name: str, fn: Any, *args: Any) -> Result:
        start = time.perf_counter()
        try:
            found = fn(*args)
        except Exception as exc:  # any detector bug or run error: isolate it, keep the others
            self._ran(name, exc)
            return [], (time.perf_counter() - start) * 1e3, False
        if self._last_error[name] is not None:
            self._ran(name, None)
        return found, (time.perf_counter() - start) * 1e3, True

    def run(self, frame: Frame) -> tuple[dict[str, list[Detection]], dict[str, float]]:
        """Every enabled detector on ``frame``: (detections by detector name, milliseconds by name)."""
        start = time.perf_counter()
        active = [self._by_name[n] for n in self._enabled]
        gpu = [d for d in active if d.name in self._async]
        cpu = [d for d in active if d.name not in self._async]
        results: dict[str, Result] = {}
        submitted: dict[str, float] = {}
        for d in gpu:  # enqueue on each detector's own stream; returns at once
            t0 = time.perf_counter()
            outcome = self._call(d.name, d.submit, frame)  # type: ignore[attr-defined]
            if outcome[2]:
                submitted[d.name] = t0
            else:
                results[d.name] = outcome
        pooled = cpu[1:] if self.workers else []
        futures: dict[str, Future[Result]] = {
            d.name: self._pool.submit(self._call, d.name, d.detect, frame) for d in pooled
        }
        for d in cpu[: len(cpu) - len(pooled)]:  # the caller's share (all of them without a pool)
            results[d.name] = self._call(d.name, d.detect, frame)
        for name, t0 in submitted.items():
            found, _, ok = self._call(name, self._by_name[name].collect)  # type: ignore[attr-defined]
            results[name] = (found, (time.perf_counter() - t0) * 1e3, ok)
        for name, future in futures.items():
            results[name] = future.result()
        self.last_total_ms = (time.perf_counter() - start) * 1e3
        detections = {d.name: results[d.name][0] for d in active}
        timings = {d.name: results[d.name][1] for d in active}
        return detections, timings

    # --- lifecycle ----------------------------------------------------------------------------------
    def warmup(self, frame_shape: tuple[int, int]) -> None:
        """Warm every detector up (in parallel: the slow ones are model loads and first runs)."""
        futures = [self._pool.submit(d.warmup, tuple(frame_shape)) for d in self.detectors]
        for future in futures:
            future.result()  # a ModelError here is fatal: let it through

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for d in self.detectors:
            d.close()

    def __enter__(self) -> FanOut:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
