"""The narrowband IQ classifier on real synthesiser waveforms, and its place in the two-stage detector."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import rfstream
from rfstream.config import SpectrogramConfig
from rfstream.detect.base import parse_options
from rfstream.detect.energy import EnergyProposer
from rfstream.detect.narrowband import (
    WIDE_CLASSES,
    NarrowbandClassifier,
    NarrowbandModel,
    NarrowbandOptions,
    channel,
    wideband_classifier,
    wideband_model,
)
from rfstream.detect.two_stage import TwoStageDetector, TwoStageOptions
from rfstream.dsp.spectrogram import Spectrogrammer
from rfstream.errors import ConfigError, ModelError
from rfstream.sources.synth import render_capture
from rfstream.types import Chunk

LIMIT_HZ = 40e3
SEEDS = range(7000, 7006)  # neither training (1000-1999) nor evaluation (1-99) seeds


def capture(kind: str, seed: int, fs: float, duration_s: float = 0.4) -> tuple[np.ndarray, list]:
    """A synthesiser capture holding one transmitter of ``kind`` at 15-25 dB in-band SNR."""
    out = np.zeros(round(duration_s * fs), np.complex64)
    annotations = render_capture(out, fs, seed=seed, kinds=[kind], snr_db_range=(15.0, 25.0))
    return out, annotations


def column_box(a, fs: float) -> list[float]:
    """An annotation as the two-stage detector would box it: widened to whole columns of 1024."""
    df = fs / 1024
    lo = math.floor((a.f_low_hz + fs / 2) / df) * df - fs / 2
    hi = math.ceil((a.f_high_hz + fs / 2) / df) * df - fs / 2
    return [a.sample_start / fs, (a.sample_start + a.sample_count) / fs, lo, hi]


def labelled(kind: str, fs: float, seeds: range = SEEDS, wide: bool = False) -> list[tuple[str, str, float]]:
    """(fine label, predicted class, its probability) for every narrow instance of ``kind`` (``wide``:
    every wide one, through the wide-box classifier)."""
    clf = wideband_classifier() if wide else NarrowbandClassifier()
    out = []
    for seed in seeds:
        iq, annotations = capture(kind, seed, fs)
        chosen = [a for a in annotations if ((b := column_box(a, fs))[3] - b[2] > LIMIT_HZ) == wide]
        if not chosen:
            continue
        probs, _ = clf.classify_boxes(iq, fs, 0.0, 0.0, np.array([column_box(a, fs) for a in chosen]))
        out += [
            (a.fine, clf.classes[int(p.argmax())], float(p.max())) for a, p in zip(chosen, probs, strict=True)
        ]
    return out


@pytest.mark.parametrize("kind", ["tone", "am", "fm", "ook"])
def test_narrow_modulations_are_named_from_the_iq(kind):
    """At 15-25 dB in-band SNR, at 2.4 and 10 MS/s, three in four narrow instances named right.

    Not all: an AM voice channel in a pause between syllables is a carrier, and is called one.
    """
    results = labelled(kind, 2.4e6) + labelled(kind, 10e6)
    assert len(results) >= 6, results
    right = [r for r in results if r[1] == kind and r[2] >= 0.5]  # named, and not by a coin toss
    assert len(right) >= 0.75 * len(results), results


@pytest.mark.parametrize("kind", ["fsk", "psk"])
def test_narrow_fsk_and_psk_are_not_forced_into_the_four(kind):
    results = labelled(kind, 2.4e6, range(7000, 7012)) + labelled(kind, 10e6, range(7000, 7012))
    assert len(results) >= 3, results
    forced = [r for r in results if r[1] != "other" and r[2] >= 0.6]
    assert len(forced) <= 0.2 * len(results), results


def test_noise_alone_gets_no_confident_label():
    fs = 2.4e6
    rng = np.random.default_rng(5)
    iq = ((rng.standard_normal(int(0.3 * fs)) + 1j * rng.standard_normal(int(0.3 * fs))) * 0.7).astype(
        np.complex64
    )
    boxes = np.array([[0.0, 0.3, f, f + 2 * fs / 1024] for f in (-500e3, 0.0, 300e3)])
    probs, snr = NarrowbandClassifier().classify_boxes(iq, fs, 0.0, 0.0, boxes)
    assert (snr < 3.0).all(), snr
    assert (probs[:, :4].max(axis=1) < 0.6).all(), probs


def test_channel_puts_the_box_centre_at_dc():
    fs, f = 1e6, 123e3
    n = np.arange(200_000)
    iq = np.exp(2j * np.pi * (f + 50.0) / fs * n).astype(np.complex64)
    y, fs_out = channel(iq, fs, f, 10e3, 1024)
    spec = np.abs(np.fft.fft(y * np.hanning(len(y))))
    peak_hz = np.fft.fftfreq(len(y), 1 / fs_out)[spec.argmax()]
    assert abs(peak_hz - 50.0) < 2 * fs_out / len(y)
    assert np.abs(y).std() / np.abs(y).mean() < 0.01  # a constant envelope stays constant


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("narrowband_max_width_hz", -1.0),
        ("narrowband_max_boxes", 0),
        ("narrowband_confidence", 1.5),
        ("narrowband", "yes"),
    ],
)
def test_bad_options_are_refused_in_one_line(key, value):
    with pytest.raises(ConfigError) as err:
        parse_options(TwoStageOptions, {key: value}, "detectors.classifier.options")
    message = str(err.value)
    assert f"detectors.classifier.options.{key}" in message and "\n" not in message


def test_a_broken_model_file_is_a_model_error(tmp_path):
    good = NarrowbandModel.load()
    record = good.to_json()
    record["weights"] = record["weights"][:-1]
    path = tmp_path / "nb.json"
    path.write_text(json.dumps(record))
    with pytest.raises(ModelError, match="IQ classifier model"):
        NarrowbandModel.load(path)
    with pytest.raises(ModelError, match="cannot read"):
        NarrowbandModel.load(tmp_path / "absent.json")
    with pytest.raises(ConfigError, match=r"narrowband\.max_samples"):
        NarrowbandClassifier(NarrowbandOptions(max_samples=8), good)


def two_stage_found(frame, **options) -> list:
    """What the shipped two-stage detector finds in ``frame`` with these options (no threshold)."""
    det = TwoStageDetector(
        "ts",
        EnergyProposer(),
        Path(rfstream.__file__).parent / "models" / "crop_classifier.onnx",
        options=TwoStageOptions(providers="cpu", threads=1, **options),
        score_threshold=0.0,
    )
    found = det.detect(frame)
    det.close()
    return found


def test_two_stage_names_an_am_carrier_from_its_iq():
    """The shipped crop classifier sees a narrow stripe; with the IQ the two-stage detector says am."""
    fs = 10e6
    for seed in SEEDS:
        iq, annotations = capture("am", seed, fs, duration_s=0.2)
        if annotations and annotations[0].sample_count == len(iq) and annotations[0].snr_db >= 18:
            break
    else:
        pytest.skip("no strong continuous AM carrier among the seeds")
    am = annotations[0]
    chunk = Chunk(iq=iq, sample_rate_hz=fs, center_freq_hz=0.0, start_sample=0, seq=0, arrived_ns=0)
    frame = Spectrogrammer(SpectrogramConfig(backend="numpy")).process(chunk)

    def labels(narrowband: bool) -> list[str]:
        found = two_stage_found(frame, narrowband=narrowband)
        return [d.label for d in found if d.f_low_hz < am.f_high_hz and d.f_high_hz > am.f_low_hz]

    with_iq, crops_only = labels(True), labels(False)
    assert with_iq and all(label == "am" for label in with_iq), (with_iq, crops_only)
    assert crops_only and "am" not in crops_only  # the crop classifier alone cannot tell


# --- wide boxes (two-stage step 5) ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fsk", "psk", "ofdm", "chirp"])
def test_wide_modulations_are_named_from_the_iq(kind):
    """At 15-25 dB in-band SNR, at 10 MS/s, most wide instances of each family named right."""
    results = labelled(kind, 10e6, range(7000, 7012), wide=True)
    assert len(results) >= 6, results
    right = [r for r in results if r[1] == kind and r[2] >= 0.5]
    assert len(right) >= 0.7 * len(results), results


def test_wide_noise_gets_no_confident_label():
    fs = 10e6
    rng = np.random.default_rng(6)
    n = int(0.2 * fs)
    iq = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * 0.7).astype(np.complex64)
    boxes = np.array([[0.0, 0.2, f, f + 200e3] for f in (-3e6, 0.5e6, 2e6)])
    probs, snr = wideband_classifier().classify_boxes(iq, fs, 0.0, 0.0, boxes)
    assert (snr < 3.0).all(), snr
    assert np.allclose(probs, 1.0 / len(WIDE_CLASSES)), probs


def test_the_wide_model_file_must_be_the_wide_model(tmp_path):
    """The narrow model is not a wide one: loading it as such is a one-line ModelError."""
    from rfstream.detect.narrowband import DEFAULT_MODEL

    with pytest.raises(ModelError, match="classes/features"):
        wideband_model(DEFAULT_MODEL)
    assert wideband_model().classes == WIDE_CLASSES


def test_two_stage_names_wide_bursts_from_their_iq():
    """With the wide IQ stage, the two-stage detector's wide boxes on PSK bursts say psk, and say
    where the label came from; without it the crops alone decide (and the label is theirs)."""
    fs = 10e6
    spectrogrammer = Spectrogrammer(SpectrogramConfig(backend="numpy"))

    on_psk, sources = [], set()
    for seed in range(7000, 7012):
        iq, annotations = capture("psk", seed, fs, duration_s=0.2)
        wide = [a for a in annotations if a.f_high_hz - a.f_low_hz > 2 * LIMIT_HZ]
        if not wide:
            continue
        chunk = Chunk(iq=iq, sample_rate_hz=fs, center_freq_hz=0.0, start_sample=0, seq=0, arrived_ns=0)
        frame = spectrogrammer.process(chunk)
        for d in two_stage_found(frame, wideband=True):
            if d.f_high_hz - d.f_low_hz > LIMIT_HZ and any(
                d.f_low_hz < a.f_high_hz and d.f_high_hz > a.f_low_hz for a in wide
            ):
                on_psk.append(d.label)
                sources.add(d.label_source)
        assert all(d.label_source == "" for d in two_stage_found(frame, wideband=False))
    assert len(on_psk) >= 4, on_psk
    assert on_psk.count("psk") >= 0.7 * len(on_psk), on_psk
    assert "iq" in sources
