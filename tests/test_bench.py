"""``rfstream bench``'s spectrogram peer rows and per-stage CPU costs (figures are reported, not asserted)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace

import pytest
import structlog

from rfstream.bench import format_peers, spectrogram_peers, stage_cpu
from rfstream.cli import main
from rfstream.config import Config, DetectorConfig, SpectrogramConfig

SMALL = Config()
SMALL = replace(
    SMALL,
    spectrogram=SpectrogramConfig(nfft=1024, hop=512, width=256, height=128),
    source=replace(SMALL.source, chunk_ms=50.0),
)


@pytest.fixture
def restore_logging():
    """``main`` configures logging (and captures warnings) for the process: undo it afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


def test_peer_rows_time_every_contender_on_the_same_slices():
    pytest.importorskip("torch")
    row = spectrogram_peers(SMALL, 2e6, repeats=2)
    assert row["slices"] == (100_000 - 1024) // 512 + 1
    for name in ("rfstream", "fft_floor", "scipy_stft", "torch_stft"):
        assert row[name]["ms"] > 0 and row[name]["cpu_ms"] >= 0
    for name in ("fft_floor", "scipy_stft", "torch_stft"):
        # The ratio is peer / rfstream per round; its median lies within the rounds' extremes.
        assert row[name]["ratio"] > 0
    # GFLOP/s is 5 N log2 N per slice over the stage's wall time.
    want = row["slices"] * 5 * 1024 * 10 / (row["rfstream"]["ms"] * 1e-3) / 1e9
    assert row["rfstream"]["gflops"] == pytest.approx(want, rel=0.02, abs=0.01)
    lines = format_peers({"spectrogram_peers": [row]})
    assert "scipy.stft" in lines[1] and lines[2].split()[0] == "2"
    assert row["scipy_stft"]["cpu_ratio"] > 0


def test_stage_cpu_names_the_spectrogram_and_each_detector():
    from rfstream.detect.energy import EnergyDetector

    costs = stage_cpu(SMALL, 2e6, chunks=2, detectors=[EnergyDetector("energy")])
    assert set(costs) == {"spectrogram", "detector.energy"}
    assert all(v >= 0 for v in costs.values())


def test_bench_json_carries_the_peer_rows(capsys, tmp_path, restore_logging):
    cfg = tmp_path / "energy.toml"
    cfg.write_text(
        "[spectrogram]\nnfft = 1024\nhop = 512\nwidth = 256\nheight = 128\n\n"
        '[[detectors]]\nname = "energy"\nkind = "energy"\n'
    )
    rc = main(
        [
            "bench",
            "--config",
            str(cfg),
            "--rates",
            "1e6",
            "--chunks",
            "2",
            "--chunk-ms",
            "50",
            "--peers",
            "1",
            "--replay-s",
            "0",
            "--paced-s",
            "0.5",
            "--json",
            "-q",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["detectors"] == ["energy"]
    assert [p["sample_rate_hz"] for p in report["spectrogram_peers"]] == [1e6]
    assert set(report["stage_cpu_ms"][0]) == {"sample_rate_hz", "spectrogram", "detector.energy"}
    assert "spectrogram vs peers" in report["table"]
    assert "replay" not in report
    for row in report["paced"]:  # a live run paced at 20 MS/s, shedding and degrading as the daemon does
        assert row["chunks"] == row["processed"] + row["shed"] >= 2
        assert set(row) >= {"kept_up", "late", "degrade_steps_up", "full_set_share", "arrival_to_publish_ms"}
        assert f"{row['mode']}: {'kept up' if row['kept_up'] else 'did NOT keep up'}" in report["table"]


def test_bench_without_peers_and_a_bad_count(capsys, restore_logging):
    cfg = replace(SMALL, detectors=(DetectorConfig(name="energy", kind="energy"),))
    from rfstream.bench import run_bench

    report = run_bench(cfg, [1e6], chunks=2, peers=0)
    assert "spectrogram_peers" not in report and "spectrogram vs peers" not in report["table"]
    assert main(["bench", "--rates", "1e6", "--peers", "-1"]) != 0
    assert "rfstream: error: --peers must lie in [0, 1000], got -1" in capsys.readouterr().err


def test_bench_times_both_runtimes_and_judges_p50_and_p99_apart(restore_logging):
    cfg = replace(SMALL, detectors=(DetectorConfig(name="energy", kind="energy"),))
    from rfstream.bench import run_bench

    report = run_bench(cfg, [1e6], chunks=3, peers=0)
    assert [r["mode"] for r in report["runs"]] == ["pipelined", "serial"]
    (ratio,) = report["pipelined_vs_serial"]
    assert ratio["ratio_p50"] > 0 and ratio["ratio_p99"] > 0
    for run in report["runs"]:
        assert set(run["keeps_up"]) == {"p50", "p99", "why"}
        assert run["keeps_up"]["why"] in report["table"]
        assert run["stage_cpu_ms_per_chunk"]["spectrogram"] > 0
        assert run["threads"]["pipelined"] == (run["mode"] == "pipelined")
        assert run["arrival_to_publish_ms"]["p99"] >= run["arrival_to_publish_ms"]["p50"] > 0
        assert len(run["core_use"]) == len(os.sched_getaffinity(0)) or run["core_use"]
    assert report["threads"]["cores"] >= 1 and report["threads_line"] in report["table"]


def test_keeps_up_explains_each_case():
    from rfstream.bench import keeps_up

    assert keeps_up(200, 100, 150)["p99"] and keeps_up(200, 100, 150)["why"].startswith("keeps up:")
    mixed = keeps_up(200, 150, 300)
    assert mixed["p50"] and not mixed["p99"] and "not at p99" in mixed["why"]
    assert keeps_up(200, 250, 300)["why"].startswith("FALLS BEHIND")


def test_whole_process_replay_of_a_ci16_recording(tmp_path):
    from rfstream.bench import bench_replay, make_ci16_recording

    meta = make_ci16_recording(tmp_path / "rec", 1e6, 0.5)
    assert (tmp_path / "rec.sigmf-data").stat().st_size == 500_000 * 4  # int16 I and Q
    cfg = tmp_path / "energy.toml"
    cfg.write_text(
        "[spectrogram]\nnfft = 1024\nhop = 512\nwidth = 256\nheight = 128\n\n"
        '[[detectors]]\nname = "energy"\nkind = "energy"\n'
    )
    assert json.loads(meta.read_text())["global"]["core:datatype"] == "ci16_le"
    row = bench_replay(str(cfg), 1e6, 0.5, workdir=tmp_path)
    assert row["mode"] == "pipelined" and row["wall_s"] > 0
    assert 0 < row["first_chunk_s"] < row["wall_s"]
    # both figures are rounded to 2 decimals, so compare them with a relative tolerance
    assert row["realtime_factor"] == pytest.approx(0.5 / row["wall_s"], rel=0.05)
