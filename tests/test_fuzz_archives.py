"""Fuzz of SigMF archives (.sigmf, .sigmf.gz, .sigmf.xz, .sigmf.zip): cut short, bits flipped.

Every outcome is one clean line or a correct replay (tests/fuzz_helpers.py judges it). Beyond
that, what cannot be right must not exit 0:

- a compressed archive cut short anywhere (the container's end is read, so its checksum counts);
- a plain tar cut before the end of its data member;
- a flipped bit inside the stored data of a plain tar or a stored zip member: the recording's
  ``core:sha512`` (and zip's CRC-32) no longer match.
"""

from __future__ import annotations

import tarfile
import tempfile
import zipfile
from pathlib import Path

from fuzz_helpers import EXAMPLES, base_document, check_outcome, run_cli, verb_argv, write_archive
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

KINDS = {
    "tar": (".sigmf", zipfile.ZIP_DEFLATED),
    "gz": (".sigmf.gz", zipfile.ZIP_DEFLATED),
    "xz": (".sigmf.xz", zipfile.ZIP_DEFLATED),
    "zip-deflate": (".sigmf.zip", zipfile.ZIP_DEFLATED),
    "zip-stored": (".sigmf.zip", zipfile.ZIP_STORED),
    "zip-bzip2": (".sigmf.zip", zipfile.ZIP_BZIP2),
    "zip-lzma": (".sigmf.zip", zipfile.ZIP_LZMA),
}
_BLOBS: dict[str, tuple[bytes, range]] = {}


def archive(kind: str) -> tuple[bytes, range]:
    """The archive's bytes and where its data member's bytes lie, if stored uncompressed."""
    if kind not in _BLOBS:
        suffix, method = KINDS[kind]
        with tempfile.TemporaryDirectory() as tmp:
            path = write_archive(Path(tmp) / f"a{suffix}", base_document(), zip_method=method)
            blob = path.read_bytes()
            stored = range(0)
            if kind == "tar":
                with tarfile.open(path) as tar:
                    m = tar.getmember("rec/rec.sigmf-data")
                    stored = range(m.offset_data, m.offset_data + m.size)
            elif kind == "zip-stored":
                with zipfile.ZipFile(path) as zf:
                    info = zf.getinfo("rec/rec.sigmf-data")
                start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
                stored = range(start, start + info.file_size)
        _BLOBS[kind] = (blob, stored)
    return _BLOBS[kind]


@settings(
    max_examples=EXAMPLES or 80, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(
    kind=st.sampled_from(sorted(KINDS)),
    op=st.sampled_from(["cut", "flip"]),
    where=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    bit=st.integers(0, 7),
    verb=st.sampled_from(["replay", "eval"]),
)
def test_damaged_archives(kind, op, where, bit, verb):
    blob, stored = archive(kind)
    at = int(where * len(blob))
    if op == "cut":
        damaged = blob[:at]
        must_fail = kind != "tar" or at < stored.stop
    else:
        damaged = bytearray(blob)
        damaged[at] ^= 1 << bit
        damaged = bytes(damaged)
        must_fail = at in stored
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"rec{KINDS[kind][0]}"
        path.write_bytes(damaged)
        check_outcome(run_cli(verb_argv(verb, path, Path(tmp))), must_fail=must_fail)


def test_every_undamaged_archive_kind_replays():
    for kind in KINDS:
        blob, _ = archive(kind)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"rec{KINDS[kind][0]}"
            path.write_bytes(blob)
            check_outcome(run_cli(verb_argv("eval", path, Path(tmp))), must_pass=True)
