"""What the web tests share: real `rfstream` processes, free ports, a capture with a known burst."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """An `rfstream` subprocess whose stdout lines are read on a thread (so it never blocks on a pipe)."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RFSTREAM_RUNTIME__LOG_FORMAT": "json"}
        self.args = args
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "rfstream.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, args=(self.popen.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.popen.stderr, self.stderr.append), daemon=True).start()

    @staticmethod
    def _pump(stream, put) -> None:
        for line in stream:
            put(line)

    def wait_line(self, prefix: str, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.popen.poll() is not None:
                    break
                continue
            if line.startswith(prefix):
                return line.strip()
        raise AssertionError(
            f"{' '.join(self.args)}: no line starting {prefix!r} (exit {self.popen.poll()}):\n"
            + "".join(self.stderr[-30:])
        )

    def url(self, verb: str, timeout: float = 90.0) -> str:
        """The base URL a `view` / `serve` process printed (``rfstream view: http://...``)."""
        line = self.wait_line(f"rfstream {verb}: ", timeout)
        url = line.split()[2]
        return url.split("/api/")[0].rstrip("/")

    def stop(self, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return int(self.popen.returncode)


@contextlib.contextmanager
def running(*args: str, cwd: Path | None = None):
    proc = Proc(*args, cwd=cwd)
    try:
        yield proc
    finally:
        proc.stop()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout=120.0
) -> Reply:
    """A real HTTP request (urllib); error statuses come back as replies, not exceptions."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Reply(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, dict(e.headers), e.read())


# --- a capture with a known burst ------------------------------------------------------------------
@dataclass(frozen=True)
class Burst:
    t_start_s: float
    t_stop_s: float
    f_low_hz: float
    f_high_hz: float


def write_known_burst(
    base: Path, *, rate: float = 1e6, duration_s: float = 4.0, fc: float = 433.92e6
) -> tuple[Path, Burst]:
    """Noise, a weak carrier at -300 kHz, and one strong QPSK burst from 1.4 s to 1.8 s at +150 kHz.

    The burst (50 kBd, smooth pulses, 2 ms ramps: about 80 kHz wide, no clicks) is ~20 dB over the
    noise in its band; the capture is cf32_le SigMF with the burst annotated.
    """
    rng = np.random.default_rng(7)
    n = int(duration_s * rate)
    iq = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)).astype(np.complex64)
    t_all = np.arange(n) / rate
    iq += (0.3 * np.exp(-2j * np.pi * 300e3 * t_all)).astype(np.complex64)
    i0, i1 = int(1.4 * rate), int(1.8 * rate)
    sps = 20  # 50 kBd
    symbols = np.exp(1j * np.pi / 2 * rng.integers(0, 4, (i1 - i0) // sps + 4))
    pulse = np.hanning(2 * sps)
    shaped = np.convolve(np.repeat(symbols, sps), pulse / pulse.sum() * sps, mode="same")[: i1 - i0]
    ramp = int(0.002 * rate)
    envelope = np.ones(i1 - i0)
    envelope[:ramp] = envelope[-ramp:][::-1] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
    offset = 150e3
    t = np.arange(i1 - i0) / rate
    iq[i0:i1] += (3.0 * envelope * shaped * np.exp(2j * np.pi * offset * t)).astype(np.complex64)
    base.with_suffix(".sigmf-data").write_bytes(iq.astype("<c8").tobytes())
    burst = Burst(1.4, 1.8, fc + offset - 50e3, fc + offset + 50e3)
    meta = {
        "global": {
            "core:datatype": "cf32_le",
            "core:sample_rate": rate,
            "core:version": "1.0.0",
            "core:description": "noise and one known PSK burst (rfstream web tests)",
        },
        "captures": [{"core:sample_start": 0, "core:frequency": fc, "core:datetime": "2024-01-01T00:00:00Z"}],
        "annotations": [
            {
                "core:sample_start": i0,
                "core:sample_count": i1 - i0,
                "core:freq_lower_edge": burst.f_low_hz,
                "core:freq_upper_edge": burst.f_high_hz,
                "core:label": "psk",
            }
        ],
    }
    path = base.with_suffix(".sigmf-meta")
    path.write_text(json.dumps(meta))
    return path, burst


def overlaps(box: dict, burst: Burst) -> bool:
    return (
        box["t_start_s"] < burst.t_stop_s
        and box["t_stop_s"] > burst.t_start_s
        and box["f_low_hz"] < burst.f_high_hz
        and box["f_high_hz"] > burst.f_low_hz
    )
