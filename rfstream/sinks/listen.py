"""``rfstream listen``: a real subscriber that prints what a publisher sends, one line per message."""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import msgpack
import zmq

from rfstream.errors import InputError

DEFAULT_TOPICS = ("detections", "tracks", "health")
SILENCE_NOTICE_S = 5.0  # a line on stderr after this long without a message


def listen(
    endpoint: str,
    topics: Sequence[str] = DEFAULT_TOPICS,
    *,
    count: int | None = None,
    timeout_s: float | None = None,
    json_lines: bool = False,
    out: TextIO = sys.stdout,
    notices: TextIO = sys.stderr,
    silence_notice_s: float = SILENCE_NOTICE_S,
) -> int:
    """Subscribe to ``topics`` at ``endpoint`` and print each message; return how many arrived.

    Stops after ``count`` messages or ``timeout_s`` seconds, whichever comes first
    (neither: runs until interrupted). An empty ``topics`` subscribes to everything.
    While nothing arrives, a line on ``notices`` says so every ``silence_notice_s``
    seconds, so a wrong endpoint or a stopped publisher is not mistaken for a quiet band.
    """
    if count is not None and count <= 0:
        return 0
    render: Callable[[str, dict[str, Any]], str] = _json_line if json_lines else format_message
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.linger = 0
    try:
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise InputError(f"cannot listen on {endpoint!r}: {exc.strerror}") from exc
        for topic in topics or ("",):
            sock.subscribe(topic.encode())
        started = time.monotonic()
        deadline = None if timeout_s is None else started + timeout_s
        silent_since, next_notice = started, started + silence_notice_s
        received = 0
        while count is None or received < count:
            now = time.monotonic()
            wait_ms = int(max(0.0, next_notice - now) * 1000)
            if deadline is not None:
                left_ms = int(max(0.0, deadline - now) * 1000)
                if left_ms == 0:
                    break
                wait_ms = min(wait_ms, left_ms)
            if not sock.poll(max(wait_ms, 1), zmq.POLLIN):
                now = time.monotonic()
                if now >= next_notice and (deadline is None or now < deadline):
                    print(f"# {silence_message(endpoint, now - silent_since)}", file=notices, flush=True)
                    next_notice = now + silence_notice_s
                continue
            silent_since = time.monotonic()
            next_notice = silent_since + silence_notice_s
            frames = sock.recv_multipart()
            try:
                topic, payload = _decode(frames)
            except ValueError as exc:
                print(f"# skipped a malformed message: {exc}", file=out, flush=True)
                continue
            print(render(topic, payload), file=out, flush=True)
            received += 1
        return received
    finally:
        sock.close(linger=0)
        ctx.term()


def silence_message(endpoint: str, seconds: float) -> str:
    return (
        f"no messages from {endpoint} in {round(seconds, 1):g} s "
        "(is rfstream running and publishing there? see publish.endpoint)"
    )


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


def _json_line(topic: str, payload: dict[str, Any]) -> str:
    return json.dumps({"topic": topic, **payload}, default=_json_extra, separators=(",", ":"))


def _json_extra(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode("ascii")
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


KNOWN_VERSIONS = (1, 2)  # 2 adds keys to each detection; every key is read with a default


# --- readable lines ------------------------------------------------------------------------------
def _mhz(hz: Any) -> str:
    return f"{float(hz) / 1e6:.4f}"


def _det(d: dict[str, Any]) -> str:
    line = (
        f"{d.get('label', '?')} {_mhz(d.get('f_low_hz', 0))}-{_mhz(d.get('f_high_hz', 0))} MHz "
        f"{float(d.get('t_start_s', 0)):.3f}-{float(d.get('t_stop_s', 0)):.3f}s "
        f"score={float(d.get('score', 0)):.2f} by={','.join(d.get('found_by') or [d.get('detector', '?')])}"
    )
    alternatives = d.get("alternatives")
    if isinstance(alternatives, dict) and alternatives:  # schema 2: label -> probability
        ranked = sorted(alternatives.items(), key=lambda kv: -float(kv[1]))
        line += " or=" + ",".join(f"{k}:{float(v):.2f}" for k, v in ranked)
    if isinstance(d.get("group_id"), int) and d["group_id"] >= 0:
        line += f" group={d['group_id']}"
    if d.get("low_confidence"):
        line += " LOW"
    return line


def _track(t: dict[str, Any]) -> str:
    return (
        f"#{t.get('track_id')} {t.get('label', '?')} {_mhz(t.get('f_low_hz', 0))}-{_mhz(t.get('f_high_hz', 0))} MHz "
        f"{t.get('state', '?')} hits={t.get('hits')} score={float(t.get('score', 0)):.2f}"
    )


def format_message(topic: str, p: dict[str, Any]) -> str:
    """One readable line for one message; unknown topics and versions print their keys."""
    if p.get("v") not in KNOWN_VERSIONS:
        return f"{topic} (schema v{p.get('v')}, unknown to this client) keys={','.join(map(str, p))}"
    if topic == "detections":
        dets = p.get("detections", [])
        head = f"detections seq={p.get('seq')} t={float(p.get('t0_s', 0)):.3f}-{float(p.get('t1_s', 0)):.3f}s n={len(dets)}"
        if p.get("late"):
            head += " LATE"
        if p.get("gap_before_samples"):
            head += f" gap={p['gap_before_samples']}"
        return " | ".join([head, *map(_det, dets)])
    if topic == "tracks":
        if p.get("snapshot"):
            live = p.get("tracks", [])
            return " | ".join([f"tracks snapshot seq={p.get('seq')} live={len(live)}", *map(_track, live)])
        events = p.get("events", [])
        return " | ".join(
            [
                f"tracks seq={p.get('seq')}",
                *(f"{e.get('event')} {_track(e.get('track', {}))}" for e in events),
            ]
        )
    if topic == "health":
        chunks = p.get("chunks", {})
        pub = p.get("publish", {})
        return (
            f"health uptime={float(p.get('uptime_s', 0)):.1f}s "
            f"chunks={chunks.get('processed', '?')}/{chunks.get('received', '?')} late={chunks.get('late', '?')} "
            f"shed={chunks.get('shed', '?')} rtf={p.get('realtime_factor', '?')} degrade={p.get('degrade_level', '?')} "
            f"device={p.get('device_state', '?')} sent={pub.get('sent', '?')} dropped={pub.get('dropped', '?')}"
        )
    if topic == "spectrogram":
        return (
            f"spectrogram seq={p.get('seq')} {p.get('height')}x{p.get('width')} {p.get('dtype')} "
            f"t0={float(p.get('t0_s', 0)):.3f}s dt={float(p.get('dt_s', 0)) * 1e3:.3f}ms "
            f"f0={_mhz(p.get('f0_hz', 0))} MHz df={float(p.get('df_hz', 0)):.1f} Hz"
        )
    return f"{topic} " + json.dumps(p, default=lambda o: f"<{len(o)} bytes>", separators=(",", ":"))
