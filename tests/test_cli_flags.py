"""Flags that do what their help says (issue 11 §2), with real sockets and real files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import msgpack
import zmq
from test_cli import ROOT, assert_clean_error, rfstream


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_endpoint_publishes_what_the_demo_detects(tmp_path):
    endpoint = f"tcp://127.0.0.1:{_port()}"
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)  # before the demo binds: ZeroMQ connects as soon as it does
    out = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rfstream.cli", "demo", "--out", str(out), "--rate", "1e6", "--duration", "1",
         "--endpoint", endpoint],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    messages: dict[str, list[dict]] = {}
    try:
        end = time.monotonic() + 300
        while (proc.poll() is None or sub.poll(500)) and time.monotonic() < end:
            if sub.poll(100):
                topic, payload = sub.recv_multipart()
                messages.setdefault(topic.decode(), []).append(msgpack.unpackb(payload))
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close(0)
        ctx.term()
    assert proc.returncode == 0, stderr
    assert f"publishing detections, tracks and health on {endpoint}" in stdout
    dets = messages.get("detections", [])
    assert [m["seq"] for m in dets] == list(range(5))  # one message per 200 ms chunk, even when empty
    assert messages.get("health") and messages.get("tracks")
    published = sum(len(m["detections"]) for m in dets)
    said = next(line for line in stdout.splitlines() if line.startswith("3/4 "))
    assert said.startswith(f"3/4 {published} detections in 5 chunks"), (said, published)


def test_run_refuses_rate_and_freq_a_sigmf_source_would_ignore(tmp_path):
    from rfstream.sources.synth import synthesize

    meta = synthesize(tmp_path / "cap", sample_rate_hz=1e6, duration_s=0.2, seed=1)
    for flag, value in (("--rate", "2e6"), ("--freq", "100e6")):
        proc = rfstream("run", "--source", "sigmf", "--path", str(meta), flag, value, "--endpoint", "")
        assert_clean_error(proc, flag, "source.kind")
