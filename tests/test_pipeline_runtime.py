"""The pipelined runtime: stages in their own threads behind bounded queues, the same results as serial.

Real spectrogram, real energy detector, real tracker; the fakes are a detector whose cost
varies (to shuffle the stages' timing) and sinks that fail (to test the error paths).
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from rfstream.config import Config, replace
from rfstream.detect.energy import EnergyDetector
from rfstream.pipeline import Pipeline
from rfstream.runtime.budget import plan
from rfstream.sources.synth import SynthSource
from rfstream.types import ChunkResult

RATE = 1e6
CHUNK_MS = 50.0


def _cfg(**runtime) -> Config:
    return replace(
        Config(),
        source={"kind": "synth", "sample_rate_hz": RATE, "chunk_ms": CHUNK_MS},
        spectrogram={"nfft": 512, "hop": 256, "height": 128, "width": 128},
        publish={"endpoint": ""},
        runtime={"queue_depth": 2, "stage_queue_depth": 1, **runtime},
        merge={"unknown": "publish"},  # the test detector labels nothing: publish the energy boxes
    )


class Counted:
    """The first ``n`` chunks of the synthesiser, counting how many were taken."""

    def __init__(self, n: int, seed: int = 3):
        self._inner = SynthSource(RATE, chunk_ms=CHUNK_MS, seed=seed)
        self.info = self._inner.info
        self.n = n
        self.taken = 0

    def __iter__(self):
        for i, chunk in enumerate(self._inner):
            if i >= self.n:
                return
            self.taken += 1
            yield chunk

    def close(self):
        self._inner.close()


class Jittery:
    """A detector that costs a random few milliseconds and finds nothing."""

    kind = "test"
    priority = 0

    def __init__(self, name: str = "jitter", seed: int = 0, max_s: float = 0.01):
        self.name, self._rng, self.max_s = name, random.Random(seed), max_s

    def detect(self, frame):
        time.sleep(self._rng.random() * self.max_s)
        return []

    def warmup(self, frame_shape):
        pass

    def close(self):
        pass


def _energy(cfg: Config) -> EnergyDetector:
    det = EnergyDetector.from_config(replace(cfg, detectors=[{"name": "energy"}]).detectors[0])
    det.warmup((128, 128))
    return det


def _replay(pipelined: bool, n: int = 24, detectors=None, **kw) -> tuple[list[ChunkResult], Pipeline]:
    cfg = _cfg(pipelined=pipelined)
    results: list[ChunkResult] = []
    source = Counted(n)
    dets = detectors if detectors is not None else [_energy(cfg), Jittery()]
    budget = plan(2, detectors=len(dets), pipelined=pipelined)
    pipeline = Pipeline(cfg, source, dets, lossless=True, on_result=results.append, threads=budget, **kw)
    pipeline.run()
    return results, pipeline


def _signature(results: list[ChunkResult]):
    return [
        (
            r.frame.chunk.seq,
            [(d.label, round(d.f_low_hz), round(d.f_high_hz), round(d.t_start_s, 6)) for d in r.detections],
            [(e.kind, e.track.track_id) for e in r.track_events],
        )
        for r in results
    ]


def test_pipelined_gives_what_serial_gives_in_the_same_order():
    serial, _ = _replay(False)
    pipelined, p = _replay(True)
    assert p.pipelined and [r.frame.chunk.seq for r in pipelined] == list(range(24))
    assert _signature(pipelined) == _signature(serial)
    assert any(r.detections for r in pipelined)  # the comparison compared something
    h = p.metrics.health()
    assert h["samples"]["processed"] == h["samples"]["received"] and h["chunks"]["shed"] == 0
    assert h["samples"]["in_flight"] == 0


def test_each_stage_reports_its_cpu_and_the_arrival_to_publish_latency():
    _, p = _replay(True)
    h = p.metrics.health()
    assert set(h["stage_cpu_s"]) == {"spectrogram", "detect", "merge_track", "publish"}
    assert h["stage_cpu_s"]["spectrogram"] > 0 and h["stage_cpu_s"]["detect"] > 0
    lat = h["latency_ms"]["arrival_to_publish"]
    assert 0 < lat["p50"] <= lat["p99"]
    assert set(h["queue_depths"]) == {"input", "detect", "merge_track", "publish"}


def test_back_pressure_reaches_the_source_and_a_replay_sheds_nothing():
    """A slow detector: the reader may run ahead by the queues and the stages, never more."""
    cfg = _cfg()
    ahead: list[int] = []
    source = Counted(16)
    slow = Jittery("slow", max_s=0.0)
    slow.detect = lambda frame: (time.sleep(0.03), [])[1]  # type: ignore[method-assign]

    def seen(result: ChunkResult) -> None:
        ahead.append(source.taken - (result.frame.chunk.seq + 1))

    budget = plan(2, detectors=1)
    pipeline = Pipeline(cfg, source, [slow], lossless=True, on_result=seen, threads=budget)
    h = pipeline.run().health
    # input queue 2 + 2 stage queues of 1 + the spectrogram, detect and merge stages holding one each
    # + the one the reader holds while it waits for room
    assert max(ahead) <= 2 + 2 * 1 + 3 + 1
    assert h["chunks"]["processed"] == 16 and h["chunks"]["shed"] == 0


class Failing:
    """A sink whose publish raises on the ``at``-th chunk."""

    def __init__(self, at: int):
        self.at, self.n, self.closed = at, 0, False

    def publish(self, result):
        self.n += 1
        if self.n == self.at:
            raise OSError("disk gone")

    def publish_health(self, health):
        pass

    def close(self):
        self.closed = True


@pytest.mark.parametrize("pipelined", [True, False])
def test_a_failing_sink_ends_the_run_with_its_error_and_every_sink_is_closed(pipelined):
    sink = Failing(at=3)
    with pytest.raises(OSError, match="disk gone"):
        _replay(pipelined, sinks=[sink])
    assert sink.closed


def test_a_stage_that_fails_ends_the_run_with_its_error_and_exact_accounting():
    cfg = _cfg()
    source = Counted(40)
    earlier = set(threading.enumerate())  # other tests' threads are not this pipeline's to end
    pipeline = Pipeline(cfg, source, [_energy(cfg)], lossless=True, threads=plan(2, detectors=1))
    real = pipeline.tracker.update
    calls = []

    def update(frame, detections):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("tracker bug")
        return real(frame, detections)

    pipeline.tracker.update = update  # type: ignore[method-assign]
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="tracker bug"):
        pipeline.run()
    assert time.monotonic() - t0 < 10
    h = pipeline.metrics.health()
    s = h["samples"]
    assert s["in_flight"] == 0 and s["received"] == s["processed"] + s["shed"]
    assert h["chunks"]["processed"] == 4  # the chunks before the failure were published
    assert source.taken < 40  # the source stopped
    ours = [t for t in threading.enumerate() if t not in earlier]
    assert not [t for t in ours if t.name.startswith("rfstream-") and t.is_alive()]


def test_stop_drains_every_stage_and_ends_with_exact_accounting():
    cfg = _cfg()
    source = SynthSource(RATE, chunk_ms=CHUNK_MS, seed=1)  # endless
    slow = Jittery("slow", max_s=0.05)
    pipeline = Pipeline(cfg, source, [slow], lossless=True, threads=plan(2, detectors=1))
    pipeline.shutdown_budget_s = 0.2
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("s", pipeline.run()))
    thread.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    pipeline.stop()
    thread.join(5.0)
    assert not thread.is_alive() and time.monotonic() - t0 < 2.0
    h = out["s"].health
    s = h["samples"]
    assert s["in_flight"] == 0 and s["received"] == s["processed"] + s["shed"]
    assert out["s"].interrupted and h["chunks"]["processed"] > 0


def test_sigterm_ends_a_fast_replay_within_two_seconds_with_every_sample_accounted(tmp_path):
    """A real process: `rfstream replay --fast --loop` (lossless, endless, every stage busy) stopped by
    SIGTERM drains its stages and says so in its summary."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from rfstream.bench import make_ci16_recording

    meta = make_ci16_recording(tmp_path / "rec", 2e6, 1.0)
    cmd = [sys.executable, "-m", "rfstream", "replay", str(meta), "--fast", "--loop", "--no-publish"]
    cmd += ["--log-format", "json", "--log-level", "debug"]
    cmd += ["--set", "detectors.1.enabled=false", "--set", "detectors.2.enabled=false"]
    cmd += ["--set", "spectrogram.nfft=1024", "--set", "spectrogram.hop=512"]
    log = tmp_path / "log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ})
        try:
            deadline = time.monotonic() + 60
            while "first chunk" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
                if proc.poll() is not None:
                    break
            time.sleep(1.0)  # every stage has work now
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(10)
            took = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert rc == 0 and took < 2.0, (rc, took, text[-2000:])
    assert "Traceback" not in text
    (line,) = [x for x in text.splitlines() if x.startswith("chunks ")]  # the run's one-line summary
    processed = int(line.split("chunks ")[1].split()[0])
    assert processed >= 2 and "samples " in line, line
    shed = [json.loads(x) for x in text.splitlines() if '"chunk shed"' in x]
    assert all(e["reason"] == "shutdown" for e in shed)  # lossless: nothing shed but at the stop
