"""``rfstream serve``: detection as a service over HTTP.

    rfstream serve [--listen 127.0.0.1:8080] [--workers 2] [--max-bytes 256M] [--max-seconds 120]

    POST /api/detect              body: a SigMF archive (.sigmf, also .sigmf.gz/.xz/.zip)
    POST /api/detect?rate=R&freq=F&datatype=D    body: raw IQ (cu8, ci16_le, cf32_le, ...)
         &format=sigmf            answer SigMF metadata with the detections as annotations
    GET  /api/health              the service's state: workers, busy, requests by status, limits
    GET  /metrics                 the same for Prometheus (with prometheus-client)

A request runs exactly what ``rfstream replay FILE --annotate OUT`` runs: the
recording is opened by rfstream's own sources (every check they make applies,
and their InputError becomes a 400 with the same message), and the run is
assembled by :func:`rfstream.runner.assemble`. The models are loaded once, at
start, one detector set per worker; a request borrows a set and gives it back,
so a request never pays for a model load and two requests never share a set.
The JSON answer uses the ZeroMQ publisher's encoders (docs/protocol.md), so a
detection looks the same on the wire, in ``replay --json`` and here.

Limits: the body size (``--max-bytes``, checked against Content-Length before
reading and while streaming to disk), the recording's duration
(``--max-duration``), the wall time of upload plus processing (``--max-seconds``)
and concurrent requests (``--workers``; more are answered 429 at once, never
queued). Every refusal is a 4xx JSON error naming the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from rfstream.config import Config
from rfstream.config import replace as replace_config
from rfstream.errors import ConfigError, InputError
from rfstream.types import ChunkResult, Track, TrackEvent
from rfstream.web.http import error_response, json_response, make_app, web

__all__ = ["DetectionService", "Limits", "build_app"]

log = structlog.get_logger(__name__)

QUERY_KEYS = ("format", "rate", "freq", "datatype", "channel", "name")
READ_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = 256 << 20
    max_seconds: float = 120.0  # upload + processing, wall time
    max_duration_s: float = 600.0  # seconds of signal in one recording
    workers: int = 2


class RequestTimeout(Exception):
    """The request ran past --max-seconds."""


class _Collector:
    """A sink (and TrackSink) that keeps what one request's run produced."""

    def __init__(self) -> None:
        self.results: list[ChunkResult] = []
        self.tracks: dict[int, Track] = {}

    def publish(self, result: ChunkResult) -> None:
        self.results.append(result)
        self._follow(result.track_events)

    def publish_track_events(self, events: tuple[TrackEvent, ...], seq: int) -> None:
        self._follow(events)

    def _follow(self, events: tuple[TrackEvent, ...]) -> None:
        for e in events:
            self.tracks[e.track.track_id] = e.track

    def publish_health(self, health: Any) -> None:
        """A request's health is its answer's summary."""

    def close(self) -> None:
        """Nothing held."""


class DetectionService:
    """The models (one detector set per worker) and the work of one request; see the module docstring."""

    def __init__(
        self, cfg: Config, limits: Limits, *, config_dir: Path | None = None, work_dir: str | None = None
    ):
        from rfstream.runner import build_detectors

        self.cfg = replace_config(cfg, publish={"endpoint": "", "annotations": ""})
        self.limits = limits
        self.work_dir = work_dir
        self.started = time.monotonic()
        self.requests: Counter[int] = Counter()
        self.detect_seconds = 0.0
        self.busy = 0
        self._sets: list[list[Any]] = []
        try:
            for _ in range(limits.workers):
                self._sets.append(build_detectors(self.cfg, config_dir))
        except BaseException:
            self.close()
            raise
        self.detector_names = [d.name for d in self._sets[0]] if self._sets else []
        self._pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="rfstream-serve")

    def close(self) -> None:
        if hasattr(self, "_pool"):
            self._pool.shutdown(wait=True)
        for detectors in self._sets:
            for d in detectors:
                with contextlib.suppress(Exception):
                    d.close()
        self._sets = []

    def health(self) -> dict[str, Any]:
        from rfstream.sinks.zmq import SCHEMA_VERSION

        return {
            "v": SCHEMA_VERSION,
            "status": "ok",
            "uptime_s": round(time.monotonic() - self.started, 3),
            "workers": self.limits.workers,
            "busy": self.busy,
            "detectors": self.detector_names,
            "requests": {str(k): v for k, v in sorted(self.requests.items())},
            "detect_seconds_total": round(self.detect_seconds, 3),
            "limits": {
                "max_bytes": self.limits.max_bytes,
                "max_seconds": self.limits.max_seconds,
                "max_duration_s": self.limits.max_duration_s,
            },
        }

    # --- one request (on a worker thread) ------------------------------------------------------
    def detect(
        self, path: Path, query: dict[str, str], detectors: list[Any], out_meta: Path | None
    ) -> dict[str, Any]:
        """Run the recording at ``path`` through the pipeline; the JSON answer (and ``out_meta`` written)."""
        from rfstream.runner import annotation_writer_factory, assemble
        from rfstream.sinks.zmq import SCHEMA_VERSION, encode_detection, encode_track
        from rfstream.sources import open_source

        cfg = self._request_config(path, query)
        try:
            source = open_source(cfg.source)  # every check the sources make, before any work
        except InputError as exc:  # name the upload as the client knows it, not our temp path
            raise InputError(str(exc).replace(str(path), query.get("name") or "the body")) from exc
        info = source.info
        duration = (info.total_samples or 0) / info.sample_rate_hz
        if duration > self.limits.max_duration_s:
            source.close()
            raise _TooLong(
                f"the recording is {duration:.1f} s long; this server takes at most "
                f"{self.limits.max_duration_s:g} s (--max-duration)"
            )
        collector = _Collector()
        factories = [annotation_writer_factory(cfg, out_meta)] if out_meta is not None else []
        started = time.monotonic()
        pipeline = assemble(
            cfg,
            source=source,
            sinks=[collector],
            sink_factories=factories,
            lossless=True,
            detectors=detectors,
        )
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            pipeline.stop()

        timer = threading.Timer(self.limits.max_seconds, expire)
        timer.daemon = True
        timer.start()
        try:
            pipeline.run()
        finally:
            timer.cancel()
        if timed_out.is_set():
            raise RequestTimeout(f"processing took longer than {self.limits.max_seconds:g} s (--max-seconds)")
        detections = [
            {"seq": int(r.frame.chunk.seq), **encode_detection(d, r.frame)}
            for r in collector.results
            for d in r.detections
        ]
        return {
            "v": SCHEMA_VERSION,
            "recording": {
                "name": query.get("name") or path.name,
                "sample_rate_hz": float(info.sample_rate_hz),
                "center_freq_hz": float(info.center_freq_hz),
                "num_samples": int(info.total_samples or 0),
                "duration_s": duration,
                "start_time_utc": _iso(info.start_time_utc),
            },
            "chunks": len(collector.results),
            "detections": detections,
            "tracks": [encode_track(t) for t in sorted(collector.tracks.values(), key=lambda t: t.track_id)],
            "detectors": [d.name for d in detectors],
            "elapsed_s": round(time.monotonic() - started, 3),
        }

    def _request_config(self, path: Path, query: dict[str, str]) -> Config:
        raw = any(k in query for k in ("rate", "freq", "datatype"))
        source: dict[str, Any] = {"path": str(path), "kind": "raw" if raw else "sigmf", "realtime": False}
        if raw:
            missing = [k for k in ("rate", "datatype") if not query.get(k)]
            if missing:
                raise InputError(
                    "raw IQ needs the query parameters rate (Hz) and datatype (e.g. cu8, ci16_le, cf32_le), "
                    f"and freq (Hz) for absolute frequencies; missing: {', '.join(missing)}"
                )
            source.update(
                sample_rate_hz=query["rate"],
                center_freq_hz=query.get("freq", "0"),
                datatype=query["datatype"],
            )
        if "channel" in query:
            source["channel"] = query["channel"]
        try:
            return replace_config(self.cfg, source=source)
        except ConfigError as exc:
            raise InputError(_as_query_error(str(exc))) from exc

    # --- detector sets: borrowed on the loop thread, one per running request ---------------------
    def borrow(self) -> list[Any] | None:
        if not self._sets:
            return None
        self.busy += 1
        return self._sets.pop()

    def give_back(self, detectors: list[Any]) -> None:
        self.busy -= 1
        self._sets.append(detectors)


class _TooLong(InputError):
    """A recording longer than --max-duration (answered 413)."""


def _iso(when: Any) -> str | None:
    from rfstream.sinks.base import iso_utc

    return iso_utc(when)


_PARAM_OF_KEY = {
    "source.sample_rate_hz": "rate",
    "source.center_freq_hz": "freq",
    "source.datatype": "datatype",
    "source.channel": "channel",
}


def _as_query_error(message: str) -> str:
    """A config error about a source key, in the words of the query parameter that set it."""
    for key, param in _PARAM_OF_KEY.items():
        message = message.replace(f"config key '{key}'", f"query parameter '{param}'")
    return message


def _archive_name(head: bytes, name: str) -> str | None:
    """The file name a SigMF archive body needs (its compression decides the suffix), or None."""
    stem = Path(name).name
    for suffix in (".sigmf.gz", ".sigmf.xz", ".sigmf.zip", ".sigmf"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).strip(".") or "upload"
    if head[:2] == b"\x1f\x8b":
        return stem + ".sigmf.gz"
    if head[:6] == b"\xfd7zXZ\x00":
        return stem + ".sigmf.xz"
    if head[:4] == b"PK\x03\x04":
        return stem + ".sigmf.zip"
    if head[257:262] == b"ustar":
        return stem + ".sigmf"
    return None


# --- the HTTP side ---------------------------------------------------------------------------------
def build_app(service: DetectionService, listen: Any) -> Any:
    limits = service.limits
    app = make_app(listen, client_max_size=limits.max_bytes)

    @web.middleware
    async def count(request: Any, handler: Any) -> Any:
        response = await handler(request)
        service.requests[response.status] += 1
        return response

    app.middlewares.insert(0, count)

    async def detect(request: Any) -> Any:
        query = {k: v for k, v in request.query.items() if k != "token"}
        unknown = sorted(set(query) - set(QUERY_KEYS))
        if unknown:
            return error_response(
                400, f"unknown query parameter(s) {', '.join(unknown)}; known: {', '.join(QUERY_KEYS)}"
            )
        fmt = query.get("format", "json")
        if fmt not in ("json", "sigmf"):
            return error_response(400, f"format must be json or sigmf, got {fmt!r}")
        if request.content_length is not None and request.content_length > limits.max_bytes:
            return error_response(
                413,
                f"the body is {request.content_length} bytes; this server takes at most {limits.max_bytes} (--max-bytes)",
            )
        if request.content_length == 0:
            return _empty()
        detectors = service.borrow()
        if detectors is None:
            return error_response(
                429, f"all {limits.workers} workers are busy; try again shortly", headers={"Retry-After": "1"}
            )
        folder = Path(tempfile.mkdtemp(prefix="rfstream-serve-", dir=service.work_dir))
        deadline = time.monotonic() + limits.max_seconds
        try:
            raw = any(k in query for k in ("rate", "freq", "datatype"))
            try:
                path, size = await asyncio.wait_for(
                    _receive(
                        request, folder, raw=raw, name=query.get("name", ""), max_bytes=limits.max_bytes
                    ),
                    limits.max_seconds,
                )
            except asyncio.TimeoutError:
                return error_response(
                    408, f"the upload took longer than {limits.max_seconds:g} s (--max-seconds)"
                )
            if isinstance(path, web.Response):
                return path
            out_meta = (
                folder / "out" / (Path(query.get("name") or path.name).name.split(".")[0] + ".sigmf-meta")
            )
            if fmt == "sigmf":
                out_meta.parent.mkdir()
            remaining = deadline - time.monotonic()
            loop = asyncio.get_running_loop()
            started = time.monotonic()
            try:
                answer = await loop.run_in_executor(
                    service._pool,
                    service.detect,
                    path,
                    query,
                    detectors,
                    out_meta if fmt == "sigmf" else None,
                )
            except _TooLong as exc:
                return error_response(413, str(exc))
            except RequestTimeout as exc:
                return error_response(408, str(exc))
            finally:
                service.detect_seconds += time.monotonic() - started
            log.info(
                "detect",
                bytes=size,
                detections=len(answer["detections"]),
                chunks=answer["chunks"],
                seconds=round(time.monotonic() - started, 3),
                budget_left_s=round(remaining, 1),
            )
            if fmt == "sigmf":
                return web.Response(
                    text=out_meta.read_text("utf-8"),
                    content_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{out_meta.name}"'},
                )
            return json_response(answer)
        finally:
            service.give_back(detectors)
            shutil.rmtree(folder, ignore_errors=True)

    async def health(_request: Any) -> Any:
        return json_response(service.health())

    async def metrics(_request: Any) -> Any:
        from rfstream.web.metrics import prometheus_text

        h = service.health()
        families = [
            (
                "rfstream_serve_requests_total",
                "counter",
                "Requests answered, by HTTP status",
                [({"status": k}, float(v)) for k, v in h["requests"].items()],
            ),
            ("rfstream_serve_busy", "gauge", "Workers running a request", [({}, float(h["busy"]))]),
            (
                "rfstream_serve_workers",
                "gauge",
                "Workers (detector sets loaded)",
                [({}, float(h["workers"]))],
            ),
            (
                "rfstream_serve_detect_seconds_total",
                "counter",
                "Seconds spent detecting",
                [({}, float(h["detect_seconds_total"]))],
            ),
        ]
        body, content_type = prometheus_text(families)
        return web.Response(body=body, headers={"Content-Type": content_type})

    app.router.add_post("/api/detect", detect)
    app.router.add_get("/api/health", health)
    app.router.add_get("/metrics", metrics)
    return app


def _empty() -> Any:
    return error_response(
        400,
        "empty body: send a SigMF archive (.sigmf), or raw IQ with the query parameters rate, freq and datatype",
    )


async def _receive(request: Any, folder: Path, *, raw: bool, name: str, max_bytes: int) -> tuple[Any, int]:
    """Stream the body to a file in ``folder``; (path, bytes), or (an error response, bytes)."""
    part = folder / "body.part"
    size = 0
    head = b""
    with open(part, "wb") as fh:
        while True:
            block = await request.content.read(READ_BLOCK)
            if not block:
                break
            size += len(block)
            if size > max_bytes:
                return error_response(
                    413,
                    f"the body is larger than {max_bytes} bytes, the most this server takes (--max-bytes)",
                ), size
            if len(head) < 512:
                head += block[: 512 - len(head)]
            fh.write(block)
    if size == 0:
        return _empty(), 0
    if raw:
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(name).stem) or "upload"
        path = folder / f"{stem}.iq"
    else:
        archive = _archive_name(head, name or "upload.sigmf")
        if archive is None:
            return error_response(
                400,
                "the body is not a SigMF archive (a tar holding NAME.sigmf-meta and NAME.sigmf-data, "
                "optionally gzip/xz/zip-compressed); for raw IQ give the query parameters rate, freq and datatype",
            ), size
        path = folder / archive
    part.rename(path)
    return path, size
