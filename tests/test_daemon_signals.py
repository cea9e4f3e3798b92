"""Signals never wedge or kill the daemon: real `rfstream run` subprocesses, real signals.

The handlers only leave a byte in a pipe (rfstream.runtime.signals); before that, a handler
called ``threading.Event.set()``, and a second signal arriving while the first held the event's
lock deadlocked the main thread for good (after which only SIGKILL ended the process). A SIGHUP
during start-up killed it (exit 129), and a reload that removed a degrade level while that level
was in force crashed it (``tuple.index(x): x not in tuple``).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import time
from pathlib import Path

import pytest
from test_daemon import Daemon

pytestmark = pytest.mark.soapy

# Two detector priorities (energy 2, the helper's sleepy detector 100): levels 1, 2 and 3 exist.
TWO_PRIORITIES = '[[detectors]]\nname = "energy"\nkind = "energy"\npriority = 2\n'
# One priority: level 1 (run only the highest-priority detectors) does nothing, so it is gone.
ONE_PRIORITY = '[[detectors]]\nname = "energy"\nkind = "energy"\npriority = 100\n'


def _write(config: Path, text: str) -> None:
    """Replace the config file at once: a reload must never read it half-written."""
    tmp = config.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, config)


def _sighup_caught(pid: int) -> bool:
    """The process has a handler for SIGHUP (the kernel's view: /proc/PID/status SigCgt)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGHUP - 1)))


def _wait_until(cond, timeout_s: float, d: Daemon, what: str, poll_s: float = 0.002) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        assert d.proc.poll() is None, f"daemon exited while waiting for {what}: {d.log_text()[-3000:]}"
        assert time.monotonic() < end, f"timed out waiting for {what}: {d.log_text()[-3000:]}"
        time.sleep(poll_s)


def _no_trouble(d: Daemon) -> None:
    log = d.log_text()
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to see the handlers")
def test_sighup_during_start_up_is_a_reload_not_exit_129(driver, tmp_path):
    config = tmp_path / "rfstream.toml"
    config.write_text(TWO_PRIORITIES)
    d = Daemon(tmp_path, "--config", str(config))
    try:
        # as soon as the process can take a SIGHUP at all, and then again and again until it runs
        _wait_until(lambda: _sighup_caught(d.proc.pid), 30, d, "a SIGHUP handler")
        caught_at = datetime.datetime.now(datetime.timezone.utc)
        sent = 0
        while not d.events("started"):
            d.signal(signal.SIGHUP)
            sent += 1
            assert d.proc.poll() is None, (
                f"exit {d.proc.returncode} after {sent} SIGHUPs: {d.log_text()[-2000:]}"
            )
            time.sleep(0.005)
        # the handler came first: before the publisher, the models and the SDR were opened
        (publishing,) = d.events("publishing")
        opened_at = datetime.datetime.fromisoformat(publishing["timestamp"].replace("Z", "+00:00"))
        assert caught_at < opened_at, (caught_at, opened_at)
        assert sent >= 1
        # the SIGHUPs of the start-up became (at least) one reload once it ran
        h = d.health(lambda h: h["reloads"]["applied"] >= 1 and h["chunks"]["processed"] >= 3, 30)
        assert h["reloads"]["failed"] == 0
        d.signal(signal.SIGTERM)
        assert d.wait(10) == 0
    finally:
        d.close()
    _no_trouble(d)


def test_sigterm_during_start_up_stops_cleanly(driver, tmp_path):
    d = Daemon(tmp_path)
    try:
        _wait_until(lambda: _sighup_caught(d.proc.pid), 30, d, "the signal handlers")
        d.signal(signal.SIGTERM)
        assert d.wait(30) == 0
    finally:
        d.close()
    _no_trouble(d)
    (stopped,) = d.events("stopped")
    assert stopped["accounting_exact"]


@pytest.mark.parametrize("sigterm_at", [0, 37, 99], ids=["first", "middle", "last"])
def test_bursts_of_100_sighups_then_one_with_sigterm_inside_stops_within_seconds(
    driver, tmp_path, sigterm_at
):
    config = tmp_path / "rfstream.toml"
    config.write_text(TWO_PRIORITIES)
    d = Daemon(tmp_path, "--config", str(config))
    try:
        first = d.health(lambda h: h["chunks"]["processed"] >= 3, 30)
        for burst in range(5):  # back to back: each signal may land inside the previous one's handler
            _write(config, TWO_PRIORITIES if burst % 2 else ONE_PRIORITY)
            for _ in range(100):
                os.kill(d.proc.pid, signal.SIGHUP)
            time.sleep(0.05 * burst)
        # still alive, still streaming, and the bursts became a few reloads, not 500
        later = d.health(
            lambda h: (
                h["chunks"]["processed"] >= first["chunks"]["processed"] + 5 and h["reloads"]["applied"] >= 1
            ),
            30,
        )
        assert 1 <= later["reloads"]["applied"] <= 10 and later["reloads"]["failed"] == 0
        for i in range(100):
            os.kill(d.proc.pid, signal.SIGTERM if i == sigterm_at else signal.SIGHUP)
        t0 = time.monotonic()
        rc = d.wait(15)
        took = time.monotonic() - t0
    finally:
        d.close()
    assert rc == 0 and took < 5.0, (rc, took, d.log_text()[-2000:])
    _no_trouble(d)
    (stopped,) = d.events("stopped")
    assert stopped["accounting_exact"] and stopped["samples_in_flight"] == 0


def test_a_reload_at_every_degrade_level_keeps_the_daemon_running(driver, tmp_path):
    """Reloads at levels 0-3 that remove degrade level 1 (at 1 and 3) and bring it back (at 2 and 0).

    Each 100 ms chunk costs 250 ms while overloaded, so the level climbs a step every few chunks;
    the test reloads as soon as health shows the level it wants, then calms the load and reloads
    at level 0. Reloads land wherever the level is by then; cycles repeat until every level had
    one, and one at level 1 removed it.
    """
    runtime = (
        "[runtime]\ndegrade_up_chunks = 6\ndegrade_down_chunks = 4\n"
        "[publish]\nspectrogram = true\nhealth_interval_s = 0.2\n"
    )
    config = tmp_path / "rfstream.toml"
    config.write_text(TWO_PRIORITIES + runtime)
    d = Daemon(tmp_path, "--config", str(config))
    applied: list[str] = []  # the detector set each reload applied, in order

    def reload(detectors: str) -> int:
        """Reload with ``detectors``; the degrade level the reload found."""
        _write(config, detectors + runtime)
        before = len(d.events("detectors reloaded"))
        d.signal(signal.SIGHUP)
        _wait_until(lambda: len(d.events("detectors reloaded")) > before, 30, d, "the reload", 0.05)
        applied.append(detectors)
        return d.events("detectors reloaded")[-1]["degrade_level"]

    seen: set[int] = set()
    removed_at_1 = False
    try:
        d.health(lambda h: h["chunks"]["processed"] >= 3, 30)
        end = time.monotonic() + 150
        while seen != {0, 1, 2, 3} or not removed_at_1:
            assert time.monotonic() < end, f"reloads seen at levels {seen}: {d.log_text()[-3000:]}"
            d.sleep_file.write_text("0.25")
            for target, detectors in ((1, ONE_PRIORITY), (2, TWO_PRIORITIES), (3, ONE_PRIORITY)):
                d.health(lambda h: h["degrade_level"] >= target, 30)  # noqa: B023
                level = reload(detectors)
                seen.add(level)
                removed_at_1 |= level == 1 and detectors == ONE_PRIORITY
            d.sleep_file.write_text("0")
            d.health(lambda h: h["degrade_level"] == 0, 30)
            seen.add(reload(TWO_PRIORITIES))
        h = d.health(lambda h: h["chunks"]["processed"] > 0, 10)
        assert h["reloads"]["failed"] == 0 and h["reloads"]["applied"] == len(applied)
        d.signal(signal.SIGTERM)
        assert d.wait(10) == 0
    finally:
        d.close()
    _no_trouble(d)
    # while ONE_PRIORITY was in force level 1 did not exist; a reload at 1 that removed it stepped down
    one_priority = False
    reloads = 0
    remapped = 0
    previous: dict = {}
    for rec in _events_in_order(d):
        if rec["event"] == "detectors reloaded":
            one_priority = applied[reloads] == ONE_PRIORITY
            if one_priority and rec["degrade_level"] == 1:
                assert previous.get("event") == "degrade level changed", previous
                assert (previous["previous"], previous["degrade_level"]) == (1, 0)
                remapped += 1
            reloads += 1
        elif one_priority:
            assert rec["degrade_level"] != 1 and rec["previous"] != 1, rec
        previous = rec
    assert remapped >= 1
    stopped = d.events("stopped")
    assert stopped and stopped[0]["accounting_exact"]


def _events_in_order(d: Daemon) -> list[dict]:
    wanted = ("detectors reloaded", "degrade level changed")
    return [
        rec for rec in map(_json_or_none, d.log_text().splitlines()) if rec and rec.get("event") in wanted
    ]


def _json_or_none(line: str) -> dict | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def test_a_burst_of_sighups_on_a_broken_config_keeps_the_running_one_and_says_why(driver, tmp_path):
    config = tmp_path / "rfstream.toml"
    config.write_text(TWO_PRIORITIES)
    d = Daemon(tmp_path, "--config", str(config))
    try:
        first = d.health(lambda h: h["chunks"]["processed"] >= 3, 30)
        _write(config, '[[detectors]]\nname = "x"\nkind = "energy"\npriority = "high"\n')
        for _ in range(100):
            os.kill(d.proc.pid, signal.SIGHUP)
        h = d.health(
            lambda h: (
                h["reloads"]["failed"] >= 1 and h["chunks"]["processed"] >= first["chunks"]["processed"] + 5
            ),
            30,
        )
        assert h["reloads"]["applied"] == 0 and h["reloads"]["failed"] <= 10  # coalesced, not 100
        assert h["chunks"]["shed"] == 0 and set(h["detectors"]) >= {"energy", "sleepy"}  # the old set runs on
        d.signal(signal.SIGTERM)
        assert d.wait(10) == 0
    finally:
        d.close()
    _no_trouble(d)
    failed = d.events("reload failed; keeping the running config")
    assert failed and all("detectors.0.priority" in f["error"] and "\n" not in f["error"] for f in failed)
