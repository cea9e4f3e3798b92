"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest
from daemon_helpers import build_driver


@pytest.fixture(scope="module")
def driver() -> str:
    """The rfstreamtest SoapySDR driver module for a daemon subprocess (skips where it cannot be built)."""
    module = build_driver()
    if module is None:
        pytest.skip("SoapySDR bindings, a compiler or libsoapysdr-dev missing: no test driver")
    return module
