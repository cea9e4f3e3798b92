"""The live runtime: ``rfstream run`` (an SDR) and ``rfstream replay --realtime`` (a recording as if live).

One :class:`Daemon` owns a run from start to exit::

    Prometheus endpoint -> rfstream.runner.assemble (endpoint policy, recording, publisher,
    detectors warm, SDR, annotation writer) -> Pipeline (live mode) on the main thread,
    a control thread beside it

- systemd: ``READY=1`` once the models are warm and the first chunk has been
  handled; ``WATCHDOG=1`` (with ``STATUS=`` live rates) only while chunks keep
  completing, excused while the SDR is being reopened; ``STOPPING=1`` at stop.
  Without ``NOTIFY_SOCKET`` all of it is a no-op.
- SIGTERM/SIGINT: the source stops, the chunk in flight finishes (queued ones
  for up to a second, then they are shed), the sinks flush, exit 0.
- SIGHUP: the config file is read again; detector and merge settings are
  rebuilt and swapped in at a chunk boundary without dropping the stream. A bad
  file keeps the running config and logs why in one line; changes that need a
  restart (source, spectrogram, publish, tracker, most of runtime) are logged.
- Fatal trouble (no device, endpoint in use, model missing, bad config) ends
  the run with one ``rfstream: error:`` line on stderr (the CLI; with JSON logs
  also one ``fatal`` record) and a non-zero exit, so systemd restarts the unit.

Signal handlers do nothing but leave a byte in a pipe (rfstream.runtime.signals):
they never take a lock, so a burst of signals cannot deadlock the thread they
interrupt. They are installed first (by the CLI before anything else, else at
the top of ``run()``): a SIGHUP while the models load is a reload for later,
not exit 129. The control thread reads the pipe and does the work: stopping
(the source stops, its reader is joined) and reloading (on a thread of its own,
which builds and warms the models, so a SIGTERM during a reload is acted on at
once; SIGHUPs that arrive meanwhile coalesce into one more reload). The
processing thread is never interrupted by either.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from rfstream.config import Config, load_config
from rfstream.config import replace as replace_config
from rfstream.errors import FatalError, RfstreamError
from rfstream.pipeline import Pipeline, RunSummary
from rfstream.runtime.metrics import Metrics
from rfstream.runtime.signals import POKE, SignalInbox, take_early
from rfstream.runtime.watchdog import Notifier, Watchdog

__all__ = ["Daemon", "run_daemon"]

log = structlog.get_logger(__name__)

# Sections a SIGHUP can apply without a restart; any other difference is only logged.
RELOADABLE = ("detectors", "merge")
_RUNTIME_RELOADABLE = frozenset({"log_level"})


def run_daemon(
    cfg: Config,
    *,
    config_path: str | None = None,
    sink_factories: Sequence[Callable[[Any], Any]] = (),
    notifier: Notifier | None = None,
) -> int:
    """Run until the source ends or a signal stops it; 0 on a clean stop (the CLI's ``run``).

    A FatalError is raised on for the CLI to print and exit with; with JSON logs (journald, a log
    shipper) it is also logged as one structured ``fatal`` record. On a console that record would
    only repeat the CLI's ``rfstream: error:`` line, so an error stays one line there.
    """
    try:
        Daemon(cfg, config_path=config_path, sink_factories=sink_factories, notifier=notifier).run()
    except FatalError as exc:
        from rfstream.runtime.logging import resolve_format

        if resolve_format(cfg.runtime.log_format) == "json":
            log.error("fatal", error=str(exc), kind=type(exc).__name__)
        raise
    return 0


class _Rates:
    """Chunks per second between two STATUS lines."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._last = (time.monotonic(), 0)

    def chunks_per_s(self) -> float:
        now, done = time.monotonic(), self._metrics.counters["chunks_processed"]
        then, before = self._last
        self._last = (now, done)
        return (done - before) / (now - then) if now > then else 0.0


class Daemon:
    """One live run; ``run()`` returns the pipeline's summary. See the module docstring."""

    def __init__(
        self,
        cfg: Config,
        *,
        config_path: str | None = None,
        sink_factories: Sequence[Callable[[Any], Any]] = (),
        notifier: Notifier | None = None,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self._sink_factories = list(sink_factories)
        self.notifier = notifier if notifier is not None else Notifier()
        self.metrics = Metrics()
        self.pipeline: Pipeline | None = None
        # signals and other threads' requests arrive here as bytes (rfstream.runtime.signals)
        self._inbox = take_early() or SignalInbox()
        self._stop_requested = False
        self._reload_requested = False
        self._reloader: threading.Thread | None = None
        self._handled = 0  # chunks handled (processed or shed); READY=1 after the first
        self._ready = False
        self._done = False
        self._rates = _Rates(self.metrics)
        self._exporter: Any = None  # the Prometheus endpoint, served until the very end
        self._watchdog: Any = None
        self._pinned = _pinned_overrides(cfg, config_path)

    # --- building ------------------------------------------------------------------------------
    def _open(self) -> Pipeline:
        """Everything the run needs (rfstream.runner.assemble), plus the Prometheus endpoint first."""
        from rfstream.runner import assemble

        if self.cfg.runtime.metrics_endpoint:
            from rfstream.runtime.prometheus import PrometheusExporter

            rt = self.cfg.runtime
            self._exporter = PrometheusExporter(
                self.metrics, rt.metrics_endpoint, allow_remote=rt.metrics_allow_remote
            ).start()
        pipeline = assemble(
            self.cfg,
            sink_factories=self._sink_factories,
            lossless=False,
            metrics=self.metrics,
            config_dir=self._config_dir(),
        )
        pipeline.heartbeat = self._chunk_handled
        return pipeline

    def _config_dir(self) -> Path | None:
        return Path(self.config_path).parent if self.config_path else None

    # --- running -------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        # first of all: a signal from here on is a byte in the inbox, never the default action
        self._inbox.install()
        try:
            return self._run()
        finally:
            self._inbox.close()

    def _run(self) -> RunSummary:
        opened = False
        try:
            self.pipeline = self._open()
            opened = True
        finally:
            if not opened and self._exporter is not None:  # assemble() closed what it had opened
                self._exporter.close()
        pipeline = self.pipeline
        self._watchdog = watchdog = Watchdog(
            self.notifier,
            stall_after_s=self._stall_after_s(),
            status=self.status_line,
            waiting=lambda: self._device_state() == "reopening",
        )
        from rfstream.runtime.shedding import ShedWatch

        self._shed_watch = ShedWatch(
            self.metrics, chunk_ms=self.cfg.source.chunk_ms, detectors=lambda: list(pipeline.fanout.enabled)
        )
        control = threading.Thread(target=self._control, name="rfstream-control", daemon=True)
        control.start()
        log.info(
            "started",
            source=pipeline.source.info.description,
            rate_hz=pipeline.source.info.sample_rate_hz,
            detectors=list(pipeline.fanout.enabled),
            endpoint=self.cfg.publish.endpoint or None,
        )
        summary: RunSummary | None = None
        try:
            if self.cfg.runtime.watchdog:
                watchdog.start()
            summary = pipeline.run()
        finally:
            self._done = True
            self._inbox.poke()
            watchdog.stop()
            self.notifier.stopping()
            control.join(timeout=5.0)
            reloader = self._reloader
            if reloader is not None:  # a reload still building models: the run is over, let it end
                reloader.join(timeout=5.0)
            self.notifier.close()
            if self._exporter is not None:
                self._exporter.close()
            if summary is None:  # the run failed (a source error, a sink that could not be closed)
                self._log_accounting(self.metrics.health(), interrupted=self._stop_requested)
        if not self._shed_watch.warnings:  # a run too short for a window still hears about it
            self._shed_watch.final()
        self._log_accounting(summary.health, interrupted=summary.interrupted)
        return summary

    def _stall_after_s(self) -> float:
        if self.cfg.runtime.watchdog_stall_s > 0:
            return self.cfg.runtime.watchdog_stall_s
        # a few chunk periods, and never less than two deadlines: slow but alive is not stalled
        return max(2.0, 5 * self.cfg.source.chunk_ms / 1e3, 2 * self.cfg.runtime.deadline_ms / 1e3)

    def _device_state(self) -> str:
        fn = self.metrics.device_state_fn
        return fn() if fn is not None else self.metrics.device_state

    def _chunk_handled(self) -> None:
        self._watchdog.chunk_done()
        self._handled += 1
        if not self._ready:
            self._inbox.poke()  # the control thread sends READY=1 off the processing thread

    def status_line(self) -> str:
        """The STATUS= text: live rates, degrade level, device state."""
        h = self.metrics
        rate = self._rates.chunks_per_s()
        total = h.stages.get("end_to_end")
        p95 = total.percentiles((95,))["p95"] if total is not None else 0.0
        c = h.counters
        return (
            f"{rate:.1f} chunks/s, RTF {h.realtime_factor:.2f}, p95 {p95:.0f} ms, "
            f"shed {c['chunks_shed']}, lost {c['samples_lost_overflow']} samples, "
            f"degrade {h.degrade_level}, device {self._device_state()}"
        )

    # --- signals and the control thread --------------------------------------------------------
    def stop(self) -> None:
        """Stop the run as SIGTERM would (any thread)."""
        self._inbox.poke(signal.SIGTERM)

    def reload(self) -> None:
        """Reload the config file as SIGHUP would (any thread)."""
        self._inbox.poke(signal.SIGHUP)

    def _control(self) -> None:
        """Read the inbox; stop, send READY=1, start reloads. Nothing here waits on the pipeline."""
        stopping = False
        while not self._done:
            codes = self._inbox.wait(0.25)
            if signal.SIGTERM in codes or signal.SIGINT in codes:
                self._stop_requested = True
            if signal.SIGHUP in codes:
                self._reload_requested = True  # a burst of SIGHUPs is one reload (or one more)
            if self._done:
                break
            if self._stop_requested and not stopping:
                stopping = True
                log.info("stopping", reason="signal")
                self.notifier.stopping()
                assert self.pipeline is not None
                self.pipeline.stop()
            try:  # whatever fails here, this thread must live on: it is the only one reading signals
                if not self._ready and self._handled and not stopping:
                    self._ready = True
                    self.notifier.ready(status=self.status_line())
                    log.info("ready", first_chunk_after_s=round(time.monotonic() - self.metrics.started, 3))
                if not stopping:
                    self._shed_watch.check()  # a window that shed more than 1 %: a warning naming the cause
            except Exception as exc:
                log.error("control thread: a check failed; going on", error=f"{type(exc).__name__}: {exc}")
            busy = self._reloader is not None and self._reloader.is_alive()
            if self._reload_requested and not stopping and not busy:
                self._reload_requested = False
                self._reloader = threading.Thread(
                    target=self._reload_then_poke, name="rfstream-reload", daemon=True
                )
                self._reloader.start()

    def _reload_then_poke(self) -> None:
        try:
            self._reload()
        except Exception as exc:  # a bug while swapping in: the stream goes on with what it had
            self.metrics.count("reload_failures")
            log.error("reload failed; keeping the running config", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._inbox.poke(POKE)  # a SIGHUP that came during this reload starts the next one

    def _reload(self) -> None:
        from rfstream.detect.fuse import merge_stage
        from rfstream.runner import build_detectors

        assert self.pipeline is not None
        if not self.config_path:
            log.warning("reload ignored: the daemon was started without --config")
            return
        try:
            new = replace_config(load_config(self.config_path), **self._pinned)
            merge_stage(new.merge)  # a [merge] that cannot be built is refused here, not mid-stream
            detectors = build_detectors(new, self._config_dir())
        except RfstreamError as exc:
            self.metrics.count("reload_failures")
            log.error("reload failed; keeping the running config", error=str(exc))
            return
        except Exception as exc:  # a detector's own bug while building: the stream must go on
            self.metrics.count("reload_failures")
            log.error("reload failed; keeping the running config", error=f"{type(exc).__name__}: {exc}")
            return
        needs_restart = restart_sections(self.cfg, new)
        if needs_restart:
            log.warning("reload: these settings need a restart to apply", keys=needs_restart)
        applied = _merge_reloadable(self.cfg, new)
        if self._stop_requested or self._done:  # stopped while the models were built: nobody needs them
            for d in detectors:
                d.close()
            return
        self.pipeline.reconfigure(applied, detectors)
        if new.runtime.log_level != self.cfg.runtime.log_level:
            from rfstream.runtime.logging import configure_logging

            configure_logging(self.cfg.runtime.log_format, new.runtime.log_level)
        self.cfg = applied
        log.info("reload accepted", detectors=[d.name for d in detectors])

    # --- the end -------------------------------------------------------------------------------
    def _log_accounting(self, health: dict[str, Any], *, interrupted: bool) -> None:
        s, c = health["samples"], health["chunks"]
        exact = s["received"] == s["processed"] + s["shed"] + s["in_flight"]
        fields: dict[str, Any] = {
            "chunks_processed": c["processed"],
            "chunks_shed": c["shed"],
            "chunks_late": c["late"],
            "samples_received": s["received"],
            "samples_processed": s["processed"],
            "samples_shed": s["shed"],
            "samples_in_flight": s["in_flight"],
            "samples_lost_overflow": s["lost_overflow"],
            "accounting_exact": exact,
            "degrade_level": health["degrade_level"],
            "interrupted": interrupted,
        }
        if "source" in health:
            fields["source"] = health["source"]
        (log.info if exact else log.error)("stopped", **fields)


def _pinned_overrides(cfg: Config, config_path: str | None) -> dict[str, dict[str, Any]]:
    """Keys where the running config differs from its file (CLI flags, environment) — kept on reload.

    A reload re-reads the file only; flags given at start (``--rate``, ``--set ...``) must not
    silently revert, so they are re-applied over the new file, as they were over the old one.
    Per-detector flags are not pinned: the detector list is what a reload is for.
    """
    if not config_path:
        return {}
    try:
        base = load_config(config_path)
    except RfstreamError:
        return {}
    pinned: dict[str, dict[str, Any]] = {}
    for section in ("source", "spectrogram", "merge", "tracker", "publish", "runtime"):
        ours, theirs = getattr(cfg, section), getattr(base, section)
        changed = {
            k: getattr(ours, k) for k in ours.__dataclass_fields__ if getattr(ours, k) != getattr(theirs, k)
        }
        if changed:
            pinned[section] = changed
    return pinned


def restart_sections(old: Config, new: Config) -> list[str]:
    """Keys whose change a reload cannot apply, as ``section`` or ``runtime.key``."""
    out = [
        name
        for name in ("source", "spectrogram", "publish", "tracker")
        if getattr(old, name) != getattr(new, name)
    ]
    out += [
        f"runtime.{key}"
        for key in old.runtime.__dataclass_fields__
        if key not in _RUNTIME_RELOADABLE and getattr(old.runtime, key) != getattr(new.runtime, key)
    ]
    return out


def _merge_reloadable(old: Config, new: Config) -> Config:
    """The running config with the reloadable parts of ``new``."""
    import dataclasses

    runtime = dataclasses.replace(old.runtime, log_level=new.runtime.log_level)
    return dataclasses.replace(old, detectors=new.detectors, merge=new.merge, runtime=runtime)
