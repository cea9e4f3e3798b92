"""Shared pieces of the daemon tests: the SoapySDR test driver, a controllable slow detector, a
stand-in for systemd's NOTIFY_SOCKET, and ``python tests/daemon_helpers.py ARGS`` — the real
``rfstream`` CLI with one extra detector whose per-frame sleep is read from the file named by
``RFS_TEST_SLEEP_FILE`` (so a test can stall processing of a running daemon at will).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DRIVER_DIR = Path(__file__).resolve().parent / "soapy_driver"


def build_driver() -> str | None:
    """Build the rfstreamtest module; its path, or None where it cannot be built or loaded."""
    try:
        from rfstream.sources.soapy import import_soapysdr

        soapy = import_soapysdr()
    except Exception:
        return None
    if shutil.which(os.environ.get("CXX", "g++")) is None or shutil.which("pkg-config") is None:
        return None
    if subprocess.run(["pkg-config", "--exists", "SoapySDR"], check=False).returncode != 0:
        return None
    built = subprocess.run(["sh", str(DRIVER_DIR / "build.sh")], capture_output=True, text=True, check=False)
    if built.returncode != 0:
        return None
    module = built.stdout.strip().splitlines()[-1]
    os.environ["SOAPY_SDR_PLUGIN_PATH"] = str(Path(module).parent)
    soapy.loadModule(module)  # "already loaded" is fine
    return module


class SleepyDetector:
    """Sleeps for the number of seconds in a control file (or ``delay_s``) on every frame."""

    kind = "test"

    def __init__(self, name: str = "sleepy", priority: int = 0, control: str | None = None) -> None:
        self.name, self.priority, self.control = name, priority, control
        self.delay_s = 0.0
        self.frames = 0

    def detect(self, frame):
        self.frames += 1
        delay = self.delay_s
        if self.control:
            try:
                delay = float(Path(self.control).read_text().strip() or 0)
            except (OSError, ValueError):
                delay = 0.0
        if delay > 0:
            time.sleep(delay)
        return []

    def warmup(self, frame_shape) -> None:
        pass

    def close(self) -> None:
        pass


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="rfs-")
        self.address = str(Path(self._dir, "notify"))
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.address)
        self.sock.settimeout(0.05)
        self.received: list[tuple[float, dict[str, str]]] = []

    def poll(self, wait_s: float = 0.0) -> list[dict[str, str]]:
        out = []
        end = time.monotonic() + wait_s
        while True:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                if time.monotonic() >= end:
                    return out
                continue
            msg = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            self.received.append((time.monotonic(), msg))
            out.append(msg)

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def _main() -> int:
    import rfstream.cli as cli
    import rfstream.runner as runner

    control = os.environ.get("RFS_TEST_SLEEP_FILE")
    original = runner.build_detectors

    def with_sleepy(cfg, config_dir=None):
        return [*original(cfg, config_dir), SleepyDetector("sleepy", priority=100, control=control)]

    runner.build_detectors = with_sleepy
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(_main())
