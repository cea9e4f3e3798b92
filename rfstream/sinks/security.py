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

import stat
from pathlib import Path

from rfstream.config import PublishConfig
from rfstream.errors import ConfigError
from rfstream.sinks.endpoints import is_local_endpoint

__all__ = ["check_authorized_keys_dir", "check_publish_security", "load_server_certificate"]


def load_server_certificate(path: str, key: str = "publish.curve_secret_key") -> tuple[bytes, bytes]:
    """The (public, secret) CURVE keys of ``path``, checked before they are trusted.

    The file must be a regular file that only its owner can read (a secret others
    can read is no secret) and must hold a secret key.
    """
    import zmq.auth

    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise ConfigError(f"config key '{key}': {path} does not exist ({exc.strerror})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"config key '{key}': {path} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"config key '{key}': {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"fix it with: chmod 600 {path}"
        )
    try:
        public, secret = zmq.auth.load_certificate(p)
    except (OSError, ValueError, KeyError) as exc:  # an empty or foreign file: no keys in it
        raise ConfigError(f"config key '{key}': {path} is not a CURVE certificate ({exc})") from exc
    if not secret or not public:
        raise ConfigError(
            f"config key '{key}': {path} holds no secret key (a public .key? use the .key_secret file)"
        )
    return public, secret


def check_authorized_keys_dir(path: str, key: str = "publish.curve_authorized_keys") -> None:
    """The directory of subscribers' public keys: a key dropped into it gives a stranger the stream,
    so neither it nor a key in it may be writable by anyone but its owner."""
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"config key '{key}': {path} is not a directory")
    for item in (p, *sorted(p.iterdir())):
        mode = item.stat().st_mode
        if mode & 0o022:
            raise ConfigError(
                f"config key '{key}': {item} is writable by others (mode {stat.S_IMODE(mode):04o}), so "
                f"anyone could add a subscriber; fix it with: chmod go-w {item}"
            )


def check_publish_security(cfg: PublishConfig) -> None:
    """Refuse a configuration that would publish to other hosts without authentication."""
    if not cfg.endpoint:
        return
    if cfg.curve_secret_key:
        load_server_certificate(cfg.curve_secret_key)
    if cfg.curve_authorized_keys:
        check_authorized_keys_dir(cfg.curve_authorized_keys)
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
