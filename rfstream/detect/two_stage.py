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
5. Wider boxes (``wideband = true``, the default) go the same way through a second
   IQ model (``rfstream/models/wideband.json``, :func:`rfstream.detect.narrowband.wideband_model`):
   up to ``wideband_max_boxes`` proposals per frame wider than
   ``narrowband_max_width_hz``, the strongest first, measured with the same features
   and those that part the digital families (lines in the spectra of ``z²``, ``z⁴``,
   ``z⁸``, the spectrum's flatness and shape, the box's length), get probabilities
   over chirp, fm, fsk, ofdm, psk, pulsed and *other*; where one of the six reaches
   ``wideband_confidence`` it takes over the split as in step 4. A letterboxed crop
   of a tall narrow box or a short wide one is a few pixels across; the samples
   are not, and what they say holds on signals the crop classifier never saw
   (docs/architecture.md has the figures).

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
from rfstream.detect.narrowband import (
    WIDE_CLASSES,
    NarrowbandClassifier,
    NarrowbandOptions,
    wideband_classifier,
)
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
    # the energy stage's best 128 (was 64): only crowded frames have more, and pay for them (README)
    max_proposals: int = field(
        default=128, metadata=at_least(1, "most crops classified per frame", high=4096)
    )
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
    wideband: bool = True  # name wider boxes from the IQ too (chirp/fm/fsk/ofdm/psk/pulsed), step 5
    wideband_max_boxes: int = field(
        default=48, metadata=at_least(1, "most wide boxes read from the IQ per frame", high=4096)
    )
    wideband_confidence: float = field(
        default=0.6, metadata=in_range(0.0, 1.0, "IQ probability needed to take over a wide box's label")
    )


@dataclass(frozen=True)
class _IqStage:
    """One IQ classifier (narrow or wide boxes) and where its classes sit among the crop
    classifier's labels: its named classes (all but its last, *other*) and the labels its *other*
    stands for (every other label but ``unknown``)."""

    classifier: NarrowbandClassifier
    named_cols: np.ndarray
    other_cols: np.ndarray
    wide: bool
    max_boxes: int
    confidence: float


def _iq_stage(
    classifier: NarrowbandClassifier, labels: Sequence[str], wide: bool, max_boxes: int, confidence: float
) -> _IqStage:
    named = np.array([labels.index(c) for c in classifier.classes[:-1]])
    other = np.ones(len(labels), dtype=bool)
    other[named] = False
    if "unknown" in labels:
        other[labels.index("unknown")] = False
    return _IqStage(classifier, named, np.flatnonzero(other), wide, max_boxes, confidence)


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
        # The IQ stages (steps 4 and 5): narrow boxes, then wider ones.
        self._iq: list[_IqStage] = []
        if options.narrowband and all(c in meta.labels for c in NARROW_CLASSES[:-1]):
            clf = NarrowbandClassifier(NarrowbandOptions(max_width_hz=options.narrowband_max_width_hz))
            self._iq.append(
                _iq_stage(
                    clf, meta.labels, False, options.narrowband_max_boxes, options.narrowband_confidence
                )
            )
        if options.wideband and all(c in meta.labels for c in WIDE_CLASSES[:-1]):
            clf = wideband_classifier(options.narrowband_max_width_hz)
            self._iq.append(
                _iq_stage(clf, meta.labels, True, options.wideband_max_boxes, options.wideband_confidence)
            )

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
        if self._iq:  # the first frame should not pay for first calls
            rng = np.random.default_rng(0)
            iq = (rng.standard_normal(1 << 17) + 1j * rng.standard_normal(1 << 17)).astype(np.complex64)
            for stage in self._iq:
                width = 2.0 * stage.classifier.options.max_width_hz if stage.wide else 10e3
                box = np.array([[0.0, 0.1, -0.5 * width, 0.5 * width]])
                stage.classifier.classify_boxes(iq, 1e6, 0.0, 0.0, box)

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
        # per box, the labels its IQ reading named (each box is read by at most one stage)
        named: list[tuple[str, ...]] = [()] * len(boxes)
        for stage in self._iq:
            probs, took = self.with_iq(frame, boxes, probs, stage)
            for i in np.flatnonzero(took):
                named[i] = stage.classifier.classes[:-1]
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
            if label in named[i]:  # the label the samples gave, not the crops' share of "other"
                d = d.replace(label_source="iq")
            out.append(d)
        return out

    def with_iq(
        self, frame: Frame, boxes: np.ndarray, probs: np.ndarray, stage: _IqStage
    ) -> tuple[np.ndarray, np.ndarray]:
        """The crop probabilities with an IQ classifier's split on its boxes (steps 4 and 5 above),
        and which boxes took it."""
        o = stage.classifier.options
        b = np.asarray(boxes, dtype=np.float64)
        width_hz = (b[:, 2] - b[:, 0]) * frame.df_hz
        candidate = width_hz > o.max_width_hz if stage.wide else width_hz <= o.max_width_hz
        if self._unknown >= 0 and not self.options.keep_unknown:
            candidate &= probs.argmax(axis=1) != self._unknown  # dropped anyway: not worth reading
        measured = np.zeros(len(b), dtype=bool)
        rows = np.flatnonzero(candidate)[: stage.max_boxes]
        if len(rows) == 0:
            return probs, measured
        phys = np.array([frame.to_physical(*b[i]) for i in rows])
        chunk = frame.chunk
        iq_probs, _ = stage.classifier.classify_boxes(
            chunk.iq, chunk.sample_rate_hz, chunk.center_freq_hz, chunk.start_s, phys
        )
        sure = iq_probs[:, :-1].max(axis=1) >= stage.confidence
        if not sure.any():
            return probs, measured
        rows, iq_probs = rows[sure], iq_probs[sure]
        out = probs.copy()
        p = out[rows]
        signal = 1.0 - (p[:, self._unknown] if self._unknown >= 0 else 0.0)
        others = p[:, stage.other_cols]
        total = others.sum(axis=1, keepdims=True)
        share = np.where(total > 0, others / np.where(total > 0, total, 1.0), 1.0 / max(1, others.shape[1]))
        p[:, stage.named_cols] = signal[:, None] * iq_probs[:, :-1]
        p[:, stage.other_cols] = (signal * iq_probs[:, -1])[:, None] * share
        out[rows] = p
        measured[rows] = True
        return out, measured

    def close(self) -> None:
        self.classifier.close()  # the proposer is shared, not ours: the registry's detectors close it
