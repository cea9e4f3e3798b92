"""Fuzz of settings and flags: every config key through ``--set`` and the environment, the numeric flags.

Judged by tests/fuzz_helpers.py (one clean line, never a traceback or a hang). A numeric key set to
something that is not a number, or to a value outside any range the code serves (NaN, ±inf,
10⁴⁰⁰, ±2⁶³, 10³⁰), must be refused: the start stops with the key's name.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import typing
from pathlib import Path

from fuzz_helpers import EXAMPLES, base_document, check_outcome, fast_config, run_cli, write_pair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rfstream.config import Config, DetectorConfig

# Settings a fuzz must leave alone: loop replays forever by design; a valid endpoint would bind.
SKIP = {"source.loop", "publish.endpoint", "runtime.metrics_endpoint"}


def _keys() -> dict[str, type]:
    out: dict[str, type] = {}
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        if section.name == "detectors":
            for f in dataclasses.fields(DetectorConfig):
                out[f"detectors.0.{f.name}"] = typing.get_type_hints(DetectorConfig)[f.name]
            continue
        cls = hints[section.name]
        for f in dataclasses.fields(cls):
            key = f"{section.name}.{f.name}"
            if key not in SKIP:
                out[key] = typing.get_type_hints(cls)[f.name]
    for option in (
        "smooth_t",
        "closing_f",
        "min_area_px",
        "hop",
        "stats_stride",
        "max_detections",
        "seed_sigma",
    ):
        out[f"detectors.0.options.{option}"] = int
    return out


KEYS = _keys()
# TOML text for --set, with whether a numeric key may take it (None: not a number at all)
TOML_VALUES: dict[str, float | None] = {
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "1e400": math.inf,
    "9223372036854775808": 2.0**63,
    "-9223372036854775808": -(2.0**63),
    "1" + "0" * 400: math.inf,
    "1e30": 1e30,
    "-1e30": -1e30,
    "true": None,
    '"x"': None,
    '""': None,
    '"/etc/passwd"': None,
    "[1, 2]": None,
    "{a = 1}": None,
    '"' + "d/" * 2000 + '"': None,
    "0": 0.0,
    "-1": -1.0,
    "2.5": 2.5,
    "1e-300": 1e-300,
}


def _must_fail(key: str, text: str) -> bool:
    if KEYS[key] not in (int, float):
        return False
    number = TOML_VALUES[text]
    return number is None or not math.isfinite(number) or abs(number) >= 1e15


@settings(
    max_examples=EXAMPLES or 100, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(
    key=st.sampled_from(sorted(KEYS)),
    text=st.sampled_from(sorted(TOML_VALUES)),
    via=st.sampled_from(["set", "env"]),
)
def test_hostile_settings(key, text, via):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        meta = write_pair(folder, base_document())
        argv = ["replay", str(meta), "--no-publish", "-q", "--config", str(fast_config(folder))]
        env_name = ""
        if via == "env" and not key.startswith("detectors."):
            section, name = key.split(".")
            env_name = f"RFSTREAM_{section.upper()}__{name.upper()}"
            os.environ[env_name] = text.strip('"')  # the environment holds text, not TOML
        else:
            argv += ["--set", f"{key}={text}"]
        try:
            outcome = run_cli(argv)
        finally:
            if env_name:
                del os.environ[env_name]
        check_outcome(outcome, must_fail=_must_fail(key, text))


FLAGS = ["--rate", "--freq", "--chunk-ms", "--channel", "--capture-index"]
FLAG_VALUES = [
    "nan",
    "-inf",
    "1e400",
    "1e-300",
    "-250e3",
    "0",
    "-1",
    "abc",
    "",
    "0x10",
    "99999999999999999999",
    "1e6",
]


@settings(
    max_examples=EXAMPLES or 60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(
    flag=st.sampled_from(FLAGS), value=st.sampled_from(FLAG_VALUES), verb=st.sampled_from(["replay", "eval"])
)
def test_hostile_flag_values(flag, value, verb):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        meta = write_pair(folder, base_document())
        argv = [verb, str(meta), "-q", "--config", str(fast_config(folder)), flag, value]
        if verb == "replay":
            argv.append("--no-publish")
        check_outcome(run_cli(argv), must_fail=_flag_must_fail(flag, value, verb))


def _flag_must_fail(flag: str, value: str, verb: str) -> bool:
    """What the base recording (one channel, two captures) cannot take for each flag."""
    if flag in ("--channel", "--capture-index"):
        try:
            number = int(value)
        except ValueError:
            return True  # argparse refuses it
        return number != 0 if flag == "--channel" else not -1 <= number <= 1
    try:
        x = float(value)
    except ValueError:
        return True
    if not math.isfinite(x):
        return True
    if flag == "--rate":  # replay: any rate makes it a raw file, which a .sigmf-meta is not
        return x < 0 or 0 < x < 1 or x > 1e12 or (verb == "replay" and x > 0)
    if flag == "--freq":
        return abs(x) > 1e15
    return not 1 <= x <= 60_000  # --chunk-ms


@settings(max_examples=EXAMPLES or 20, deadline=None, database=None)
@given(
    rates=st.lists(
        st.sampled_from(["abc", "nan", "-1", "0", "1e400", "", " ", "1e-300", "1e13"]), min_size=1, max_size=3
    )
)
def test_bench_rates_that_cannot_be_benchmarked(rates):
    check_outcome(run_cli(["bench", "--rates", ",".join(rates), "-q"]), must_fail=True)
