"""``python scripts/scenegen --seed N --out BASE``: write one labelled scene (see __init__.py)."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a folder: make the package importable by name
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from scenegen.cli import main
else:
    from .cli import main

sys.exit(main())
