"""TensorRT backend: a serialized engine on its own execution context and CUDA stream.

Written for CUDA 12 with TensorRT >= 8.6 (JetPack 6 ships 8.6; desktops 10.x)
through the tensor-name API only — ``num_io_tensors`` / ``get_tensor_name`` /
``get_tensor_mode`` / ``set_input_shape`` / ``set_tensor_address`` /
``execute_async_v3`` — so one code path serves both. CuPy owns the CUDA
context, the stream, the device buffers and the events; no PyCUDA.

Per detector: one ``IExecutionContext``, one ``cupy.cuda.Stream(non_blocking=True)``,
device buffers for every I/O tensor sized for the engine profile's largest
batch, and pinned host buffers the outputs are copied back into asynchronously.

A frame detector's ``submit(frame)`` makes its stream wait on the frame's
"frame ready" event (recorded by the GPU spectrogram; see rfstream.dsp.gpu),
points the input tensor straight at the frame's device memory (no copy, no
host round trip), enqueues the engine and the device-to-host copies, and
returns. ``collect()`` waits for its stream and decodes on the host. The fan-out
submits every engine before collecting any, so the engines overlap on the GPU.

NOTE: this module has not been run on a GPU in this project's development or CI;
see docs/gpu.md.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rfstream.detect.decode import FrameDecoder
from rfstream.detect.models import InferenceFailed, ModelMetadata, read_metadata
from rfstream.errors import ModelError
from rfstream.types import Detection, Frame

__all__ = ["TensorRTFrameDetector", "TensorRTModel", "build_serialized_engine"]

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


def _trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


class TensorRTModel:
    """A deserialized engine with its context, stream and buffers; the input may be on the host or device."""

    def __init__(self, path: str | os.PathLike[str], meta: ModelMetadata | None = None) -> None:
        trt, cp = _import()
        self._cp = cp
        self.path = Path(path)
        self.meta = meta = meta or read_metadata(self.path)
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise ModelError(f"model {self.path} cannot be read: {exc}") from exc
        self._runtime = trt.Runtime(_logger())
        engine = self._runtime.deserialize_cuda_engine(data)
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
            self.max_batch = int(shape[0])
        else:  # dynamic batch: the largest the optimisation profile allows
            self.max_batch = int(engine.get_tensor_profile_shape(input_name, 0)[2][0])
        h, w = meta.input_size
        if len(shape) != 4 or tuple(shape[1:]) != (1, h, w):
            raise ModelError(f"model {self.path}: engine input shape {list(shape)} is not [N, 1, {h}, {w}]")

        self.context = engine.create_execution_context()
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
        """Make this model's stream wait for ``event``, or for the work queued so far on the current stream."""
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
        image = frame.image
        h, w = self.meta.input_size
        if tuple(image.shape) != (h, w):
            raise InferenceFailed(
                f"detector {self.name!r}: frame is {tuple(image.shape)}, the engine takes {h}x{w}"
            )
        cp = self.model._cp
        if isinstance(image, cp.ndarray) and image.dtype == cp.float32 and image.flags.c_contiguous:
            # Wait for the spectrogram's "frame ready" event, then read the image where it lies.
            self.model.wait_for(frame.ready_event)
            self.model.enqueue_device(image)
        else:  # a host frame (NumPy spectrogram): pinned staging + async copy
            self.model.enqueue_host(np.asarray(image, dtype=np.float32).reshape(1, 1, h, w))
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
            return [int(self._device.data.ptr)]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: Any) -> None:
            cache.write_bytes(bytes(data))

    return EntropyCalibrator()


def build_serialized_engine(
    onnx_path: Path,
    dest: Path,
    meta: ModelMetadata,
    *,
    fp16: bool = True,
    int8_calibration_frames: Path | None = None,
    max_batch: int = 1,
    workspace_mib: int = 1024,
) -> str:
    """Parse the ONNX file, build an engine with a dynamic-batch profile, write it; returns the precision."""
    trt, cp = _import()
    logger = _logger()
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch (the flag is gone); 8.6 still needs it.
    flags = 0 if _trt_major(trt) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(
            f"model {onnx_path}: TensorRT's ONNX parser refused it: {' '.join(errors.split())[:300]}"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    input_name = network.get_input(0).name
    h, w = meta.input_size
    profile = builder.create_optimization_profile()
    opt = max(1, min(max_batch, 16))
    profile.set_shape(input_name, (1, 1, h, w), (opt, 1, h, w), (max_batch, 1, h, w))
    config.add_optimization_profile(profile)
    precision = "fp32"
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        precision = "fp16"
    if int8_calibration_frames is not None:
        batches = _calibration_batches(int8_calibration_frames, (h, w), batch=max(1, min(max_batch, 8)))
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _calibrator(trt, cp, batches, dest.with_name(dest.name + ".calib"))
        config.set_calibration_profile(profile)
        precision = "int8+fp16" if fp16 else "int8"
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(
            f"model {onnx_path}: TensorRT could not build an engine (see the TensorRT log above)"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as fh:
        fh.write(serialized)
    return precision
