"""Who may subscribe: the endpoint policy for publishing beyond this host.

Loopback and ``ipc://`` endpoints need nothing (what counts as local is decided in
rfstream/sinks/endpoints.py). Any other address needs both
``publish.allow_remote = true`` *and* CURVE (``publish.curve_secret_key``, the
server's secret certificate from ``rfstream keys generate``, and
``publish.curve_authorized_keys``, a directory of the clients' public
certificates): ZeroMQ's authenticator then refuses the handshake of any client
whose key is not in that directory, so an unauthenticated remote subscriber
receives nothing. ``ZmqPublisher`` turns CURVE server mode on when
``curve_secret_key`` is set; this module decides whether a configuration may
start at all.
"""

from __future__ import annotations

from pathlib import Path

from rfstream.config import PublishConfig
from rfstream.errors import ConfigError
from rfstream.sinks.endpoints import is_local_endpoint

__all__ = ["check_publish_security"]


def check_publish_security(cfg: PublishConfig) -> None:
    """Refuse a configuration that would publish to other hosts without authentication."""
    if not cfg.endpoint:
        return
    if cfg.curve_secret_key and not Path(cfg.curve_secret_key).is_file():
        raise ConfigError(f"config key 'publish.curve_secret_key': {cfg.curve_secret_key} does not exist")
    if cfg.curve_authorized_keys and not Path(cfg.curve_authorized_keys).is_dir():
        raise ConfigError(
            f"config key 'publish.curve_authorized_keys': {cfg.curve_authorized_keys} is not a directory"
        )
    if cfg.curve_secret_key and not cfg.curve_authorized_keys:
        # CURVE without a client list encrypts but lets any key in: not authentication
        raise ConfigError(
            "config key 'publish.curve_authorized_keys': needed with publish.curve_secret_key "
            "(a directory of the subscribers' public keys)"
        )
    if is_local_endpoint(cfg.endpoint):
        return
    if not cfg.allow_remote:
        raise ConfigError(
            f"config key 'publish.endpoint': {cfg.endpoint} is not a loopback address; "
            "set publish.allow_remote = true and CURVE keys to publish beyond this host"
        )
    if not cfg.curve_secret_key:
        raise ConfigError(
            f"config key 'publish.curve_secret_key': publishing on {cfg.endpoint} (beyond this host) "
            "needs CURVE keys: rfstream keys generate DIR, then set publish.curve_secret_key and "
            "publish.curve_authorized_keys"
        )
