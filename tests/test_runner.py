"""One place assembles a run (rfstream/runner.py): every verb honours the same settings, in the same order.

Real files, real detectors, the real CLI; the internal-error guard is driven in-process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_cli import assert_clean_error, rfstream

import rfstream.cli as cli
import rfstream.runner as runner
from rfstream.config import load_config
from rfstream.sinks.sigmf_annotations import GENERATOR
from rfstream.sources.synth import synthesize

ENERGY_ONLY = "[[detectors]]\nname = 'energy'\nkind = 'energy'\n"


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("runner") / "cap", sample_rate_hz=1e6, duration_s=0.6, seed=5)


def test_replay_fast_honours_publish_annotations(capture, tmp_path):
    """`publish.annotations` is a setting of the run, not of one verb: a lossless replay writes it too."""
    out = tmp_path / "dets.sigmf-meta"
    config = tmp_path / "energy.toml"
    config.write_text(ENERGY_ONLY)
    proc = rfstream(
        "replay",
        str(capture),
        "--config",
        str(config),
        "--no-publish",
        "--set",
        f"publish.annotations={out}",
    )
    assert proc.returncode == 0, proc.stderr
    written = json.loads(out.read_text())
    detected = [a for a in written["annotations"] if a.get("core:generator") == GENERATOR]
    truth = [a for a in written["annotations"] if a.get("core:generator") != GENERATOR]
    assert detected, "the replay's detections were not written"
    assert len(truth) == len(json.loads(capture.read_text())["annotations"])  # the recording's own kept
    assert f"annotations written to {out}" in proc.stderr


def test_a_wrong_recording_fails_before_any_model_loads(tmp_path):
    """The recording is opened before the detectors: a bad path is named even when a model is missing too."""
    config = tmp_path / "missing-model.toml"
    config.write_text("[[detectors]]\nname = 'frame'\nkind = 'onnx'\nmodel = 'no_such_model'\n")
    started = time.monotonic()
    proc = rfstream("replay", str(tmp_path / "nowhere.sigmf-meta"), "--config", str(config), "--no-publish")
    assert_clean_error(proc, "nowhere.sigmf-meta")
    assert "no_such_model" not in proc.stderr
    assert time.monotonic() - started < 60  # a bound on a hang, not a timing assertion


def test_assemble_closes_what_it_opened_when_a_later_step_fails(capture, monkeypatch):
    """A failure while building the detectors must not leak the recording that was already open."""
    cfg = load_config(
        None, overrides={"source.path": str(capture), "publish.endpoint": "", "source.kind": "sigmf"}
    )
    closed = []
    from rfstream import sources

    real_open = sources.open_source

    def tracking_open(source_cfg, **kwargs):
        source = real_open(source_cfg, **kwargs)
        real_close = source.close

        def close():
            closed.append(source)
            real_close()

        source.close = close
        return source

    def broken_build(*_a, **_k):
        raise RuntimeError("detectors cannot be built")

    monkeypatch.setattr(sources, "open_source", tracking_open)
    monkeypatch.setattr(runner, "build_detectors", broken_build)
    with pytest.raises(RuntimeError, match="detectors cannot be built"):
        runner.assemble(cfg, lossless=True)
    assert len(closed) == 1


def _raise_internal(*_a, **_k):
    raise ZeroDivisionError("a bug\nover two lines")


def test_an_unexpected_exception_is_one_line_and_asks_for_a_report(capture, monkeypatch, capsys):
    monkeypatch.setattr(runner, "run_pipeline", _raise_internal)
    code = cli.main(["replay", str(capture), "--no-publish"])
    err = capsys.readouterr().err
    assert code == cli.INTERNAL_ERROR_EXIT
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert (
        lines[-1]
        == "rfstream: error: internal error: ZeroDivisionError: a bug over two lines (please report it)"
    )


def test_the_traceback_of_an_internal_error_appears_with_debug_logging(capture, monkeypatch, capsys):
    monkeypatch.setattr(runner, "run_pipeline", _raise_internal)
    code = cli.main(["replay", str(capture), "--no-publish", "--log-level", "debug"])
    err = capsys.readouterr().err
    assert code == cli.INTERNAL_ERROR_EXIT
    assert "Traceback" in err and "ZeroDivisionError" in err
    assert err.strip().splitlines()[-1].startswith("rfstream: error: internal error:")


def test_a_wrong_path_fails_before_the_pipeline_and_scipy_load(tmp_path):
    """The recording is checked before anything heavy is imported (what makes the error fast)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from rfstream.cli import main\n"
        f"rc = main(['replay', {str(tmp_path / 'nowhere.sigmf-meta')!r}, '--no-publish'])\n"
        "print(rc, sorted(m for m in ('rfstream.pipeline', 'scipy.fft', 'onnxruntime') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "1 []", out.stdout + out.stderr
    assert "nowhere.sigmf-meta" in out.stderr
