"""``rfstream serve`` (a plugin verb with config: ``add_arguments`` / ``config_overrides`` / ``run``).

Kept apart from rfstream/web/service.py so that parsing the command line never imports aiohttp.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rfstream.config import Config
from rfstream.errors import ConfigError

__all__ = ["add_arguments", "config_overrides", "parse_size", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Detection as a service: POST a SigMF archive or raw IQ to /api/detect and get the detections "
        "and tracks (JSON, the wire schema) or SigMF annotations back. Models load once, at start."
    )
    p.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT to serve (default 127.0.0.1:8080)")
    p.add_argument(
        "--token-file", help="file (mode 0600) holding the bearer token; needed for a non-loopback --listen"
    )
    p.add_argument(
        "--workers", type=int, default=2, help="requests processed at once; one model set each (default 2)"
    )
    p.add_argument("--max-bytes", default="256M", help="largest body accepted, e.g. 64M or 1G (default 256M)")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=120.0,
        help="upload plus processing time per request (default 120)",
    )
    p.add_argument(
        "--max-duration",
        type=float,
        default=600.0,
        help="longest recording accepted, in seconds (default 600)",
    )
    p.add_argument(
        "--work-dir", help="where uploads are kept while processed (default: the system temp folder)"
    )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"publish.endpoint": "", "publish.annotations": "", "source.realtime": False, "source.loop": False}


def parse_size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in ("K", "M", "G") else ""
    number = t[: -len(unit)] if unit else t
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise ConfigError(f"--max-bytes: expected a size such as 64M or 1G, got {text!r}") from None
    if not 1 <= value <= 1 << 40:
        raise ConfigError(f"--max-bytes must lie between 1 byte and 1 TiB, got {text!r}")
    return int(value)


def run(args: argparse.Namespace, cfg: Config) -> int:
    from rfstream.sinks.endpoints import check_http_listen
    from rfstream.web.http import require_web, serve_forever

    require_web("serve")
    from rfstream.web.service import DetectionService, Limits, build_app

    if not 1 <= args.workers <= 64:
        raise ConfigError(f"--workers must lie in [1, 64], got {args.workers}")
    if not 0 < args.max_seconds <= 86400:
        raise ConfigError(f"--max-seconds must lie in (0, 86400], got {args.max_seconds}")
    if not 0 < args.max_duration <= 86400:
        raise ConfigError(f"--max-duration must lie in (0, 86400], got {args.max_duration}")
    if args.work_dir and not Path(args.work_dir).is_dir():
        raise ConfigError(f"--work-dir {args.work_dir} is not a directory")
    limits = Limits(
        max_bytes=parse_size(args.max_bytes),
        max_seconds=args.max_seconds,
        max_duration_s=args.max_duration,
        workers=args.workers,
    )
    listen = check_http_listen(args.listen, token_file=args.token_file)  # before the models load

    config_dir = Path(args.config).parent if args.config else None
    service = DetectionService(cfg, limits, config_dir=config_dir, work_dir=args.work_dir)
    try:
        app = build_app(service, listen)

        def ready(url: str) -> None:
            print(
                f"rfstream serve: {url}/api/detect  ({limits.workers} workers, detectors: "
                f"{', '.join(service.detector_names) or 'none'})",
                flush=True,
            )

        return serve_forever(app, listen, what="detection service", on_ready=ready)
    finally:
        service.close()
