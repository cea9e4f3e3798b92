"""Logging: structlog in front, the stdlib underneath, one format for both.

``console``: readable ``key=value`` lines, coloured on a terminal. ``json``: one
JSON object per line (``timestamp`` ISO-8601 UTC, ``level``, ``event``,
``logger``, and the bound keys) for journald and log shippers. ``auto`` picks
JSON where systemd connected stderr to the journal (``$JOURNAL_STREAM`` is set)
and console otherwise, so a person running a verb in a pipe or a script never
gets JSON lines in the middle of human output.

structlog events go through the stdlib ``logging`` tree, and one handler on the
root logger renders both them and records from libraries (``logging`` calls,
``warnings.warn`` via ``captureWarnings``) with the same processors.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog

from rfstream.errors import ConfigError

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_FORMATS = ("auto", "console", "json")


class _RfstreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed, so configuring again replaces it."""


def resolve_format(fmt: str) -> str:
    """``auto`` made concrete: ``json`` under systemd's journal (``$JOURNAL_STREAM``), else ``console``."""
    if fmt == "auto":
        return "json" if os.environ.get("JOURNAL_STREAM") else "console"
    return fmt


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog and the stdlib root logger; calling it again replaces the previous setup."""
    stream = sys.stderr if stream is None else stream
    if fmt not in _FORMATS:
        raise ConfigError(f"config key 'runtime.log_format': {fmt!r} is not one of {', '.join(_FORMATS)}")
    if level.lower() not in _LEVELS:
        raise ConfigError(f"config key 'runtime.log_level': {level!r} is not one of {', '.join(_LEVELS)}")
    tty = _isatty(stream)
    fmt = resolve_format(fmt)

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if fmt == "json":
        tail: list[Any] = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        tail = [structlog.dev.ConsoleRenderer(colors=tty)]

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    )
    handler = _RfstreamHandler(stream)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _RfstreamHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level.lower()])
    # Off, then on: whoever swapped warnings.showwarning since the last call (a test runner, an
    # embedding program) gets the hook reinstalled instead of a silent no-op.
    logging.captureWarnings(False)
    logging.captureWarnings(True)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,  # the stdlib level decides, so one setting rules both
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.UnicodeDecoder(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # not cached: a logger made before configure_logging ran must still follow it
        cache_logger_on_first_use=False,
    )


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False
