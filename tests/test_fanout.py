"""FanOut: detectors run at the same time, a failing one is isolated, load shedding by priority."""

from __future__ import annotations

import threading
import time

import pytest
from structlog.testing import capture_logs
from test_onnx_tiny import frame_detector, make_frame, noise_image

from rfstream.detect.energy import EnergyDetector
from rfstream.detect.fanout import FanOut
from rfstream.detect.ort import OnnxFrameDetector
from rfstream.errors import ConfigError


class Recorded:
    """Wraps a real detector and records when each detect() ran (monotonic start, end, thread)."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.kind, self.priority = inner.name, inner.kind, inner.priority
        self.spans: list[tuple[float, float, int]] = []

    def detect(self, frame):
        start = time.perf_counter()
        try:
            return self.inner.detect(frame)
        finally:
            self.spans.append((start, time.perf_counter(), threading.get_ident()))

    def warmup(self, shape):
        self.inner.warmup(shape)

    def close(self):
        self.inner.close()


class Failing:
    kind, priority = "test", 0

    def __init__(self, name="bad"):
        self.name, self.fail = name, True

    def detect(self, frame):
        if self.fail:
            raise RuntimeError("model exploded")
        return []

    def warmup(self, shape):
        pass

    def close(self):
        pass


def heavy_onnx(tmp_path, name):
    """A real ORT model doing ~tens of ms of convolutions on a 256x256 frame."""
    path = frame_detector(tmp_path / f"{name}.onnx", size=(256, 256), stride=8, sleep_like_work=12)
    return Recorded(OnnxFrameDetector(name, path, providers="cpu", threads=1))


class Rendezvous:
    """A detector that waits for its partner inside detect(): only concurrent calls get through."""

    kind = "test"
    priority = 0

    def __init__(self, name: str, barrier: threading.Barrier):
        self.name, self.barrier = name, barrier

    def detect(self, frame):
        self.barrier.wait(timeout=10)  # BrokenBarrierError if the partner never runs alongside
        return []

    def warmup(self, frame_shape):
        pass

    def close(self):
        pass


def test_detectors_run_at_the_same_time():
    barrier = threading.Barrier(2)
    frame = make_frame(noise_image((64, 64)))
    with FanOut([Rendezvous("a", barrier), Rendezvous("b", barrier)]) as fan:
        for _ in range(3):
            results, _ = fan.run(frame)
            assert results == {"a": [], "b": []}
    assert fan.errors == {"a": 0, "b": 0}


def test_onnx_detectors_run_on_separate_threads(tmp_path):
    a, b = heavy_onnx(tmp_path, "a"), heavy_onnx(tmp_path, "b")
    frame = make_frame(noise_image((256, 256)))
    with FanOut([a, b]) as fan:
        fan.warmup((256, 256))
        for _ in range(3):
            results, timings = fan.run(frame)
    assert set(results) == {"a", "b"} and set(timings) == {"a", "b"}
    for (_, _, ta), (_, _, tb) in zip(a.spans, b.spans, strict=True):
        assert ta != tb  # two threads; ONNX Runtime releases the GIL, so they overlap in time


def test_failing_detector_is_isolated_counted_and_logged_once_per_change(tmp_path):
    bad = Failing()
    energy = EnergyDetector("energy")
    onnx = OnnxFrameDetector("fd", frame_detector(tmp_path / "fd.onnx"), providers="cpu")
    image = noise_image()
    image[8:24, 16:32] = 0.9
    frame = make_frame(image)
    with FanOut([bad, energy, onnx]) as fan, capture_logs() as logs:
        for _ in range(3):
            results, timings = fan.run(frame)
            assert results["bad"] == [] and len(results["fd"]) == 1 and len(results["energy"]) == 1
            assert timings["bad"] >= 0
        bad.fail = False
        fan.run(frame)
        fan.run(frame)
    assert fan.errors == {"bad": 3, "energy": 0, "fd": 0}
    events = [(e["event"], e.get("detector")) for e in logs]
    assert events == [("detector failed; its result is empty", "bad"), ("detector recovered", "bad")]
    assert "model exploded" in logs[0]["error"]


def test_set_enabled_and_shed_order(tmp_path):
    low = EnergyDetector("low", priority=0)
    high = EnergyDetector("high", priority=5)
    mid = OnnxFrameDetector("mid", frame_detector(tmp_path / "fd.onnx"), priority=2, providers="cpu")
    with FanOut([high, low, mid]) as fan:
        assert fan.shed_order() == ["low", "mid", "high"]
        fan.set_enabled(fan.shed_order()[1:])
        assert fan.enabled == ("high", "mid")
        results, timings = fan.run(make_frame(noise_image()))
        assert set(results) == set(timings) == {"high", "mid"}
        with pytest.raises(ConfigError, match="unknown detector"):
            fan.set_enabled(["nope"])
    with pytest.raises(ConfigError, match="repeated: low"):
        FanOut([low, EnergyDetector("low")])


class SubmitCollect:
    """The GPU protocol (submit enqueues, collect waits) exercised on the CPU."""

    kind, priority = "test", 0

    def __init__(self, name, log):
        self.name, self.log = name, log

    def submit(self, frame):
        self.log.append(("submit", self.name, threading.get_ident()))

    def collect(self):
        self.log.append(("collect", self.name, threading.get_ident()))
        return []

    def detect(self, frame):  # pragma: no cover - the fan-out must use submit/collect
        raise AssertionError("detect() called on a submit/collect detector")

    def warmup(self, shape):
        pass

    def close(self):
        pass


def test_submit_collect_detectors_are_submitted_before_any_cpu_work():
    log: list = []

    class Cpu(Failing):
        def detect(self, frame):
            log.append(("cpu", self.name, threading.get_ident()))
            return []

    with FanOut([Cpu("c1"), SubmitCollect("g1", log), SubmitCollect("g2", log), Cpu("c2")]) as fan:
        fan.run(make_frame(noise_image()))
    kinds = [entry[0] for entry in log]
    assert kinds[:2] == ["submit", "submit"]
    assert kinds.index("collect") > 1 and kinds.count("cpu") == 2
    me = threading.get_ident()
    assert all(t == me for k, _, t in log if k in ("submit", "collect"))
