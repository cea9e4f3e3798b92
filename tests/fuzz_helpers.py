"""Shared pieces of the input fuzzers: a valid recording, hostile values, and the CLI run in-process.

Every run goes through ``rfstream.cli.main`` exactly as the console script does (argument
parsing, config loading, the run assembled by rfstream.runner, the top-level error guard),
only without a new interpreter per run. The judge, :func:`check_outcome`, fails a run that

- raised out of ``main`` (a traceback), or ended in the guard's "internal error" line;
- took longer than its time limit (a hang);
- ended non-zero without one ``rfstream: error: ...`` line last on stderr;
- exited 0 on input the spec says cannot be right (``must_fail``), or refused input that is
  fine (``must_pass``).

``FUZZ_EXAMPLES`` scales how many examples the hypothesis tests draw (the CI default
keeps the whole fuzz under about a minute on two cores).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rfstream import cli

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0")) or None  # None: each test's CI default
RUN_TIMEOUT_S = float(os.environ.get("FUZZ_TIMEOUT_S", "60"))

# A small pipeline: only the input path is under test, so the frames are tiny and the only
# detector is the model-free one (a few runs in test_input_checks.py use the defaults).
FAST_CONFIG = """\
[spectrogram]
nfft = 256
hop = 128
height = 64
width = 64

[[detectors]]
name = "energy"
kind = "energy"
"""

RATE_HZ = 1e6
NUM_SAMPLES = 16_384
HUGE_FLOAT = "__HUGE_FLOAT__"  # serialised as the literal 1e400 (a float JSON cannot hold)
HUGE_INT = 10**400

# None, bools, +-2**63, 10**400, NaN/Infinity literals, strings, lists, dicts, long path strings
HOSTILE: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    -(2**63),
    HUGE_INT,
    HUGE_FLOAT,
    math.nan,
    math.inf,
    -math.inf,
    2.5,
    -0.5,
    1e-300,
    "",
    "x",
    "1e6",
    "cf32_le",
    "2024-01-02T03:04:05Z",
    "9999-12-31T23:59:59Z",
    "/etc/passwd",
    "../" * 40 + "etc/passwd",
    "/dev/zero",
    "a\u0000b",
    "x" * 5000,
    "d/" * 3000 + "f",
    [],
    [1, 2],
    [{}],
    {},
    {"a": 1},
]


def data_bytes(n: int = NUM_SAMPLES, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    iq = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64) * 0.1
    return iq.tobytes()


DATA = data_bytes()
DATA_SHA512 = hashlib.sha512(DATA).hexdigest()


def base_document(data: bytes = DATA) -> dict[str, Any]:
    """A valid two-capture, one-annotation recording that uses every field rfstream reads."""
    return {
        "global": {
            "core:datatype": "cf32_le",
            "core:sample_rate": RATE_HZ,
            "core:version": "1.0.0",
            "core:description": "fuzz base",
            "core:num_channels": 1,
            "core:offset": 0,
            "core:trailing_bytes": 0,
            "core:sha512": hashlib.sha512(data).hexdigest(),
            "core:metadata_only": False,
            "core:extensions": [{"name": "other", "version": "1.0.0", "optional": True}],
        },
        "captures": [
            {
                "core:sample_start": 0,
                "core:global_index": 0,
                "core:frequency": 100e6,
                "core:datetime": "2024-01-02T03:04:05.5Z",
                "core:header_bytes": 0,
            },
            {"core:sample_start": 8192, "core:frequency": 101e6},
        ],
        "annotations": [
            {
                "core:sample_start": 100,
                "core:sample_count": 1000,
                "core:freq_lower_edge": 99.9e6,
                "core:freq_upper_edge": 100.1e6,
                "core:label": "fm",
                "core:comment": "a comment",
                "core:generator": "someone",
                "rfstream:snr_db": 10.0,
            }
        ],
    }


def dumps(doc: Any) -> str:
    """JSON text as a careless writer makes it: NaN/Infinity literals, and 1e400 where asked."""
    return json.dumps(doc, allow_nan=True).replace(json.dumps(HUGE_FLOAT), "1e400")


def write_pair(folder: Path, doc: Any, data: bytes = DATA, name: str = "rec") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    meta = folder / f"{name}.sigmf-meta"
    meta.write_text(doc if isinstance(doc, str) else dumps(doc))
    (folder / f"{name}.sigmf-data").write_bytes(data)
    return meta


def fast_config(folder: Path) -> Path:
    path = folder / "fast.toml"
    if not path.exists():
        path.write_text(FAST_CONFIG)
    return path


class _Hang(BaseException):
    """Raised by the alarm: not an Exception, so the CLI's guard cannot swallow it."""


@dataclass
class Outcome:
    argv: list[str]
    rc: int | None
    stderr: str
    stdout: str
    escaped: BaseException | None = None
    hung: bool = False

    @property
    def last_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""

    def describe(self) -> str:
        return (
            f"argv={self.argv} rc={self.rc} escaped={self.escaped!r} hung={self.hung}\n{self.stderr[-3000:]}"
        )


def run_cli(argv: list[str], timeout_s: float = RUN_TIMEOUT_S) -> Outcome:
    """``rfstream ARGV`` in this process, with a hard time limit."""

    def on_alarm(_signum: int, _frame: Any) -> None:
        raise _Hang()

    err, out = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    outcome = Outcome(list(argv), None, "", "")
    here = os.getcwd()
    scratch = tempfile.mkdtemp(prefix="rfstream-fuzz-cwd-")
    os.chdir(scratch)  # a fuzzed setting that names a relative file writes it here, not in the checkout
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                outcome.rc = cli.main(argv)
            except SystemExit as exc:  # argparse's usage errors
                outcome.rc = exc.code if isinstance(exc.code, int) else 2
    except _Hang:
        outcome.hung = True
    except BaseException as exc:  # anything escaping main is what the fuzz looks for
        outcome.escaped = exc
    finally:
        os.chdir(here)
        shutil.rmtree(scratch, ignore_errors=True)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        from rfstream.runtime.logging import configure_logging

        configure_logging("auto", "warning")  # detach logging from the captured stream
        logging.captureWarnings(False)  # and give warnings back, so later tests can capture them
    outcome.stderr, outcome.stdout = err.getvalue(), out.getvalue()
    return outcome


def check_outcome(o: Outcome, *, must_fail: bool = False, must_pass: bool = False) -> None:
    """Fail the test on a traceback, an internal error, a hang, a messy error or a wrong exit."""
    assert not o.hung, "hang: " + o.describe()
    assert o.escaped is None, "escaped main: " + o.describe()
    assert "Traceback" not in o.stderr, "traceback: " + o.describe()
    assert "internal error" not in o.stderr, "internal error: " + o.describe()
    assert o.rc != cli.INTERNAL_ERROR_EXIT, o.describe()
    if o.rc != 0:
        assert o.last_line.startswith(("rfstream: error: ", "rfstream ")), (
            "not one clean line: " + o.describe()
        )
        assert len(o.last_line) < 2000, "an error line must stay readable: " + o.describe()
    if must_fail:
        assert o.rc != 0, "exit 0 on input that cannot be right: " + o.describe()
    if must_pass:
        assert o.rc == 0, "refused input that is fine: " + o.describe()


def verb_argv(verb: str, meta: Path, folder: Path, *extra: str) -> list[str]:
    """The argv of one verb on ``meta`` with the fast config (no ZeroMQ socket)."""
    config = ["--config", str(fast_config(folder)), "-q"]
    if verb == "replay":
        return ["replay", str(meta), "--no-publish", *config, *extra]
    if verb == "annotate":
        return [
            "replay",
            str(meta),
            "--no-publish",
            "--annotate",
            str(folder / "out.sigmf-meta"),
            *config,
            *extra,
        ]
    if verb == "eval":
        return ["eval", str(meta), "--json", *config, *extra]
    raise ValueError(verb)


def write_archive(
    path: Path, doc: Any, data: bytes = DATA, *, name: str = "rec", zip_method: int = 8
) -> Path:
    """A SigMF archive as the sigmf library lays one out (``rec/rec.sigmf-meta``, ``rec/rec.sigmf-data``).

    The compression follows the suffix: ``.sigmf`` (plain tar), ``.sigmf.gz``, ``.sigmf.xz``,
    ``.sigmf.zip`` (members compressed with ``zip_method``).
    """
    import tarfile
    import zipfile

    meta = (doc if isinstance(doc, str) else dumps(doc)).encode()
    members = [(f"{name}/{name}.sigmf-meta", meta), (f"{name}/{name}.sigmf-data", data)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", compression=zip_method) as zf:
            for member, content in members:
                zf.writestr(member, content)
        return path
    mode = {".gz": "w:gz", ".xz": "w:xz"}.get(path.suffix, "w")
    with tarfile.open(path, mode) as tar:
        for member, content in members:
            info = tarfile.TarInfo(member)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path
