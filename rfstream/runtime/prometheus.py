"""An optional Prometheus endpoint with the same figures as the ``health`` topic.

``runtime.metrics_endpoint = "127.0.0.1:9108"`` serves ``/metrics`` (loopback
by default: put a reverse proxy or the node's Prometheus agent in front to
expose it). Nothing is copied per chunk: a custom collector reads
:class:`rfstream.runtime.metrics.Metrics` when Prometheus scrapes, so the
figures are those of the health snapshot at that moment. Latencies are
histograms (cumulative buckets kept by the metrics themselves, in seconds as
Prometheus expects).

Needs ``prometheus-client`` (the ``metrics`` extra); with the endpoint set and
the package missing the start fails with a ConfigError naming the key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from rfstream.errors import ConfigError, SinkError
from rfstream.runtime.metrics import Metrics
from rfstream.sinks.endpoints import check_listen

__all__ = ["PrometheusExporter"]

PREFIX = "rfstream"


def _name(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", text)


class _Collector:
    """Turns one health snapshot (plus the latency histograms) into metric families."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Any]:
        return []  # unchecked collector: families are known only at scrape time

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        h = self._metrics.health()
        chunks = CounterMetricFamily(f"{PREFIX}_chunks", "Chunks by outcome", labels=["outcome"])
        for outcome in ("received", "processed", "on_time", "late", "shed"):
            chunks.add_metric([outcome], h["chunks"][outcome])
        yield chunks
        shed = CounterMetricFamily(
            f"{PREFIX}_chunks_shed_by_reason", "Chunks shed, by reason", labels=["reason"]
        )
        for reason, n in h["chunks"]["shed_by_reason"].items():
            shed.add_metric([reason], n)
        yield shed
        samples = CounterMetricFamily(f"{PREFIX}_samples", "Samples by outcome", labels=["outcome"])
        for outcome in ("received", "processed", "shed", "lost_overflow"):
            samples.add_metric([outcome], h["samples"][outcome])
        yield samples
        yield GaugeMetricFamily(
            f"{PREFIX}_samples_in_flight",
            "Samples queued or being processed",
            value=h["samples"]["in_flight"],
        )
        for key, doc in (
            ("detections", "Detections published"),
            ("detector_errors", "Detector failures"),
            ("nonfinite_samples", "NaN/Inf samples zeroed"),
        ):
            yield CounterMetricFamily(f"{PREFIX}_{key}", doc, value=h[key])
        yield GaugeMetricFamily(
            f"{PREFIX}_realtime_factor", "Signal seconds per processing second", value=h["realtime_factor"]
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_degrade_level", "Load-shedding level (0 = normal)", value=h["degrade_level"]
        )
        steps = CounterMetricFamily(f"{PREFIX}_degrade_steps", "Degrade level changes", labels=["direction"])
        steps.add_metric(["up"], h["degrade"]["steps_up"])
        steps.add_metric(["down"], h["degrade"]["steps_down"])
        yield steps
        depth = GaugeMetricFamily(f"{PREFIX}_queue_depth", "Chunks waiting, per queue", labels=["queue"])
        for name, n in h["queue_depths"].items():
            depth.add_metric([name], n)
        yield depth
        state = GaugeMetricFamily(
            f"{PREFIX}_device_state", "1 for the source's current state", labels=["state"]
        )
        for name in ("streaming", "reopening", "closed"):
            state.add_metric([name], 1.0 if h["device_state"] == name else 0.0)
        yield state
        yield from self._dict_counters("source", h.get("source"))
        yield from self._dict_counters("publish", h.get("publish"))
        for kind, series in self._metrics.latency_histograms().items():
            fam = HistogramMetricFamily(
                f"{PREFIX}_{kind}_latency_seconds", f"Per-{kind} latency", labels=[kind]
            )
            for name, (buckets, total_ms, _count) in series.items():
                fam.add_metric(
                    [name],
                    [(le if le == "+Inf" else f"{float(le) / 1e3:g}", n) for le, n in buckets],
                    sum_value=total_ms / 1e3,
                )
            yield fam

    @staticmethod
    def _dict_counters(section: str, values: Any) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        if not isinstance(values, dict):
            return
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue  # device_state and the like are exported elsewhere
            yield GaugeMetricFamily(f"{PREFIX}_{section}_{_name(key)}", f"{section} {key}", value=value)


class PrometheusExporter:
    """Serves ``/metrics`` on ``host:port`` from its own thread; ``close()`` stops it."""

    def __init__(self, metrics: Metrics, endpoint: str, *, allow_remote: bool = False) -> None:
        try:
            import prometheus_client
        except ImportError as exc:
            raise ConfigError(
                "config key 'runtime.metrics_endpoint': needs the prometheus-client package "
                "(pip install 'rfstream[metrics]')"
            ) from exc
        self.host, self.port = check_listen(
            endpoint,
            allow_remote=allow_remote,
            key="runtime.metrics_endpoint",
            opt_in="runtime.metrics_allow_remote = true",
        )
        self._registry = prometheus_client.CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(metrics))  # type: ignore[arg-type]
        self._server: Any = None
        self._thread: Any = None

    def start(self) -> PrometheusExporter:
        from prometheus_client import start_http_server

        try:
            self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self._registry)
        except OSError as exc:
            raise SinkError(
                f"runtime.metrics_endpoint {self.host}:{self.port} cannot be served: {exc.strerror or exc}"
            ) from exc
        self.port = self._server.server_address[1]  # port 0 -> the one the OS picked
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
