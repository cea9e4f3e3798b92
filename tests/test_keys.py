"""CURVE keys and remote publishing: only an authorized subscriber receives anything."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import zmq
import zmq.auth

from rfstream.config import PublishConfig
from rfstream.errors import ConfigError, InputError
from rfstream.sinks.keys import generate_keys
from rfstream.sinks.security import check_publish_security
from rfstream.sinks.zmq import ZmqPublisher

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")


@pytest.fixture
def keys(tmp_path):
    server_pub, server_secret = generate_keys(tmp_path / "server", "server")
    client_pub, client_secret = generate_keys(tmp_path / "client", "gui")
    _, stranger_secret = generate_keys(tmp_path / "stranger", "stranger")
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    (authorized / "gui.key").write_bytes(client_pub.read_bytes())
    return {
        "server_pub": server_pub,
        "server_secret": server_secret,
        "client_secret": client_secret,
        "stranger_secret": stranger_secret,
        "authorized": authorized,
    }


def test_generate_writes_a_pair_with_a_private_secret(tmp_path):
    public, secret = generate_keys(tmp_path / "k", "node1")
    assert public.name == "node1.key" and secret.name == "node1.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pub_key, no_secret = zmq.auth.load_certificate(public)
    pub_again, secret_key = zmq.auth.load_certificate(secret)
    assert no_secret is None and pub_key == pub_again and len(secret_key) == 40
    with pytest.raises(InputError, match="exists; remove it first"):
        generate_keys(tmp_path / "k", "node1")
    with pytest.raises(InputError, match=r"key name '\.\./x'"):
        generate_keys(tmp_path / "k", "../x")


def test_keys_verb_in_a_fresh_process(tmp_path):
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "rfstream.cli", "keys", "generate", str(tmp_path), "--name", "edge"],
        capture_output=True, text=True, timeout=60, check=False, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {tmp_path / 'edge.key'}" in proc.stdout and (tmp_path / "edge.key_secret").is_file()


def _sub(ctx: zmq.Context, endpoint: str, secret: Path | None, server_pub: Path | None) -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.linger = 0
    if secret is not None:
        public, secret_key = zmq.auth.load_certificate(secret)
        sock.curve_publickey, sock.curve_secretkey = public, secret_key
        sock.curve_serverkey = zmq.auth.load_certificate(server_pub)[0]
    sock.setsockopt(zmq.SUBSCRIBE, b"health")
    sock.connect(endpoint)
    return sock


def test_only_an_authorized_subscriber_receives(keys):
    cfg = PublishConfig(
        endpoint="tcp://127.0.0.1:*",
        allow_remote=True,
        curve_secret_key=str(keys["server_secret"]),
        curve_authorized_keys=str(keys["authorized"]),
    )
    check_publish_security(cfg)
    ctx = zmq.Context()
    pub = ZmqPublisher(cfg)
    try:
        good = _sub(ctx, pub.endpoint, keys["client_secret"], keys["server_pub"])
        stranger = _sub(ctx, pub.endpoint, keys["stranger_secret"], keys["server_pub"])
        plain = _sub(ctx, pub.endpoint, None, None)
        received = {"good": 0, "stranger": 0, "plain": 0}
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            pub.publish_health({"ping": 1})
            for name, sock in (("good", good), ("stranger", stranger), ("plain", plain)):
                while sock.poll(20):
                    topic, payload = sock.recv_multipart()
                    assert topic == b"health" and msgpack.unpackb(payload)["ping"] == 1
                    received[name] += 1
            if received["good"] >= 5 and time.monotonic() > end - 1.5:
                break
        assert received["good"] >= 5
        assert received["stranger"] == 0 and received["plain"] == 0
    finally:
        for s in (good, stranger, plain):
            s.close()
        pub.close()
        ctx.term()


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (
            {"endpoint": "tcp://0.0.0.0:5555"},
            r"'publish.endpoint': tcp://0.0.0.0:5555 is not a loopback address",
        ),
        (
            {"endpoint": "tcp://0.0.0.0:5555", "allow_remote": True},
            r"'publish.curve_secret_key': publishing on",
        ),
    ],
)
def test_remote_endpoint_needs_allow_remote_and_curve(over, message):
    with pytest.raises(ConfigError, match=message):
        check_publish_security(PublishConfig(**over))


def test_curve_without_a_client_list_is_refused(keys, tmp_path):
    with pytest.raises(ConfigError, match=r"'publish\.curve_authorized_keys': needed"):
        check_publish_security(PublishConfig(curve_secret_key=str(keys["server_secret"])))
    with pytest.raises(ConfigError, match=r"'publish\.curve_secret_key': .* does not exist"):
        check_publish_security(PublishConfig(curve_secret_key=str(tmp_path / "nope")))
    check_publish_security(PublishConfig(endpoint="ipc:///tmp/x"))  # local: nothing needed


def test_a_secret_key_others_can_read_is_refused_with_the_fix(keys):
    keys["server_secret"].chmod(0o644)
    cfg = PublishConfig(
        curve_secret_key=str(keys["server_secret"]), curve_authorized_keys=str(keys["authorized"])
    )
    with pytest.raises(ConfigError, match=r"readable by others \(mode 0644\); fix it with: chmod 600"):
        check_publish_security(cfg)
    keys["server_secret"].chmod(0o600)
    check_publish_security(cfg)


@pytest.mark.parametrize("target", ["dir", "key"])
def test_an_authorized_keys_folder_others_can_write_is_refused(keys, target):
    """A key dropped into that folder would give a stranger the stream after a restart."""
    victim = keys["authorized"] if target == "dir" else keys["authorized"] / "gui.key"
    victim.chmod(victim.stat().st_mode | 0o002)
    cfg = PublishConfig(
        curve_secret_key=str(keys["server_secret"]), curve_authorized_keys=str(keys["authorized"])
    )
    with pytest.raises(ConfigError, match=r"writable by others .*chmod go-w"):
        check_publish_security(cfg)


def test_a_public_key_or_an_empty_file_as_the_secret_is_one_clean_line(keys, tmp_path):
    empty = tmp_path / "empty.key_secret"
    empty.touch(mode=0o600)
    for bad, needle in ((empty, "is not a CURVE certificate"), (keys["server_pub"], "holds no secret key")):
        bad.chmod(0o600)
        with pytest.raises(ConfigError, match=needle):
            check_publish_security(
                PublishConfig(curve_secret_key=str(bad), curve_authorized_keys=str(keys["authorized"]))
            )
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "rfstream.cli", "proxy", "--frontend", "tcp://127.0.0.1:5999",
         "--backend", "tcp://127.0.0.1:0", "--curve-secret-key", str(empty),
         "--curve-authorized-keys", str(keys["authorized"])],
        capture_output=True, text=True, timeout=60, check=False, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("rfstream: error:")
    assert "is not a CURVE certificate" in proc.stderr
