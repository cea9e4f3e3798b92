"""The pipeline: source -> spectrogram -> detectors -> merge -> tracker -> sinks.

    read        chunk      = next(source)               (its own thread; a full queue blocks or sheds)
    spectrogram frame      = spectrogram.process(chunk)
    detect      found      = fanout.run(frame)            every detector at once
    merge_track detections = merge(found)                 one box per signal (fusion) + publish gate
                events     = tracker.update(frame, detections)
    publish     for sink in sinks: sink.publish(result)   never blocks (the thread that called run())

**Pipelined** (``runtime.pipelined``, the default): each stage runs in its own
worker behind a bounded queue (``runtime.stage_queue_depth``), so chunk N+1's
spectrogram overlaps chunk N's detectors. One thread per stage keeps chunk
order. **Serial** (``runtime.pipelined = false``, for debugging and as the
bench's peer): the stages run one after another in one thread. The threads
inside the stages (spectrogram workers, fan-out, ONNX Runtime) come from one
thread budget (:mod:`rfstream.runtime.budget`).

Two ways to feed it, chosen once at construction:

* **lossless** (``rfstream replay`` without ``--realtime``, ``eval``, ``demo``):
  the source is read as fast as processing goes and nothing is ever shed —
  the reader blocks on a full queue, so back-pressure reaches the source. A
  chunk "arrives" when the first stage takes it (a file has no clock of its own).
* **live** (an SDR, or a replay paced with ``--realtime``): the reader never
  waits; a full queue sheds the chunk. Each chunk must be done
  ``runtime.deadline_ms`` after it arrived; one that can no longer make it is
  shed before any work is spent on it.

Every chunk is counted as on time, late or shed, and every sample as
processed, shed, or lost before it arrived (overflow, file gap):
``samples received = processed + shed (+ in flight)`` and ``lost_overflow``
counts the gaps.

When overruns persist in a live run, :class:`DegradePolicy` steps through
degrade levels — 1: run only the highest-priority detectors, 2: skip the
spectrogram publication, 3: shed every other chunk — and back down with
hysteresis when load falls; each change is counted and logged once. Its load
is the chunk's cost over the chunk period: pipelined, the slowest stage's time
(what limits throughput); serially, the whole chunk's.

``stop()`` ends a run within about ``shutdown_budget_s`` plus one stage's work:
chunks already inside are processed until then and shed after.
"""

from __future__ import annotations

import dataclasses
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from rfstream.config import Config
from rfstream.detect.base import Detector
from rfstream.detect.fanout import FanOut
from rfstream.detect.fuse import gate_unknown, merge_stage, publishes_unknown
from rfstream.dsp.backend import Backend, numpy_backend
from rfstream.dsp.factory import make_spectrogrammer
from rfstream.runtime.budget import ThreadBudget, plan_for
from rfstream.runtime.metrics import Metrics
from rfstream.runtime.policy import DEGRADE_LEVELS, DeadlinePolicy, DegradePolicy
from rfstream.sinks.base import Sink, SpectrogramSink, TrackSink
from rfstream.sources.base import Source
from rfstream.track import Tracker
from rfstream.types import Chunk, ChunkResult, Detection, Frame, TrackEvent

log = structlog.get_logger(__name__)

_END = object()  # end-of-stream marker, passed down from stage to stage
STAGES = ("spectrogram", "detect", "merge_track", "publish")


@dataclass(frozen=True, slots=True)
class RunSummary:
    health: dict[str, Any]
    tracks_seen: int
    interrupted: bool


@dataclass(slots=True)
class _Work:
    """One chunk on its way through the stages (each stage fills in its part)."""

    chunk: Chunk
    started_ns: int = 0
    cfg: Config | None = None  # the merge settings in force when its detectors ran
    frame: Frame | None = None
    found: dict[str, list[Detection]] = field(default_factory=dict)
    detections: list[Detection] = field(default_factory=list)
    events: list[TrackEvent] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    busy_ms: dict[str, float] = field(default_factory=dict)  # wall time per stage (incl. publish)


class _StageTimer:
    """Times one stage on one chunk: wall ms into the chunk's timings, thread CPU into the metrics."""

    __slots__ = ("cpu0", "last_ms", "metrics", "name", "t0", "work")

    def __init__(self, metrics: Metrics, work: _Work, name: str, last_ms: dict[str, float]) -> None:
        self.metrics, self.work, self.name, self.last_ms = metrics, work, name, last_ms

    def __enter__(self) -> None:
        self.t0, self.cpu0 = time.perf_counter(), time.thread_time()

    def __exit__(self, *exc: object) -> None:
        ms = (time.perf_counter() - self.t0) * 1e3
        self.work.timings_ms[self.name] = ms
        self.work.busy_ms[self.name] = ms
        self.last_ms[self.name] = ms
        self.metrics.cpu(self.name, time.thread_time() - self.cpu0)


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
        threads: ThreadBudget | None = None,
    ):
        self.cfg = cfg
        self.source = source
        self.sinks = list(sinks)
        self.on_result = on_result
        self.lossless = (
            (not cfg.source.realtime and cfg.source.kind != "soapy") if lossless is None else lossless
        )
        self.metrics = metrics or Metrics()
        backend = backend or numpy_backend()
        self.threads = threads or plan_for(cfg, gpu=backend.is_gpu)
        self.pipelined = self.threads.pipelined
        self.spectrogram = make_spectrogrammer(
            cfg.spectrogram, backend, workers=self.threads.spectrogram_workers
        )
        self.fanout = FanOut(detectors, workers=self.threads.fanout_pool)
        self.tracker = Tracker(cfg.tracker)
        self.policy = DeadlinePolicy(cfg.runtime.deadline_ms, may_shed=not self.lossless)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=cfg.runtime.queue_depth)
        self.metrics.queue_depths["input"] = self._queue.qsize
        # between pipelined stages: the inbox of each stage after the spectrogram
        depth = cfg.runtime.stage_queue_depth
        self._inbox: dict[str, queue.Queue[Any]] = {name: queue.Queue(maxsize=depth) for name in STAGES[1:]}
        if self.pipelined:
            for name, q in self._inbox.items():
                self.metrics.queue_depths[name] = q.qsize
        self._stop = threading.Event()
        self._halt = threading.Event()  # a stage failed or the run is being torn down: discard work
        self._stage_error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._last_ms: dict[str, float] = {}  # each stage's last wall time (may it finish before a stop?)
        self._progress = progress
        self._tracks_seen = 0
        self._published_any = False
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
        # The degrade state and the fan-out it acts on change from two stages (publish observes and
        # steps the level; detect swaps the fan-out on a reload): one lock for both.
        self._degrade_lock = threading.RLock()
        self._stop_at: float | None = None  # monotonic time after which queued chunks are shed
        self.shutdown_budget_s = 1.0  # how long chunks already queued may still be processed at stop

    # --- the flow, in one place -----------------------------------------------------------
    def process(self, chunk: Chunk) -> ChunkResult:
        """One chunk through every stage but publishing, in this thread; what the sinks would receive."""
        work = _Work(chunk, started_ns=time.monotonic_ns())
        self._spectrogram(work)
        self._detect(work)
        self._merge_track(work)
        return self._result(work)

    # Each stage fills in its part of the chunk's work and hands it on.
    def _spectrogram(self, w: _Work) -> _Work:
        with self._timed(w, "spectrogram"):
            w.frame = self.spectrogram.process(w.chunk)
        return w

    def _detect(self, w: _Work) -> _Work:
        w.cfg = self.cfg
        with self._timed(w, "detect"):
            w.found, detector_ms = self.fanout.run(w.frame)
        w.timings_ms.update({f"detector.{name}": ms for name, ms in detector_ms.items()})
        return w

    def _merge_track(self, w: _Work) -> _Work:
        cfg = w.cfg or self.cfg
        with self._timed(w, "merge_track"):
            w.detections = merge_stage(cfg.merge).process([d for dets in w.found.values() for d in dets])
            w.events = self.tracker.update(w.frame, w.detections)
            if cfg.tracker.label_by_track:
                w.detections = self.tracker.relabel(w.detections)
            kinds = {d.name: d.kind for d in self.fanout.detectors}
            if not publishes_unknown(cfg.merge, (kinds.get(n, "") for n in w.found)):
                # unconfirmed blobs: still unknown after the tracks named what they could
                w.detections = gate_unknown(w.detections, cfg.merge.keep_low_confidence)
        return w

    def _result(self, w: _Work, *, late: bool = False) -> ChunkResult:
        timings = {n: w.timings_ms[n] for n in ("spectrogram", "detect", "merge_track") if n in w.timings_ms}
        timings.update({n: ms for n, ms in w.timings_ms.items() if n.startswith("detector.")})
        return ChunkResult(
            frame=w.frame,
            detections=tuple(w.detections),
            track_events=tuple(w.events),
            timings_ms=timings,
            late=late,
        )

    def _timed(self, w: _Work, name: str) -> _StageTimer:
        return _StageTimer(self.metrics, w, name, self._last_ms)

    # --- running ----------------------------------------------------------------------------
    def run(self) -> RunSummary:
        """Run until the source ends or ``stop()``; sinks are flushed and closed."""
        bar = self._progress_bar()
        close_error: Exception | None = None
        try:
            if self.pipelined:
                self._run_pipelined(bar)
            else:
                self._run_serial(bar)
        finally:
            if bar is not None:
                bar.close()
            self._halt.set()
            self.source.close()
            for thread in self._threads:
                thread.join(timeout=2.0)
            stuck = [t.name for t in self._threads if t.is_alive()]
            if stuck:  # a stage inside a long call (a slow detector): give it a last chance
                for thread in self._threads:
                    thread.join(timeout=10.0)
                stuck = [t.name for t in self._threads if t.is_alive()]
            if stuck:
                # Closing what a running stage still uses would crash it mid-call; the process is
                # ending anyway, so leave those to it, and say so.
                log.error(
                    "stages still running at the end of the run; not closing what they use", stages=stuck
                )
            self._finish_tracks()
            self._emit_health(force=True)
            close_error = self._close_sinks()
            if not stuck:
                self.fanout.close()
                self.spectrogram.close()  # its worker threads
            with self._pending_lock:
                pending, self._pending = self._pending, None
            if pending is not None:
                pending[1].close()
        if self._source_error is not None:
            raise self._source_error
        if self._stage_error is not None:
            raise self._stage_error
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

    def _start(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=f"rfstream-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run_serial(self, bar: Any) -> None:
        if not self.lossless:
            self._start("read", self._read)
        for chunk in self._chunks():
            self._handle(chunk)
            if bar is not None:
                bar.update(chunk.num_samples)
            self._maybe_health()

    def _run_pipelined(self, bar: Any) -> None:
        """Reader and three stage threads; publishing runs here, in the caller's thread."""
        self._start("read", self._read)
        steps = {"spectrogram": self._enter, "detect": self._detect_next, "merge_track": self._merge_track}
        inboxes = [self._queue, *self._inbox.values()]  # stage k reads inboxes[k], writes inboxes[k + 1]
        for k, (name, step) in enumerate(steps.items()):
            self._start(name, self._stage_loop, name, inboxes[k], inboxes[k + 1], step)
        inbox = self._inbox["publish"]
        try:
            while True:
                try:
                    work = inbox.get(timeout=0.25)
                except queue.Empty:
                    self._maybe_health()
                    continue
                if work is _END:
                    return
                if self._discarding("publish"):
                    self._drop(work)
                    continue
                self._publish(work)
                if bar is not None:
                    bar.update(work.chunk.num_samples)
                self._maybe_health()
        except BaseException:
            self._halt.set()  # the stages discard what is left; the error leaves after they end
            self.source.close()
            self._drain(inbox)
            raise

    def _stage_loop(
        self, name: str, inbox: queue.Queue[Any], outbox: queue.Queue[Any], step: Callable[[Any], Any]
    ) -> None:
        """One pipelined stage: take, work, hand on; always hands the end marker on."""
        try:
            while True:
                item = inbox.get()
                if item is _END:
                    return
                if self._discarding(name):
                    self._drop(item)
                    continue
                try:
                    work = step(item)
                except Exception as exc:  # a stage's bug or a fatal error: the run ends with it
                    self._fail(exc)
                    self._drop(item)
                    continue
                if work is not None:
                    outbox.put(work)
        finally:
            outbox.put(_END)

    def _enter(self, chunk: Chunk) -> _Work | None:
        """The spectrogram stage: the shed decision, then the spectrogram."""
        if self.lossless:  # a replay's chunk arrives when the pipeline takes it
            chunk = dataclasses.replace(chunk, arrived_ns=time.monotonic_ns())
        work = self._admit(chunk)
        return None if work is None else self._spectrogram(work)

    def _detect_next(self, w: _Work) -> _Work:
        self._apply_pending()  # a reload swaps the fan-out here, between two chunks
        return self._detect(w)

    def _discarding(self, stage: str) -> bool:
        """Drop instead of work: the run failed, or it stops and this stage would not finish in time."""
        if self._halt.is_set():
            return True
        if self._stop_at is None:
            return False
        return time.monotonic() + self._last_ms.get(stage, 0.0) / 1e3 > self._stop_at

    def _drop(self, item: _Work | Chunk) -> None:
        """A chunk inside the pipeline when it stops or fails: shed, so the accounting stays exact."""
        self._shed(item.chunk if isinstance(item, _Work) else item, reason="shutdown")
        if self.heartbeat is not None:
            self.heartbeat()

    def _drain(self, inbox: queue.Queue[Any], timeout_s: float = 3.0) -> None:
        """Discard until the end marker (the stages upstream are discarding too)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            try:
                item = inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _END:
                return
            self._drop(item)

    def _fail(self, exc: BaseException) -> None:
        if self._stage_error is None:
            self._stage_error = exc
        self._halt.set()
        self._stop.set()
        self.source.close()

    def stop(self) -> None:
        """Ask the run to end: the source stops, chunks in flight finish, sinks flush. Thread-safe.

        The chunk in each stage finishes; chunks still queued are processed for up to
        ``shutdown_budget_s`` and shed after that, so a stop never waits on a backlog.
        """
        if self._stop_at is None:
            self._stop_at = time.monotonic() + self.shutdown_budget_s
        self._stop.set()
        self.source.close()

    def reconfigure(self, cfg: Config, detectors: Sequence[Detector]) -> None:
        """Swap in new detectors and merge settings at the next chunk boundary (a SIGHUP reload).

        Thread-safe; ``detectors`` should be warmed up already. The old detectors are
        closed by the thread that runs them once it no longer uses them.
        """
        fanout = FanOut(detectors, workers=self.threads.fanout_pool)
        with self._pending_lock:
            previous, self._pending = self._pending, (cfg, fanout)
        if previous is not None:  # two reloads before a chunk boundary: the newer wins
            previous[1].close()

    # --- feeding ------------------------------------------------------------------------------
    def _chunks(self) -> Iterator[Chunk]:
        """Serial mode: the chunks to process, read here (lossless) or from the reader's queue."""
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
        """The reader: lossless, it waits for room (back-pressure); live, a full queue sheds the chunk."""
        try:
            for chunk in self.source:
                self._count_arrival(chunk)
                if self.lossless:
                    self._put_waiting(chunk)
                else:
                    try:
                        self._queue.put_nowait(chunk)
                    except queue.Full:
                        self._shed(chunk, reason="queue")
                if self._stop.is_set():
                    break
        except Exception as exc:  # a source failing mid-stream ends the run with its message
            if not self.lossless:
                log.error("source failed", error=str(exc))
            self._source_error = exc
        finally:
            while True:
                try:
                    self._queue.put(_END, timeout=0.5)
                    break
                except queue.Full:
                    if self._stop.is_set() and not self.pipelined:
                        break  # the serial loop no longer reads the queue

    def _put_waiting(self, chunk: Chunk) -> None:
        while True:
            try:
                self._queue.put(chunk, timeout=0.1)
                return
            except queue.Full:
                if self._halt.is_set() or (self._stop.is_set() and not self.pipelined):
                    self._shed(chunk, reason="shutdown")
                    return

    def _count_arrival(self, chunk: Chunk) -> None:
        m = self.metrics
        m.arrived(chunk.num_samples, chunk.gap_before_samples)
        if chunk.nonfinite_samples:
            m.count("nonfinite_samples", chunk.nonfinite_samples)

    def _shed(self, chunk: Chunk, *, reason: str) -> None:
        self.metrics.settled(chunk.num_samples, shed_reason=reason)
        log.debug("chunk shed", seq=chunk.seq, reason=reason)

    # --- one chunk ----------------------------------------------------------------------------
    def _admit(self, chunk: Chunk) -> _Work | None:
        """The chunk's work, or None when it is shed before any work is spent on it."""
        started = time.monotonic_ns()
        reason = self._shed_reason(chunk, started)
        if reason is None:
            return _Work(chunk, started_ns=started)
        self._shed(chunk, reason=reason)
        if self.heartbeat is not None:
            self.heartbeat()
        return None

    def _handle(self, chunk: Chunk) -> None:
        """Serial mode: one chunk through every stage in this thread."""
        if not self.lossless:
            self._apply_pending()
        work = self._admit(chunk)
        if work is None:
            return
        self._spectrogram(work)
        self._detect(work)
        self._merge_track(work)
        self._publish(work)

    def _publish(self, w: _Work) -> None:
        """The last stage: grade the deadline, count, hand to the sinks, feed the degrade policy."""
        chunk = w.chunk
        done = time.monotonic_ns()
        late = self.policy.finished(chunk, w.started_ns, done)
        result = self._result(w, late=late)
        self._account(chunk, result, w, done)
        with self._timed(w, "publish"):
            for sink in self.sinks:
                sink.publish(result)
            if self.on_result is not None:
                self.on_result(result)
        published = time.monotonic_ns()
        if not self._published_any:  # bench's whole-process figure reads this line: time to first chunk
            self._published_any = True
            log.debug("first chunk published", seq=chunk.seq)
        m = self.metrics
        m.stage("publish", w.busy_ms["publish"])
        m.stage("arrival_to_publish", (published - chunk.arrived_ns) / 1e6)
        # pipelined, the slowest stage limits throughput; serially, the whole chunk does
        busy_s = (max(w.busy_ms.values()) / 1e3) if self.pipelined else (published - w.started_ns) / 1e9
        m.processed(chunk.duration_s, busy_s)
        if m.degrade_level >= 2 and self._skips_spectrogram:
            m.count("spectrogram_skipped")
        if self.degrade is not None:
            # the cost includes publishing: skipping the spectrogram (level 2) must show in it
            with self._degrade_lock:
                level = self.degrade.observe(busy_s, chunk.duration_s, late=late)
                if level is not None:
                    self._set_degrade(level)
        if self.heartbeat is not None:
            self.heartbeat()

    def _shed_reason(self, chunk: Chunk, now_ns: int) -> str | None:
        if (
            self._stop_at is not None
            and time.monotonic() > self._stop_at
            and (self.pipelined or not self.lossless)
        ):
            return "shutdown"
        if self.lossless:
            return None
        if self.policy.should_shed(chunk, now_ns):
            return "deadline"
        if self.degrade is not None and self.degrade.level >= 3:
            self._shed_toggle = not self._shed_toggle
            if self._shed_toggle:
                return "degrade"
        return None

    # --- degradation and reconfiguration (live only) -----------------------------------------------
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
            degrade_level=level,  # not "level": the JSON log's own level key would overwrite it
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
        with self._degrade_lock:
            old, self.fanout, self.cfg = self.fanout, fanout, cfg
            level_before = self.metrics.degrade_level
            if self.degrade is not None:  # the new detector set degrades alike; a level it lacks steps down
                level = self.degrade.set_levels(self._degrade_levels())
                if level != level_before:
                    self._set_degrade(level)
                else:
                    self._apply_degrade(level)
        old.close()
        self.metrics.count("reloads")
        log.info("detectors reloaded", detectors=list(self.fanout.enabled), degrade_level=level_before)

    def _account(self, chunk: Chunk, result: ChunkResult, w: _Work, done: int) -> None:
        m = self.metrics
        m.settled(chunk.num_samples)
        m.count("chunks_late" if result.late else "chunks_on_time")
        m.count("detections", len(result.detections))
        for name, ms in result.timings_ms.items():
            if name.startswith("detector."):
                m.detector(name.removeprefix("detector."), ms)
            else:
                m.stage(name, ms)
        m.stage("total", (done - w.started_ns) / 1e6)
        m.stage("end_to_end", (done - chunk.arrived_ns) / 1e6)
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
