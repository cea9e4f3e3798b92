"""The sink protocol: where a chunk's results go once the pipeline is done with them.

A sink is a value with three methods. The pipeline hands every ChunkResult to
every sink in order, a health mapping about once a second, and closes them
once at shutdown. Publishing never blocks the pipeline: a sink that cannot
keep up drops and counts, it does not wait.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable

from rfstream.types import ChunkResult, TrackEvent


@runtime_checkable
class Sink(Protocol):
    def publish(self, result: ChunkResult) -> None:
        """Hand on one chunk's results; never blocks, never raises for a slow consumer."""

    def publish_health(self, health: Mapping[str, Any]) -> None:
        """Hand on the pipeline's health snapshot (sinks that have no use for it ignore it)."""

    def close(self) -> None:
        """Flush and release; calling it again does nothing."""


@runtime_checkable
class SpectrogramSink(Protocol):
    """A sink that publishes the spectrogram and can stop doing so (degrade level 2)."""

    def set_spectrogram(self, enabled: bool) -> None: ...


@runtime_checkable
class TrackSink(Protocol):
    """A sink that wants the track events of the stream's end (tracks ended at shutdown)."""

    def publish_track_events(self, events: tuple[TrackEvent, ...], seq: int) -> None: ...


def iso_utc(when: datetime | None) -> str | None:
    """ISO-8601 UTC with a trailing Z (naive datetimes are taken as UTC), or None."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
