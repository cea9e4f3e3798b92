"""build_detectors: config records -> warmed-up detectors; bad models are one clear ModelError."""

from __future__ import annotations

import pytest
from test_onnx_tiny import crop_classifier, frame_detector, make_frame, noise_image

from rfstream.config import DetectorConfig, SpectrogramConfig
from rfstream.detect.energy import EnergyDetector
from rfstream.detect.fanout import FanOut
from rfstream.detect.ort import OnnxFrameDetector
from rfstream.detect.registry import build_detectors
from rfstream.detect.two_stage import TwoStageDetector
from rfstream.dsp.backend import numpy_backend
from rfstream.errors import ConfigError, ModelError

SPEC = SpectrogramConfig(height=64, width=64)


@pytest.fixture
def model_dir(tmp_path):
    frame_detector(tmp_path / "tiny_fd.onnx")
    crop_classifier(tmp_path / "tiny_cc.onnx")
    return tmp_path


def test_builds_every_kind_from_config(model_dir):
    cfgs = [
        DetectorConfig(name="energy", kind="energy", priority=9),
        DetectorConfig(name="fd", kind="onnx", model="tiny_fd", options={"providers": "cpu", "threads": 1}),
        DetectorConfig(
            name="ts",
            kind="two_stage",
            model="tiny_cc",
            labels=("tone", "fsk"),
            options={"providers": "cpu", "energy": {"seed_sigma": 4.0}},
        ),
        DetectorConfig(name="off", kind="onnx", model="missing", enabled=False),
    ]
    dets = build_detectors(cfgs, SPEC, backend=numpy_backend(), config_dir=model_dir)
    assert [type(d) for d in dets] == [EnergyDetector, OnnxFrameDetector, TwoStageDetector]
    assert dets[2].energy.options.seed_sigma == 4.0 and dets[2].labels_kept == {"tone", "fsk"}
    assert dets[2].energy is not dets[0].proposer  # other energy settings: a proposer of its own
    image = noise_image()
    image[8:24, 16:32] = 1.0
    with FanOut(dets) as fan:
        results, _ = fan.run(make_frame(image))
    assert [d.label for d in results["fd"]] == ["tone"]
    assert [d.label for d in results["ts"]] == ["tone"]


def test_energy_and_two_stage_with_equal_settings_share_one_proposer(model_dir):
    cfgs = [
        DetectorConfig(name="energy", kind="energy", score_threshold=0.4),
        DetectorConfig(name="ts", kind="two_stage", model="tiny_cc", options={"providers": "cpu"}),
        DetectorConfig(name="ts2", kind="two_stage", model="tiny_cc", options={"energy": {"hop": 2048}}),
    ]
    energy, ts, ts2 = build_detectors(cfgs, SPEC, backend=numpy_backend(), config_dir=model_dir)
    # The spectrogram's hop is the default geometry, so stating it explicitly changes nothing.
    assert ts.energy is energy.proposer and ts2.energy is energy.proposer
    assert energy.score_threshold == 0.4


def test_the_energy_detector_takes_the_spectrograms_geometry(model_dir):
    spec = SpectrogramConfig(height=64, width=64, nfft=256, hop=128, dynamic_range_db=60.0)
    (energy,) = build_detectors([DetectorConfig(name="energy", kind="energy")], spec, config_dir=model_dir)
    assert (energy.options.hop, energy.options.dynamic_range_db) == (128, 60.0)


def test_kind_tensorrt_without_engine_runs_the_onnx_file(model_dir):
    (det,) = build_detectors(
        [DetectorConfig(name="trt", kind="tensorrt", model="tiny_fd")], SPEC, config_dir=model_dir
    )
    assert isinstance(det, OnnxFrameDetector)


def test_missing_model_names_detector_and_paths(model_dir):
    cfg = DetectorConfig(name="fd", kind="onnx", model="nothere")
    with pytest.raises(ModelError) as info:
        build_detectors([cfg], SPEC, config_dir=model_dir)
    msg = str(info.value)
    assert msg.startswith("detector 'fd': model 'nothere' not found; tried:")
    assert str(model_dir / "nothere.onnx") in msg and "\n" not in msg


def test_mismatched_model_and_bad_options(model_dir):
    with pytest.raises(
        ModelError, match=r"detector 'fd': model .* expects 64x64 frames but the spectrogram makes 1024x1024"
    ):
        build_detectors(
            [DetectorConfig(name="fd", kind="onnx", model="tiny_fd")],
            SpectrogramConfig(),
            config_dir=model_dir,
        )
    with pytest.raises(ModelError, match=r"detector 'fd': .*cannot produce the kept label"):
        build_detectors(
            [DetectorConfig(name="fd", kind="onnx", model="tiny_fd", labels=("ofdm",))],
            SPEC,
            config_dir=model_dir,
        )
    with pytest.raises(ConfigError, match=r"detectors.fd.options.thread'.*did you mean 'threads'"):
        build_detectors(
            [DetectorConfig(name="fd", kind="onnx", model="tiny_fd", options={"thread": 2})],
            SPEC,
            config_dir=model_dir,
        )
    with pytest.raises(ConfigError, match=r"detectors.ts.options.energy.seed'"):
        build_detectors(
            [DetectorConfig(name="ts", kind="two_stage", model="tiny_cc", options={"energy": {"seed": 1}})],
            SPEC,
            config_dir=model_dir,
        )
    with pytest.raises(ConfigError, match=r"detectors.fd.model': kind 'onnx' needs a model"):
        build_detectors([DetectorConfig(name="fd", kind="onnx")], SPEC, config_dir=model_dir)


def test_corrupt_model_in_config(model_dir):
    (model_dir / "bad.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelError, match=r"detector 'fd': model .*bad.onnx"):
        build_detectors([DetectorConfig(name="fd", kind="onnx", model="bad")], SPEC, config_dir=model_dir)


def test_torchscript_model_with_sidecar(tmp_path):
    torch = pytest.importorskip("torch")
    import json

    from test_onnx_tiny import FRAME_LABELS, props

    from rfstream.detect.models import sidecar_path
    from rfstream.detect.torch_backend import TorchFrameDetector

    class Tiny(torch.nn.Module):
        def forward(self, x):
            obj = torch.nn.functional.avg_pool2d(x, 4)
            logits = torch.cat([20 * obj - 10, 10 - 20 * obj], dim=1)
            return obj, torch.softmax(logits, dim=1)

    path = tmp_path / "tiny_pt.pt"
    torch.jit.script(Tiny()).save(str(path))
    meta = {
        "metadata": props("frame_detector", FRAME_LABELS, (64, 64), decoder={"stride": 4, "refine": False})
    }
    sidecar_path(path).write_text(json.dumps(meta))
    (det,) = build_detectors(
        [DetectorConfig(name="pt", kind="torch", model="tiny_pt")], SPEC, config_dir=tmp_path
    )
    assert isinstance(det, TorchFrameDetector)
    image = noise_image()
    image[8:24, 16:32] = 0.9
    found = det.detect(make_frame(image))
    assert [(d.x0, d.y0, d.x1, d.y1, d.label) for d in found] == [(16.0, 8.0, 32.0, 24.0, "tone")]
    (tmp_path / "broken.pt").write_bytes(b"not a zip")
    sidecar_path(tmp_path / "broken.pt").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"detector 'b': model .*broken.pt is not a loadable TorchScript"):
        build_detectors([DetectorConfig(name="b", kind="torch", model="broken")], SPEC, config_dir=tmp_path)
