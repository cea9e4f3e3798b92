"""systemd notification (sd_notify) and a watchdog fed only while chunks keep flowing.

:class:`Notifier` speaks systemd's notify protocol directly: one datagram of
``KEY=value`` lines to the unix socket named by ``NOTIFY_SOCKET`` (a path, or
``@name`` for an abstract socket). Without ``NOTIFY_SOCKET`` (not run by
systemd, or not ``Type=notify``) every call is a no-op, so the daemon runs the
same from a shell. Notification is best effort: a failed send is logged, never
raised.

:class:`Watchdog` sends ``WATCHDOG=1`` every half interval, but only while the
pipeline proves it is alive by calling :meth:`Watchdog.chunk_done` per chunk.
When no chunk has completed for ``stall_after_s`` it stops feeding, and systemd
(``WatchdogSec=``) kills and restarts the unit. A ``waiting`` callable can
excuse a known idle spell (the SDR being reopened), so the unit is not
restarted while the source is recovering by itself. Each datagram also carries
``STATUS=`` with live rates from a callable, which ``systemctl status`` shows.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    """sd_notify over NOTIFY_SOCKET; a no-op when the variable is unset."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # "@name" is an abstract socket: a leading NUL byte in the kernel's namespace.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines in one datagram; True if it was sent."""
        if not self._address:
            return False
        payload = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(payload, self._address)
            except OSError as exc:
                log.warning("sd_notify to %r failed: %s", self._address.replace("\0", "@"), exc)
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify(READY=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def stopping(self) -> bool:
        return self.notify(STOPPING=1)

    def watchdog_interval_s(self) -> float | None:
        """systemd's WatchdogSec for this process, or None when no watchdog is expected of it."""
        if not self._watchdog_usec:
            return None
        if self._watchdog_pid and self._watchdog_pid != str(os.getpid()):
            return None  # the variables were meant for another process (a parent, a wrapper)
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        return usec / 1e6 if usec > 0 else None

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


_default: Notifier | None = None


def notify(**fields: object) -> bool:
    """Module-level sd_notify with the process environment: ``notify(READY=1, STATUS="...")``."""
    global _default
    if _default is None:
        _default = Notifier()
    return _default.notify(**fields)


class Watchdog:
    """Feeds systemd's watchdog while the pipeline completes chunks; stops feeding on a stall."""

    def __init__(
        self,
        notifier: Notifier,
        interval_s: float | None = None,
        stall_after_s: float = 5.0,
        *,
        status: Callable[[], str] | None = None,
        waiting: Callable[[], bool] | None = None,
    ) -> None:
        """``interval_s``: systemd's WatchdogSec (default: from WATCHDOG_USEC; without either, only
        STATUS= is sent, every 5 s). ``stall_after_s``: how long without a completed chunk counts
        as stalled. ``status``: the STATUS= line. ``waiting``: True while an idle pipeline is
        expected (an SDR being reopened) and the watchdog should still be fed."""
        self._notifier = notifier
        interval = interval_s if interval_s is not None else notifier.watchdog_interval_s()
        self._feeds = interval is not None
        self._period = (interval / 2.0) if interval is not None else 5.0
        self._stall_after_s = stall_after_s
        self._status = status
        self._waiting = waiting
        self._last_chunk = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stalled = False
        self.feeds_sent = 0

    def chunk_done(self) -> None:
        """Called by the pipeline for every chunk it finished (cheap: one clock read)."""
        self._last_chunk = time.monotonic()

    def start(self) -> Watchdog:
        if self._thread is None and self._notifier.enabled:
            self._last_chunk = time.monotonic()  # the first chunk gets stall_after_s too
            self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._period + 1.0)
            self._thread = None

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def tick(self) -> None:
        """One round: feed (with STATUS=) if chunks are flowing, else report the stall."""
        idle_s = time.monotonic() - self._last_chunk
        alive = idle_s <= self._stall_after_s or (self._waiting is not None and self._waiting())
        fields: dict[str, object] = {}
        if alive:
            if self.stalled:
                log.info("watchdog: chunks flowing again")
            self.stalled = False
            if self._feeds:
                fields["WATCHDOG"] = 1
            text = self._status_text()
            if text:
                fields["STATUS"] = text
        else:
            if not self.stalled:
                log.error("watchdog: no chunk completed for %.1f s; no longer feeding systemd", idle_s)
            self.stalled = True
            fields["STATUS"] = f"stalled: no chunk for {idle_s:.0f} s"
        if self._notifier.notify(**fields) and "WATCHDOG" in fields:
            self.feeds_sent += 1

    def _status_text(self) -> str:
        if self._status is None:
            return ""
        try:
            return self._status().replace("\n", " ")
        except Exception:  # a broken status line must not starve the watchdog
            log.exception("watchdog: status callable failed")
            return ""

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self.tick()
