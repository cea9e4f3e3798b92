"""TensorRT backend: a serialized engine on its own execution context and CUDA stream.

Supported: TensorRT 8.6 to 10.x on CUDA 12 (JetPack 6 ships 8.6; desktops 10.x),
checked at import of an engine and before a build; TensorRT 11 removed the
FP16/INT8 builder flags and the INT8 calibrator the builder offers, so it is
refused with a message (the ``gpu`` extra pins ``tensorrt>=8.6,<11``). One code
path serves every supported version through the tensor-name API only —
``num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode`` /
``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``. CuPy owns
the CUDA context, the stream, the device buffers and the events; no PyCUDA.

Per detector: one ``IExecutionContext``, one ``cupy.cuda.Stream(non_blocking=True)``,
device buffers for every I/O tensor sized for the engine profile's largest
batch, and pinned host buffers the outputs are copied back into asynchronously.

A frame detector's ``submit(frame)`` makes its stream wait on the frame's
"frame ready" event (``stream.wait_event``, recorded by the GPU spectrogram;
see rfstream.dsp.gpu) — a device-side wait, the host never synchronises —
points the input tensor straight at the frame's device memory (no copy, no
host round trip), enqueues the engine and the device-to-host copies, and
returns. ``collect()`` waits for its own stream and decodes on the host. The
fan-out submits every engine before collecting any, so the engines overlap on
the GPU. A host frame (NumPy spectrogram) comes through ``Frame.host_image()``
and a pinned staging buffer.

Building (:func:`build_serialized_engine`, behind ``rfstream models build-engine``):

- network flags per version: ``EXPLICIT_BATCH`` below 10 (10.0 deprecated it:
  "Ignored because networks are always explicit batch"), and optionally
  ``STRONGLY_TYPED`` (TensorRT >= 10 here), which takes every precision from
  the ONNX graph and so excludes the FP16/INT8 builder flags;
- the workspace through ``config.set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)``;
- ``BuilderFlag.FP16`` / ``INT8`` and ``IInt8EntropyCalibrator2`` only where this
  TensorRT has them (the calibrator is deprecated since 10.1), else ModelError;
- a **timing cache** persisted next to the engine (``<engine>.timing``), loaded
  when present (``config.create_timing_cache(bytes)`` then
  ``config.set_timing_cache(cache, ignore_mismatch=False)``, which refuses a
  cache from another device or version; a refused or corrupt cache is replaced
  by an empty one with a warning) and saved after the build
  (``config.get_timing_cache().serialize()``);
- every failure — the parser, a missing flag, an exception from the builder, a
  None engine — is one ModelError naming the model and the TensorRT version.

(TensorRT Python API reference, docs.nvidia.com/deeplearning/tensorrt: Builder,
NetworkDefinitionCreationFlag, IBuilderConfig, ITimingCache; the 10.x->11.x
migration guide lists the removed flags.) An engine is used only where its
sidecar matches this GPU, compute capability, TensorRT version and the ONNX file
beside it (rfstream.detect.models.engine_mismatch).

NOTE: this module has not been run on a GPU in this project's development or CI;
see docs/gpu.md.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from rfstream.detect.decode import FrameDecoder
from rfstream.detect.models import (
    EngineTarget,
    InferenceFailed,
    ModelMetadata,
    engine_mismatch,
    read_metadata,
    write_engine_sidecar,
)
from rfstream.errors import ModelError
from rfstream.types import Detection, Frame

__all__ = [
    "BuildPlan",
    "TensorRTFrameDetector",
    "TensorRTModel",
    "build_serialized_engine",
    "check_version",
    "plan_build",
    "timing_cache_path",
]

log = structlog.get_logger(__name__)

SUPPORTED = "8.6 to 10.x"
_IO = {
    "frame_detector": ("image", ("objectness", "class_probs")),
    "crop_classifier": ("crops", ("probs",)),
}


def _import() -> tuple[Any, Any]:
    try:
        import cupy
        import tensorrt as trt
    except ImportError as exc:
        raise ModelError(
            f"the TensorRT backend needs tensorrt and cupy: {exc} (pip install 'rfstream[gpu]')"
        ) from exc
    return trt, cupy


@functools.lru_cache(maxsize=1)
def _logger() -> Any:
    """One TensorRT logger for the process (builder and runtimes share it)."""
    trt, _ = _import()
    return trt.Logger(trt.Logger.WARNING)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def check_version(trt: Any) -> tuple[int, int]:
    """``(major, minor)`` of a supported TensorRT; ModelError for anything outside 8.6 to 10.x."""
    text = str(getattr(trt, "__version__", "?"))
    try:
        major, minor = (int(part) for part in text.split(".")[:2])
    except ValueError:
        raise ModelError(f"TensorRT reports an unreadable version {text!r}") from None
    if (major, minor) < (8, 6):
        raise ModelError(f"TensorRT {text} is too old: rfstream supports TensorRT {SUPPORTED}")
    if major >= 11:
        raise ModelError(
            f"TensorRT {text} is not supported: TensorRT 11 removed the FP16/INT8 builder flags and the "
            f"INT8 calibrator; rfstream supports TensorRT {SUPPORTED} "
            f"(pip install 'tensorrt>=8.6,<11', as the 'gpu' extra pins)"
        )
    return major, minor


class TensorRTModel:
    """A deserialized engine with its context, stream and buffers; the input may be on the host or device."""

    def __init__(self, path: str | os.PathLike[str], meta: ModelMetadata | None = None) -> None:
        trt, cp = _import()
        check_version(trt)
        self._cp = cp
        self.path = Path(path)
        self.meta = meta = meta or read_metadata(self.path)
        # Only an engine built here, for this TensorRT, from the ONNX file beside it (when there is
        # one) may run: the sidecar says what it was built for.
        why = engine_mismatch(self.path, self.path.with_suffix(".onnx"), None)
        if why:
            raise ModelError(f"model {self.path} cannot be used here: {why}")
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise ModelError(f"model {self.path} cannot be read: {exc}") from exc
        self._runtime = trt.Runtime(_logger())
        try:
            engine = self._runtime.deserialize_cuda_engine(data)
        except Exception as exc:  # TensorRT's pybind layer raises untyped errors on bad input
            raise ModelError(f"model {self.path}: TensorRT cannot deserialize it: {_one_line(exc)}") from exc
        if engine is None:
            raise ModelError(
                f"model {self.path}: TensorRT cannot deserialize this engine (corrupt, or built for "
                f"another GPU or TensorRT version); rebuild it with 'rfstream models build-engine'"
            )
        self.engine = engine
        input_name, output_names = _IO[meta.task]
        modes: dict[str, Any] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            modes[name] = engine.get_tensor_mode(name)
        inputs = [n for n, m in modes.items() if m == trt.TensorIOMode.INPUT]
        outputs = [n for n, m in modes.items() if m == trt.TensorIOMode.OUTPUT]
        if inputs != [input_name] or sorted(outputs) != sorted(output_names):
            raise ModelError(
                f"model {self.path}: engine has inputs {inputs} and outputs {outputs}; a {meta.task} "
                f"needs input '{input_name}' and outputs {list(output_names)}"
            )
        self.input_name, self.output_names = input_name, list(output_names)
        if np.dtype(trt.nptype(engine.get_tensor_dtype(input_name))) != np.float32:
            raise ModelError(f"model {self.path}: engine input '{input_name}' is not float32")
        shape = tuple(engine.get_tensor_shape(input_name))
        if shape[0] >= 0:
            profile_max = int(shape[0])
        else:  # dynamic batch: the largest the optimisation profile allows
            profile_max = int(engine.get_tensor_profile_shape(input_name, 0)[2][0])
        h, w = meta.input_size
        if len(shape) != 4 or tuple(shape[1:]) != (1, h, w):
            raise ModelError(f"model {self.path}: engine input shape {list(shape)} is not [N, 1, {h}, {w}]")
        self.max_batch = profile_max
        if meta.task == "crop_classifier" and shape[0] < 0:
            self.max_batch = _batch_from_free_memory(trt, engine, input_name, output_names, profile_max)

        try:
            self.context = engine.create_execution_context()
        except Exception as exc:  # untyped pybind error (out of device memory...)
            raise ModelError(
                f"model {self.path}: TensorRT could not create an execution context: {_one_line(exc)}"
            ) from exc
        if self.context is None:
            raise ModelError(
                f"model {self.path}: TensorRT could not create an execution context (GPU memory?)"
            )
        self.stream = cp.cuda.Stream(non_blocking=True)
        self._ready = cp.cuda.Event(disable_timing=True)  # re-recorded per frame when none is given
        # Buffers for the largest batch; a smaller batch uses their leading rows.
        self._in_dev = cp.empty((self.max_batch, 1, h, w), dtype=cp.float32)
        self._in_host = _pinned(cp, (self.max_batch, 1, h, w), np.float32)
        if self.context.set_input_shape(self.input_name, (self.max_batch, 1, h, w)) is False:
            raise ModelError(f"model {self.path}: the engine refuses its own largest batch {self.max_batch}")
        self._out_dev: dict[str, Any] = {}
        self._out_host: dict[str, np.ndarray] = {}
        for name in self.output_names:
            out_shape = tuple(int(v) for v in self.context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            self._out_dev[name] = cp.empty(out_shape, dtype=dtype)
            self._out_host[name] = _pinned(cp, out_shape, dtype)
            self.context.set_tensor_address(name, int(self._out_dev[name].data.ptr))
        self.context.set_tensor_address(self.input_name, int(self._in_dev.data.ptr))
        self._batch = 0

    # --- enqueue / wait ---------------------------------------------------------------------------
    def _set_batch(self, n: int) -> None:
        h, w = self.meta.input_size
        if self.context.set_input_shape(self.input_name, (n, 1, h, w)) is False:
            raise InferenceFailed(f"model {self.path.name}: batch {n} is outside the engine's profile")

    def enqueue_device(self, image: Any, n: int = 1) -> None:
        """Enqueue on a device array ``[n, 1, H, W]`` or ``[H, W]`` (float32, C-contiguous, stays alive)."""
        self._set_batch(n)
        self.context.set_tensor_address(self.input_name, int(image.data.ptr))
        self._execute(n)

    def enqueue_host(self, batch: np.ndarray) -> None:
        """Enqueue on a host batch ``[n, 1, H, W]``: pinned staging, then an async host-to-device copy."""
        n = int(batch.shape[0])
        np.copyto(self._in_host[:n], batch, casting="same_kind")
        nbytes = self._in_host[:n].nbytes
        self._cp.cuda.runtime.memcpyAsync(
            int(self._in_dev.data.ptr),
            int(self._in_host.ctypes.data),
            nbytes,
            self._cp.cuda.runtime.memcpyHostToDevice,
            self.stream.ptr,
        )
        self._set_batch(n)
        self.context.set_tensor_address(self.input_name, int(self._in_dev.data.ptr))
        self._execute(n)

    def _execute(self, n: int) -> None:
        # execute_async_v3 enqueues on the stream and returns False on failure (the tensor-name API)
        if not self.context.execute_async_v3(self.stream.ptr):
            raise InferenceFailed(f"model {self.path.name}: TensorRT execute_async_v3 failed")
        for name in self.output_names:
            dev, host = self._out_dev[name], self._out_host[name]
            nbytes = host[:n].nbytes  # the leading rows: batch n is contiguous at the buffer's start
            self._cp.cuda.runtime.memcpyAsync(
                int(host.ctypes.data),
                int(dev.data.ptr),
                nbytes,
                self._cp.cuda.runtime.memcpyDeviceToHost,
                self.stream.ptr,
            )
        self._batch = n

    def wait_for(self, event: Any | None) -> None:
        """Make this model's stream wait for ``event``, or for the work queued so far on the current stream.

        ``Stream.wait_event`` is cudaStreamWaitEvent: a device-side dependency, the host goes on.
        """
        if event is None:
            self._ready.record(self._cp.cuda.get_current_stream())
            event = self._ready
        self.stream.wait_event(event)

    def outputs(self) -> list[np.ndarray]:
        """Wait for the stream; views of the pinned host outputs of the last batch (valid until the next)."""
        self.stream.synchronize()
        return [self._out_host[name][: self._batch] for name in self.output_names]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Synchronous host-in, host-out inference (the crop classifier's path); slices large batches."""
        if batch.shape[0] == 0:
            return [
                np.zeros((0, *self._out_host[n].shape[1:]), self._out_host[n].dtype)
                for n in self.output_names
            ]
        parts = []
        for i in range(0, batch.shape[0], self.max_batch):
            self.enqueue_host(batch[i : i + self.max_batch])
            parts.append([out.copy() for out in self.outputs()])
        return [np.concatenate(p, axis=0) for p in zip(*parts, strict=True)]

    def close(self) -> None:
        self.stream.synchronize()
        self.context = None
        self.engine = None


def _batch_from_free_memory(
    trt: Any, engine: Any, input_name: str, output_names: Sequence[str], profile_max: int
) -> int:
    """The crop batch whose buffers and share of the engine's activations fit a quarter of free memory.

    Per crop: its input and output bytes plus the engine's device (activation) memory divided
    by the profile's largest batch (that memory is sized for the largest batch).
    """
    from rfstream.runtime.resources import batch_for_memory, device_free_bytes

    def item_bytes(name: str) -> int:
        dims = [int(v) for v in engine.get_tensor_shape(name)][1:]
        return (
            int(np.prod([max(1, d) for d in dims]))
            * np.dtype(trt.nptype(engine.get_tensor_dtype(name))).itemsize
        )

    # device_memory_size_v2 is TensorRT >= 10.1; device_memory_size is 8.6-10.x (removed in 11).
    activations = getattr(engine, "device_memory_size_v2", None)
    if activations is None:
        activations = getattr(engine, "device_memory_size", 0)
    per_item = sum(item_bytes(n) for n in (input_name, *output_names)) + int(activations) // max(
        1, profile_max
    )
    return batch_for_memory(per_item, device_free_bytes(), cap=profile_max)


def _pinned(cp: Any, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A page-locked host array, so device-to-host copies are truly asynchronous."""
    import cupyx

    return cupyx.empty_pinned(shape, dtype=dtype)


class TensorRTFrameDetector:
    """The full-frame detector on a TensorRT engine: ``submit(frame)`` then ``collect()``."""

    kind = "tensorrt"

    def __init__(
        self,
        name: str,
        engine_path: str | os.PathLike[str],
        *,
        meta: ModelMetadata | None = None,
        score_threshold: float | None = None,
        labels_kept: Sequence[str] = (),
        priority: int = 0,
        decoder_overrides: dict[str, Any] | None = None,
    ) -> None:
        meta = meta or read_metadata(engine_path)
        self.decode = FrameDecoder.for_model(
            name,
            meta,
            engine_path,
            "tensorrt",
            score_threshold=score_threshold,
            labels_kept=labels_kept,
            overrides=decoder_overrides,
        )
        self.name = name
        self.priority = priority
        self.meta = meta
        self.model = TensorRTModel(engine_path, meta)
        self._pending: Frame | None = None

    def submit(self, frame: Frame) -> None:
        """Enqueue this frame on the detector's stream and return at once."""
        image = frame.image  # GPU code: read in place only after the stream waits on ready_event
        h, w = self.meta.input_size
        if tuple(image.shape) != (h, w):
            raise InferenceFailed(
                f"detector {self.name!r}: frame is {tuple(image.shape)}, the engine takes {h}x{w}"
            )
        cp = self.model._cp
        if isinstance(image, cp.ndarray) and image.dtype == cp.float32 and image.flags.c_contiguous:
            # A device-side wait for the spectrogram's "frame ready" event, then read it where it lies.
            self.model.wait_for(frame.ready_event)
            self.model.enqueue_device(image)
        else:  # a host frame (NumPy spectrogram), through the one host door: pinned staging + async copy
            host = np.asarray(frame.host_image(), dtype=np.float32)
            self.model.enqueue_host(host.reshape(1, 1, h, w))
        self._pending = frame  # keeps the device image alive until the engine has read it

    def collect(self) -> list[Detection]:
        frame, self._pending = self._pending, None
        if frame is None:
            raise InferenceFailed(f"detector {self.name!r}: collect() without submit()")
        objectness, class_probs = self.model.outputs()
        return self.decode(objectness, class_probs, frame)

    def detect(self, frame: Frame) -> list[Detection]:
        self.submit(frame)
        return self.collect()

    def warmup(self, frame_shape: tuple[int, int]) -> None:
        h, w = self.meta.input_size
        if tuple(frame_shape) != (h, w):
            raise ModelError(
                f"detector {self.name!r}: engine takes {h}x{w} frames, the spectrogram makes {frame_shape}"
            )
        self.model.enqueue_host(np.full((1, 1, h, w), 0.1, dtype=np.float32))
        objectness, class_probs = self.model.outputs()
        if class_probs.shape[1] != len(self.meta.labels) or objectness.shape[1] != 1:
            raise ModelError(
                f"detector {self.name!r}: engine outputs {list(objectness.shape)} and {list(class_probs.shape)} "
                f"do not fit {len(self.meta.labels)} labels"
            )

    def close(self) -> None:
        self.model.close()


# --- building engines ----------------------------------------------------------------------------
def _calibration_batches(folder: Path, size: tuple[int, int], batch: int) -> list[np.ndarray]:
    """Calibration inputs from a folder of grayscale PNGs (exported frames or crops) or .npy arrays."""
    from PIL import Image

    h, w = size
    images = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() == ".png":
            with Image.open(path) as im:
                arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        elif path.suffix == ".npy":
            arr = np.load(path).astype(np.float32)
        else:
            continue
        arr = arr.reshape(-1, h, w) if arr.size % (h * w) == 0 else None
        if arr is None:
            raise ModelError(f"calibration file {path} is not {h}x{w} (the model's input size)")
        images.extend(arr)
    if not images:
        raise ModelError(f"calibration folder {folder} has no .png or .npy {h}x{w} inputs")
    stack = np.stack(images)[:, None]
    return [np.ascontiguousarray(stack[i : i + batch]) for i in range(0, len(stack) - batch + 1, batch)] or [
        np.ascontiguousarray(stack)
    ]


def _calibrator(trt: Any, cp: Any, batches: list[np.ndarray], cache: Path) -> Any:
    """An IInt8EntropyCalibrator2 that feeds ``batches`` from one device buffer."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # TensorRT's Python bindings need the explicit call
            self._batches = iter(batches)
            self._device = cp.empty(batches[0].shape, dtype=cp.float32)

        def get_batch_size(self) -> int:
            return int(batches[0].shape[0])

        def get_batch(self, names: Any) -> list[int] | None:
            batch = next(self._batches, None)
            if batch is None or batch.shape != self._device.shape:
                return None
            self._device.set(batch)
            # TensorRT reads the pointer on its own stream once we return: the copy must be done.
            cp.cuda.get_current_stream().synchronize()
            return [int(self._device.data.ptr)]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: Any) -> None:
            cache.write_bytes(bytes(data))

    return EntropyCalibrator()


@dataclass(frozen=True, slots=True)
class BuildPlan:
    """What a build asks of this TensorRT: network creation flags, builder flags, the precision label."""

    network_flags: int
    builder_flags: tuple[Any, ...]
    precision: str
    calibrate: bool


def plan_build(trt: Any, *, fp16: bool, int8: bool, strongly_typed: bool = False) -> BuildPlan:
    """The flags for a build on this TensorRT, or a ModelError saying why it cannot be done here."""
    major, _ = check_version(trt)
    version = trt.__version__
    creation = trt.NetworkDefinitionCreationFlag
    network_flags = 0
    if major < 10:
        # 8.6 still has implicit batch; 10.0 deprecated the flag ("always explicit batch").
        network_flags |= 1 << int(creation.EXPLICIT_BATCH)
    if strongly_typed:
        if fp16 or int8:
            raise ModelError(
                "a strongly typed build takes every precision from the ONNX graph: build it without the "
                "FP16/INT8 flags (--no-fp16, no --int8), from a model converted to the precision you want"
            )
        flag = getattr(creation, "STRONGLY_TYPED", None) if major >= 10 else None
        if flag is None:
            raise ModelError(f"strongly typed networks need TensorRT 10 (this is TensorRT {version})")
        network_flags |= 1 << int(flag)
    builder_flags: list[Any] = []
    precision = "strongly-typed" if strongly_typed else "fp32"
    if fp16:
        flag = getattr(trt.BuilderFlag, "FP16", None)
        if flag is None:
            raise ModelError(f"TensorRT {version} has no BuilderFlag.FP16; build with --no-fp16")
        builder_flags.append(flag)
        precision = "fp16"
    if int8:
        flag = getattr(trt.BuilderFlag, "INT8", None)
        if flag is None or getattr(trt, "IInt8EntropyCalibrator2", None) is None:
            raise ModelError(
                f"TensorRT {version} has no INT8 calibration (BuilderFlag.INT8 / IInt8EntropyCalibrator2); "
                f"build without --int8"
            )
        if major >= 10:
            log.warning(
                "INT8 calibration is deprecated since TensorRT 10.1 (explicit quantization replaces it)"
            )
        builder_flags.append(flag)
        precision = "int8+fp16" if fp16 else "int8"
    return BuildPlan(network_flags, tuple(builder_flags), precision, calibrate=int8)


def timing_cache_path(engine: Path) -> Path:
    """``model.engine`` -> ``model.engine.timing`` (the builder's timing cache, kept next to the engine)."""
    return engine.with_name(engine.name + ".timing")


def _attach_timing_cache(config: Any, path: Path) -> bool:
    """Give the builder config a timing cache, from ``path`` where a usable one is there; True if loaded."""
    data = b""
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("timing cache unreadable; starting an empty one", path=str(path), error=str(exc))
    if data:
        try:
            cache = config.create_timing_cache(data)
            # ignore_mismatch=False: a cache written for another device or TensorRT is refused.
            if cache is not None and config.set_timing_cache(cache, False):
                return True
            reason = "it was written for another GPU or TensorRT version"
        except Exception as exc:  # a corrupt file: TensorRT raises untyped pybind errors
            reason = _one_line(exc)
        log.warning("timing cache not used; starting an empty one", path=str(path), reason=reason)
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        raise ModelError("TensorRT could not create an empty timing cache")
    return False


def _save_timing_cache(config: Any, path: Path) -> None:
    """Write the (grown) timing cache next to the engine; a failure costs only the next build's time."""
    try:
        data = bytes(memoryview(config.get_timing_cache().serialize()))
        _write_atomically(path, data)
    except Exception as exc:  # OSError, or TensorRT's untyped errors
        log.warning("timing cache not saved", path=str(path), error=_one_line(exc))


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def build_serialized_engine(
    onnx_path: Path,
    dest: Path,
    meta: ModelMetadata,
    *,
    fp16: bool = True,
    int8_calibration_frames: Path | None = None,
    max_batch: int = 1,
    workspace_mib: int = 1024,
    strongly_typed: bool = False,
    timing_cache: Path | None = None,
) -> str:
    """Parse the ONNX file, build an engine with a dynamic-batch profile, write it; returns the precision.

    ``timing_cache`` defaults to :func:`timing_cache_path` of ``dest``. Every failure is a ModelError.
    """
    trt, cp = _import()
    plan = plan_build(trt, fp16=fp16, int8=int8_calibration_frames is not None, strongly_typed=strongly_typed)
    cache_path = timing_cache or timing_cache_path(dest)
    where = f"model {onnx_path}: TensorRT {trt.__version__}"
    h, w = meta.input_size
    batches = (
        _calibration_batches(int8_calibration_frames, (h, w), batch=max(1, min(max_batch, 8)))
        if plan.calibrate and int8_calibration_frames is not None
        else None
    )
    try:
        logger = _logger()
        builder = trt.Builder(logger)
        network = builder.create_network(plan.network_flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelError(f"{where}: the ONNX parser refused it: {' '.join(errors.split())[:300]}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
        input_name = network.get_input(0).name
        profile = builder.create_optimization_profile()
        opt = max(1, min(max_batch, 16))
        profile.set_shape(input_name, (1, 1, h, w), (opt, 1, h, w), (max_batch, 1, h, w))
        config.add_optimization_profile(profile)
        for flag in plan.builder_flags:
            config.set_flag(flag)
        if batches is not None:
            config.int8_calibrator = _calibrator(trt, cp, batches, dest.with_name(dest.name + ".calib"))
            config.set_calibration_profile(profile)
        cache_loaded = _attach_timing_cache(config, cache_path)
        serialized = builder.build_serialized_network(network, config)
    except ModelError:
        raise
    except OSError as exc:
        raise ModelError(f"{where}: {exc}") from exc
    except Exception as exc:  # TensorRT raises untyped pybind errors (TypeError, RuntimeError, ...)
        raise ModelError(f"{where} failed to build an engine: {_one_line(exc)}") from exc
    if serialized is None:
        raise ModelError(f"{where} could not build an engine (see the TensorRT log above)")
    try:
        _write_atomically(dest, bytes(memoryview(serialized)))
    except OSError as exc:
        raise ModelError(f"{where}: cannot write the engine: {exc}") from exc
    _save_timing_cache(config, cache_path)
    log.info(
        "engine built",
        engine=str(dest),
        precision=plan.precision,
        timing_cache=str(cache_path),
        timing_cache_loaded=cache_loaded,
    )
    return plan.precision


def build_engine(
    onnx_path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    fp16: bool = True,
    int8_calibration_frames: str | os.PathLike[str] | None = None,
    max_batch: int | None = None,
    workspace_mib: int = 1024,
    strongly_typed: bool = False,
) -> Path:
    """Build a TensorRT engine (and its sidecar) for this GPU from an rfstream ONNX file.

    ``out`` defaults to the ONNX path with ``.engine``; the builder's timing cache is kept
    beside it (``<engine>.timing``) and reused by the next build on this machine.
    ``strongly_typed`` (TensorRT 10) takes every precision from the ONNX graph and so
    excludes ``fp16`` and INT8. ModelError "TensorRT is not installed" where it is not,
    and for any build failure (see rfstream.detect.trt_engine).
    """
    src = Path(onnx_path)
    meta = read_metadata(src)  # refuses a file without rfstream metadata before TensorRT is touched
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        raise ModelError(
            "TensorRT is not installed (pip install 'rfstream[gpu]'; on Jetson it comes with JetPack)"
        ) from exc
    dest = Path(out) if out else src.with_suffix(".engine")
    target = EngineTarget.current()
    if max_batch is None:
        max_batch = 1 if meta.task == "frame_detector" else 256
    precision = build_serialized_engine(
        src,
        dest,
        meta,
        fp16=fp16,
        int8_calibration_frames=Path(int8_calibration_frames) if int8_calibration_frames else None,
        max_batch=max_batch,
        workspace_mib=workspace_mib,
        strongly_typed=strongly_typed,
    )
    write_engine_sidecar(dest, src, target, precision=precision, max_batch=max_batch)
    return dest
