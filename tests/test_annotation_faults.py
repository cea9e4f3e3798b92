"""Annotations survive faults, proven on real processes: SIGKILL at random moments, a file-size limit,
a tiny tmpfs that fills up, a folder remounted read-only halfway (issue 11 §3).

The mount tests need root and a kernel that lets this process mount tmpfs; they skip otherwise.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rfstream.sinks.sigmf_annotations import GENERATOR
from rfstream.sources.synth import synthesize

ROOT = Path(__file__).resolve().parents[1]
ENERGY = "[[detectors]]\nname = 'energy'\nkind = 'energy'\n"


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """An 8 s, 1 MS/s labelled recording: 40 chunks, a few seconds of work with the energy detector."""
    d = tmp_path_factory.mktemp("faults")
    (d / "energy.toml").write_text(ENERGY)
    return synthesize(d / "long", sample_rate_hz=1e6, duration_s=8.0, seed=11)


def _cmd(recording: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rfstream.cli",
        "replay",
        str(recording),
        "--config",
        str(recording.parent / "energy.toml"),
        "--no-publish",
        "--annotate",
        str(out),
        *extra,
    ]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "JOURNAL_STREAM": "", **extra}


def _ours(meta: dict) -> list[dict]:
    return [a for a in meta["annotations"] if a.get("core:generator") == GENERATOR]


@pytest.fixture(scope="module")
def clean_count(recording, tmp_path_factory) -> int:
    """How many detections an undisturbed run writes (a fast replay is deterministic)."""
    out = tmp_path_factory.mktemp("clean") / "dets.sigmf-meta"
    proc = subprocess.run(_cmd(recording, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    n = len(_ours(json.loads(out.read_text())))
    assert n > 20
    return n


def _wait_for(path: Path, timeout_s: float = 120, lines: int = 1) -> None:
    """Until ``path`` exists with at least ``lines`` lines."""
    end = time.monotonic() + timeout_s
    while not path.exists() or path.read_text().count("\n") < lines:
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


def test_sigkill_at_random_moments_never_leaves_a_broken_pair_and_the_next_run_recovers(
    recording, clean_count, tmp_path
):
    rng = random.Random(7)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "dets.sigmf-meta"
    recovered_total = 0
    for attempt in range(4):
        proc = subprocess.Popen(
            _cmd(recording, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if attempt:  # the first kill lands at start-up, the others once detections are being written
            _wait_for(out.with_name(out.name + ".journal"), lines=2)
        time.sleep(rng.uniform(0.0, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        names = {p.name for p in out_dir.iterdir()}
        if "dets.sigmf-meta" in names:
            json.loads(out.read_text())  # whole: written atomically, never half
        assert names <= {"dets.sigmf-meta", "dets.sigmf-data", "dets.sigmf-meta.journal"} | {
            n for n in names if n.startswith((".dets.sigmf-meta.", "dets.recovered-"))
        }, names
        # the data link of an annotation in another folder appears only with its metadata
        link = out_dir / "dets.sigmf-data"
        assert not os.path.lexists(link) or "dets.sigmf-meta" in names
    proc = subprocess.run(_cmd(recording, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out_dir.iterdir())
    assert not [n for n in names if n.startswith(".") or n.endswith(".journal")], names  # nothing stale
    assert len(_ours(json.loads(out.read_text()))) == clean_count
    for recovered in out_dir.glob("dets.recovered-*.sigmf-meta"):
        meta = json.loads(recovered.read_text())
        recovered_total += len(_ours(meta))
        assert meta["global"]["core:dataset"] == "dets.sigmf-data"  # beside it, through the link
    assert recovered_total > 0  # the killed runs' detections were not lost


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {proc.stderr.decode().strip()}")


@pytest.fixture
def mounts():
    made: list[Path] = []
    yield made
    for m in made:
        subprocess.run(["umount", "-l", str(m)], capture_output=True)


def _last_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr
    assert lines[-1].startswith("rfstream: error: "), stderr
    return lines[-1]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root to mount tmpfs")
def test_a_full_disk_sends_the_detections_to_the_fallback_and_says_so(
    recording, clean_count, tmp_path, mounts
):
    small = tmp_path / "small"
    base = len(json.dumps(json.loads(recording.read_text()), indent=2))  # what the pair holds at start
    _mount_tmpfs(small, f"{(base * 3 // 2) // 1024 + 8}k")  # room to start, none for the whole run
    mounts.append(small)
    fallback = tmp_path / "fallback"
    fallback.mkdir()
    out = small / "dets.sigmf-meta"
    proc = subprocess.run(
        _cmd(recording, out), env=_env(TMPDIR=str(fallback)), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0
    last = _last_error(proc.stderr)
    assert "No space left on device" in last and str(fallback) in last and "saved to" in last
    assert "run ended, but a sink could not be closed" in proc.stderr  # the accounting is still logged
    (saved,) = fallback.glob("rfstream-annotations-*.sigmf-meta")
    meta = json.loads(saved.read_text())
    assert len(_ours(meta)) == clean_count  # nothing lost
    assert meta["global"]["rfstream:intended_path"] == str(out)
    json.loads(out.read_text())  # the output holds its last whole version
    assert not [p for p in small.iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root to remount")
def test_a_folder_turned_read_only_halfway_loses_nothing(recording, clean_count, tmp_path, mounts):
    where = tmp_path / "ro"
    _mount_tmpfs(where, "16m")
    mounts.append(where)
    fallback = tmp_path / "fallback"
    fallback.mkdir()
    out = where / "dets.sigmf-meta"
    proc = subprocess.Popen(
        _cmd(recording, out, "--chunk-ms", "50"),  # more, smaller chunks: a longer run to interrupt
        env=_env(TMPDIR=str(fallback)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(out.with_name(out.name + ".journal"))
    time.sleep(0.3)
    for _ in range(50):  # busy only in the instant a file is being written
        remount = subprocess.run(["mount", "-o", "remount,ro", str(where)], capture_output=True)
        if remount.returncode == 0:
            break
        time.sleep(0.01)
    assert remount.returncode == 0, remount.stderr
    _, stderr = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("the replay finished before the folder turned read-only")
    last = _last_error(stderr)
    assert "Read-only file system" in last and "saved to" in last
    (saved,) = fallback.glob("rfstream-annotations-*.sigmf-meta")
    clean = subprocess.run(
        _cmd(recording, tmp_path / "clean50.sigmf-meta", "--chunk-ms", "50"),
        env=_env(),
        capture_output=True,
        timeout=300,
    )
    assert clean.returncode == 0
    expected = len(_ours(json.loads((tmp_path / "clean50.sigmf-meta").read_text())))
    assert len(_ours(json.loads(saved.read_text()))) == expected


def test_a_file_size_limit_ends_in_one_line_with_the_accounting_and_a_whole_file(recording, tmp_path):
    out = tmp_path / "dets.sigmf-meta"
    fallback = tmp_path / "fallback"
    fallback.mkdir()
    base = len(json.dumps(json.loads(recording.read_text()), indent=2))  # what the pair holds at start
    limit_kib = base * 13 // 10 // 1024 + 1  # room to start, not for the whole run
    script = f"ulimit -f {limit_kib}; exec {' '.join(map(str, _cmd(recording, out)))}"
    proc = subprocess.run(
        ["bash", "-c", script], env=_env(TMPDIR=str(fallback)), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0
    last = _last_error(proc.stderr)
    assert "File too large" in last
    assert "run ended, but a sink could not be closed" in proc.stderr
    json.loads(out.read_text())  # whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
