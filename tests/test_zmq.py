"""The ZeroMQ publisher, against real SUB sockets on loopback."""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from datetime import datetime, timezone

import msgpack
import numpy as np
import pytest
import zmq
import zmq.auth

from rfstream.config import PublishConfig
from rfstream.errors import ConfigError, SinkError
from rfstream.sinks.base import Sink
from rfstream.sinks.zmq import ZmqPublisher
from rfstream.types import Chunk, ChunkResult, Frame, Track, TrackEvent

RATE = 1_000_000.0
CENTER = 100e6
H = W = 32
N_SAMPLES = 3200


def make_result(
    seq: int,
    boxes: tuple[tuple[float, float, float, float], ...] = ((4, 8, 12, 16),),
    events: tuple[TrackEvent, ...] = (),
    *,
    utc: datetime | None = None,
    image: np.ndarray | None = None,
    late: bool = False,
) -> ChunkResult:
    chunk = Chunk(
        iq=np.zeros(N_SAMPLES, np.complex64),
        sample_rate_hz=RATE,
        center_freq_hz=CENTER,
        start_sample=seq * N_SAMPLES,
        seq=seq,
        arrived_ns=time.monotonic_ns(),
        start_time_utc=utc,
    )
    img = np.zeros((H, W), np.float32) if image is None else image
    frame = Frame(
        image=img,
        t0_s=chunk.start_s,
        dt_s=chunk.duration_s / img.shape[0],
        f0_hz=CENTER - RATE / 2,
        df_hz=RATE / img.shape[1],
        chunk=chunk,
    )
    dets = tuple(frame.detection(*b, score=0.75, label="wifi", detector="energy") for b in boxes)
    return ChunkResult(
        frame=frame, detections=dets, track_events=events, timings_ms={"total": 1.5}, late=late
    )


def track(track_id: int, state: str = "confirmed") -> Track:
    return Track(track_id, "wifi", 99.9e6, 100.1e6, 0.0, 0.1, 3, 0.8, state)  # type: ignore[arg-type]


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)  # closes what a failed test left open; term() alone would wait on it


@pytest.fixture
def pub(ctx):
    p = ZmqPublisher(PublishConfig(endpoint="tcp://127.0.0.1:*"), context=ctx)
    yield p
    p.close()


def subscriber(ctx, endpoint: str, *topics: bytes, rcvhwm: int = 1000) -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.linger = 0
    sock.rcvhwm = rcvhwm
    sock.connect(endpoint)
    for t in topics or (b"",):
        sock.subscribe(t)
    return sock


def sync(pub: ZmqPublisher, sub: zmq.Socket) -> None:
    """Publish health pings until the subscriber hears one, then drain: the slow-joiner dance."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pub.publish_health({"ping": 1})
        if sub.poll(50):
            break
    else:
        pytest.fail("subscriber never connected")
    drain(sub)


def drain(sub: zmq.Socket, quiet_ms: int = 100) -> list[tuple[bytes, dict]]:
    out = []
    while sub.poll(quiet_ms):
        topic, raw = sub.recv_multipart()
        out.append((topic, msgpack.unpackb(raw)))
    return out


def recv(sub: zmq.Socket, timeout_ms: int = 3000) -> tuple[bytes, bytes]:
    assert sub.poll(timeout_ms), "no message arrived"
    frames = sub.recv_multipart()
    assert len(frames) == 2
    return frames[0], frames[1]


def test_publisher_is_a_sink(pub):
    assert isinstance(pub, Sink)
    assert pub.endpoint.startswith("tcp://127.0.0.1:") and not pub.endpoint.endswith("*")


def test_one_detections_message_per_chunk_in_order_with_v_first(ctx, pub):
    sub = subscriber(ctx, pub.endpoint, b"detections", b"health")
    sync(pub, sub)
    utc = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    results = [make_result(0, utc=utc), make_result(1, boxes=()), make_result(2, late=True)]
    for r in results:
        pub.publish(r)
    for r in results:
        topic, raw = recv(sub)
        assert topic == b"detections"
        assert raw[1:3] == b"\xa1v"  # on the wire: the map's first key is "v"
        p = msgpack.unpackb(raw)
        assert next(iter(p)) == "v" and p["v"] == 2
        chunk = r.frame.chunk
        assert p["seq"] == chunk.seq
        assert p["start_sample"] == chunk.start_sample
        assert p["sample_rate_hz"] == RATE and p["center_freq_hz"] == CENTER
        assert p["t0_s"] == pytest.approx(r.frame.t0_s) and p["t1_s"] == pytest.approx(r.frame.t1_s)
        assert p["f0_hz"] == pytest.approx(CENTER - RATE / 2) and p["f1_hz"] == pytest.approx(
            CENTER + RATE / 2
        )
        assert p["gap_before_samples"] == 0
        assert p["late"] is r.late
        assert len(p["detections"]) == len(r.detections)
        for got, want in zip(p["detections"], r.detections, strict=True):
            for key in ("x0", "y0", "x1", "y1", "t_start_s", "t_stop_s", "f_low_hz", "f_high_hz", "score"):
                assert got[key] == pytest.approx(getattr(want, key))
            assert got["label"] == "wifi" and got["detector"] == "energy" and got["found_by"] == ["energy"]
            # schema 2: a box fusion did not touch has presence = score, no alternatives, no group
            assert got["presence"] == pytest.approx(want.score) and got["alternatives"] == {}
            assert got["group_id"] == -1 and got["low_confidence"] is False
    first = results[0]
    # UTC where the chunk knows it, nil where it does not
    pub.publish(first)
    p = msgpack.unpackb(recv(sub)[1])
    assert p["start_time_utc"] == "2024-05-01T12:00:00.000000Z"
    det = p["detections"][0]
    expected = first.frame.utc_at(first.detections[0].t_start_s)
    assert datetime.fromisoformat(det["t_start_utc"].replace("Z", "+00:00")) == expected
    pub.publish(results[1])
    assert msgpack.unpackb(recv(sub)[1])["start_time_utc"] is None
    # schema 2: fused boxes carry their runner-up labels as label -> probability
    fused = first.detections[0].replace(
        presence=0.9, alternatives=(("fm", 0.2), ("ook", 0.05)), group_id=4, low_confidence=True
    )
    pub.publish(dataclasses.replace(first, detections=(fused,)))
    got = msgpack.unpackb(recv(sub)[1])["detections"][0]
    assert got["alternatives"] == {"fm": 0.2, "ook": 0.05} and got["presence"] == 0.9
    assert got["group_id"] == 4 and got["low_confidence"] is True


def test_empty_chunk_still_publishes_and_tracks_only_with_events(ctx, pub):
    sub = subscriber(ctx, pub.endpoint)
    sync(pub, sub)
    pub.publish(make_result(0, boxes=()))
    pub.publish(make_result(1, events=(TrackEvent("start", track(7, "tentative"), 1),)))
    got = drain(sub, 300)
    assert [t for t, _ in got] == [b"detections", b"detections", b"tracks"]
    assert got[0][1]["detections"] == []
    tracks = got[2][1]
    assert next(iter(tracks)) == "v"
    assert tracks["snapshot"] is False and tracks["seq"] == 1
    (event,) = tracks["events"]
    assert event["event"] == "start"
    assert event["track"] == {
        "track_id": 7,
        "label": "wifi",
        "f_low_hz": 99.9e6,
        "f_high_hz": 100.1e6,
        "first_seen_s": 0.0,
        "last_seen_s": 0.1,
        "hits": 3,
        "score": 0.8,
        "state": "tentative",
    }


def test_spectrogram_off_by_default_and_max_pooled_when_on(ctx, pub):
    sub = subscriber(ctx, pub.endpoint)
    sync(pub, sub)
    pub.publish(make_result(0))
    assert [t for t, _ in drain(sub, 300)] == [b"detections"]

    spec_pub = ZmqPublisher(
        PublishConfig(endpoint="tcp://127.0.0.1:*", spectrogram=True, spectrogram_decimate=4), context=ctx
    )
    try:
        sub2 = subscriber(ctx, spec_pub.endpoint, b"spectrogram", b"health")
        sync(spec_pub, sub2)
        image = np.zeros((H, W), np.float32)
        image[5, 13] = 1.0  # one hot pixel in an odd column: every-Nth decimation would lose it
        image[31, 0] = 0.5
        r = make_result(3, image=image)
        spec_pub.publish(r)
        topic, raw = recv(sub2)
        assert topic == b"spectrogram"
        p = msgpack.unpackb(raw)
        assert next(iter(p)) == "v"
        assert (p["height"], p["width"], p["dtype"]) == (H // 4, W // 4, "uint8")
        pixels = np.frombuffer(p["data"], np.uint8).reshape(p["height"], p["width"])
        assert pixels[5 // 4, 13 // 4] == 255
        assert pixels[31 // 4, 0] == 128
        assert int(pixels.sum()) == 255 + 128
        assert p["dt_s"] == pytest.approx(r.frame.dt_s * 4) and p["df_hz"] == pytest.approx(r.frame.df_hz * 4)
        assert p["t0_s"] == pytest.approx(r.frame.t0_s) and p["f0_hz"] == pytest.approx(r.frame.f0_hz)
    finally:
        spec_pub.close()


def test_a_stuck_subscriber_is_reported_and_a_reader_loses_nothing(ctx):
    """A subscriber that never reads starts losing messages at its high-water mark: health says so
    (publish.dropped stayed 0 before), while a subscriber that keeps up still receives every one."""
    pub = ZmqPublisher(
        PublishConfig(endpoint="tcp://127.0.0.1:*", sndhwm=64, spectrogram=True, spectrogram_decimate=1),
        context=ctx,
    )
    big = np.random.default_rng(0).random((256, 256), dtype=np.float32)  # 64 KiB per spectrogram
    try:
        stuck = subscriber(ctx, pub.endpoint, rcvhwm=4)  # everything, spectrograms too; never reads
        sync(pub, stuck)
        reader = subscriber(ctx, pub.endpoint, b"detections", b"health")
        sync(pub, reader)
        reader.unsubscribe(b"health")
        got = 0
        n = 1000  # 64 MB of spectrograms: far beyond what the stuck one's queues and socket buffers hold
        for i in range(n):
            pub.publish(make_result(i, image=big))
            # A reader that keeps up: it has each message before the next is published (a loaded
            # machine must not turn this into a race between the publisher and the reader).
            while got <= i and reader.poll(5000):
                got += len(drain(reader, 0))
        got += len(drain(reader, 300))
        stats = pub.stats()
        assert got == n  # the reader missed nothing
        assert stats["slow_subscriber_events"] >= 1  # the stuck one's losses are visible
        assert stats["dropped"] == 0
        stuck.close()
        health = subscriber(ctx, pub.endpoint, b"health")
        sync(pub, health)
        pub.publish_health({"ping": 2})
        _, raw = recv(health)
        assert msgpack.unpackb(raw)["publish"]["slow_subscriber_events"] >= 1
    finally:
        pub.close()


def test_a_subscriber_that_never_reads_does_not_block_publishing(ctx):
    pub = ZmqPublisher(
        PublishConfig(endpoint="tcp://127.0.0.1:*", sndhwm=2, spectrogram=True, spectrogram_decimate=1),
        context=ctx,
    )
    try:
        stalled = subscriber(ctx, pub.endpoint, rcvhwm=2)
        sync(pub, stalled)
        big = np.random.default_rng(0).random((256, 256), dtype=np.float32)  # 64 KiB per spectrogram
        result = make_result(0, image=big)
        n = 3000
        start = time.monotonic()
        for _ in range(n):
            pub.publish(result)
        elapsed = time.monotonic() - start
        assert elapsed < 30, f"publishing {n} chunks took {elapsed:.1f}s"
        stats = pub.stats()
        assert stats["sent"] + stats["dropped"] >= 2 * n
        assert stats["slow_subscriber_events"] > 0  # and that the stalled subscriber lost messages is counted
        # the stalled subscriber holds at most a few messages, far fewer than were published
        assert len(drain(stalled, 200)) < n
    finally:
        pub.close()


def test_endpoint_in_use_is_one_line_sink_error(ctx, pub):
    with pytest.raises(SinkError) as err:
        ZmqPublisher(PublishConfig(endpoint=pub.endpoint), context=ctx)
    assert str(err.value) == f"ZeroMQ endpoint {pub.endpoint} is already in use"
    assert "\n" not in str(err.value)


def test_bad_endpoints(ctx):
    with pytest.raises(ConfigError, match=r"publish\.endpoint"):
        ZmqPublisher(PublishConfig(endpoint="localhost:5555"), context=ctx)
    with pytest.raises(ConfigError, match="has no port"):
        ZmqPublisher(PublishConfig(endpoint="tcp://127.0.0.1"), context=ctx)
    with pytest.raises(ConfigError, match="port 'notaport'"):  # refused before ZeroMQ sees it
        ZmqPublisher(PublishConfig(endpoint="tcp://127.0.0.1:notaport"), context=ctx)


@pytest.mark.parametrize(
    "endpoint", ["tcp://0.0.0.0:5599", "tcp://*:5599", "tcp://eth0:5599", "udp://1.2.3.4:1"]
)
def test_non_loopback_bind_refused_without_allow_remote(ctx, endpoint):
    with pytest.raises(ConfigError, match=r"publish\.endpoint.*not a loopback.*publish\.allow_remote"):
        ZmqPublisher(PublishConfig(endpoint=endpoint), context=ctx)


def test_loopback_spellings_and_allow_remote_bind(ctx):
    for endpoint in ("tcp://localhost:*", "tcp://[::1]:*", "tcp://127.0.0.2:*"):
        ZmqPublisher(PublishConfig(endpoint=endpoint), context=ctx).close()
    # Beyond this host, allow_remote alone is not enough: publishing needs CURVE keys too.
    with pytest.raises(ConfigError, match=r"publish\.curve_secret_key"):
        ZmqPublisher(PublishConfig(endpoint="tcp://0.0.0.0:*", allow_remote=True), context=ctx)


def test_late_joiner_gets_a_snapshot_of_live_tracks(ctx, pub):
    pub.publish(make_result(0, events=(TrackEvent("start", track(1), 0), TrackEvent("start", track(2), 0))))
    pub.publish(
        make_result(1, events=(TrackEvent("end", track(1, "ended"), 1), TrackEvent("update", track(2), 1)))
    )
    assert [t.track_id for t in pub.live_tracks()] == [2]

    seq = 2

    def await_snapshot(sock: zmq.Socket) -> dict:
        nonlocal seq
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pub.publish(make_result(seq, boxes=()))  # subscriptions are answered on the next publish
            seq += 1
            if sock.poll(50):
                return msgpack.unpackb(sock.recv_multipart()[1])
        pytest.fail("no snapshot arrived")

    first = subscriber(ctx, pub.endpoint, b"tracks")
    snapshot = await_snapshot(first)
    assert next(iter(snapshot)) == "v"
    assert snapshot["snapshot"] is True
    assert snapshot["events"] == []
    assert [t["track_id"] for t in snapshot["tracks"]] == [2]
    assert snapshot["tracks"][0]["state"] == "confirmed"
    assert snapshot["seq"] == seq - 2  # the chunk before the one whose publish carried it
    # a second late joiner on the same topic gets one too (XPUB_VERBOSE passes every subscription)
    second = subscriber(ctx, pub.endpoint, b"tracks")
    assert await_snapshot(second)["snapshot"] is True


def test_health_is_published_with_v_first_and_publish_counters(ctx, pub):
    sub = subscriber(ctx, pub.endpoint, b"health")
    sync(pub, sub)
    pub.publish(make_result(0))
    health = {
        "v": 99,  # the publisher owns the version
        "uptime_s": 1.5,
        "chunks": {"received": np.int64(5), "processed": 5, "on_time": 5, "late": 0, "shed": 0},
        "latency_ms": {"total": {"p50": np.float32(3.0), "p95": 4.0, "p99": 5.0}},
        "queue_depths": np.array([1, 0]),
        "device_state": "streaming",
    }
    pub.publish_health(health)
    topic, raw = recv(sub)
    assert topic == b"health"
    p = msgpack.unpackb(raw)
    assert list(p)[:2] == ["v", "uptime_s"] and p["v"] == 2
    assert p["chunks"]["received"] == 5 and p["latency_ms"]["total"]["p50"] == 3.0
    assert p["queue_depths"] == [1, 0]
    assert p["publish"]["sent"] >= 2 and p["publish"]["dropped"] == 0


def test_ipc_socket_is_private(tmp_path, ctx):
    path = tmp_path / "rf.sock"
    pub = ZmqPublisher(PublishConfig(endpoint=f"ipc://{path}"), context=ctx)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        sub = subscriber(ctx, f"ipc://{path}", b"detections", b"health")
        sync(pub, sub)
        pub.publish(make_result(0))
        assert recv(sub)[0] == b"detections"
    finally:
        pub.close()


def test_close_is_idempotent_and_later_publishes_are_ignored(ctx):
    pub = ZmqPublisher(PublishConfig(endpoint="tcp://127.0.0.1:*"))  # its own context, terminated on close
    endpoint = pub.endpoint
    pub.close()
    pub.close()
    pub.publish(make_result(0))
    pub.publish_health({"uptime_s": 1})
    ZmqPublisher(PublishConfig(endpoint=endpoint), context=ctx).close()  # the port was released


def test_curve_encrypts_and_authenticates(tmp_path, ctx):
    if not zmq.has("curve"):
        pytest.skip("libzmq without CURVE")
    server_public, server_secret = zmq.auth.create_certificates(tmp_path, "server")
    os.chmod(server_secret, 0o600)  # pyzmq writes 0644; a readable secret is refused
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    client_public_file, client_secret_file = zmq.auth.create_certificates(tmp_path, "client")
    os.replace(client_public_file, allowed / "client.key")
    cfg = PublishConfig(
        endpoint="tcp://127.0.0.1:*", curve_secret_key=str(server_secret), curve_authorized_keys=str(allowed)
    )
    pub = ZmqPublisher(cfg, context=ctx)
    try:
        good = ctx.socket(zmq.SUB)
        good.linger = 0
        good.curve_publickey, good.curve_secretkey = zmq.auth.load_certificate(client_secret_file)
        good.curve_serverkey = zmq.auth.load_certificate(server_public)[0]
        good.connect(pub.endpoint)
        good.subscribe(b"")
        sync(pub, good)

        plain = subscriber(ctx, pub.endpoint)
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            pub.publish(make_result(0))
            time.sleep(0.05)
        assert not plain.poll(100), "an unauthenticated subscriber received data"
        assert good.poll(100)
    finally:
        pub.close()

    os.chmod(server_public, 0o600)  # so that what is refused is the content, not the mode
    with pytest.raises(ConfigError, match=r"curve_secret_key.*holds no secret key"):
        ZmqPublisher(
            PublishConfig(
                endpoint="tcp://127.0.0.1:*",
                curve_secret_key=str(server_public),  # a public key where the secret one belongs
                curve_authorized_keys=str(allowed),
            ),
            context=ctx,
        )
    with pytest.raises(ConfigError, match="curve_authorized_keys"):  # encryption without a client list
        ZmqPublisher(
            PublishConfig(endpoint="tcp://127.0.0.1:*", curve_secret_key=str(server_secret)), context=ctx
        )


@pytest.mark.cuda
def test_spectrogram_from_a_device_image_matches_the_host_one():
    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except cp.cuda.runtime.CUDARuntimeError:
        pytest.skip("no CUDA device")
    from rfstream.sinks.zmq import encode_spectrogram

    host = np.random.default_rng(1).random((H, W), dtype=np.float32)
    on_host = encode_spectrogram(make_result(0, image=host).frame, 2)
    on_device = encode_spectrogram(make_result(0, image=cp.asarray(host)).frame, 2)
    assert on_device == on_host


def test_track_events_outside_a_chunk_end_live_tracks(ctx, pub):
    sub = subscriber(ctx, pub.endpoint, b"tracks", b"health")
    sync(pub, sub)
    pub.publish(make_result(0, events=(TrackEvent("start", track(4), 0),)))
    pub.publish_track_events((TrackEvent("end", track(4, "ended"), 0),), 0)  # the stream ended
    pub.publish_track_events((), 0)  # nothing to say: no message
    # The late joiner's snapshot goes out with the next message after its subscription is read;
    # on a slow machine that can be the first chunk rather than a sync ping: not what this tests.
    got = [(topic, m) for topic, m in drain(sub, 300) if not m.get("snapshot")]
    assert [(m["seq"], [e["event"] for e in m["events"]]) for _, m in got] == [(0, ["start"]), (0, ["end"])]
    assert pub.live_tracks() == []
