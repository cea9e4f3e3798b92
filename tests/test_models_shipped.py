"""The packaged models (rfstream/models/*.onnx) load, match the default config and run on a real frame.

Skips while the training work has not shipped them yet.
"""

from __future__ import annotations

import numpy as np
import pytest

from rfstream.config import DetectorConfig, SpectrogramConfig
from rfstream.detect.models import check_compatible, packaged_model_dir, read_metadata
from rfstream.detect.registry import build_detectors
from rfstream.dsp.spectrogram import Spectrogrammer
from rfstream.types import Chunk

SHIPPED = sorted(packaged_model_dir().glob("*.onnx"))
pytestmark = pytest.mark.skipif(not SHIPPED, reason="no packaged models in rfstream/models/ yet")


def real_frame():
    rate, n = 20e6, 4_000_000
    rng = np.random.default_rng(7)
    iq = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)).astype(np.complex64)
    t = np.arange(n) / rate
    iq[n // 4 : n // 2] += (10 * np.exp(2j * np.pi * 3e6 * t[n // 4 : n // 2])).astype(np.complex64)
    chunk = Chunk(iq=iq, sample_rate_hz=rate, center_freq_hz=915e6, start_sample=0, seq=0, arrived_ns=0)
    return Spectrogrammer(SpectrogramConfig()).process(chunk)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_model_metadata_matches_defaults(path):
    meta = read_metadata(path)
    check_compatible(meta, SpectrogramConfig())


def test_shipped_models_run_through_the_registry():
    kinds = {read_metadata(p).task: p for p in SHIPPED}
    cfgs = []
    if "frame_detector" in kinds:
        cfgs.append(DetectorConfig(name="frame", kind="onnx", model=kinds["frame_detector"].stem))
    if "crop_classifier" in kinds:
        cfgs.append(DetectorConfig(name="two", kind="two_stage", model=kinds["crop_classifier"].stem))
    detectors = build_detectors(cfgs, SpectrogramConfig())
    frame = real_frame()
    for det in detectors:
        found = det.detect(frame)
        assert all(0 <= d.score <= 1 and d.f_low_hz < d.f_high_hz for d in found)
