"""SigMF recordings: replay as Chunks, and read their annotations.

Accepts a ``.sigmf-meta`` or ``.sigmf-data`` path (either names the pair), a
``.sigmf`` archive (also ``.sigmf.gz/.xz/.zip``; a compressed data member is
decompressed into an unlinked temporary file and memory-mapped from there), and
metas whose ``core:dataset`` names a non-conforming data file
(``core:header_bytes`` / ``core:trailing_bytes`` are honoured). Data is
memory-mapped and read chunk by chunk; conversion to complex64 and the
stream-position rules are documented in :mod:`rfstream.sources.raw`.

Input is untrusted (see :mod:`rfstream.sources.sigmf_meta` for the metadata
checks). Here:

- ``core:dataset`` must name a file inside the metadata's folder (a relative
  path without ``..``); ``allow_external_dataset`` lifts that. The data file,
  wherever it is, must be a regular file: a directory, a FIFO, a device or a
  symlink loop is named as what it is.
- ``core:header_bytes`` + ``core:trailing_bytes`` larger than the data file (or
  archive member) are refused.
- ``core:sha512``, where present, is checked against the data before the first
  chunk (``verify_checksum=False``, ``source.verify_checksum = false`` or
  ``--no-verify`` skip it); a mismatch is refused.
- Archive trouble (truncated gzip/xz, a corrupt or encrypted zip member, an
  unsupported zip compression method, a member shorter than its header says)
  is one line naming the archive.
- A capture's ``core:datetime`` whose capture would run past the end of the
  calendar is dropped with a warning: its chunks carry no UTC.

Captures: each capture's ``core:frequency`` and ``core:datetime`` go on its
chunks, and a chunk never spans two captures (except where the chunk policy
joins captures too short for one FFT; see :class:`rfstream.sources.raw.MappedReplay`).
A capture without ``core:datetime`` continues the previous one's clock. A
``core:global_index`` jump larger than the samples between two captures is
reported as ``gap_before_samples`` (and advances ``start_sample``); so are
samples before the first capture and captures left out with ``capture_index``.
A data file shorter than the captures or annotations claim is replayed as far
as it goes.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import posixpath
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePath
from typing import IO, Any, BinaryIO

import numpy as np
import structlog

from rfstream.errors import InputError
from rfstream.labels import map_label
from rfstream.limits import MAX_META_BYTES
from rfstream.sources.base import (
    SourceInfo,
    describe_path,
    regular_file_size,
    show,
    shown_path,
    utc_plus,
)
from rfstream.sources.raw import (
    EXTENSION_DATATYPES,
    MappedReplay,
    SampleFormat,
    Segment,
    map_samples,
    parse_datatype,
)
from rfstream.sources.sigmf_meta import Metadata, check_metadata, load_metadata, parse_json
from rfstream.types import Chunk

log = structlog.get_logger(__name__)

ARCHIVE_SUFFIXES = (".sigmf", ".sigmf.gz", ".sigmf.xz", ".sigmf.zip")
META_EXT, DATA_EXT = ".sigmf-meta", ".sigmf-data"
SNR_KEY = "rfstream:snr_db"
_BLOCK = 1 << 20  # bytes per read when hashing or decompressing
# zip compression methods Python's zipfile reads (stored, deflate, bzip2, lzma)
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


@dataclass(frozen=True, slots=True)
class Annotation:
    """One SigMF annotation in stream time and absolute frequency."""

    t_start_s: float  # seconds since the stream began (the replay's Chunk.start_s scale)
    t_stop_s: float
    f_low_hz: float
    f_high_hz: float
    label: str  # folded onto rfstream.labels.LABELS
    snr_db: float | None
    comment: str
    raw_label: str = ""  # core:label as written
    generator: str = ""  # core:generator as written ("rfstream" marks rfstream's own detections)
    score: float | None = None  # rfstream:score, where rfstream wrote the annotation


@dataclass(frozen=True, slots=True)
class _Capture:
    position: int  # first sample, as a position in the data file
    gap_total: int  # samples missing from the stream before this capture (global_index jumps)
    center_freq_hz: float
    start_time_utc: datetime | None

    @property
    def stream_start(self) -> int:
        return self.position + self.gap_total


@dataclass(frozen=True, slots=True)
class _Data:
    """Where a recording's dataset bytes are: a file (the data file, the tar, or a temp file) and a range."""

    file: Path | BinaryIO | None  # None: not opened (only its size was needed)
    offset: int
    size: int
    label: str  # for messages


@dataclass(frozen=True, slots=True)
class _Recording:
    name: str  # the path the user gave, for messages
    meta: Metadata
    fmt: SampleFormat
    captures: tuple[_Capture, ...]
    data: np.ndarray | None  # the memory map, where the data exists and was asked for
    num_samples: int | None  # whole samples in the data (known even where it was not mapped)


def is_archive(path: str | Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _fail(name: str, message: str) -> InputError:
    return InputError(f"{name}: {message}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


def _filenames(path: Path) -> tuple[Path, Path, Path]:
    """(meta, data, archive) names of the recording ``path`` names (as the sigmf library derives them)."""
    base = path.with_suffix("") if path.suffix in (META_EXT, DATA_EXT, ".sigmf") else path
    return (
        base.with_name(base.name + META_EXT),
        base.with_name(base.name + DATA_EXT),
        base.with_name(base.name + ".sigmf"),
    )


# --- opening ------------------------------------------------------------------------------------
def _load(
    path: str | Path,
    *,
    need_data: bool,
    verify: bool = False,
    allow_external_dataset: bool = False,
) -> _Recording:
    path = Path(path)
    name = shown_path(path)
    if is_archive(path):
        return _load_archive(path, name, need_data=need_data, verify=verify)
    if path.suffix.lower() in EXTENSION_DATATYPES:
        raise _fail(
            name,
            "is a raw IQ file, not a SigMF recording; replay it with --rate (and --datatype if "
            "the extension is not enough)",
        )
    meta_fn, data_fn, archive_fn = _filenames(path)
    if not os.path.lexists(meta_fn):
        if os.path.isfile(archive_fn):
            return _load_archive(archive_fn, name, need_data=need_data, verify=verify)
        if path not in (meta_fn, data_fn) and os.path.lexists(path):
            _, problem = describe_path(path)  # /dev/zero or a folder given as the recording
            what = f"it {problem}" if problem else "give its .sigmf-meta, or --rate for a raw IQ file"
            raise _fail(name, f"is not a SigMF recording: {what}")
    meta = load_metadata(meta_fn, name=shown_path(meta_fn))
    fmt = parse_datatype(meta.datatype, where=meta.name)
    data_path = _data_path(meta_fn, data_fn, meta, allow_external_dataset)
    if data_path is None:
        if need_data:
            if meta.metadata_only:
                raise _fail(name, "is a metadata-only recording (core:metadata_only): it has no samples")
            raise _fail(name, f"data file {shown_path(data_fn)} does not exist")
        return _Recording(name, meta, fmt, _captures(meta, name), None, None)
    size = regular_file_size(data_path, "data file")
    if size == 0 and need_data:
        raise _fail(name, f"data file {shown_path(data_path)} is empty")
    data = _Data(data_path, 0, size, shown_path(data_path))
    if verify:
        with open(data_path, "rb") as f:
            _verify(meta, f, data)
    return _recording(name, meta, fmt, data, need_data)


def _data_path(meta_fn: Path, data_fn: Path, meta: Metadata, allow_external: bool) -> Path | None:
    """The data file the metadata names (core:dataset, else the conforming pair), or None where absent."""
    name = shown_path(meta_fn)
    if meta.dataset is not None:
        if meta.metadata_only:
            raise _fail(name, "has both core:dataset and core:metadata_only; which is it?")
        target = _inside(meta_fn.parent, meta.dataset, name, allow_external)
        _, problem = describe_path(target)
        if problem:
            raise _fail(name, f"core:dataset {show(meta.dataset, 200)} {problem}")
        return target
    if not os.path.lexists(data_fn):
        return None
    _, problem = describe_path(data_fn)
    if problem:
        raise _fail(name, f"data file {shown_path(data_fn)} {problem}")
    return data_fn


def _inside(folder: Path, dataset: str, name: str, allow_external: bool) -> Path:
    """``folder / dataset``, refusing a path that leaves ``folder`` unless that is allowed."""
    rel = PurePath(dataset)
    if not allow_external and (rel.is_absolute() or rel.drive or ".." in rel.parts):
        raise _fail(
            name,
            f"core:dataset {show(dataset)} lies outside the metadata's folder; rfstream reads only "
            "files beside the metadata unless source.allow_external_dataset is set "
            "(--allow-external-dataset)",
        )
    return folder / rel


def _recording(name: str, meta: Metadata, fmt: SampleFormat, data: _Data, need_data: bool) -> _Recording:
    """Map the samples between the header and the trailing bytes of ``data``."""
    header, trailing = meta.header_bytes, meta.trailing_bytes
    if any(c.header_bytes for c in meta.captures[1:]):
        log.warning("core:header_bytes after the first capture is not supported; ignored", file=name)
    if header + trailing > data.size:
        raise _fail(
            name,
            f"core:header_bytes ({header}) and core:trailing_bytes ({trailing}) add up to more than "
            f"the {data.size} bytes of {data.label}",
        )
    nbytes = data.size - header - trailing
    frame_bytes = fmt.sample_bytes * meta.num_channels
    n = nbytes // frame_bytes
    mapped = None
    if need_data:
        if data.file is None:  # pragma: no cover - archives open the member when data is needed
            raise _fail(name, "no data")
        mapped = map_samples(
            fmt,
            meta.num_channels,
            path=data.file,
            offset=data.offset + header,
            nbytes=nbytes,
            name=data.label,
        )
        n = int(mapped.shape[0])
    return _Recording(name, meta, fmt, _captures(meta, name), mapped, n)


def _verify(meta: Metadata, f: IO[bytes], data: _Data) -> None:
    """Check core:sha512 (over the whole dataset file or member), where the metadata has one."""
    if meta.sha512 is None:
        return
    f.seek(data.offset)
    digest = hashlib.sha512()
    left = data.size
    while left > 0:
        block = f.read(min(_BLOCK, left))
        if not block:
            break
        digest.update(block)
        left -= len(block)
    _check_digest(meta, digest, data.label)


def _check_digest(meta: Metadata, digest: Any, label: str) -> None:
    if meta.sha512 is not None and digest.hexdigest() != meta.sha512:
        raise InputError(
            f"{label}: the data does not match core:sha512 in {meta.name}: the recording is corrupt "
            "or was changed (--no-verify, or source.verify_checksum = false, replays it anyway)"
        )


# --- archives ----------------------------------------------------------------------------------
def _load_archive(path: Path, name: str, *, need_data: bool, verify: bool) -> _Recording:
    regular_file_size(path, "SigMF archive")
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
        if magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            meta, data = _open_zip(path, name, need_data=need_data, verify=verify)
        else:
            meta, data = _open_tar(path, name, magic, need_data=need_data, verify=verify)
    except InputError:
        raise
    except EOFError as exc:
        raise _fail(name, f"the SigMF archive is truncated ({_one_line(exc)})") from exc
    except (
        tarfile.TarError,
        zipfile.BadZipFile,
        zlib.error,
        lzma.LZMAError,
        NotImplementedError,  # zipfile: a compression method it cannot read
        RuntimeError,  # zipfile: an encrypted member
        ValueError,
        OSError,  # gzip's BadGzipFile, a read error, or no room for the decompressed data
    ) as exc:
        raise _fail(name, f"not a usable SigMF archive: {_one_line(exc)}") from exc
    fmt = parse_datatype(meta.datatype, where=meta.name)
    return _recording(name, meta, fmt, data, need_data)


def _pick(names: list[str], name: str) -> str:
    metas = [n for n in names if n.endswith(META_EXT)]
    if not metas:
        raise _fail(name, "the SigMF archive holds no .sigmf-meta file")
    if len(metas) > 1:
        log.warning("the archive holds several recordings; using the first", file=name, recording=metas[0])
    return metas[0]


def _data_member(meta_member: str, meta: Metadata, names: list[str], name: str) -> str:
    """The archive member holding the dataset of ``meta_member``."""
    folder = posixpath.dirname(meta_member)
    if meta.dataset is not None:  # a non-conforming dataset travels under its own name
        _inside(Path(folder), meta.dataset, name, allow_external=False)
        wanted = posixpath.join(folder, meta.dataset)
        if wanted not in names:
            raise _fail(name, f"core:dataset {show(meta.dataset)} is not in the archive")
        return wanted
    pair = meta_member[: -len(META_EXT)] + DATA_EXT
    if pair in names:
        return pair
    data = [n for n in names if n.endswith(DATA_EXT)]
    if len(data) == 1:
        return data[0]
    raise _fail(name, f"the SigMF archive holds no data file for {meta_member}")


def _meta_from(raw: bytes, label: str) -> Metadata:
    return check_metadata(parse_json(raw, label), label)


def _spool(src: IO[bytes], size: int, meta: Metadata, verify: bool, label: str) -> _Data:
    """Copy a decompressing stream into an unlinked temporary file (hashing on the way) to map it."""
    tmp = tempfile.TemporaryFile(prefix="rfstream-")  # noqa: SIM115 - the memory map outlives this call
    done = False
    try:
        digest = hashlib.sha512() if verify and meta.sha512 is not None else None
        copied = 0
        while block := src.read(_BLOCK):
            if digest is not None:
                digest.update(block)
            tmp.write(block)
            copied += len(block)
        tmp.flush()
        if copied != size:
            raise InputError(f"{label}: the archive member is truncated ({copied} of {size} bytes)")
        if digest is not None:
            _check_digest(meta, digest, label)
        done = True
    finally:
        if not done:  # a corrupt member, a full disk, an interrupt: no temporary file left open
            tmp.close()
    return _Data(tmp, 0, size, label)


def _open_tar(
    path: Path, name: str, magic: bytes, *, need_data: bool, verify: bool
) -> tuple[Metadata, _Data]:
    if magic.startswith(b"\x1f\x8b"):
        mode = "r:gz"
    elif magic.startswith(b"\xfd7zXZ\x00"):
        mode = "r:xz"
    elif magic.startswith(b"BZh"):
        mode = "r:bz2"
    else:
        mode = "r:"
    with tarfile.open(path, mode) as tar:
        members = {m.name: m for m in tar.getmembers() if m.isreg()}  # reads the whole archive once
        if mode != "r:":
            # tarfile stops at the end-of-archive block; read the compressed stream to its end so
            # a truncated or corrupt container (gzip's CRC, xz's index) is refused too.
            while tar.fileobj.read(_BLOCK):  # type: ignore[union-attr]
                pass
        meta_name = _pick(list(members), name)
        meta_member = members[meta_name]
        if meta_member.size > MAX_META_BYTES:
            raise _fail(
                name, f"{meta_name} is {meta_member.size} bytes, more than the {MAX_META_BYTES} allowed"
            )
        with tar.extractfile(meta_member) as f:  # type: ignore[union-attr]
            meta = _meta_from(f.read(), f"{name}:{meta_name}")
        data_member = members[_data_member(meta_name, meta, list(members), name)]
        label = f"{name}:{data_member.name}"
        if data_member.issparse():
            raise _fail(name, f"{data_member.name} is a sparse tar member, which rfstream cannot map")
        if not need_data:
            return meta, _Data(None, 0, data_member.size, label)
        if mode == "r:":  # uncompressed: map the member where it lies in the archive
            end = data_member.offset_data + data_member.size
            if end > path.stat().st_size:
                raise _fail(name, f"the SigMF archive is truncated: {data_member.name} runs past its end")
            data = _Data(path, data_member.offset_data, data_member.size, label)
            if verify:
                with open(path, "rb") as f:
                    _verify(meta, f, data)
            return meta, data
        with tar.extractfile(data_member) as f:  # type: ignore[union-attr]
            return meta, _spool(f, data_member.size, meta, verify, label)


def _open_zip(path: Path, name: str, *, need_data: bool, verify: bool) -> tuple[Metadata, _Data]:
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename: i for i in zf.infolist() if not i.is_dir()}
        meta_name = _pick(list(infos), name)
        for info in infos.values():
            if info.compress_type not in _ZIP_METHODS:
                raise _fail(
                    name,
                    f"{info.filename} uses zip compression method {info.compress_type}, which rfstream "
                    "cannot read (stored, deflate, bzip2 and lzma can be read)",
                )
            if info.flag_bits & 0x1:
                raise _fail(name, f"{info.filename} is encrypted")
        meta_info = infos[meta_name]
        if meta_info.file_size > MAX_META_BYTES:
            raise _fail(
                name, f"{meta_name} is {meta_info.file_size} bytes, more than the {MAX_META_BYTES} allowed"
            )
        meta = _meta_from(zf.read(meta_info), f"{name}:{meta_name}")
        data_info = infos[_data_member(meta_name, meta, list(infos), name)]
        label = f"{name}:{data_info.filename}"
        if not need_data:
            return meta, _Data(None, 0, data_info.file_size, label)
        with zf.open(data_info) as f:  # checks the member's CRC-32 at its end
            return meta, _spool(f, data_info.file_size, meta, verify, label)


# --- captures -> segments ------------------------------------------------------------------------
def _captures(meta: Metadata, name: str) -> tuple[_Capture, ...]:
    rate, offset = meta.sample_rate_hz, meta.offset
    if not meta.captures:
        log.warning("recording has no captures; assuming one at its start with frequency 0", file=name)
        return (_Capture(0, 0, 0.0, None),)
    out: list[_Capture] = []
    prev_pos = prev_gi = None
    gap_total = 0
    for cap in meta.captures:
        pos = cap.sample_start - offset
        gi = cap.global_index
        if gi is not None:
            if prev_gi is not None and prev_pos is not None:
                gap_total += max(0, (gi - prev_gi) - (pos - prev_pos))
            prev_gi = gi
        when = cap.datetime_utc
        if when is None and out and out[-1].start_time_utc is not None:
            when = utc_plus(out[-1].start_time_utc, pos + gap_total - out[-1].stream_start, rate)
        out.append(_Capture(pos, gap_total, cap.frequency_hz, when))
        prev_pos = pos
    return tuple(out)


def _segments(rec: _Recording, n: int, capture_index: int) -> list[Segment]:
    segs = []
    rate = rec.meta.sample_rate_hz
    dropped_utc = 0
    for i, cap in enumerate(rec.captures):
        stop = min(rec.captures[i + 1].position if i + 1 < len(rec.captures) else n, n)
        when = cap.start_time_utc
        if when is not None and utc_plus(when, max(0, stop - cap.position), rate) is None:
            when = None  # the capture would run past the calendar's end: no UTC rather than an overflow
            dropped_utc += 1
        segs.append(Segment(cap.position, stop, cap.stream_start, cap.center_freq_hz, when))
    if dropped_utc:
        log.warning(
            "core:datetime so late that the capture runs past the year 9999; its chunks carry no UTC",
            file=rec.name,
            captures=dropped_utc,
        )
    if capture_index >= 0:
        if capture_index >= len(rec.meta.captures):
            raise _fail(
                rec.name,
                f"capture {capture_index} does not exist (the recording has {len(rec.meta.captures)}, "
                f"numbered from 0)",
            )
        segs = [segs[capture_index]]
        if segs[0].first >= n:
            raise _fail(rec.name, f"capture {capture_index} starts after the end of the data")
    dropped = [s for s in segs if s.first >= n]
    if dropped:
        log.info("captures beyond the end of the data are skipped", file=rec.name, skipped=len(dropped))
    return segs


class SigMFSource:
    """Replays a SigMF recording as Chunks (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        *,
        chunk_ms: float = 200.0,
        channel: int = 0,
        realtime: bool = False,
        loop: bool = False,
        capture_index: int = -1,
        min_chunk_samples: int = 1,
        verify_checksum: bool = True,
        allow_external_dataset: bool = False,
    ) -> None:
        rec = _load(
            path, need_data=True, verify=verify_checksum, allow_external_dataset=allow_external_dataset
        )
        if not chunk_ms > 0:
            raise _fail(rec.name, f"chunk_ms must be > 0, got {chunk_ms!r}")
        if rec.data is None:  # pragma: no cover - need_data=True raises first
            raise _fail(rec.name, "no data file")
        n = int(rec.data.shape[0])
        self._replay = MappedReplay(
            rec.data,
            rec.fmt,
            channel=channel,
            segments=_segments(rec, n, capture_index),
            sample_rate_hz=rec.meta.sample_rate_hz,
            chunk_ms=chunk_ms,
            realtime=realtime,
            loop=loop,
            name=rec.name,
            min_chunk_samples=min_chunk_samples,
        )
        first = self._replay.first_segment
        self.info = SourceInfo(
            sample_rate_hz=rec.meta.sample_rate_hz,
            center_freq_hz=first.center_freq_hz,
            description=rec.meta.description or Path(rec.name).name,
            total_samples=None if loop else self._replay.samples_per_pass,
            start_time_utc=first.start_time_utc,
        )

    def __iter__(self) -> Iterator[Chunk]:
        return iter(self._replay)

    def close(self) -> None:
        self._replay.close()


def read_annotations(
    meta_path: str | Path,
    label_table: Mapping[str, str] | None = None,
    *,
    allow_external_dataset: bool = False,
) -> list[Annotation]:
    """The recording's annotations in stream time (as the replay's Chunks count it) and absolute Hz.

    Annotations without frequency edges span their capture's whole band
    (centre ± rate/2); without ``core:sample_count`` they run to the end of the
    data (or have zero length where the data file is absent).
    """
    rec = _load(meta_path, need_data=False, allow_external_dataset=allow_external_dataset)
    n = rec.num_samples
    rate = rec.meta.sample_rate_hz
    positions = [c.position for c in rec.captures]
    out = []
    for ann in rec.meta.annotations:
        pos = ann.sample_start - rec.meta.offset
        cap = rec.captures[max(0, int(np.searchsorted(positions, pos, side="right")) - 1)]
        count = ann.sample_count
        if count is None:
            count = max(0, n - pos) if n is not None else 0
        lo, hi = ann.freq_lower_edge_hz, ann.freq_upper_edge_hz
        if lo is None or hi is None:
            lo, hi = cap.center_freq_hz - rate / 2, cap.center_freq_hz + rate / 2
        raw_label = ann.label
        stream = pos + cap.gap_total
        out.append(
            Annotation(
                t_start_s=stream / rate,
                t_stop_s=(stream + count) / rate,
                f_low_hz=lo,
                f_high_hz=hi,
                label=map_label(raw_label, label_table) if raw_label else "unknown",
                snr_db=ann.snr_db,
                comment=ann.comment,
                raw_label=raw_label,
                generator=ann.generator,
                score=ann.score,
            )
        )
    return out
