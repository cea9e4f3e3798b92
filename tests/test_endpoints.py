"""What counts as this host: one policy (rfstream/sinks/endpoints.py) for ZeroMQ, Prometheus and HTTP."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from rfstream.config import PublishConfig
from rfstream.errors import ConfigError
from rfstream.runtime.metrics import Metrics
from rfstream.sinks.endpoints import check_listen, check_zmq_endpoint, is_local_endpoint
from rfstream.sinks.zmq import ZmqPublisher


@pytest.mark.parametrize(
    ("endpoint", "local"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://[::1]:5555", True),
        ("tcp://localhost:5555", True),
        ("ipc:///run/rfstream/pub", True),
        ("inproc://x", True),
        ("ipc://@rfstream", False),  # abstract: no file, no permissions, any local user connects
        ("tcp://0.0.0.0:5555", False),
        ("tcp://*:5555", False),
        ("tcp://192.0.2.7:5555", False),
    ],
)
def test_local_endpoints(endpoint, local):
    assert is_local_endpoint(endpoint) is local


def test_an_abstract_ipc_socket_needs_the_remote_opt_in():
    with pytest.raises(
        ConfigError, match=r"abstract socket any local user can open; set publish\.allow_remote"
    ):
        check_zmq_endpoint("ipc://@rfstream-test", allow_remote=False)
    check_zmq_endpoint("ipc://@rfstream-test", allow_remote=True)
    with pytest.raises(ConfigError, match="abstract socket"):
        ZmqPublisher(PublishConfig(endpoint="ipc://@rfstream-test"))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("0.0.0.0:9108", "not a loopback address"),
        ("localhost", "expected HOST:PORT"),
        ("127.0.0.1:99999", "0-65535"),
    ],
)
def test_http_listeners_are_loopback_unless_opted_in(text, needle):
    with pytest.raises(ConfigError, match=needle):
        check_listen(text, allow_remote=False, key="runtime.metrics_endpoint", opt_in="x = true")
    assert check_listen("[::1]:0", allow_remote=False, key="k", opt_in="x") == ("::1", 0)


def test_prometheus_on_all_interfaces_needs_metrics_allow_remote():
    pytest.importorskip("prometheus_client")
    from rfstream.runtime.prometheus import PrometheusExporter

    with pytest.raises(ConfigError, match=r"set runtime\.metrics_allow_remote = true"):
        PrometheusExporter(Metrics(), "0.0.0.0:0")
    exporter = PrometheusExporter(Metrics(), "0.0.0.0:0", allow_remote=True).start()
    try:
        # served on every interface: reachable through this host's own non-loopback name too
        addr = socket.gethostbyname(socket.gethostname())
        with urllib.request.urlopen(f"http://{addr}:{exporter.port}/metrics", timeout=5) as resp:
            assert resp.status == 200
    finally:
        exporter.close()
