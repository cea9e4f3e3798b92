"""SigMF recordings: replay as Chunks, and read their annotations.

Accepts a ``.sigmf-meta`` or ``.sigmf-data`` path (either names the pair), a
``.sigmf`` archive (also ``.sigmf.gz/.xz/.zip``, which the sigmf library must
decompress into memory), and metas whose ``core:dataset`` names a
non-conforming data file (``core:header_bytes`` / ``core:trailing_bytes`` are
honoured). Data is memory-mapped and read chunk by chunk; conversion to
complex64 and the stream-position rules are documented in
:mod:`rfstream.sources.raw`.

Captures: each capture's ``core:frequency`` and ``core:datetime`` go on its
chunks, and a chunk never spans two captures (the last chunk of a capture may
be short). A capture without ``core:datetime`` continues the previous one's
clock. A ``core:global_index`` jump larger than the samples between two
captures is reported as ``gap_before_samples`` (and advances ``start_sample``);
so are samples before the first capture and captures left out with
``capture_index``. A data file shorter than the captures or annotations claim is
replayed as far as it goes.
"""

from __future__ import annotations

import json
import tarfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import structlog
from sigmf import error as sigmf_error
from sigmf import sigmffile
from sigmf.utils import parse_iso8601_datetime

from rfstream.errors import InputError
from rfstream.labels import map_label
from rfstream.sources.base import SourceInfo, utc_plus
from rfstream.sources.raw import (
    EXTENSION_DATATYPES,
    MappedReplay,
    SampleFormat,
    Segment,
    map_samples,
    parse_datatype,
)
from rfstream.types import Chunk

log = structlog.get_logger(__name__)

ARCHIVE_SUFFIXES = (".sigmf", ".sigmf.gz", ".sigmf.xz", ".sigmf.zip")
SNR_KEY = "rfstream:snr_db"


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
class _Recording:
    name: str  # the path the user gave, for messages
    meta: sigmffile.SigMFFile  # metadata only; the data is mapped by rfstream
    fmt: SampleFormat
    sample_rate_hz: float
    num_channels: int
    offset: int  # core:offset
    captures: tuple[_Capture, ...]
    data: np.ndarray | None  # the memory map, where the data file exists


def is_archive(path: str | Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _fail(name: str, message: str) -> InputError:
    return InputError(f"{name}: {message}")


def _load(path: str | Path, *, need_data: bool) -> _Recording:
    path = Path(path)
    name = str(path)
    if is_archive(path):
        return _load_archive(path, name)
    if path.suffix.lower() in EXTENSION_DATATYPES:
        raise _fail(
            name,
            "is a raw IQ file, not a SigMF recording; replay it with --source raw and give "
            "--rate (and --datatype if the extension is not enough)",
        )
    fns = sigmffile.get_sigmf_filenames(path)
    meta_fn = fns["meta_fn"]
    if not meta_fn.is_file():
        if fns["archive_fn"].is_file():
            return _load_archive(fns["archive_fn"], name)
        raise _fail(name, f"SigMF metadata {meta_fn} does not exist")
    try:
        metadata = json.loads(meta_fn.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(str(meta_fn), f"not a SigMF metadata file: invalid JSON ({exc})") from exc
    except OSError as exc:
        raise _fail(str(meta_fn), f"cannot read: {exc}") from exc
    meta = _metadata(metadata, str(meta_fn))
    fmt, rate, channels, offset = _global(meta, str(meta_fn))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # it warns when both core:dataset and .sigmf-data exist
            data_fn = sigmffile.get_dataset_filename_from_metadata(meta_fn, meta._metadata)
    except sigmf_error.SigMFError as exc:
        raise _fail(str(meta_fn), str(exc)) from exc
    data = None
    if data_fn is None:
        if need_data:
            raise _fail(name, f"data file {fns['data_fn']} does not exist")
    else:
        data_fn = Path(data_fn)
        header, trailing = _ncd_bytes(meta, str(meta_fn))
        size = _data_size(data_fn)
        if size == 0:
            if need_data:
                raise _fail(name, f"data file {data_fn} is empty")
        else:
            data = map_samples(
                fmt,
                channels,
                path=data_fn,
                offset=header,
                nbytes=size - header - trailing,
                name=str(data_fn),
            )
    return _Recording(name, meta, fmt, rate, channels, offset, _captures(meta, rate, offset, name), data)


def _load_archive(path: Path, name: str) -> _Recording:
    if not path.is_file():
        raise _fail(name, "SigMF archive does not exist")
    from sigmf.archivereader import SigMFArchiveReader

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = SigMFArchiveReader(path, skip_checksum=True, autoscale=False)
    except jsonschema.ValidationError as exc:
        raise _fail(name, f"SigMF metadata in the archive is invalid: {exc.message}") from exc
    except (
        sigmf_error.SigMFError,
        tarfile.TarError,
        zipfile.BadZipFile,
        ValueError,  # includes json.JSONDecodeError
        KeyError,
        OSError,
    ) as exc:
        raise _fail(name, f"not a usable SigMF archive: {exc}") from exc
    meta = reader.sigmffile
    fmt, rate, channels, offset = _global(meta, name)
    if meta.data_file is not None:  # an uncompressed tar: map the member in place
        data = map_samples(
            fmt,
            channels,
            path=Path(meta.data_file),
            offset=meta.data_offset,
            nbytes=meta.data_size_bytes,
            name=name,
        )
    else:  # compressed: the library holds the member in memory
        data = map_samples(
            fmt,
            channels,
            buffer=meta.data_buffer,
            offset=meta.data_offset,
            nbytes=meta.data_size_bytes,
            name=name,
        )
    return _Recording(name, meta, fmt, rate, channels, offset, _captures(meta, rate, offset, name), data)


def _metadata(metadata: Any, name: str) -> sigmffile.SigMFFile:
    if not isinstance(metadata, dict) or not isinstance(metadata.get("global"), dict):
        raise _fail(name, "not a SigMF metadata file: no 'global' object")
    for section in ("captures", "annotations"):
        if not isinstance(metadata.get(section, []), list):
            raise _fail(name, f"not a SigMF metadata file: '{section}' is not a list")
    metadata.setdefault("captures", [])
    metadata.setdefault("annotations", [])
    try:
        return sigmffile.SigMFFile(metadata=metadata)
    except sigmf_error.SigMFError as exc:
        raise _fail(name, f"not a SigMF metadata file: {exc}") from exc


def _global(meta: sigmffile.SigMFFile, name: str) -> tuple[SampleFormat, float, int, int]:
    datatype = meta.get_global_field("core:datatype")
    if not isinstance(datatype, str) or not datatype:
        raise _fail(name, "not a SigMF recording: global core:datatype is missing")
    fmt = parse_datatype(datatype, where=name)
    rate = meta.get_global_field("core:sample_rate")
    if rate is None:
        raise _fail(name, "global core:sample_rate is missing; rfstream needs the sample rate")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not np.isfinite(rate) or rate <= 0:
        raise _fail(name, f"core:sample_rate must be a positive number, got {rate!r}")
    channels = meta.get_global_field("core:num_channels", 1)
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise _fail(name, f"core:num_channels must be a positive integer, got {channels!r}")
    offset = meta.get_global_field("core:offset", 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise _fail(name, f"core:offset must be a non-negative integer, got {offset!r}")
    return fmt, float(rate), channels, offset


def _ncd_bytes(meta: sigmffile.SigMFFile, name: str) -> tuple[int, int]:
    captures = meta.get_captures()
    headers = [c.get("core:header_bytes", 0) for c in captures]
    if any(headers[1:]):
        log.warning("core:header_bytes after the first capture is not supported; ignored", file=name)
    header = int(headers[0]) if headers else 0
    trailing = int(meta.get_global_field("core:trailing_bytes", 0))
    return header, trailing


def _data_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise InputError(f"{path}: cannot read the data file: {exc}") from exc


def _captures(meta: sigmffile.SigMFFile, rate: float, offset: int, name: str) -> tuple[_Capture, ...]:
    raw = meta.get_captures()
    if not raw:
        log.warning("recording has no captures; assuming one at its start with frequency 0", file=name)
        raw = [{"core:sample_start": offset}]
    out: list[_Capture] = []
    prev_pos = prev_gi = None
    gap_total = 0
    for i, cap in enumerate(raw):
        if not isinstance(cap, Mapping):
            raise _fail(name, f"capture {i} is not an object")
        start = cap.get("core:sample_start")
        if isinstance(start, bool) or not isinstance(start, int):
            raise _fail(name, f"capture {i}: core:sample_start must be an integer, got {start!r}")
        pos = start - offset
        if pos < 0:
            raise _fail(name, f"capture {i}: core:sample_start {start} lies before core:offset {offset}")
        if prev_pos is not None and pos < prev_pos:
            raise _fail(name, f"capture {i}: core:sample_start {start} is before the previous capture's")
        gi = cap.get("core:global_index")
        if isinstance(gi, int) and not isinstance(gi, bool):
            if prev_gi is not None and prev_pos is not None:
                gap_total += max(0, (gi - prev_gi) - (pos - prev_pos))
            prev_gi = gi
        freq = cap.get("core:frequency", 0.0)
        if isinstance(freq, bool) or not isinstance(freq, int | float):
            raise _fail(name, f"capture {i}: core:frequency must be a number, got {freq!r}")
        when = _parse_datetime(cap.get("core:datetime"), name, i)
        if when is None and out and out[-1].start_time_utc is not None:
            when = utc_plus(out[-1].start_time_utc, pos + gap_total - out[-1].stream_start, rate)
        out.append(_Capture(pos, gap_total, float(freq), when))
        prev_pos = pos
    return tuple(out)


def _parse_datetime(value: Any, name: str, index: int) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_iso8601_datetime(str(value))
    except ValueError:
        log.warning("ignoring unparsable core:datetime", file=name, capture=index, value=value)
        return None


def _segments(rec: _Recording, n: int, capture_index: int) -> list[Segment]:
    segs = []
    for i, cap in enumerate(rec.captures):
        stop = rec.captures[i + 1].position if i + 1 < len(rec.captures) else n
        segs.append(
            Segment(cap.position, min(stop, n), cap.stream_start, cap.center_freq_hz, cap.start_time_utc)
        )
    if capture_index >= 0:
        if capture_index >= len(segs):
            raise _fail(rec.name, f"capture {capture_index} does not exist (the recording has {len(segs)})")
        segs = [segs[capture_index]]
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
    ) -> None:
        rec = _load(path, need_data=True)
        if chunk_ms <= 0:
            raise _fail(rec.name, f"chunk_ms must be > 0, got {chunk_ms!r}")
        if rec.data is None:  # pragma: no cover - need_data=True raises first
            raise _fail(rec.name, "no data file")
        n = int(rec.data.shape[0])
        self._replay = MappedReplay(
            rec.data,
            rec.fmt,
            channel=channel,
            segments=_segments(rec, n, capture_index),
            sample_rate_hz=rec.sample_rate_hz,
            chunk_ms=chunk_ms,
            realtime=realtime,
            loop=loop,
            name=rec.name,
        )
        first = self._replay.first_segment
        description = rec.meta.get_global_field("core:description") or Path(rec.name).name
        self.info = SourceInfo(
            sample_rate_hz=rec.sample_rate_hz,
            center_freq_hz=first.center_freq_hz,
            description=str(description),
            total_samples=None if loop else self._replay.samples_per_pass,
            start_time_utc=first.start_time_utc,
        )

    def __iter__(self) -> Iterator[Chunk]:
        return iter(self._replay)

    def close(self) -> None:
        self._replay.close()


def read_annotations(meta_path: str | Path, label_table: Mapping[str, str] | None = None) -> list[Annotation]:
    """The recording's annotations in stream time (as the replay's Chunks count it) and absolute Hz.

    Annotations without frequency edges span their capture's whole band
    (centre ± rate/2); without ``core:sample_count`` they run to the end of the
    data (or have zero length where the data file is absent).
    """
    rec = _load(meta_path, need_data=False)
    n = None if rec.data is None else int(rec.data.shape[0])
    rate = rec.sample_rate_hz
    positions = [c.position for c in rec.captures]
    out = []
    for i, ann in enumerate(rec.meta.get_annotations()):
        if not isinstance(ann, Mapping):
            raise _fail(rec.name, f"annotation {i} is not an object")
        start = ann.get("core:sample_start")
        if isinstance(start, bool) or not isinstance(start, int):
            raise _fail(rec.name, f"annotation {i}: core:sample_start must be an integer, got {start!r}")
        pos = start - rec.offset
        cap = rec.captures[max(0, int(np.searchsorted(positions, pos, side="right")) - 1)]
        count = ann.get("core:sample_count")
        if count is None:
            count = max(0, n - pos) if n is not None else 0
        lo, hi = ann.get("core:freq_lower_edge"), ann.get("core:freq_upper_edge")
        if lo is None or hi is None:
            lo, hi = cap.center_freq_hz - rate / 2, cap.center_freq_hz + rate / 2
        raw_label = str(ann.get("core:label", ""))
        snr = ann.get(SNR_KEY)
        stream = pos + cap.gap_total
        out.append(
            Annotation(
                t_start_s=stream / rate,
                t_stop_s=(stream + int(count)) / rate,
                f_low_hz=float(lo),
                f_high_hz=float(hi),
                label=map_label(raw_label, label_table) if raw_label else "unknown",
                snr_db=None if snr is None else float(snr),
                comment=str(ann.get("core:comment", "")),
                raw_label=raw_label,
                generator=str(ann.get("core:generator", "")),
                score=_optional_float(ann.get("rfstream:score")),
            )
        )
    return out


def _optional_float(value: Any) -> float | None:
    """A finite number, or None (a score that is missing or not a number is not drawn)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        return None
    return float(value)
