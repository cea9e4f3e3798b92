"""`rfstream eval` as a user runs it: which truth it scores against, what it says, what it refuses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rfstream.sources.synth import synthesize

ROOT = Path(__file__).resolve().parents[1]


def rfstream(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "rfstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rfstream: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("evalcli") / "cap", sample_rate_hz=1e6, duration_s=0.5, seed=3)


@pytest.fixture(scope="module")
def annotated(capture, tmp_path_factory) -> Path:
    """rfstream's own --annotate output: the recording's annotations plus rfstream's detections."""
    out = tmp_path_factory.mktemp("annotated") / "dets.sigmf-meta"
    proc = rfstream("replay", str(capture), "--no-publish", "-q", "--annotate", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def original(capture) -> dict:
    proc = rfstream("eval", str(capture), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_eval_says_which_truth_and_how_it_was_widened(capture):
    proc = rfstream("eval", str(capture))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    n = len(json.loads(capture.read_text())["annotations"])
    assert lines[0].startswith(f"truth: {n} annotations of {capture}")
    assert "left out" not in lines[0]
    assert lines[1].startswith("truth cut per frame and widened to the frame's resolution before scoring")
    assert "1 column (977 Hz)" in lines[1]  # 1 MS/s over 1024 columns
    for section in ("recall per SNR bin", "confusion", "missed", "false alarm", "duplicates", "ECE"):
        assert section in proc.stdout, section


def test_eval_json_keeps_the_old_keys_and_adds_the_rest(original):
    report = original
    assert [r["iou_threshold"] for r in report["results"]] == [0.5, 0.25]
    assert report["truth"]["left_out_rfstream"] == 0 and report["truth"]["annotations"] > 0
    assert report["widening"]["pieces"] == report["n_truth"]
    scores = report["scores"]
    assert set(scores) >= {
        "label_aware",
        "label_agnostic",
        "snr_recall",
        "confusion",
        "duplicates",
        "reliability",
    }
    assert scores["label_aware"]["n_truth"] == report["n_truth"]


def test_eval_on_annotate_output_scores_the_recordings_truth_only(original, annotated):
    meta = json.loads(annotated.read_text())
    ours = [a for a in meta["annotations"] if a.get("core:generator") == "rfstream"]
    theirs = [a for a in meta["annotations"] if a.get("core:generator") != "rfstream"]
    assert ours and theirs
    proc = rfstream("eval", str(annotated), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["truth"]["annotations"] == len(theirs)
    assert report["truth"]["left_out_rfstream"] == len(ours)
    assert report["n_truth"] == original["n_truth"]  # the same truth, not rfstream's detections
    assert report["results"][0]["overall"]["precision"] == original["results"][0]["overall"]["precision"]
    assert report["results"][0]["overall"]["precision"] < 1.0
    text = rfstream("eval", str(annotated)).stdout.splitlines()[0]
    assert f"left out {len(ours)} that rfstream wrote" in text


def test_eval_refuses_a_file_of_rfstreams_detections_only(annotated, tmp_path):
    meta = json.loads(annotated.read_text())
    meta["annotations"] = [a for a in meta["annotations"] if a.get("core:generator") == "rfstream"]
    only = tmp_path / "only.sigmf-meta"
    only.write_text(json.dumps(meta))
    data = annotated.with_name("dets.sigmf-data")
    if data.exists():  # the writer linked the data beside its output
        os.symlink(data.resolve(), tmp_path / "only.sigmf-data")
    elif meta["global"].get("core:dataset"):
        shutil.copy(annotated.parent / meta["global"]["core:dataset"], tmp_path)
    one_line_error(rfstream("eval", str(only)), "only rfstream's own detections", "no truth")


def test_eval_with_raw_file_flags_says_raw_files_carry_no_annotations(capture, tmp_path):
    one_line_error(
        rfstream("eval", str(capture), "--rate", "1e6"), "raw IQ files carry no annotations", "--rate"
    )
    one_line_error(
        rfstream("eval", str(capture), "--datatype", "cf32_le", "--freq", "1e9"),
        "raw IQ files carry no annotations",
        "--datatype, --freq",
    )
    raw = tmp_path / "cap.cf32"
    shutil.copy(capture.with_suffix(".sigmf-data"), raw)
    one_line_error(rfstream("eval", str(raw)), "raw IQ files carry no annotations")
