"""Training loops: k-fold cross-validation, early stopping, per-epoch logs, best fold kept.

Folds are grouped by recording (frames of one recording share its signals, so
they never sit on both sides of a split). Each trained fold stops early when its
validation F1 has not improved for ``patience`` epochs, but not before 70 % of its
epochs (``MIN_EPOCH_FRACTION``: the one-cycle schedule's low learning rates come
last, and a noisy validation F1 stopped the frame detector while they were still
high); its best epoch's weights are its result, and the best fold's weights are kept.

Frame detector: trained on random 512×512 windows of the frames (the net is fully
convolutional; windows at multiples of 8 pixels keep the output grid aligned),
flipped in time and frequency at random. Targets on the stride-4 grid: a cell is
positive when its centre lies inside a truth box (at least one cell per box, so
a one-column tone still has a target); the class target is the box's label
(smaller boxes drawn last win overlaps). Loss = BCE(objectness) + CE(class) on
positive cells, class-weighted by inverse square-root frequency. Validation
decodes whole frames with :func:`rfstream.detect.decode.decode_frame_detector`
and matches boxes to truth at IoU ≥ 0.5 with the label (precision, recall, F1).

Crop classifier: crops cut by :func:`rfstream.detect.crops.extract_crops` (the
function the two-stage detector uses), flipped at random, CE loss class-weighted
the same way; validation F1 is the macro average over the labels present.

Every epoch appends one JSON line to ``train_log.jsonl`` in the output directory.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from rfstream.detect.crops import extract_crops
from rfstream.detect.decode import decode_frame_detector
from rfstream.labels import LABELS
from rfstream.train.autotune import HyperParams
from rfstream.train.dataset import FrameSet, box_iou
from rfstream.train.models import CropClassifier, FrameDetector
from rfstream.types import Chunk, Frame

TRAIN_WINDOW = 512
# Decoder settings for the per-epoch validation (early stopping); tune_decoder refines them at the end.
EPOCH_DECODER = {"mask_threshold": 0.5, "class_threshold": 0.35, "min_cells": 16, "score_threshold": 0.4}
MATCH_IOU = 0.5
THREADS = 2
MIN_EPOCH_FRACTION = 0.7  # no early stop before this share of the epochs


@dataclass
class TrainResult:
    model: torch.nn.Module
    fold: int
    metrics: dict[str, float]  # the best fold's validation metrics at its best epoch
    folds: list[dict[str, Any]] = field(default_factory=list)  # per trained fold: best epoch and metrics
    extra: dict[str, Any] = field(default_factory=dict)


# --- shared helpers -------------------------------------------------------------------------
def _progress(iterable: Any, **kwargs: Any) -> Any:
    return tqdm(iterable, disable=not sys.stderr.isatty(), leave=False, **kwargs)


def recording_of(name: str) -> str:
    """The recording a frame came from: its file name without the ``_<k>.png`` frame index."""
    return name.rsplit("_", 1)[0]


def group_folds(groups: Sequence[str], k: int, seed: int) -> list[np.ndarray]:
    """k folds of item indices, whole groups at a time, groups shuffled by ``seed``."""
    unique = sorted(set(groups))
    rng = np.random.default_rng(seed)
    rng.shuffle(unique)
    k = min(k, len(unique)) if len(unique) >= 2 else 2
    fold_of_group = {g: i % k for i, g in enumerate(unique)}
    assignment = np.array([fold_of_group[g] for g in groups])
    if len(unique) < 2:  # one recording: split its frames instead
        assignment = np.arange(len(groups)) % k
    return [np.flatnonzero(assignment == i) for i in range(k)]


def _class_weights(counts: np.ndarray) -> torch.Tensor:
    w = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1)), 0.0)
    w = w / max(w[counts > 0].mean(), 1e-9) if (counts > 0).any() else np.ones_like(w)
    return torch.tensor(w, dtype=torch.float32)


def _log(path: Path | None, record: dict[str, Any]) -> None:
    if path is not None:
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _prf(tp: int, n_pred: int, n_true: int) -> dict[str, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def _match(
    pred: np.ndarray, pred_labels: Sequence[int], truth: np.ndarray, truth_labels: Sequence[int]
) -> tuple[int, int]:
    """(class-aware, class-agnostic) true positives: greedy one-to-one at IoU ≥ 0.5 (preds in score order)."""
    if not len(pred) or not len(truth):
        return 0, 0
    iou = box_iou(pred, truth)
    out = []
    for aware in (True, False):
        used = np.zeros(len(truth), dtype=bool)
        tp = 0
        for i in range(len(pred)):
            ok = (iou[i] >= MATCH_IOU) & ~used
            if aware:
                ok &= np.asarray(truth_labels) == pred_labels[i]
            if ok.any():
                used[int(np.argmax(np.where(ok, iou[i], -1)))] = True
                tp += 1
        out.append(tp)
    return out[0], out[1]


# --- frame detector -------------------------------------------------------------------------
def _cells(lo: float, hi: float, n: int) -> tuple[int, int]:
    """Cells whose centres lie in [lo, hi) (grid units); the one holding the centre if none does."""
    c0, c1 = math.floor(lo + 0.5), math.floor(hi + 0.5)
    if c1 <= c0:
        c0 = math.floor(0.5 * (lo + hi))
        c1 = c0 + 1
    c0 = min(max(c0, 0), n - 1)
    return c0, min(max(c1, c0 + 1), n)


def frame_targets(
    boxes: np.ndarray, labels: np.ndarray, shape: tuple[int, int], stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Objectness (uint8) and class (int64, -1 = none) targets on the stride grid of one frame.

    Where boxes overlap, the smaller box's label wins (drawn last): a carrier crossing an
    OFDM burst keeps its own label along its whole length.
    """
    h, w = shape[0] // stride, shape[1] // stride
    obj = np.zeros((h, w), dtype=np.uint8)
    cls = np.full((h, w), -1, dtype=np.int64)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in np.argsort(-areas, kind="stable"):
        x0, y0, x1, y1 = boxes[i] / stride
        c0, c1 = _cells(x0, x1, w)
        r0, r1 = _cells(y0, y1, h)
        obj[r0:r1, c0:c1] = 1
        cls[r0:r1, c0:c1] = labels[i]
    return obj, cls


def _dummy_frame(image: np.ndarray) -> Frame:
    """A Frame whose physical units are its pixels (validation needs only the pixel boxes)."""
    chunk = Chunk(
        np.zeros(0, np.complex64), sample_rate_hz=1.0, center_freq_hz=0.0, start_sample=0, seq=0, arrived_ns=0
    )
    return Frame(image=image, t0_s=0.0, dt_s=1.0, f0_hz=0.0, df_hz=1.0, chunk=chunk)


@torch.no_grad()
def predict_frames(model: FrameDetector, images: np.ndarray, batch: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Objectness [N,1,h,w] and class probabilities [N,C,h,w] of uint8 frames."""
    model.eval()
    objs, clss = [], []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i : i + batch].astype(np.float32) / 255.0)[:, None]
        o, c = model(x)
        objs.append(torch.sigmoid(o).numpy())
        clss.append(torch.softmax(c, dim=1).numpy())
    return np.concatenate(objs), np.concatenate(clss)


def evaluate_frames(
    obj: np.ndarray,
    cls: np.ndarray,
    data: FrameSet,
    idx: Sequence[int],
    *,
    stride: int,
    labels: Sequence[str] = LABELS,
    score_threshold: float = 0.0,
    **decoder: Any,
) -> dict[str, float]:
    """Box-level precision/recall/F1 (label-aware; ``*_any`` label-agnostic) at IoU ≥ 0.5."""
    tp = tp_any = n_pred = n_true = 0
    for j, i in enumerate(idx):
        frame = _dummy_frame(data.images[i].astype(np.float32) / 255.0)
        dets = decode_frame_detector(
            obj[j],
            cls[j],
            frame,
            labels=labels,
            stride=stride,
            score_threshold=score_threshold,
            detector_name="val",
            **decoder,
        )
        dets.sort(key=lambda d: -d.score)
        pred = np.array([[d.x0, d.y0, d.x1, d.y1] for d in dets]).reshape(-1, 4)
        a, b = _match(pred, [labels.index(d.label) for d in dets], data.boxes[i], data.labels[i].tolist())
        tp, tp_any, n_pred, n_true = tp + a, tp_any + b, n_pred + len(dets), n_true + len(data.boxes[i])
    out = _prf(tp, n_pred, n_true)
    out.update({f"{k}_any": v for k, v in _prf(tp_any, n_pred, n_true).items()})
    return out


def _frame_batch(
    data: FrameSet,
    targets: list[tuple[np.ndarray, np.ndarray]],
    idx: np.ndarray,
    rng: np.random.Generator,
    stride: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    height, width = data.images.shape[1:]
    win_h, win_w = min(TRAIN_WINDOW, height), min(TRAIN_WINDOW, width)
    xs, objs, clss = [], [], []
    for i in idx:
        y = int(rng.integers(0, (height - win_h) // 8 + 1)) * 8
        x = int(rng.integers(0, (width - win_w) // 8 + 1)) * 8
        img = data.images[i, y : y + win_h, x : x + win_w]
        o, c = targets[i]
        o = o[y // stride : (y + win_h) // stride, x // stride : (x + win_w) // stride]
        c = c[y // stride : (y + win_h) // stride, x // stride : (x + win_w) // stride]
        if rng.random() < 0.5:  # frequency reversal (spectral inversion): labels unchanged
            img, o, c = img[:, ::-1], o[:, ::-1], c[:, ::-1]
        if rng.random() < 0.5:  # time reversal
            img, o, c = img[::-1], o[::-1], c[::-1]
        xs.append(img)
        objs.append(o)
        clss.append(c)
    x = torch.from_numpy(np.stack(xs).astype(np.float32) / 255.0)[:, None]
    return x, torch.from_numpy(np.stack(objs).astype(np.float32))[:, None], torch.from_numpy(np.stack(clss))


def _fold_setup(
    make_model: Callable[[], Any], hp: HyperParams, n_train: int, seed: int, fold: int
) -> tuple[Any, Any, Any, np.random.Generator, int]:
    """Seeded model, AdamW, one-cycle schedule and data RNG for one fold; and steps per epoch."""
    torch.manual_seed(seed * 100 + fold)  # before building the model: its initial weights follow
    rng = np.random.default_rng(seed * 100 + fold)
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=hp.lr, weight_decay=1e-4)
    steps = max(1, math.ceil(n_train / hp.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=hp.lr, total_steps=hp.epochs * steps, pct_start=0.15
    )
    return model, opt, sched, rng, steps


class _FoldTracker:
    """One fold's epoch log and early stopping: keeps the best weights by validation F1."""

    def __init__(
        self, model_name: str, fold: int, patience: int, log_path: Path | None, min_epochs: int = 0
    ) -> None:
        self.model_name, self.fold, self.patience, self.log_path = model_name, fold, patience, log_path
        self.min_epochs = min_epochs
        self.best_f1, self.best_state, self.stale = -1.0, None, 0
        self.best_epoch, self.best_metrics = 0, {}

    def epoch(
        self, model: Any, epoch: int, losses: list[float], metrics: dict[str, float], lr: float, t0: float
    ) -> bool:
        """Log the epoch; remember the weights if they are the best so far. True: stop early."""
        record = {
            "model": self.model_name,
            "fold": self.fold,
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            **{k: round(v, 4) for k, v in metrics.items()},
            "lr": lr,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        _log(self.log_path, record)
        print(json.dumps(record), file=sys.stderr, flush=True)
        if metrics["f1"] > self.best_f1:
            self.best_f1, self.best_state, self.stale = metrics["f1"], copy.deepcopy(model.state_dict()), 0
            self.best_epoch, self.best_metrics = epoch, metrics
            return False
        self.stale += 1
        return self.stale >= self.patience and epoch >= self.min_epochs

    def finish(self, model: Any) -> dict[str, Any]:
        """Load the best weights back into ``model``; the fold's summary."""
        model.load_state_dict(self.best_state)
        return {"fold": self.fold, "best_epoch": self.best_epoch, **self.best_metrics}


def train_frame_detector(
    data: FrameSet,
    hp: HyperParams,
    *,
    seed: int = 0,
    log_path: Path | None = None,
    labels: Sequence[str] = LABELS,
) -> TrainResult:
    torch.set_num_threads(THREADS)
    stride = FrameDetector.stride
    shape = data.images.shape[1:]
    targets = [frame_targets(b, lab, shape, stride) for b, lab in zip(data.boxes, data.labels, strict=True)]
    counts = np.bincount(np.concatenate(data.labels), minlength=len(labels)).astype(float)
    class_w = _class_weights(counts)
    folds = group_folds([recording_of(n) for n in data.names], hp.folds, seed)
    best: TrainResult | None = None
    summaries = []
    for fold in range(hp.folds_run):
        val_idx = folds[fold]
        train_idx = np.setdiff1d(np.arange(len(data)), val_idx)
        model, opt, sched, rng, steps_per_epoch = _fold_setup(
            lambda: FrameDetector(len(labels)), hp, len(train_idx), seed, fold
        )
        tracker = _FoldTracker(
            "frame_detector", fold, hp.patience, log_path, math.ceil(MIN_EPOCH_FRACTION * hp.epochs)
        )
        for epoch in range(1, hp.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            order = rng.permutation(train_idx)
            losses = []
            bar = _progress(range(steps_per_epoch), desc=f"frame detector fold {fold} epoch {epoch}")
            for step in bar:
                x, obj_t, cls_t = _frame_batch(
                    data, targets, order[step * hp.batch_size : (step + 1) * hp.batch_size], rng, stride
                )
                obj_logit, cls_logit = model(x)
                loss = F.binary_cross_entropy_with_logits(obj_logit, obj_t)
                if (cls_t >= 0).any():
                    loss = loss + F.cross_entropy(cls_logit, cls_t, weight=class_w, ignore_index=-1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
            obj, cls = predict_frames(model, data.images[val_idx])
            metrics = evaluate_frames(obj, cls, data, val_idx, stride=stride, labels=labels, **EPOCH_DECODER)
            if tracker.epoch(model, epoch, losses, metrics, sched.get_last_lr()[0], t0):
                break
        summaries.append(tracker.finish(model))
        if best is None or tracker.best_f1 > best.metrics["f1"]:
            best = TrainResult(
                model=model, fold=fold, metrics=tracker.best_metrics, extra={"val_idx": val_idx.tolist()}
            )
    assert best is not None
    best.folds = summaries
    return best


DECODER_GRID = {
    "mask_threshold": (0.4, 0.5),
    "class_threshold": (0.35,),
    "min_cells": (4, 8, 16),
    "refine": (True,),
    "refine_frac": (0.5,),
}
SCORE_GRID = (0.3, 0.4, 0.5)


def tune_decoder(
    obj: np.ndarray, cls: np.ndarray, data: FrameSet, val_idx: Sequence[int], labels: Sequence[str] = LABELS
) -> tuple[dict[str, Any], float, dict[str, float]]:
    """Decoder parameters and score threshold with the best validation F1, and that F1's metrics.

    ``obj``/``cls`` are the model's outputs on the frames ``val_idx`` (torch or ONNX Runtime).
    """
    best: tuple[float, dict[str, Any], float, dict[str, float]] | None = None
    for values in itertools.product(*DECODER_GRID.values()):
        params = dict(zip(DECODER_GRID, values, strict=True))
        for score_threshold in SCORE_GRID:
            m = evaluate_frames(
                obj,
                cls,
                data,
                val_idx,
                stride=FrameDetector.stride,
                labels=labels,
                score_threshold=score_threshold,
                **params,
            )
            if best is None or m["f1"] > best[0]:
                best = (m["f1"], params, score_threshold, m)
    assert best is not None
    return best[1], best[2], best[3]


# --- crop classifier ------------------------------------------------------------------------
def crop_arrays(
    data: FrameSet, crops: dict[str, Any], labels: Sequence[str] = LABELS
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All training crops ``[N,1,64,64]`` float32, their label indices, and their frame names."""
    by_image: dict[str, list[dict[str, Any]]] = {}
    for c in crops["crops"]:
        by_image.setdefault(c["image"], []).append(c)
    position = {name: i for i, name in enumerate(data.names)}
    xs, ys, names = [], [], []
    for name, items in by_image.items():
        if name not in position:
            continue
        image = data.images[position[name]].astype(np.float32) / 255.0
        boxes = np.array([[c["x_min"], c["y_min"], c["x_max"], c["y_max"]] for c in items])
        xs.append(
            extract_crops(
                image, boxes, size=crops["size"], pad_frac=crops["pad_frac"], min_pad_px=crops["min_pad_px"]
            )
        )
        ys.extend(labels.index(c["label"]) for c in items)
        names.extend([name] * len(items))
    if not xs:
        return np.zeros((0, 1, crops["size"], crops["size"]), np.float32), np.zeros(0, np.int64), []
    return np.concatenate(xs), np.array(ys, dtype=np.int64), names


def _crop_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    present = np.unique(truth)
    per = [
        _prf(int(((pred == c) & (truth == c)).sum()), int((pred == c).sum()), int((truth == c).sum()))
        for c in present
    ]
    return {
        "precision": float(np.mean([p["precision"] for p in per])),
        "recall": float(np.mean([p["recall"] for p in per])),
        "f1": float(np.mean([p["f1"] for p in per])),
        "accuracy": float((pred == truth).mean()),
    }


def train_crop_classifier(
    crops_x: np.ndarray,
    crops_y: np.ndarray,
    groups: Sequence[str],
    hp: HyperParams,
    *,
    seed: int = 0,
    log_path: Path | None = None,
    labels: Sequence[str] = LABELS,
) -> TrainResult:
    torch.set_num_threads(THREADS)
    class_w = _class_weights(np.bincount(crops_y, minlength=len(labels)).astype(float))
    folds = group_folds(list(groups), hp.folds, seed)
    x_all = torch.from_numpy(crops_x)
    y_all = torch.from_numpy(crops_y)
    best: TrainResult | None = None
    summaries = []
    for fold in range(hp.folds_run):
        val_idx = folds[fold]
        train_idx = np.setdiff1d(np.arange(len(crops_y)), val_idx)
        model, opt, sched, rng, steps = _fold_setup(
            lambda: CropClassifier(len(labels)), hp, len(train_idx), seed, fold
        )
        tracker = _FoldTracker(
            "crop_classifier", fold, hp.patience, log_path, math.ceil(MIN_EPOCH_FRACTION * hp.epochs)
        )
        for epoch in range(1, hp.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            order = rng.permutation(train_idx)
            losses = []
            for step in _progress(range(steps), desc=f"crop classifier fold {fold} epoch {epoch}"):
                idx = torch.from_numpy(order[step * hp.batch_size : (step + 1) * hp.batch_size])
                x, y = x_all[idx], y_all[idx]
                if rng.random() < 0.5:
                    x = x.flip(3)
                if rng.random() < 0.5:
                    x = x.flip(2)
                loss = F.cross_entropy(model(x), y, weight=class_w)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
            model.eval()
            with torch.no_grad():
                pred = torch.cat(
                    [model(x_all[val_idx[i : i + 512]]).argmax(1) for i in range(0, len(val_idx), 512)]
                )
            metrics = _crop_metrics(pred.numpy(), crops_y[val_idx])
            if tracker.epoch(model, epoch, losses, metrics, sched.get_last_lr()[0], t0):
                break
        summaries.append(tracker.finish(model))
        if best is None or tracker.best_f1 > best.metrics["f1"]:
            best = TrainResult(model=model, fold=fold, metrics=tracker.best_metrics)
    assert best is not None
    best.folds = summaries
    return best
