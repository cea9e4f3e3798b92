"""Fan-in: two real publishers seen by one subscriber through the XSUB/XPUB proxy."""

from __future__ import annotations

import dataclasses
import time

import msgpack
import pytest
import zmq

from rfstream.config import PublishConfig
from rfstream.errors import ConfigError
from rfstream.sinks.proxy import Proxy
from rfstream.sinks.zmq import ZmqPublisher


def _publisher() -> ZmqPublisher:
    return ZmqPublisher(dataclasses.replace(PublishConfig(), endpoint="tcp://127.0.0.1:*"))


def test_one_subscriber_sees_both_instances_through_the_proxy():
    a, b = _publisher(), _publisher()
    ctx = zmq.Context()
    with Proxy([a.endpoint, b.endpoint], "tcp://127.0.0.1:*") as proxy:
        sub = ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.setsockopt(zmq.SUBSCRIBE, b"health")  # travels upstream through the XPUB/XSUB pair
        sub.connect(proxy.backend)
        seen: set[str] = set()
        topics: set[bytes] = set()
        end = time.monotonic() + 5.0
        try:
            while seen != {"a", "b"} and time.monotonic() < end:
                a.publish_health({"instance": "a"})
                b.publish_health({"instance": "b"})
                while sub.poll(50):
                    topic, payload = sub.recv_multipart()
                    topics.add(topic)
                    seen.add(msgpack.unpackb(payload)["instance"])
        finally:
            sub.close()
    a.close()
    b.close()
    ctx.term()
    assert seen == {"a", "b"}
    assert topics == {b"health"}


def test_proxy_backend_follows_the_endpoint_policy():
    with pytest.raises(ConfigError, match="not a loopback address"):
        Proxy(["tcp://127.0.0.1:5555"], "tcp://0.0.0.0:6000")
    with pytest.raises(ConfigError, match="at least one --frontend"):
        Proxy([], "tcp://127.0.0.1:*")
