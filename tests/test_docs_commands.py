"""Every command in README.md and docs/*.md works as written (issue 11 §2).

The convention (docs/architecture.md, "Commands in the docs are tested"): every ``sh`` code
block is marked on the line before it, either

    <!-- runnable -->                    run it, as written, and it must succeed
    <!-- runnable: stop-after=20 expect=detections requires=jq -->
    <!-- not-runnable: REASON -->        say why it cannot run in CI (an SDR, sudo, systemd, hours)

A runnable block runs with ``bash -e -o pipefail`` in a fresh folder holding the files the docs
name: ``capture.sigmf-meta`` + ``.sigmf-data`` (a 1 s, 2 MS/s synthetic recording), the same as
the archive ``capture.sigmf``, ``dets.sigmf-meta`` (its ``replay --annotate`` output) and
``rtl.cu8`` (1 s of rtl_sdr-style bytes at 2.4 MS/s), with
the venv's ``rfstream`` first on PATH. It fails on a non-zero exit, a traceback, or an
``rfstream: error:`` line anywhere in its output. Options:

- ``stop-after=N``: the block runs a server, a daemon or ``listen``: after N seconds its process
  group gets SIGTERM; it passes if it was still running then (or had exited 0 before);
- ``expect=TEXT``: the output must contain TEXT (e.g. that ``listen`` received detections);
- ``timeout=N``: the most seconds it may take (default 600);
- ``requires=a,b``: programs it needs; skipped, not failed, where one is missing;
- ``ports=5555,8080``: loopback ports it uses as written; skipped where another program holds one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_INFO = {"sh", "bash", "shell", "console"}
MARKER = re.compile(r"^<!--\s*(runnable|not-runnable)\s*(?::\s*(.*?))?\s*-->$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    info: str
    text: str
    marker: str | None  # "runnable", "not-runnable" or None
    options: dict[str, str] = field(default_factory=dict)
    reason: str = ""

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```\s*(\S*)", lines[i])
        if not m:
            i += 1
            continue
        info, start = m.group(1).lower(), i
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker, options, reason = None, {}, ""
        mm = MARKER.match(lines[k].strip()) if k >= 0 else None
        if mm:
            marker = mm.group(1)
            rest = mm.group(2) or ""
            if marker == "runnable":
                options = dict(tok.split("=", 1) for tok in rest.split() if "=" in tok)
            else:
                reason = rest
        out.append(Block(path, start + 1, info, "\n".join(lines[start + 1 : j]), marker, options, reason))
        i = j + 1
    return out


ALL = [b for doc in DOCS for b in _blocks(doc)]
SHELL = [b for b in ALL if b.info in SHELL_INFO]
RUNNABLE = [b for b in SHELL if b.marker == "runnable"]


def test_every_shell_block_is_marked_runnable_or_says_why_not():
    unmarked = [b.id for b in SHELL if b.marker is None]
    assert not unmarked, f"mark these <!-- runnable --> or <!-- not-runnable: REASON -->: {unmarked}"
    for b in SHELL:
        if b.marker == "not-runnable":
            assert len(b.reason) >= 10, f"{b.id}: say why it cannot run"
        else:
            assert set(b.options) <= {"stop-after", "expect", "timeout", "requires", "ports"}, (
                b.id,
                b.options,
            )


def test_command_lines_live_in_shell_blocks():
    """A command shown in a plain block would escape this test: it must be an sh block."""
    for b in ALL:
        if b.info in SHELL_INFO or b.info in {"toml", "ini", "json", "python"}:
            continue
        commands = [ln for ln in b.text.splitlines() if re.match(r"^\s*(rfstream|python|pip|curl) ", ln)]
        assert not commands, f"{b.id}: commands in a ```{b.info or '(plain)'} block: {commands}"


def test_protocol_shows_only_labels_that_exist():
    """docs/protocol.md once showed `wifi` and `lora`, labels rfstream never sends."""
    from rfstream.labels import LABELS

    text = (ROOT / "docs" / "protocol.md").read_text()
    rows = [ln for ln in text.splitlines() if re.match(r"^\|\s*`label`\s*\|", ln)]
    assert rows, "protocol.md documents the label field"
    for row in rows:
        meaning = row.split("|")[3]
        shown = [w for w in re.findall(r"`([^`]+)`", meaning) if "/" not in w]
        assert set(shown) <= set(LABELS), (row, set(shown) - set(LABELS))
    assert any(set(LABELS) <= set(re.findall(r"`([^`]+)`", row)) for row in rows), "the whole taxonomy, once"


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Path:
    """The files the docs' commands name."""
    from rfstream.sources.synth import synthesize

    d = tmp_path_factory.mktemp("docfiles")
    synthesize(d / "capture", sample_rate_hz=2e6, duration_s=1.0, seed=1)
    with tarfile.open(d / "capture.sigmf", "w") as tar:
        for suffix in (".sigmf-meta", ".sigmf-data"):
            tar.add(d / f"capture{suffix}", arcname=f"capture/capture{suffix}")
    rng = np.random.default_rng(0)
    n = int(2.4e6)
    t = np.arange(n) / 2.4e6
    iq = 0.05 * (rng.standard_normal(n) + 1j * rng.standard_normal(n)) + 0.3 * np.exp(2j * np.pi * 200e3 * t)
    raw = np.empty(2 * n, np.uint8)
    raw[0::2] = np.clip(127.5 + 127 * iq.real, 0, 255).astype(np.uint8)
    raw[1::2] = np.clip(127.5 + 127 * iq.imag, 0, 255).astype(np.uint8)
    (d / "rtl.cu8").write_bytes(raw.tobytes())
    annotate = subprocess.run(
        [sys.executable, "-m", "rfstream.cli", "replay", str(d / "capture.sigmf-meta"), "--no-publish", "-q",
         "--annotate", str(d / "dets.sigmf-meta")],
        capture_output=True, text=True, env=_env(d), timeout=300,
    )  # fmt: skip
    assert annotate.returncode == 0, annotate.stderr
    return d


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RFSTREAM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    env["HOME"] = str(home)  # nothing a command writes lands in the real home
    env.pop("NOTIFY_SOCKET", None)
    return env


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_runnable_block_works_as_written(block: Block, fixtures: Path, tmp_path: Path):
    for program in filter(None, block.options.get("requires", "").split(",")):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed")
    for port in filter(None, block.options.get("ports", "").split(",")):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", int(port))) == 0:
                pytest.skip(f"port {port}, which the block uses as written, is taken by another program")
    work = tmp_path / "work"
    shutil.copytree(fixtures, work)
    script = f"set -e -o pipefail\ncd {work}\n{block.text}\n"
    stop_after = float(block.options.get("stop-after", 0))
    timeout = float(block.options.get("timeout", 600))
    log = tmp_path / "output"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", "-c", script], cwd=work, env=_env(tmp_path), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            rc = proc.wait(timeout=stop_after or timeout)
        except subprocess.TimeoutExpired:
            if not stop_after:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                pytest.fail(f"{block.id} took more than {timeout:g} s:\n{log.read_text()[-3000:]}")
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            rc = 0  # still running when stopped: what a daemon or server should be
        finally:
            time.sleep(0.2)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # a background job the block left behind
    output = log.read_text(errors="replace")
    assert rc == 0, f"{block.id} exited {rc}:\n{block.text}\n---\n{output[-4000:]}"
    assert "Traceback" not in output, f"{block.id}:\n{output[-4000:]}"
    assert "rfstream: error:" not in output, f"{block.id}:\n{output[-4000:]}"
    if "expect" in block.options:
        assert block.options["expect"] in output, (
            f"{block.id}: no {block.options['expect']!r} in:\n{output[-4000:]}"
        )
