"""Optional TorchScript backend for the full-frame detector (``.pt`` + ``.pt.json`` sidecar).

Useful where a model exists as TorchScript but not yet as ONNX (a training run in
progress). The metadata sidecar holds the same ``metadata_props`` as an ONNX file
(see rfstream.detect.models). The module output is ``(objectness, class_probs)``
like the ONNX graph. Needs ``torch`` (the ``train`` extra).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from rfstream.detect.decode import FrameDecoder
from rfstream.detect.models import InferenceFailed, ModelMetadata, read_metadata
from rfstream.errors import ModelError
from rfstream.types import Detection, Frame

__all__ = ["TorchFrameDetector"]


class TorchFrameDetector:
    kind = "torch"

    def __init__(
        self,
        name: str,
        model_path: str | os.PathLike[str],
        *,
        meta: ModelMetadata | None = None,
        score_threshold: float | None = None,
        labels_kept: Sequence[str] = (),
        priority: int = 0,
        threads: int = 0,
        decoder_overrides: dict[str, Any] | None = None,
    ) -> None:
        try:
            import torch
        except ImportError as exc:
            raise ModelError(
                f"detector {name!r}: a .pt model needs torch (pip install 'rfstream[train]')"
            ) from exc
        meta = meta or read_metadata(model_path)
        self.decode = FrameDecoder.for_model(
            name,
            meta,
            model_path,
            "torch",
            score_threshold=score_threshold,
            labels_kept=labels_kept,
            overrides=decoder_overrides,
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, still loads
                self.module = torch.jit.load(str(model_path), map_location="cpu").eval()
        except Exception as exc:  # torch raises RuntimeError/ValueError variants for bad archives
            detail = " ".join(str(exc).split())[:200]
            raise ModelError(f"model {model_path} is not a loadable TorchScript file: {detail}") from exc
        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.name, self.priority, self.meta = name, priority, meta

    def _run(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.meta.input_size
        if tuple(image.shape) != (h, w):
            raise InferenceFailed(f"detector {self.name!r}: frame is {image.shape}, the model takes {h}x{w}")
        x = self._torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32).reshape(1, 1, h, w))
        try:
            with self._torch.inference_mode():
                objectness, class_probs = self.module(x)
        except Exception as exc:  # a scripted module's run error
            raise InferenceFailed(f"detector {self.name!r}: TorchScript run failed: {exc}") from exc
        return objectness.numpy(), class_probs.numpy()

    def warmup(self, frame_shape: tuple[int, int]) -> None:
        if tuple(frame_shape) != tuple(self.meta.input_size):
            raise ModelError(
                f"detector {self.name!r}: model takes {self.meta.input_size} frames, not {frame_shape}"
            )
        try:
            objectness, class_probs = self._run(np.full(frame_shape, 0.1, dtype=np.float32))
        except InferenceFailed as exc:
            raise ModelError(f"detector {self.name!r}: warm-up failed: {exc}") from exc
        if class_probs.shape[1] != len(self.meta.labels) or objectness.shape[1] != 1:
            raise ModelError(
                f"detector {self.name!r}: outputs {objectness.shape}, {class_probs.shape} do not fit the labels"
            )

    def detect(self, frame: Frame) -> list[Detection]:
        image = frame.host_image()
        objectness, class_probs = self._run(image)
        return self.decode(objectness, class_probs, frame)

    def close(self) -> None:
        pass
