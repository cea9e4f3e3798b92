"""scripts/fit_fusion.py end to end on one tiny validation recording: a fusion file the pipeline loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rfstream.config import load_config
from rfstream.detect.energy import ENERGY_FEATURES
from rfstream.detect.fuse import Fuser, load_fusion, make_merge

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "fit_fusion.py"


def fit(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def test_fits_a_fusion_file_the_pipeline_uses(tmp_path):
    out = tmp_path / "fusion.json"
    proc = fit(
        "--seeds", "500", "--rate", "1e6", "--duration", "0.4", "--workdir", str(tmp_path), "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    model = load_fusion(out)
    assert model.energy is not None and tuple(model.energy.features) == ENERGY_FEATURES
    assert 0.0 < model.threshold < 1.0 and 0.0 <= model.agreement_weight <= 1.0
    assert model.fitted_on["seeds"] == [500] and model.fitted_on["energy"]["boxes"] > 0
    assert model.fitted_on["fusion"]["threshold_rule"] == "max F1"
    stage = make_merge(load_config(overrides={"merge.fusion_file": str(out)}).merge)
    assert isinstance(stage, Fuser) and stage.threshold == model.threshold


@pytest.mark.parametrize("seeds", ["5", "1500", "3000", "499-500"])
def test_refuses_seeds_outside_the_validation_range(seeds):
    proc = fit("--seeds", seeds, timeout=120)
    assert proc.returncode == 2 and "not validation seeds" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("value", ["1.5", "-0.1", "1"])
def test_refuses_a_target_precision_outside_0_1(value):
    proc = fit("--target-precision", value, timeout=120)
    assert proc.returncode == 2 and "--target-precision" in proc.stderr
    assert "Traceback" not in proc.stderr
