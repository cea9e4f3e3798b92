"""The viewer's feed: the wire decoded (schema 1 and 2), live tracks, history, and per-browser drops.

Messages are made by the publisher's own encoders (rfstream/sinks/zmq.py), packed as on the wire.
"""

from __future__ import annotations

import asyncio
import json
import struct

import msgpack
import numpy as np
import pytest

from rfstream.sinks.zmq import (
    encode_chunk,
    encode_spectrogram,
    encode_track_events,
    encode_track_snapshot,
)
from rfstream.types import Chunk, ChunkResult, Frame, Track, TrackEvent

pytest.importorskip("aiohttp")
zmq_asyncio = pytest.importorskip("zmq.asyncio")

from rfstream.web.feed import Client, Feed  # noqa: E402


def frame(seq: int) -> Frame:
    chunk = Chunk(np.zeros(200_000, np.complex64), 1e6, 100e6, seq * 200_000, seq, 0)
    image = np.zeros((64, 32), np.float32)
    image[10:20, 5:9] = 1.0
    return Frame(image, seq * 0.2, 0.2 / 64, 99.5e6, 1e6 / 32, chunk)


def wire(topic: str, payload: dict) -> list[bytes]:
    return [topic.encode(), msgpack.packb(payload, use_bin_type=True)]


def track(tid: int, state: str = "confirmed") -> Track:
    return Track(tid, "psk", 100.0e6, 100.1e6, 0.0, 0.4, 3, 0.8, state)


@pytest.fixture
def feed():
    ctx = zmq_asyncio.Context()
    f = Feed("inproc://nothing", 0, context=ctx, row_s=0.01, history_s=1.0)
    yield f
    f._sock.close(linger=0)
    ctx.term()


def test_detections_of_both_schema_versions(feed):
    fr = frame(0)
    det = fr.detection(5, 10, 9, 20, score=0.9, label="psk", detector="frame")
    v1 = {**encode_chunk(ChunkResult(fr, (det,), (), {})), "v": 1}
    feed.handle(wire("detections", v1))
    v2 = {**encode_chunk(ChunkResult(frame(1), (det,), (), {})), "v": 2}
    v2["detections"][0].update(
        alternatives={"ook": 0.02, "fsk": 0.07}, presence=0.99, group_id=3, track_id=12, low_confidence=True
    )
    feed.handle(wire("detections", v2))
    assert feed.versions == {1, 2} and feed.counters["newer_schema"] == 0
    first, second = feed.chunks[0]["detections"][0], feed.chunks[1]["detections"][0]
    assert first["label"] == "psk" and first["f_low_hz"] == pytest.approx(99.5e6 + 5 * 1e6 / 32)
    assert second["alternatives"] == [{"label": "fsk", "score": 0.07}, {"label": "ook", "score": 0.02}]
    assert second["low_confidence"] is True and second["presence"] == 0.99
    assert second["group_id"] == 3 and second["track_id"] == 12
    feed.handle(wire("detections", {**v1, "v": 3, "seq": 2}))  # newer: shown as far as it goes, counted
    assert feed.counters["newer_schema"] == 1 and len(feed.chunks) == 3
    feed.handle([b"detections", b"\xc1not msgpack"])
    feed.handle(wire("detections", {"v": 1, "seq": "x"}))
    assert feed.counters["malformed"] == 2


def test_tracks_snapshot_then_events(feed):
    feed.handle(wire("tracks", encode_track_snapshot(4, [track(1), track(2)])))
    assert [t["track_id"] for t in feed.live_tracks()] == [1, 2]
    events = (TrackEvent("start", track(3, "tentative"), 5), TrackEvent("end", track(1, "ended"), 5))
    feed.handle(wire("tracks", encode_track_events(5, events)))
    assert [t["track_id"] for t in feed.live_tracks()] == [2, 3]
    assert feed.ended[0]["track_id"] == 1 and feed.ended[0]["state"] == "ended"


def test_spectrogram_is_pooled_and_history_is_bounded(feed):
    for seq in range(10):
        payload = encode_spectrogram(frame(seq), 2, (-6.0, 44.0))
        feed.handle(wire("spectrogram", payload))
    strip = feed.strips[-1]
    assert strip.rows == 20 and strip.width == 16  # 0.2 s in 10 ms rows; the published 16 columns
    assert strip.db_min == -6.0 and not strip.db_assumed
    pixels = np.frombuffer(strip.pixels, np.uint8).reshape(strip.rows, strip.width)
    assert pixels.max() == 255 and pixels.min() == 0  # max-pooling kept the burst
    assert strip.t1_s - feed.strips[0].t0_s <= 1.0 + 0.2 + 1e-9  # history_s = 1
    message = strip.encode(0)
    (n,) = struct.unpack(">I", message[:4])
    header = json.loads(message[4 : 4 + n])
    assert header["rows"] * header["width"] == len(message) - 4 - n
    assert feed.spectrogram_state() == "ok"


def test_a_slow_browser_loses_frames_not_the_track_table(feed):
    async def scenario():
        slow, fast = Client(maxsize=4), Client(maxsize=1000)
        feed.attach(slow)
        feed.attach(fast)
        for seq in range(10):
            feed.handle(wire("spectrogram", encode_spectrogram(frame(seq), 2)))
        feed.handle(wire("tracks", encode_track_snapshot(9, [track(7)])))
        return slow, fast

    slow, fast = asyncio.run(scenario())
    assert slow.queue.qsize() == 4 and slow.dropped == 7 and slow.resync  # the table is resent next
    assert fast.dropped == 0 and fast.queue.qsize() == 11
    assert feed.status(slow)["this_client"]["dropped"] == 7


def test_a_new_browser_gets_history_tracks_and_health_first(feed):
    feed.handle(wire("spectrogram", encode_spectrogram(frame(0), 2)))
    feed.handle(wire("detections", encode_chunk(ChunkResult(frame(0), (), (), {}))))
    feed.handle(wire("tracks", encode_track_snapshot(0, [track(5)])))
    feed.handle(wire("health", {"v": 1, "realtime_factor": 1.5, "degrade_level": 0}))

    async def attach():
        return feed.attach(Client())

    first = asyncio.run(attach())
    assert isinstance(first[0], bytes)  # the waterfall strip
    kinds = [json.loads(x)["type"] for x in first[1:]]
    assert kinds == ["detections", "tracks", "health", "status"]
    assert json.loads(first[2])["live"][0]["track_id"] == 5


def test_no_spectrogram_topic_is_reported_as_absent(feed, monkeypatch):
    feed.handle(wire("detections", encode_chunk(ChunkResult(frame(0), (), (), {}))))
    assert feed.spectrogram_state() == "waiting"
    feed.first_detections_at -= 10
    assert feed.spectrogram_state() == "absent"
    feed.handle(wire("health", {"v": 1, "degrade_level": 2, "degrade": {"spectrogram_skipped": 3}}))
    assert feed.spectrogram_state() == "paused"
