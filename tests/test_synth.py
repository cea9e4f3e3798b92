"""The synthesiser: determinism, valid SigMF, every label present, and signals where the annotations say."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import sigmf
from sigmf import sigmffile

from rfstream.errors import InputError
from rfstream.labels import LABELS
from rfstream.sources.base import Source
from rfstream.sources.sigmf import SigMFSource, read_annotations
from rfstream.sources.synth import FINE_LABELS, KINDS, SynthSource, synthesize

RATE = 2e6
CENTER = 915e6


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    """2 s at 2 MS/s with every kind of signal, ideal waveforms in white noise (no channel effects)."""
    return synthesize(
        tmp_path_factory.mktemp("synth") / "cap",
        sample_rate_hz=RATE,
        duration_s=2.0,
        seed=19,
        center_freq_hz=CENTER,
        realism="clean",
        density="medium",
    )


def _doc(meta: Path) -> dict:
    return json.loads(meta.read_text())


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kw = {"sample_rate_hz": 500e3, "duration_s": 0.5}
    a = synthesize(tmp_path / "a", seed=3, **kw)
    b = synthesize(tmp_path / "b", seed=3, **kw)
    c = synthesize(tmp_path / "c", seed=4, **kw)
    data = {p: p.with_suffix(".sigmf-data").read_bytes() for p in (a, b, c)}
    assert len(data[a]) == 250_000 * 8
    assert data[a] == data[b]
    assert a.read_text() == b.read_text()
    assert data[a] != data[c]
    assert _doc(a)["annotations"] != _doc(c)["annotations"]


def test_output_is_valid_sigmf_and_written_atomically(capture):
    siblings = sorted(p.name for p in capture.parent.iterdir())
    assert siblings == ["cap.sigmf-data", "cap.sigmf-meta"]  # no temporary files left behind
    rec = sigmffile.fromfile(capture)
    rec.validate()  # the sigmf library's schema check
    sigmf.validate.validate(_doc(capture))
    assert rec.get_global_field("core:datatype") == "cf32_le"
    assert rec.get_global_field("core:sample_rate") == RATE
    assert rec.sample_count == int(2.0 * RATE)
    assert rec.get_captures()[0]["core:frequency"] == CENTER
    assert "core:dataset" not in rec.get_global_info()


def test_every_label_is_annotated_inside_the_band(capture):
    anns = _doc(capture)["annotations"]
    counts = Counter(a["core:label"] for a in anns)
    assert set(counts) == set(KINDS) == set(LABELS) - {"unknown"}
    assert counts["fsk"] >= 3  # a hopper's many short bursts, or a few packets on one channel
    assert counts["ofdm"] >= 1
    # every annotation names its waveform (the fine label) beside its family
    fine = {a["core:label"]: set() for a in anns}
    for a in anns:
        fine[a["core:label"]].add(a["rfstream:modulation"])
    assert all(f <= set(FINE_LABELS[label]) for label, f in fine.items()), fine
    n = int(2.0 * RATE)
    for a in anns:
        assert 0 <= a["core:sample_start"] < a["core:sample_start"] + a["core:sample_count"] <= n
        assert CENTER - RATE / 2 <= a["core:freq_lower_edge"] < a["core:freq_upper_edge"] <= CENTER + RATE / 2
        assert 3.0 <= a["rfstream:snr_db"] <= 30.0
        if a["core:label"] in ("fsk", "ofdm"):
            assert a["core:sample_count"] >= 0.0009 * RATE  # bursts span several spectrogram rows
    longest = max(a["core:sample_count"] for a in anns)
    assert longest == n  # some signals span the whole capture


def test_annotated_signals_are_where_the_annotations_say(capture):
    """In-band power over each annotated box matches 1 + SNR (in-band SNR over the 99 % bandwidth)."""
    doc = _doc(capture)
    anns = doc["annotations"]
    data = np.memmap(capture.with_suffix(".sigmf-data"), dtype="<c8", mode="r")

    def overlaps(a, b):
        a0, a1 = a["core:sample_start"], a["core:sample_start"] + a["core:sample_count"]
        b0, b1 = b["core:sample_start"], b["core:sample_start"] + b["core:sample_count"]
        return (
            a0 < b1
            and b0 < a1
            and a["core:freq_lower_edge"] < b["core:freq_upper_edge"]
            and (b["core:freq_lower_edge"] < a["core:freq_upper_edge"])
        )

    checked = Counter()
    for a in anns:
        if a["rfstream:snr_db"] < 10 or any(overlaps(a, b) for b in anns if b is not a):
            continue
        start, count = a["core:sample_start"], min(a["core:sample_count"], 1 << 20)
        x = np.asarray(data[start : start + count], dtype=np.complex128)
        spec = np.fft.fftshift(np.abs(np.fft.fft(x)) ** 2) / count**2  # mean power per bin
        freqs = np.fft.fftshift(np.fft.fftfreq(count, 1 / RATE)) + CENTER
        lo, hi = a["core:freq_lower_edge"], a["core:freq_upper_edge"]
        inside = spec[(freqs >= lo) & (freqs < hi)].sum()
        noise = (hi - lo) / RATE  # unit noise power per sample, spread over the band
        snr = 10 ** (a["rfstream:snr_db"] / 10)
        expected = 1 + 0.99 * snr * max(hi - lo, RATE / 4096) / (hi - lo)
        assert 0.6 * expected < inside / noise < 1.5 * expected, a
        checked[a["core:label"]] += 1
    assert sum(checked.values()) >= 10
    assert len(checked) >= 4, checked


def test_noise_floor_is_unit_power(tmp_path):
    meta = synthesize(
        tmp_path / "quiet", sample_rate_hz=100e3, duration_s=0.5, num_signals=0, realism="clean"
    )
    assert _doc(meta)["annotations"] == []
    x = np.fromfile(meta.with_suffix(".sigmf-data"), dtype="<c8")
    assert np.mean(np.abs(x) ** 2) == pytest.approx(1.0, rel=0.02)
    assert abs(np.mean(x)) < 0.01


def test_num_signals_counts_transmitters(tmp_path):
    meta = synthesize(tmp_path / "two", sample_rate_hz=500e3, duration_s=1.0, num_signals=2, seed=2)
    labels = {a["core:label"] for a in _doc(meta)["annotations"]}
    assert labels <= set(KINDS[:2])
    assert labels


def test_replay_and_read_annotations_agree(tmp_path):
    meta = synthesize(tmp_path / "r", sample_rate_hz=1e6, duration_s=0.6, seed=5, center_freq_hz=2.44e9)
    src = SigMFSource(meta, chunk_ms=200.0)
    chunks = list(src)
    assert [c.num_samples for c in chunks] == [200_000] * 3
    assert chunks[0].center_freq_hz == 2.44e9
    assert chunks[0].start_time_utc is not None
    truth = read_annotations(meta)
    raw = _doc(meta)["annotations"]
    assert len(truth) == len(raw) > 0
    for t, a in zip(truth, raw, strict=True):
        assert t.t_start_s == pytest.approx(a["core:sample_start"] / 1e6)
        assert t.label == t.raw_label == a["core:label"]
        assert t.snr_db == a["rfstream:snr_db"]


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        synthesize(tmp_path / "no" / "such" / "dir", duration_s=0.1)
    with pytest.raises(InputError, match="sample rate"):
        synthesize(tmp_path / "x", sample_rate_hz=0)
    with pytest.raises(InputError, match="duration"):
        synthesize(tmp_path / "x", duration_s=-1)
    assert list(tmp_path.iterdir()) == []


def test_overwrites_an_existing_pair(tmp_path):
    first = synthesize(tmp_path / "o", sample_rate_hz=100e3, duration_s=0.2, seed=1)
    again = synthesize(tmp_path / "o.sigmf-meta", sample_rate_hz=100e3, duration_s=0.3, seed=2)
    assert again == first
    assert (tmp_path / "o.sigmf-data").stat().st_size == 30_000 * 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.sigmf-data", "o.sigmf-meta"]


# --- the endless benchmark source ---------------------------------------------------------------------


def test_synth_source_is_endless_and_cheap_per_chunk():
    src = SynthSource(1e6, chunk_ms=50.0, seed=1, buffer_s=0.2)
    assert isinstance(src, Source)
    assert src.info.total_samples is None
    it = iter(src)
    chunks = [next(it) for _ in range(10)]
    assert [c.seq for c in chunks] == list(range(10))
    assert [c.start_sample for c in chunks] == [50_000 * i for i in range(10)]
    assert all(c.num_samples == 50_000 and c.iq.dtype == np.complex64 for c in chunks)
    np.testing.assert_array_equal(chunks[4].iq, chunks[0].iq)  # a 4-chunk buffer, cycled
    assert not np.array_equal(chunks[1].iq, chunks[0].iq)
    assert not chunks[0].iq.flags.writeable  # shared buffer: stages must copy to modify
    t0 = time.perf_counter()
    for _ in range(200):
        next(it)
    assert time.perf_counter() - t0 < 0.5  # no generation per chunk
    p = np.mean(np.abs(chunks[0].iq) ** 2)
    assert p > 1.0  # noise plus signals


def test_synth_source_realtime_and_close():
    src = SynthSource(100e3, chunk_ms=100.0, realtime=True, buffer_s=0.2)
    threading.Timer(0.35, src.close).start()
    t0 = time.monotonic()
    n = sum(1 for _ in src)
    elapsed = time.monotonic() - t0
    assert 2 <= n <= 4  # about one chunk per 100 ms
    assert elapsed < 0.6
