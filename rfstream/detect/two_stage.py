"""The two-stage detector: energy proposals, then a crop classifier names each one.

1. An energy proposer (:class:`rfstream.detect.energy.EnergyProposer`) finds
   boxes and an energy score per box (mean SNR mapped onto [0, 1]). The
   registry hands the energy detector and the two-stage detector the *same*
   proposer when their energy settings match, so each frame's proposals are
   computed once for both.
2. :func:`rfstream.detect.crops.extract_crops` pads and letterboxes every box to
   64×64, exactly as in training; all crops of the frame go through the
   classifier in **one** batched call (ONNX Runtime, or a TensorRT engine).
3. Labelling (the classifier's ``unknown`` class is its *background*: noise,
   fragments, DC spikes — see rfstream/train/dataset.py):

   - label = argmax of the class probabilities;
   - a proposal whose argmax is ``unknown`` is dropped — the classifier says it
     is not a signal (``keep_unknown = true`` keeps it, labelled ``unknown``,
     scored by its energy alone × ``p(unknown)``, for a detector that must
     never lose an energy hit);
   - score = ``energy^(1-w) · p^w`` with ``w = class_weight`` (0.5: the geometric
     mean): a confident label on a weak signal and a strong signal with a
     hesitant label both land mid-range, and either at 0 gives 0;
   - a calibrated classifier (``rfstream.calibration`` in its metadata, fitted
     at training time on validation captures, see :mod:`rfstream.train.calibrate`)
     maps that combined score, per label, to the probability that the box is a
     real signal of that label; that is the score published;
   - detections below ``score_threshold`` (on the published scale; the
     calibration's operating threshold, or the model's default, unless the
     config sets one) are dropped, then ``labels`` (kept labels) filters.

4. Narrow boxes (``narrowband = true``, the default): a CW carrier, AM and
   narrowband FM voice and an OOK sensor packet all draw the same one- to
   three-column stripe, which no crop can tell apart, but the IQ can. For up to
   ``narrowband_max_boxes`` proposals per frame no wider than
   ``narrowband_max_width_hz`` (and not called background by the crop
   classifier), :class:`rfstream.detect.narrowband.NarrowbandClassifier` reads
   the chunk's samples over the box and gives probabilities over tone, am, fm,
   ook and *other*. Where it names one of the four with at least
   ``narrowband_confidence``, it takes over the split: of the crop classifier's
   signal mass ``1 − p(unknown)``, tone/am/fm/ook get their IQ probabilities and
   the IQ classifier's *other* share is divided among the remaining labels (fsk,
   psk, ...) in the crop classifier's proportions; ``p(unknown)`` stays the crop
   classifier's. Otherwise (noise, a weak or short box, or "other") the crop
   classifier's probabilities stand. This runs before the score and the
   calibration, so the published score is that of the combined label. On a GPU
   only the boxes' samples are copied to the host.

The proposal stage keeps its own settings (``options.energy`` table); no
energy threshold is applied to the proposals, so the classifier, not the
energy score, decides.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rfstream.detect.base import BatchModel, Proposer, at_least, in_range, positive
from rfstream.detect.crops import extract_crops
from rfstream.detect.decode import model_threshold
from rfstream.detect.models import ModelMetadata, read_metadata
from rfstream.detect.narrowband import CLASSES as NARROW_CLASSES
from rfstream.detect.narrowband import NarrowbandClassifier, NarrowbandOptions
from rfstream.errors import ModelError
from rfstream.types import Detection, Frame

__all__ = ["TwoStageDetector", "TwoStageOptions", "combine_scores"]


@dataclass(frozen=True, slots=True)
class TwoStageOptions:
    """Settings of ``kind = "two_stage"`` (table ``options``; the energy stage's own in ``options.energy``)."""

    providers: Literal["auto", "cpu", "cuda", "tensorrt"] = "auto"
    threads: int = field(
        default=0, metadata=at_least(0, "intra-op threads; 0 = ONNX Runtime's default", high=256)
    )
    class_weight: float = field(
        default=0.5, metadata=in_range(0.0, 1.0, "weight of the class probability in the score")
    )
    keep_unknown: bool = False  # keep proposals the classifier calls background, labelled "unknown"
    max_proposals: int = field(default=64, metadata=at_least(1, "most crops classified per frame", high=4096))
    pad_frac: float = field(default=0.15, metadata=in_range(0.0, 2.0, "crop padding, fraction of the box"))
    narrowband: bool = True  # name narrow boxes from the IQ (tone/am/fm/ook), see step 4 above
    narrowband_max_width_hz: float = field(
        default=40e3, metadata=positive("widest box the IQ classifier reads, Hz", high=1e9)
    )
    narrowband_max_boxes: int = field(
        default=16, metadata=at_least(1, "most narrow boxes read from the IQ per frame", high=4096)
    )
    narrowband_confidence: float = field(
        default=0.6, metadata=in_range(0.0, 1.0, "IQ probability needed to take over the label")
    )


def combine_scores(energy: np.ndarray, prob: np.ndarray, class_weight: float) -> np.ndarray:
    """``energy^(1-w) · prob^w`` elementwise, in [0, 1]."""
    e = np.clip(np.asarray(energy, dtype=np.float64), 0.0, 1.0)
    p = np.clip(np.asarray(prob, dtype=np.float64), 0.0, 1.0)
    return e ** (1.0 - class_weight) * p**class_weight


def load_classifier(
    path: str | os.PathLike[str], meta: ModelMetadata, *, providers: Any = "auto", threads: int = 0
) -> BatchModel:
    """A runner with ``run(batch[N,1,S,S]) -> [probs[N,C]]`` for an .onnx file or a TensorRT .engine."""
    if Path(path).suffix == ".engine":
        from rfstream.detect.trt_engine import TensorRTModel

        return TensorRTModel(path, meta)
    from rfstream.detect.ort import OrtModel

    return OrtModel(path, meta, providers=providers, threads=threads)


class TwoStageDetector:
    """Energy proposals -> letterboxed crops -> one batched classifier call -> labelled Detections.

    ``energy``: the proposal stage, possibly shared with the energy detector (it computes each
    frame once however many detectors ask); this detector does not own it.
    """

    kind = "two_stage"

    def __init__(
        self,
        name: str,
        energy: Proposer,
        classifier_path: str | os.PathLike[str],
        *,
        meta: ModelMetadata | None = None,
        options: TwoStageOptions = TwoStageOptions(),
        score_threshold: float | None = None,
        labels_kept: Sequence[str] = (),
        priority: int = 0,
    ) -> None:
        meta = meta or read_metadata(classifier_path)
        if meta.task != "crop_classifier":
            raise ModelError(
                f"detector {name!r}: model {classifier_path} is a {meta.task}; kind 'two_stage' "
                f"needs a crop_classifier"
            )
        if meta.input_size[0] != meta.input_size[1]:
            raise ModelError(
                f"detector {name!r}: model {classifier_path} crops must be square, got {meta.input_size}"
            )
        self.name = name
        self.priority = priority
        self.energy = energy
        self.meta = meta
        self.options = options
        self.classifier: BatchModel = load_classifier(
            classifier_path, meta, providers=options.providers, threads=options.threads
        )
        self.calibration, default = model_threshold(meta)
        self.score_threshold = default if score_threshold is None else float(score_threshold)
        self.labels_kept = frozenset(labels_kept)
        self._size = meta.input_size[0]
        self._labels = np.array(meta.labels, dtype=object)
        self._unknown = meta.labels.index("unknown") if "unknown" in meta.labels else -1
        self.narrowband: NarrowbandClassifier | None = None
        if options.narrowband and all(c in meta.labels for c in NARROW_CLASSES[:-1]):
            self.narrowband = NarrowbandClassifier(
                NarrowbandOptions(max_width_hz=options.narrowband_max_width_hz)
            )
            # Crop-classifier columns of tone, am, fm, ook (the IQ classifier's order), and of
            # the labels its "other" stands for.
            self._narrow_cols = np.array([meta.labels.index(c) for c in NARROW_CLASSES[:-1]])
            other = np.ones(len(meta.labels), dtype=bool)
            other[self._narrow_cols] = False
            if self._unknown >= 0:
                other[self._unknown] = False
            self._other_cols = np.flatnonzero(other)

    def warmup(self, frame_shape: tuple[int, int]) -> None:
        """Warm the energy stage and run the classifier once on a small batch (checks its output)."""
        self.energy.warmup(frame_shape)
        crops = np.full((2, 1, self._size, self._size), 0.12, dtype=np.float32)
        try:
            (probs,) = self.classifier.run(crops)
        except Exception as exc:  # InferenceFailed, or an engine refusing the batch size
            raise ModelError(f"detector {self.name!r}: warm-up failed: {exc}") from exc
        if probs.shape != (2, len(self.meta.labels)):
            raise ModelError(
                f"detector {self.name!r}: classifier output is {list(probs.shape)}, expected "
                f"[N, {len(self.meta.labels)}] (one probability per label)"
            )
        if self.narrowband is not None:  # the first frame should not pay for first calls
            rng = np.random.default_rng(0)
            iq = (rng.standard_normal(1 << 17) + 1j * rng.standard_normal(1 << 17)).astype(np.complex64)
            self.narrowband.classify_boxes(iq, 1e6, 0.0, 0.0, np.array([[0.0, 0.1, -5e3, 5e3]]))

    def classify(self, image: Any, boxes: np.ndarray, fill: float | None = None) -> np.ndarray:
        """Class probabilities ``[N, C]`` of the boxes of one host image (one batched call).

        ``fill``: the letterbox value (the frame's noise floor, ``Frame.noise_floor``); None
        measures it from the image.
        """
        crops = extract_crops(image, boxes, size=self._size, pad_frac=self.options.pad_frac, fill=fill)
        (probs,) = self.classifier.run(crops)
        return np.asarray(probs, dtype=np.float32)

    def detect(self, frame: Frame) -> list[Detection]:
        boxes, energy = self.energy.for_frame(frame)
        if len(boxes) == 0:
            return []
        boxes, energy = boxes[: self.options.max_proposals], energy[: self.options.max_proposals]
        probs = self.classify(frame.host_image(), boxes, fill=frame.noise_floor)
        measured = np.zeros(len(boxes), dtype=bool)
        if self.narrowband is not None:
            probs, measured = self.with_narrowband(frame, boxes, probs)
        best = probs.argmax(axis=1)
        prob = probs[np.arange(len(best)), best]
        scores = combine_scores(energy, prob, self.options.class_weight)
        labels = self._labels[best]
        if self.calibration is not None:
            scores = self.calibration.scores(labels, scores)
        keep = scores >= self.score_threshold
        if self._unknown >= 0 and not self.options.keep_unknown:
            keep &= best != self._unknown
        out = []
        for i in np.flatnonzero(keep):
            label = str(labels[i])
            if self.labels_kept and label not in self.labels_kept:
                continue
            x0, y0, x1, y1 = boxes[i].tolist()
            d = frame.detection(x0, y0, x1, y1, score=float(scores[i]), label=label, detector=self.name)
            if measured[i] and label in NARROW_CLASSES:
                d = d.replace(label_source="iq")
            out.append(d)
        return out

    def with_narrowband(
        self, frame: Frame, boxes: np.ndarray, probs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The crop probabilities with the IQ classifier's split on narrow boxes (step 4 above), and
        which boxes took it."""
        o = self.options
        b = np.asarray(boxes, dtype=np.float64)
        width_hz = (b[:, 2] - b[:, 0]) * frame.df_hz
        candidate = width_hz <= o.narrowband_max_width_hz
        if self._unknown >= 0 and not o.keep_unknown:
            candidate &= probs.argmax(axis=1) != self._unknown  # dropped anyway: not worth reading
        measured = np.zeros(len(b), dtype=bool)
        rows = np.flatnonzero(candidate)[: o.narrowband_max_boxes]
        if len(rows) == 0:
            return probs, measured
        phys = np.array([frame.to_physical(*b[i]) for i in rows])
        chunk = frame.chunk
        iq_probs, _ = self.narrowband.classify_boxes(  # type: ignore[union-attr]
            chunk.iq, chunk.sample_rate_hz, chunk.center_freq_hz, chunk.start_s, phys
        )
        sure = iq_probs[:, :-1].max(axis=1) >= o.narrowband_confidence
        if not sure.any():
            return probs, measured
        rows, iq_probs = rows[sure], iq_probs[sure]
        out = probs.copy()
        p = out[rows]
        signal = 1.0 - (p[:, self._unknown] if self._unknown >= 0 else 0.0)
        others = p[:, self._other_cols]
        total = others.sum(axis=1, keepdims=True)
        share = np.where(total > 0, others / np.where(total > 0, total, 1.0), 1.0 / max(1, others.shape[1]))
        p[:, self._narrow_cols] = signal[:, None] * iq_probs[:, :-1]
        p[:, self._other_cols] = (signal * iq_probs[:, -1])[:, None] * share
        out[rows] = p
        measured[rows] = True
        return out, measured

    def close(self) -> None:
        self.classifier.close()  # the proposer is shared, not ours: the registry's detectors close it
