"""SigMF metadata, read and checked before anything uses it.

A ``.sigmf-meta`` is untrusted input. It is read here once, without the sigmf
library (which deep-copies the document, sorts captures by whatever their
``core:sample_start`` holds, and lets the JSON decoder recurse as deep as the
file nests), into a :class:`Metadata` record whose every field rfstream uses
has been checked for type and range. Refused, with one line naming the file and
the field:

- a path that is not a regular file (a FIFO, a device, a directory), or a file
  larger than MAX_META_BYTES;
- text that is not UTF-8 (a UTF-8 byte-order mark is skipped; UTF-16 and UTF-32
  are decoded where a byte-order mark or the JSON null-byte pattern says so);
- invalid JSON, or JSON nested deeper than MAX_JSON_DEPTH levels (counted before
  decoding, so the decoder never recurses deeply);
- ``NaN``/``Infinity`` (or a number too large for a float) anywhere in the
  document: JSON has neither, and an annotation writer could not write it back;
- ``global`` that is not an object; ``captures``, ``annotations`` or
  ``core:extensions`` that are not lists of objects;
- a field rfstream reads with the wrong type or out of range:

    ============================  =================================================
    field                         accepted
    ============================  =================================================
    core:datatype                 a string (parsed by rfstream.sources.raw)
    core:sample_rate              a number in [1, 1e12] Hz (not a bool or a string)
    core:num_channels             an integer in [1, 4096]
    core:offset                   an integer in [0, 2**53)
    core:dataset                  a non-empty string (a path; see sigmf.py for where)
    core:trailing_bytes           an integer >= 0
    core:sha512                   128 hexadecimal digits
    core:metadata_only            true or false
    core:description              a string
    core:extensions               a list of objects ("name", where given, a string)
    captures: sample_start        an integer in [core:offset, 2**53), non-decreasing
    captures: global_index        an integer in [0, 2**53)
    captures: frequency           a finite number, |f| <= 1e15 Hz
    captures: datetime            an ISO 8601 time string (UTC; "Z" or an offset)
    captures: header_bytes        an integer >= 0
    annotations: sample_start     an integer in [core:offset, 2**53)
    annotations: sample_count     an integer in [0, 2**53)
    annotations: freq_*_edge      finite numbers, |f| <= 1e15 Hz, lower <= upper
    annotations: label, comment,  strings
      generator
    annotations: rfstream:snr_db  a finite number
    annotations: rfstream:score   a number in [0, 1]
    ============================  =================================================

"An integer" follows JSON Schema: a number without a fractional part, so ``16.0``
is 16 while ``2.5`` is refused, never truncated. Fields rfstream does not read are
left as they are; an annotation writer copies them through.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from rfstream.errors import InputError
from rfstream.limits import (
    MAX_ABS_FREQ_HZ,
    MAX_CHANNELS,
    MAX_JSON_DEPTH,
    MAX_META_BYTES,
    MAX_SAMPLE_INDEX,
    MAX_SAMPLE_RATE_HZ,
    MIN_SAMPLE_RATE_HZ,
)
from rfstream.sources.base import read_bounded, show

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_META_BYTES",
    "AnnotationMeta",
    "CaptureMeta",
    "Metadata",
    "check_metadata",
    "load_metadata",
    "parse_json",
    "parse_utc",
    "read_document",
]


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)  # a JSON string (unrolled: linear time)
_BRACKETS = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_SHA512 = re.compile(r"^[0-9a-fA-F]{128}$")
_DATETIME = re.compile(  # ASCII digits only: \d would take any script's digits
    r"^(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ](?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.(?P<frac>[0-9]+))?"
    r"(?P<tz>[Zz]|[+-][0-9]{2}:?[0-9]{2})?$"
)


@dataclass(frozen=True, slots=True)
class CaptureMeta:
    """One capture, checked. Positions are SigMF sample indices (``core:offset`` included)."""

    sample_start: int
    global_index: int | None
    frequency_hz: float
    datetime_utc: datetime | None
    header_bytes: int


@dataclass(frozen=True, slots=True)
class AnnotationMeta:
    """One annotation, checked."""

    sample_start: int
    sample_count: int | None
    freq_lower_edge_hz: float | None
    freq_upper_edge_hz: float | None
    label: str
    comment: str
    generator: str
    snr_db: float | None
    score: float | None  # rfstream:score, on annotations rfstream wrote


@dataclass(frozen=True, slots=True)
class Metadata:
    """A checked SigMF metadata document; ``document`` is the JSON as read (for writers that copy it)."""

    name: str  # the path, for messages
    document: dict[str, Any]
    datatype: str
    sample_rate_hz: float
    num_channels: int
    offset: int
    dataset: str | None
    trailing_bytes: int
    sha512: str | None
    metadata_only: bool
    description: str
    captures: tuple[CaptureMeta, ...]
    annotations: tuple[AnnotationMeta, ...]

    @property
    def header_bytes(self) -> int:
        """``core:header_bytes`` of the first capture (where a non-conforming dataset's samples begin)."""
        return self.captures[0].header_bytes if self.captures else 0


# --- bytes -> JSON ----------------------------------------------------------------------------
def _decode(data: bytes, name: str) -> str:
    """UTF-8 (a BOM skipped), or UTF-16/32 where a BOM or the null-byte pattern says so."""
    try:
        encoding = json.detect_encoding(data)
    except Exception:  # pragma: no cover - detect_encoding only inspects bytes
        encoding = "utf-8"
    if encoding == "utf-8" and data.startswith(b"\xef\xbb\xbf"):
        encoding = "utf-8-sig"
    try:
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise InputError(
            f"{name}: not a SigMF metadata file: the text is not valid {encoding} ({exc.reason})"
        ) from exc
    return text[1:] if text.startswith("\ufeff") else text


def json_depth(text: str) -> int:
    """How deep arrays and objects nest in JSON text, without decoding it (no recursion)."""
    skeleton = _STRING.sub("", text).encode("utf-8", "replace")
    kept = skeleton.translate(None, bytes(b for b in range(256) if b not in _BRACKETS))
    if not kept:
        return 0
    steps = np.frombuffer(kept, dtype=np.uint8)
    return int(np.cumsum(np.where((steps == ord("[")) | (steps == ord("{")), 1, -1)).max())


def parse_json(data: bytes, name: str) -> Any:
    """Decode and parse metadata JSON with a depth limit; InputError naming the file otherwise."""
    text = _decode(data, name)
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise InputError(
            f"{name}: not a SigMF metadata file: JSON nested {depth} levels deep "
            f"(more than the {MAX_JSON_DEPTH} rfstream accepts)"
        )
    try:
        return json.loads(text, parse_constant=float)  # NaN/Infinity are found and named below
    except RecursionError as exc:  # pragma: no cover - the depth check comes first
        raise InputError(f"{name}: not a SigMF metadata file: JSON nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, and integers too long to convert
        raise InputError(f"{name}: not a SigMF metadata file: invalid JSON ({exc})") from exc


def _nonfinite_path(doc: Any) -> str | None:
    """The JSON path of a NaN/Infinity in ``doc``, or None (iterative: no recursion).

    The common case (none) walks the values only; paths are spelled out on a second walk.
    """
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, float) and not math.isfinite(node):
            break
    else:
        return None
    paths: list[tuple[str, Any]] = [("", doc)]
    while paths:
        where, node = paths.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return where or "the document"
        if isinstance(node, dict):
            paths.extend((f"{where}.{k}" if where else str(k), v) for k, v in node.items())
        elif isinstance(node, list):
            paths.extend((f"{where}[{i}]", v) for i, v in enumerate(node))
    return None  # pragma: no cover - the first walk found one


# --- field checks -----------------------------------------------------------------------------
class _Fields:
    """Typed reads of one JSON object, each failing with the file, the place and the field."""

    def __init__(self, obj: Mapping[str, Any], name: str, where: str) -> None:
        self.obj, self.name, self.where = obj, name, where

    def fail(self, key: str, message: str) -> InputError:
        return InputError(f"{self.name}: {self.where}{key} {message}")

    def integer(self, key: str, default: Any = None, *, low: int = 0, high: int = MAX_SAMPLE_INDEX) -> Any:
        if key not in self.obj:  # absent: the default; an explicit null is a wrong type
            return default
        value = self.obj[key]
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON Schema's "integer": 16.0 is 16; 2.5 is refused below
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {show(value)}")
        if not low <= value < high:
            raise self.fail(key, f"must be an integer in [{low}, {high}), got {show(value)}")
        return value

    def number(self, key: str, default: Any = None, *, low: float, high: float) -> Any:
        if key not in self.obj:
            return default
        value = self.obj[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, got {show(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise self.fail(key, f"must be a finite number, got {show(value)}")
        if not low <= number <= high:
            what = "a positive number" if low > 0 else "a number"
            raise self.fail(key, f"must be {what} in [{low:g}, {high:g}], got {show(value)}")
        return number

    def string(self, key: str, default: Any = None) -> Any:
        if key not in self.obj:
            return default
        value = self.obj[key]
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {show(value)}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        if key not in self.obj:
            return default
        value = self.obj[key]
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {show(value)}")
        return value


def parse_utc(text: str) -> datetime:
    """An ISO 8601 time (``2024-01-02T03:04:05.123456Z``; an offset or none means UTC) -> aware UTC.

    ValueError where it is not one; digits beyond microseconds are dropped.
    """
    m = _DATETIME.match(text)
    if m is None:
        raise ValueError("not an ISO 8601 time like 2024-01-02T03:04:05Z")
    frac = (m["frac"] or "")[:6].ljust(6, "0")
    naive = datetime.strptime(f"{m['date']}T{m['time']}.{frac}", "%Y-%m-%dT%H:%M:%S.%f")
    tz = m["tz"]
    if tz is None or tz in "Zz":
        return naive.replace(tzinfo=timezone.utc)
    sign = 1 if tz[0] == "+" else -1
    digits = tz[1:].replace(":", "")
    offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    if offset >= timedelta(hours=24):
        raise ValueError("a UTC offset of 24 hours or more")
    return (naive - sign * offset).replace(tzinfo=timezone.utc)  # OverflowError at the calendar's ends


def _objects(doc: Mapping[str, Any], key: str, name: str, where: str = "") -> list[Mapping[str, Any]]:
    items = doc.get(key, [])
    if not isinstance(items, list):
        raise InputError(
            f"{name}: not a SigMF metadata file: {where}'{key}' is not a list, got {show(items)}"
        )
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InputError(f"{name}: {where}{key}[{i}] is not an object, got {show(item)}")
    return items


def _capture(cap: Mapping[str, Any], i: int, name: str, offset: int) -> CaptureMeta:
    f = _Fields(cap, name, f"capture {i}: ")
    if "core:sample_start" not in f.obj:
        raise f.fail("core:sample_start", "must be an integer, but is missing (every capture needs one)")
    start = f.integer("core:sample_start")
    if start < offset:
        raise f.fail("core:sample_start", f"({start}) lies before core:offset ({offset})")
    when = f.string("core:datetime")
    utc = None
    if when is not None:
        try:
            utc = parse_utc(when)
        except (ValueError, OverflowError) as exc:
            raise f.fail("core:datetime", f"is not a usable time: {show(when)} ({exc})") from exc
    return CaptureMeta(
        sample_start=start,
        global_index=f.integer("core:global_index"),
        frequency_hz=f.number("core:frequency", 0.0, low=-MAX_ABS_FREQ_HZ, high=MAX_ABS_FREQ_HZ),
        datetime_utc=utc,
        header_bytes=f.integer("core:header_bytes", 0),
    )


def _annotation(ann: Mapping[str, Any], i: int, name: str, offset: int) -> AnnotationMeta:
    f = _Fields(ann, name, f"annotation {i}: ")
    if "core:sample_start" not in f.obj:
        raise f.fail("core:sample_start", "must be an integer, but is missing (every annotation needs one)")
    lo = f.number("core:freq_lower_edge", low=-MAX_ABS_FREQ_HZ, high=MAX_ABS_FREQ_HZ)
    hi = f.number("core:freq_upper_edge", low=-MAX_ABS_FREQ_HZ, high=MAX_ABS_FREQ_HZ)
    if lo is not None and hi is not None and lo > hi:
        raise f.fail("core:freq_lower_edge", f"({lo:g}) is above core:freq_upper_edge ({hi:g})")
    start = f.integer("core:sample_start")
    if start < offset:
        raise f.fail("core:sample_start", f"({start}) lies before core:offset ({offset})")
    return AnnotationMeta(
        sample_start=start,
        sample_count=f.integer("core:sample_count"),
        freq_lower_edge_hz=lo,
        freq_upper_edge_hz=hi,
        label=f.string("core:label", ""),
        comment=f.string("core:comment", ""),
        generator=f.string("core:generator", ""),
        snr_db=f.number("rfstream:snr_db", low=-1e6, high=1e6),
        score=f.number("rfstream:score", low=0.0, high=1.0),
    )


def check_metadata(doc: Any, name: str) -> Metadata:
    """Check a parsed metadata document (see the module docstring); InputError naming the field."""
    if not isinstance(doc, dict) or not isinstance(doc.get("global"), dict):
        raise InputError(f"{name}: not a SigMF metadata file: no 'global' object")
    glob = doc["global"]
    captures = _objects(doc, "captures", name)
    annotations = _objects(doc, "annotations", name)
    _objects(glob, "core:extensions", name, "global ")
    g = _Fields(glob, name, "global ")
    datatype = g.string("core:datatype")
    if datatype is None:
        raise InputError(f"{name}: not a SigMF recording: global core:datatype is missing")
    if len(datatype) > 32:
        raise g.fail("core:datatype", f"is not a SigMF datatype, got {show(datatype)}")
    if "core:sample_rate" not in glob:
        raise InputError(f"{name}: global core:sample_rate is missing; rfstream needs the sample rate")
    rate = g.number("core:sample_rate", low=MIN_SAMPLE_RATE_HZ, high=MAX_SAMPLE_RATE_HZ)
    sha = g.string("core:sha512")
    if sha is not None and not _SHA512.match(sha):
        raise g.fail("core:sha512", f"must be 128 hexadecimal digits, got {show(sha)}")
    for i, ext in enumerate(glob.get("core:extensions", [])):
        if "name" in ext and not isinstance(ext["name"], str):
            raise g.fail(f"core:extensions[{i}].name", f"must be a string, got {show(ext['name'])}")
    dataset = g.string("core:dataset")
    if dataset is not None and (not dataset or "\0" in dataset):
        raise g.fail("core:dataset", f"must name a file, got {show(dataset)}")
    offset = g.integer("core:offset", 0)
    meta = Metadata(
        name=name,
        document=doc,
        datatype=datatype,
        sample_rate_hz=rate,
        num_channels=g.integer("core:num_channels", 1, low=1, high=MAX_CHANNELS + 1),
        offset=offset,
        dataset=dataset,
        trailing_bytes=g.integer("core:trailing_bytes", 0, high=1 << 62),
        sha512=None if sha is None else sha.lower(),
        metadata_only=g.boolean("core:metadata_only", False),
        description=g.string("core:description", ""),
        captures=tuple(_capture(c, i, name, offset) for i, c in enumerate(captures)),
        annotations=tuple(_annotation(a, i, name, offset) for i, a in enumerate(annotations)),
    )
    for i in range(1, len(meta.captures)):
        if meta.captures[i].sample_start < meta.captures[i - 1].sample_start:
            raise InputError(
                f"{name}: capture {i}: core:sample_start {meta.captures[i].sample_start} is before "
                "the previous capture's (captures must be in order)"
            )
    bad = _nonfinite_path(doc)  # the fields above name their own; this finds the rest
    if bad is not None:
        raise InputError(f"{name}: {bad} is NaN or infinite, which JSON cannot hold")
    return meta


def read_document(path: str | Path) -> dict[str, Any]:
    """A ``.sigmf-meta`` as JSON, read the way a replay reads it (bounded, any BOM, depth-limited),
    but without the field checks: for writers that copy a recording's metadata through.

    InputError where it is not JSON with a ``global`` object.
    """
    name = str(path)
    doc = parse_json(read_bounded(path, "SigMF metadata", MAX_META_BYTES), name)
    if not isinstance(doc, dict) or not isinstance(doc.get("global"), dict):
        raise InputError(f"{name}: not a SigMF metadata file: no 'global' object")
    return doc


def load_metadata(path: str | Path, *, name: str | None = None, data: bytes | None = None) -> Metadata:
    """Read (or take ``data`` read from an archive) and check a ``.sigmf-meta``."""
    name = name or str(path)
    if data is None:
        data = read_bounded(path, "SigMF metadata", MAX_META_BYTES)
    return check_metadata(parse_json(data, name), name)
