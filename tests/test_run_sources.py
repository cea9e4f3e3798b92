"""`rfstream run` never silently throws a recording away (issue 11 §2).

Real processes on real SigMF files. Before: with the synthetic source `run` produced about 24 000
chunks a second and shed 99.98 % of them, and on a SigMF recording it exited 0 after processing 4
of 150 chunks. Now recordings and the synthesiser are paced like the live source they stand in
for, the source is chosen clearly (``--source``, or an error naming the setting), and shedding
more than 1 % is a warning that names its cause. A ``--fast`` replay has no deadline, so nothing
in it is "late".
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_cli import ROOT, assert_clean_error, rfstream

from rfstream.cli import build_parser
from rfstream.runtime.metrics import Metrics
from rfstream.runtime.shedding import ShedWatch
from rfstream.sources.synth import synthesize

RATE = 1e6
# a small frame and the energy detector only: a 100 ms chunk costs a few ms even on a busy machine
SMALL = [
    "--set", "spectrogram.nfft=1024", "--set", "spectrogram.hop=512",
    "--set", "spectrogram.height=256", "--set", "spectrogram.width=256",
    "--set", "source.chunk_ms=100",
    "--set", "detectors.1.enabled=false", "--set", "detectors.2.enabled=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """3 s at 1 MS/s: 30 chunks of 100 ms."""
    return synthesize(tmp_path_factory.mktemp("run") / "rec", sample_rate_hz=RATE, duration_s=3.0, seed=4)


def _events(stderr: str, name: str) -> list[dict]:
    out = []
    for line in stderr.splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            rec = json.loads(line)
            if rec.get("event") == name:
                out.append(rec)
    return out


def _helper(*args: str, sleep_s: float, tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real CLI plus tests/daemon_helpers.py's detector that sleeps ``sleep_s`` per frame."""
    sleep_file = tmp / "sleep"
    sleep_file.write_text(str(sleep_s))
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
        "RFS_TEST_SLEEP_FILE": str(sleep_file),
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "tests" / "daemon_helpers.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# --- choosing the source ------------------------------------------------------------------------
def test_run_without_a_source_names_the_settings_and_the_flags(tmp_path):
    proc = rfstream("run", "--endpoint", "", "--log-format", "json", cwd=tmp_path)
    last = assert_clean_error(proc, 'source.kind is "sigmf"', "source.path is empty", "--path", "--source")
    assert "sigmf|raw|synth|soapy" in last
    assert "fatal" not in proc.stderr and "started" not in proc.stderr  # refused before the daemon ran


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--device-args", "driver=rtlsdr"], ["--device-args", 'source.kind "soapy"', "--source soapy"]),
        (
            ["--source", "synth", "--path", "x.sigmf-meta"],
            ["--path", 'source.kind is "synth"', "--source sigmf"],
        ),
        (["--source", "soapy", "--loop"], ["--loop", 'source.kind is "soapy"']),
        (["--source", "sigmf", "--gain", "20"], ["--gain", "--source soapy"]),
    ],
)
def test_a_flag_the_chosen_source_would_ignore_is_refused(tmp_path, argv, needles):
    assert_clean_error(rfstream("run", "--endpoint", "", *argv, cwd=tmp_path), *needles)


def test_a_fatal_start_is_one_line_on_a_console(tmp_path):
    proc = rfstream("run", "--path", str(tmp_path / "missing.sigmf-meta"), "--endpoint", "", cwd=tmp_path)
    assert_clean_error(proc, "missing.sigmf-meta")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # no console "fatal" record repeating it


def test_the_raw_file_hint_names_only_flags_the_verb_has(tmp_path):
    raw = tmp_path / "x.cu8"
    raw.write_bytes(b"\x80" * 65536)
    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    for argv in (["replay", str(raw)], ["render", str(raw)], ["run", "--path", str(raw), "--endpoint", ""]):
        last = assert_clean_error(rfstream(*argv, cwd=tmp_path), "raw IQ file")
        flags = set(re.findall(r"(--[a-z][a-z-]*)", last))
        assert "--rate" in flags, last
        options = {s for action in verbs[argv[0]]._actions for s in action.option_strings}
        assert flags <= options, (argv[0], flags - options)


# --- pacing: nothing thrown away ------------------------------------------------------------------
def test_run_on_a_sigmf_recording_processes_every_chunk_at_the_recordings_pace(recording):
    t0 = time.monotonic()
    proc = rfstream(
        "run", "--source", "sigmf", "--path", str(recording), "--endpoint", "", "--log-format", "json", *SMALL
    )
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    (stopped,) = _events(proc.stderr, "stopped")
    assert stopped["chunks_processed"] == 30 and stopped["chunks_shed"] == 0, stopped
    assert stopped["samples_processed"] == 3 * RATE and stopped["accounting_exact"]
    assert not stopped["interrupted"]
    assert wall >= 2.5  # paced: 3 s of signal takes about 3 s, not a burst
    assert not _events(proc.stderr, "shedding") and not _events(proc.stderr, "shed over the run")


def test_run_on_a_raw_file_processes_every_chunk(tmp_path):
    raw = tmp_path / "rtl.cu8"
    raw.write_bytes(np.random.default_rng(0).integers(100, 156, int(2 * RATE), dtype=np.uint8).tobytes())
    proc = rfstream(
        "run", "--source", "raw", "--path", str(raw), "--rate", str(RATE), "--freq", "433.92e6",
        "--endpoint", "", "--log-format", "json", *SMALL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (stopped,) = _events(proc.stderr, "stopped")
    assert stopped["chunks_processed"] == 10 and stopped["chunks_shed"] == 0 and stopped["accounting_exact"]


def test_run_with_the_synthesiser_is_paced_and_sheds_nothing(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "rfstream.cli", "run", "--source", "synth", "--rate", str(RATE),
         "--endpoint", "", "--log-format", "json", *SMALL],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        time.sleep(8.0)  # start-up and a few seconds of stream
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-2000:]
    (started,) = _events(stderr, "started")
    (stopped,) = _events(stderr, "stopped")
    streamed_s = (
        time.mktime(time.strptime(stopped["timestamp"][:19], "%Y-%m-%dT%H:%M:%S"))
        - time.mktime(time.strptime(started["timestamp"][:19], "%Y-%m-%dT%H:%M:%S"))
        + 1
    )
    # at the sample rate: about 10 chunks a second (before: some 24 000, nearly all shed)
    assert 3 <= stopped["chunks_processed"] <= 10 * streamed_s + 5, (stopped, streamed_s)
    assert stopped["chunks_shed"] == 0 and stopped["accounting_exact"]


def test_large_shedding_is_a_warning_that_names_the_cause(recording, tmp_path):
    # each 100 ms chunk costs 150 ms: processing cannot keep up, and must say so
    proc = _helper(
        "run", "--source", "sigmf", "--path", str(recording), "--endpoint", "", "--log-format", "json",
        "--set", "runtime.degrade=false", *SMALL, sleep_s=0.15, tmp=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (stopped,) = _events(proc.stderr, "stopped")
    assert stopped["chunks_shed"] > 0.01 * (stopped["chunks_processed"] + stopped["chunks_shed"])
    warnings = _events(proc.stderr, "shedding") + _events(proc.stderr, "shed over the run")
    assert warnings, proc.stderr[-3000:]
    w = warnings[0]
    assert w["level"] == "warning" and w["shed_percent"] > 1
    assert "detectors too slow" in w["cause"] and "sleepy" in w["cause"]
    assert "fewer detectors" in w["hint"] and "rfstream bench" in w["hint"]


# --- --fast: no deadline, nothing late -----------------------------------------------------------
def test_a_fast_replay_never_reports_chunks_as_late(recording, tmp_path):
    # each chunk takes 0.5 s, longer than the 400 ms deadline of a live run
    proc = _helper(
        "replay", str(recording), "--fast", "--no-publish", "--json", "--set", "source.chunk_ms=500",
        *SMALL[:8], "--set", "detectors.1.enabled=false", "--set", "detectors.2.enabled=false",
        "--set", "merge.unknown=publish",  # the sleeping test detector labels nothing
        sleep_s=0.5, tmp=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines and not any(rec.get("late") for rec in lines)
    summary = proc.stderr.strip().splitlines()[-1]
    assert "late" not in summary and "processed (0 shed)" in summary, summary


# --- the shedding watch as a unit ----------------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _settle(m: Metrics, processed: int, shed: int, reason: str = "deadline") -> None:
    for _ in range(processed):
        m.arrived(100)
        m.settled(100)
    for _ in range(shed):
        m.arrived(100)
        m.settled(100, shed_reason=reason)


def test_shed_watch_warns_per_window_above_one_percent_and_ignores_shutdown():
    m, clock = Metrics(), _Clock()
    watch = ShedWatch(m, chunk_ms=200, window_s=10, clock=clock, detectors=lambda: ["energy"])
    _settle(m, 199, 1)  # 0.5 %: the design working
    clock.t = 10
    assert watch.check() is None
    _settle(m, 90, 10, "queue")
    clock.t = 15
    assert watch.check() is None  # the window is not over yet
    clock.t = 20
    w = watch.check()
    assert w is not None and w["shed_percent"] == 10.0 and w["reasons"] == {"queue": 10}
    assert "energy" in w["cause"] and w["window_s"] == 10
    _settle(m, 50, 50, "shutdown")  # a stop sheds what is queued: not a cause
    clock.t = 30
    assert watch.check() is None
    assert watch.warnings == 1


def test_shed_watch_counts_what_a_live_reader_shed():
    m, clock = Metrics(), _Clock()
    reader = {"samples_received": 0, "samples_shed": 0}
    m.extra["source"] = lambda: dict(reader)
    watch = ShedWatch(m, chunk_ms=200, window_s=10, clock=clock)
    _settle(m, 100, 0)
    reader.update(samples_received=1_000_000, samples_shed=50_000)
    clock.t = 10
    w = watch.check()
    assert w is not None and w["reader_shed_percent"] == 5.0 and w["shed_percent"] == 0.0
    assert watch.final() is not None  # over the whole run, too
