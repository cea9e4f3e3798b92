"""``rfstream view``: a live waterfall of a publisher in the browser, and an HTTP API beside it.

    rfstream view [ENDPOINT ...] [--listen 127.0.0.1:8080]

One :class:`~rfstream.web.feed.Feed` per endpoint subscribes to everything the
publisher sends; the page (``static/``) gets it over one WebSocket per browser:

    GET /                 the page: waterfall with labelled boxes, track table, health panel
    GET /ws?endpoint=N    the page's feed: history first (the last minutes), then live messages
    GET /api/endpoints    every endpoint and what the viewer has seen of it
    GET /api/health       the latest health message of an endpoint (?endpoint=N, default 0)
    GET /api/tracks       its live tracks (and the ones that ended lately)
    GET /metrics          Prometheus text (with the prometheus-client package): the viewer's own
                          counters and each endpoint's latest health

A slow browser never slows a publisher: the viewer reads ZeroMQ at once on its
own loop and drops, per browser, what that browser cannot take (counted in the
page's health panel and in ``/api/endpoints``).
"""

from __future__ import annotations

import asyncio
import contextlib
from importlib import resources
from typing import Any

import structlog

from rfstream import __version__
from rfstream.web.feed import Client, Feed
from rfstream.web.http import dumps, error_response, json_response, make_app, web

__all__ = ["build_app", "viewer_families"]

log = structlog.get_logger(__name__)

STATIC = resources.files("rfstream.web") / "static"


def build_app(
    endpoints: list[str],
    listen: Any,
    *,
    row_s: float = 0.01,
    history_s: float = 120.0,
    client_queue: int = 64,
) -> Any:
    """The viewer's aiohttp Application; its feeds start and stop with it."""
    import zmq.asyncio

    app = make_app(listen)
    state: dict[str, Any] = {"feeds": [], "tasks": []}

    async def start(_app: Any) -> None:
        ctx = zmq.asyncio.Context()
        state["ctx"] = ctx
        feeds = [Feed(e, i, context=ctx, row_s=row_s, history_s=history_s) for i, e in enumerate(endpoints)]
        state["feeds"] = feeds
        state["tasks"] = [asyncio.create_task(f.run(), name=f"feed-{f.index}") for f in feeds]

    async def stop(_app: Any) -> None:
        for task in state["tasks"]:
            task.cancel()
        for task in state["tasks"]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        state["ctx"].term()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)

    def feed_of(request: Any) -> Feed:
        text = request.query.get("endpoint", "0")
        feeds: list[Feed] = state["feeds"]
        if not text.isdigit() or int(text) >= len(feeds):
            raise web.HTTPBadRequest(
                text=f"endpoint must be an index from 0 to {len(feeds) - 1} (see /api/endpoints), got {text!r}"
            )
        return feeds[int(text)]

    async def index(_request: Any) -> Any:
        return web.Response(text=(STATIC / "index.html").read_text("utf-8"), content_type="text/html")

    async def static(request: Any) -> Any:
        name = request.match_info["name"]
        types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
        kind = next((t for ext, t in types.items() if name.endswith(ext)), None)
        if kind is None or "/" in name or name.startswith("."):
            raise web.HTTPNotFound(text=f"no such file: {name}")
        try:
            body = (STATIC / name).read_text("utf-8")
        except FileNotFoundError:
            raise web.HTTPNotFound(text=f"no such file: {name}") from None
        return web.Response(text=body, content_type=kind, headers={"Cache-Control": "no-cache"})

    async def endpoints_api(_request: Any) -> Any:
        return json_response({"endpoints": [f.status() for f in state["feeds"]]})

    async def health_api(request: Any) -> Any:
        feed = feed_of(request)
        if feed.health is None:
            return error_response(
                503,
                f"no health message from {feed.endpoint} yet (the publisher sends one about every second)",
            )
        return json_response(feed.health)

    async def tracks_api(request: Any) -> Any:
        feed = feed_of(request)
        return json_response(
            {
                "endpoint": feed.endpoint,
                "seq": feed.tracks_seq,
                "tracks": feed.live_tracks(),
                "ended": list(feed.ended),
            }
        )

    async def metrics(_request: Any) -> Any:
        from rfstream.web.metrics import prometheus_text

        body, content_type = prometheus_text(viewer_families(state["feeds"]))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def websocket(request: Any) -> Any:
        feed = feed_of(request)
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=1 << 16)
        await ws.prepare(request)
        client = Client(maxsize=client_queue)
        first = feed.attach(client)
        pump = None
        try:
            await ws.send_str(hello(state["feeds"], feed, row_s=row_s, history_s=history_s))
            for item in first:
                await _send(ws, item)
            pump = asyncio.create_task(_pump(ws, client, feed))
            async for _msg in ws:  # the page sends nothing it needs answered; this waits for the close
                pass
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        except Exception:  # the response is a WebSocket already: close it, keep the trace in the log
            log.exception("websocket failed", endpoint=feed.endpoint)
            await ws.close(code=1011, message=b"internal error (see the viewer's log)")
        finally:
            feed.detach(client)
            if pump is not None:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                    await pump
        return ws

    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/favicon.ico", lambda _r: _no_content())
    app.router.add_get("/ws", websocket)
    app.router.add_get("/api/endpoints", endpoints_api)
    app.router.add_get("/api/health", health_api)
    app.router.add_get("/api/tracks", tracks_api)
    app.router.add_get("/metrics", metrics)
    return app


def hello(feeds: list[Feed], feed: Feed, *, row_s: float, history_s: float) -> str:
    from rfstream.render import LABEL_COLOURS, LUT, TRUTH_COLOUR

    return dumps(
        {
            "type": "hello",
            "version": __version__,
            "endpoint": feed.index,
            "endpoints": [{"index": f.index, "address": f.endpoint} for f in feeds],
            "labels": LABEL_COLOURS,
            "truth_colour": TRUTH_COLOUR,
            "lut": LUT.tolist(),
            "row_s": row_s,
            "history_s": history_s,
        }
    )


async def _no_content() -> Any:
    return web.Response(status=204)


async def _send(ws: Any, item: str | bytes) -> None:
    if isinstance(item, bytes):
        await ws.send_bytes(item)
    else:
        await ws.send_str(item)


async def _pump(ws: Any, client: Client, feed: Feed) -> None:
    """Send a browser its queue, a fresh track table after a drop, and its own status every second."""
    loop = asyncio.get_running_loop()
    next_status = loop.time() + 1.0
    while not ws.closed:
        item: str | bytes | None
        try:
            item = await asyncio.wait_for(client.queue.get(), max(0.0, next_status - loop.time()))
        except asyncio.TimeoutError:
            item = None
        if client.resync:
            client.resync = False
            await ws.send_str(feed.tracks_message())
        if item is not None:
            await _send(ws, item)  # waits while this browser's socket is full: only its queue grows
            client.sent += 1
        if loop.time() >= next_status:
            await ws.send_str(dumps(feed.status(client)))
            next_status = loop.time() + 1.0


def viewer_families(feeds: list[Feed]) -> list[tuple[str, str, str, list[tuple[dict[str, str], float]]]]:
    """(name, type, help, [(labels, value)]) for /metrics: the viewer's counters and upstream health."""
    out: list[tuple[str, str, str, list[tuple[dict[str, str], float]]]] = []
    messages = [
        ({"endpoint": f.endpoint, "topic": topic}, float(f.counters[topic]))
        for f in feeds
        for topic in ("detections", "tracks", "spectrogram", "health")
    ]
    out.append(("rfstream_viewer_messages_total", "counter", "Messages received, by topic", messages))
    for key, doc in (
        ("seq_gaps", "Chunks the viewer never saw (detections seq gaps)"),
        ("malformed", "Messages that could not be decoded"),
        ("restarts", "Publisher restarts seen"),
    ):
        out.append(
            (
                f"rfstream_viewer_{key}_total",
                "counter",
                doc,
                [({"endpoint": f.endpoint}, float(f.counters[key])) for f in feeds],
            )
        )
    out.append(
        (
            "rfstream_viewer_client_drops",
            "gauge",
            "Messages dropped for browsers that could not keep up (connected browsers)",
            [({"endpoint": f.endpoint}, float(sum(c.dropped for c in f.clients))) for f in feeds],
        )
    )
    out.append(
        (
            "rfstream_viewer_clients",
            "gauge",
            "Browsers connected",
            [({"endpoint": f.endpoint}, float(len(f.clients))) for f in feeds],
        )
    )
    upstream: dict[str, list[tuple[dict[str, str], float]]] = {}
    for f in feeds:
        for path, value in _numeric_leaves(f.health or {}):
            upstream.setdefault(path, []).append(({"endpoint": f.endpoint}, value))
    for path, samples in sorted(upstream.items()):
        out.append((f"rfstream_upstream_{path}", "gauge", f"latest health: {path}", samples))
    return out


def _numeric_leaves(obj: Any, prefix: str = "") -> list[tuple[str, float]]:
    import re

    out: list[tuple[str, float]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "v":
                continue
            name = re.sub(r"[^a-zA-Z0-9_]", "_", str(k))
            out.extend(_numeric_leaves(v, f"{prefix}_{name}" if prefix else name))
    elif (
        isinstance(obj, int | float) and not isinstance(obj, bool) and obj == obj and abs(obj) != float("inf")
    ):
        out.append((prefix, float(obj)))
    return out
