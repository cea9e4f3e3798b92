"""configure_logging: structlog and stdlib records in one format."""

from __future__ import annotations

import io
import json
import logging
import warnings
from datetime import datetime

import pytest
import structlog

from rfstream.errors import ConfigError
from rfstream.runtime.logging import configure_logging


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


def test_json_lines_from_structlog_and_stdlib():
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    structlog.get_logger("rfstream.pipeline").info("chunk late", seq=12, lateness_ms=40.5)
    logging.getLogger("somelib").warning("disk %s%% full", 93)
    structlog.get_logger("rfstream.pipeline").debug("not shown at info")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old api", DeprecationWarning, stacklevel=1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    for rec in records:
        assert {"timestamp", "level", "event", "logger"} <= rec.keys()
        assert rec["timestamp"].endswith("Z")
        datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00"))
    assert records[0] == {
        **records[0],
        "event": "chunk late",
        "level": "info",
        "logger": "rfstream.pipeline",
        "seq": 12,
    }
    assert records[1]["event"] == "disk 93% full" and records[1]["level"] == "warning"
    assert records[1]["logger"] == "somelib"
    assert records[2]["logger"] == "py.warnings" and "old api" in records[2]["event"]


def test_json_exceptions_stay_on_one_line():
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger("x").exception("failed")
    (line,) = stream.getvalue().splitlines()
    rec = json.loads(line)
    assert "ValueError: boom" in rec["exception"]


def test_console_is_key_value_and_uncoloured_off_a_tty():
    stream = io.StringIO()
    configure_logging("console", "debug", stream=stream)
    structlog.get_logger("rfstream.sinks").debug("bound", endpoint="tcp://127.0.0.1:5555")
    text = stream.getvalue()
    assert "bound" in text and "endpoint=tcp://127.0.0.1:5555" in text
    assert "\x1b[" not in text


def test_auto_picks_json_under_systemd_and_configuring_twice_does_not_duplicate(monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    first, second = io.StringIO(), io.StringIO()
    configure_logging("auto", stream=first)
    configure_logging("auto", stream=second)
    logging.getLogger("lib").error("once")
    assert first.getvalue() == ""
    (line,) = second.getvalue().splitlines()
    assert json.loads(line)["event"] == "once"


def test_auto_is_plain_console_in_a_pipe_outside_systemd(monkeypatch):
    """Human output piped to a file or `less` gets readable lines, not JSON and not colour codes."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    stream = io.StringIO()
    configure_logging("auto", stream=stream)
    logging.getLogger("lib").warning("plain words")
    text = stream.getvalue()
    assert "plain words" in text and "\x1b[" not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_level_filters_both_worlds():
    stream = io.StringIO()
    configure_logging("json", "error", stream=stream)
    structlog.get_logger("a").warning("hidden")
    logging.getLogger("b").warning("hidden too")
    structlog.get_logger("a").error("shown")
    assert [json.loads(x)["event"] for x in stream.getvalue().splitlines()] == ["shown"]


def test_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match=r"runtime\.log_format"):
        configure_logging("xml")
    with pytest.raises(ConfigError, match=r"runtime\.log_level"):
        configure_logging("json", "loud")
