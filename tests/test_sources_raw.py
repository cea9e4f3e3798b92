"""Raw IQ files (rtl_sdr, hackrf_transfer, GNU Radio) and the open_source factory."""

from __future__ import annotations

import numpy as np
import pytest

from rfstream.config import SourceConfig
from rfstream.errors import InputError
from rfstream.sources import open_source
from rfstream.sources.raw import EXTENSION_DATATYPES, RawSource, parse_datatype
from rfstream.sources.sigmf import SigMFSource


def _tones(n: int) -> np.ndarray:
    k = np.arange(n)
    return 0.7 * np.exp(2j * np.pi * 0.05 * k)


def _write(path, values: np.ndarray, datatype: str) -> np.ndarray:
    """Store ``values`` as a receiver tool would; return what rfstream must read back."""
    if datatype == "cf32_le":
        path.write_bytes(values.astype("<c8").tobytes())
        return values.astype(np.complex64)
    if datatype == "cu8":  # rtl_sdr: offset binary around 127.5
        codes = np.clip(np.round(np.stack([values.real, values.imag], 1) * 127.5 + 127.5), 0, 255)
        path.write_bytes(codes.astype(np.uint8).tobytes())
        return ((codes[:, 0] - 127.5) + 1j * (codes[:, 1] - 127.5)) / 127.5
    bits = 8 if datatype == "ci8" else 16
    full = 2 ** (bits - 1)
    codes = np.clip(np.round(np.stack([values.real, values.imag], 1) * full), -full, full - 1)
    path.write_bytes(codes.astype(f"<i{bits // 8}").tobytes())
    return (codes[:, 0] + 1j * codes[:, 1]) / full


@pytest.mark.parametrize(
    ("name", "datatype"),
    [
        ("rtl.cu8", "cu8"),
        ("hackrf.cs8", "ci8"),
        ("sdr.cs16", "ci16_le"),
        ("gr.cf32", "cf32_le"),
        ("gr.cfile", "cf32_le"),
    ],
)
def test_raw_files_by_extension(tmp_path, name, datatype):
    assert EXTENSION_DATATYPES[name[name.index(".") :]] == datatype
    values = _tones(1500)
    expected = _write(tmp_path / name, values, datatype)
    src = RawSource(tmp_path / name, sample_rate_hz=10e3, center_freq_hz=433.92e6, chunk_ms=50.0)
    assert src.info.total_samples == 1500
    assert src.info.start_time_utc is None
    chunks = list(src)
    assert [c.num_samples for c in chunks] == [500, 500, 500]
    assert [c.start_sample for c in chunks] == [0, 500, 1000]
    assert all(c.center_freq_hz == 433.92e6 and c.start_time_utc is None for c in chunks)
    iq = np.concatenate([c.iq for c in chunks])
    np.testing.assert_allclose(iq, expected, atol=1e-7)
    # and the quantised copy is close to the original tone
    np.testing.assert_allclose(iq, values, atol=2.0 / (2 ** (8 if "8" in datatype else 15)) + 1e-6)


def test_explicit_datatype_overrides_the_extension(tmp_path):
    path = tmp_path / "capture.bin"
    expected = _write(path, _tones(100), "ci16_le")
    with pytest.raises(InputError, match=r"capture\.bin: cannot tell the datatype .*--datatype"):
        RawSource(path, sample_rate_hz=1e3)
    src = RawSource(path, datatype="ci16_le", sample_rate_hz=1e3)
    np.testing.assert_allclose(np.concatenate([c.iq for c in src]), expected, atol=1e-7)


def test_raw_loop_continues_positions(tmp_path):
    path = tmp_path / "x.cs8"
    _write(path, _tones(300), "ci8")
    src = RawSource(path, sample_rate_hz=1e3, chunk_ms=200.0, loop=True)
    assert src.info.total_samples is None
    got = []
    for c in src:
        got.append((c.seq, c.start_sample, c.num_samples))
        if len(got) == 5:
            src.close()
    assert got == [(0, 0, 200), (1, 200, 100), (2, 300, 200), (3, 500, 100), (4, 600, 200)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_rate_hz": 0.0}, "needs a positive sample rate"),
        ({"sample_rate_hz": -1.0}, "needs a positive sample rate"),
        ({"sample_rate_hz": 1e6, "datatype": "rf32_le"}, "real-valued datatype rf32_le is not supported"),
        ({"sample_rate_hz": 1e6, "datatype": "ci12_le"}, "unknown datatype 'ci12_le'"),
    ],
)
def test_raw_bad_arguments(tmp_path, kwargs, message):
    path = tmp_path / "x.cu8"
    path.write_bytes(b"\x80" * 64)
    with pytest.raises(InputError, match=message) as info:
        RawSource(path, **kwargs)
    assert "x.cu8" in str(info.value)


def test_raw_missing_or_empty_file(tmp_path):
    with pytest.raises(InputError, match=r"gone\.cu8 does not exist"):
        RawSource(tmp_path / "gone.cu8", sample_rate_hz=1e6)
    (tmp_path / "empty.cu8").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.cu8 is empty"):
        RawSource(tmp_path / "empty.cu8", sample_rate_hz=1e6)


def test_raw_trailing_partial_sample_is_dropped(tmp_path):
    path = tmp_path / "odd.cs16"
    expected = _write(path, _tones(10), "ci16_le")
    with open(path, "ab") as f:
        f.write(b"\x00\x01\x02")  # 3 of the 4 bytes of an 11th sample
    src = RawSource(path, sample_rate_hz=1e3)
    assert src.info.total_samples == 10
    np.testing.assert_allclose(np.concatenate([c.iq for c in src]), expected, atol=1e-7)


def test_parse_datatype_scaling():
    assert parse_datatype("cu8").center == 127.5
    assert parse_datatype("CI16_LE").scale == 1 / 32768
    assert parse_datatype("cf64_be").map_dtype == np.dtype(">c16")
    with pytest.raises(InputError, match="ri16_le"):
        parse_datatype("ri16_le")


# --- open_source ---------------------------------------------------------------------------------


def test_open_source_dispatches(tmp_path):
    path = tmp_path / "rtl.cu8"
    _write(path, _tones(400), "cu8")
    raw = open_source(
        SourceConfig(kind="raw", path=str(path), sample_rate_hz=2e3, center_freq_hz=1e8, chunk_ms=100)
    )
    assert isinstance(raw, RawSource)
    assert [c.num_samples for c in raw] == [200, 200]
    # a raw file named as a recording is replayed raw when the rate is known ...
    routed = open_source(SourceConfig(kind="sigmf", path=str(path), sample_rate_hz=2e3))
    assert isinstance(routed, RawSource)
    # ... and refused with what to do when it is not
    with pytest.raises(InputError, match="--rate"):
        open_source(SourceConfig(kind="sigmf", path=str(path)))
    with pytest.raises(InputError, match="needs a path"):
        open_source(SourceConfig(kind="sigmf"))
    with pytest.raises(InputError, match="unknown source kind"):
        open_source(SourceConfig(kind="carrier-pigeon"))


def test_open_source_sigmf_and_synth(tmp_path):
    from rfstream.sources.synth import SynthSource, synthesize

    meta = synthesize(tmp_path / "s", sample_rate_hz=200e3, duration_s=0.3, seed=4)
    src = open_source(SourceConfig(kind="sigmf", path=str(meta), chunk_ms=100.0))
    assert isinstance(src, SigMFSource)
    assert [c.num_samples for c in src] == [20_000] * 3
    synth = open_source(SourceConfig(kind="synth", sample_rate_hz=250e3, chunk_ms=40.0))
    assert isinstance(synth, SynthSource)
    assert synth.info.sample_rate_hz == 250e3
    first = next(iter(synth))
    assert first.num_samples == 10_000
    synth.close()
