"""``/metrics`` for the viewer and the service: Prometheus text, where prometheus-client is installed.

The figures are read when Prometheus scrapes (a custom collector on a private
registry), as rfstream/runtime/prometheus.py does for the daemon. Without the
package ``/metrics`` answers 404 with the install hint (the ``metrics`` extra).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["Family", "prometheus_text"]

# (name, "counter" | "gauge", help, [(labels, value)])
Family = tuple[str, str, str, Sequence[tuple[dict[str, str], float]]]


def prometheus_text(families: Sequence[Family]) -> tuple[bytes, str]:
    """The exposition text and its content type; HTTP 404 (JSON) where prometheus-client is missing."""
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    except ImportError:
        from rfstream.web.http import web

        raise web.HTTPNotFound(
            text="/metrics needs the prometheus-client package: pip install 'rfstream[metrics]'"
        ) from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(families))  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Collector:
    def __init__(self, families: Sequence[Family]) -> None:
        self._families = families

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for name, kind, doc, samples in self._families:
            label_names = sorted(samples[0][0]) if samples else []
            if kind == "counter":
                fam: Any = CounterMetricFamily(name.removesuffix("_total"), doc, labels=label_names)
            else:
                fam = GaugeMetricFamily(name, doc, labels=label_names)
            for labels, value in samples:
                fam.add_metric([labels[k] for k in label_names], value)
            yield fam
