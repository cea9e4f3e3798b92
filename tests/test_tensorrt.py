"""TensorRT backend. Engine tests need TensorRT + a CUDA GPU and skip cleanly without them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_onnx_tiny import crop_classifier, frame_detector, make_frame, noise_image

from rfstream.detect import models
from rfstream.detect import trt_engine as trt_backend
from rfstream.detect.trt_engine import _calibration_batches
from rfstream.dsp.backend import cuda_available
from rfstream.errors import ModelError


def _tensorrt():
    pytest.importorskip("cupy")
    trt = pytest.importorskip("tensorrt")
    if not cuda_available():
        pytest.skip("no CUDA device")
    return trt


def test_without_tensorrt_the_backend_is_a_clear_model_error(tmp_path):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    from rfstream.detect.trt_engine import TensorRTFrameDetector

    onnx_path = frame_detector(tmp_path / "fd.onnx")
    engine = tmp_path / "fd.engine"
    engine.write_bytes(b"x")
    target = models.EngineTarget("GPU", "8.7", "10.0.0")
    models.write_engine_sidecar(engine, onnx_path, target, precision="fp16")
    with pytest.raises(ModelError, match="needs tensorrt and cupy"):
        TensorRTFrameDetector("trt", engine)


def test_calibration_inputs_from_png_and_npy(tmp_path):
    for i in range(5):
        Image.fromarray((noise_image((64, 64), seed=i) * 255).astype(np.uint8)).save(tmp_path / f"f{i}.png")
    np.save(tmp_path / "more.npy", np.zeros((3, 64, 64), dtype=np.float32))
    batches = _calibration_batches(tmp_path, (64, 64), batch=4)
    assert [b.shape for b in batches] == [(4, 1, 64, 64), (4, 1, 64, 64)]
    assert 0.05 < float(batches[0][1:].mean()) < 0.2  # PNG scaled to [0, 1]
    np.save(tmp_path / "bad.npy", np.zeros((10, 10), dtype=np.float32))
    with pytest.raises(ModelError, match=r"bad.npy is not 64x64"):
        _calibration_batches(tmp_path, (64, 64), batch=4)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=r"has no .png or .npy"):
        _calibration_batches(empty, (64, 64), 4)


@pytest.mark.tensorrt
def test_engine_build_and_run_matches_onnx_runtime(tmp_path):
    _tensorrt()
    from rfstream.detect.ort import OnnxFrameDetector
    from rfstream.detect.trt_engine import TensorRTFrameDetector

    onnx_path = frame_detector(tmp_path / "fd.onnx")
    engine = trt_backend.build_engine(onnx_path, fp16=False)
    assert models.sidecar_path(engine).is_file()
    resolved = models.resolve_model("fd", search_dirs=[tmp_path])
    assert resolved.kind == "engine" and resolved.warnings == ()
    trt_det = TensorRTFrameDetector("trt", engine)
    trt_det.warmup((64, 64))
    ort_det = OnnxFrameDetector("ort", onnx_path, providers="cpu")
    image = noise_image()
    image[8:24, 16:32] = 0.9
    import cupy as cp

    for img in (image, cp.asarray(image)):  # host frame (staged) and device frame (zero-copy)
        got = trt_det.detect(make_frame(img))
        want = ort_det.detect(make_frame(image))
        assert [(d.x0, d.y0, d.x1, d.y1, d.label) for d in got] == [
            (d.x0, d.y0, d.x1, d.y1, d.label) for d in want
        ]
        assert got[0].score == pytest.approx(want[0].score, abs=1e-3)
    trt_det.close()


@pytest.mark.tensorrt
def test_classifier_engine_batches(tmp_path):
    _tensorrt()
    from rfstream.detect.trt_engine import TensorRTModel

    onnx_path = crop_classifier(tmp_path / "cc.onnx")
    engine = trt_backend.build_engine(onnx_path, fp16=False, max_batch=4)
    model = TensorRTModel(engine)
    crops = np.stack([np.full((1, 64, 64), v, dtype=np.float32) for v in (0.8, 0.3, 0.1, 0.8, 0.3, 0.1)])
    (probs,) = model.run(crops)  # 6 > max batch 4: two enqueues
    assert list(probs.argmax(axis=1)) == [0, 1, 2, 0, 1, 2]
    model.close()


# --- the builder's version handling, timing cache and errors, against a stand-in TensorRT ---------
# TensorRT cannot run here, so these tests drive rfstream's real builder code through a small
# stand-in module with the Python API's names and behaviours that the builder relies on
# (docs.nvidia.com TensorRT Python API: Builder, NetworkDefinitionCreationFlag, BuilderFlag,
# IBuilderConfig.create_timing_cache / set_timing_cache / get_timing_cache, ITimingCache.serialize).
# The real builder runs in the `tensorrt`-marked tests above on a GPU machine.
class _Flags:
    def __init__(self, **members):
        self.__dict__.update(members)


class FakeTimingCache:
    def __init__(self, data: bytes):
        self.data = data

    def serialize(self) -> bytes:
        return self.data + b"|timed"


class FakeConfig:
    def __init__(self, trt):
        self.trt, self.flags, self.cache, self.pool = trt, [], None, {}
        self.caches_offered: list[bytes] = []

    def set_memory_pool_limit(self, pool, size):
        self.pool[pool] = size

    def add_optimization_profile(self, profile):
        self.profile = profile

    def set_flag(self, flag):
        self.flags.append(flag)

    def create_timing_cache(self, data):
        if data == b"corrupt":
            raise RuntimeError("Invalid timing cache blob")
        return FakeTimingCache(bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        self.caches_offered.append(cache.data)
        if cache.data.startswith(b"other-gpu") and not ignore_mismatch:
            return False
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache


class FakeNetwork:
    def get_input(self, i):
        return _Flags(name="image")


class FakeBuilder:
    def __init__(self, trt):
        self.trt = trt

    def create_network(self, flags):
        self.trt.calls["network_flags"] = flags
        return FakeNetwork()

    def create_builder_config(self):
        config = FakeConfig(self.trt)
        self.trt.calls["config"] = config
        return config

    def create_optimization_profile(self):
        return _Flags(set_shape=lambda *a: None)

    def build_serialized_network(self, network, config):
        outcome = self.trt.build_outcome
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def fake_trt(version="10.3.0", *, fp16=True, int8=True, strongly_typed=True, parse_ok=True, build=b"ENGINE"):
    trt = _Flags(__version__=version, calls={}, build_outcome=build)
    creation = {"EXPLICIT_BATCH": 0}
    if strongly_typed:
        creation["STRONGLY_TYPED"] = 1
    trt.NetworkDefinitionCreationFlag = _Flags(**creation)
    trt.BuilderFlag = _Flags(**({"FP16": "FP16"} if fp16 else {}), **({"INT8": "INT8"} if int8 else {}))
    if int8:
        trt.IInt8EntropyCalibrator2 = object
    trt.MemoryPoolType = _Flags(WORKSPACE="WORKSPACE")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.Builder = lambda logger: FakeBuilder(trt)

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse(self, data):
            return parse_ok

        def get_error(self, i):
            return "In node 3 (Conv): unsupported attribute"

    trt.OnnxParser = Parser
    return trt


@pytest.fixture
def with_trt(monkeypatch):
    """Install a stand-in TensorRT for rfstream's builder; returns a function making one."""
    from rfstream.detect import trt_engine as backend

    def install(trt):
        monkeypatch.setattr(backend, "_import", lambda: (trt, None))
        backend._logger.cache_clear()
        return trt

    yield install
    backend._logger.cache_clear()


@pytest.mark.parametrize(
    ("version", "explicit_batch"),
    [("8.6.1", True), ("10.0.1", False), ("10.13.2.6", False)],
)
def test_network_flags_follow_the_tensorrt_version(version, explicit_batch):
    from rfstream.detect.trt_engine import plan_build

    plan = plan_build(fake_trt(version), fp16=True, int8=False)
    assert bool(plan.network_flags & 1) is explicit_batch  # EXPLICIT_BATCH only before 10
    assert plan.builder_flags == ("FP16",) and plan.precision == "fp16"
    typed = plan_build(fake_trt(version), fp16=False, int8=False, strongly_typed=version.startswith("10"))
    assert typed.builder_flags == ()


def test_strongly_typed_needs_tensorrt_10_and_no_precision_flags():
    from rfstream.detect.trt_engine import plan_build

    plan = plan_build(fake_trt("10.3.0"), fp16=False, int8=False, strongly_typed=True)
    assert plan.network_flags == 1 << 1 and plan.precision == "strongly-typed"
    with pytest.raises(ModelError, match="takes every precision from the ONNX graph"):
        plan_build(fake_trt("10.3.0"), fp16=True, int8=False, strongly_typed=True)
    with pytest.raises(ModelError, match="strongly typed networks need TensorRT 10"):
        plan_build(fake_trt("8.6.1", strongly_typed=False), fp16=False, int8=False, strongly_typed=True)


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("11.0.0", "TensorRT 11 removed the FP16/INT8 builder flags"),
        ("8.5.3", "too old"),
        ("banana", "unreadable version"),
    ],
)
def test_unsupported_tensorrt_versions_are_refused_by_name(version, message):
    from rfstream.detect.trt_engine import check_version, plan_build

    with pytest.raises(ModelError, match=message):
        check_version(fake_trt(version))
    with pytest.raises(ModelError, match=message):
        plan_build(fake_trt(version), fp16=True, int8=False)


def test_missing_precision_flags_are_model_errors():
    from rfstream.detect.trt_engine import plan_build

    with pytest.raises(ModelError, match=r"no BuilderFlag.FP16; build with --no-fp16"):
        plan_build(fake_trt("10.3.0", fp16=False), fp16=True, int8=False)
    with pytest.raises(ModelError, match="no INT8 calibration"):
        plan_build(fake_trt("10.3.0", int8=False), fp16=False, int8=True)
    plan = plan_build(fake_trt("8.6.1"), fp16=True, int8=True)
    assert plan.builder_flags == ("FP16", "INT8") and plan.precision == "int8+fp16" and plan.calibrate


def _meta(tmp_path):
    path = frame_detector(tmp_path / "fd.onnx")
    return path, models.read_metadata(path)


def test_build_writes_the_engine_and_keeps_a_timing_cache_for_the_next_build(tmp_path, with_trt):
    from rfstream.detect.trt_engine import build_serialized_engine, timing_cache_path

    trt = with_trt(fake_trt("10.3.0"))
    onnx_path, meta = _meta(tmp_path)
    dest = tmp_path / "out" / "fd.engine"
    assert build_serialized_engine(onnx_path, dest, meta, fp16=True, workspace_mib=64) == "fp16"
    assert dest.read_bytes() == b"ENGINE"
    config = trt.calls["config"]
    assert config.pool == {"WORKSPACE": 64 << 20} and config.flags == ["FP16"]
    cache = timing_cache_path(dest)
    assert cache.name == "fd.engine.timing" and cache.read_bytes() == b"|timed"
    assert config.caches_offered == [b""]  # no cache yet: an empty one
    build_serialized_engine(onnx_path, dest, meta, fp16=True)
    assert trt.calls["config"].caches_offered == [b"|timed"]  # the second build starts from the first's
    assert cache.read_bytes() == b"|timed|timed"


@pytest.mark.parametrize("stale", [b"other-gpu", b"corrupt"])
def test_an_unusable_timing_cache_is_replaced_not_fatal(tmp_path, with_trt, stale):
    from rfstream.detect.trt_engine import build_serialized_engine, timing_cache_path

    trt = with_trt(fake_trt("10.3.0"))
    onnx_path, meta = _meta(tmp_path)
    dest = tmp_path / "fd.engine"
    timing_cache_path(dest).write_bytes(stale)
    build_serialized_engine(onnx_path, dest, meta, fp16=False)
    offered = trt.calls["config"].caches_offered
    assert offered[-1] == b"" and trt.calls["config"].cache.data == b""
    assert timing_cache_path(dest).read_bytes() == b"|timed"


@pytest.mark.parametrize(
    ("trt_kwargs", "message"),
    [
        ({"build": None}, r"could not build an engine \(see the TensorRT log"),
        (
            {"build": RuntimeError("out of memory\n while timing")},
            r"failed to build an engine: out of memory while timing",
        ),
        ({"parse_ok": False}, r"ONNX parser refused it: In node 3 \(Conv\)"),
    ],
)
def test_every_builder_failure_is_one_model_error(tmp_path, with_trt, trt_kwargs, message):
    from rfstream.detect.trt_engine import build_serialized_engine

    with_trt(fake_trt("10.3.0", **trt_kwargs))
    onnx_path, meta = _meta(tmp_path)
    dest = tmp_path / "fd.engine"
    with pytest.raises(ModelError, match=message) as info:
        build_serialized_engine(onnx_path, dest, meta, fp16=False)
    assert "TensorRT 10.3.0" in str(info.value) and str(onnx_path) in str(info.value)
    assert not dest.exists()  # nothing half-written where the resolver would find it


@pytest.mark.tensorrt
def test_a_real_build_keeps_its_timing_cache_and_sidecar(tmp_path):
    trt = _tensorrt()
    from rfstream.detect.trt_engine import timing_cache_path

    onnx_path = frame_detector(tmp_path / "fd.onnx")
    engine = trt_backend.build_engine(onnx_path, fp16=False)
    cache = timing_cache_path(engine)
    first = cache.stat().st_size
    assert first > 0
    trt_backend.build_engine(onnx_path, fp16=False)  # loads the cache (same GPU, same TensorRT)
    assert cache.stat().st_size >= first
    info = models.model_info(engine)
    assert info["built_for"]["tensorrt_version"] == trt.__version__
    assert info["onnx_sha256"] == models.file_sha256(onnx_path)


@pytest.mark.tensorrt
def test_the_engine_waits_on_the_frame_ready_event_of_the_producing_stream(tmp_path):
    """The image is written late on another stream; an engine that did not wait would read zeros."""
    _tensorrt()
    import dataclasses

    import cupy as cp

    from rfstream.detect.ort import OnnxFrameDetector
    from rfstream.detect.trt_engine import TensorRTFrameDetector

    onnx_path = frame_detector(tmp_path / "fd.onnx")
    engine = trt_backend.build_engine(onnx_path, fp16=False)
    trt_det = TensorRTFrameDetector("trt", engine)
    ort_det = OnnxFrameDetector("ort", onnx_path, providers="cpu")
    image = noise_image()
    image[8:24, 16:32] = 0.9
    spin_then_copy = cp.RawKernel(
        r"""
        extern "C" __global__ void spin_then_copy(const float* src, float* dst, int n, long long cycles) {
            long long t0 = clock64();
            while (clock64() - t0 < cycles) { }
            for (int i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
        }""",
        "spin_then_copy",
    )
    producer = cp.cuda.Stream(non_blocking=True)
    src = cp.asarray(image)
    dst = cp.zeros_like(src)
    cp.cuda.Device().synchronize()  # src and dst are complete before the producer stream starts
    ready = cp.cuda.Event(block=True, disable_timing=True)
    with producer:
        spin_then_copy((1,), (256,), (src, dst, np.int32(src.size), np.int64(200_000_000)))
        ready.record(producer)
    frame = dataclasses.replace(make_frame(image), image=dst, ready_event=ready)
    got = trt_det.detect(frame)
    want = ort_det.detect(make_frame(image))
    assert [(d.x0, d.y0, d.x1, d.y1, d.label) for d in got] == [
        (d.x0, d.y0, d.x1, d.y1, d.label) for d in want
    ]
    assert want  # the scene has a signal, so zeros would have given nothing
    trt_det.close()


def test_an_unwritable_engine_path_is_a_model_error(tmp_path, with_trt):
    from rfstream.detect.trt_engine import build_serialized_engine

    with_trt(fake_trt("8.6.1"))
    onnx_path, meta = _meta(tmp_path)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the engine's folder should be")
    with pytest.raises(ModelError, match="cannot write the engine"):
        build_serialized_engine(onnx_path, blocker / "fd.engine", meta, fp16=True)
