"""One ZeroMQ subscriber per endpoint, and what a browser needs from it.

A :class:`Feed` subscribes to every topic of one publisher (``rfstream run``,
``replay --realtime`` or a ``proxy`` backend) on the viewer's asyncio loop and
keeps:

- the live tracks (a ``tracks`` snapshot replaces the table, events update it;
  the publisher sends a snapshot when the viewer subscribes, so the viewer is a
  late joiner like any other), and the tracks that ended lately;
- the latest ``health`` message;
- the last ``history_s`` seconds of waterfall, max-pooled in time to rows of
  ``row_s`` (so a minute costs a few MB, and a one-row burst survives), and the
  detections of those seconds.

Browsers are :class:`Client` queues. The feed never waits on one: a message that
does not fit a client's queue is dropped for that client and counted; a dropped
``tracks`` message makes that client's next message a fresh track table, so a
slow browser loses pictures, never the truth of what is live.

Wire versions: schema 1 is read as documented in docs/protocol.md, and schema 2
(fused detections with ``alternatives`` (label -> probability), ``presence``,
``group_id``, ``track_id``, ``low_confidence``) the same way;
every key is read with a default, so keys a version adds or lacks do not matter.
A message of a newer version is still shown as far as its keys allow, and
counted.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import structlog
import zmq
import zmq.asyncio

from rfstream.web.http import dumps

__all__ = ["KNOWN_VERSIONS", "Client", "Feed", "pool_rows"]

log = structlog.get_logger(__name__)

KNOWN_VERSIONS = (1, 2)
TOPICS = (b"detections", b"tracks", b"spectrogram", b"health")
ENDED_KEPT = 50  # ended tracks shown below the live ones
MAX_COLUMNS = 1024  # a browser gets at most this many frequency columns
DEFAULT_DB = (-6.0, 44.0)  # the default spectrogram scale, for publishers that do not send theirs
SPECTROGRAM_GRACE_S = 3.0  # detections without any spectrogram for this long: tell the user how to turn it on


@dataclass(eq=False)  # compared and hashed by identity: a feed keeps a set of them
class Client:
    """One browser's queue. Items are ``str`` (JSON) or ``bytes`` (a waterfall strip)."""

    maxsize: int = 64
    queue: asyncio.Queue[str | bytes] = field(init=False)
    sent: int = 0
    dropped: int = 0
    resync: bool = False  # a tracks message was dropped: send the whole table next

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.maxsize)

    def offer(self, item: str | bytes, *, essential: bool = False) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            if essential:
                self.resync = True


def pool_rows(pixels: np.ndarray, rows_out: int, cols_out: int) -> np.ndarray:
    """Max-pool a uint8 image to ``rows_out`` × ``cols_out`` (or fewer where it is smaller)."""
    h, w = pixels.shape
    r = np.linspace(0, h, min(max(1, rows_out), h) + 1).astype(int)
    c = np.linspace(0, w, min(max(1, cols_out), w) + 1).astype(int)
    return np.maximum.reduceat(np.maximum.reduceat(pixels, r[:-1], axis=0), c[:-1], axis=1)


@dataclass(frozen=True, slots=True)
class Strip:
    """Waterfall rows of one chunk, pooled: ``rows`` × ``width`` uint8, row 0 oldest."""

    seq: int
    t0_s: float
    t1_s: float
    f0_hz: float
    f1_hz: float
    rows: int
    width: int
    db_min: float
    db_max: float
    db_assumed: bool
    pixels: bytes

    def encode(self, endpoint: int) -> bytes:
        """A binary WebSocket message: 4-byte big-endian header length, JSON header, pixels."""
        header = json.dumps(
            {
                "type": "strip",
                "endpoint": endpoint,
                "seq": self.seq,
                "t0_s": self.t0_s,
                "t1_s": self.t1_s,
                "f0_hz": self.f0_hz,
                "f1_hz": self.f1_hz,
                "rows": self.rows,
                "width": self.width,
                "db_min": self.db_min,
                "db_max": self.db_max,
                "db_assumed": self.db_assumed,
            },
            separators=(",", ":"),
        ).encode()
        return struct.pack(">I", len(header)) + header + self.pixels


class Feed:
    """Subscribes to one endpoint; see the module docstring."""

    def __init__(
        self,
        endpoint: str,
        index: int,
        *,
        context: zmq.asyncio.Context,
        row_s: float = 0.01,
        history_s: float = 120.0,
        rcvhwm: int = 1000,
    ) -> None:
        self.endpoint = endpoint
        self.index = index
        self.row_s = row_s
        self.history_s = history_s
        self._sock = context.socket(zmq.SUB)
        self._sock.linger = 0
        self._sock.rcvhwm = rcvhwm
        try:
            self._sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close()
            from rfstream.errors import ConfigError

            raise ConfigError(f"endpoint {endpoint!r}: {exc.strerror}") from exc
        for topic in TOPICS:
            self._sock.subscribe(topic)
        self.clients: set[Client] = set()
        self.tracks: dict[int, dict[str, Any]] = {}
        self.ended: deque[dict[str, Any]] = deque(maxlen=ENDED_KEPT)
        self.tracks_seq = -1
        self.health: dict[str, Any] | None = None
        self.health_at: float | None = None
        self.strips: deque[Strip] = deque()
        self.chunks: deque[dict[str, Any]] = deque()  # detections messages, as sent to browsers
        self.counters: dict[str, int] = {
            "messages": 0,
            "detections": 0,
            "tracks": 0,
            "spectrogram": 0,
            "health": 0,
            "other_topics": 0,
            "malformed": 0,
            "newer_schema": 0,
            "seq_gaps": 0,
            "restarts": 0,
            "snapshots": 0,
        }
        self.versions: set[int] = set()
        self.last_seq = -1
        self.last_message_at: float | None = None
        self.first_detections_at: float | None = None
        self.spectrogram_at: float | None = None
        self._tracks_dirty = False

    # --- receiving ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Receive until cancelled; a malformed message is counted and skipped."""
        try:
            while True:
                frames = await self._sock.recv_multipart()
                self.handle(frames)
        finally:
            self._sock.close(linger=0)

    def handle(self, frames: list[bytes]) -> None:
        self.counters["messages"] += 1
        self.last_message_at = time.monotonic()
        try:
            topic, payload = _decode(frames)
        except ValueError as exc:
            self.counters["malformed"] += 1
            log.debug("malformed message", endpoint=self.endpoint, error=str(exc))
            return
        version = payload.get("v")
        if isinstance(version, int):
            self.versions.add(version)
            if version not in KNOWN_VERSIONS:
                self.counters["newer_schema"] += 1
        handler: Callable[[dict[str, Any]], None] | None = {
            "detections": self._on_detections,
            "tracks": self._on_tracks,
            "spectrogram": self._on_spectrogram,
            "health": self._on_health,
        }.get(topic)
        if handler is None:
            self.counters["other_topics"] += 1
            return
        self.counters[topic] += 1
        try:
            handler(payload)
        except (KeyError, TypeError, ValueError) as exc:  # a payload that lacks what its topic needs
            self.counters["malformed"] += 1
            log.debug("unusable message", endpoint=self.endpoint, topic=topic, error=str(exc))

    def _on_detections(self, p: dict[str, Any]) -> None:
        seq = int(p.get("seq", -1))
        t0, t1 = _num(p.get("t0_s")), _num(p.get("t1_s"))
        if self.last_seq >= 0 and seq >= 0:
            # a new run starts at seq 0 (several publishers behind one proxy interleave, not restart)
            if seq < self.last_seq and seq <= 2:
                self._restart()
            elif seq > self.last_seq + 1:
                self.counters["seq_gaps"] += seq - self.last_seq - 1
        self.last_seq = max(self.last_seq, seq) if seq >= 0 else self.last_seq
        if self.first_detections_at is None:
            self.first_detections_at = time.monotonic()
        message = {
            "type": "detections",
            "endpoint": self.index,
            "seq": seq,
            "t0_s": t0,
            "t1_s": t1,
            "center_freq_hz": _num(p.get("center_freq_hz")),
            "f0_hz": _num(p.get("f0_hz")),
            "f1_hz": _num(p.get("f1_hz")),
            "late": bool(p.get("late", False)),
            "gap_before_samples": int(p.get("gap_before_samples", 0) or 0),
            "start_time_utc": p.get("start_time_utc"),
            "detections": [_detection(d) for d in p.get("detections") or [] if isinstance(d, dict)],
        }
        self.chunks.append(message)
        self._trim(t1)
        self._broadcast(dumps(message))

    def _on_tracks(self, p: dict[str, Any]) -> None:
        self.tracks_seq = int(p.get("seq", self.tracks_seq))
        if p.get("snapshot"):
            self.counters["snapshots"] += 1
            self.tracks = {}
            for t in p.get("tracks") or []:
                if isinstance(t, dict) and "track_id" in t:
                    self.tracks[int(t["track_id"])] = _track(t)
        for e in p.get("events") or []:
            if not isinstance(e, dict) or not isinstance(e.get("track"), dict):
                continue
            t = _track(e["track"])
            if e.get("event") == "end" or t.get("state") == "ended":
                self.tracks.pop(t["track_id"], None)
                self.ended.appendleft({**t, "state": "ended"})
            else:
                self.tracks[t["track_id"]] = t
        self._broadcast(self.tracks_message(), essential=True)

    def _on_spectrogram(self, p: dict[str, Any]) -> None:
        h, w = int(p["height"]), int(p["width"])
        if p.get("dtype", "uint8") != "uint8":
            raise ValueError(f"spectrogram dtype {p.get('dtype')!r} is not uint8")
        data = p["data"]
        if not isinstance(data, bytes | bytearray) or len(data) != h * w or h < 1 or w < 1:
            raise ValueError("spectrogram data does not match height x width")
        dt, df = _num(p.get("dt_s")), _num(p.get("df_hz"))
        t0, f0 = _num(p.get("t0_s")), _num(p.get("f0_hz"))
        if not all(map(math.isfinite, (dt, df, t0, f0))) or dt <= 0 or df <= 0:
            raise ValueError("spectrogram axes are not finite and positive")
        self.spectrogram_at = time.monotonic()
        pixels = np.frombuffer(data, dtype=np.uint8).reshape(h, w)
        rows = max(1, round(h * dt / self.row_s))
        pooled = pool_rows(pixels, rows, MAX_COLUMNS)
        db_min, db_max = p.get("db_min"), p.get("db_max")
        assumed = not (isinstance(db_min, int | float) and isinstance(db_max, int | float))
        if assumed:
            db_min, db_max = DEFAULT_DB
        strip = Strip(
            seq=int(p.get("seq", -1)),
            t0_s=t0,
            t1_s=t0 + h * dt,
            f0_hz=f0,
            f1_hz=f0 + w * df,
            rows=int(pooled.shape[0]),
            width=int(pooled.shape[1]),
            db_min=float(db_min),
            db_max=float(db_max),
            db_assumed=assumed,
            pixels=np.ascontiguousarray(pooled).tobytes(),
        )
        self.strips.append(strip)
        self._trim(strip.t1_s)
        self._broadcast(strip.encode(self.index))

    def _on_health(self, p: dict[str, Any]) -> None:
        self.health = p
        self.health_at = time.monotonic()
        self._broadcast(dumps({"type": "health", "endpoint": self.index, "health": p}))

    def _restart(self) -> None:
        """The publisher started over (a new run): forget its history."""
        self.counters["restarts"] += 1
        self.strips.clear()
        self.chunks.clear()
        self.tracks.clear()
        self.ended.clear()
        self.last_seq = -1
        self._broadcast(dumps({"type": "reset", "endpoint": self.index}), essential=True)

    def _trim(self, newest_s: float) -> None:
        while self.strips and self.strips[0].t1_s < newest_s - self.history_s:
            self.strips.popleft()
        while self.chunks and self.chunks[0]["t1_s"] < newest_s - self.history_s:
            self.chunks.popleft()

    # --- browsers ----------------------------------------------------------------------------------
    def _broadcast(self, item: str | bytes, *, essential: bool = False) -> None:
        for client in self.clients:
            client.offer(item, essential=essential)

    def attach(self, client: Client) -> list[str | bytes]:
        """Register a browser; returns what it must see first (history, tracks, health), in order.

        Synchronous on purpose: nothing can arrive between the copy of the history and the
        registration, so the browser sees every message exactly once.
        """
        first: list[str | bytes] = [s.encode(self.index) for s in self.strips]
        first.extend(dumps(c) for c in self.chunks)
        first.append(self.tracks_message())
        if self.health is not None:
            first.append(dumps({"type": "health", "endpoint": self.index, "health": self.health}))
        first.append(dumps(self.status()))
        self.clients.add(client)
        return first

    def detach(self, client: Client) -> None:
        self.clients.discard(client)

    def tracks_message(self) -> str:
        return dumps(
            {
                "type": "tracks",
                "endpoint": self.index,
                "seq": self.tracks_seq,
                "live": sorted(self.tracks.values(), key=lambda t: t["track_id"]),
                "ended": list(self.ended),
            }
        )

    # --- what the page and /api show about the feed itself -----------------------------------------
    def spectrogram_state(self) -> str:
        """``ok``, ``absent`` (the publisher does not send it), ``paused`` (degrade level 2) or ``waiting``."""
        now = time.monotonic()
        if self.spectrogram_at is not None and now - self.spectrogram_at < SPECTROGRAM_GRACE_S:
            return "ok"
        health = self.health or {}
        level = health.get("degrade_level")
        skipped = (health.get("degrade") or {}).get("spectrogram_skipped")
        if isinstance(level, int) and level >= 2 and (self.spectrogram_at is not None or skipped):
            return "paused"
        if self.first_detections_at is not None and now - self.first_detections_at >= SPECTROGRAM_GRACE_S:
            return "absent"
        return "waiting"

    def status(self, client: Client | None = None) -> dict[str, Any]:
        now = time.monotonic()
        out: dict[str, Any] = {
            "type": "status",
            "endpoint": self.index,
            "address": self.endpoint,
            "spectrogram": self.spectrogram_state(),
            "last_message_age_s": None
            if self.last_message_at is None
            else round(now - self.last_message_at, 3),
            "health_age_s": None if self.health_at is None else round(now - self.health_at, 3),
            "schema_versions": sorted(self.versions),
            "counters": dict(self.counters),
            "history_s": round(self.strips[-1].t1_s - self.strips[0].t0_s, 3) if self.strips else 0.0,
            "clients": len(self.clients),
            "client_drops": sum(c.dropped for c in self.clients),
        }
        if client is not None:
            out["this_client"] = {"sent": client.sent, "dropped": client.dropped}
        return out

    def live_tracks(self) -> list[dict[str, Any]]:
        return sorted(self.tracks.values(), key=lambda t: t["track_id"])


# --- decoding, tolerant of the schema version -----------------------------------------------------
def _decode(frames: list[bytes]) -> tuple[str, dict[str, Any]]:
    if len(frames) != 2:
        raise ValueError(f"{len(frames)} frames, expected 2")
    try:
        payload = msgpack.unpackb(frames[1], raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"payload is not msgpack: {exc}") from exc
    if not isinstance(payload, dict):
        raise ValueError("payload is not a map")
    return frames[0].decode("utf-8", "replace"), payload


def _num(value: Any, default: float = math.nan) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def _detection(d: dict[str, Any]) -> dict[str, Any]:
    """What the page draws and lists; version 2's extra keys pass through when present."""
    out: dict[str, Any] = {
        "t_start_s": _num(d.get("t_start_s")),
        "t_stop_s": _num(d.get("t_stop_s")),
        "f_low_hz": _num(d.get("f_low_hz")),
        "f_high_hz": _num(d.get("f_high_hz")),
        "score": _num(d.get("score"), 0.0),
        "label": str(d.get("label", "unknown")),
        "detector": str(d.get("detector", "")),
        "found_by": [str(x) for x in d.get("found_by") or [] if isinstance(x, str)],
    }
    alternatives = d.get("alternatives")
    if isinstance(alternatives, dict):  # schema 2: label -> probability
        ranked = sorted(alternatives.items(), key=lambda kv: -_num(kv[1], 0.0))
        out["alternatives"] = [{"label": str(k), "score": _num(v, 0.0)} for k, v in ranked[:4]]
    elif isinstance(alternatives, list):  # a list of pairs or maps, as a reader may meet elsewhere
        out["alternatives"] = [_alternative(a) for a in alternatives[:4]]
    for key in ("presence", "group_id", "track_id", "low_confidence"):
        if key in d:
            out[key] = d[key]
    return out


def _alternative(a: Any) -> dict[str, Any]:
    """A runner-up label given as ``{"label", "score"}`` or as ``[label, score]``."""
    if isinstance(a, dict):
        return {"label": str(a.get("label", "?")), "score": _num(a.get("score"), 0.0)}
    if isinstance(a, list | tuple) and len(a) == 2:
        return {"label": str(a[0]), "score": _num(a[1], 0.0)}
    return {"label": str(a), "score": 0.0}


def _track(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "track_id": int(t["track_id"]),
        "label": str(t.get("label", "unknown")),
        "f_low_hz": _num(t.get("f_low_hz")),
        "f_high_hz": _num(t.get("f_high_hz")),
        "first_seen_s": _num(t.get("first_seen_s")),
        "last_seen_s": _num(t.get("last_seen_s")),
        "hits": int(t.get("hits", 0) or 0),
        "score": _num(t.get("score"), 0.0),
        "state": str(t.get("state", "")),
    }
