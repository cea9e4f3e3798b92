"""ZeroMQ publisher: every chunk's results as msgpack messages on an XPUB socket.

The wire format (topics, payload keys, units, versioning) is documented in
docs/protocol.md; this module is its one writer. Every message is two frames,
``[topic, msgpack(payload)]``, and every payload is a map whose first key is
``"v"``, the schema version.

Publishing never blocks the pipeline: every send is ``NOBLOCK`` against a
bounded queue (SNDHWM) per subscriber, and what does not fit is dropped and
counted. XPUB rather than PUB, so that a new subscription to ``tracks`` can be
answered with a snapshot of the live tracks (a late joiner otherwise waits for
the next event of each track to learn it exists).
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np
import structlog
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from rfstream.config import PublishConfig
from rfstream.errors import SinkError
from rfstream.sinks.base import iso_utc
from rfstream.sinks.endpoints import check_zmq_endpoint, is_local_endpoint
from rfstream.sinks.security import check_publish_security, load_server_certificate
from rfstream.types import ChunkResult, Detection, Frame, Track, TrackEvent

SCHEMA_VERSION = 2  # 2: fused detections (presence, alternatives, group_id, low_confidence)

TOPIC_DETECTIONS = b"detections"
TOPIC_TRACKS = b"tracks"
TOPIC_SPECTROGRAM = b"spectrogram"
TOPIC_HEALTH = b"health"

LINGER_MS = 500  # long enough to flush the last messages at shutdown, short enough never to hang it

_SUBSCRIBE = b"\x01"  # first byte of an XPUB subscription message
_log = structlog.get_logger(__name__)


# --- payloads (plain dicts, "v" first; msgpack keeps insertion order) -----------------------------
def encode_detection(det: Detection, frame: Frame) -> dict[str, Any]:
    return {
        "x0": float(det.x0),
        "y0": float(det.y0),
        "x1": float(det.x1),
        "y1": float(det.y1),
        "t_start_s": float(det.t_start_s),
        "t_stop_s": float(det.t_stop_s),
        "t_start_utc": iso_utc(frame.utc_at(det.t_start_s)),
        "t_stop_utc": iso_utc(frame.utc_at(det.t_stop_s)),
        "f_low_hz": float(det.f_low_hz),
        "f_high_hz": float(det.f_high_hz),
        "score": float(det.score),
        "label": det.label,
        "detector": det.detector,
        "found_by": list(det.found_by),
        "presence": float(det.score if det.presence is None else det.presence),
        "alternatives": {label: float(p) for label, p in det.alternatives},
        "group_id": int(det.group_id),
        "low_confidence": bool(det.low_confidence),
    }


def encode_chunk(result: ChunkResult) -> dict[str, Any]:
    """The ``detections`` payload: one per chunk, even when it found nothing."""
    frame = result.frame
    chunk = frame.chunk
    return {
        "v": SCHEMA_VERSION,
        "seq": int(chunk.seq),
        "t0_s": float(frame.t0_s),
        "t1_s": float(frame.t1_s),
        "start_sample": int(chunk.start_sample),
        "num_samples": chunk.num_samples,
        "sample_rate_hz": float(chunk.sample_rate_hz),
        "center_freq_hz": float(chunk.center_freq_hz),
        "f0_hz": float(frame.f0_hz),
        "f1_hz": float(frame.f1_hz),
        "start_time_utc": iso_utc(chunk.start_time_utc),
        "gap_before_samples": int(chunk.gap_before_samples),
        "late": bool(result.late),
        "timings_ms": {str(k): float(v) for k, v in result.timings_ms.items()},
        "detections": [encode_detection(d, frame) for d in result.detections],
    }


def encode_track(track: Track) -> dict[str, Any]:
    return {
        "track_id": int(track.track_id),
        "label": track.label,
        "f_low_hz": float(track.f_low_hz),
        "f_high_hz": float(track.f_high_hz),
        "first_seen_s": float(track.first_seen_s),
        "last_seen_s": float(track.last_seen_s),
        "hits": int(track.hits),
        "score": float(track.score),
        "state": track.state,
    }


def encode_track_events(seq: int, events: tuple[TrackEvent, ...]) -> dict[str, Any]:
    return {
        "v": SCHEMA_VERSION,
        "seq": int(seq),
        "snapshot": False,
        "events": [{"event": e.kind, "track": encode_track(e.track)} for e in events],
    }


def encode_track_snapshot(seq: int, live: list[Track]) -> dict[str, Any]:
    return {
        "v": SCHEMA_VERSION,
        "seq": int(seq),
        "snapshot": True,
        "events": [],  # a consumer that only follows events sees nothing new here
        "tracks": [encode_track(t) for t in live],
    }


def encode_spectrogram(
    frame: Frame, decimate: int, db_range: tuple[float, float] | None = None
) -> dict[str, Any]:
    """The ``spectrogram`` payload: the image as uint8, max-pooled ``decimate``×``decimate``.

    ``db_range``: the dB above the noise floor that pixel values 0 and 255 stand for (sent as
    ``db_min``/``db_max`` so a viewer can label its colour bar).

    Max rather than every-Nth: a signal one column wide must not vanish from the GUI.
    Reads the frame through its host door (already copied for the detectors).
    """
    image = frame.host_image()
    h, w = int(image.shape[0]) // decimate, int(image.shape[1]) // decimate
    if decimate > 1:
        image = image[: h * decimate, : w * decimate].reshape(h, decimate, w, decimate).max(axis=(1, 3))
    pixels = (image * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    payload = {
        "v": SCHEMA_VERSION,
        "seq": int(frame.chunk.seq),
        "height": h,
        "width": w,
        "dtype": "uint8",
        "t0_s": float(frame.t0_s),
        "dt_s": float(frame.dt_s) * decimate,
        "f0_hz": float(frame.f0_hz),
        "df_hz": float(frame.df_hz) * decimate,
        "data": np.ascontiguousarray(pixels).tobytes(),
    }
    if db_range is not None:
        payload["db_min"], payload["db_max"] = float(db_range[0]), float(db_range[1])
    return payload


def _pack_extra(obj: Any) -> Any:
    """msgpack fallback for what health mappings carry: NumPy scalars/arrays, datetimes, paths."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, _dt.datetime):
        return iso_utc(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot publish a value of type {type(obj).__name__}")


def bind_error(endpoint: str, exc: zmq.ZMQError) -> SinkError:
    if exc.errno == zmq.EADDRINUSE:
        return SinkError(f"ZeroMQ endpoint {endpoint} is already in use")
    if exc.errno == zmq.EADDRNOTAVAIL:
        return SinkError(f"ZeroMQ endpoint {endpoint}: no such address on this host")
    return SinkError(f"ZeroMQ endpoint {endpoint} cannot be bound: {exc.strerror}")


class ZmqPublisher:
    """The ZeroMQ sink. Thread-safe: one lock around the socket, held only for NOBLOCK sends."""

    def __init__(
        self,
        cfg: PublishConfig,
        *,
        context: zmq.Context | None = None,
        db_range: tuple[float, float] | None = None,
    ) -> None:
        check_zmq_endpoint(cfg.endpoint, allow_remote=cfg.allow_remote)
        check_publish_security(cfg)
        self._own_context = context is None
        self._ctx = zmq.Context() if context is None else context
        self._auth: Any = None
        self._sock = self._ctx.socket(zmq.XPUB)
        try:
            self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscriber's subscription, not just the first
            self._sock.setsockopt(zmq.XPUB_NODROP, 1)  # a full subscriber queue is reported: see _send
            self._sock.sndhwm = cfg.sndhwm
            self._sock.linger = LINGER_MS
            if ":" in cfg.endpoint.partition("://")[2].rpartition(":")[0]:
                self._sock.ipv6 = True
            if cfg.curve_secret_key:
                self._enable_curve(cfg)
            try:
                self._sock.bind(cfg.endpoint)
            except zmq.ZMQError as exc:
                raise bind_error(cfg.endpoint, exc) from exc
            self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)  # tcp://127.0.0.1:* -> real port
            if self.endpoint.startswith("ipc://") and not self.endpoint.startswith("ipc://@"):
                try:
                    os.chmod(self.endpoint[len("ipc://") :], 0o600)  # only this user may subscribe
                except OSError as exc:
                    raise SinkError(
                        f"ZeroMQ endpoint {self.endpoint}: cannot restrict access: {exc.strerror}"
                    ) from exc
        except Exception:  # release the socket (and our context) before the error leaves
            self._release()
            raise
        self._packer = msgpack.Packer(default=_pack_extra, use_bin_type=True)
        self._lock = threading.Lock()
        self._configured_decimate = cfg.spectrogram_decimate if cfg.spectrogram else 0
        self._decimate = self._configured_decimate  # 0: not published
        self._db_range = db_range
        self._live: dict[int, Track] = {}
        self._last_seq = -1
        self._sent = 0
        self._dropped = 0  # messages no subscriber got
        self._slow_events = 0  # times a subscriber's full queue began to lose messages
        self._closed = False
        _log.info("publishing", endpoint=self.endpoint, curve=bool(cfg.curve_secret_key), sndhwm=cfg.sndhwm)
        if cfg.allow_remote and not cfg.curve_secret_key and not is_local_endpoint(cfg.endpoint):
            _log.warning(
                "publishing beyond this host without CURVE: detections travel in clear text",
                endpoint=self.endpoint,
            )

    # --- the Sink protocol ---------------------------------------------------------------------
    def publish(self, result: ChunkResult) -> None:
        seq = result.frame.chunk.seq
        with self._lock:
            if self._closed:
                return
            self._answer_subscriptions()  # before this chunk: a snapshot holds the state up to _last_seq
            self._last_seq = seq
            self._send(TOPIC_DETECTIONS, encode_chunk(result))
            if result.track_events:
                self._send_events(result.track_events, seq)
            if self._decimate:
                self._send(
                    TOPIC_SPECTROGRAM, encode_spectrogram(result.frame, self._decimate, self._db_range)
                )

    def publish_track_events(self, events: tuple[TrackEvent, ...], seq: int) -> None:
        """Track events outside a chunk (the tracks ended when the stream ends), as a ``tracks`` message."""
        with self._lock:
            if self._closed or not events:
                return
            self._answer_subscriptions()
            self._send_events(events, seq)

    def publish_health(self, health: Mapping[str, Any]) -> None:
        with self._lock:
            if self._closed:
                return
            self._answer_subscriptions()
            payload: dict[str, Any] = {"v": SCHEMA_VERSION}
            payload.update((k, v) for k, v in health.items() if k != "v")
            payload.setdefault("publish", self._stats())
            self._send(TOPIC_HEALTH, payload)

    def set_spectrogram(self, enabled: bool) -> None:
        """Turn the spectrogram topic off (load shedding) or back to its configured state."""
        self._decimate = self._configured_decimate if enabled else 0

    def stats(self) -> dict[str, int]:
        """Messages sent; times a slow subscriber began to lose messages; messages nobody got."""
        with self._lock:
            return self._stats()

    def _stats(self) -> dict[str, int]:
        return {"sent": self._sent, "slow_subscriber_events": self._slow_events, "dropped": self._dropped}

    def live_tracks(self) -> list[Track]:
        with self._lock:
            return list(self._live.values())

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._release()

    def __enter__(self) -> ZmqPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals -----------------------------------------------------------------------------
    def _send(self, topic: bytes, payload: dict[str, Any]) -> None:
        """Send without ever waiting, and count when a slow subscriber starts to lose messages.

        The socket runs with ``XPUB_NODROP``: libzmq then refuses (EAGAIN) a message that
        a matching subscriber's queue is too full to take, instead of dropping it for that
        subscriber in silence. That is counted (``slow_subscriber_events``) and the message
        is sent again at once in lossy mode, so every subscriber that keeps up still gets
        it. The lossy send parks the full queue, and ZeroMQ skips it without a word until
        its subscriber reads again, which starts a new event when it falls behind again.
        ZeroMQ does not say how many messages a parked subscriber missed: that subscriber
        sees them as a gap in ``seq`` (docs/protocol.md).
        """
        frames = (topic, self._packer.pack(payload))
        try:
            self._sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            self._slow_events += 1
            self._sock.setsockopt(zmq.XPUB_NODROP, 0)
            try:
                self._sock.send_multipart(frames, flags=zmq.NOBLOCK)
            except zmq.Again:  # nobody could take it (cannot happen in lossy mode; counted anyway)
                self._dropped += 1
                return
            finally:
                self._sock.setsockopt(zmq.XPUB_NODROP, 1)
        self._sent += 1

    def _send_events(self, events: tuple[TrackEvent, ...], seq: int) -> None:
        for event in events:
            if event.kind == "end" or event.track.state == "ended":
                self._live.pop(event.track.track_id, None)
            else:
                self._live[event.track.track_id] = event.track
        self._send(TOPIC_TRACKS, encode_track_events(seq, events))

    def _answer_subscriptions(self) -> None:
        """Read pending subscriptions; a new one covering ``tracks`` gets a snapshot of the live tracks.

        Subscriptions are read here, on the publishing thread, because a ZeroMQ socket
        belongs to one thread; so a late joiner's snapshot goes out with the next
        message (the next chunk or health tick), ahead of it.
        """
        wants_snapshot = False
        while True:
            try:
                msg = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if msg[:1] == _SUBSCRIBE and TOPIC_TRACKS.startswith(msg[1:]):
                wants_snapshot = True
        if wants_snapshot:
            self._send(TOPIC_TRACKS, encode_track_snapshot(self._last_seq, list(self._live.values())))

    def _enable_curve(self, cfg: PublishConfig) -> None:
        if not zmq.has("curve"):
            raise SinkError("publish.curve_secret_key is set but this libzmq was built without CURVE")
        public, secret = load_server_certificate(cfg.curve_secret_key)
        keys_dir = cfg.curve_authorized_keys
        self._auth = ThreadAuthenticator(self._ctx)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=keys_dir or zmq.auth.CURVE_ALLOW_ANY)
        self._sock.curve_secretkey = secret
        self._sock.curve_publickey = public
        self._sock.curve_server = True

    def _release(self) -> None:
        self._sock.close(linger=LINGER_MS)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_context:
            self._ctx.term()
