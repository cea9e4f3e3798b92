"""The GPU path: the device->host door, pinned host buffers, and the CuPy spectrogram.

No GPU is needed for the first part: a fake "frame ready" event and a fake device
array (data readable only through ``.get()``, and only after the event was waited
on) stand in for CuPy, and every host-side consumer — each detector kind that runs
on the CPU, the decoder, the ZeroMQ spectrogram encoder, the renderer — runs on a
frame carrying them. A consumer that read the image before the wait, or around
``Frame.host_image()``, fails these tests. The ``cuda`` tests run the real CuPy
path and skip cleanly where CuPy or a CUDA device is absent.
"""

from __future__ import annotations

import dataclasses
import gc
import warnings

import numpy as np
import pytest
from test_onnx_tiny import (
    FRAME_LABELS,
    crop_classifier,
    frame_detector,
    make_frame,
    noise_image,
    props,
)

from rfstream.config import SpectrogramConfig
from rfstream.dsp.backend import cuda_available
from rfstream.dsp.gpu import HostImageRing
from rfstream.dsp.spectrogram import Spectrogrammer
from rfstream.errors import ConfigError
from rfstream.hostmem import HostRing, buffer_owner, is_pinned
from rfstream.types import Chunk, Frame


# --- fakes for the CPU tests of the door ----------------------------------------------------------
class FakeEvent:
    """A "frame ready" event: counts host waits."""

    def __init__(self) -> None:
        self.waits = 0

    def synchronize(self) -> None:
        self.waits += 1


class ReadBeforeWait(AssertionError):
    pass


class FakeDeviceImage:
    """A device image: shape and dtype are metadata; its pixels come only from ``get()`` after the wait."""

    def __init__(self, data: np.ndarray, event: FakeEvent) -> None:
        self._data = np.ascontiguousarray(data, dtype=np.float32)
        self._event = event
        self.shape = self._data.shape
        self.dtype = self._data.dtype
        self.ndim = self._data.ndim
        self.gets = 0

    def get(self, stream=None, out=None):
        if self._event.waits == 0:
            raise ReadBeforeWait("device image read before the frame-ready event was waited on")
        self.gets += 1
        if out is None:
            return self._data.copy()
        out[...] = self._data
        return out

    def __array__(self, *args, **kwargs):
        raise ReadBeforeWait("device image converted to host memory around Frame.host_image()")

    def __getitem__(self, key):
        raise ReadBeforeWait("device image indexed on the host around Frame.host_image()")

    def __getattr__(self, name):  # any other array API (astype, tolist, arithmetic...) is a host read
        raise ReadBeforeWait(f"device image .{name} used on the host around Frame.host_image()")


def device_frame(image: np.ndarray, *, ring: HostImageRing | None = None, seq: int = 0) -> Frame:
    host = make_frame(image, seq=seq)
    event = FakeEvent()
    return dataclasses.replace(
        host, image=FakeDeviceImage(image, event), ready_event=event, host_buffers=ring
    )


def scene(size=(64, 64)) -> np.ndarray:
    image = noise_image(size)
    image[8:24, 16:32] = 0.9
    image[40:52, 36:60] = 0.55
    return image


def boxes(detections) -> list[tuple]:
    return [(d.x0, d.y0, d.x1, d.y1, d.label, round(d.score, 6)) for d in detections]


def host_consumers(tmp_path):
    """Every host-side consumer of a frame, by name: each detector kind that runs on the CPU and the sinks."""
    from rfstream.detect.energy import EnergyDetector
    from rfstream.detect.ort import OnnxFrameDetector
    from rfstream.detect.two_stage import TwoStageDetector, TwoStageOptions
    from rfstream.render import Waterfall
    from rfstream.sinks.zmq import encode_spectrogram

    # refine=True: the decoder itself reads the image (noise floor, box refinement).
    fd = frame_detector(
        tmp_path / "fd.onnx",
        metadata=props("frame_detector", FRAME_LABELS, (64, 64), decoder={"stride": 4, "refine": True}),
    )
    cc = crop_classifier(tmp_path / "cc.onnx")
    onnx = OnnxFrameDetector("onnx", fd, providers="cpu", threads=1)
    two = TwoStageDetector(
        "two", EnergyDetector("two.energy"), cc, options=TwoStageOptions(providers="cpu", threads=1)
    )
    energy = EnergyDetector("energy")
    consumers = {
        "energy": lambda f: boxes(energy.detect(f)),
        "onnx+decoder": lambda f: boxes(onnx.detect(f)),
        "two_stage": lambda f: boxes(two.detect(f)),
        "zmq_spectrogram": lambda f: encode_spectrogram(f, 2)["data"],
        "render": lambda f: _waterfall_of(Waterfall, f),
    }
    torch = _maybe_torch()
    if torch is not None:
        consumers["torch"] = _torch_consumer(torch, tmp_path)
    return consumers


def _waterfall_of(waterfall_cls, frame) -> bytes:
    """rfstream render's consumer: the frame pooled into a Waterfall, as its picture's pixels."""
    waterfall = waterfall_cls(rows_per_frame=16, width=64)
    waterfall.add(frame)
    return waterfall.grid().tobytes()


def _maybe_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _torch_consumer(torch, tmp_path):
    import json

    from rfstream.detect.models import sidecar_path
    from rfstream.detect.torch_backend import TorchFrameDetector

    class Tiny(torch.nn.Module):
        def forward(self, x):
            obj = torch.nn.functional.avg_pool2d(x, 4)
            logits = torch.cat([20 * obj - 10, 10 - 20 * obj], dim=1)
            return obj, torch.softmax(logits, dim=1)

    path = tmp_path / "tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, still the format
        torch.jit.script(Tiny()).save(str(path))
    meta = props("frame_detector", FRAME_LABELS, (64, 64), decoder={"stride": 4, "refine": True})
    sidecar_path(path).write_text(json.dumps({"metadata": meta}))
    det = TorchFrameDetector("torch", path, threads=1)
    return lambda f: boxes(det.detect(f))


# --- the door, on the CPU -------------------------------------------------------------------------
def test_every_host_consumer_waits_for_the_frame_and_reads_it_through_the_door(tmp_path):
    consumers = host_consumers(tmp_path)
    assert {"energy", "onnx+decoder", "two_stage", "zmq_spectrogram"} <= set(consumers)
    image = scene()
    for seq, (name, consume) in enumerate(consumers.items()):
        want = consume(make_frame(image, seq=100 + seq))  # the same consumer on a host frame
        assert want, name  # the scene gives every consumer something to compare
        frame = device_frame(image, seq=seq)  # a fresh device frame: this consumer is the first reader
        got = consume(frame)  # ReadBeforeWait if it reads before the wait or around the door
        assert got == want, name
        assert frame.ready_event.waits == 1, name
        assert frame.image.gets == 1, name


def test_all_consumers_of_one_frame_share_one_wait_and_one_copy(tmp_path):
    consumers = host_consumers(tmp_path)
    ring = HostImageRing((64, 64), slots=2, pinned=False)
    frame = device_frame(scene(), ring=ring)
    for consume in consumers.values():
        consume(frame)
    assert frame.ready_event.waits == 1
    assert frame.image.gets == 1  # one device->host copy however many readers
    assert ring.ring.leases == 1 and ring.pageable == 0
    assert frame.host_image() is frame.host_image()


def test_the_fake_catches_a_consumer_that_reads_around_the_door():
    """The guard above can fail: a reader of ``frame.image`` on the host is caught, waited or not."""
    frame = device_frame(scene())
    with pytest.raises(ReadBeforeWait):
        np.asarray(frame.image)
    with pytest.raises(ReadBeforeWait, match="before the frame-ready event"):
        frame.image.get()  # a reader that skips the wait
    with pytest.raises(ReadBeforeWait):
        frame.image.astype(np.float32)
    with pytest.raises(ReadBeforeWait):
        frame.image[0]
    frame.host_image()  # the door: waits, then copies
    assert frame.ready_event.waits == 1


def test_host_images_land_in_the_ring_and_hold_their_buffer_while_used():
    ring = HostImageRing((64, 64), slots=2, pinned=False)
    image = scene()
    first, second = device_frame(image, ring=ring), device_frame(image, ring=ring, seq=1)
    a, b = first.host_image(), second.host_image()
    np.testing.assert_array_equal(a, image)
    assert isinstance(buffer_owner(a), type(buffer_owner(b))) and ring.ring.free_slots() == 0
    third = device_frame(image, ring=ring, seq=2)
    c = third.host_image()  # every buffer held: a correct copy in pageable memory, counted
    np.testing.assert_array_equal(c, image)
    assert ring.pageable == 1 and ring.ring.exhausted == 1
    view = a[8:24, 16:32]  # a consumer keeps a slice of the first frame's image ...
    del first, a
    gc.collect()
    assert ring.ring.free_slots() == 0  # ... so its buffer is not reused under it
    np.testing.assert_array_equal(view, image[8:24, 16:32])
    del view
    gc.collect()
    assert ring.ring.free_slots() == 1
    fourth = device_frame(image * 0.5, ring=ring, seq=3)
    np.testing.assert_array_equal(fourth.host_image(), image * 0.5)
    assert ring.ring.leases == 3 and ring.pageable == 1
    np.testing.assert_array_equal(b, image)  # the second frame's image was never overwritten


def test_host_frames_pass_through_the_door_untouched():
    image = scene()
    frame = make_frame(image)
    assert frame.host_image() is image


# --- host buffer rings (the SoapySDR reader's and the door's) -------------------------------------
def test_ring_lends_each_buffer_once_until_every_view_is_gone():
    ring = HostRing(1000, np.complex64, 3)
    leases = [ring.lease() for _ in range(3)]
    assert all(x is not None and x.shape == (1000,) and x.dtype == np.complex64 for x in leases)
    assert ring.lease() is None and ring.exhausted == 1
    addresses = {x.ctypes.data for x in leases}
    assert len(addresses) == 3  # three distinct buffers
    tail = leases[0][500:].view(np.float32).reshape(-1, 2)  # derived views keep the lease alive
    del leases[0]
    gc.collect()
    assert ring.free_slots() == 0
    del tail
    gc.collect()
    assert ring.free_slots() == 1
    again = ring.lease()
    assert again.ctypes.data in addresses  # reused, not reallocated
    assert again.flags.writeable and again.flags.aligned and again.flags.c_contiguous
    assert not ring.pinned and not is_pinned(again)


def test_without_cupy_the_gpu_stage_is_a_clear_config_error():
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    from rfstream.dsp.gpu import GpuSpectrogrammer, PinnedStager

    with pytest.raises(ConfigError, match="needs CuPy"):
        GpuSpectrogrammer(SpectrogramConfig())
    with pytest.raises(ConfigError, match="needs CuPy"):
        PinnedStager()
    with pytest.raises(ConfigError, match="needs CuPy"):
        HostImageRing((64, 64))  # pinned by default
    with pytest.raises(RuntimeError, match="pinned host memory needs CuPy"):
        HostRing(16, np.float32, 2, pinned=True)


def _cuda():
    cupy = pytest.importorskip("cupy")
    if not cuda_available():
        pytest.skip("no CUDA device")
    return cupy


def chunks(n_chunks=3, size=200_000, rate=2e6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_chunks):
        iq = (rng.standard_normal(size) + 1j * rng.standard_normal(size)).astype(np.complex64) / np.sqrt(2)
        t = np.arange(k * size, (k + 1) * size) / rate
        iq += (3.0 * np.exp(2j * np.pi * 250e3 * t)).astype(np.complex64)
        out.append(
            Chunk(
                iq=iq, sample_rate_hz=rate, center_freq_hz=100e6, start_sample=k * size, seq=k, arrived_ns=0
            )
        )
    return out


@pytest.mark.cuda
@pytest.mark.parametrize(
    "cfg",
    [
        SpectrogramConfig(height=256, width=256, nfft=1024, hop=512),
        SpectrogramConfig(height=200, width=300, nfft=1000, hop=400),
    ],
)
def test_cupy_spectrogram_matches_numpy(cfg):
    cp = _cuda()
    from rfstream.dsp.gpu import GpuSpectrogrammer

    cpu = Spectrogrammer(cfg)
    gpu = GpuSpectrogrammer(cfg)
    for chunk in chunks():
        want = cpu.process(chunk)
        got = gpu.process(chunk)
        assert isinstance(got.image, cp.ndarray)
        np.testing.assert_allclose(cp.asnumpy(got.image), want.image, atol=1e-4)
        assert (got.t0_s, got.dt_s, got.f0_hz, got.df_hz) == pytest.approx(
            (want.t0_s, want.dt_s, want.f0_hz, want.df_hz)
        )


@pytest.mark.cuda
def test_pinned_stager_round_trips_and_reuses_slots():
    cp = _cuda()
    from rfstream.dsp.gpu import PinnedStager

    stager = PinnedStager(cp.cuda.Stream(non_blocking=True), slots=2)
    data = [c.iq for c in chunks(4, size=10_000)]
    for iq in data:
        dev = stager.to_device(iq)
        np.testing.assert_array_equal(cp.asnumpy(dev), iq)
    assert stager.to_device(cp.asarray(data[0])) is not None


@pytest.mark.cuda
def test_fused_kernels_match_numpy():
    cp = _cuda()
    from rfstream.dsp.gpu import log_normalise, power

    rng = np.random.default_rng(1)
    spec = (rng.standard_normal((64, 128)) + 1j * rng.standard_normal((64, 128))).astype(np.complex64)
    np.testing.assert_allclose(cp.asnumpy(power(cp.asarray(spec), 0.5)), (np.abs(spec) ** 2) * 0.5, rtol=1e-5)
    image = rng.exponential(1.0, size=(90, 120)).astype(np.float32)
    want = np.log10(np.maximum(image, 1e-20))
    floor = np.median(want[::3, ::3])
    want = np.clip(want * 0.2 - (floor * 0.2 - 6 / 50), 0, 1)
    got = log_normalise(cp.asarray(image), dynamic_range_db=50.0, floor_offset_db=6.0)
    np.testing.assert_allclose(cp.asnumpy(got), want, atol=1e-5)


@pytest.mark.cuda
def test_gpu_frames_carry_a_ready_event_and_come_home_once_into_pinned_memory():
    cp = _cuda()
    from rfstream.dsp.gpu import GpuSpectrogrammer

    cfg = SpectrogramConfig(height=256, width=256, nfft=1024, hop=512)
    gpu = GpuSpectrogrammer(cfg, host_slots=2)
    frames = [gpu.process(c) for c in chunks()]
    assert all(isinstance(f.ready_event, cp.cuda.Event) for f in frames)
    assert gpu.stream.ptr != cp.cuda.Stream.null.ptr  # its own stream, not the legacy default
    first = frames[0].host_image()
    assert is_pinned(first)  # the door copied into the stage's pinned ring
    np.testing.assert_array_equal(first, cp.asnumpy(frames[0].image))
    assert frames[0].host_image() is first
    frames[1].host_image()
    frames[2].host_image()  # two buffers, three frames alive: the third falls back, still correct
    assert gpu.host_images.pageable == 1
    np.testing.assert_array_equal(frames[2].host_image(), cp.asnumpy(frames[2].image))


@pytest.mark.cuda
def test_pinned_iq_is_copied_to_the_device_without_staging():
    cp = _cuda()
    from rfstream.dsp.gpu import PinnedStager

    ring = HostRing(10_000, np.complex64, 2, pinned=True)
    stager = PinnedStager(cp.cuda.Stream(non_blocking=True), slots=2)
    for iq in (c.iq for c in chunks(3, size=10_000)):
        lease = ring.lease()
        lease[:] = iq
        assert is_pinned(lease)
        dev = stager.to_device(lease)
        del lease  # the stager holds the buffer until its copy has landed
        np.testing.assert_array_equal(cp.asnumpy(dev), iq)
    assert stager.direct == 3 and stager.staged == 0


@pytest.mark.cuda
def test_onnx_runtime_reads_a_device_frame_in_place_through_iobinding(tmp_path):
    cp = _cuda()
    import onnxruntime as ort

    from rfstream.detect.ort import OnnxFrameDetector

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA execution provider (install onnxruntime-gpu)")
    fd = frame_detector(tmp_path / "fd.onnx")  # refine off: only the detector itself reads the image
    gpu = OnnxFrameDetector("gpu", fd, providers="cuda")
    cpu = OnnxFrameDetector("cpu", fd, providers="cpu")
    assert gpu.model.on_device and not cpu.model.on_device
    image = scene()
    ready = cp.cuda.Event(block=True, disable_timing=True)
    dev = cp.asarray(image)
    ready.record()
    frame = dataclasses.replace(make_frame(image), image=dev, ready_event=ready)
    got = [(d.x0, d.y0, d.x1, d.y1, d.label) for d in gpu.detect(frame)]
    assert got == [(d.x0, d.y0, d.x1, d.y1, d.label) for d in cpu.detect(make_frame(image))]
    assert got and frame._host is None  # bound by pointer: the image never came to the host
