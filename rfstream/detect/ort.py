"""ONNX Runtime backend: the full-frame detector, and the session wrapper the two-stage detector shares.

A session is built once per detector from :class:`SessionSettings` (graph
optimisation level, intra-/inter-op threads, the CPU memory arena and memory
pattern, spinning), with sequential execution (these graphs are a chain: the
parallel executor only adds thread hand-overs), CPU by default, and the CUDA /
TensorRT execution providers when ``providers = "auto"`` and this onnxruntime
build has them. The settings are constructor parameters so that one thread
budget can set every session's threads. The
graph's inputs and outputs are checked against the model's metadata at load,
so a wrong model is a one-line ModelError at start, not a shape error on the
first chunk. Run-time failures become :class:`InferenceFailed` (counted by the
fan-out, the stream goes on).

ONNX Runtime releases the GIL inside ``run``, so several sessions in the
fan-out's thread pool really do run at once. Its intra-op threads do not spin
while idle by default (``allow_spinning = 0``): on a small CPU shared by several
sessions, spinning workers steal the cores the other detectors need.

A model quantised to INT8 by :mod:`rfstream.detect.quantize` (QDQ format, float
input and outputs) loads and runs here like any other.

On the CUDA (or TensorRT) execution provider a frame whose image is already on
the GPU (the CuPy spectrogram) is fed with **IOBinding**: the input is bound to
the image's device pointer (``bind_input(name, "cuda", device_id, np.float32,
shape, ptr)``), the outputs to host memory (``bind_output(name, "cpu")``), and
``run_with_iobinding`` runs without a host round trip of the 4 MB image. ONNX
Runtime runs on its own CUDA stream and does not order itself after other
streams (microsoft/onnxruntime#26609, #32673), so the host first waits on the
frame's "frame ready" event. A host frame, or a session on the CPU, takes the
ordinary ``run`` path unchanged. (IOBinding API: onnxruntime.ai, Python API
summary "IOBinding"; not run on a GPU here, see docs/gpu.md.)
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rfstream.detect.base import at_least, in_range
from rfstream.detect.decode import FrameDecoder
from rfstream.detect.models import InferenceFailed, ModelMetadata, read_metadata
from rfstream.errors import ConfigError, ModelError
from rfstream.types import Detection, Frame

__all__ = ["OnnxFrameDetector", "OnnxOptions", "OrtModel", "SessionSettings", "select_providers"]

_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
# Memory settings every session is built with (the defaults of SessionSettings; rfstream builds
# none with other values), set explicitly so that what rfstream.runtime.resources reports is
# what the sessions use. The CUDA provider's arena is left
# at ONNX Runtime's defaults (OrtCUDAProviderOptions: arena_extend_strategy 0 = kNextPowerOfTwo,
# gpu_mem_limit SIZE_MAX).
SESSION_MEMORY: dict[str, Any] = {
    "enable_cpu_mem_arena": True,
    "enable_mem_pattern": True,
    "cuda_arena": "ONNX Runtime defaults (arena_extend_strategy kNextPowerOfTwo, no gpu_mem_limit)",
}
_DEVICE_PROVIDERS = (_PROVIDERS["tensorrt"], _PROVIDERS["cuda"])  # providers that take CUDA memory
# Device memory one crop may need on a CUDA provider, as a multiple of its input bytes: a rough
# allowance for activations (the crop classifier is a small CNN) used only to bound the batch.
_CROP_ACTIVATION_FACTOR = 32
# What each task's graph must look like: input name, output names.
_IO = {
    "frame_detector": ("image", ("objectness", "class_probs")),
    "crop_classifier": ("crops", ("probs",)),
}


@dataclass(frozen=True, slots=True)
class OnnxOptions:
    """Settings of ``kind = "onnx"`` detectors (table ``options``)."""

    providers: Literal["auto", "cpu", "cuda", "tensorrt"] = "auto"  # auto: TensorRT > CUDA > CPU, as present
    threads: int = field(default=0, metadata=at_least(0, "intra-op threads; 0 = ONNX Runtime's default"))
    mask_threshold: float = field(
        default=-1.0, metadata=in_range(-1.0, 1.0, "objectness cut for decoding; < 0 = the model's")
    )


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """How one ONNX Runtime session runs; decided when the session is built."""

    intra_op_threads: int = 0  # threads inside an operator; 0 = ONNX Runtime's default (all cores)
    inter_op_threads: int = 1  # threads across operators; only a parallel executor uses them
    optimization: Literal["disable", "basic", "extended", "all"] = "all"  # graph optimisation level
    # Reuse activation memory across runs instead of malloc/free per run.
    cpu_arena: bool = SESSION_MEMORY["enable_cpu_mem_arena"]
    # Plan activation buffers once from the first run's shapes.
    memory_pattern: bool = SESSION_MEMORY["enable_mem_pattern"]
    spinning: bool = False  # intra-op workers busy-wait between operators (fast only on idle cores)

    def session_options(self) -> Any:
        """The ``onnxruntime.SessionOptions`` for these settings (sequential execution)."""
        import onnxruntime as ort

        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[self.optimization]
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = max(0, int(self.intra_op_threads))
        options.inter_op_num_threads = max(0, int(self.inter_op_threads))
        options.enable_cpu_mem_arena = self.cpu_arena
        options.enable_mem_pattern = self.memory_pattern
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "1" if self.spinning else "0")
        options.log_severity_level = 3  # ORT's own warnings (unused initialisers...) are not ours to show
        return options


def select_providers(providers: str | Sequence[str] = "auto") -> list[str]:
    """ONNX Runtime execution providers, best first, always ending with the CPU.

    ``auto``: TensorRT and CUDA where this onnxruntime build has them. A named provider that
    is not available is a ConfigError (asking for a GPU and silently getting the CPU hides
    a broken install).
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if isinstance(providers, str):
        if providers == "auto":
            wanted = [_PROVIDERS["tensorrt"], _PROVIDERS["cuda"]]
            return [p for p in wanted if p in available] + [_PROVIDERS["cpu"]]
        if providers not in _PROVIDERS:
            raise ConfigError(
                f"ONNX Runtime provider {providers!r} is not one of auto, {', '.join(_PROVIDERS)}"
            )
        providers = [_PROVIDERS[providers]]
    out = []
    for p in providers:
        if p not in available:
            raise ConfigError(
                f"ONNX Runtime execution provider {p} is not available in this install "
                f"(have: {', '.join(available)})"
            )
        out.append(p)
    return out if _PROVIDERS["cpu"] in out else [*out, _PROVIDERS["cpu"]]


def _on_device(image: Any) -> bool:
    """A C-contiguous float32 CuPy array, which IOBinding can take by its device pointer.

    Where CuPy was never imported no array can be a CuPy array, and nothing is imported here.
    """
    cupy = sys.modules.get("cupy")
    return (
        cupy is not None
        and isinstance(image, cupy.ndarray)
        and image.dtype == np.float32
        and bool(image.flags.c_contiguous)
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:240] or type(exc).__name__


def _dim(value: Any) -> int | None:
    """A static dimension as int; symbolic or unknown dimensions as None."""
    return value if isinstance(value, int) and value > 0 else None


class OrtModel:
    """One ONNX Runtime session on an rfstream model, its I/O checked against the metadata.

    ``settings``: how the session runs; ``threads`` (when > 0) sets its intra-op threads.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        meta: ModelMetadata | None = None,
        *,
        providers: str | Sequence[str] = "auto",
        threads: int = 0,
        settings: SessionSettings = SessionSettings(),
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.meta = meta = meta or read_metadata(self.path)
        if threads > 0:
            settings = dataclasses.replace(settings, intra_op_threads=int(threads))
        self.settings = settings
        self.providers = select_providers(providers)
        try:
            self.session = ort.InferenceSession(
                str(self.path), settings.session_options(), providers=self.providers
            )
        except Exception as exc:  # ORT raises untyped pybind errors (Fail, InvalidGraph, NoSuchFile...)
            raise ModelError(f"model {self.path} cannot be loaded by ONNX Runtime: {_one_line(exc)}") from exc
        self._check_io()
        # Decided once: does the session run on a provider that can read CUDA memory in place?
        active = self.session.get_providers()
        self.on_device = bool(active) and active[0] in _DEVICE_PROVIDERS
        self.batch_limit = self.max_batch
        if self.on_device and meta.task == "crop_classifier":
            self.batch_limit = self._batch_from_free_memory()

    def _batch_from_free_memory(self) -> int | None:
        """On a GPU: the crop batch that fits a quarter of free device memory (capped by the graph's batch)."""
        from rfstream.runtime.resources import batch_for_memory, device_free_bytes

        h, w = self.meta.input_size
        per_crop = h * w * 4 * _CROP_ACTIVATION_FACTOR
        free = device_free_bytes()
        if free is None:  # CuPy not loaded: nothing to size against
            return self.max_batch
        return batch_for_memory(per_crop, free, cap=self.max_batch or 1024)

    def _check_io(self) -> None:
        meta, src = self.meta, self.path
        input_name, output_names = _IO[meta.task]
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != input_name:
            got = ", ".join(f"{i.name}{list(i.shape)}" for i in inputs)
            raise ModelError(f"model {src}: a {meta.task} has one input '{input_name}', this graph has {got}")
        shape = list(inputs[0].shape)
        h, w = meta.input_size
        want = [None, 1, h, w]
        if len(shape) != 4 or any(
            _dim(s) is not None and _dim(s) != t for s, t in zip(shape[1:], want[1:], strict=True)
        ):
            raise ModelError(
                f"model {src}: input '{input_name}' has shape {shape}, expected [N, 1, {h}, {w}] "
                f"(rfstream.input_size)"
            )
        if "float" not in inputs[0].type or "16" in inputs[0].type:
            raise ModelError(f"model {src}: input '{input_name}' is {inputs[0].type}, expected tensor(float)")
        self.input_name = input_name
        self.max_batch = _dim(shape[0])  # None: dynamic batch
        outputs = {o.name: o for o in self.session.get_outputs()}
        missing = [n for n in output_names if n not in outputs]
        if missing:
            raise ModelError(
                f"model {src}: a {meta.task} has outputs {', '.join(output_names)}; "
                f"this graph has {', '.join(outputs) or 'none'}"
            )
        self.output_names = list(output_names)
        classes = outputs[output_names[-1]].shape[1] if len(outputs[output_names[-1]].shape) > 1 else None
        if _dim(classes) is not None and classes != len(meta.labels):
            raise ModelError(
                f"model {src}: output '{output_names[-1]}' has {classes} classes but "
                f"rfstream.labels names {len(meta.labels)}"
            )

    def describe_inputs(self) -> list[dict[str, Any]]:
        return [{"name": i.name, "shape": list(i.shape), "type": i.type} for i in self.session.get_inputs()]

    def describe_outputs(self) -> list[dict[str, Any]]:
        return [{"name": o.name, "shape": list(o.shape), "type": o.type} for o in self.session.get_outputs()]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs (in ``output_names`` order) for one input batch; InferenceFailed on an ORT error."""
        limit = self.batch_limit
        try:
            if limit is None or batch.shape[0] <= limit:
                return self.session.run(self.output_names, {self.input_name: batch})
            # A graph exported with a fixed batch, or a batch sized to free GPU memory: feed it
            # slices and stitch the outputs.
            parts = [
                self.session.run(self.output_names, {self.input_name: batch[i : i + limit]})
                for i in range(0, batch.shape[0], limit)
            ]
            return [np.concatenate(out, axis=0) for out in zip(*parts, strict=True)]
        except Exception as exc:  # ORT run errors are untyped pybind exceptions
            raise InferenceFailed(
                f"model {self.path.name}: ONNX Runtime run failed: {_one_line(exc)}"
            ) from exc

    def run_device(self, image: Any) -> list[np.ndarray]:
        """Outputs for one complete device image ``[H, W]`` (C-contiguous float32 CuPy), via IOBinding.

        The caller has made sure the image is complete (the frame's ready event); ONNX
        Runtime reads it in place on its own stream and returns host outputs.
        """
        h, w = self.meta.input_size
        try:
            binding = self.session.io_binding()
            binding.bind_input(
                name=self.input_name,
                device_type="cuda",
                device_id=int(image.device.id),
                element_type=np.float32,
                shape=(1, 1, h, w),
                buffer_ptr=int(image.data.ptr),
            )
            for name in self.output_names:
                binding.bind_output(name, "cpu")
            self.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()
        except Exception as exc:  # ORT run errors are untyped pybind exceptions
            raise InferenceFailed(
                f"model {self.path.name}: ONNX Runtime IOBinding run failed: {_one_line(exc)}"
            ) from exc

    def close(self) -> None:
        """Nothing to release by hand: the session and its arena go with the object."""


class OnnxFrameDetector:
    """The learned full-frame detector on ONNX Runtime: frame -> heatmaps -> decoded Detections."""

    kind = "onnx"

    def __init__(
        self,
        name: str,
        model_path: str | os.PathLike[str],
        *,
        meta: ModelMetadata | None = None,
        score_threshold: float | None = None,
        labels_kept: Sequence[str] = (),
        priority: int = 0,
        providers: str | Sequence[str] = "auto",
        threads: int = 0,
        settings: SessionSettings = SessionSettings(),
        decoder_overrides: dict[str, Any] | None = None,
    ) -> None:
        meta = meta or read_metadata(model_path)
        self.decode = FrameDecoder.for_model(
            name,
            meta,
            model_path,
            "onnx",
            score_threshold=score_threshold,
            labels_kept=labels_kept,
            overrides=decoder_overrides,
        )
        self.name = name
        self.priority = priority
        self.meta = meta
        self.model = OrtModel(model_path, meta, providers=providers, threads=threads, settings=settings)
        h, w = meta.input_size
        self._input = np.zeros((1, 1, h, w), dtype=np.float32)  # staging for device or odd-typed frames

    def _check_shape(self, image: Any) -> None:
        h, w = self.meta.input_size
        if tuple(image.shape) != (h, w):
            raise InferenceFailed(
                f"detector {self.name!r}: frame is {image.shape[0]}x{image.shape[1]}, the model takes {h}x{w}"
            )

    def _batch(self, image: np.ndarray) -> np.ndarray:
        """A host image as the model's [1, 1, H, W] input (a view where it can be)."""
        self._check_shape(image)
        h, w = self.meta.input_size
        if image.dtype == np.float32 and image.flags.c_contiguous:
            return image.reshape(1, 1, h, w)  # a view: no copy on the CPU path
        np.copyto(self._input[0, 0], image, casting="same_kind")
        return self._input

    def warmup(self, frame_shape: tuple[int, int]) -> None:
        """Run one dummy frame so the first real chunk does not pay for ORT's lazy set-up."""
        if tuple(frame_shape) != tuple(self.meta.input_size):
            h, w = self.meta.input_size
            raise ModelError(
                f"detector {self.name!r}: model {self.model.path} takes {h}x{w} frames, "
                f"the spectrogram makes {frame_shape[0]}x{frame_shape[1]}"
            )
        self._input.fill(0.1)
        try:
            objectness, class_probs = self.model.run(self._input)
        except InferenceFailed as exc:
            raise ModelError(f"detector {self.name!r}: warm-up failed: {exc}") from exc
        if objectness.ndim != 4 or class_probs.ndim != 4 or objectness.shape[1] != 1:
            raise ModelError(
                f"detector {self.name!r}: model outputs objectness {list(objectness.shape)}, "
                f"class_probs {list(class_probs.shape)}; expected [N, 1, h, w] and [N, C, h, w]"
            )
        if class_probs.shape[1] != len(self.meta.labels) or class_probs.shape[2:] != objectness.shape[2:]:
            raise ModelError(
                f"detector {self.name!r}: class_probs {list(class_probs.shape)} does not fit objectness "
                f"{list(objectness.shape)} and {len(self.meta.labels)} labels"
            )

    def detect(self, frame: Frame) -> list[Detection]:
        if self.model.on_device and _on_device(frame.image):
            # The GPU spectrogram's image, read where it lies: wait for it to be complete, then
            # IOBinding. (ONNX Runtime's stream cannot wait on our event, so the host waits.)
            self._check_shape(frame.image)
            if frame.ready_event is not None:
                frame.ready_event.synchronize()
            objectness, class_probs = self.model.run_device(frame.image)
        else:
            objectness, class_probs = self.model.run(self._batch(frame.host_image()))
        return self.decode(objectness, class_probs, frame)

    def close(self) -> None:
        self.model.close()
