"""Configuration: precedence, validation, and the shipped file documenting every key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rfstream.config import Config, load_config, to_tree
from rfstream.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[1] / "config" / "rfstream.toml"


def test_shipped_file_documents_every_key_at_its_default():
    text = SHIPPED.read_text()
    defaults = Config()
    for section in ("source", "spectrogram", "merge", "tracker", "publish", "runtime"):
        for f in dataclasses.fields(getattr(defaults, section)):
            assert f"\n{f.name} = " in text, f"{section}.{f.name} is not documented in {SHIPPED.name}"
    loaded = load_config(SHIPPED, environ={})
    for section in ("source", "spectrogram", "merge", "tracker", "publish", "runtime"):
        assert getattr(loaded, section) == getattr(defaults, section), section
    assert loaded.detectors == defaults.detectors


def test_precedence_defaults_file_env_flags(tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("[spectrogram]\nnfft = 2048\nhop = 512\n[runtime]\ndeadline_ms = 300\n")
    env = {"RFSTREAM_SPECTROGRAM__HOP": "1024", "RFSTREAM_RUNTIME__DEADLINE_MS": "250"}
    cfg = load_config(cfg_file, environ=env, overrides={"runtime.deadline_ms": "200"})
    assert cfg.spectrogram.nfft == 2048  # file
    assert cfg.spectrogram.hop == 1024  # env beats file
    assert cfg.runtime.deadline_ms == 200.0  # flag beats env
    assert cfg.spectrogram.width == 1024  # default


def test_config_from_environment_variable_path(tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("[merge]\niou_threshold = 0.3\n")
    assert load_config(environ={"RFSTREAM_CONFIG": str(cfg_file)}).merge.iou_threshold == 0.3


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[spectrogram]\nnfftt = 1\n", "spectrogram.nfftt"),
        ("[spectrogramm]\n", "spectrogramm"),
        ("[spectrogram]\nnfft = 'big'\n", "spectrogram.nfft"),
        ("[spectrogram]\nnfft = 0\n", "spectrogram.nfft"),
        ("[spectrogram]\nnfft = 1024\nhop = 2048\n", "spectrogram.hop"),
        ("[source]\nkind = 'tape'\n", "source.kind"),
        ("[merge]\niou_threshold = 1.5\n", "merge.iou_threshold"),
        ("[[detectors]]\nname = 'a'\nkind = 'magic'\n", "detectors.0.kind"),
        ("[[detectors]]\nname = 'a'\n[[detectors]]\nname = 'a'\n", "detectors.1.name"),
        ("[[detectors]]\nname = 'a'\nthreshold = 1\n", "detectors.0.threshold"),
        ("[runtime]\nmetrics_endpoint = 'nowhere'\n", "runtime.metrics_endpoint"),
        ("not toml at all [", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path, toml, key):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert key in str(err.value)
    assert "\n" not in str(err.value)


def test_environment_keys_must_name_section_and_key():
    with pytest.raises(ConfigError, match="RFSTREAM_NFFT"):
        load_config(environ={"RFSTREAM_NFFT": "1"})
    assert load_config(environ={"RFSTREAM_MODEL_DIR": "/models"}) == load_config(environ={})


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_detector_overrides_and_round_trip():
    cfg = load_config(
        environ={}, overrides={"detectors.0.options.seed_sigma": "4.5", "detectors.0.priority": "3"}
    )
    assert cfg.detectors[0].options == {"seed_sigma": 4.5}
    assert cfg.detectors[0].priority == 3
    tree = to_tree(cfg)
    assert tree["detectors"][0]["priority"] == 3


@pytest.mark.parametrize("name", ["jetson.toml", "workstation.toml"])
def test_hardware_profiles_are_valid(name):
    cfg = load_config(SHIPPED.parent / name, environ={})
    assert cfg.source.kind == "soapy"
    assert [d.name for d in cfg.detectors] == ["energy", "frame", "classifier"]
