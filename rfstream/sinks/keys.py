"""``rfstream keys generate``: ZeroMQ CURVE certificates for remote publishing.

``generate_keys(dir, name)`` writes ``NAME.key`` (public) and
``NAME.key_secret`` (public + secret, mode 0600) with
``zmq.auth.create_certificates``. The server (rfstream) uses its
``.key_secret`` as ``publish.curve_secret_key``; each subscriber gets its own
pair, and its public ``.key`` goes into the directory named by
``publish.curve_authorized_keys``. A subscriber also needs the server's public
``.key`` to connect (``zmq.auth.load_certificate``; ``curve_serverkey``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from rfstream.errors import InputError

__all__ = ["generate_keys"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def generate_keys(directory: str | os.PathLike[str], name: str) -> list[Path]:
    """Write a CURVE key pair; returns ``[public, secret]``. Refuses to overwrite an existing pair."""
    import zmq
    import zmq.auth

    if not _NAME.match(name):
        raise InputError(f"key name {name!r}: use letters, digits, '.', '_' and '-'")
    if not zmq.has("curve"):
        raise InputError("this libzmq was built without CURVE; cannot generate keys")
    out = Path(directory)
    public, secret = out / f"{name}.key", out / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise InputError(f"{path} exists; remove it first or pick another --name")
    try:
        out.mkdir(parents=True, exist_ok=True)
        old_umask = os.umask(0o077)  # the secret file is never readable by others, not even briefly
        try:
            made_public, made_secret = zmq.auth.create_certificates(out, name)
        finally:
            os.umask(old_umask)
        os.chmod(made_secret, 0o600)
        os.chmod(made_public, 0o644)
    except OSError as exc:
        raise InputError(f"cannot write keys to {out}: {exc.strerror or exc}") from exc
    return [Path(made_public), Path(made_secret)]
