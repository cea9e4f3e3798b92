"""The live path of the Pipeline: degradation and recovery with a really slow detector, reloads, accounting.

The source is the real synthesiser paced in real time (a live stand-in); the
slow detector really sleeps, so the processing thread really overruns.
"""

from __future__ import annotations

import threading
import time

import structlog

from rfstream.config import Config, replace
from rfstream.detect.energy import EnergyDetector
from rfstream.pipeline import Pipeline
from rfstream.sources.synth import SynthSource
from rfstream.types import Detection, Frame

RATE = 1e6
CHUNK_MS = 100.0


class SleepyDetector:
    """A detector whose cost is set from outside: ``delay_s`` of sleep per frame."""

    kind = "test"

    def __init__(self, name: str = "sleepy", priority: int = 0, delay_s: float = 0.0) -> None:
        self.name, self.priority, self.delay_s = name, priority, delay_s
        self.frames = 0
        self.closed = False

    def detect(self, frame: Frame) -> list[Detection]:
        self.frames += 1
        time.sleep(self.delay_s)
        return []

    def warmup(self, frame_shape: tuple[int, int]) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _cfg(**runtime) -> Config:
    rt = {"degrade_up_chunks": 3, "degrade_down_chunks": 5, "deadline_ms": 2000.0, "queue_depth": 8}
    rt.update(runtime)
    return replace(
        Config(),
        source={"kind": "synth", "sample_rate_hz": RATE, "chunk_ms": CHUNK_MS, "realtime": True},
        spectrogram={"nfft": 512, "hop": 256, "height": 128, "width": 128},
        publish={"endpoint": ""},
        runtime=rt,
    )


def _energy(cfg: Config, priority: int = 10) -> EnergyDetector:
    det = EnergyDetector.from_config(
        replace(cfg, detectors=[{"name": "energy", "priority": priority}]).detectors[0]
    )
    det.warmup((128, 128))
    return det


def _start(pipeline: Pipeline) -> tuple[threading.Thread, dict]:
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("summary", pipeline.run()), daemon=True)
    thread.start()
    return thread, out


def _wait(cond, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.02)


def _exact(health: dict) -> bool:
    s = health["samples"]
    return s["received"] == s["processed"] + s["shed"] + s["in_flight"]


def test_slow_low_priority_detector_is_dropped_then_restored_when_load_falls():
    cfg = _cfg()
    sleepy = SleepyDetector(delay_s=0.15)  # 150 ms per 100 ms chunk: overloaded
    source = SynthSource(RATE, chunk_ms=CHUNK_MS, realtime=True)
    pipeline = Pipeline(cfg, source, [_energy(cfg), sleepy], lossless=False)
    with structlog.testing.capture_logs() as logs:
        thread, out = _start(pipeline)
        try:
            _wait(lambda: pipeline.metrics.degrade_level == 1, 5.0)
            assert pipeline.fanout.enabled == ("energy",)  # the low-priority one is off
            assert _exact(pipeline.metrics.health())
            # (it may come back briefly while the backlog drains fast, and be dropped again:
            # the policy then waits longer before the next try)
            sleepy.delay_s = 0.0  # the load falls for good
            _wait(lambda: pipeline.metrics.degrade_level == 0, 10.0)
            assert set(pipeline.fanout.enabled) == {"energy", "sleepy"}
            frames = sleepy.frames
            steps = pipeline.metrics.counters["degrade_steps_up"]
            time.sleep(1.0)
            assert sleepy.frames >= frames + 5  # it runs again, every chunk
            assert pipeline.metrics.counters["degrade_steps_up"] == steps  # and it stays restored
        finally:
            pipeline.stop()
            thread.join(5.0)
    health = out["summary"].health
    assert health["degrade"]["steps_up"] >= 1 and health["degrade"]["steps_down"] >= 1
    assert health["degrade_level"] == 0
    assert _exact(health) and health["samples"]["in_flight"] == 0
    changes = [e for e in logs if e["event"] == "degrade level changed"]
    # logged once per change, never per chunk
    assert len(changes) == health["degrade"]["steps_up"] + health["degrade"]["steps_down"]
    assert changes[0]["degrade_level"] == 1 and changes[0]["detectors"] == ["energy"]


def test_with_one_priority_the_policy_sheds_every_other_chunk_and_accounting_stays_exact():
    cfg = _cfg()
    sleepy = SleepyDetector(delay_s=0.14)
    source = SynthSource(RATE, chunk_ms=CHUNK_MS, realtime=True)
    pipeline = Pipeline(cfg, source, [sleepy], lossless=False)
    thread, out = _start(pipeline)
    try:
        _wait(lambda: pipeline.metrics.degrade_level == 3, 5.0)  # no level 1 or 2 to try here
        before = pipeline.metrics.health()["chunks"]
        time.sleep(1.0)
        after = pipeline.metrics.health()["chunks"]
    finally:
        pipeline.stop()
        thread.join(5.0)
    shed = after["shed_by_reason"]["degrade"] - before["shed_by_reason"]["degrade"]
    processed = after["processed"] - before["processed"]
    assert shed >= 3 and abs(shed - processed) <= 2  # every other chunk
    health = out["summary"].health
    assert _exact(health) and health["samples"]["in_flight"] == 0
    assert health["samples"]["shed"] == health["chunks"]["shed"] * int(RATE * CHUNK_MS / 1e3)


def test_reconfigure_swaps_detectors_at_a_chunk_boundary_without_dropping_the_stream():
    cfg = _cfg()
    first = SleepyDetector("first")
    source = SynthSource(RATE, chunk_ms=CHUNK_MS, realtime=True)
    pipeline = Pipeline(cfg, source, [first], lossless=False)
    thread, out = _start(pipeline)
    try:
        _wait(lambda: first.frames >= 2, 5.0)
        second = SleepyDetector("second")
        new_cfg = replace(cfg, merge={"iou_threshold": 0.3})
        pipeline.reconfigure(new_cfg, [second])
        _wait(lambda: second.frames >= 2, 3.0)
        assert first.closed and pipeline.fanout.enabled == ("second",)
        assert pipeline.cfg.merge.iou_threshold == 0.3
    finally:
        pipeline.stop()
        thread.join(5.0)
    health = out["summary"].health
    assert health["reloads"]["applied"] == 1
    assert health["chunks"]["shed"] == 0 and health["samples"]["lost_overflow"] == 0
    assert health["chunks"]["processed"] == first.frames + second.frames  # no chunk skipped at the swap


def test_stop_sheds_a_backlog_after_the_shutdown_budget_and_ends_exact():
    cfg = _cfg(degrade=False)
    slow = SleepyDetector(delay_s=0.3)  # a backlog builds: 3 chunks arrive per chunk processed
    source = SynthSource(RATE, chunk_ms=CHUNK_MS, realtime=True)
    pipeline = Pipeline(cfg, source, [slow], lossless=False)
    pipeline.shutdown_budget_s = 0.2
    thread, out = _start(pipeline)
    _wait(lambda: pipeline.metrics.health()["queue_depths"]["input"] >= 4, 5.0)
    t0 = time.monotonic()
    pipeline.stop()
    thread.join(5.0)
    assert time.monotonic() - t0 < 1.5  # one chunk in flight + the budget, not the whole backlog
    health = out["summary"].health
    assert health["chunks"]["shed_by_reason"]["shutdown"] >= 1
    assert _exact(health) and health["samples"]["in_flight"] == 0
