"""Detections as JSON lines on a stream (``rfstream replay --json``, like rtl_433's ``-F json``).

One line per detection, in the order found: the wire schema's detection
(rfstream/sinks/zmq.py, docs/protocol.md) with the chunk's ``seq`` first, so
``rfstream replay x.sigmf --json | jq`` reads what a ZeroMQ subscriber would
get. Lines are flushed as each chunk is done. A reader that goes away
(``| head``) ends the run quietly.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from rfstream.sinks.zmq import encode_detection
from rfstream.types import ChunkResult

__all__ = ["JsonLinesSink"]


class JsonLinesSink:
    """A Sink writing one JSON object per detection to ``out`` (stdout by default)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out if out is not None else sys.stdout
        self._closed = False

    def publish(self, result: ChunkResult) -> None:
        if self._closed or not result.detections:
            return
        seq = int(result.frame.chunk.seq)
        lines = [
            json.dumps({"seq": seq, **encode_detection(d, result.frame)}, separators=(",", ":"))
            for d in result.detections
        ]
        try:
            self._out.write("\n".join(lines) + "\n")
            self._out.flush()
        except BrokenPipeError:
            # the reader left: stop writing, and keep Python from complaining about stdout at exit
            self._closed = True
            if self._out is sys.stdout:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            raise

    def publish_health(self, health: Mapping[str, Any]) -> None:
        """Health is not part of this output."""

    def close(self) -> None:
        self._closed = True
