"""The thread budget (rfstream/runtime/budget.py): cores from affinity and the cgroup quota, shared once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rfstream.config import Config, load_config, replace
from rfstream.errors import ConfigError
from rfstream.runtime.budget import cgroup_cpu_limit, limit_blas, plan, plan_for, usable_cores


def _heavy_threads(b) -> int:
    """Threads that run at once in the heaviest moment: the spectrogram beside the detectors, or each alone."""
    detectors = b.fanout_concurrency * b.detector_threads
    return b.spectrogram_workers + detectors if b.pipelined else max(b.spectrogram_workers, detectors)


@given(cores=st.integers(1, 128), detectors=st.integers(1, 8), pipelined=st.booleans())
def test_the_pools_together_use_the_cores_and_no_more(cores, detectors, pipelined):
    b = plan(cores, detectors=detectors, pipelined=pipelined)
    # pipelined, two stages overlap, so one core still runs two threads; otherwise never above the cores
    assert _heavy_threads(b) <= max(cores, 2 if pipelined else 1)
    assert b.spectrogram_workers >= 1 and b.fanout_concurrency >= 1 and b.detector_threads >= 1
    assert b.fanout_concurrency <= detectors
    assert b.blas_threads == 1 and b.fanout_pool == b.fanout_concurrency - 1


def test_two_cores_pipelined_give_the_spectrogram_one_and_the_detectors_the_other():
    b = plan(2, detectors=3)
    assert (b.spectrogram_workers, b.fanout_concurrency, b.detector_threads) == (1, 1, 1)
    serial = plan(2, detectors=3, pipelined=False)
    assert (serial.spectrogram_workers, serial.fanout_concurrency, serial.detector_threads) == (2, 2, 1)
    gpu = plan(8, detectors=3, gpu=True)
    assert gpu.spectrogram_workers == 1 and gpu.fanout_concurrency == 3  # the device does the DSP


def test_config_overrides_win_and_are_range_checked():
    cfg = load_config(
        overrides={
            "runtime.threads": 6,
            "runtime.spectrogram_workers": 3,
            "runtime.workers": 2,
            "runtime.detector_threads": 2,
            "runtime.blas_threads": 4,
            "runtime.pipelined": False,
        },
        environ={},
    )
    b = plan_for(cfg)
    assert (b.cores, b.cores_from) == (6, "runtime.threads")
    assert (b.spectrogram_workers, b.fanout_concurrency, b.detector_threads, b.blas_threads) == (3, 2, 2, 4)
    assert not b.pipelined
    with pytest.raises(ConfigError, match=r"runtime\.threads"):
        load_config(overrides={"runtime.threads": -1}, environ={})
    with pytest.raises(ConfigError, match=r"runtime\.stage_queue_depth"):
        load_config(overrides={"runtime.stage_queue_depth": 0}, environ={})


def test_usable_cores_follow_this_process_affinity():
    cores, affinity, quota = usable_cores()
    assert affinity == len(os.sched_getaffinity(0))
    assert 1 <= cores <= affinity
    if quota is None:
        assert cores == affinity


def _tree(tmp_path: Path, files: dict[str, str], cgroup: str) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(cgroup)
    return root, proc


@pytest.mark.parametrize(
    ("files", "cgroup", "cores"),
    [
        ({"cpu.max": "max 100000\n"}, "0::/\n", None),  # v2, no quota
        ({"cpu.max": "150000 100000\n"}, "0::/\n", 1.5),  # v2 at the root
        ({"a/cpu.max": "max 100000\n", "a/b/cpu.max": "300000 100000\n"}, "0::/a/b\n", 3.0),
        ({"a/cpu.max": "100000 100000\n", "a/b/cpu.max": "max 100000\n"}, "0::/a/b\n", 1.0),  # parent binds
        (
            {"cpu,cpuacct/cpu.cfs_quota_us": "250000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
            "4:cpu,cpuacct:/\n0::/\n",
            2.5,
        ),  # v1
        (
            {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
            "4:cpu,cpuacct:/\n",
            None,
        ),  # v1, no quota
        ({"cpu.max": "garbage\n"}, "0::/\n", None),
    ],
)
def test_cgroup_quota_v2_and_v1(tmp_path, files, cgroup, cores):
    root, proc = _tree(tmp_path, files, cgroup)
    assert cgroup_cpu_limit(root, proc) == cores


def test_blas_is_limited_through_the_environment_before_numpy_loads(tmp_path):
    code = (
        "import os, sys\n"
        "from rfstream.runtime.budget import limit_blas\n"
        "print(limit_blas(1)); print(os.environ['OPENBLAS_NUM_THREADS'], os.environ['OMP_NUM_THREADS'])\n"
        "print('numpy' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:3] == ["environment", "1 1", "False"]
    env["OPENBLAS_NUM_THREADS"] = "3"  # the user's own setting is kept, and said
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["environment, OPENBLAS_NUM_THREADS=3 kept", "3 1"]


def test_after_numpy_loads_without_threadpoolctl_it_says_so():
    pytest.importorskip("numpy")
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        assert limit_blas(7).startswith("unchanged: NumPy was loaded first")
    else:  # pragma: no cover - where it is installed
        assert limit_blas(7) == "threadpoolctl"


def test_the_health_topic_carries_the_budget(tmp_path):
    from rfstream.runner import assemble
    from rfstream.sources.synth import SynthSource

    cfg = replace(
        Config(),
        source={"kind": "synth", "sample_rate_hz": 1e6, "chunk_ms": 100.0},
        spectrogram={"nfft": 512, "hop": 256, "height": 128, "width": 128},
        detectors=[{"name": "energy", "kind": "energy"}],
        publish={"endpoint": ""},
        runtime={"threads": 2},
    )

    class Two:
        def __init__(self):
            self.inner = SynthSource(1e6, chunk_ms=100.0, seed=1)
            self.info = self.inner.info

        def __iter__(self):
            for i, c in enumerate(self.inner):
                if i == 2:
                    return
                yield c

        def close(self):
            self.inner.close()

    summary = assemble(cfg, source=Two(), lossless=True).run()
    threads = summary.health["threads"]
    assert threads["cores"] == 2 and threads["cores_from"] == "runtime.threads"
    assert threads["pipelined"] is True and threads["spectrogram_workers"] == 1
