"""``rfstream bench``: per-stage latency percentiles and the real-time factor at several sample rates.

Each rate runs the real pipeline (spectrogram, every configured detector, merge,
tracker and, with ``--publish``, a real ZeroMQ publisher on loopback) over an
endless synthetic source, losslessly, for ``chunks`` chunks after a warm-up.
The real-time factor is chunk duration / processing time: above 1 keeps up.
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


def bench_rate(
    cfg: Config, rate_hz: float, *, chunks: int, config_dir: Path | None, publish: bool
) -> dict[str, Any]:
    from rfstream.runner import assemble
    from rfstream.sources.synth import SynthSource

    cfg = replace(
        cfg,
        source=replace(cfg.source, kind="synth", sample_rate_hz=rate_hz),
        publish=replace(cfg.publish, endpoint="tcp://127.0.0.1:*" if publish else "", annotations=""),
    )
    source = _Limited(SynthSource(rate_hz, chunk_ms=cfg.source.chunk_ms, seed=7), chunks + WARMUP_CHUNKS)
    results: list[ChunkResult] = []
    totals: list[float] = []
    last = [time.perf_counter()]

    def keep(result: ChunkResult) -> None:
        now = time.perf_counter()
        if result.frame.chunk.seq >= WARMUP_CHUNKS:
            results.append(result)
            totals.append((now - last[0]) * 1e3)
        last[0] = now

    assemble(cfg, source=source, lossless=True, on_result=keep, config_dir=config_dir).run()
    stages: dict[str, list[float]] = {}
    for r in results:
        for name, ms in r.timings_ms.items():
            stages.setdefault(name, []).append(ms)
    chunk_ms = cfg.source.chunk_ms
    total = _percentiles(totals)
    return {
        "sample_rate_hz": rate_hz,
        "chunk_ms": chunk_ms,
        "chunks": len(results),
        "stages_ms": {name: _percentiles(v) for name, v in stages.items()},
        "chunk_total_ms": total,
        "realtime_factor_p50": round(chunk_ms / total["p50"], 2) if total["p50"] else None,
        "realtime_factor_p99": round(chunk_ms / total["p99"], 2) if total["p99"] else None,
        "keeps_up": bool(total["p99"] < chunk_ms),
    }


def run_bench(
    cfg: Config,
    rates: Sequence[float],
    *,
    chunks: int = 20,
    config_dir: Path | None = None,
    publish: bool = False,
) -> dict[str, Any]:
    runs = [bench_rate(cfg, r, chunks=chunks, config_dir=config_dir, publish=publish) for r in rates]
    report: dict[str, Any] = {
        "machine": machine(),
        "detectors": [d.name for d in cfg.detectors if d.enabled],
        "runs": runs,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    from rfstream.runtime.resources import memory_snapshot

    report["memory"] = memory_snapshot()  # after the runs: what the pipeline left allocated
    report["table"] = format_table(report)
    return report


def format_table(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, numpy {m['numpy']}, onnxruntime {m['onnxruntime']}",
        f"detectors: {', '.join(report['detectors'])}",
        "",
    ]
    for run in report["runs"]:
        lines.append(
            f"{run['sample_rate_hz'] / 1e6:g} MS/s, {run['chunk_ms']:g} ms chunks, {run['chunks']} chunks: "
            f"real-time factor {run['realtime_factor_p50']} (p50) / {run['realtime_factor_p99']} (p99)"
            f" -> {'keeps up' if run['keeps_up'] else 'FALLS BEHIND'}"
        )
        lines.append(f"  {'stage':<28}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
        rows = [*run["stages_ms"].items(), ("chunk total", run["chunk_total_ms"])]
        lines.extend(f"  {name:<28}{p['p50']:>10.1f}{p['p95']:>10.1f}{p['p99']:>10.1f}" for name, p in rows)
        lines.append("")
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
