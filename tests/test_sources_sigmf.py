"""SigMF replay: real recordings written to tmp_path through the sigmf library and raw bytes."""

from __future__ import annotations

import json
import resource
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from sigmf.sigmffile import SigMFFile

from rfstream.errors import InputError
from rfstream.sources.base import Source
from rfstream.sources.sigmf import Annotation, SigMFSource, read_annotations

SHARED_CAPTURES = Path(__file__).resolve().parents[1].parent / "shared" / "captures"

COMPLEX_TYPES = [
    "cf32_le",
    "cf32_be",
    "cf64_le",
    "cf64_be",
    "ci32_le",
    "ci32_be",
    "ci16_le",
    "ci16_be",
    "ci8",
    "cu32_le",
    "cu32_be",
    "cu16_le",
    "cu16_be",
    "cu8",
]


def encode(datatype: str, n: int, seed: int = 0) -> tuple[bytes, np.ndarray]:
    """Known samples in ``datatype``: the bytes to store and the complex values rfstream must return."""
    rng = np.random.default_rng(seed)
    kind, _, endian = datatype.partition("_")
    order = ">" if endian == "be" else "<"
    bits = int(kind[2:])
    if kind[1] == "f":
        values = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * 0.3
        return values.astype(f"{order}c{bits // 4}").tobytes(), values.astype(np.complex64).astype(
            np.complex128
        )
    unsigned = kind[1] == "u"
    info = np.iinfo(f"{'u' if unsigned else 'i'}{bits // 8}")
    codes = rng.integers(int(info.min), int(info.max), size=(n, 2), endpoint=True, dtype=np.int64)
    codes[0] = (info.min, info.max)  # the extremes map onto ±1
    raw = codes.astype(f"{order}{'u' if unsigned else 'i'}{bits // 8}").tobytes()
    if unsigned:
        mid = 2.0 ** (bits - 1) - 0.5
        expected = (codes[:, 0] - mid) / mid + 1j * (codes[:, 1] - mid) / mid
    else:
        expected = (codes[:, 0] + 1j * codes[:, 1]) / 2.0 ** (bits - 1)
    return raw, expected


def write_recording(
    base: Path,
    data: bytes,
    datatype: str,
    *,
    rate: float = 1000.0,
    captures: list[dict] | None = None,
    annotations: list[dict] | None = None,
    **global_fields,
) -> Path:
    """A .sigmf-meta/.sigmf-data pair written by the sigmf library; returns the meta path."""
    data_fn = base.parent / f"{base.name}.sigmf-data"
    data_fn.write_bytes(data)
    meta = SigMFFile(global_info={"core:datatype": datatype, "core:sample_rate": rate, **global_fields})
    meta.set_data_file(data_fn, skip_checksum=True)
    for cap in captures or [{"core:sample_start": 0, "core:frequency": 100e6}]:
        cap = dict(cap)
        meta.add_capture(cap.pop("core:sample_start"), metadata=cap)
    for ann in annotations or []:
        ann = dict(ann)
        meta.add_annotation(ann.pop("core:sample_start"), ann.pop("core:sample_count", None), metadata=ann)
    meta.tofile(base)
    return base.parent / f"{base.name}.sigmf-meta"


def replay(path, **kwargs) -> tuple[list, np.ndarray]:
    src = SigMFSource(path, **kwargs)
    chunks = list(src)
    return chunks, np.concatenate([c.iq for c in chunks])


@pytest.mark.parametrize("datatype", COMPLEX_TYPES)
def test_every_datatype_round_trips(tmp_path, datatype):
    raw, expected = encode(datatype, 1000)
    meta = write_recording(tmp_path / "rec", raw, datatype)
    chunks, iq = replay(meta, chunk_ms=300.0)
    assert iq.dtype == np.complex64
    assert [c.num_samples for c in chunks] == [300, 300, 300, 100]
    np.testing.assert_allclose(iq, expected, rtol=0, atol=2e-7)
    if datatype.startswith(("cu", "ci")):  # the lowest code is exactly -1
        assert iq[0].real == -1.0
    if datatype.startswith("cu"):  # unsigned codes are centred on their midpoint: the highest is +1
        assert abs(iq[0].imag - 1.0) < 1e-6


def test_big_and_little_endian_agree(tmp_path):
    values = np.array([1 + 2j, -32768 + 32767j, 258 - 1j, 0], np.complex128)
    codes = np.stack([values.real, values.imag], axis=1)
    le = write_recording(tmp_path / "le", codes.astype("<i2").tobytes(), "ci16_le")
    be = write_recording(tmp_path / "be", codes.astype(">i2").tobytes(), "ci16_be")
    _, a = replay(le)
    _, b = replay(be)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, values / 32768, atol=1e-7)


def test_data_path_and_archive_give_the_same_samples(tmp_path):
    raw, expected = encode("ci16_le", 2500, seed=3)
    meta_path = write_recording(tmp_path / "rec", raw, "ci16_le", rate=10e3)
    via_data = replay(tmp_path / "rec.sigmf-data")[1]
    np.testing.assert_allclose(via_data, expected, atol=1e-7)
    for suffix in (".sigmf", ".sigmf.gz"):
        meta = SigMFFile(metadata=json.loads(meta_path.read_text()), data_file=tmp_path / "rec.sigmf-data")
        archive = tmp_path / f"arch{suffix}"
        meta.tofile(archive)
        chunks, iq = replay(archive, chunk_ms=100.0)
        np.testing.assert_allclose(iq, expected, atol=1e-7)
        assert [c.num_samples for c in chunks] == [1000, 1000, 500]
        assert chunks[0].center_freq_hz == 100e6


def _multi_capture(tmp_path: Path) -> tuple[Path, np.ndarray]:
    raw, expected = encode("cf32_le", 600, seed=5)
    meta = write_recording(
        tmp_path / "multi",
        raw,
        "cf32_le",
        rate=1000.0,
        captures=[
            {"core:sample_start": 0, "core:frequency": 100e6, "core:datetime": "2024-05-01T12:00:00Z"},
            {
                "core:sample_start": 250,
                "core:frequency": 200e6,
                "core:datetime": "2024-05-01T13:00:00.500000Z",
            },
            {"core:sample_start": 380, "core:frequency": 300e6},  # no datetime: continues the clock
        ],
    )
    return meta, expected


def test_multi_capture_cuts_at_capture_boundaries(tmp_path):
    meta, expected = _multi_capture(tmp_path)
    src = SigMFSource(meta, chunk_ms=100.0)
    assert isinstance(src, Source)
    assert src.info.total_samples == 600
    assert src.info.center_freq_hz == 100e6
    chunks = list(src)
    assert [c.num_samples for c in chunks] == [100, 100, 50, 100, 30, 100, 100, 20]
    assert [c.center_freq_hz for c in chunks] == [100e6] * 3 + [200e6] * 2 + [300e6] * 3
    assert [c.seq for c in chunks] == list(range(8))
    assert [c.start_sample for c in chunks] == [0, 100, 200, 250, 350, 380, 480, 580]
    assert all(c.gap_before_samples == 0 for c in chunks)
    assert sum(c.num_samples for c in chunks) == 600
    np.testing.assert_array_equal(np.concatenate([c.iq for c in chunks]), expected.astype(np.complex64))
    t0 = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    t1 = datetime(2024, 5, 1, 13, 0, 0, 500000, tzinfo=timezone.utc)
    assert [c.start_time_utc for c in chunks[:3]] == [
        t0,
        t0 + timedelta(seconds=0.1),
        t0 + timedelta(seconds=0.2),
    ]
    assert chunks[4].start_time_utc == t1 + timedelta(seconds=0.1)
    assert chunks[5].start_time_utc == t1 + timedelta(seconds=0.13)  # capture 2 continues capture 1's clock
    assert chunks[7].start_time_utc == t1 + timedelta(seconds=0.33)
    assert all(c.arrived_ns > 0 for c in chunks)
    assert [c.arrived_ns for c in chunks] == sorted(c.arrived_ns for c in chunks)


def test_capture_index_selects_one_capture(tmp_path):
    meta, expected = _multi_capture(tmp_path)
    chunks, iq = replay(meta, chunk_ms=100.0, capture_index=1)
    assert [(c.start_sample, c.num_samples, c.center_freq_hz) for c in chunks] == [
        (250, 100, 200e6),
        (350, 30, 200e6),
    ]
    assert chunks[0].gap_before_samples == 250  # the samples before it were not delivered
    assert chunks[0].seq == 0
    np.testing.assert_array_equal(iq, expected[250:380].astype(np.complex64))
    with pytest.raises(InputError, match="capture 3 does not exist"):
        SigMFSource(meta, capture_index=3)


def test_global_index_jump_and_late_first_capture_are_gaps(tmp_path):
    raw, expected = encode("ci8", 500, seed=7)
    meta = write_recording(
        tmp_path / "gappy",
        raw,
        "ci8",
        rate=1000.0,
        captures=[
            {"core:sample_start": 40, "core:global_index": 10_000, "core:frequency": 1e9},
            {"core:sample_start": 300, "core:global_index": 10_000 + 260 + 77, "core:frequency": 1e9},
        ],
        annotations=[{"core:sample_start": 310, "core:sample_count": 50, "core:label": "cw"}],
    )
    chunks, iq = replay(meta, chunk_ms=100.0)
    assert [(c.start_sample, c.gap_before_samples, c.num_samples) for c in chunks] == [
        (40, 40, 100),
        (140, 0, 100),
        (240, 0, 60),
        (377, 77, 100),
        (477, 0, 100),
    ]
    # start_sample is always what was delivered plus what was skipped
    delivered = gaps = 0
    for c in chunks:
        gaps += c.gap_before_samples
        assert c.start_sample == delivered + gaps
        delivered += c.num_samples
    np.testing.assert_allclose(iq, expected[40:], atol=1e-7)
    (ann,) = read_annotations(meta)
    assert ann.t_start_s == pytest.approx((310 + 77) / 1000)  # on the replay's clock
    assert ann.t_stop_s == pytest.approx((360 + 77) / 1000)


def test_multi_channel_recording_selects_channel(tmp_path):
    n, channels = 400, 3
    rng = np.random.default_rng(1)
    values = (rng.standard_normal((n, channels)) + 1j * rng.standard_normal((n, channels))).astype(
        np.complex64
    )
    meta = write_recording(tmp_path / "mc", values.tobytes(), "cf32_le", **{"core:num_channels": channels})
    for ch in range(channels):
        src = SigMFSource(meta, channel=ch, chunk_ms=150.0)
        assert src.info.total_samples == n
        np.testing.assert_array_equal(np.concatenate([c.iq for c in src]), values[:, ch])
    with pytest.raises(InputError, match="channel 3 does not exist"):
        SigMFSource(meta, channel=3)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def test_large_file_is_memory_mapped_not_loaded(tmp_path):
    size = 2 << 30  # 2 GiB, sparse: costs no disk
    data_fn = tmp_path / "big.sigmf-data"
    with open(data_fn, "wb") as f:
        f.truncate(size)
    meta = tmp_path / "big.sigmf-meta"
    meta.write_text(
        json.dumps(
            {
                "global": {"core:datatype": "cf32_le", "core:sample_rate": 1e6, "core:version": "1.0.0"},
                "captures": [{"core:sample_start": 0, "core:frequency": 1e9}],
                "annotations": [],
            }
        )
    )
    before = _rss_bytes()
    src = SigMFSource(meta, chunk_ms=100.0)
    assert src.info.total_samples == size // 8
    it = iter(src)
    first = [next(it) for _ in range(3)]
    grown = _rss_bytes() - before
    src.close()
    assert [c.num_samples for c in first] == [100_000] * 3
    assert not np.any(first[2].iq)
    assert grown < 64 << 20, f"replay grew RSS by {grown >> 20} MiB for a 2 GiB file"
    assert next(it, None) is None  # close() ends the iteration


def test_chunk_bookkeeping_and_short_final_chunk(tmp_path):
    raw, _ = encode("cf32_le", 1234, seed=2)
    meta = write_recording(
        tmp_path / "rec",
        raw,
        "cf32_le",
        rate=2000.0,
        captures=[
            {"core:sample_start": 0, "core:frequency": 5e6, "core:datetime": "2023-01-02T03:04:05.250Z"}
        ],
    )
    src = SigMFSource(meta, chunk_ms=123.4)  # round(246.8) = 247 samples
    chunks = list(src)
    assert [c.num_samples for c in chunks] == [247] * 4 + [1234 - 4 * 247]
    t0 = datetime(2023, 1, 2, 3, 4, 5, 250000, tzinfo=timezone.utc)
    assert src.info.start_time_utc == t0
    for i, c in enumerate(chunks):
        assert c.seq == i
        assert c.start_sample == 247 * i
        assert c.sample_rate_hz == 2000.0
        assert c.start_time_utc == t0 + timedelta(seconds=247 * i / 2000.0)
        assert c.nonfinite_samples == 0


def test_recording_shorter_than_a_chunk_is_one_short_chunk(tmp_path):
    raw, expected = encode("cu8", 77)
    meta = write_recording(tmp_path / "tiny", raw, "cu8", rate=1e6)
    chunks, iq = replay(meta)
    assert len(chunks) == 1
    assert chunks[0].num_samples == 77
    np.testing.assert_allclose(iq, expected, atol=1e-7)


def test_loop_replays_with_increasing_positions(tmp_path):
    raw, expected = encode("ci16_le", 250, seed=9)
    meta = write_recording(tmp_path / "loop", raw, "ci16_le", rate=1000.0)
    src = SigMFSource(meta, chunk_ms=100.0, loop=True)
    assert src.info.total_samples is None
    chunks = []
    for c in src:
        chunks.append(c)
        if len(chunks) == 8:
            src.close()
    assert len(chunks) == 8
    assert [c.num_samples for c in chunks] == [100, 100, 50] * 2 + [100, 100]
    assert [c.start_sample for c in chunks] == [0, 100, 200, 250, 350, 450, 500, 600]
    assert [c.seq for c in chunks] == list(range(8))
    assert all(c.gap_before_samples == 0 for c in chunks)
    np.testing.assert_array_equal(chunks[3].iq, chunks[0].iq)
    np.testing.assert_allclose(np.concatenate([c.iq for c in chunks[:3]]), expected, atol=1e-7)


def test_realtime_paces_at_the_sample_rate(tmp_path):
    raw, _ = encode("cf32_le", 4000)
    meta = write_recording(tmp_path / "rt", raw, "cf32_le", rate=8000.0)  # 0.5 s
    src = SigMFSource(meta, chunk_ms=100.0, realtime=True)
    t0 = time.monotonic()
    arrivals = [(time.monotonic() - t0) for _ in src]
    assert len(arrivals) == 5
    assert 0.45 <= arrivals[-1] <= 0.9
    assert 0.07 <= arrivals[0] <= 0.4  # the first chunk is complete after its own 100 ms


def test_close_from_another_thread_ends_realtime_replay_promptly(tmp_path):
    raw, _ = encode("cf32_le", 1000)
    meta = write_recording(tmp_path / "rt", raw, "cf32_le", rate=1000.0)
    src = SigMFSource(meta, chunk_ms=500.0, realtime=True, loop=True)
    timer = threading.Timer(0.2, src.close)
    t0 = time.monotonic()
    timer.start()
    chunks = list(src)  # would never end without close()
    elapsed = time.monotonic() - t0
    timer.join()
    assert chunks == []
    assert elapsed < 0.45


def test_nonfinite_samples_are_counted_and_zeroed(tmp_path):
    values = np.full(300, 0.5 + 0.5j, np.complex64)
    values[[3, 150, 151]] = [np.nan, np.inf + 1j, 1 - np.inf * 1j]
    values[299] = complex(np.nan, np.nan)
    meta = write_recording(tmp_path / "nan", values.tobytes(), "cf32_le")
    chunks, iq = replay(meta, chunk_ms=100.0)
    assert [c.nonfinite_samples for c in chunks] == [1, 2, 1]
    assert np.all(np.isfinite(iq))
    assert iq[3] == 0 and iq[150] == 0 and iq[151] == 0 and iq[299] == 0
    assert iq[4] == values[4]


def test_trailing_partial_sample_is_ignored(tmp_path):
    raw, expected = encode("ci16_le", 100)
    meta = write_recording(tmp_path / "cut", raw, "ci16_le")
    with open(tmp_path / "cut.sigmf-data", "ab") as f:
        f.write(b"\x01\x02\x03")
    src = SigMFSource(meta)
    assert src.info.total_samples == 100
    np.testing.assert_allclose(np.concatenate([c.iq for c in src]), expected, atol=1e-7)


def test_non_conforming_dataset_with_header_bytes(tmp_path):
    raw, expected = encode("cu8", 500)
    (tmp_path / "capture.cu8").write_bytes(b"HDR!" * 4 + raw)
    meta = tmp_path / "ncd.sigmf-meta"
    meta.write_text(
        json.dumps(
            {
                "global": {
                    "core:datatype": "cu8",
                    "core:sample_rate": 2.4e6,
                    "core:dataset": "capture.cu8",
                    "core:version": "1.0.0",
                },
                "captures": [{"core:sample_start": 0, "core:frequency": 433.92e6, "core:header_bytes": 16}],
                "annotations": [],
            }
        )
    )
    chunks, iq = replay(meta)
    assert chunks[0].center_freq_hz == 433.92e6
    np.testing.assert_allclose(iq, expected, atol=1e-7)


# --- bad input: one clear InputError naming the problem and the file ---------------------


def _meta(tmp_path: Path, doc, name: str = "bad") -> Path:
    path = tmp_path / f"{name}.sigmf-meta"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    (tmp_path / f"{name}.sigmf-data").write_bytes(b"\0" * 64)
    return path


GOOD_GLOBAL = {"core:datatype": "cf32_le", "core:sample_rate": 1e6, "core:version": "1.0.0"}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{not json", "invalid JSON"),
        ([1, 2, 3], "no 'global' object"),
        ({"global": {"core:sample_rate": 1e6}, "captures": []}, "core:datatype is missing"),
        ({"global": {**GOOD_GLOBAL, "core:datatype": "cq16_le"}}, "unknown datatype 'cq16_le'"),
        (
            {"global": {**GOOD_GLOBAL, "core:datatype": "rf32_le"}},
            "real-valued datatype rf32_le is not supported; rfstream needs complex IQ",
        ),
        ({"global": {**GOOD_GLOBAL, "core:datatype": "ci16"}}, "needs a byte order"),
        ({"global": {"core:datatype": "cf32_le"}}, "core:sample_rate is missing"),
        ({"global": {**GOOD_GLOBAL, "core:sample_rate": 0}}, "core:sample_rate must be a positive number"),
        ({"global": {**GOOD_GLOBAL, "core:sample_rate": -5.0}}, "core:sample_rate must be a positive number"),
        (
            {"global": GOOD_GLOBAL, "captures": [{"core:frequency": 1e6}]},
            "core:sample_start must be an integer",
        ),
    ],
)
def test_bad_metadata_is_one_clear_error(tmp_path, doc, message):
    path = _meta(tmp_path, doc)
    with pytest.raises(InputError, match=message) as info:
        SigMFSource(path)
    text = str(info.value)
    assert "bad.sigmf-meta" in text
    assert "\n" not in text


def test_missing_and_empty_data_files(tmp_path):
    meta = _meta(tmp_path, {"global": GOOD_GLOBAL, "captures": [{"core:sample_start": 0}]})
    (tmp_path / "bad.sigmf-data").write_bytes(b"")
    with pytest.raises(InputError, match=r"data file .*bad\.sigmf-data is empty"):
        SigMFSource(meta)
    (tmp_path / "bad.sigmf-data").unlink()
    with pytest.raises(InputError, match=r"data file .*bad\.sigmf-data does not exist"):
        SigMFSource(meta)
    with pytest.raises(InputError, match=r"nothing\.sigmf-meta does not exist"):
        SigMFSource(tmp_path / "nothing.sigmf-meta")
    meta.write_text(json.dumps({"global": {**GOOD_GLOBAL, "core:dataset": "gone.cf32"}}))
    with pytest.raises(InputError, match=r"gone\.cf32"):
        SigMFSource(meta)


def test_data_smaller_than_one_sample_is_refused(tmp_path):
    meta = _meta(tmp_path, {"global": GOOD_GLOBAL})
    (tmp_path / "bad.sigmf-data").write_bytes(b"\0" * 5)
    with pytest.raises(InputError, match="no complete sample"):
        SigMFSource(meta)


def test_raw_file_given_as_sigmf_says_what_to_do(tmp_path):
    raw = tmp_path / "capture.cu8"
    raw.write_bytes(b"\x80" * 100)
    with pytest.raises(InputError, match=r"capture\.cu8: is a raw IQ file.*--rate"):
        SigMFSource(raw)


def test_broken_archive_is_an_input_error(tmp_path):
    bad = tmp_path / "broken.sigmf"
    bad.write_bytes(b"this is not a tar file")
    with pytest.raises(InputError, match=r"broken\.sigmf"):
        SigMFSource(bad)


def test_data_shorter_than_captures_claim_is_fine(tmp_path):
    raw, expected = encode("cf32_le", 100)
    meta = write_recording(
        tmp_path / "short",
        raw,
        "cf32_le",
        captures=[
            {"core:sample_start": 0, "core:frequency": 1e6},
            {"core:sample_start": 500, "core:frequency": 2e6},
        ],
        annotations=[{"core:sample_start": 0, "core:sample_count": 10_000, "core:label": "fm"}],
    )
    chunks, iq = replay(meta)
    assert [c.center_freq_hz for c in chunks] == [1e6]
    np.testing.assert_allclose(iq, expected, atol=1e-7)


# --- annotations ------------------------------------------------------------------------------


def test_read_annotations(tmp_path):
    raw, _ = encode("cf32_le", 2000)
    meta = write_recording(
        tmp_path / "ann",
        raw,
        "cf32_le",
        rate=1000.0,
        captures=[
            {"core:sample_start": 0, "core:frequency": 100e6},
            {"core:sample_start": 1000, "core:frequency": 200e6},
        ],
        annotations=[
            {
                "core:sample_start": 100,
                "core:sample_count": 250,
                "core:freq_lower_edge": 99.9e6,
                "core:freq_upper_edge": 100.1e6,
                "core:label": "BLE",
                "core:comment": "advertising",
                "rfstream:snr_db": 12.5,
            },
            {"core:sample_start": 1500, "core:sample_count": 10, "core:label": "mystery"},
            {"core:sample_start": 1900},
        ],
        **{"core:extensions": [{"name": "rfstream", "version": "0.1.0", "optional": True}]},
    )
    a, b, c = read_annotations(meta)
    assert a == Annotation(0.1, 0.35, 99.9e6, 100.1e6, "fsk", 12.5, "advertising", raw_label="BLE")
    assert (b.label, b.raw_label, b.snr_db, b.comment) == ("unknown", "mystery", None, "")
    assert (b.f_low_hz, b.f_high_hz) == (200e6 - 500, 200e6 + 500)  # the whole band of its capture
    assert (b.t_start_s, b.t_stop_s) == (1.5, 1.51)
    assert (c.t_start_s, c.t_stop_s) == (1.9, 2.0)  # no sample_count: to the end of the data
    assert read_annotations(meta, label_table={"mystery": "am"})[1].label == "am"
    (tmp_path / "ann.sigmf-data").unlink()  # annotations need only the metadata
    assert len(read_annotations(meta)) == 3


# --- a real capture -----------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_CAPTURES.is_dir(), reason="../shared/captures is absent")
def test_real_rtl_sdr_capture_is_one_short_chunk():
    meta = SHARED_CAPTURES / "dump1090_modes1.sigmf-meta"
    expected_samples = (SHARED_CAPTURES / "dump1090_modes1.sigmf-data").stat().st_size // 2
    src = SigMFSource(meta)
    assert src.info.sample_rate_hz == 2e6
    assert src.info.total_samples == expected_samples
    (chunk,) = list(src)
    assert chunk.num_samples == expected_samples < 400_000  # shorter than one 200 ms chunk
    assert chunk.center_freq_hz == 1090e6
    assert chunk.start_sample == 0 and chunk.seq == 0
    assert np.abs(chunk.iq).max() <= np.sqrt(2) + 1e-6
    assert read_annotations(meta) == []
