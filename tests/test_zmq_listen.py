"""``listen()`` and examples/subscriber.py against a real publisher on loopback."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from rfstream.config import PublishConfig
from rfstream.errors import InputError
from rfstream.sinks.listen import listen
from rfstream.sinks.zmq import ZmqPublisher
from rfstream.types import Chunk, ChunkResult, Frame, Track, TrackEvent

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "subscriber.py"


def make_result(seq: int) -> ChunkResult:
    chunk = Chunk(np.zeros(1000, np.complex64), 1e6, 433.92e6, seq * 1000, seq, time.monotonic_ns())
    frame = Frame(np.zeros((16, 16), np.float32), chunk.start_s, 1e-3 / 16, 433.42e6, 1e6 / 16, chunk)
    det = frame.detection(2, 3, 6, 9, score=0.9, label="ook", detector="energy")
    det = det.replace(presence=0.95, alternatives=(("fm", 0.05),), group_id=1)  # as fusion makes them
    tr = Track(seq, "ook", det.f_low_hz, det.f_high_hz, det.t_start_s, det.t_stop_s, 1, 0.9, "tentative")
    return ChunkResult(frame, (det,), (TrackEvent("start", tr, seq),))


@pytest.fixture
def pub():
    p = ZmqPublisher(PublishConfig(endpoint="tcp://127.0.0.1:*"))
    yield p
    p.close()


def run_until(pub: ZmqPublisher, thread: threading.Thread, seconds: float = 10.0) -> None:
    """Publish chunks and health until the listener (thread) is done; the publisher stays on this thread."""
    deadline = time.monotonic() + seconds
    seq = 0
    while thread.is_alive() and time.monotonic() < deadline:
        pub.publish(make_result(seq))
        pub.publish_health(
            {"uptime_s": 1.0, "chunks": {"received": seq + 1, "processed": seq + 1, "late": 0}}
        )
        seq += 1
        time.sleep(0.02)
    thread.join(5)
    assert not thread.is_alive()


def test_listen_receives_and_prints_readable_lines(pub):
    out = io.StringIO()
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(listen(pub.endpoint, count=6, timeout_s=10, out=out)))
    t.start()
    run_until(pub, t)
    assert got == [6]
    lines = out.getvalue().splitlines()
    assert len(lines) == 6
    topics = {line.split()[0] for line in lines}
    assert topics <= {"detections", "tracks", "health"} and "detections" in topics
    det_line = next(line for line in lines if line.startswith("detections"))
    assert "n=1" in det_line and "ook 433." in det_line and "score=0.90" in det_line
    assert "or=fm:0.05" in det_line and "group=1" in det_line  # schema 2's runner-up label and train


def test_listen_json_lines_and_topic_filter(pub):
    out = io.StringIO()
    got: list[int] = []
    t = threading.Thread(
        target=lambda: got.append(
            listen(pub.endpoint, ["tracks"], count=3, timeout_s=10, json_lines=True, out=out)
        )
    )
    t.start()
    run_until(pub, t)
    assert got == [3]
    messages = [json.loads(line) for line in out.getvalue().splitlines()]
    assert all(m["topic"] == "tracks" and m["v"] == 2 for m in messages)
    assert any(m["snapshot"] for m in messages) or all(m["events"] for m in messages)


def test_listen_times_out_with_nothing_received(pub):
    start = time.monotonic()
    assert listen(pub.endpoint, timeout_s=0.3, out=io.StringIO()) == 0
    assert time.monotonic() - start < 3


def test_listen_bad_endpoint_is_an_input_error():
    with pytest.raises(InputError, match="cannot listen on 'nonsense'"):
        listen("nonsense", timeout_s=0.1, out=io.StringIO())


def test_example_subscriber_runs_against_a_real_publisher(pub):
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), pub.endpoint, "--count", "4", "--timeout", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    waiter = threading.Thread(target=proc.wait)
    waiter.start()
    run_until(pub, waiter, 20)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "ook at 433." in out or "live tracks" in out or "health:" in out
    if "ook at 433." in out:
        assert "or fm 0.05" in out  # schema 2's alternatives
    assert "Traceback" not in err


def test_listen_skips_malformed_messages():
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.linger = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    out = io.StringIO()
    got: list[int] = []
    t = threading.Thread(
        target=lambda: got.append(listen(f"tcp://127.0.0.1:{port}", [], count=2, timeout_s=10, out=out))
    )
    t.start()
    deadline = time.monotonic() + 10
    while t.is_alive() and time.monotonic() < deadline:
        sock.send_multipart([b"detections", b"\xc1"])  # 0xc1 is never valid msgpack
        sock.send_multipart([b"health", b"\x81\xa1v\x01"])  # {"v": 1}
        time.sleep(0.02)
    t.join(5)
    sock.close()
    ctx.term()
    assert got == [2]  # between two valid messages, at least one malformed one arrived and was skipped
    assert "# skipped a malformed message" in out.getvalue()


def test_silence_is_reported_while_listening_and_as_an_error_at_the_timeout(tmp_path):
    """A wrong endpoint or a stopped publisher must not look like a quiet band."""
    ctx = zmq.Context()
    holder = ctx.socket(zmq.PUB)
    port = holder.bind_to_random_port("tcp://127.0.0.1")  # a publisher that never sends
    notices = io.StringIO()
    try:
        got = listen(
            f"tcp://127.0.0.1:{port}", timeout_s=0.9, out=io.StringIO(), notices=notices, silence_notice_s=0.3
        )
    finally:
        holder.close(0)
        ctx.term()
    assert got == 0
    lines = notices.getvalue().splitlines()
    assert lines and all(f"no messages from tcp://127.0.0.1:{port} in" in line for line in lines)
    proc = subprocess.run(
        [sys.executable, "-m", "rfstream.cli", "listen", f"tcp://127.0.0.1:{port}", "--timeout", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        f"rfstream: error: no messages from tcp://127.0.0.1:{port} in 0.5 s "
        "(is rfstream running and publishing there? see publish.endpoint)"
    )
