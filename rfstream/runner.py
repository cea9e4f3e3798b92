"""Assembling a run: the one place where a configuration becomes a running Pipeline.

Every verb that processes IQ — ``replay``, ``run`` (through the daemon),
``eval``, ``demo``, ``bench``, ``serve`` — builds its run here, so a setting one
verb honours, every verb honours. The CLI only parses and dispatches; this
module sits below it and above the stages::

    cli ─▶ daemon / bench / demo / eval ─▶ runner ─▶ pipeline, sources, detect, sinks

:func:`assemble` opens everything in the order that fails fastest and cheapest
and hands the Pipeline ownership of it all; if a step fails, what was already
opened is closed before the error leaves:

1. endpoint policy (publishing beyond this host needs CURVE) — no I/O;
2. the source, for recordings: a wrong path or a bad file fails before any
   model is loaded (a live SDR opens last, so its stream does not overflow
   while the models load);
3. the ZeroMQ publisher (``publish.endpoint``; "" disables it);
4. the detectors, warmed up;
5. the SigMF annotation writer (``publish.annotations``) and any sinks the verb
   adds.

Detectors passed in (``detectors=``, e.g. the HTTP service's, loaded once for
many requests) stay the caller's: the Pipeline uses them but never closes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rfstream.config import Config
from rfstream.detect.base import Detector
from rfstream.runtime.budget import ThreadBudget, limit_blas, plan_for
from rfstream.sinks.base import Sink
from rfstream.sources.base import LiveDevice, Source, SourceInfo, SourceWithStats
from rfstream.types import ChunkResult

if TYPE_CHECKING:  # imported when a run is assembled: a wrong path fails before SciPy loads
    from rfstream.pipeline import Pipeline, RunSummary
    from rfstream.runtime.metrics import Metrics

__all__ = [
    "SinkFactory",
    "assemble",
    "build_detectors",
    "collect_run",
    "progress_callback",
    "run_pipeline",
    "thread_budget",
]

# A sink that needs to know the stream first (an annotation writer needs the sample rate).
SinkFactory = Callable[[SourceInfo], Sink]


def build_detectors(
    cfg: Config, config_dir: Path | None = None, *, budget: ThreadBudget | None = None
) -> list[Detector]:
    """The configured detectors, built and warmed up (model files resolved from ``config_dir`` too).

    Each ONNX Runtime session gets the thread budget's ``detector_threads`` (``budget``, else
    the budget ``cfg`` plans on this machine).
    """
    from rfstream.detect.registry import build_detectors as build
    from rfstream.dsp.backend import get_backend

    backend = get_backend(cfg.spectrogram.backend)
    budget = budget or plan_for(cfg, gpu=backend.is_gpu)
    return build(
        cfg.detectors,
        cfg.spectrogram,
        backend=backend,
        config_dir=config_dir,
        threads=budget.detector_threads,
    )


def thread_budget(cfg: Config, *, gpu: bool | None = None) -> ThreadBudget:
    """The run's thread budget, with BLAS limited to its share (best before NumPy is imported)."""
    set_by = limit_blas(cfg.runtime.blas_threads or 1)
    if gpu is None:
        from rfstream.dsp.backend import get_backend

        gpu = get_backend(cfg.spectrogram.backend).is_gpu
    return dataclasses.replace(plan_for(cfg, gpu=gpu), blas_set_by=set_by)


def annotation_writer_factory(cfg: Config, path: str | Path) -> SinkFactory:
    """A factory for the SigMF annotation writer of this run's source, writing to ``path``.

    A SigMF recording's own annotations and global fields are carried over into the output.
    """
    from rfstream.sinks.sigmf_annotations import AnnotationWriter

    src = cfg.source.path
    recording = (
        Path(src).with_suffix(".sigmf-meta")
        if cfg.source.kind == "sigmf" and src.endswith((".sigmf-meta", ".sigmf-data"))
        else None
    )

    def make(info: SourceInfo) -> Sink:
        return AnnotationWriter(
            recording,
            Path(path),
            sample_rate_hz=info.sample_rate_hz,
            center_freq_hz=info.center_freq_hz,
            description=info.description,
        )

    return make


@dataclass
class _Opened:
    """What assemble() has opened so far, closed in reverse if a later step fails."""

    items: list[Any]

    def close_all(self) -> None:
        for item in reversed(self.items):
            # the start already failed; that error is the one to report
            with contextlib.suppress(Exception):
                item.close()


def assemble(
    cfg: Config,
    *,
    source: Source | None = None,
    sinks: Sequence[Sink] = (),
    sink_factories: Sequence[SinkFactory] = (),
    lossless: bool | None = None,
    metrics: Metrics | None = None,
    on_result: Callable[[ChunkResult], None] | None = None,
    progress: bool = False,
    config_dir: Path | None = None,
    detectors: Sequence[Detector] | None = None,
) -> Pipeline:
    """Open everything ``cfg`` asks for and return a Pipeline that owns it all (see the module doc).

    ``source`` replaces the configured one (bench feeds a bounded synthetic source);
    ``sinks`` are already open; ``sink_factories`` are called with the source's info.
    """
    from rfstream.dsp.backend import get_backend
    from rfstream.runtime.metrics import Metrics
    from rfstream.sinks.security import check_publish_security
    from rfstream.sources import open_source

    metrics = metrics or Metrics()
    check_publish_security(cfg.publish)
    blas_set_by = limit_blas(cfg.runtime.blas_threads or 1)  # before anything below imports NumPy
    from rfstream.detect.fuse import merge_stage

    merge_stage(cfg.merge)  # a bad [merge] (an unreadable fusion file) fails now, not at the first chunk
    live_device = source is None and cfg.source.kind == "soapy"
    opened = _Opened(list(sinks))
    done = False
    try:
        if source is None and not live_device:
            source = open_source(cfg.source, min_chunk_samples=cfg.spectrogram.nfft)
        if source is not None:
            opened.items.append(source)
        all_sinks: list[Sink] = list(sinks)
        if cfg.publish.endpoint:
            from rfstream.sinks.zmq import ZmqPublisher

            floor = -cfg.spectrogram.floor_offset_db  # the spectrogram's dB scale, for viewers' colour bars
            publisher = ZmqPublisher(cfg.publish, db_range=(floor, floor + cfg.spectrogram.dynamic_range_db))
            opened.items.append(publisher)
            all_sinks.insert(0, publisher)
            metrics.extra["publish"] = publisher.stats
        backend = get_backend(cfg.spectrogram.backend)
        budget = dataclasses.replace(plan_for(cfg, gpu=backend.is_gpu), blas_set_by=blas_set_by)
        if detectors is None:
            # The models load (ONNX Runtime builds its sessions without the GIL) while this thread
            # imports the pipeline and its SciPy; build_detectors plans the same budget.
            loading = _Background(build_detectors, cfg, config_dir)
            from rfstream.pipeline import Pipeline

            detectors = loading.result()
            opened.items.append(_Closer(detectors))
        else:
            detectors = [_Borrowed(d) for d in detectors]
        if source is None:  # a live SDR: opened last, after the models are warm
            source = open_source(cfg.source, pinned=backend.is_gpu)  # pinned buffers feed the GPU
            opened.items.append(source)
        factories = list(sink_factories)
        if cfg.publish.annotations:
            factories.insert(0, annotation_writer_factory(cfg, cfg.publish.annotations))
        for make in factories:
            sink = make(source.info)
            opened.items.append(sink)
            all_sinks.append(sink)
        done = True
    finally:
        if not done:  # an error or an interrupt: close what is open before it leaves
            opened.close_all()
    if isinstance(source, SourceWithStats):
        metrics.extra["source"] = source.stats
    from rfstream.runtime.resources import memory_snapshot

    metrics.extra["memory"] = memory_snapshot  # host RSS, ONNX Runtime arenas, GPU pool and free memory
    threads = budget.as_dict()
    metrics.extra["threads"] = lambda: threads
    if isinstance(source, LiveDevice):
        live = source
        metrics.device_state_fn = lambda: live.device_state
    from rfstream.pipeline import Pipeline

    return Pipeline(
        cfg,
        source,
        detectors,
        all_sinks,
        backend=backend,
        lossless=lossless,
        on_result=on_result,
        progress=progress,
        metrics=metrics,
        threads=budget,
    )


class _Background:
    """``fn(*args)`` on a thread of its own; ``result()`` waits and returns or raises what it did."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._fn, self._args = fn, args
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rfstream-load", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn(*self._args)
        except BaseException as exc:  # handed to the thread that waits, which raises it
            self._error = exc

    def result(self) -> Any:
        while self._thread.is_alive():
            self._thread.join(0.1)  # short waits: a signal handler can still run meanwhile
        if self._error is not None:
            raise self._error
        return self._value


class _Closer:
    """Closes detectors if the start fails before the pipeline owns them."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self._detectors = detectors

    def close(self) -> None:
        for d in self._detectors:
            d.close()


class _Borrowed:
    """A detector lent to one Pipeline: everything passes through but ``close``, which stays the lender's."""

    def __init__(self, detector: Detector) -> None:
        self._detector = detector
        self.name = detector.name
        self.kind = detector.kind
        self.priority = detector.priority

    def detect(self, frame: Any) -> Any:
        return self._detector.detect(frame)

    def warmup(self, frame_shape: tuple[int, int]) -> None:
        self._detector.warmup(frame_shape)

    def close(self) -> None:
        """The lender closes it."""

    def __getattr__(self, name: str) -> Any:  # a GPU detector's submit/collect pass through too
        return getattr(self._detector, name)


def run_pipeline(
    cfg: Config,
    *,
    sinks: Sequence[Sink] = (),
    sink_factories: Sequence[SinkFactory] = (),
    lossless: bool | None = None,
    on_result: Callable[[ChunkResult], None] | None = None,
    progress: bool = False,
    config_dir: Path | None = None,
) -> RunSummary:
    """Assemble a run from ``cfg`` and run it to the end (SIGINT/SIGTERM stop it cleanly)."""
    pipeline = assemble(
        cfg,
        sinks=sinks,
        sink_factories=sink_factories,
        lossless=lossless,
        on_result=on_result,
        progress=progress,
        config_dir=config_dir,
    )
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _stop(signum: int, _frame: Any) -> None:
        pipeline.stop()

    for sig in previous:
        signal.signal(sig, _stop)
    try:
        return pipeline.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def collect_run(
    cfg: Config, *, progress: bool, config_dir: Path | None = None
) -> tuple[list[ChunkResult], RunSummary]:
    """Replay losslessly, keeping every ChunkResult (eval, demo)."""
    results: list[ChunkResult] = []
    summary = run_pipeline(
        cfg, lossless=True, on_result=results.append, progress=progress, config_dir=config_dir
    )
    return results, summary


@contextlib.contextmanager
def progress_callback(desc: str, *, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done, total)`` callback drawing a tqdm bar on a terminal; None otherwise."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(desc=desc, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()
