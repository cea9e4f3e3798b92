"""Memory reporting (health and bench) and batch sizing from free device memory, on the CPU."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from test_onnx_tiny import crop_classifier

from rfstream.bench import _memory_lines
from rfstream.hostmem import HostRing
from rfstream.runtime.resources import ORT_USAGE_NOTE, batch_for_memory, memory_snapshot


@pytest.mark.parametrize(
    ("per_item", "free", "cap", "want"),
    [
        (1 << 20, 8 << 30, 256, 256),  # plenty of memory: the engine profile's cap
        (1 << 20, 64 << 20, 256, 16),  # a quarter of 64 MiB in 1 MiB crops
        (1 << 20, 1 << 20, 256, 1),  # nearly full: never below one
        (1 << 20, None, 64, 64),  # no GPU to size against
        (0, 1 << 20, 32, 32),
    ],
)
def test_batch_fits_a_quarter_of_free_memory(per_item, free, cap, want):
    assert batch_for_memory(per_item, free, cap=cap) == want


def test_batch_grows_with_free_memory_and_never_passes_the_cap():
    sizes = [batch_for_memory(4096 * 32, free, cap=256) for free in np.geomspace(1 << 20, 1 << 34, 30)]
    assert sizes == sorted(sizes) and sizes[0] >= 1 and sizes[-1] == 256


def test_snapshot_on_the_cpu_reports_rss_arenas_and_no_gpu():
    import rfstream.detect.ort  # noqa: F401  (a process that built sessions has it loaded)

    ring = HostRing(1 << 16, np.float32, 2)  # plain memory: not counted as pinned
    snap = memory_snapshot()
    assert snap["gpu"] is None  # CuPy was never loaded here
    assert snap["rss_bytes"] > 10 << 20 and snap["peak_rss_bytes"] >= snap["rss_bytes"]
    assert snap["pinned_host_bytes"] == 0 and ring.nbytes == 2 << 18
    assert snap["onnxruntime"]["enable_cpu_mem_arena"] is True
    assert snap["onnxruntime"]["note"] == ORT_USAGE_NOTE
    assert msgpack.unpackb(msgpack.packb(snap)) == snap  # travels in the health message as is
    (line,) = _memory_lines(snap)
    assert "RSS" in line and "does not expose arena usage" in line


def test_sessions_are_built_with_the_reported_arena_settings(tmp_path):
    from rfstream.detect.ort import SESSION_MEMORY, OrtModel

    model = OrtModel(crop_classifier(tmp_path / "cc.onnx"), providers="cpu", threads=1)
    options = model.session.get_session_options()
    assert options.enable_cpu_mem_arena == SESSION_MEMORY["enable_cpu_mem_arena"]
    assert options.enable_mem_pattern == SESSION_MEMORY["enable_mem_pattern"]
    assert not model.on_device and model.batch_limit == model.max_batch


def test_a_batch_limit_slices_the_classifier_run_without_changing_results(tmp_path):
    from rfstream.detect.ort import OrtModel

    model = OrtModel(crop_classifier(tmp_path / "cc.onnx"), providers="cpu", threads=1)
    crops = np.stack([np.full((1, 64, 64), v, dtype=np.float32) for v in (0.8, 0.3, 0.1, 0.8, 0.3)])
    (whole,) = model.run(crops)
    model.batch_limit = 2  # what free GPU memory would choose on a small device
    (sliced,) = model.run(crops)
    np.testing.assert_allclose(sliced, whole, rtol=1e-6)
    assert list(sliced.argmax(axis=1)) == [0, 1, 2, 0, 1]


def test_snapshot_imports_nothing_heavy():
    """It runs in the pipeline thread once a second: an energy-only process must not load ONNX Runtime."""
    import subprocess
    import sys

    code = (
        "import sys; from rfstream.runtime.resources import memory_snapshot; snap = memory_snapshot(); "
        "assert 'onnxruntime' not in sys.modules and 'cupy' not in sys.modules, sorted(sys.modules); "
        "print(snap['onnxruntime']['note'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "no ONNX Runtime session in this process"
