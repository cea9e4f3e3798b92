"""The auto-tuning table: monotonic, sane, overridable (no torch needed)."""

from __future__ import annotations

import itertools

import pytest

from rfstream.errors import ConfigError
from rfstream.train.autotune import autotune


@pytest.mark.parametrize("task", ["frame_detector", "crop_classifier"])
def test_table_is_monotonic(task):
    rows = [autotune(task, n) for n in (10, 60, 300, 3000, 30000)]
    for small, big in itertools.pairwise(rows):
        assert big.epochs <= small.epochs and big.patience <= small.patience
        assert big.batch_size >= small.batch_size and big.lr >= small.lr
        assert big.folds_run <= small.folds_run
    for r in rows:
        assert 1 <= r.folds_run <= r.folds and r.patience < r.epochs and 0 < r.lr < 0.1 and r.estimated_s > 0


def test_overrides_and_bad_values():
    hp = autotune("frame_detector", 300, {"epochs": 3, "lr": 1e-4, "batch_size": None, "folds_run": 9})
    assert hp.epochs == 3 and hp.lr == 1e-4 and hp.batch_size == 8 and hp.folds_run == hp.folds == 5
    with pytest.raises(ConfigError, match="unknown hyper-parameter"):
        autotune("frame_detector", 300, {"momentum": 0.9})
    with pytest.raises(ConfigError, match="epochs must be > 0"):
        autotune("frame_detector", 300, {"epochs": 0})
    with pytest.raises(ConfigError, match="at least 2"):
        autotune("crop_classifier", 1)


def test_cli_imports_without_torch_and_names_the_extra():
    import rfstream.train.cli as cli

    assert "pip install 'rfstream[train]'" in cli.MISSING_TORCH
    assert all(1000 <= cli.capture_seed(s, i) <= 1999 for s in (0, 1, 7) for i in range(200))
