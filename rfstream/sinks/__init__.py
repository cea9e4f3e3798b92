"""Sinks: where results leave rfstream.

- ``rfstream.sinks.zmq.ZmqPublisher`` — ZeroMQ (X)PUB + msgpack, the wire format in docs/protocol.md
- ``rfstream.sinks.sigmf_annotations.AnnotationWriter`` — detections as SigMF annotations
- ``rfstream.sinks.listen.listen`` — the subscriber behind ``rfstream listen``

Each sink follows the small ``Sink`` protocol in ``rfstream.sinks.base``.
"""

from __future__ import annotations

from rfstream.sinks.base import Sink, SpectrogramSink, TrackSink, iso_utc

__all__ = ["Sink", "SpectrogramSink", "TrackSink", "iso_utc"]
