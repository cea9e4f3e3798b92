"""Property-based fuzz of SigMF metadata through ``replay``, ``eval`` and ``replay --annotate``.

Two fuzzers, both judged by tests/fuzz_helpers.py (no traceback, no internal error, no hang,
one clean error line) and by :func:`spec_valid`, the SigMF spec as rfstream reads it written
out independently of the code: a document it calls invalid must not exit 0, one it calls
valid must not be refused.

- **hostile values**: up to three fields of ``global``, ``captures`` and ``annotations`` (or the
  sections themselves) set to None, bools, ±2⁶³, 10⁴⁰⁰, NaN/Infinity literals, strings, lists,
  dicts, long path strings, or removed;
- **byte flips**: bytes of the JSON changed, inserted or removed; where the result still parses
  as JSON the spec judges it too.

``FUZZ_EXAMPLES=5000 pytest tests/test_fuzz_metadata.py`` runs a longer campaign.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fuzz_helpers import (
    DATA,
    EXAMPLES,
    HOSTILE,
    HUGE_FLOAT,
    base_document,
    check_outcome,
    dumps,
    run_cli,
    verb_argv,
    write_pair,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

VERBS = ("replay", "eval", "annotate")
DELETE = object()  # a mutation that removes the field

FUZZ = settings(
    max_examples=EXAMPLES or 150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


# --- the spec, as rfstream reads it ---------------------------------------------------------------
_SAMPLE_BYTES = {"f32": 8, "f64": 16, "i32": 8, "i16": 4, "i8": 2, "u32": 8, "u16": 4, "u8": 2}
_COMPLEX = re.compile(r"^c(f32|f64|i32|i16|i8|u32|u16|u8)(_le|_be)?$")
_ISO = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?(Z|[+-][0-9]{2}:?[0-9]{2})?$"
)
MAX_INDEX = 2**53


def _num(v: Any) -> float | None:
    """A JSON number that is finite, as a float; None for anything else (bools are not numbers)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _int(v: Any, low: int = 0, high: int = MAX_INDEX) -> bool:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return isinstance(v, int) and not isinstance(v, bool) and low <= v < high


def _datatype_bytes(v: Any) -> int | None:
    m = _COMPLEX.match(v) if isinstance(v, str) else None
    if m is None or (m[1] not in ("i8", "u8") and m[2] is None):
        return None
    return _SAMPLE_BYTES[m[1]]


def _iso(v: Any) -> bool:
    m = _ISO.match(v) if isinstance(v, str) else None
    if m is None:
        return False
    try:
        when = datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]))
    except ValueError:
        return False
    tz = m[8]
    if not tz or tz == "Z":
        return True
    offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[-2:]))
    if offset >= timedelta(hours=24):
        return False
    try:
        when - offset if tz[0] == "+" else when + offset
    except OverflowError:
        return False
    return True


def _finite_everywhere(node: Any) -> bool:
    if isinstance(node, float):
        return math.isfinite(node)
    if isinstance(node, dict):
        return all(_finite_everywhere(v) for v in node.values())
    if isinstance(node, list):
        return all(_finite_everywhere(v) for v in node)
    return True


def spec_valid(doc: Any, verb: str, data: bytes = DATA) -> bool:
    """Whether rfstream must accept ``doc`` (paired with ``data``) for ``verb``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("global"), dict):
        return False
    g = doc["global"]
    caps, anns = doc.get("captures", []), doc.get("annotations", [])
    for items in (caps, anns, g.get("core:extensions", [])):
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            return False
    if any("name" in e and not isinstance(e["name"], str) for e in g.get("core:extensions", [])):
        return False
    if not _finite_everywhere(doc):
        return False
    sample_bytes = _datatype_bytes(g.get("core:datatype"))
    rate = _num(g.get("core:sample_rate"))
    channels = g.get("core:num_channels", 1)
    offset = g.get("core:offset", 0)
    trailing = g.get("core:trailing_bytes", 0)
    if (
        sample_bytes is None
        or rate is None
        or not 1 <= rate <= 1e12
        or not _int(channels, 1, 4097)
        or not _int(offset)
        or not _int(trailing, 0, 2**62)
        or not isinstance(g.get("core:metadata_only", False), bool)
        or not isinstance(g.get("core:description", ""), str)
        or "core:dataset" in g  # the base has none; a hostile one never names the data
    ):
        return False
    if "core:sha512" in g and g["core:sha512"] != hashlib.sha512(data).hexdigest():
        return False
    offset = int(offset)
    starts = []
    for c in caps:
        if (
            "core:sample_start" not in c
            or not _int(c["core:sample_start"])
            or c["core:sample_start"] < offset
        ):
            return False
        starts.append(int(c["core:sample_start"]))
        if "core:global_index" in c and not _int(c["core:global_index"]):
            return False
        if "core:frequency" in c and (_num(c["core:frequency"]) is None or abs(c["core:frequency"]) > 1e15):
            return False
        if "core:datetime" in c and not _iso(c["core:datetime"]):
            return False
        if "core:header_bytes" in c and not _int(c["core:header_bytes"]):
            return False
    if starts != sorted(starts):
        return False
    for a in anns:
        if (
            "core:sample_start" not in a
            or not _int(a["core:sample_start"])
            or a["core:sample_start"] < offset
        ):
            return False
        if "core:sample_count" in a and not _int(a["core:sample_count"]):
            return False
        edges = []
        for key in ("core:freq_lower_edge", "core:freq_upper_edge"):
            if key in a:
                if _num(a[key]) is None or abs(a[key]) > 1e15:
                    return False
                edges.append(a[key])
        if len(edges) == 2 and edges[0] > edges[1]:
            return False
        if any(
            k in a and not isinstance(a[k], str) for k in ("core:label", "core:comment", "core:generator")
        ):
            return False
        if "rfstream:snr_db" in a and (_num(a["rfstream:snr_db"]) is None or abs(a["rfstream:snr_db"]) > 1e6):
            return False
    header = int(caps[0].get("core:header_bytes", 0)) if caps else 0
    if header + int(trailing) > len(data):
        return False
    n = (len(data) - header - int(trailing)) // (sample_bytes * int(channels))
    if n < 1 or (starts and starts[0] - offset >= n):
        return False  # no complete sample, or nothing to replay
    return not (verb == "eval" and not anns)


# --- mutations ----------------------------------------------------------------------------------
def _fields() -> list[tuple[Any, ...]]:
    base = base_document()
    out: list[tuple[Any, ...]] = [("global",), ("captures",), ("annotations",)]
    out += [("global", k) for k in base["global"]] + [("global", "core:dataset"), ("global", "x:y")]
    out += [("global", "core:extensions", 0)]
    for i, cap in enumerate(base["captures"]):
        out += [("captures", i, k) for k in cap] + [("captures", i, "x:y")]
    out += [("captures", 0)]
    out += [("annotations", 0, k) for k in base["annotations"][0]] + [
        ("annotations", 0, "x:y"),
        ("annotations", 0),
    ]
    return out


FIELDS = _fields()
VALUES = st.one_of(
    st.sampled_from(HOSTILE),
    st.just(DELETE),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(
        ["cu8", "ci16_le", "cf64_be", "ci16", "rf32_le", "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z"]
    ),
)


def _apply(doc: dict, path: tuple[Any, ...], value: Any) -> None:
    node: Any = doc
    for part in path[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return  # an earlier mutation removed or replaced the parent
    if not isinstance(node, dict | list):
        return
    key = path[-1]
    if isinstance(node, list) and (not isinstance(key, int) or key >= len(node)):
        return
    if isinstance(node, dict) and isinstance(key, int):
        return
    if value is DELETE:
        if isinstance(node, list) or key in node:
            del node[key]
    else:
        node[key] = value


def _for_oracle(value: Any) -> Any:
    return math.inf if isinstance(value, str) and value == HUGE_FLOAT else value


def _oracle_view(doc: Any) -> Any:
    """The document as JSON text makes it: the 1e400 marker is an infinity once parsed."""
    return json.loads(dumps(doc), parse_constant=float)


@FUZZ
@given(
    mutations=st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), min_size=1, max_size=3),
    verb=st.sampled_from(VERBS),
)
# found by this fuzzer: a tiny recording stamped over 335 MHz, more than 2**26 samples per 200 ms
@example(mutations=[(("global", "core:sample_rate"), 335544323)], verb="replay")
def test_hostile_values_in_every_field(mutations, verb):
    doc = copy.deepcopy(base_document())
    for path, value in mutations:
        _apply(doc, path, value)
    expect = spec_valid(_oracle_view(doc), verb)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        meta = write_pair(folder, doc)
        outcome = run_cli(verb_argv(verb, meta, folder))
        check_outcome(outcome, must_fail=not expect, must_pass=expect)
        if verb == "annotate" and outcome.rc == 0:  # what rfstream writes, rfstream reads back
            check_outcome(run_cli(verb_argv("replay", folder / "out.sigmf-meta", folder)), must_pass=True)


@FUZZ
@given(
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete"]), st.integers(min_value=0), st.integers(0, 255)
        ),
        min_size=1,
        max_size=6,
    ),
    verb=st.sampled_from(VERBS),
)
def test_byte_flips_of_the_json(edits, verb):
    blob = bytearray(dumps(base_document()).encode())
    for op, where, byte in edits:
        i = where % (len(blob) + 1)
        if op == "insert":
            blob.insert(i, byte)
        elif blob and i < len(blob):
            if op == "flip":
                blob[i] = byte
            else:
                del blob[i]
    try:
        doc = json.loads(bytes(blob).decode("utf-8"), parse_constant=float)
        expect: bool | None = spec_valid(doc, verb)
    except (UnicodeDecodeError, ValueError, RecursionError):
        expect = False  # not UTF-8 JSON: it must be refused
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        meta = folder / "rec.sigmf-meta"
        write_pair(folder, "{}")
        meta.write_bytes(bytes(blob))
        check_outcome(
            run_cli(verb_argv(verb, meta, folder)), must_fail=expect is False, must_pass=bool(expect)
        )


def test_the_oracle_agrees_with_the_base_and_knows_bad_values():
    base = base_document()
    assert all(spec_valid(base, v) for v in VERBS)
    for path, value in (
        (("global", "core:sample_rate"), True),
        (("captures", 0, "core:frequency"), math.nan),
    ):
        doc = copy.deepcopy(base)
        _apply(doc, path, value)
        assert not spec_valid(doc, "replay")
    doc = copy.deepcopy(base)
    doc["annotations"] = []
    assert spec_valid(doc, "replay") and not spec_valid(doc, "eval")
    assert _for_oracle(HUGE_FLOAT) == math.inf
