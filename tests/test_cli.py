"""The `rfstream` command as a user runs it: real processes, real files, real sockets.

Bad input must end with one line ``rfstream: error: ...`` naming the problem, a
non-zero exit, no traceback, and nothing half-written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zmq

from rfstream.sources.synth import synthesize

ROOT = Path(__file__).resolve().parents[1]


def rfstream(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "rfstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=full_env,
    )


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("rfstream: error: "), proc.stderr
    for needle in needles:
        assert needle.lower() in last.lower(), last
    return last


def write_meta(path: Path, global_: dict, captures=None, annotations=None) -> Path:
    meta = {
        "global": {"core:version": "1.0.0", **global_},
        "captures": captures or [{"core:sample_start": 0}],
        "annotations": annotations or [],
    }
    path.write_text(json.dumps(meta))
    return path


@pytest.fixture(scope="module")
def small_capture(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("cli") / "small", sample_rate_hz=1e6, duration_s=0.5, seed=3)


# --- the happy paths -------------------------------------------------------------------------
def test_replay_prints_a_summary(small_capture):
    proc = rfstream("replay", str(small_capture), "--no-publish")
    assert proc.returncode == 0, proc.stderr
    assert "chunks 3 processed" in proc.stderr  # 0.5 s in 200 ms chunks: 200 + 200 + 100 ms


def test_replay_annotate_writes_valid_sigmf(small_capture, tmp_path):
    import sigmf

    out = tmp_path / "dets.sigmf-meta"
    proc = rfstream("replay", str(small_capture), "--no-publish", "--annotate", str(out))
    assert proc.returncode == 0, proc.stderr
    handle = sigmf.sigmffile.fromfile(str(out))
    handle.validate()
    ours = [a for a in handle.get_annotations() if a.get("core:generator") == "rfstream"]
    assert ours and all("core:freq_lower_edge" in a for a in ours)


def test_eval_json(small_capture):
    proc = rfstream("eval", str(small_capture), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [r["iou_threshold"] for r in report["results"]] == [0.5, 0.25]
    assert report["n_truth"] > 0


def test_synth_is_deterministic(tmp_path):
    for name in ("a", "b"):
        assert (
            rfstream(
                "synth", str(tmp_path / name), "--rate", "1e6", "--duration", "0.3", "--seed", "9"
            ).returncode
            == 0
        )
    assert (tmp_path / "a.sigmf-data").read_bytes() == (tmp_path / "b.sigmf-data").read_bytes()


def test_real_rtl_sdr_capture_replays(tmp_path):
    meta = ROOT.parent / "shared" / "captures" / "dump1090_modes1.sigmf-meta"
    if not meta.exists():
        pytest.skip("../shared/captures is absent")
    proc = rfstream("replay", str(meta), "--no-publish")
    assert proc.returncode == 0, proc.stderr
    assert "chunks 1 processed" in proc.stderr  # shorter than one chunk: one short chunk


def test_raw_cu8_file_with_flags(tmp_path):
    raw = tmp_path / "capture.cu8"
    rng = np.random.default_rng(0)
    raw.write_bytes(np.clip(127.5 + 20 * rng.standard_normal(2 * 250_000), 0, 255).astype(np.uint8).tobytes())
    proc = rfstream("replay", str(raw), "--rate", "250e3", "--freq", "433.92e6", "--no-publish")
    assert proc.returncode == 0, proc.stderr
    assert "chunks 5 processed" in proc.stderr


def test_nan_samples_are_counted_and_zeroed(tmp_path):
    data = (np.random.default_rng(1).standard_normal(2 * 300_000)).astype(np.float32)
    data[1000:1010] = np.nan
    data[5000] = np.inf
    (tmp_path / "nan.sigmf-data").write_bytes(data.tobytes())
    meta = write_meta(tmp_path / "nan.sigmf-meta", {"core:datatype": "cf32_le", "core:sample_rate": 1e6})
    proc = rfstream("replay", str(meta), "--no-publish")
    assert proc.returncode == 0, proc.stderr
    assert "NaN/Inf samples were zeroed" in proc.stderr


# --- bad input ---------------------------------------------------------------------------------
def test_missing_data_file(tmp_path):
    meta = write_meta(tmp_path / "lost.sigmf-meta", {"core:datatype": "cf32_le", "core:sample_rate": 1e6})
    assert_clean_error(rfstream("replay", str(meta), "--no-publish"), "data")


def test_missing_recording(tmp_path):
    assert_clean_error(rfstream("replay", str(tmp_path / "nothing.sigmf-meta"), "--no-publish"))


def test_truncated_data_file_keeps_whole_samples(tmp_path):
    (tmp_path / "t.sigmf-data").write_bytes(np.zeros(2 * 200_000 + 1, np.float32).tobytes()[:-2])
    meta = write_meta(tmp_path / "t.sigmf-meta", {"core:datatype": "cf32_le", "core:sample_rate": 1e6})
    proc = rfstream("replay", str(meta), "--no-publish")
    assert proc.returncode == 0, proc.stderr  # the partial trailing sample is dropped with a warning
    assert "Traceback" not in proc.stderr


def test_meta_that_is_not_json(tmp_path):
    (tmp_path / "bad.sigmf-meta").write_text("{not json")
    (tmp_path / "bad.sigmf-data").write_bytes(b"\0" * 64)
    assert_clean_error(rfstream("replay", str(tmp_path / "bad.sigmf-meta"), "--no-publish"), "json")


def test_meta_that_is_not_sigmf(tmp_path):
    (tmp_path / "x.sigmf-meta").write_text(json.dumps({"hello": "world"}))
    (tmp_path / "x.sigmf-data").write_bytes(b"\0" * 64)
    assert_clean_error(rfstream("replay", str(tmp_path / "x.sigmf-meta"), "--no-publish"))


@pytest.mark.parametrize(("datatype", "needle"), [("cq7_le", "datatype"), ("rf32_le", "real")])
def test_unknown_or_real_datatype(tmp_path, datatype, needle):
    (tmp_path / "d.sigmf-data").write_bytes(b"\0" * 4096)
    meta = write_meta(tmp_path / "d.sigmf-meta", {"core:datatype": datatype, "core:sample_rate": 1e6})
    assert_clean_error(rfstream("replay", str(meta), "--no-publish"), needle)


@pytest.mark.parametrize("rate", [None, 0.0, -5.0])
def test_missing_or_non_positive_sample_rate(tmp_path, rate):
    (tmp_path / "r.sigmf-data").write_bytes(b"\0" * 4096)
    g = {"core:datatype": "cf32_le"}
    if rate is not None:
        g["core:sample_rate"] = rate
    meta = write_meta(tmp_path / "r.sigmf-meta", g)
    assert_clean_error(rfstream("replay", str(meta), "--no-publish"), "sample_rate")


def test_raw_file_without_rate(tmp_path):
    (tmp_path / "x.cu8").write_bytes(b"\x80" * 4096)
    assert_clean_error(rfstream("replay", str(tmp_path / "x.cu8"), "--no-publish"), "rate")


def test_unwritable_annotation_path_fails_before_work(small_capture, tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "out.sigmf-meta"
    assert_clean_error(rfstream("replay", str(small_capture), "--no-publish", "--annotate", str(out)))
    assert not out.parent.exists()


def test_endpoint_in_use(small_capture):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    try:
        assert_clean_error(
            rfstream("replay", str(small_capture), "--endpoint", f"tcp://127.0.0.1:{port}"), "in use"
        )
    finally:
        sock.close(0)
        ctx.term()


def test_config_file_with_unknown_key(small_capture, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[spectrogram]\nnfftt = 2048\n")
    assert_clean_error(
        rfstream("replay", str(small_capture), "--config", str(cfg), "--no-publish"), "spectrogram.nfftt"
    )


def test_bad_value_in_environment(small_capture):
    proc = rfstream("replay", str(small_capture), "--no-publish", env={"RFSTREAM_SPECTROGRAM__NFFT": "-4"})
    assert_clean_error(proc, "spectrogram.nfft")


def test_bad_set_flag(small_capture):
    assert_clean_error(
        rfstream("replay", str(small_capture), "--no-publish", "--set", "merge.iou_threshold=2"),
        "merge.iou_threshold",
    )


def test_demo_writes_its_outputs(tmp_path):
    import sigmf
    from PIL import Image

    out = tmp_path / "demo"
    proc = rfstream("demo", "--out", str(out), "--rate", "2e6", "--duration", "0.6", "--seed", "4")
    assert proc.returncode == 0, proc.stderr
    assert "outputs in" in proc.stdout and "label" in proc.stdout
    with Image.open(out / "waterfall.png") as png:
        assert png.format == "PNG" and png.width == 1280 and png.height == 800  # rfstream.render
    report = json.loads((out / "eval.json").read_text())
    assert set(report) == {"label_agnostic", "label_aware", "snr_ge_10db"}
    sigmf.sigmffile.fromfile(str(out / "demo-detections.sigmf-meta")).validate()
    assert (out / "demo-capture.sigmf-data").stat().st_size == 8 * int(0.6 * 2e6)
