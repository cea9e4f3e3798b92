"""`rfstream view` in a real browser (Debian's headless Chromium, driven by Playwright), against a
realtime replay of a capture with one known burst, and its HTTP API with a real client.

The browser tests skip where /usr/bin/chromium or Playwright is absent. Screenshots go to the
test's temporary folder, and also to $VIEWER_SCREENSHOT_DIR when it is set (that is how
docs/img/viewer.png is made: `VIEWER_SCREENSHOT_DIR=docs/img python -m pytest tests/test_web_viewer.py`,
as a 256-colour copy).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import msgpack
import pytest
import zmq
from web_helpers import free_port, http, overlaps, running, write_known_burst

pytest.importorskip("aiohttp")

CHROMIUM = "/usr/bin/chromium"
LOOP_S = 4.0  # the known-burst capture's length: a looping replay repeats the burst this often
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

# Cheap enough to stay real-time on a busy 2-core machine: the energy detector and the frame model;
# no degrading (the waterfall must keep coming) and no deadline shedding (the burst's chunk must be seen).
CONFIG = """
[runtime]
degrade = false
deadline_ms = 30000
queue_depth = 64

[[detectors]]
name = "energy"
kind = "energy"
priority = 2

[[detectors]]
name = "frame"
kind = "onnx"
model = "frame_detector"
priority = 1
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A realtime, looping replay of the known-burst capture, publishing the spectrogram, and a viewer."""
    folder = tmp_path_factory.mktemp("viewer")
    meta, burst = write_known_burst(folder / "burst")
    cfg = folder / "viewer-test.toml"
    cfg.write_text(CONFIG)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    # our own subscriber, connected before the replay starts: it times the stream's first chunk
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.subscribe(b"detections")
    sub.connect(endpoint)
    replay_args = ("replay", str(meta), "--realtime", "--loop", "--spectrogram", "--endpoint", endpoint)
    with (
        running(*replay_args, "--config", str(cfg), "-q") as replay,
        running("view", endpoint, "--listen", "127.0.0.1:0") as viewer,
    ):
        url = viewer.url("view")
        try:
            yield {"url": url, "burst": burst, "sub": sub, "replay": replay, "endpoint": endpoint}
        finally:
            sub.close()
            ctx.term()


def first_chunk_wall_time(live, timeout_s: float = 120.0) -> float:
    """Wall time when the stream's sample 0 was 'on the air' (seq 0 arrived minus its chunk and its work)."""
    sub, replay = live["sub"], live["replay"]
    deadline = time.monotonic() + timeout_s
    while not sub.poll(200) and time.monotonic() < deadline and replay.popen.poll() is None:
        pass
    assert sub.poll(0), "no detections message from the replay:\n" + "".join(replay.stderr[-20:])
    arrived = time.time()
    payload = msgpack.unpackb(sub.recv_multipart()[1], raw=False)
    assert payload["seq"] == 0, f"the first message seen was seq {payload['seq']}, not 0"
    work_s = sum(v for k, v in payload["timings_ms"].items() if not k.startswith("detector.")) / 1e3
    return arrived - (payload["t1_s"] - payload["t0_s"]) - work_s


def launch(playwright, folder: str):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return playwright.chromium.launch_persistent_context(
        folder,
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1440, "height": 1010},
    )


def wait_for_box(page, burst, deadline: float):
    """The first labelled box the page draws over ``burst`` before ``deadline``, and when it appeared."""
    while time.time() < deadline:
        for box in page.evaluate("window.rfstreamViewer.drawn()"):
            if overlaps(box, burst) and box["text"]:
                return box, time.time()
        time.sleep(0.05)
    return None, None


def watch_pass(page, sub, burst, deadline: float):
    """Watch the publisher (our own subscriber) and the page for ``burst``: (box, drawn at, published at)."""
    published_at = None

    def drain() -> None:
        nonlocal published_at
        while sub.poll(0):
            arrived = time.time()
            payload = msgpack.unpackb(sub.recv_multipart()[1], raw=False)
            if published_at is None and any(overlaps(d, burst) for d in payload["detections"]):
                published_at = arrived

    while time.time() < deadline:
        drain()
        for box in page.evaluate("window.rfstreamViewer.drawn()"):
            if overlaps(box, burst) and box["text"]:
                drawn_at = time.time()
                drain()  # our own copy may have arrived while the page was being asked
                return box, drawn_at, published_at
        time.sleep(0.05)
    return None, None, published_at


def outline_pixels(page, box) -> int:
    """How many pixels in and around a drawn box are in its label's colour (its outline, its label)."""
    x0, y0, x1, y1 = box["box"]
    colour = box["colour"].lstrip("#")
    return page.evaluate(
        """([x, y, w, h, rgb]) => {
            const d = document.getElementById('waterfall').getContext('2d').getImageData(x, y, w, h).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4)
                if (Math.max(Math.abs(d[i] - rgb[0]), Math.abs(d[i + 1] - rgb[1]), Math.abs(d[i + 2] - rgb[2])) < 40) n++;
            return n; }""",
        [
            math.floor(x0) - 2,
            math.floor(y0) - 2,
            math.ceil(x1 - x0) + 4,
            math.ceil(y1 - y0) + 4,
            [int(colour[i : i + 2], 16) for i in (0, 2, 4)],
        ],
    )


def canvas_digest(page) -> str:
    data = page.evaluate("document.getElementById('waterfall').toDataURL('image/png')")
    return hashlib.sha256(data.encode()).hexdigest()


def save_screenshot(page, tmp_path: Path, name: str, *, for_docs: bool = False) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=False)
    target = os.environ.get("VIEWER_SCREENSHOT_DIR")
    if target and for_docs:  # the copy for the docs: 256 colours, so the repository stays small
        from PIL import Image

        Path(target).mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            im.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(Path(target) / name, optimize=True)
    return path


def test_the_page_shows_a_moving_labelled_waterfall(live, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    burst = live["burst"]
    on_air = first_chunk_wall_time(live)
    errors: list[str] = []
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser = launch(p, profile)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(live["url"] + "/")
            # the page opened after the replay began: its history (kept by the viewer) still shows
            # the burst's first pass. Scrolled back to it as a user would: on a busy machine the
            # browser starts later than the few seconds the live view shows.
            page.wait_for_function(
                "window.rfstreamViewer.frames() > 0 && window.rfstreamViewer.state.newest !== null",
                timeout=60_000,
            )
            newest = page.evaluate("window.rfstreamViewer.state.newest")
            page.evaluate(f"window.rfstreamViewer.scrollBack({max(0.0, newest - burst.t_stop_s - 0.5)})")
            found, _ = wait_for_box(page, burst, time.time() + 30)
            assert found is not None, "the burst's first pass is not in the history the page got"
            page.evaluate("window.rfstreamViewer.live()")
            # the next pass of the burst (the replay loops every 4 s): its box must be on the page within
            # 2 s of the publisher sending it, and within 2 s of the burst's own time whenever the
            # publisher itself keeps real time (on a machine too busy for that, the lag is the publisher's)
            newest = page.evaluate("window.rfstreamViewer.state.newest")
            k = math.ceil((newest + 0.3 - burst.t_start_s) / LOOP_S)
            shifted = dataclasses.replace(
                burst, t_start_s=burst.t_start_s + k * LOOP_S, t_stop_s=burst.t_stop_s + k * LOOP_S
            )
            found, drawn_at, published_at = watch_pass(page, live["sub"], shifted, time.time() + 120)
            assert published_at is not None, f"the publisher never reported pass {k} of the burst"
            assert found is not None, f"pass {k} of the known burst was never drawn with a label"
            assert drawn_at - published_at < 2.0, (
                f"drawn {drawn_at - published_at:.2f} s after it was published"
            )
            publisher_lag = published_at - (on_air + shifted.t_start_s)
            if publisher_lag < 1.0:
                late = drawn_at - (on_air + shifted.t_start_s)
                assert late < 2.0, f"the burst's box appeared {late:.2f} s after the burst began"
            else:
                warnings.warn(
                    f"the publisher ran {publisher_lag:.1f} s behind real time (a busy machine); "
                    "only the viewer's own latency was checked",
                    stacklevel=1,
                )
            assert found["text"].startswith(found["label"] + " ")
            # pause: the picture freezes with the burst in view; its box is on the canvas in its colour
            # (once a later chunk has scrolled in, so that the box lies wholly inside the canvas)
            page.wait_for_function(
                f"window.rfstreamViewer.state.newest > {shifted.t_stop_s + 0.45}", timeout=20_000
            )
            page.click("#pause")
            page.wait_for_timeout(300)
            frozen = canvas_digest(page)
            box = next(b for b in page.evaluate("window.rfstreamViewer.drawn()") if overlaps(b, shifted))
            assert outline_pixels(page, box) >= 6, (
                f"no outline in the label's colour where the box was drawn: {box}"
            )
            assert page.locator(f"#legend .item[data-label='{box['label']}']").count() == 1
            page.wait_for_function(
                """([lo, hi]) => Array.from(document.querySelectorAll('#tracks tbody tr')).some(tr => {
                    const f = tr.children[2].textContent.split(' – ').map(Number);
                    return f[0] * 1e6 < hi && f[1] * 1e6 > lo; })""",
                arg=[burst.f_low_hz, burst.f_high_hz],
                timeout=20_000,
            )
            health = page.locator("#health").inner_text()
            assert "real-time factor" in health and "degrade level" in health
            assert "streaming" in health or "eof" in health
            save_screenshot(page, tmp_path, "viewer.png", for_docs=True)
            page.wait_for_timeout(1000)
            assert canvas_digest(page) == frozen, "a paused view changed"
            # scrolling back shows older time
            page.evaluate("window.rfstreamViewer.scrollBack(3)")
            page.wait_for_timeout(200)
            assert canvas_digest(page) != frozen
            # live again: the waterfall moves
            page.click("#live")
            page.wait_for_timeout(200)
            before = canvas_digest(page)
            page.wait_for_timeout(1500)
            assert canvas_digest(page) != before, "the waterfall did not change in 1.5 s"
        finally:
            browser.close()
    assert not errors, errors


def test_a_publisher_without_the_spectrogram_topic_gets_a_hint(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    meta, _ = write_known_burst(tmp_path / "burst", duration_s=2.0)
    cfg = tmp_path / "energy.toml"
    cfg.write_text('[runtime]\ndegrade = false\n\n[[detectors]]\nname = "energy"\nkind = "energy"\n')
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with (
        running(
            "replay", str(meta), "--realtime", "--loop", "--endpoint", endpoint, "--config", str(cfg), "-q"
        ),
        running("view", endpoint, "--listen", "127.0.0.1:0") as viewer,
    ):
        url = viewer.url("view")
        with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
            browser = launch(p, profile)
            try:
                page = browser.new_page()
                page.goto(url + "/")
                page.wait_for_selector("#banner:not([hidden])", timeout=90_000)
                page.wait_for_function(
                    "document.getElementById('banner').textContent.includes('publish.spectrogram')",
                    timeout=90_000,
                )
                text = page.locator("#banner").inner_text()
                assert "--spectrogram" in text and "publish.spectrogram = true" in text
                save_screenshot(page, tmp_path, "viewer-no-spectrogram.png")
            finally:
                browser.close()


def test_the_http_api_beside_the_page(live):
    url = live["url"]
    deadline = time.time() + 90
    while time.time() < deadline:
        health = http("GET", f"{url}/api/health")
        if health.status == 200:
            break
        assert health.status == 503 and "no health message" in health.json()["error"]
        time.sleep(0.5)
    h = health.json()
    assert h["v"] in (1, 2) and "realtime_factor" in h and "chunks" in h
    deadline = time.time() + 60
    while time.time() < deadline:
        tracks = http("GET", f"{url}/api/tracks").json()
        if tracks["tracks"] or tracks["ended"]:
            break
        time.sleep(0.5)
    assert tracks["endpoint"] == live["endpoint"]
    assert any(t["label"] and t["f_high_hz"] > t["f_low_hz"] for t in tracks["tracks"] + tracks["ended"])
    endpoints = http("GET", f"{url}/api/endpoints").json()["endpoints"]
    assert endpoints[0]["spectrogram"] == "ok" and endpoints[0]["counters"]["detections"] > 0
    assert http("GET", f"{url}/api/tracks?endpoint=7").status == 400
    metrics = http("GET", f"{url}/metrics")
    if metrics.status == 200:  # prometheus-client installed (the test extra has it)
        text = metrics.body.decode()
        assert "rfstream_viewer_messages_total" in text and "rfstream_upstream_realtime_factor" in text
    else:
        assert metrics.status == 404 and "prometheus-client" in metrics.json()["error"]


def test_a_viewer_behind_a_proxy_joins_late_and_gets_the_tracks(live):
    """`rfstream proxy` fan-in: a viewer that connects after another subscriber still gets a snapshot."""
    backend = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    early = ctx.socket(zmq.SUB)
    early.linger = 0
    early.subscribe(b"tracks")
    early.connect(backend)
    try:
        with running("proxy", "--frontend", live["endpoint"], "--backend", backend):
            assert early.poll(60_000), "nothing came through the proxy"
            with running("view", backend, "--listen", "127.0.0.1:0") as viewer:
                url = viewer.url("view")
                deadline = time.time() + 60
                while time.time() < deadline:
                    status = http("GET", f"{url}/api/endpoints").json()["endpoints"][0]
                    if status["counters"]["snapshots"] and status["counters"]["spectrogram"]:
                        break
                    time.sleep(0.3)
                assert status["counters"]["snapshots"] >= 1, status
                assert status["spectrogram"] == "ok"
                tracks = http("GET", f"{url}/api/tracks").json()
                assert tracks["endpoint"] == backend and tracks["tracks"]
    finally:
        early.close()
        ctx.term()
