"""sd_notify and the chunk-fed watchdog, against a real unix datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from rfstream.runtime import watchdog as wd
from rfstream.runtime.watchdog import Notifier, Watchdog


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET: collects the datagrams a unit would send."""

    def __init__(self, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"rfstream-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            # short path: sun_path holds 108 bytes, pytest's tmp_path can be longer
            self._dir = tempfile.mkdtemp(prefix="rfs-")
            self.address = str(Path(self._dir, "notify"))
            self.sock.bind(self.address)
        self.sock.settimeout(0.05)

    def messages(self, wait_s: float = 0.0) -> list[dict[str, str]]:
        out = []
        end = time.monotonic() + wait_s
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                if time.monotonic() >= end:
                    return out
                continue
            out.append(dict(line.split("=", 1) for line in data.decode().split("\n")))

    def close(self) -> None:
        self.sock.close()
        if not self.address.startswith("@"):
            os.unlink(self.address)
            os.rmdir(self._dir)


@pytest.fixture(params=[False, True], ids=["path", "abstract"])
def systemd(request):
    fake = FakeSystemd(abstract=request.param)
    yield fake
    fake.close()


def test_ready_status_stopping_reach_the_socket(systemd):
    n = Notifier({"NOTIFY_SOCKET": systemd.address})
    assert n.enabled
    assert n.ready(status="starting up")
    assert n.status("12 chunks/s")
    assert n.watchdog()
    assert n.stopping()
    n.close()
    assert systemd.messages() == [
        {"READY": "1", "STATUS": "starting up"},
        {"STATUS": "12 chunks/s"},
        {"WATCHDOG": "1"},
        {"STOPPING": "1"},
    ]


def test_no_notify_socket_is_a_no_op(monkeypatch):
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False
    assert n.watchdog_interval_s() is None
    dog = Watchdog(n, interval_s=0.1).start()
    assert dog._thread is None  # nothing to talk to, no thread
    dog.stop()
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setattr(wd, "_default", None)
    assert wd.notify(READY=1) is False


def test_module_level_notify_uses_the_environment(systemd, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.address)
    monkeypatch.setattr(wd, "_default", None)
    assert wd.notify(READY=1, STATUS="up")
    assert systemd.messages() == [{"READY": "1", "STATUS": "up"}]


def test_unreachable_socket_is_logged_not_raised(tmp_path, caplog):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert n.ready() is False
    assert "sd_notify" in caplog.text


def test_watchdog_interval_honours_watchdog_pid():
    mine = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval_s() == 10.0
    assert Notifier({**mine, "WATCHDOG_PID": "1"}).watchdog_interval_s() is None
    assert Notifier({"WATCHDOG_USEC": "2500000"}).watchdog_interval_s() == 2.5
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval_s() is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval_s() is None


def test_watchdog_feeds_while_chunks_flow_and_stops_after_a_stall(systemd):
    n = Notifier({"NOTIFY_SOCKET": systemd.address})
    rates = iter(range(1000))
    dog = Watchdog(n, interval_s=0.1, stall_after_s=0.4, status=lambda: f"{next(rates)} chunks")
    with dog:
        end = time.monotonic() + 0.5
        while time.monotonic() < end:  # a pipeline completing a chunk every 20 ms
            dog.chunk_done()
            time.sleep(0.02)
        fed = systemd.messages()
        time.sleep(0.8)  # the pipeline stalls
        stalled = systemd.messages()
    assert len(fed) >= 4  # every 50 ms for 0.5 s, give or take a loaded machine
    assert all(m.get("WATCHDOG") == "1" and m["STATUS"].endswith(" chunks") for m in fed)
    assert len({m["STATUS"] for m in fed}) == len(fed)  # the status is live, not a constant
    assert stalled, "STATUS should keep coming while stalled"
    tail = stalled[-4:]
    assert all("WATCHDOG" not in m and m["STATUS"].startswith("stalled") for m in tail)
    assert dog.stalled


def test_watchdog_resumes_when_chunks_flow_again(systemd):
    n = Notifier({"NOTIFY_SOCKET": systemd.address})
    dog = Watchdog(n, interval_s=10, stall_after_s=0.1)  # driven by hand: tick() is one round
    dog.chunk_done()
    dog.tick()
    time.sleep(0.2)
    dog.tick()
    assert dog.stalled
    dog.chunk_done()
    dog.tick()
    assert not dog.stalled
    msgs = systemd.messages()
    assert msgs[0] == {"WATCHDOG": "1"} and msgs[2] == {"WATCHDOG": "1"}
    assert msgs[1]["STATUS"].startswith("stalled") and "WATCHDOG" not in msgs[1]
    assert dog.feeds_sent == 2


def test_known_waiting_keeps_feeding(systemd):
    n = Notifier({"NOTIFY_SOCKET": systemd.address})
    reopening = [True]
    dog = Watchdog(n, interval_s=0.1, stall_after_s=0.1, waiting=lambda: reopening[0])
    with dog:
        time.sleep(0.35)
        excused = systemd.messages()
        reopening[0] = False
        time.sleep(0.35)
        starved = systemd.messages()
    assert excused and all(m == {"WATCHDOG": "1"} for m in excused)
    assert starved[-1]["STATUS"].startswith("stalled") and "WATCHDOG" not in starved[-1]


def test_broken_status_callable_does_not_starve_the_watchdog(systemd):
    n = Notifier({"NOTIFY_SOCKET": systemd.address})

    def broken() -> str:
        raise RuntimeError("bug")

    dog = Watchdog(n, interval_s=0.1, stall_after_s=10, status=broken)
    dog.tick()
    assert systemd.messages() == [{"WATCHDOG": "1"}]
    assert dog.feeds_sent == 1
