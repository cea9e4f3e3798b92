"""``rfstream bench``: per-stage latency percentiles and the real-time factor at several sample rates.

Each rate runs the real pipeline (spectrogram, every configured detector, merge,
tracker and, with ``--publish``, a real ZeroMQ publisher on loopback) over an
endless synthetic source, losslessly, for ``chunks`` chunks after a warm-up.
The real-time factor is chunk duration / processing time: above 1 keeps up.

Peer rows (:func:`spectrogram_peers`, ``--peers N`` repeats, 0 = off): on the
same chunk, in turn, rfstream's spectrogram stage, ``scipy.signal.stft`` +
|X|² + dB and, where torch is installed, ``torch.stft`` + |X|² + dB, at the same
nfft and hop (complex input, both sides of the spectrum); the ratio peer /
rfstream (median of the per-round ratios, so a busy spell hits both); the
stage's achieved FLOP rate against the conventional ``5·N·log2(N)`` per FFT
slice; and the FFT floor, the complex64 FFTs of the same slices alone.

Each rate runs pipelined and serially (``modes``), alternating, with the ratio of
their real-time factors; "keeps up" is judged on p50 and p99 separately. Each
run also gives each stage thread's CPU per chunk (``time.thread_time``), each
core's busy share (/proc/stat, every process counted: the machine may be
shared; the load average is printed) and the arrival → publish latency.
:func:`bench_replay` times a whole ``rfstream replay --fast`` process of a
generated ci16 recording, start-up included, and its time to the first chunk.
:func:`stage_cpu` gives the CPU milliseconds each stage costs per chunk, run
alone on the same chunks (the spectrogram, then every detector in turn).
"""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rfstream.config import Config
from rfstream.types import Chunk, ChunkResult

WARMUP_CHUNKS = 2


class _Limited:
    """The first ``n`` chunks of a source (bench runs endless sources)."""

    def __init__(self, source: Any, n: int):
        self._source, self._n = source, n
        self.info = source.info

    def __iter__(self) -> Iterator[Chunk]:
        for i, chunk in enumerate(self._source):
            if i >= self._n:
                return
            yield chunk

    def close(self) -> None:
        self._source.close()


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import onnxruntime

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    p = np.percentile(np.asarray(values, dtype=np.float64), (50, 95, 99))
    return {"p50": round(float(p[0]), 2), "p95": round(float(p[1]), 2), "p99": round(float(p[2]), 2)}


def cpu_times() -> list[tuple[float, float]]:
    """(busy, total) jiffies of each core from /proc/stat; [] where there is none."""
    out = []
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                name, *fields = line.split()
                if name.startswith("cpu") and name != "cpu":
                    v = [float(x) for x in fields[:8]]
                    idle = v[3] + (v[4] if len(v) > 4 else 0.0)  # idle + iowait
                    out.append((sum(v) - idle, sum(v)))
    except (OSError, ValueError):
        return []
    return out


def core_use(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> list[float]:
    """Each core's busy share (0..1) between two :func:`cpu_times` readings, whoever used it."""
    return [
        round((b1 - b0) / (t1 - t0), 3) if t1 > t0 else 0.0
        for (b0, t0), (b1, t1) in zip(before, after, strict=False)
    ]


def keeps_up(chunk_ms: float, p50: float, p99: float) -> dict[str, Any]:
    """Keeping up judged twice: the typical chunk (p50) and the slow ones (p99), with why it matters."""
    p50_ok, p99_ok = bool(p50 < chunk_ms), bool(p99 < chunk_ms)
    if p50_ok and p99_ok:
        why = "keeps up: even the slowest chunks are done before the next arrives"
    elif p50_ok:
        why = (
            "keeps up on average (p50), not at p99: slow chunks pile up briefly; a live run absorbs them "
            "in its queue while they are rare, and sheds or degrades when they are not"
        )
    else:
        why = "FALLS BEHIND: the typical chunk takes longer than it lasts; a live run sheds or degrades"
    return {"p50": p50_ok, "p99": p99_ok, "why": why}


def bench_rate(
    cfg: Config,
    rate_hz: float,
    *,
    chunks: int,
    config_dir: Path | None,
    publish: bool,
    pipelined: bool | None = None,
) -> dict[str, Any]:
    """The real pipeline over ``chunks`` synthetic chunks (after a warm-up), as fast as it goes.

    The chunk time is the interval between two published chunks (what throughput allows);
    ``pipelined`` (None: the config's) picks the runtime.
    """
    from rfstream.runner import assemble
    from rfstream.sources.synth import SynthSource

    cfg = replace(
        cfg,
        source=replace(cfg.source, kind="synth", sample_rate_hz=rate_hz),
        publish=replace(cfg.publish, endpoint="tcp://127.0.0.1:*" if publish else "", annotations=""),
        runtime=replace(cfg.runtime, pipelined=cfg.runtime.pipelined if pipelined is None else pipelined),
    )
    source = _Limited(SynthSource(rate_hz, chunk_ms=cfg.source.chunk_ms, seed=7), chunks + WARMUP_CHUNKS)
    results: list[ChunkResult] = []
    totals: list[float] = []
    last = [time.perf_counter()]
    cores0: list[list[tuple[float, float]]] = []
    cpu0: list[float] = []

    def keep(result: ChunkResult) -> None:
        now = time.perf_counter()
        if result.frame.chunk.seq >= WARMUP_CHUNKS:
            results.append(result)
            totals.append((now - last[0]) * 1e3)
        elif result.frame.chunk.seq == WARMUP_CHUNKS - 1:
            cores0.append(cpu_times())
            cpu0.append(time.process_time())
        last[0] = now

    pipeline = assemble(cfg, source=source, lossless=True, on_result=keep, config_dir=config_dir)
    health = pipeline.run().health
    use = core_use(cores0[0], cpu_times()) if cores0 else []
    process_cpu_ms = (time.process_time() - cpu0[0]) * 1e3 / max(1, len(results)) if cpu0 else None
    stages: dict[str, list[float]] = {}
    for r in results:
        for name, ms in r.timings_ms.items():
            stages.setdefault(name, []).append(ms)
    chunk_ms = cfg.source.chunk_ms
    total = _percentiles(totals)
    processed = max(1, health["chunks"]["processed"])
    latency = health["latency_ms"].get("arrival_to_publish", {})
    return {
        "sample_rate_hz": rate_hz,
        "mode": "pipelined" if pipeline.pipelined else "serial",
        "chunk_ms": chunk_ms,
        "chunks": len(results),
        "threads": health.get("threads"),
        "stages_ms": {name: _percentiles(v) for name, v in stages.items()},
        "chunk_total_ms": total,
        "arrival_to_publish_ms": {k: latency[k] for k in ("p50", "p99") if k in latency},
        "realtime_factor_p50": round(chunk_ms / total["p50"], 2) if total["p50"] else None,
        "realtime_factor_p99": round(chunk_ms / total["p99"], 2) if total["p99"] else None,
        "keeps_up": keeps_up(chunk_ms, total["p50"], total["p99"]),
        # each stage thread's CPU, warm-up chunks included, per chunk processed
        "stage_cpu_ms_per_chunk": {
            name: round(seconds * 1e3 / processed, 1) for name, seconds in health["stage_cpu_s"].items()
        },
        "core_use": use,  # busy share of each core while the timed chunks ran (every process counts)
        # this process's CPU per timed chunk (every thread, the synthetic source's too): what the
        # run costs whatever else shares the machine; cores_needed = that / the chunk's duration
        "process_cpu_ms_per_chunk": round(process_cpu_ms, 1) if process_cpu_ms is not None else None,
        "cores_needed": round(process_cpu_ms / chunk_ms, 2) if process_cpu_ms is not None else None,
    }


def bench_paced(
    cfg: Config, rate_hz: float, seconds: float, *, config_dir: Path | None = None, pipelined: bool = True
) -> dict[str, Any]:
    """A live run: the synthetic source paced at ``rate_hz`` for ``seconds``, shedding and degrading
    as the daemon would; does the full detector set keep up, and with what arrival -> publish latency?"""
    from rfstream.runner import assemble
    from rfstream.sources.synth import SynthSource

    cfg = replace(
        cfg,
        source=replace(cfg.source, kind="synth", sample_rate_hz=rate_hz, realtime=True),
        publish=replace(cfg.publish, endpoint="", annotations=""),
        runtime=replace(cfg.runtime, pipelined=pipelined),
    )
    n = max(1, round(seconds * 1e3 / cfg.source.chunk_ms))
    source = _Limited(SynthSource(rate_hz, chunk_ms=cfg.source.chunk_ms, seed=7, realtime=True), n)
    levels: list[int] = []
    pipeline = assemble(cfg, source=source, lossless=False, config_dir=config_dir)
    pipeline.on_result = lambda _r: levels.append(pipeline.metrics.degrade_level)
    health = pipeline.run().health
    c, lat = health["chunks"], health["latency_ms"].get("arrival_to_publish", {})
    full = sum(1 for level in levels if level == 0)
    return {
        "sample_rate_hz": rate_hz,
        "seconds": seconds,
        "mode": "pipelined" if pipelined else "serial",
        "chunks": c["received"],
        "processed": c["processed"],
        "late": c["late"],
        "shed": c["shed"],
        "degrade_steps_up": health["degrade"]["steps_up"],
        "full_set_share": round(full / len(levels), 2) if levels else 0.0,  # chunks at level 0
        "arrival_to_publish_ms": {k: lat[k] for k in ("p50", "p99") if k in lat},
        "kept_up": bool(c["shed"] == 0 and c["late"] == 0 and health["degrade"]["steps_up"] == 0),
    }


def make_ci16_recording(path_base: Path, rate_hz: float, seconds: float, *, seed: int = 11) -> Path:
    """A SigMF ci16_le recording of the bench's synthetic signals (no checksum): its .sigmf-meta."""
    import json

    from rfstream.sources.synth import SynthSource

    data = path_base.with_suffix(".sigmf-data")
    meta = path_base.with_suffix(".sigmf-meta")
    n_total = int(rate_hz * seconds)
    source = SynthSource(rate_hz, chunk_ms=200.0, seed=seed)
    written = 0
    try:
        with open(data, "wb") as fh:
            for chunk in source:
                iq = np.asarray(chunk.iq[: n_total - written], dtype=np.complex64)
                peak = float(np.abs(iq.view(np.float32)).max()) or 1.0
                out = np.empty(2 * iq.size, dtype="<i2")
                np.multiply(iq.view(np.float32), 16000.0 / peak, out=out, casting="unsafe")
                fh.write(out.tobytes())
                written += iq.size
                if written >= n_total:
                    break
    finally:
        source.close()
    meta.write_text(
        json.dumps(
            {
                "global": {"core:datatype": "ci16_le", "core:sample_rate": rate_hz, "core:version": "1.0.0"},
                "captures": [{"core:sample_start": 0, "core:frequency": 2.44e9}],
                "annotations": [],
            }
        )
    )
    return meta


def bench_replay(
    cfg_path: str | None,
    rate_hz: float = 20e6,
    seconds: float = 6.0,
    *,
    pipelined: bool = True,
    workdir: Path | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Whole-process ``rfstream replay --fast`` of a generated ci16 recording, start-up included.

    Wall time from launching the process to its exit, and to the first chunk published (the
    pipeline's debug line, read as it appears); real-time factor = recording seconds / wall.
    """
    import subprocess
    import sys
    import tempfile
    import threading

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        meta = make_ci16_recording(Path(tmp) / "bench", rate_hz, seconds)
        cmd = [sys.executable, "-m", "rfstream", "replay", str(meta), "--fast", "--no-publish"]
        cmd += ["--log-format", "json", "--log-level", "debug"]
        cmd += ["--set", f"runtime.pipelined={'true' if pipelined else 'false'}"]
        for item in overrides:
            cmd += ["--set", item]
        if cfg_path:
            cmd += ["--config", cfg_path]
        first: list[float] = []
        lines: list[str] = []
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        def watch() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if not first and "first chunk published" in line:
                    first.append(time.monotonic() - t0)
                lines.append(line)

        reader = threading.Thread(target=watch, daemon=True)
        reader.start()
        rc = proc.wait()
        wall = time.monotonic() - t0
        reader.join(5.0)
    if rc != 0:
        tail = "".join(lines[-5:]).strip()
        raise RuntimeError(f"rfstream replay exited with {rc}: {tail}")
    return {
        "sample_rate_hz": rate_hz,
        "datatype": "ci16_le",
        "seconds": seconds,
        "mode": "pipelined" if pipelined else "serial",
        "wall_s": round(wall, 2),
        "first_chunk_s": round(first[0], 2) if first else None,
        "realtime_factor": round(seconds / wall, 2),
    }


def _synth_chunk(rate_hz: float, chunk_ms: float, seq: int = 0) -> Chunk:
    """Chunk ``seq`` of the bench's synthetic source (the same signals the pipeline rows see)."""
    from rfstream.sources.synth import SynthSource

    source = SynthSource(rate_hz, chunk_ms=chunk_ms, seed=7)
    try:
        for i, chunk in enumerate(source):
            if i == seq:
                return chunk
    finally:
        source.close()
    raise AssertionError("the synthetic source is endless")  # pragma: no cover


def _timed(fn: Any) -> tuple[float, float]:
    """(wall ms, process CPU ms) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - w0) * 1e3, (time.process_time() - c0) * 1e3


def spectrogram_peers(cfg: Config, rate_hz: float, *, repeats: int = 5) -> dict[str, Any]:
    """rfstream's spectrogram stage against ``scipy.signal.stft`` (and ``torch.stft``) on one chunk.

    Every round times each contender once, in turn, on the same chunk; figures are medians
    over ``repeats`` rounds, ratios the median of the per-round ratios (peer / rfstream).
    """
    import scipy.fft
    import scipy.signal

    from rfstream.dsp.spectrogram import Spectrogrammer, slice_flops

    spec = replace(cfg.spectrogram, backend="numpy")
    nfft, hop = spec.nfft, spec.hop
    chunk = _synth_chunk(rate_hz, cfg.source.chunk_ms)
    iq = np.ascontiguousarray(chunk.iq, dtype=np.complex64)
    n_slices = (iq.size - nfft) // hop + 1
    stage = Spectrogrammer(spec)
    window = scipy.signal.get_window(spec.window, nfft)

    def ours() -> None:
        stage.reset()  # every round the same slices, as the peers see them
        stage.process(chunk)

    def scipy_stft() -> None:
        _, _, z = scipy.signal.stft(
            iq,
            window=window,
            nperseg=nfft,
            noverlap=nfft - hop,
            return_onesided=False,
            boundary=None,
            padded=False,
        )
        10.0 * np.log10(np.maximum(z.real**2 + z.imag**2, 1e-20))

    block = np.empty((64, nfft), dtype=np.complex64)
    frames = np.lib.stride_tricks.as_strided(iq, shape=(n_slices, nfft), strides=(hop * 8, 8))

    def fft_floor() -> None:  # the stage's FFTs alone: same slices, same blocks, one thread
        for lo in range(0, n_slices, 64):
            part = block[: min(64, n_slices - lo)]
            part[...] = frames[lo : lo + part.shape[0]]
            scipy.fft.fft(part, axis=-1, workers=1, overwrite_x=True)

    contenders: dict[str, Any] = {"rfstream": ours, "fft_floor": fft_floor, "scipy_stft": scipy_stft}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        tx = torch.from_numpy(iq.copy())  # torch wants a writable array
        tw = torch.from_numpy(window.astype(np.float32))

        def torch_stft() -> None:
            z = torch.stft(
                tx, nfft, hop_length=hop, window=tw, center=False, onesided=False, return_complex=True
            )
            10.0 * torch.log10(torch.clamp(z.real**2 + z.imag**2, min=1e-20))

        contenders["torch_stft"] = torch_stft
    for fn in contenders.values():  # warm-up: plans, caches, first-touch of buffers
        fn()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for _ in range(max(1, repeats)):
        for name, fn in contenders.items():
            times[name].append(_timed(fn))
    stage.close()
    flops = n_slices * slice_flops(nfft)
    out: dict[str, Any] = {"sample_rate_hz": rate_hz, "slices": n_slices, "workers": stage.workers}
    medians: dict[str, tuple[float, float]] = {}
    for name, values in times.items():
        wall = float(np.median([v[0] for v in values]))
        cpu = float(np.median([v[1] for v in values]))
        medians[name] = (wall, cpu)
        # 0.01 ms: a small chunk's stage takes a few ms, and 0.1 ms steps would skew the rates below
        out[name] = {"ms": round(wall, 2), "cpu_ms": round(cpu, 2), "gflops": round(flops / wall / 1e6, 2)}
        if name != "rfstream":
            pairs = list(zip(values, times["rfstream"], strict=True))
            # Peer time / rfstream time, per round: wall (what a user waits) and CPU (the work; it
            # does not credit rfstream's worker threads, and is steadier on a busy machine).
            out[name]["ratio"] = round(float(np.median([v[0] / max(o[0], 1e-9) for v, o in pairs])), 2)
            out[name]["cpu_ratio"] = round(float(np.median([v[1] / max(o[1], 1e-9) for v, o in pairs])), 2)
    # from the unrounded CPU time: a rounded 0.0 would divide by zero
    out["rfstream"]["gflops_per_cpu_s"] = round(flops / max(medians["rfstream"][1], 1e-9) / 1e6, 2)
    return out


def stage_cpu(
    cfg: Config, rate_hz: float, *, chunks: int = 3, detectors: Sequence[Any] = ()
) -> dict[str, float]:
    """CPU milliseconds per chunk of each stage run alone: the spectrogram, then each detector.

    Process CPU time (every thread of the stage counted) over ``chunks`` chunks of the bench's
    synthetic source, after one warm-up chunk; the stages run one after another.
    """
    from rfstream.dsp.spectrogram import Spectrogrammer
    from rfstream.sources.synth import SynthSource

    stage = Spectrogrammer(replace(cfg.spectrogram, backend="numpy"))
    source = SynthSource(rate_hz, chunk_ms=cfg.source.chunk_ms, seed=7)
    spent: dict[str, float] = {"spectrogram": 0.0, **{f"detector.{d.name}": 0.0 for d in detectors}}
    try:
        for i, chunk in enumerate(source):
            if i > chunks:
                break
            c0 = time.process_time()
            frame = stage.process(chunk)
            costs = [("spectrogram", time.process_time() - c0)]
            for d in detectors:
                c0 = time.process_time()
                d.detect(frame)
                costs.append((f"detector.{d.name}", time.process_time() - c0))
            if i:  # chunk 0 warms caches and plans
                for name, seconds in costs:
                    spent[name] += seconds * 1e3
    finally:
        source.close()
        stage.close()
    return {name: round(total / max(1, chunks), 1) for name, total in spent.items()}


def run_bench(
    cfg: Config,
    rates: Sequence[float],
    *,
    chunks: int = 20,
    config_dir: Path | None = None,
    publish: bool = False,
    peers: int = 5,
    modes: Sequence[str] = ("pipelined", "serial"),
    replay_s: float = 0.0,
    replay_rate_hz: float = 20e6,
    config_path: str | None = None,
    paced_s: float = 0.0,
    paced_rate_hz: float = 20e6,
) -> dict[str, Any]:
    """Every rate through the pipeline in each of ``modes`` (alternating, so a busy spell hits
    both); with ``peers`` > 0 also the spectrogram peer rows and the per-stage CPU costs
    (``peers`` rounds each); with ``replay_s`` > 0 the whole-process replay of a generated
    ci16 recording that long at ``replay_rate_hz``, in each mode; with ``paced_s`` > 0 a live
    run paced at ``paced_rate_hz`` that long, in each mode (:func:`bench_paced`)."""
    from rfstream.runner import thread_budget

    load0 = os.getloadavg()
    budget = thread_budget(cfg)
    runs = [
        bench_rate(cfg, r, chunks=chunks, config_dir=config_dir, publish=publish, pipelined=m == "pipelined")
        for r in rates
        for m in modes
    ]
    report: dict[str, Any] = {
        "machine": machine(),
        "load_average": [round(x, 2) for x in load0],
        "threads": budget.as_dict(),
        "threads_line": budget.line(),
        "detectors": [d.name for d in cfg.detectors if d.enabled],
        "runs": runs,
    }
    report["pipelined_vs_serial"] = _mode_ratios(runs)
    if paced_s > 0:
        report["paced"] = [
            bench_paced(cfg, paced_rate_hz, paced_s, config_dir=config_dir, pipelined=m == "pipelined")
            for m in modes
        ]
    if replay_s > 0:
        report["replay"] = [
            bench_replay(config_path, replay_rate_hz, replay_s, pipelined=m == "pipelined") for m in modes
        ]
    if peers > 0:
        from rfstream.runner import build_detectors

        report["spectrogram_peers"] = [spectrogram_peers(cfg, r, repeats=peers) for r in rates]
        detectors = build_detectors(cfg, config_dir)
        try:
            report["stage_cpu_ms"] = [
                {"sample_rate_hz": r, **stage_cpu(cfg, r, chunks=min(peers, 3), detectors=detectors)}
                for r in rates
            ]
        finally:
            for d in detectors:
                d.close()
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    from rfstream.runtime.resources import memory_snapshot

    report["memory"] = memory_snapshot()  # after the runs: what the pipeline left allocated
    report["table"] = format_table(report)
    return report


def _mode_ratios(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pipelined / serial real-time factor at each rate where both ran."""
    out = []
    by = {(r["sample_rate_hz"], r["mode"]): r for r in runs}
    for (rate, mode), run in by.items():
        serial = by.get((rate, "serial"))
        if mode != "pipelined" or serial is None:
            continue
        row: dict[str, Any] = {"sample_rate_hz": rate}
        for q in ("p50", "p99"):
            a, b = run[f"realtime_factor_{q}"], serial[f"realtime_factor_{q}"]
            row[f"ratio_{q}"] = round(a / b, 2) if a and b else None
        out.append(row)
    return out


def format_peers(report: dict[str, Any]) -> list[str]:
    """Table lines for the spectrogram peer rows and the per-stage CPU costs (none if absent)."""
    lines: list[str] = []
    if report.get("spectrogram_peers"):
        lines += [
            "spectrogram vs peers (same chunk, same nfft/hop, + |X|^2 + dB; ratio = peer time / rfstream"
            " time, wall and CPU; GFLOP/s = 5 N log2 N per slice over rfstream's wall time):",
            f"  {'MS/s':>6} {'slices':>7} {'workers':>7} {'rfstream ms':>12} {'GFLOP/s':>8} {'FFT floor ms':>13}"
            f" {'scipy.stft ms':>14} {'ratio':>6} {'cpu':>5} {'torch.stft ms':>14} {'ratio':>6} {'cpu':>5}",
        ]
        for p in report["spectrogram_peers"]:
            torch = p.get("torch_stft")
            lines.append(
                f"  {p['sample_rate_hz'] / 1e6:>6g} {p['slices']:>7} {p['workers']:>7} {p['rfstream']['ms']:>12.1f}"
                f" {p['rfstream']['gflops']:>8.2f} {p['fft_floor']['ms']:>13.1f}"
                f" {p['scipy_stft']['ms']:>14.1f} {p['scipy_stft']['ratio']:>6.2f} {p['scipy_stft']['cpu_ratio']:>5.2f}"
                + (
                    f" {torch['ms']:>14.1f} {torch['ratio']:>6.2f} {torch['cpu_ratio']:>5.2f}"
                    if torch
                    else f" {'-':>14} {'-':>6} {'-':>5}"
                )
            )
        lines.append("")
    if report.get("stage_cpu_ms"):
        lines.append("CPU ms per chunk, each stage run alone:")
        for row in report["stage_cpu_ms"]:
            costs = ", ".join(f"{k} {v:g}" for k, v in row.items() if k != "sample_rate_hz")
            lines.append(f"  {row['sample_rate_hz'] / 1e6:g} MS/s: {costs}")
        lines.append("")
    return lines


def format_table(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, numpy {m['numpy']}, onnxruntime {m['onnxruntime']}",
        f"load average at start: {' '.join(str(x) for x in report.get('load_average', []))}"
        f" (after: {' '.join(str(x) for x in report.get('load_average_after', []))})",
        report.get("threads_line", ""),
        f"detectors: {', '.join(report['detectors'])}",
        "",
    ]
    for run in report["runs"]:
        k = run["keeps_up"]
        lines.append(
            f"{run['sample_rate_hz'] / 1e6:g} MS/s, {run.get('mode', '?')}, {run['chunk_ms']:g} ms chunks, "
            f"{run['chunks']} chunks: real-time factor {run['realtime_factor_p50']} (p50) / "
            f"{run['realtime_factor_p99']} (p99)"
        )
        lines.append(f"  {k['why']}")
        lat = run.get("arrival_to_publish_ms") or {}
        if lat:
            lines.append(f"  arrival -> publish: p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms")
        lines.append(f"  {'stage':<28}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'CPU ms/chunk':>14}")
        cpu = run.get("stage_cpu_ms_per_chunk", {})
        rows = [*run["stages_ms"].items(), ("chunk (interval)", run["chunk_total_ms"])]
        lines.extend(
            f"  {name:<28}{p['p50']:>10.1f}{p['p95']:>10.1f}{p['p99']:>10.1f}"
            + (f"{cpu[name]:>14.1f}" if name in cpu else "")
            for name, p in rows
        )
        if "publish" in cpu:
            lines.append(f"  {'publish':<58}{cpu['publish']:>14.1f}")
        if run.get("core_use"):
            lines.append("  core use: " + ", ".join(f"cpu{i} {u:.0%}" for i, u in enumerate(run["core_use"])))
        if run.get("process_cpu_ms_per_chunk") is not None:
            lines.append(
                f"  process CPU {run['process_cpu_ms_per_chunk']:.0f} ms per chunk: "
                f"{run['cores_needed']} cores' worth of work per chunk period"
            )
        lines.append("")
    lines.extend(
        f"pipelined / serial real-time factor at {row['sample_rate_hz'] / 1e6:g} MS/s: "
        f"{row['ratio_p50']} (p50), {row['ratio_p99']} (p99)"
        for row in report.get("pipelined_vs_serial", [])
    )
    if report.get("pipelined_vs_serial"):
        lines.append("")
    lines.extend(
        f"whole process: rfstream replay --fast, {r['seconds']:g} s of {r['sample_rate_hz'] / 1e6:g} MS/s "
        f"{r['datatype']}, {r['mode']}: {r['wall_s']} s wall, first chunk after {r['first_chunk_s']} s, "
        f"real-time factor {r['realtime_factor']} (start-up included)"
        for r in report.get("replay", [])
    )
    if report.get("replay"):
        lines.append("")
    for r in report.get("paced", []):
        lat = r["arrival_to_publish_ms"]
        lines.append(
            f"paced live run, {r['seconds']:g} s at {r['sample_rate_hz'] / 1e6:g} MS/s, {r['mode']}: "
            f"{'kept up' if r['kept_up'] else 'did NOT keep up'} ({r['processed']} of {r['chunks']} chunks "
            f"processed, {r['late']} late, {r['shed']} shed, {r['degrade_steps_up']} degrade steps up, full "
            f"detector set on {r['full_set_share']:.0%} of chunks); arrival -> publish p50 "
            f"{lat.get('p50', 0):.0f} ms, p99 {lat.get('p99', 0):.0f} ms"
        )
    if report.get("paced"):
        lines.append("")
    lines.extend(format_peers(report))
    lines.append(f"peak RSS {report['peak_rss_mib']} MiB")
    lines.extend(_memory_lines(report.get("memory")))
    return "\n".join(lines)


def _memory_lines(memory: dict[str, Any] | None) -> list[str]:
    """The memory report as text (rfstream.runtime.resources.memory_snapshot)."""
    if not memory:
        return []

    def mib(n: Any) -> str:
        return "?" if n is None else f"{n / 2**20:.1f} MiB"

    ort = memory["onnxruntime"]
    arena = ""
    if "enable_cpu_mem_arena" in ort:
        arena = f"cpu arena {'on' if ort['enable_cpu_mem_arena'] else 'off'} "
    lines = [
        f"memory: RSS {mib(memory['rss_bytes'])}, pinned host {mib(memory['pinned_host_bytes'])}; "
        f"ONNX Runtime {arena}({ort['note']})"
    ]
    gpu = memory.get("gpu")
    if gpu and "error" not in gpu:
        lines.append(
            f"GPU {gpu['device']}: CuPy pool {mib(gpu['pool_used_bytes'])} used of {mib(gpu['pool_total_bytes'])}; "
            f"device {mib(gpu['device_used_bytes'])} used, {mib(gpu['device_free_bytes'])} free "
            f"of {mib(gpu['device_total_bytes'])}"
        )
    elif gpu:
        lines.append(f"GPU memory unavailable: {gpu['error']}")
    return lines
