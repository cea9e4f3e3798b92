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

from rfstream.errors import ConfigError

__all__ = ["check_listen", "check_zmq_endpoint", "is_local_endpoint", "is_loopback_host"]


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
