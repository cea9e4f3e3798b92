"""Signals as bytes in a pipe: the only thing a handler does is let the kernel write one byte.

A signal handler runs on the main thread between two bytecodes, wherever that thread happens to
be, including inside ``threading.Event.set()`` or a queue's lock. A handler that takes a lock
(``Event.set()`` does) can deadlock against the very code it interrupted, and a burst of SIGHUPs
did exactly that. So here:

- ``signal.set_wakeup_fd`` makes the C-level handler write the signal number, as one byte, to a
  non-blocking pipe, even while the main thread is busy in C code (loading a model);
- the Python-level handler does nothing at all (it only has to exist, so the default action,
  "terminate" for SIGHUP and SIGTERM, does not happen);
- the control thread reads the pipe (:meth:`SignalInbox.wait`) and does the work.

Other threads wake the control thread through the same pipe (:meth:`SignalInbox.poke`), so it
waits on one thing only.

The CLI installs the inbox as its first act for the daemon's verbs (:func:`install_early`), so a
SIGHUP during start-up (models still loading) is a reload queued for later, not exit 129; the
daemon adopts that inbox (:func:`take_early`).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
from typing import Any

__all__ = ["POKE", "SignalInbox", "install_early", "take_early"]

POKE = 0  # a byte that is no signal number: "look at your state again"
HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _ignore(signum: int, frame: Any) -> None:
    """The Python-level handler: nothing. The wake-up fd already holds the signal's byte."""


class SignalInbox:
    """SIGTERM, SIGINT and SIGHUP (and pokes from other threads) as bytes to read. See the module doc."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._previous: dict[int, Any] = {}
        self._previous_fd: int | None = None
        self.installed = False
        self._close_lock = threading.Lock()  # poke() runs on other threads, never in a handler
        self._closed = False

    def install(self) -> bool:
        """Take over the signals (main thread only; elsewhere False: an embedded daemon uses stop())."""
        if self.installed:
            return True
        if threading.current_thread() is not threading.main_thread():
            return False
        # the wake-up fd first: from the first handler on, every signal leaves its byte
        self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for sig in HANDLED:
            self._previous[sig] = signal.signal(sig, _ignore)
        self.installed = True
        return True

    def restore(self) -> None:
        """Give the signals back as they were (main thread only)."""
        if not self.installed or threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(self._previous_fd if self._previous_fd is not None else -1)
        self._previous.clear()
        self.installed = False

    def poke(self, code: int = POKE) -> None:
        """Wake the reader (any thread; never blocks; nothing once closed)."""
        with self._close_lock:  # never a write to a descriptor number close() gave back
            if self._closed:
                return
            with contextlib.suppress(BlockingIOError, OSError):  # a full pipe is awake already
                os.write(self._write_fd, bytes((code,)))

    def wait(self, timeout_s: float) -> bytes:
        """Every byte that arrived, waiting up to ``timeout_s`` for the first; b"" on a timeout."""
        try:
            ready, _, _ = select.select([self._read_fd], [], [], timeout_s)
        except InterruptedError:  # pragma: no cover - Python retries select() itself (PEP 475)
            ready = [self._read_fd]
        if not ready:
            return b""
        out = bytearray()
        while True:
            try:
                data = os.read(self._read_fd, 4096)
            except BlockingIOError:
                break
            if not data:
                break
            out += data
        return bytes(out)

    def close(self) -> None:
        self.restore()
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._read_fd, self._write_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)


_early: SignalInbox | None = None


def install_early() -> SignalInbox | None:
    """Install an inbox now, for the daemon to adopt later; None off the main thread."""
    global _early
    if _early is None:
        inbox = SignalInbox()
        if not inbox.install():
            inbox.close()
            return None
        _early = inbox
    return _early


def take_early() -> SignalInbox | None:
    """The inbox :func:`install_early` made (handed over once), or None."""
    global _early
    inbox, _early = _early, None
    return inbox


def release_early() -> None:
    """Restore and close an early inbox nobody adopted (a verb that failed before its daemon)."""
    inbox = take_early()
    if inbox is not None:
        inbox.close()
