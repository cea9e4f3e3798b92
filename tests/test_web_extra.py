"""Without the `web` extra the web verbs say how to get it, in one line (the demo needs no extra)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

HIDE_AIOHTTP = (
    "import sys; sys.modules['aiohttp'] = None; from rfstream.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.parametrize("verb", ["view", "serve"])
def test_web_verbs_name_the_missing_extra(verb):
    proc = subprocess.run(
        [sys.executable, "-c", HIDE_AIOHTTP, verb],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"rfstream: error: 'rfstream {verb}' needs the web extra: pip install 'rfstream[web]'"
