"""``rfstream view`` (a plugin verb: ``add_arguments`` / ``run``): the options, checked, then the viewer.

Kept apart from rfstream/web/viewer.py so that parsing the command line never imports aiohttp or
ZeroMQ's asyncio layer: every other verb starts as fast as before.
"""

from __future__ import annotations

import argparse

from rfstream.errors import ConfigError

__all__ = ["add_arguments", "run"]

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Serve a live web view of rfstream publishers (rfstream run, replay --realtime, proxy): "
        "waterfall with labelled detections, live tracks, health. Open the printed URL in a browser."
    )
    p.add_argument(
        "endpoints",
        nargs="*",
        metavar="ENDPOINT",
        help=f"ZeroMQ endpoints to subscribe to (default {DEFAULT_ENDPOINT}); the page chooses between them",
    )
    p.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT to serve (default 127.0.0.1:8080)")
    p.add_argument(
        "--token-file",
        help="file (mode 0600) holding the bearer token; needed for a non-loopback --listen",
    )
    p.add_argument(
        "--history",
        type=float,
        default=120.0,
        help="seconds of waterfall kept for scrolling back (default 120)",
    )
    p.add_argument(
        "--row-ms", type=float, default=10.0, help="waterfall time resolution in ms per row (default 10)"
    )
    p.add_argument(
        "--client-queue",
        type=int,
        default=64,
        help="messages queued per browser before the viewer drops for it (default 64)",
    )
    p.add_argument("--log-format", choices=("auto", "console", "json"), default="auto")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")


def run(args: argparse.Namespace) -> int:
    from rfstream.runtime.logging import configure_logging
    from rfstream.sinks.endpoints import check_http_listen
    from rfstream.web.http import require_web, serve_forever

    require_web("view")
    configure_logging(args.log_format, args.log_level)
    endpoints = [
        e.strip() for item in (args.endpoints or [DEFAULT_ENDPOINT]) for e in item.split(",") if e.strip()
    ]
    for e in endpoints:
        scheme, sep, rest = e.partition("://")
        if not sep or not rest or scheme not in ("tcp", "ipc", "inproc"):
            raise ConfigError(f"endpoint {e!r}: expected tcp://HOST:PORT or ipc://PATH")
    if not 1.0 <= args.row_ms <= 1000.0:
        raise ConfigError(f"--row-ms must lie in [1, 1000], got {args.row_ms}")
    if not 10.0 <= args.history <= 3600.0:
        raise ConfigError(f"--history must lie in [10, 3600] seconds, got {args.history}")
    if not 4 <= args.client_queue <= 100_000:
        raise ConfigError(f"--client-queue must lie in [4, 100000], got {args.client_queue}")
    listen = check_http_listen(args.listen, token_file=args.token_file)
    from rfstream.web.viewer import build_app

    app = build_app(
        endpoints, listen, row_s=args.row_ms / 1e3, history_s=args.history, client_queue=args.client_queue
    )

    def ready(url: str) -> None:
        print(f"rfstream view: {url}/  (subscribed to {', '.join(endpoints)})", flush=True)

    return serve_forever(app, listen, what="viewer", on_ready=ready)
