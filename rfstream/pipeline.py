"""The pipeline: source -> spectrogram -> detectors -> merge -> tracker -> sinks.

    for chunk in source:                        (a reader thread for live sources)
        frame      = spectrogram.process(chunk)
        found      = fanout.run(frame)            every detector at once
        detections = merge(found)                 one box per signal (fusion) + publish gate
        events     = tracker.update(frame, detections)
        for sink in sinks: sink.publish(result)   never blocks

Two ways to feed it, chosen once at construction:

* **lossless** (``rfstream replay`` without ``--realtime``, ``eval``, ``demo``):
  the source is read in the processing thread, as fast as processing goes,
  and nothing is ever shed.
* **live** (an SDR, or a replay paced with ``--realtime``): a reader thread
  puts chunks into a bounded queue and never waits; a full queue sheds the
  chunk. Each chunk must be done ``runtime.deadline_ms`` after it arrived; one
  that can no longer make it is shed before any work is spent on it.

Every chunk is counted as on time, late or shed, and every sample as
processed, shed, or lost before it arrived (overflow, file gap):
``samples received = processed + shed (+ in flight)`` and ``lost_overflow``
counts the gaps.

When overruns persist in a live run, :class:`DegradePolicy` steps through
degrade levels — 1: run only the highest-priority detectors, 2: skip the
spectrogram publication, 3: shed every other chunk — and back down with
hysteresis when load falls; each change is counted and logged once.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from rfstream.config import Config
from rfstream.detect.base import Detector
from rfstream.detect.fanout import FanOut
from rfstream.detect.fuse import merge_stage
from rfstream.dsp.backend import Backend, numpy_backend
from rfstream.dsp.factory import make_spectrogrammer
from rfstream.runtime.metrics import Metrics
from rfstream.runtime.policy import DEGRADE_LEVELS, DeadlinePolicy, DegradePolicy
from rfstream.sinks.base import Sink, SpectrogramSink, TrackSink
from rfstream.sources.base import Source
from rfstream.track import Tracker
from rfstream.types import Chunk, ChunkResult, TrackEvent

log = structlog.get_logger(__name__)

_END = object()  # the reader's end-of-stream marker


@dataclass(frozen=True, slots=True)
class RunSummary:
    health: dict[str, Any]
    tracks_seen: int
    interrupted: bool


class Pipeline:
    """Wires the stages together; owns the queues, the deadline policy and the metrics."""

    def __init__(
        self,
        cfg: Config,
        source: Source,
        detectors: Sequence[Detector],
        sinks: Sequence[Sink] = (),
        *,
        backend: Backend | None = None,
        lossless: bool | None = None,
        on_result: Callable[[ChunkResult], None] | None = None,
        progress: bool = False,
        metrics: Metrics | None = None,
    ):
        self.cfg = cfg
        self.source = source
        self.sinks = list(sinks)
        self.on_result = on_result
        self.lossless = (
            (not cfg.source.realtime and cfg.source.kind != "soapy") if lossless is None else lossless
        )
        self.metrics = metrics or Metrics()
        self.spectrogram = make_spectrogrammer(cfg.spectrogram, backend or numpy_backend())
        self.fanout = FanOut(detectors, workers=cfg.runtime.workers or None)
        self.tracker = Tracker(cfg.tracker)
        self.policy = DeadlinePolicy(cfg.runtime.deadline_ms, may_shed=not self.lossless)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=cfg.runtime.queue_depth)
        self.metrics.queue_depths["input"] = self._queue.qsize
        self._stop = threading.Event()
        self._progress = progress
        self._tracks_seen = 0
        self._last_seq = -1
        self._next_health = 0.0
        self._source_error: BaseException | None = None
        # --- live only: degradation, reconfiguration, heartbeat ---
        self.heartbeat: Callable[[], None] | None = None  # called per chunk handled (processed or shed)
        self.degrade: DegradePolicy | None = None
        if not self.lossless and cfg.runtime.degrade:
            self.degrade = DegradePolicy.from_config(cfg.runtime, self._degrade_levels())
        self._shed_toggle = False
        self._skips_spectrogram = False  # level 2 is in effect on a sink that publishes spectrograms
        self._pending: tuple[Config, FanOut] | None = None  # a reload, applied at a chunk boundary
        self._pending_lock = threading.Lock()
        self._stop_at: float | None = None  # monotonic time after which queued chunks are shed
        self.shutdown_budget_s = 1.0  # how long chunks already queued may still be processed at stop

    # --- the flow, in one place -----------------------------------------------------------
    def process(self, chunk: Chunk) -> ChunkResult:
        """One chunk through every stage; returns what the sinks receive."""
        t0 = time.perf_counter()
        frame = self.spectrogram.process(chunk)
        t1 = time.perf_counter()
        found, detector_ms = self.fanout.run(frame)
        t2 = time.perf_counter()
        detections = merge_stage(self.cfg.merge).process([d for dets in found.values() for d in dets])
        events = self.tracker.update(frame, detections)
        t3 = time.perf_counter()
        timings = {"spectrogram": (t1 - t0) * 1e3, "detect": (t2 - t1) * 1e3, "merge_track": (t3 - t2) * 1e3}
        timings.update({f"detector.{name}": ms for name, ms in detector_ms.items()})
        return ChunkResult(
            frame=frame, detections=tuple(detections), track_events=tuple(events), timings_ms=timings
        )

    def run(self) -> RunSummary:
        """Run until the source ends or ``stop()``; sinks are flushed and closed."""
        reader = None
        if not self.lossless:
            reader = threading.Thread(target=self._read, name="rfstream-reader", daemon=True)
            reader.start()
        bar = self._progress_bar()
        close_error: Exception | None = None
        try:
            for chunk in self._chunks():
                self._handle(chunk)
                if bar is not None:
                    bar.update(chunk.num_samples)
                self._maybe_health()
        finally:
            if bar is not None:
                bar.close()
            self.source.close()
            if reader is not None:
                reader.join(timeout=2.0)
            self._finish_tracks()
            self._emit_health(force=True)
            close_error = self._close_sinks()
            self.fanout.close()
            with self._pending_lock:
                pending, self._pending = self._pending, None
            if pending is not None:
                pending[1].close()
        if self._source_error is not None:
            raise self._source_error
        if close_error is not None:
            # the results could not all be written: say so with the run's accounting, then fail
            health = self.metrics.health()
            log.error(
                "run ended, but a sink could not be closed",
                error=str(close_error),
                chunks_processed=health["chunks"]["processed"],
                detections=health["detections"],
                samples_processed=health["samples"]["processed"],
            )
            raise close_error
        return RunSummary(self.metrics.health(), self._tracks_seen, self._stop.is_set())

    def stop(self) -> None:
        """Ask the run to end: the source stops, chunks in flight finish, sinks flush. Thread-safe.

        The chunk being processed finishes; chunks still queued are processed for up to
        ``shutdown_budget_s`` and shed after that, so a stop never waits on a backlog.
        """
        if self._stop_at is None:
            self._stop_at = time.monotonic() + self.shutdown_budget_s
        self._stop.set()
        self.source.close()

    def reconfigure(self, cfg: Config, detectors: Sequence[Detector]) -> None:
        """Swap in new detectors and merge settings at the next chunk boundary (a SIGHUP reload).

        Thread-safe; ``detectors`` should be warmed up already. The old detectors are
        closed by the processing thread once it no longer uses them.
        """
        fanout = FanOut(detectors, workers=cfg.runtime.workers or None)
        with self._pending_lock:
            previous, self._pending = self._pending, (cfg, fanout)
        if previous is not None:  # two reloads before a chunk boundary: the newer wins
            previous[1].close()

    # --- feeding ------------------------------------------------------------------------------
    def _chunks(self) -> Iterator[Chunk]:
        if self.lossless:
            for chunk in self.source:
                self._count_arrival(chunk)
                yield chunk
                if self._stop.is_set():
                    return
            return
        while True:
            try:
                item = self._queue.get(timeout=0.25)
            except queue.Empty:
                self._maybe_health()
                if self._stop.is_set():
                    return
                continue
            if item is _END:
                return
            yield item

    def _read(self) -> None:
        """Live reader: never waits on processing; a full queue sheds the chunk."""
        try:
            for chunk in self.source:
                self._count_arrival(chunk)
                try:
                    self._queue.put_nowait(chunk)
                except queue.Full:
                    self._shed(chunk, reason="queue")
                if self._stop.is_set():
                    break
        except Exception as exc:  # a source failing mid-stream ends the run with its message
            log.error("source failed", error=str(exc))
            self._source_error = exc
        finally:
            while True:
                try:
                    self._queue.put(_END, timeout=0.5)
                    break
                except queue.Full:
                    if self._stop.is_set():
                        break

    def _count_arrival(self, chunk: Chunk) -> None:
        m = self.metrics
        m.arrived(chunk.num_samples, chunk.gap_before_samples)
        if chunk.nonfinite_samples:
            m.count("nonfinite_samples", chunk.nonfinite_samples)

    def _shed(self, chunk: Chunk, *, reason: str) -> None:
        self.metrics.settled(chunk.num_samples, shed_reason=reason)
        log.debug("chunk shed", seq=chunk.seq, reason=reason)

    # --- one chunk ----------------------------------------------------------------------------
    def _handle(self, chunk: Chunk) -> None:
        if not self.lossless:
            self._apply_pending()
        started = time.monotonic_ns()
        reason = self._shed_reason(chunk, started)
        if reason is not None:
            self._shed(chunk, reason=reason)
            if self.heartbeat is not None:
                self.heartbeat()
            return
        result = self.process(chunk)
        done = time.monotonic_ns()
        late = self.policy.finished(chunk, started, done)
        if late:
            result = ChunkResult(
                result.frame, result.detections, result.track_events, result.timings_ms, late=True
            )
        self._account(chunk, result, started, done)
        for sink in self.sinks:
            sink.publish(result)
        if self.on_result is not None:
            self.on_result(result)
        if self.metrics.degrade_level >= 2 and self._skips_spectrogram:
            self.metrics.count("spectrogram_skipped")
        if self.degrade is not None:
            # the cost includes publishing: skipping the spectrogram (level 2) must show in it
            cost_s = (time.monotonic_ns() - started) / 1e9
            level = self.degrade.observe(cost_s, chunk.duration_s, late=late)
            if level is not None:
                self._set_degrade(level)
        if self.heartbeat is not None:
            self.heartbeat()

    def _shed_reason(self, chunk: Chunk, now_ns: int) -> str | None:
        if self.lossless:
            return None
        if self._stop_at is not None and time.monotonic() > self._stop_at:
            return "shutdown"
        if self.policy.should_shed(chunk, now_ns):
            return "deadline"
        if self.degrade is not None and self.degrade.level >= 3:
            self._shed_toggle = not self._shed_toggle
            if self._shed_toggle:
                return "degrade"
        return None

    # --- degradation and reconfiguration (live only; the processing thread) --------------------
    def _degrade_levels(self) -> list[int]:
        """The levels that change something in this pipeline."""
        levels = [3]
        priorities = {d.priority for d in self.fanout.detectors}
        if len(priorities) > 1:
            levels.append(1)
        if self.cfg.publish.spectrogram and any(isinstance(s, SpectrogramSink) for s in self.sinks):
            levels.append(2)
        return sorted(levels)

    def _set_degrade(self, level: int) -> None:
        previous = self.metrics.degrade_level
        up = level > previous
        self.metrics.count("degrade_steps_up" if up else "degrade_steps_down")
        self.metrics.degrade_level = level
        self._apply_degrade(level)
        emit = log.warning if up else log.info
        emit(
            "degrade level changed",
            level=level,
            previous=previous,
            meaning=DEGRADE_LEVELS[level],
            load=round(self.degrade.load, 3) if self.degrade is not None else None,
            detectors=list(self.fanout.enabled),
        )

    def _apply_degrade(self, level: int) -> None:
        """Pull the levers for ``level`` (each level includes the ones below it)."""
        if level >= 1 and self.fanout.detectors:
            top = max(d.priority for d in self.fanout.detectors)
            self.fanout.set_enabled(d.name for d in self.fanout.detectors if d.priority == top)
        else:
            self.fanout.set_enabled(d.name for d in self.fanout.detectors)
        self._skips_spectrogram = False
        for sink in self.sinks:
            if isinstance(sink, SpectrogramSink) and self.cfg.publish.spectrogram:
                sink.set_spectrogram(level < 2)
                self._skips_spectrogram = level >= 2
        self._shed_toggle = False

    def _apply_pending(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        cfg, fanout = pending
        old, self.fanout, self.cfg = self.fanout, fanout, cfg
        old.close()
        if self.degrade is not None:
            self.degrade.levels = tuple(sorted({0, *self._degrade_levels()}))
            self._apply_degrade(self.metrics.degrade_level)  # the new detector set degrades alike
        self.metrics.count("reloads")
        log.info("detectors reloaded", detectors=list(self.fanout.enabled))

    def _account(self, chunk: Chunk, result: ChunkResult, started: int, done: int) -> None:
        m = self.metrics
        m.settled(chunk.num_samples)
        m.count("chunks_late" if result.late else "chunks_on_time")
        m.count("detections", len(result.detections))
        for name, ms in result.timings_ms.items():
            if name.startswith("detector."):
                m.detector(name.removeprefix("detector."), ms)
            else:
                m.stage(name, ms)
        m.stage("total", (done - started) / 1e6)
        m.stage("end_to_end", (done - chunk.arrived_ns) / 1e6)
        m.processed(chunk.duration_s, (done - started) / 1e9)
        self._tracks_seen += sum(1 for e in result.track_events if e.kind == "start")
        self._last_seq = chunk.seq

    # --- the end and the heartbeat ---------------------------------------------------------------
    def _finish_tracks(self) -> None:
        events: list[TrackEvent] = self.tracker.finish()
        if not events:
            return
        for sink in self.sinks:
            if isinstance(sink, TrackSink):
                sink.publish_track_events(tuple(events), self._last_seq)

    def _maybe_health(self) -> None:
        self._emit_health(force=False)

    def _emit_health(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now < self._next_health:
            return
        self._next_health = now + self.cfg.publish.health_interval_s
        health = self.metrics.health()
        for sink in self.sinks:
            sink.publish_health(health)

    def _close_sinks(self) -> Exception | None:
        """Close every sink even if one fails; the first failure, if any."""
        errors = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                errors.append(exc)
        return errors[0] if errors else None

    def _progress_bar(self) -> Any:
        total = self.source.info.total_samples
        if not self._progress or not sys.stderr.isatty():
            return None
        from tqdm import tqdm

        return tqdm(total=total, unit="S", unit_scale=True, desc="replay", leave=False)
