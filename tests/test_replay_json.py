"""`rfstream replay --json` (and rtl_433's spelling, -F json): one JSON line per detection on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rfstream.sources.synth import synthesize

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rfstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_json_lines_are_the_annotate_detections(tmp_path):
    # strong signals, so that some pass the publish gate whatever the shipped models are
    meta = synthesize(
        tmp_path / "cap", sample_rate_hz=1e6, duration_s=0.4, seed=6, snr_db_range=(20.0, 30.0), num_signals=4
    )
    out = tmp_path / "dets.sigmf-meta"
    proc = run("replay", str(meta), "--no-publish", "-F", "json", "--annotate", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines, "no detections printed"
    assert all(
        {"seq", "t_start_s", "f_low_hz", "f_high_hz", "label", "score", "found_by"} <= set(d) for d in lines
    )
    annotations = [
        a for a in json.loads(out.read_text())["annotations"] if a.get("core:generator") == "rfstream"
    ]
    assert sorted((a["core:label"], a["rfstream:score"]) for a in annotations) == sorted(
        (d["label"], d["score"]) for d in lines
    )
    assert "chunks 2 processed" in proc.stderr  # the summary stays on stderr


def test_json_output_into_a_closed_pipe_ends_quietly(tmp_path):
    meta = synthesize(tmp_path / "cap", sample_rate_hz=1e6, duration_s=0.6, seed=6)
    cmd = f"{sys.executable} -m rfstream.cli replay {meta} --no-publish --json | head -n 1"
    proc = subprocess.run(
        ["sh", "-c", cmd],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert len(proc.stdout.splitlines()) == 1 and json.loads(proc.stdout)["label"]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
