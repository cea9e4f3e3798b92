"""Fan-in: many rfstream instances (one per SDR), one endpoint for the GUI.

``rfstream proxy --frontend tcp://127.0.0.1:5555,tcp://127.0.0.1:5556 --backend tcp://127.0.0.1:6000``
runs a standard ZeroMQ XSUB/XPUB forwarder (``zmq.proxy``): the XSUB side
*connects* to every instance's publisher, the XPUB side *binds* the backend,
and subscriptions travel upstream, so a subscriber to ``detections`` only pulls
that topic from each instance. Messages pass through unchanged (two frames,
msgpack); each instance's ``detections`` payload names its own
``center_freq_hz``, and a GUI that needs to tell instances apart uses distinct
centre frequencies or one proxy backend per group.

The backend follows the same endpoint policy as a publisher: loopback unless
``--allow-remote``, and then only with CURVE keys (``--curve-secret-key``,
``--curve-authorized-keys``). The proxy never blocks an instance: each
subscriber on the backend gets its own high-water mark, and what does not fit
is dropped by ZeroMQ.

The proxy holds no rfstream state: any standard XSUB/XPUB forwarder (an
existing broker, a few lines in another language) can take its place.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Sequence
from typing import Any

import structlog
import zmq

from rfstream.config import PublishConfig
from rfstream.errors import ConfigError, SinkError

__all__ = ["Proxy", "add_arguments", "run"]

log = structlog.get_logger(__name__)


class Proxy:
    """XSUB (connects to every frontend) -> XPUB (binds the backend), run on its own thread."""

    def __init__(
        self,
        frontends: Sequence[str],
        backend: str,
        *,
        sndhwm: int = 1000,
        allow_remote: bool = False,
        curve_secret_key: str = "",
        curve_authorized_keys: str = "",
        context: zmq.Context | None = None,
    ) -> None:
        from rfstream.sinks.security import check_publish_security
        from rfstream.sinks.zmq import bind_error

        if not frontends:
            raise ConfigError("proxy: at least one --frontend endpoint is needed")
        if not 1 <= sndhwm <= 1_000_000:  # ZeroMQ takes a C int; beyond 2**31 it raised OverflowError
            raise ConfigError(f"proxy: --sndhwm must lie in [1, 1000000], got {sndhwm}")
        from rfstream.sinks.endpoints import check_zmq_endpoint

        # the form and the port first (connecting to any host is fine; binding is policed below)
        for endpoint, flag in [*((e, "--frontend") for e in frontends), (backend, "--backend")]:
            check_zmq_endpoint(endpoint, allow_remote=True, key=flag)
        policy = PublishConfig(
            endpoint=backend,
            allow_remote=allow_remote,
            curve_secret_key=curve_secret_key,
            curve_authorized_keys=curve_authorized_keys,
        )
        check_publish_security(policy)
        self._own_context = context is None
        self._ctx = zmq.Context() if context is None else context
        self._auth: Any = None
        self._xsub = self._ctx.socket(zmq.XSUB)
        self._xpub = self._ctx.socket(zmq.XPUB)
        self._control = self._ctx.socket(zmq.PAIR)
        self._control_addr = f"inproc://rfstream-proxy-{id(self)}"
        self._control.bind(self._control_addr)
        try:
            self._xpub.sndhwm = sndhwm
            # every subscription travels upstream, not only a topic's first: so each late joiner
            # behind the proxy (a viewer opened later) gets the publishers' track snapshot
            self._xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
            self._xpub.linger = 0
            self._xsub.linger = 0
            if curve_secret_key:
                self._enable_curve(curve_secret_key, curve_authorized_keys)
            try:
                self._xpub.bind(backend)
            except zmq.ZMQError as exc:
                raise bind_error(backend, exc) from exc
            self.backend = self._xpub.getsockopt_string(zmq.LAST_ENDPOINT)
            for endpoint in frontends:
                try:
                    self._xsub.connect(endpoint)
                except zmq.ZMQError as exc:
                    raise SinkError(f"proxy frontend {endpoint}: {exc.strerror}") from exc
        except Exception:
            self._release()
            raise
        self.frontends = list(frontends)
        self._thread: threading.Thread | None = None

    def _enable_curve(self, secret_path: str, authorized: str) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        from rfstream.sinks.security import load_server_certificate

        public, secret = load_server_certificate(secret_path, key="--curve-secret-key")
        self._auth = ThreadAuthenticator(self._ctx)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=authorized)
        self._xpub.curve_secretkey = secret
        self._xpub.curve_publickey = public
        self._xpub.curve_server = True

    def start(self) -> Proxy:
        self._thread = threading.Thread(target=self._run, name="rfstream-proxy", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        ctl = self._ctx.socket(zmq.PAIR)
        ctl.connect(self._control_addr)
        try:
            zmq.proxy_steerable(self._xsub, self._xpub, None, ctl)
        except zmq.ContextTerminated:
            pass
        finally:
            ctl.close(linger=0)

    def wait(self) -> None:
        """Block until ``close()`` (from a signal handler or another thread)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def close(self) -> None:
        if self._thread is not None:
            self._control.send(b"TERMINATE")
            self._thread.join(timeout=2.0)
            self._thread = None
        self._release()

    def _release(self) -> None:
        for sock in (self._xsub, self._xpub, self._control):
            sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_context:
            self._ctx.term()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- `rfstream proxy` (a plugin verb: add_arguments / run) -----------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Forward many rfstream publishers to one endpoint (ZeroMQ XSUB/XPUB)."
    p.add_argument(
        "--frontend",
        action="append",
        required=True,
        metavar="ENDPOINT",
        help="an instance's publish endpoint to connect to (repeatable, or comma-separated)",
    )
    p.add_argument("--backend", default="tcp://127.0.0.1:5600", help="endpoint subscribers connect to")
    p.add_argument("--sndhwm", type=int, default=1000, help="messages queued per subscriber (default 1000)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback backend (needs CURVE)")
    p.add_argument(
        "--curve-secret-key", default="", help="the backend's secret key file (rfstream keys generate)"
    )
    p.add_argument("--curve-authorized-keys", default="", help="directory of the subscribers' public keys")


def run(args: argparse.Namespace) -> int:
    import signal

    frontends = [e.strip() for item in args.frontend for e in item.split(",") if e.strip()]
    proxy = Proxy(
        frontends,
        args.backend,
        sndhwm=args.sndhwm,
        allow_remote=args.allow_remote,
        curve_secret_key=args.curve_secret_key,
        curve_authorized_keys=args.curve_authorized_keys,
    ).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("proxy running", frontends=frontends, backend=proxy.backend)
    while not stop.wait(0.5):
        pass
    proxy.close()
    log.info("proxy stopped")
    return 0
