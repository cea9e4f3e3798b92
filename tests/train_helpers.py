"""Small labelled SigMF recordings for the training tests (made here, not by the synthesizer)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rfstream.config import SpectrogramConfig

RATE = 1_000_000.0
CENTER = 100e6
SMALL = SpectrogramConfig(nfft=512, hop=256, height=128, width=128)


def write_recording(base: Path, *, seed: int, duration_s: float = 0.4) -> Path:
    """A recording with one strong tone (whole duration) and one FSK-like burst; returns the meta path."""
    rng = np.random.default_rng(seed)
    n = int(RATE * duration_s)
    t = np.arange(n) / RATE
    noise = (rng.normal(size=n) + 1j * rng.normal(size=n)) * np.sqrt(0.5)
    tone_hz = float(rng.uniform(-400e3, -250e3))
    iq = noise + 10.0 * np.exp(2j * np.pi * tone_hz * t)
    b0, b1 = int(n * 0.1), int(n * 0.35)
    burst_hz = float(rng.uniform(100e3, 300e3))
    bits = rng.integers(0, 2, (b1 - b0) // 200 + 1).repeat(200)[: b1 - b0]
    inst = burst_hz + (bits * 2 - 1) * 20e3
    iq[b0:b1] += 10.0 * np.exp(2j * np.pi * np.cumsum(inst) / RATE)
    base.parent.mkdir(parents=True, exist_ok=True)
    iq.astype(np.complex64).tofile(f"{base}.sigmf-data")
    meta = {
        "global": {"core:datatype": "cf32_le", "core:sample_rate": RATE, "core:version": "1.0.0"},
        "captures": [{"core:sample_start": 0, "core:frequency": CENTER}],
        "annotations": [
            {
                "core:sample_start": 0,
                "core:sample_count": n,
                "core:freq_lower_edge": CENTER + tone_hz - 4e3,
                "core:freq_upper_edge": CENTER + tone_hz + 4e3,
                "core:label": "carrier",
            },
            {
                "core:sample_start": b0,
                "core:sample_count": b1 - b0,
                "core:freq_lower_edge": CENTER + burst_hz - 30e3,
                "core:freq_upper_edge": CENTER + burst_hz + 30e3,
                "core:label": "my-burst",
            },
        ],
    }
    path = Path(f"{base}.sigmf-meta")
    path.write_text(json.dumps(meta), encoding="utf-8")
    return path
