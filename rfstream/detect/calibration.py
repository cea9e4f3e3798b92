"""What a published score means: calibration maps a detector's raw score to a probability.

A calibrated score is the probability that the box is a real signal of that label: on the
validation data it was fitted on, among boxes scored about *p*, a fraction of about *p* matched a
truth box of the same label (IoU ≥ 0.5 after widening truth to the frame's resolution).

The form is logistic regression on a small feature vector, fitted by Newton's method with a weak
L2 prior (so that a label with few boxes stays near the identity instead of over-fitting):

* a learned model's boxes use Platt scaling per label, the features being the logit of the raw
  score and 1: ``p = σ(a·logit(s) + b)``;
* the energy detector's boxes, which have no learned score, use features of the box itself
  (SNR, shape), fitted the same way (see :mod:`rfstream.detect.energy`).

A model carries its calibration in its metadata as ``rfstream.calibration`` (JSON, see
:meth:`Calibration.to_json`), together with the operating threshold chosen on validation data
(maximum F1 of calibrated scores). A model without it is used as it is (identity, threshold from
``rfstream.score_threshold``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Calibration",
    "CalibrationError",
    "Logistic",
    "expected_calibration_error",
    "fit_logistic",
    "fit_platt",
    "logit",
    "max_f1_threshold",
]

_EPS = 1e-6


class CalibrationError(ValueError):
    """A calibration record that cannot be used (bad JSON, wrong shape, non-finite numbers)."""


def logit(p: Any) -> np.ndarray:
    """log(p / (1 − p)), with p clipped away from 0 and 1."""
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(q) - np.log1p(-q)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for any z


@dataclass(frozen=True)
class Logistic:
    """``σ(w · x)``: weights over named features (the last feature is usually the constant 1)."""

    features: tuple[str, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.features) != len(self.weights) or not self.features:
            raise CalibrationError("logistic calibration needs one weight per feature")
        if not all(isinstance(w, int | float) and math.isfinite(w) for w in self.weights):
            raise CalibrationError("logistic calibration weights must be finite numbers")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for rows of features, shape (n, len(features)) → (n,)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, len(self.weights))
        return _sigmoid(x @ np.asarray(self.weights, dtype=np.float64))

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "weights": [float(w) for w in self.weights]}

    @classmethod
    def from_dict(cls, d: Any) -> Logistic:
        if not isinstance(d, Mapping):
            raise CalibrationError("a logistic calibration must be a JSON object")
        feats, weights = d.get("features"), d.get("weights")
        if not (isinstance(feats, list) and all(isinstance(f, str) for f in feats)):
            raise CalibrationError("logistic calibration 'features' must be a list of names")
        if not (
            isinstance(weights, list)
            and all(isinstance(w, int | float) and not isinstance(w, bool) for w in weights)
        ):
            raise CalibrationError("logistic calibration 'weights' must be a list of numbers")
        return cls(tuple(feats), tuple(float(w) for w in weights))


PLATT_FEATURES = ("logit_score", "bias")
IDENTITY = Logistic(PLATT_FEATURES, (1.0, 0.0))


def fit_logistic(x: np.ndarray, y: np.ndarray, features: Sequence[str], l2: float = 1e-2) -> Logistic:
    """Maximum a-posteriori logistic regression (Newton's method, L2 prior ``l2`` on the weights).

    ``x``: (n, k) features; ``y``: (n,) 0/1 outcomes. Platt's target smoothing keeps a perfectly
    separable set from driving the weights to infinity.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(y), -1)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[1] != len(features):
        raise CalibrationError(f"{x.shape[1]} feature columns for {len(features)} feature names")
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    t = np.where(y > 0.5, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))  # Platt's targets
    w = np.zeros(x.shape[1])
    reg = l2 * np.eye(x.shape[1])
    for _ in range(50):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - t) + reg @ w
        hess = (x * (p * (1.0 - p))[:, None]).T @ x + reg
        step = np.linalg.solve(hess + 1e-9 * np.eye(len(w)), grad)
        w -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    if not np.all(np.isfinite(w)):
        raise CalibrationError("logistic calibration did not converge")
    return Logistic(tuple(features), tuple(float(v) for v in w))


def fit_platt(raw_scores: np.ndarray, correct: np.ndarray, l2: float = 1e-2) -> Logistic:
    """Platt scaling of raw scores in [0, 1] against 0/1 outcomes."""
    s = np.asarray(raw_scores, dtype=np.float64)
    x = np.stack([logit(s), np.ones_like(s)], axis=1)
    return fit_logistic(x, correct, PLATT_FEATURES, l2)


def platt(model: Logistic, raw_scores: Any) -> np.ndarray:
    s = np.asarray(raw_scores, dtype=np.float64)
    return model(np.stack([logit(s).ravel(), np.ones(s.size)], axis=1)).reshape(s.shape)


def max_f1_threshold(scores: np.ndarray, correct: np.ndarray, n_truth: int) -> tuple[float, float]:
    """The score cut that maximises F1 (boxes with score ≥ cut are published) and that F1."""
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(correct, dtype=bool)
    if s.size == 0 or n_truth <= 0:
        return 0.5, 0.0
    order = np.argsort(-s, kind="stable")
    tp = np.cumsum(c[order])
    k = np.arange(1, s.size + 1)
    f1 = 2.0 * tp / (k + n_truth)
    best = int(np.argmax(f1))
    cut = float(s[order][best])
    return cut, float(f1[best])


def precision_threshold(scores: np.ndarray, correct: np.ndarray, target: float) -> float | None:
    """The lowest score cut at which the boxes scored at or above it are right at least ``target``
    of the time (the most recall at that precision); None where no cut reaches it."""
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(correct, dtype=bool)
    if s.size == 0:
        return None
    order = np.argsort(-s, kind="stable")
    ranked = s[order]
    precision = np.cumsum(c[order]) / np.arange(1, s.size + 1)
    # a cut must fall between distinct scores: only the last box of each run of equal scores counts
    last_of_run = np.append(ranked[1:] != ranked[:-1], True)
    ok = np.flatnonzero((precision >= target) & last_of_run)
    return float(ranked[ok[-1]]) if ok.size else None


def expected_calibration_error(scores: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    """Σ_bins (n_bin / n) · |fraction correct − mean score| over equal-width score bins."""
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(correct, dtype=np.float64)
    if s.size == 0:
        return 0.0
    bins = np.minimum((s * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.sum() * abs(c[m].mean() - s[m].mean())
    return float(ece / s.size)


def json_record(text: str, form: str) -> dict[str, Any]:
    """A JSON object whose ``form`` is ``form``; anything else is a CalibrationError saying so."""
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CalibrationError(f"not valid JSON: {exc}") from exc
    if not isinstance(d, dict) or d.get("form") != form:
        raise CalibrationError(f"expected a JSON object with form '{form}'")
    return d


def is_probability(value: Any) -> bool:
    """A JSON number (not a bool) in [0, 1]."""
    return not isinstance(value, bool) and isinstance(value, int | float) and 0.0 <= float(value) <= 1.0


@dataclass(frozen=True)
class Calibration:
    """Per-label Platt scaling for one model, and its operating threshold.

    ``threshold`` is on the calibrated score; ``None`` means "use the model's
    ``rfstream.score_threshold``". ``fitted_on`` documents the fit (sizes, ECE before/after).
    """

    per_label: Mapping[str, Logistic] = field(default_factory=dict)
    default: Logistic = IDENTITY
    threshold: float | None = None
    fitted_on: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_identity(self) -> bool:
        return not self.per_label and self.default == IDENTITY

    def score(self, label: str, raw: float) -> float:
        """The calibrated score of one raw score."""
        return float(platt(self.per_label.get(label, self.default), np.float64(raw)))

    def scores(self, labels: Sequence[str], raw: np.ndarray) -> np.ndarray:
        """Calibrated scores for parallel arrays of labels and raw scores."""
        raw = np.asarray(raw, dtype=np.float64)
        out = np.empty(raw.shape, dtype=np.float64)
        labels_arr = np.asarray(labels, dtype=object)
        for label in set(labels_arr.tolist()):
            m = labels_arr == label
            out[m] = platt(self.per_label.get(label, self.default), raw[m])
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "form": "platt",
                "per_label": {k: v.to_dict() for k, v in sorted(self.per_label.items())},
                "default": self.default.to_dict(),
                "threshold": self.threshold,
                "fitted_on": dict(self.fitted_on),
            },
            sort_keys=True,
            default=float,
        )

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        """Parse ``rfstream.calibration``; anything malformed is a CalibrationError naming it."""
        d = json_record(text, "platt")
        per = d.get("per_label", {})
        if not isinstance(per, dict):
            raise CalibrationError("'per_label' must be a JSON object")
        threshold = d.get("threshold")
        if threshold is not None and not is_probability(threshold):
            raise CalibrationError("'threshold' must be null or a number in [0, 1]")
        fitted = d.get("fitted_on", {})
        return cls(
            per_label={str(k): Logistic.from_dict(v) for k, v in per.items()},
            default=Logistic.from_dict(d.get("default", IDENTITY.to_dict())),
            threshold=None if threshold is None else float(threshold),
            fitted_on=fitted if isinstance(fitted, dict) else {},
        )
