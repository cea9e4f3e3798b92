"""Hyper-parameters from the amount of labelled data, overridable by the user.

The unit is the model's own sample: a *frame* (1024×1024 spectrogram) for the
frame detector, a *crop* for the crop classifier. Fewer samples → more epochs,
more folds trained (each fold sees less data; averaging over folds matters more),
smaller batches, a gentler learning rate and more patience. With more data one
fold (an 80/20 split of k = 5) is enough and time matters more: a crop classifier
on thousands of crops converges in about ten epochs, and torch's small-conv
speed on two CPU cores (~0.01 s per crop-epoch) makes more epochs expensive.

Frame detector (samples = frames; batches are 512×512 random crops of frames):

    frames        epochs  k   folds run  batch  lr      patience
    < 50          60      5   3          4      1e-3    15
    50 – 199      40      5   2          4      2e-3    10
    200 – 999     16      5   1          8      2e-3    8
    ≥ 1000        16      10  1          8      3e-3    5

Crop classifier (samples = crops):

    crops         epochs  k   folds run  batch  lr      patience
    < 500         80      5   3          32     1e-3    15
    500 – 1999    50      5   2          64     2e-3    10
    2000 – 9999   10      5   1          128    3e-3    8
    ≥ 10000       8       10  1          256    3e-3    5

``folds run`` ≤ k: the first folds of a k-fold split are trained (each with early
stopping on its validation F1) and the best fold's weights are kept. Estimated
time = samples × epochs × folds run × seconds per sample-epoch on this 2-core
CPU (0.045 s per frame, 0.01 s per crop, measured), an upper bound since early
stopping usually ends sooner. Any field can be overridden (``--epochs`` ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rfstream.errors import ConfigError

Task = Literal["frame_detector", "crop_classifier"]

# (upper bound of samples, epochs, k, folds run, batch, lr, patience)
_TABLES: dict[str, tuple[tuple[float, int, int, int, int, float, int], ...]] = {
    "frame_detector": (
        (50, 60, 5, 3, 4, 1e-3, 15),
        (200, 40, 5, 2, 4, 2e-3, 10),
        (1000, 16, 5, 1, 8, 2e-3, 8),
        (float("inf"), 16, 10, 1, 8, 3e-3, 5),
    ),
    "crop_classifier": (
        (500, 80, 5, 3, 32, 1e-3, 15),
        (2000, 50, 5, 2, 64, 2e-3, 10),
        (10000, 10, 5, 1, 128, 3e-3, 8),
        (float("inf"), 8, 10, 1, 256, 3e-3, 5),
    ),
}
SECONDS_PER_SAMPLE_EPOCH = {"frame_detector": 0.045, "crop_classifier": 0.01}


@dataclass(frozen=True, slots=True)
class HyperParams:
    epochs: int
    folds: int  # k of the k-fold split
    folds_run: int  # how many of the k folds are trained
    batch_size: int
    lr: float
    patience: int  # epochs without a better validation F1 before stopping
    estimated_s: float  # upper bound, before early stopping

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def autotune(task: Task, samples: int, overrides: Mapping[str, Any] | None = None) -> HyperParams:
    """The table's row for ``samples``, with ``overrides`` (None values ignored) applied."""
    if task not in _TABLES:
        raise ConfigError(f"autotune: unknown task {task!r}")
    if samples < 2:
        raise ConfigError(f"autotune: {task} needs at least 2 labelled samples, got {samples}")
    row = next(r for r in _TABLES[task] if samples < r[0])
    values: dict[str, Any] = dict(
        zip(("epochs", "folds", "folds_run", "batch_size", "lr", "patience"), row[1:], strict=True)
    )
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in values:
            raise ConfigError(f"autotune: unknown hyper-parameter {key!r}")
        if not value > 0:
            raise ConfigError(f"autotune: {key} must be > 0, got {value}")
        values[key] = type(values[key])(value)
    values["folds"] = max(2, values["folds"])
    values["folds_run"] = min(values["folds_run"], values["folds"])
    estimated = samples * values["epochs"] * values["folds_run"] * SECONDS_PER_SAMPLE_EPOCH[task]
    return HyperParams(**values, estimated_s=round(estimated, 1))
