"""Every input field checked before it is used (issue 11, section 1), through the CLI as users run it.

Each class of bad input has its cases here with the message a user sees; the fuzzers
(test_fuzz_*.py) then throw hostile values at every field. Most runs call ``rfstream.cli.main``
in-process (see tests/fuzz_helpers.py); a few are real subprocesses.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import typing
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fuzz_helpers import (
    DATA,
    HUGE_FLOAT,
    RATE_HZ,
    base_document,
    check_outcome,
    dumps,
    fast_config,
    run_cli,
    verb_argv,
    write_archive,
    write_pair,
)

from rfstream.config import Config, DetectorConfig, load_config
from rfstream.errors import ConfigError, InputError
from rfstream.sources.sigmf import SigMFSource, read_annotations
from rfstream.sources.sigmf_meta import json_depth, parse_json

ROOT = Path(__file__).resolve().parents[1]
VERBS = ("replay", "eval", "annotate")


def refused(argv: list[str], *needles: str) -> str:
    """Run the CLI; it must fail with one clean line containing every needle. Returns that line."""
    o = run_cli(argv)
    check_outcome(o, must_fail=True)
    for needle in needles:
        assert needle.lower() in o.last_line.lower(), o.describe()
    return o.last_line


def accepted(argv: list[str]) -> None:
    check_outcome(run_cli(argv), must_pass=True)


def subprocess_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "rfstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def assert_one_clean_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode not in (0, 70), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("rfstream: error: "), proc.stderr
    for needle in needles:
        assert needle.lower() in last.lower(), last
    return last


# --- JSON structure -----------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [200, 1000, 100_000])
def test_deep_nesting_is_a_clean_error_not_a_recursion_error(tmp_path, depth):
    doc = dumps(base_document()).replace(
        '"core:extensions": [', '"core:extensions": [' + "[" * depth + "]" * depth + ","
    )
    meta = write_pair(tmp_path, doc)
    for verb in ("replay", "eval", "annotate"):
        refused(verb_argv(verb, meta, tmp_path), "nested", "levels deep")


def test_depth_is_counted_outside_strings():
    assert json_depth('{"a": "[[[[{{{{", "b": [[1]], "c": "\\"]]]"}') == 3
    assert json_depth("[]") == 1 and json_depth('"x"') == 0


@pytest.mark.parametrize(
    "encode",
    [
        lambda t: b"\xef\xbb\xbf" + t.encode("utf-8"),
        lambda t: t.encode("utf-16"),
        lambda t: t.encode("utf-16-le"),
        lambda t: t.encode("utf-16-be"),
        lambda t: t.encode("utf-32"),
    ],
    ids=["utf8-bom", "utf16-bom", "utf16le", "utf16be", "utf32"],
)
def test_bom_and_utf16_metadata_are_read(tmp_path, encode):
    meta = tmp_path / "rec.sigmf-meta"
    write_pair(tmp_path, base_document())
    meta.write_bytes(encode(dumps(base_document())))
    accepted(verb_argv("eval", meta, tmp_path))
    assert [a.label for a in read_annotations(meta)] == ["fm"]


def test_text_that_is_not_unicode_is_refused(tmp_path):
    meta = write_pair(tmp_path, base_document())
    meta.write_bytes(dumps(base_document()).replace("fuzz base", "caf\u00e9").encode("latin-1"))
    refused(verb_argv("replay", meta, tmp_path), "not valid utf-8")


@pytest.mark.parametrize(
    ("section", "value", "needle"),
    [
        ("captures", [1], "captures[0] is not an object"),
        ("captures", [{"core:sample_start": 0}, "x"], "captures[1] is not an object"),
        ("annotations", [None], "annotations[0] is not an object"),
        ("annotations", {"core:sample_start": 0}, "'annotations' is not a list"),
        ("global", [], "no 'global' object"),
    ],
)
def test_entries_that_are_not_objects(tmp_path, section, value, needle):
    doc = base_document()
    doc[section] = value
    meta = write_pair(tmp_path, doc)
    for verb in ("replay", "eval", "annotate"):
        refused(verb_argv(verb, meta, tmp_path), needle)


@pytest.mark.parametrize("entry", [1, "rfstream", None, [], {"name": 5}])
def test_extensions_that_are_not_objects(tmp_path, entry):
    meta = write_pair(tmp_path, _doc("global.core:extensions", [entry]))
    refused(verb_argv("annotate", meta, tmp_path), "core:extensions")


# --- every core: field typed and ranged ---------------------------------------------------------
def _doc(change: str, value: typing.Any) -> dict:
    """The base document with ``change`` (``global.core:sample_rate``, ``captures.0.core:frequency``)
    set to ``value``; ``...`` deletes the field."""
    doc = base_document()
    *path, key = change.split(".")
    node: typing.Any = doc
    for part in path:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return doc


BAD_FIELDS = [
    ("global.core:sample_rate", 10**400, "core:sample_rate"),
    ("global.core:sample_rate", True, "core:sample_rate must be a number"),
    ("global.core:sample_rate", "1e6", "core:sample_rate must be a number"),
    ("global.core:sample_rate", float("nan"), "core:sample_rate must be a finite number"),
    ("global.core:sample_rate", float("inf"), "core:sample_rate must be a finite number"),
    ("global.core:sample_rate", HUGE_FLOAT, "core:sample_rate must be a finite number"),
    ("global.core:sample_rate", 0, "core:sample_rate must be a positive number"),
    ("global.core:sample_rate", -1e6, "core:sample_rate must be a positive number"),
    ("global.core:sample_rate", 1e-300, "core:sample_rate must be a positive number"),
    ("global.core:datatype", 7, "core:datatype must be a string"),
    ("global.core:datatype", "cq16_le", "unknown datatype"),
    ("global.core:datatype", "x" * 10_000, "core:datatype is not a sigmf datatype"),
    ("global.core:num_channels", 0, "core:num_channels"),
    ("global.core:num_channels", 2.5, "core:num_channels must be an integer"),
    ("global.core:offset", -1, "core:offset"),
    ("global.core:offset", 10, "lies before"),
    ("global.core:trailing_bytes", "8", "core:trailing_bytes must be an integer"),
    ("global.core:trailing_bytes", -8, "core:trailing_bytes must be an integer in"),
    ("global.core:trailing_bytes", None, "core:trailing_bytes must be an integer, got none"),
    ("global.core:trailing_bytes", 2.5, "core:trailing_bytes must be an integer, got 2.5"),
    ("global.core:dataset", 5, "core:dataset must be a string"),
    ("global.core:dataset", "", "core:dataset must name a file"),
    ("global.core:sha512", "abc", "core:sha512 must be 128 hexadecimal digits"),
    ("global.core:sha512", "0" * 128, "does not match core:sha512"),
    ("global.core:metadata_only", "no", "core:metadata_only must be true or false"),
    ("global.core:description", 5, "core:description must be a string"),
    ("captures.0.core:header_bytes", "16", "core:header_bytes must be an integer"),
    ("captures.0.core:header_bytes", -16, "core:header_bytes must be an integer in"),
    ("captures.0.core:header_bytes", None, "core:header_bytes must be an integer, got none"),
    ("captures.0.core:header_bytes", 2.5, "core:header_bytes must be an integer, got 2.5"),
    ("captures.0.core:header_bytes", 10**6, "add up to more than"),
    ("captures.0.core:frequency", float("nan"), "capture 0: core:frequency must be a finite number"),
    ("captures.0.core:frequency", float("-inf"), "capture 0: core:frequency must be a finite number"),
    ("captures.0.core:frequency", "100e6", "capture 0: core:frequency must be a number"),
    ("captures.0.core:frequency", 2**63, "capture 0: core:frequency must be a number in"),
    ("captures.0.core:sample_start", ..., "capture 0: core:sample_start must be an integer"),
    ("captures.0.core:sample_start", 1.5, "capture 0: core:sample_start must be an integer"),
    ("captures.0.core:sample_start", 9000, "is before the previous capture's"),
    ("captures.0.core:global_index", -1, "core:global_index"),
    ("captures.0.core:global_index", 2**63, "core:global_index"),
    ("captures.0.core:datetime", 20240102, "core:datetime must be a string"),
    ("captures.0.core:datetime", "yesterday", "core:datetime is not a usable time"),
    ("captures.0.core:datetime", "2024-13-45T99:00:00Z", "core:datetime is not a usable time"),
    ("captures.0.foo:bar", float("nan"), "captures[0].foo:bar is nan or infinite"),
    ("annotations.0.core:sample_start", 100.5, "annotation 0: core:sample_start must be an integer"),
    ("annotations.0.core:sample_start", "100", "annotation 0: core:sample_start must be an integer"),
    ("annotations.0.core:sample_count", -5, "annotation 0: core:sample_count"),
    ("annotations.0.core:freq_lower_edge", "low", "annotation 0: core:freq_lower_edge must be a number"),
    ("annotations.0.core:freq_lower_edge", 200e6, "is above core:freq_upper_edge"),
    ("annotations.0.core:freq_upper_edge", float("nan"), "core:freq_upper_edge must be a finite number"),
    ("annotations.0.core:label", 5, "annotation 0: core:label must be a string"),
    ("annotations.0.core:comment", ["a"], "annotation 0: core:comment must be a string"),
    ("annotations.0.core:generator", {}, "annotation 0: core:generator must be a string"),
    ("annotations.0.rfstream:snr_db", "high", "annotation 0: rfstream:snr_db must be a number"),
    ("annotations.0.rfstream:snr_db", 10**400, "annotation 0: rfstream:snr_db must be a finite number"),
]


@pytest.mark.parametrize(
    ("change", "value", "needle"), BAD_FIELDS, ids=[f"{c}={v!r:.20}" for c, v, _ in BAD_FIELDS]
)
def test_a_bad_field_is_refused_by_every_verb_naming_it(tmp_path, change, value, needle):
    meta = write_pair(tmp_path, _doc(change, value))
    # the verbs that read the section (the fuzzers run every verb on every field)
    verbs = {"global": ("replay", "eval"), "captures": ("replay", "annotate")}.get(
        change.split(".")[0], VERBS
    )
    for verb in verbs:
        line = refused(verb_argv(verb, meta, tmp_path), needle)
        assert len(line) < 400, line  # a 10 000-character value is shown cut short
    assert not (tmp_path / "out.sigmf-meta").exists()  # refused at open: nothing written


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("captures.0.core:header_bytes", 16.0),  # JSON Schema's integer: 16.0 is 16, never truncated
        ("global.core:trailing_bytes", 8),
        ("captures.0.core:frequency", -2.5e6),
        ("global.core:sample_rate", 1),
        ("global.core:sample_rate", 10**6),
        ("captures.0.core:datetime", "2024-01-02T03:04:05+02:00"),
        ("captures.0.core:datetime", "2024-01-02T03:04:05.123456789Z"),
        ("global.core:sha512", ...),
        ("annotations.0.core:label", ""),
        ("global.foo:bar", {"deep": [1, 2, {"x": None}]}),
    ],
)
def test_good_values_are_accepted(tmp_path, change, value):
    meta = write_pair(tmp_path, _doc(change, value))
    for verb in ("replay", "eval", "annotate"):
        accepted(verb_argv(verb, meta, tmp_path))


def test_header_bytes_as_a_float_is_never_truncated(tmp_path):
    """2.5 header bytes once misaligned every sample and the run still exited 0."""
    raw = DATA
    doc = _doc("captures.0.core:header_bytes", 2.5)
    del doc["global"]["core:sha512"]
    meta = write_pair(tmp_path, doc, b"HD" + raw)
    refused(verb_argv("replay", meta, tmp_path), "core:header_bytes must be an integer, got 2.5")
    doc["captures"][0]["core:header_bytes"] = 2.0
    meta = write_pair(tmp_path, doc, b"HD" + raw)
    src = SigMFSource(meta)
    iq = np.concatenate([c.iq for c in src])
    np.testing.assert_array_equal(iq, np.frombuffer(raw, np.complex64))


def test_late_datetime_drops_utc_instead_of_overflowing(tmp_path):
    doc = _doc("captures.0.core:datetime", "9999-12-31T23:59:59.999Z")
    meta = write_pair(tmp_path, doc)
    chunks = list(SigMFSource(meta, chunk_ms=1.0, loop=False))
    assert chunks and all(c.start_time_utc is None for c in chunks[:8])  # capture 0 runs past 9999
    accepted(verb_argv("annotate", meta, tmp_path))


def test_nan_frequency_never_reaches_a_detection(tmp_path):
    """A NaN core:frequency was published and two detectors failed on every frame."""
    text = dumps(base_document()).replace('"core:frequency": 100000000.0', '"core:frequency": NaN')
    meta = write_pair(tmp_path, text)
    for verb in ("replay", "eval", "annotate"):
        refused(verb_argv(verb, meta, tmp_path), "capture 0: core:frequency must be a finite number, got nan")


# --- the recording's annotations are checked at open, and never cost the detections ----------
def test_bad_recording_annotation_fails_at_open_not_at_close(tmp_path):
    meta = write_pair(tmp_path, _doc("annotations.0.core:sample_start", 100.5))
    out = tmp_path / "out.sigmf-meta"
    started = time.monotonic()
    refused(verb_argv("annotate", meta, tmp_path), "annotation 0: core:sample_start")
    assert not out.exists()
    assert time.monotonic() - started < 30


def test_annotate_keeps_the_recordings_annotations_and_adds_detections(tmp_path):
    rng = np.random.default_rng(1)
    n = 200_000
    t = np.arange(n) / RATE_HZ
    iq = (0.01 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))).astype(np.complex64)
    iq[50_000:150_000] += np.exp(2j * np.pi * 100e3 * t[50_000:150_000]).astype(np.complex64)
    doc = base_document(iq.tobytes())
    meta = write_pair(tmp_path, doc, iq.tobytes())
    accepted(verb_argv("annotate", meta, tmp_path))
    written = json.loads((tmp_path / "out.sigmf-meta").read_text())
    generators = [a.get("core:generator") for a in written["annotations"]]
    assert "someone" in generators and "rfstream" in generators


# --- bounded cost for pathological but valid input --------------------------------------------
def test_tiny_captures_are_joined_not_one_frame_each(tmp_path):
    """100 000 four-sample captures each became a frame."""
    n = 400_000
    data = np.zeros(n, np.complex64).tobytes()
    doc = {
        "global": {"core:datatype": "cf32_le", "core:sample_rate": RATE_HZ, "core:version": "1.0.0"},
        "captures": [{"core:sample_start": 4 * i, "core:frequency": 1e8} for i in range(100_000)],
        "annotations": [],
    }
    meta = write_pair(tmp_path, doc, data)
    chunks = list(SigMFSource(meta, min_chunk_samples=4096))
    assert [c.num_samples for c in chunks] == [200_000, 200_000]
    assert chunks[1].start_sample == 200_000 and chunks[1].gap_before_samples == 0
    accepted(verb_argv("replay", meta, tmp_path))


def test_a_one_hertz_recording_is_not_a_frame_per_sample(tmp_path):
    """At 1 Hz a 200 ms chunk holds less than one sample; every sample became a frame."""
    doc = {
        "global": {"core:datatype": "cf32_le", "core:sample_rate": 1, "core:version": "1.0.0"},
        "captures": [{"core:sample_start": 0}],
        "annotations": [],
    }
    meta = write_pair(tmp_path, doc, np.zeros(40_000, np.complex64).tobytes())
    chunks = list(SigMFSource(meta, min_chunk_samples=4096))
    assert [c.num_samples for c in chunks] == [4096] * 8 + [
        40_000 - 8 * 4096
    ]  # the short rest joins the last
    assert sum(c.num_samples for c in chunks) == 40_000


def test_chunk_policy_joins_a_short_rest_and_keeps_positions(tmp_path):
    doc = base_document()
    meta = write_pair(tmp_path, doc)
    chunks = list(SigMFSource(meta, chunk_ms=3.0, min_chunk_samples=2500))  # 3000-sample chunks
    # capture 0: 8192 = 3000 + 5192 (a 2192 rest is shorter than 2500 and joins); capture 1 likewise
    assert [c.num_samples for c in chunks] == [3000, 5192, 3000, 5192]
    assert [c.start_sample for c in chunks] == [0, 3000, 8192, 11192]
    assert [c.center_freq_hz for c in chunks] == [100e6, 100e6, 101e6, 101e6]


# --- tiny inputs: a chunk shorter than one FFT gives an empty frame -------------------------
def test_chunks_shorter_than_one_fft_make_empty_frames_and_no_detections():
    from rfstream.config import SpectrogramConfig
    from rfstream.detect.energy import EnergyDetector
    from rfstream.dsp.spectrogram import Spectrogrammer
    from rfstream.types import Chunk

    rng = np.random.default_rng(3)
    sp = Spectrogrammer(SpectrogramConfig())
    energy = EnergyDetector()
    empty = detections = 0
    for i in range(100):  # 100-sample chunks of noise: 40 of them make one FFT
        iq = (0.05 * (rng.standard_normal(100) + 1j * rng.standard_normal(100))).astype(np.complex64)
        chunk = Chunk(
            iq=iq, sample_rate_hz=250e3, center_freq_hz=433.92e6, start_sample=100 * i, seq=i, arrived_ns=0
        )
        frame = sp.process(chunk)
        image = frame.host_image()
        if not image.any():
            empty += 1
            assert frame.t0_s == pytest.approx(chunk.start_s)
        detections += len(energy.detect(frame))
    assert empty >= 90  # only the chunks that complete a slice carry an image
    assert detections == 0


def test_a_recording_shorter_than_one_fft_replays_with_no_detections(tmp_path):
    """A real process: a 1000-sample recording is one chunk, an empty frame, no boxes from noise."""
    rng = np.random.default_rng(4)
    iq = (0.05 * (rng.standard_normal(1000) + 1j * rng.standard_normal(1000))).astype(np.complex64)
    doc = {
        "global": {"core:datatype": "cf32_le", "core:sample_rate": 250e3, "core:version": "1.0.0"},
        "captures": [{"core:sample_start": 0, "core:frequency": 433.92e6}],
        "annotations": [],
    }
    meta = write_pair(tmp_path, doc, iq.tobytes())
    proc = subprocess_cli("replay", str(meta), "--no-publish", "--chunk-ms", "1")
    assert proc.returncode == 0, proc.stderr
    assert "chunks 1 processed" in proc.stderr and " 0 detections" in proc.stderr, proc.stderr


# --- archives -----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".sigmf.gz", ".sigmf.xz", ".sigmf.zip"])
def test_truncated_archive_is_one_line(tmp_path, suffix):
    arc = write_archive(tmp_path / f"a{suffix}", base_document())
    blob = arc.read_bytes()
    for cut in (len(blob) // 3, len(blob) // 2, len(blob) - 30):
        arc.write_bytes(blob[:cut])
        line = refused(verb_argv("replay", arc, tmp_path), arc.name)
        assert "\n" not in line


def test_corrupt_zip_member_and_unsupported_method(tmp_path):
    arc = write_archive(tmp_path / "a.sigmf.zip", base_document(), zip_method=zipfile.ZIP_DEFLATED)
    blob = bytearray(arc.read_bytes())
    with zipfile.ZipFile(arc) as zf:
        info = zf.getinfo("rec/rec.sigmf-data")
    middle = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    blob[middle] ^= 0xFF
    arc.write_bytes(bytes(blob))
    refused(verb_argv("replay", arc, tmp_path), "a.sigmf.zip")
    stored = write_archive(tmp_path / "s.sigmf.zip", base_document(), zip_method=zipfile.ZIP_STORED)
    blob = bytearray(stored.read_bytes())
    for signature, at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # local and central headers
        i = blob.find(signature)
        while i >= 0:
            blob[i + at : i + at + 2] = (99).to_bytes(2, "little")  # AE-x: not something zipfile reads
            i = blob.find(signature, i + 4)
    stored.write_bytes(bytes(blob))
    refused(verb_argv("replay", stored, tmp_path), "compression method 99")


@pytest.mark.parametrize("suffix", [".sigmf", ".sigmf.gz", ".sigmf.xz", ".sigmf.zip"])
def test_archive_checksum_is_verified(tmp_path, suffix):
    """A .sigmf.gz with corrupted bytes in the middle replayed silently: the checksum was never read."""
    corrupt = bytearray(DATA)
    corrupt[len(corrupt) // 2] ^= 0x01
    arc = write_archive(tmp_path / f"a{suffix}", base_document(), bytes(corrupt))  # sha512 of DATA
    refused(verb_argv("replay", arc, tmp_path), "does not match core:sha512")
    accepted(verb_argv("replay", arc, tmp_path, "--no-verify"))
    write_archive(tmp_path / f"a{suffix}", base_document())
    accepted(verb_argv("eval", arc, tmp_path))


def test_pair_checksum_is_verified_and_can_be_skipped(tmp_path):
    corrupt = bytearray(DATA)
    corrupt[100] ^= 0x80
    meta = write_pair(tmp_path, base_document(), bytes(corrupt))
    refused(verb_argv("replay", meta, tmp_path), "does not match core:sha512", "--no-verify")
    accepted(verb_argv("replay", meta, tmp_path, "--no-verify"))
    accepted(verb_argv("replay", meta, tmp_path, "--set", "source.verify_checksum=false"))


@pytest.mark.parametrize("suffix", [".sigmf", ".sigmf.gz", ".sigmf.zip"])
def test_header_bytes_beyond_the_archive_member(tmp_path, suffix):
    arc = write_archive(tmp_path / f"a{suffix}", _doc("captures.0.core:header_bytes", len(DATA) + 1))
    refused(verb_argv("replay", arc, tmp_path), "add up to more than")


# --- core:dataset and what a path is ----------------------------------------------------------
@pytest.mark.parametrize("dataset", ["/etc/passwd", "../outside.bin", "sub/../../outside.bin"])
def test_dataset_outside_the_metadata_folder_is_refused(tmp_path, dataset):
    """/etc/passwd replayed as IQ."""
    (tmp_path / "outside.bin").write_bytes(DATA)
    folder = tmp_path / "rec"
    doc = _doc("global.core:dataset", dataset)
    meta = write_pair(folder, doc)
    refused(verb_argv("replay", meta, folder), "outside the metadata's folder", "--allow-external-dataset")
    refused(verb_argv("eval", meta, folder), "outside the metadata's folder")


def test_external_dataset_when_allowed(tmp_path):
    (tmp_path / "outside.cf32").write_bytes(DATA)
    folder = tmp_path / "rec"
    meta = write_pair(folder, _doc("global.core:dataset", "../outside.cf32"))
    accepted(verb_argv("eval", meta, folder, "--allow-external-dataset"))
    inside = write_pair(tmp_path / "ok", _doc("global.core:dataset", "data/x.cf32"))
    (tmp_path / "ok" / "data").mkdir()
    (tmp_path / "ok" / "data" / "x.cf32").write_bytes(DATA)
    accepted(verb_argv("replay", inside, tmp_path / "ok"))  # a subfolder is inside


@pytest.mark.parametrize("kind", ["directory", "fifo", "device", "loop", "broken"])
def test_a_data_path_is_named_as_what_it_is(tmp_path, kind):
    folder = tmp_path / "rec"
    meta = write_pair(folder, _doc("global.core:dataset", "target"))
    target = folder / "target"
    if kind == "directory":
        target.mkdir()
        words = "is a directory"
    elif kind == "fifo":
        os.mkfifo(target)
        words = "is a fifo"
    elif kind == "device":
        target.symlink_to("/dev/zero")
        words = "is a character device"
    elif kind == "loop":
        target.symlink_to(folder / "other")
        (folder / "other").symlink_to(target)
        words = "symbolic link loop"
    else:
        target.symlink_to(folder / "gone")
        words = "broken symbolic link"
    started = time.monotonic()
    refused(verb_argv("replay", meta, folder), words)
    assert time.monotonic() - started < 30  # a FIFO is named, not opened and waited on


def test_metadata_and_conforming_data_paths_are_named(tmp_path):
    write_pair(tmp_path, base_document())
    (tmp_path / "rec.sigmf-data").unlink()
    (tmp_path / "rec.sigmf-data").mkdir()
    refused(verb_argv("replay", tmp_path / "rec.sigmf-meta", tmp_path), "rec.sigmf-data is a directory")
    fifo = tmp_path / "f.sigmf-meta"
    os.mkfifo(fifo)
    refused(verb_argv("replay", fifo, tmp_path), "is a fifo")
    refused(
        verb_argv("replay", tmp_path / "d" / ("x" * 300) / "y.sigmf-meta", tmp_path),
        "source.path",
        "300 bytes",
    )
    refused(verb_argv("replay", Path("/dev/zero"), tmp_path), "/dev/zero: is not a sigmf recording", "device")
    refused(verb_argv("eval", tmp_path, tmp_path), "is not a sigmf recording", "is a directory")


# --- configuration and flags ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--set", "publish.endpoint=tcp://127.0.0.1:99999"], "port '99999'"),
        (["--set", "publish.endpoint=tcp://127.0.0.1:65536"], "must be 1-65535"),
        (["--set", "publish.endpoint=tcp://127.0.0.1:-1"], "must be 1-65535"),
        (["--set", "publish.sndhwm=2147483648"], "publish.sndhwm"),
        (["--set", "detectors.0.options.smooth_t=1099511627776"], "options.smooth_t"),
        (["--set", "detectors.0.options.closing_f=100000"], "options.closing_f"),
        (["--set", "detectors.0.options.min_area_px=1e30"], "options.min_area_px"),
        (["--rate", "1e-300"], "source.sample_rate_hz"),
        (["--rate", "-250e3"], "source.sample_rate_hz"),
        (["--chunk-ms", "1e-9"], "source.chunk_ms"),
        (["--chunk-ms", "-5"], "source.chunk_ms"),
        (["--capture-index", "-2"], "source.capture_index"),
        (["--capture-index", "2"], "capture 2 does not exist"),
        (["--channel", "1"], "channel 1 does not exist"),
        (["--set", "spectrogram.nfft=1099511627776"], "spectrogram.nfft"),
        (["--set", "spectrogram.height=100000"], "spectrogram.height"),
        (["--set", "runtime.queue_depth=0"], "runtime.queue_depth"),
        (["--set", "runtime.metrics_endpoint=127.0.0.1:99999"], "metrics_endpoint"),
        (["--set", "publish.annotations=" + "x" * 400], "publish.annotations"),
        (["--set", "publish.annotations=" + "d/" * 1000], "more than 1024"),
        (["--set", "detectors.0.model=" + "m" * 300], "detectors.0.model"),
    ],
)
def test_settings_outside_what_the_code_can_serve(tmp_path, flags, needle):
    meta = write_pair(tmp_path, base_document())
    refused(["replay", str(meta), "--no-publish", "-q", *flags], needle)


def test_capture_index_on_a_raw_file(tmp_path):
    raw = tmp_path / "x.cf32"
    raw.write_bytes(DATA)
    base = ["replay", str(raw), "--rate", "1e6", "--no-publish", "-q", "--config", str(fast_config(tmp_path))]
    refused([*base, "--capture-index", "1"], "capture 1 does not exist", "raw")
    accepted([*base, "--capture-index", "0"])


def test_config_file_must_be_a_small_regular_file(tmp_path):
    meta = write_pair(tmp_path, base_document())
    fifo = tmp_path / "cfg.fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    refused(["replay", str(meta), "--config", str(fifo)], "is a fifo")
    refused(["replay", str(meta), "--config", "/dev/zero"], "character device")
    big = tmp_path / "big.toml"
    big.write_text("# padding\n" * 200_000)
    refused(["replay", str(meta), "--config", str(big)], "more than the")
    refused(["replay", str(meta), "--config", str(tmp_path)], "is a directory")
    assert time.monotonic() - started < 30


def test_bench_rates_that_are_not_numbers_are_one_line():
    proc = subprocess_cli("bench", "--rates", "10e6,abc")
    assert_one_clean_line(proc, "--rates", "'abc' is not a number")


def test_negative_rate_reaches_the_value_check(tmp_path):
    raw = tmp_path / "x.cu8"
    raw.write_bytes(b"\x80" * 4096)
    proc = subprocess_cli("replay", str(raw), "--rate", "-250e3", "--no-publish")
    assert "expected one argument" not in proc.stderr
    assert_one_clean_line(proc, "source.sample_rate_hz")


def test_publish_annotations_is_honoured_by_a_fast_replay(tmp_path):
    """publish.annotations was silently ignored by replay --fast."""
    meta = write_pair(tmp_path, base_document())
    out = tmp_path / "from-config.sigmf-meta"
    accepted(verb_argv("replay", meta, tmp_path, "--fast", "--set", f"publish.annotations={out}"))
    assert json.loads(out.read_text())["annotations"][0]["core:generator"] == "someone"


def test_every_numeric_setting_has_a_range():
    from rfstream import config as config_module

    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        cls = DetectorConfig if section.name == "detectors" else hints[section.name]
        for f in dataclasses.fields(cls):
            if typing.get_type_hints(cls)[f.name] in (int, float):
                key = f"{section.name}.{f.name}"
                assert key in config_module._RANGES, f"{key} has no range in rfstream/config.py"


@pytest.mark.parametrize("key", ["source.chunk_ms", "publish.sndhwm", "spectrogram.width", "runtime.workers"])
def test_ranges_refuse_huge_and_accept_defaults(key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, environ={}, overrides={key: "1e30"})
    load_config(
        None,
        environ={},
        overrides={key: str(getattr(getattr(Config(), key.split(".")[0]), key.split(".")[1]))},
    )


def test_every_detector_option_is_bounded():
    from rfstream.detect.energy import EnergyOptions
    from rfstream.detect.ort import OnnxOptions
    from rfstream.detect.two_stage import TwoStageOptions

    for cls in (EnergyOptions, OnnxOptions, TwoStageOptions):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] in (int, float):
                assert "check" in f.metadata and f.metadata.get("high", np.inf) < np.inf, (
                    f"{cls.__name__}.{f.name}"
                )


# --- units under the CLI -----------------------------------------------------------------------
def test_parse_json_refuses_constants_and_names_the_path(tmp_path):
    doc = base_document()
    doc["annotations"][0]["other:x"] = float("inf")
    meta = write_pair(tmp_path, doc)
    with pytest.raises(InputError, match=r"annotations\[0\]\.other:x is NaN or infinite"):
        SigMFSource(meta)
    assert parse_json(b'{"a": 1}', "x") == {"a": 1}
    with pytest.raises(InputError, match="invalid JSON"):
        parse_json(b'{"a": ' + b"9" * 5000 + b"}", "x")  # longer than Python converts


def test_source_errors_are_one_line(tmp_path):
    arc = write_archive(tmp_path / "a.sigmf.gz", base_document())
    arc.write_bytes(arc.read_bytes()[:200])
    with pytest.raises(InputError) as info:
        SigMFSource(arc)
    assert "\n" not in str(info.value)


def test_nonfinite_metadata_through_real_processes(tmp_path):
    """Real processes: a NaN literal and a 1e400 in the metadata, for replay, eval and --annotate."""
    text = dumps(base_document())
    cases = {
        "nan": (
            text.replace('"core:frequency": 101000000.0', '"core:frequency": NaN'),
            "capture 1: core:frequency",
        ),
        "huge": (
            text.replace('"core:sample_rate": 1000000.0', '"core:sample_rate": 1e400'),
            "core:sample_rate",
        ),
    }
    for name, (doc, needle) in cases.items():
        folder = tmp_path / name
        meta = write_pair(folder, doc)
        for args in (
            ("replay", str(meta), "--no-publish"),
            ("eval", str(meta)),
            ("replay", str(meta), "--no-publish", "--annotate", str(folder / "out.sigmf-meta")),
        ):
            assert_one_clean_line(subprocess_cli(*args, "--config", str(fast_config(folder))), needle)
        assert not (folder / "out.sigmf-meta").exists()


# --- the corpus: the cases as files ------------------------------------------------------
CORPUS = Path(__file__).parent / "corpus"
EXPECT = json.loads((CORPUS / "expect.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_corpus(tmp_path, name):
    """tests/corpus/NAME.sigmf-meta with the same samples: accepted, or refused naming the problem."""
    case = EXPECT[name]
    write_pair(tmp_path, "{}")
    meta = tmp_path / "rec.sigmf-meta"
    meta.write_bytes((CORPUS / f"{name}.sigmf-meta").read_bytes())
    for verb in ("replay", "eval", "annotate"):
        if case["ok"]:
            accepted(verb_argv(verb, meta, tmp_path))
        else:
            refused(verb_argv(verb, meta, tmp_path), case["needle"])


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["proxy", "--frontend", "tcp://127.0.0.1:4567", "--sndhwm", "1099511627776"], "--sndhwm"),
        (["proxy", "--frontend", "tcp://127.0.0.1:99999"], "port '99999'"),
        (
            ["proxy", "--frontend", "tcp://127.0.0.1:4567", "--backend", "tcp://127.0.0.1:70000"],
            "port '70000'",
        ),
        (["listen", "tcp://127.0.0.1:99999", "--timeout", "0.1"], "port '99999'"),
        (["listen", "tcp://127.0.0.1:5555", "--timeout", "nan"], "not a finite number"),
        (["synth", "/nonexistent/x", "--rate", "1e12", "--duration", "1000"], "samples"),
        (["synth", "/nonexistent/x", "--rate", "-1e6"], "--rate"),
        (["bench", "--rates", "nan"], "--rates"),
        (["bench", "--chunks", "0"], "--chunks"),
    ],
)
def test_other_verbs_check_their_numbers_and_endpoints(argv, needle):
    refused(argv, needle)
