"""The Prometheus endpoint: the health figures over real HTTP, latencies as histograms."""

from __future__ import annotations

import sys
import urllib.request

import pytest

from rfstream.config import load_config
from rfstream.errors import ConfigError
from rfstream.runtime.metrics import Metrics
from rfstream.runtime.prometheus import PrometheusExporter

pytest.importorskip("prometheus_client")


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def test_scrape_shows_the_health_figures_and_latency_histograms():
    m = Metrics()
    for _ in range(3):
        m.arrived(1000, gap_samples=7)
    m.settled(1000)
    m.settled(1000, shed_reason="deadline")
    for ms in (3.0, 30.0, 300.0):
        m.stage("end_to_end", ms)
    m.detector("energy", 12.0)
    m.degrade_level = 2
    m.extra["source"] = lambda: {"overflows": 4, "device_state": "streaming"}
    exporter = PrometheusExporter(m, "127.0.0.1:0").start()
    try:
        assert exporter.host == "127.0.0.1"  # loopback unless configured otherwise
        text = _scrape(exporter.port)
        m.settled(1000)
        again = _scrape(exporter.port)
    finally:
        exporter.close()
    assert 'rfstream_chunks_total{outcome="received"} 3.0' in text
    assert 'rfstream_chunks_total{outcome="processed"} 1.0' in text
    assert 'rfstream_chunks_shed_by_reason_total{reason="deadline"} 1.0' in text
    assert 'rfstream_samples_total{outcome="lost_overflow"} 21.0' in text
    assert "rfstream_samples_in_flight 1000.0" in text
    assert "rfstream_degrade_level 2.0" in text
    assert "rfstream_source_overflows 4.0" in text
    assert 'rfstream_stage_latency_seconds_bucket{le="0.005",stage="end_to_end"} 1.0' in text
    assert 'rfstream_stage_latency_seconds_bucket{le="0.05",stage="end_to_end"} 2.0' in text
    assert 'rfstream_stage_latency_seconds_bucket{le="+Inf",stage="end_to_end"} 3.0' in text
    assert 'rfstream_stage_latency_seconds_count{stage="end_to_end"} 3.0' in text
    assert 'rfstream_stage_latency_seconds_sum{stage="end_to_end"} 0.333' in text
    assert 'rfstream_detector_latency_seconds_count{detector="energy"} 1.0' in text
    assert 'rfstream_chunks_total{outcome="processed"} 2.0' in again  # read live at each scrape
    assert "rfstream_samples_in_flight 0.0" in again


def test_port_in_use_is_a_one_line_error():
    m = Metrics()
    first = PrometheusExporter(m, "127.0.0.1:0").start()
    try:
        with pytest.raises(Exception, match=r"runtime.metrics_endpoint 127.0.0.1:\d+ cannot be served"):
            PrometheusExporter(m, f"127.0.0.1:{first.port}").start()
    finally:
        first.close()


def test_missing_package_names_the_key_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    with pytest.raises(
        ConfigError, match=r"'runtime.metrics_endpoint': needs the prometheus-client package .*\[metrics\]"
    ):
        PrometheusExporter(Metrics(), "127.0.0.1:9108")


def test_endpoint_key_is_validated():
    with pytest.raises(ConfigError, match=r"'runtime\.metrics_endpoint': expected HOST:PORT"):
        load_config(environ={}, overrides={"runtime.metrics_endpoint": "localhost"})
