"""One thread budget, decided at start-up: the cores this process may use, shared out once.

Every pool in the process is sized from here, so that together they use the
cores and no more:

* **cores**: the CPUs this process may run on (``os.sched_getaffinity``), capped
  by the cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` /
  ``cpu.cfs_period_us``, rounded up), or ``runtime.threads`` when set;
* **spectrogram workers**: the CPU spectrogram's block threads (each runs
  single-threaded pocketfft; the calling stage thread is one of them);
* **fan-out concurrency**: how many detectors run at once (the fan-out thread
  runs one itself, so it needs one fewer pool thread);
* **detector threads**: ONNX Runtime intra-op threads per session (inter-op 1:
  sessions run sequential graphs);
* **BLAS threads**: 1 — rfstream's parallelism is explicit, and an OpenBLAS pool
  per call on top of it only oversubscribes.

Pipelined, the spectrogram of chunk N+1 runs while the detectors work on chunk
N, so the cores are split between those two heavy stages; serially (the debug
mode) each stage has every core while it runs. The light stages (reading and
converting, merge and track, publishing) are not counted: they are short and
mostly wait on a queue. On the GPU the spectrogram needs one host thread.

:func:`plan` is pure (cores in, numbers out) so it is tested with injected
core counts; :func:`usable_cores` reads this machine.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["ThreadBudget", "cgroup_cpu_limit", "limit_blas", "plan", "plan_for", "usable_cores"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
MAX_SPECTROGRAM_WORKERS = 4  # the blocked kernel stops scaling about there (memory bandwidth)
_BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True, slots=True)
class ThreadBudget:
    """How many threads each pool gets; ``as_dict()`` is what bench prints and health carries."""

    cores: int  # the cores planned for
    cores_from: str  # "affinity", "cgroup quota" or "runtime.threads"
    affinity: int  # CPUs in this process's affinity mask
    quota_cores: float | None  # the cgroup CPU quota in cores; None: no quota
    pipelined: bool
    spectrogram_workers: int
    fanout_concurrency: int  # detectors running at once
    detector_threads: int  # ONNX Runtime intra-op threads per session
    blas_threads: int
    blas_set_by: str = "unset"  # how the BLAS limit was applied (see limit_blas)

    @property
    def fanout_pool(self) -> int:
        """Pool threads the fan-out needs: its own thread runs one detector."""
        return max(0, self.fanout_concurrency - 1)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        quota = "no quota" if self.quota_cores is None else f"quota {self.quota_cores:g}"
        return (
            f"threads: {self.cores} cores ({self.cores_from}; affinity {self.affinity}, {quota}), "
            f"{'pipelined' if self.pipelined else 'serial'}: spectrogram {self.spectrogram_workers}, "
            f"detectors {self.fanout_concurrency} at once x {self.detector_threads} ONNX Runtime thread(s), "
            f"BLAS {self.blas_threads} ({self.blas_set_by})"
        )


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores (v2, else v1); None when there is none."""
    paths = _cgroup_paths(proc_cgroup)
    # v2: <root>/<path>/cpu.max = "max 100000" or "200000 100000"; a parent's quota binds too.
    v2 = paths.get("")
    if v2 is not None:
        limit = _min_quota(root, v2, _read_v2)
        if limit is not None:
            return limit
    for key, relative in paths.items():  # v1: the cpu controller's folder (often "cpu,cpuacct")
        if "cpu" in key.split(","):
            for folder in (root / key, root / "cpu", root / "cpu,cpuacct"):
                limit = _min_quota(folder, relative, _read_v1)
                if limit is not None:
                    return limit
    if not paths:  # no /proc/self/cgroup: look at the root alone
        return _read_v2(root)
    return None


def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """{controllers: path} from /proc/self/cgroup ("" is the v2 unified hierarchy)."""
    try:
        text = proc_cgroup.read_text(encoding="utf-8")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out[parts[1]] = parts[2]
    return out


def _min_quota(base: Path, relative: str, read: Any) -> float | None:
    """The smallest quota on the way from ``base/relative`` up to ``base``."""
    folder = base / relative.lstrip("/")
    found: list[float] = []
    while True:
        q = read(folder)
        if q is not None:
            found.append(q)
        if folder == base or base not in folder.parents:
            break
        folder = folder.parent
    return min(found) if found else None


def _read_v2(folder: Path) -> float | None:
    try:
        quota, *rest = (folder / "cpu.max").read_text(encoding="ascii").split()
        period = float(rest[0]) if rest else 100_000.0
    except (OSError, ValueError, IndexError):
        return None
    if quota == "max" or period <= 0:
        return None
    try:
        return float(quota) / period
    except ValueError:
        return None


def _read_v1(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text(encoding="ascii"))
        period = int((folder / "cpu.cfs_period_us").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:  # -1: no quota
        return None
    return quota / period


def _affinity() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def usable_cores() -> tuple[int, int, float | None]:
    """(cores usable, CPUs in the affinity mask, cgroup quota in cores or None)."""
    affinity = _affinity()
    quota = cgroup_cpu_limit()
    cores = affinity if quota is None else max(1, min(affinity, math.ceil(quota - 1e-9)))
    return cores, affinity, quota


def plan(
    cores: int,
    *,
    detectors: int,
    onnx_sessions: int | None = None,
    pipelined: bool = True,
    gpu: bool = False,
    spectrogram_workers: int = 0,
    fanout_concurrency: int = 0,
    detector_threads: int = 0,
    blas_threads: int = 0,
    cores_from: str = "affinity",
    affinity: int | None = None,
    quota_cores: float | None = None,
) -> ThreadBudget:
    """Share ``cores`` among the pools; a non-zero keyword overrides its share.

    ``detectors``: how many run per frame; ``onnx_sessions``: how many of them hold an
    ONNX Runtime session (None: all).
    """
    cores = max(1, int(cores))
    n = max(1, int(detectors))
    if gpu:
        spec = 1  # the device does the work; one host thread feeds it
    elif pipelined:
        spec = max(1, min(MAX_SPECTROGRAM_WORKERS, cores // 2))  # the other half runs the detectors
    else:
        spec = max(1, min(MAX_SPECTROGRAM_WORKERS, cores))  # it runs alone
    spec = spectrogram_workers or spec
    left = max(1, cores - spec) if pipelined and not gpu else cores
    conc = fanout_concurrency or max(1, min(n, left))
    sessions = n if onnx_sessions is None else max(1, onnx_sessions)
    per_session = max(1, left // max(1, min(conc, sessions)))
    return ThreadBudget(
        cores=cores,
        cores_from=cores_from,
        affinity=cores if affinity is None else affinity,
        quota_cores=quota_cores,
        pipelined=pipelined,
        spectrogram_workers=spec,
        fanout_concurrency=conc,
        detector_threads=detector_threads or per_session,
        blas_threads=blas_threads or 1,
    )


def plan_for(cfg: Any, *, gpu: bool = False) -> ThreadBudget:
    """The budget for a configuration (``cfg.runtime`` overrides; the enabled detectors) on this machine."""
    rt = cfg.runtime
    cores, affinity, quota = usable_cores()
    cores_from = "cgroup quota" if quota is not None and cores < affinity else "affinity"
    if rt.threads:
        cores, cores_from = rt.threads, "runtime.threads"
    enabled = [d for d in cfg.detectors if d.enabled]
    sessions = sum(1 for d in enabled if d.kind in ("onnx", "two_stage"))
    return plan(
        cores,
        detectors=len(enabled),
        onnx_sessions=sessions or None,
        pipelined=rt.pipelined,
        gpu=gpu,
        spectrogram_workers=rt.spectrogram_workers,
        fanout_concurrency=rt.workers,
        detector_threads=rt.detector_threads,
        blas_threads=rt.blas_threads,
        cores_from=cores_from,
        affinity=affinity,
        quota_cores=quota,
    )


def limit_blas(threads: int) -> str:
    """Limit the BLAS libraries to ``threads``; says how (``ThreadBudget.blas_set_by``).

    Before NumPy is imported the OpenBLAS/OpenMP/MKL variables do it (the CLI gets here first;
    a variable the user set is kept); afterwards threadpoolctl, where installed, changes the
    loaded libraries; without it a loaded BLAS keeps its own setting.
    """
    global _blas_set
    threads = max(1, int(threads))
    if _blas_set is not None and _blas_set[0] == threads:
        return _blas_set[1]  # already done (the CLI does it before the runner does)
    if "numpy" not in sys.modules:
        user = [name for name in _BLAS_ENV if name in os.environ]
        for name in _BLAS_ENV:
            os.environ.setdefault(name, str(threads))
        how = f"environment, {user[0]}={os.environ[user[0]]} kept" if user else "environment"
    else:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return "unchanged: NumPy was loaded first and threadpoolctl is not installed"
        threadpool_limits(limits=threads, user_api="blas")
        how = "threadpoolctl"
    _blas_set = (threads, how)
    return how


_blas_set: tuple[int, str] | None = None  # (threads, how) once limit_blas has acted
