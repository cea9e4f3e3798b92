"""Golden test: the energy detector's output on a fixed set of frames stays exactly what it was.

The frames are synthetic (``noise_image`` from test_energy: power-domain noise, boxes,
always-on carriers, sloped floors, a DC spike, pulse trains, repeated rows), built from
fixed seeds with NumPy alone, so they do not move when the spectrogram stage changes.
``energy_golden.json`` holds every frame's boxes and scores as the detector produced them
before its hot paths were vectorised (two ``ndimage.label`` passes, full-frame seed masks,
``find_objects``); speed-ups must reproduce them exactly. Regenerate it only when the
detector's output is meant to change:

    python tests/test_energy_golden.py --regenerate
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_energy import make_frame, noise_image

from rfstream.detect.energy import EnergyDetector, EnergyOptions

GOLDEN = Path(__file__).with_name("energy_golden.json")


def _rich_scene(seed: int) -> dict[str, Any]:
    """Many bursts, carriers crossed by bursts, a pulse train, a sloped rolled-off floor, DC."""
    rng = np.random.default_rng(seed)
    signals = []
    for _ in range(30):
        x0, y0 = int(rng.integers(0, 1000)), int(rng.integers(0, 1000))
        w, h = int(rng.integers(1, 80)), int(rng.integers(2, 200))
        signals.append((x0, y0, min(1024, x0 + w), min(1024, y0 + h), float(rng.uniform(2.0, 20.0))))
    # A radar-like train: 2-row pulses every 40 rows at one frequency.
    signals.extend((820, 30 + 40 * k, 836, 32 + 40 * k, 12.0) for k in range(12))
    signals.append((300, 500, 700, 540, 9.0))  # wideband burst across the carriers at 400 and 600
    x = np.linspace(-1.0, 1.0, 1024)
    floor_db = 3.0 * x - 12.0 * np.clip(np.abs(x) - 0.9, 0.0, None) / 0.1
    return {
        "signals": signals,
        "floor_db": floor_db,
        "extra_columns": {400: 15.0, 401: 9.0, 600: 6.0, 512: 25.0},
    }


def scenes() -> list[tuple[str, np.ndarray, float, EnergyOptions, str]]:
    """(name, image, sample rate, options, ``detect`` or ``propose`` with rows measured from the image)."""
    from test_energy import SIGNALS

    out = []
    rich = [noise_image(np.random.default_rng(100 + s), **_rich_scene(s)) for s in range(3)]
    base = EnergyOptions()
    out.append(("signals", noise_image(np.random.default_rng(1), signals=SIGNALS), 20e6, base, "detect"))
    out.append(("noise", noise_image(np.random.default_rng(2)), 20e6, base, "detect"))
    for i, image in enumerate(rich):
        out.append((f"rich{i}", image, 20e6, base, "detect"))
    out.append(("rich0_50M", rich[0], 50e6, base, "detect"))
    out.append(("rich1_2M4", rich[1], 2.4e6, base, "detect"))  # 4.4 rows per slice: the long running mean
    out.append(("rich2_250k", rich[2], 250e3, base, "detect"))
    out.append(("rich0_otsu", rich[0], 20e6, EnergyOptions(method="otsu"), "detect"))
    out.append(("rich1_no_carriers", rich[1], 20e6, EnergyOptions(carrier_fraction=1.0), "detect"))
    out.append(
        ("rich2_no_trains", rich[2], 20e6, EnergyOptions(train_gap_slices=0.0, edge_fraction=0.0), "detect")
    )
    out.append(
        ("rich0_grow_above_seed", rich[0], 20e6, EnergyOptions(seed_sigma=2.0, grow_sigma=3.0), "detect")
    )
    repeated = np.repeat(rich[1][::4], 4, axis=0)  # rows repeated as at a low sample rate
    out.append(("repeated_measured", repeated, 2.4e6, base, "propose"))
    return out


def run(name: str, image: np.ndarray, rate: float, options: EnergyOptions, mode: str) -> dict:
    # the raw detector: its calibration (a fitted file that changes on refits) is tested in test_energy
    det = EnergyDetector("energy", dataclasses.replace(options, calibration="none"))
    frame = make_frame(image, rate=rate)
    if mode == "detect":
        found = det.detect(frame)
        boxes = [[d.x0, d.y0, d.x1, d.y1] for d in found]
        scores = [d.score for d in found]
    else:  # propose with rows_per_slice measured from the image (the training data's path)
        b, s = det.propose(image, 512.0, None)
        boxes, scores = b.tolist(), s.tolist()
    return {"boxes": boxes, "scores": scores}


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("scene", scenes(), ids=lambda s: s[0])
def test_energy_detections_match_the_golden_file(scene, golden):
    name = scene[0]
    got, want = run(*scene), golden[name]
    assert len(want["boxes"]) > 0 or name == "noise"
    assert got["boxes"] == want["boxes"]
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-12, atol=0)


if __name__ == "__main__" and "--regenerate" in sys.argv:
    GOLDEN.write_text(json.dumps({s[0]: run(*s) for s in scenes()}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
