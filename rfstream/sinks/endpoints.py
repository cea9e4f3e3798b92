"""Endpoint policy: what counts as this host, in one place for every socket rfstream opens.

ZeroMQ publishing (``publish.endpoint``), the XSUB/XPUB proxy and the HTTP
listeners all ask the same two questions here: is this address on this host
(loopback, or an ``ipc://`` path guarded by file permissions), and if it is
not, has the configuration explicitly allowed reaching other hosts? What a
remote endpoint additionally needs (CURVE keys for ZeroMQ) is decided in
rfstream/sinks/security.py.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass

from rfstream.errors import ConfigError

__all__ = [
    "HttpListen",
    "check_http_listen",
    "check_listen",
    "check_zmq_endpoint",
    "is_local_endpoint",
    "is_loopback_host",
]

MAX_TOKEN_FILE_BYTES = 4096
MIN_TOKEN_CHARS = 16


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (IPv4 127/8, IPv6 ::1, bracketed or not)."""
    host = host.strip("[]")
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface name, a hostname
        return False


def check_zmq_endpoint(endpoint: str, *, allow_remote: bool, key: str = "publish.endpoint") -> None:
    """Refuse a malformed ZeroMQ endpoint, or one beyond this host unless remote use is allowed."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or not rest:
        raise ConfigError(
            f"config key '{key}': {endpoint!r} is not a ZeroMQ endpoint (expected tcp://HOST:PORT or ipc://PATH)"
        )
    if scheme == "inproc" or (scheme == "ipc" and not rest.startswith("@")):
        return  # in-process, or a socket file guarded by its permissions (made 0600)
    # An abstract ipc://@name has no file and no permissions: any local user can connect,
    # so it needs the same opt-in as a network address.
    if scheme == "tcp" and ":" not in rest:
        raise ConfigError(f"config key '{key}': {endpoint} has no port (tcp://HOST:PORT)")
    port = rest.rpartition(":")[2]
    if scheme == "tcp" and port != "*" and not (port.isascii() and port.isdigit() and int(port) < 65536):
        # ZeroMQ would take port 99999 modulo 65536 and bind 34463 without a word
        raise ConfigError(
            f"config key '{key}': port {port[:20]!r} of {endpoint[:100]} must be 1-65535 (0 or * for any free port)"
        )
    if scheme == "tcp" and is_loopback_host(rest.rpartition(":")[0]):
        return
    if not allow_remote:
        what = "an abstract socket any local user can open" if scheme == "ipc" else "not a loopback address"
        raise ConfigError(
            f"config key '{key}': {endpoint} is {what}; "
            "set publish.allow_remote = true (and CURVE keys) to publish beyond this host"
        )


def is_local_endpoint(endpoint: str) -> bool:
    """True for ``ipc://``/``inproc://`` and ``tcp://`` on a loopback address."""
    try:
        check_zmq_endpoint(endpoint, allow_remote=False)
    except ConfigError:
        return False
    return True


def check_listen(text: str, *, allow_remote: bool, key: str, opt_in: str) -> tuple[str, int]:
    """``HOST:PORT`` of an HTTP listener (Prometheus, the viewer, the detection service) -> (host, port).

    Port 0 asks the OS for a free port. A host that is not loopback needs ``opt_in``
    (the setting or flag that allows it, named in the error).
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"config key '{key}': expected HOST:PORT with a port of 0-65535, got {text!r}")
    host = host.strip("[]")
    if not allow_remote and not is_loopback_host(host):
        raise ConfigError(
            f"config key '{key}': {text} is not a loopback address; set {opt_in} to serve beyond this host"
        )
    return host, int(port)


@dataclass(frozen=True, slots=True)
class HttpListen:
    """Where an HTTP listener binds, and the bearer token every request must carry (None: none needed)."""

    host: str
    port: int
    token: str | None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def check_http_listen(listen: str, *, token_file: str | None, key: str = "--listen") -> HttpListen:
    """Where an HTTP API (the viewer, the detection service) listens, and the token it demands.

    :func:`check_listen` decides what counts as this host; beyond it, the opt-in is a bearer
    token read from a file that only its owner can read (mode 0600 or stricter), just as a
    remote ZeroMQ endpoint needs CURVE. A token file given for a loopback address is enforced too.
    """
    token = _read_token(token_file, key) if token_file else None
    host, port = check_listen(
        listen,
        allow_remote=token is not None,
        key=key,
        opt_in=(
            "--token-file FILE (a bearer token in a file only you can read: "
            "`(umask 077 && openssl rand -hex 32 > token)`)"
        ),
    )
    return HttpListen(host, port, token)


def _read_token(path: str, key: str) -> str:
    where = f"{key}: token file {path}"
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{where} is not a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"{where} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 {path}"
        )
    if info.st_size > MAX_TOKEN_FILE_BYTES:
        raise ConfigError(f"{where} is larger than {MAX_TOKEN_FILE_BYTES} bytes; it should hold one token")
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where} cannot be read: {exc}") from exc
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ConfigError(
            f"{where} must hold one token of at least {MIN_TOKEN_CHARS} characters without spaces"
        )
    return token
