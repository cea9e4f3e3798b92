"""A CLI whose words match what it does: verbs, flags and messages as a new user meets them (issue 11 §2)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from test_cli import rfstream

from rfstream.sources.synth import synthesize


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("words") / "cap", sample_rate_hz=1e6, duration_s=0.4, seed=2)


def test_keys_generate_dir_writes_a_pair_into_dir(tmp_path):
    out = tmp_path / "keys"
    proc = rfstream("keys", "generate", str(out), "--name", "gui")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["gui.key", "gui.key_secret"]
    assert stat.S_IMODE((out / "gui.key_secret").stat().st_mode) == 0o600
    assert not (tmp_path / "generate").exists()


def test_keys_without_a_subcommand_names_it(tmp_path):
    proc = rfstream("keys", cwd=tmp_path)
    assert proc.returncode == 2
    assert "rfstream keys: error:" in proc.stderr and "generate" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "usage", "hint"),
    [
        (["replay", "{capture}", "--fsat"], "usage: rfstream replay", "(did you mean --fast?)"),
        (
            ["keys", "generate", "{tmp}", "--nmae", "x"],
            "usage: rfstream keys generate",
            "(did you mean --name?)",
        ),
        (["synth", "{tmp}/x", "--rtae", "1e6"], "usage: rfstream synth", "(did you mean --rate?)"),
    ],
)
def test_an_unknown_flag_shows_the_verbs_usage_and_a_did_you_mean(capture, tmp_path, argv, usage, hint):
    argv = [a.format(capture=capture, tmp=tmp_path) for a in argv]
    proc = rfstream(*argv)
    assert proc.returncode == 2
    assert proc.stderr.startswith(usage), proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "unrecognized arguments" in last and last.endswith(hint), last


def test_quiet_replay_prints_nothing_but_warnings(capture):
    proc = rfstream("replay", str(capture), "--no-publish", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert all("warn" in line.lower() for line in proc.stderr.splitlines()), proc.stderr


def test_human_output_in_a_pipe_has_no_json_log_lines(capture):
    """Under a pipe (not systemd) log lines are plain text, not JSON objects between the summary lines."""
    proc = rfstream("replay", str(capture), "--endpoint", "tcp://127.0.0.1:0", env={"JOURNAL_STREAM": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip(), "expected a summary"
    assert not [line for line in proc.stderr.splitlines() if line.lstrip().startswith("{")], proc.stderr
