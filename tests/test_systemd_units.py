"""The systemd units parse cleanly (`systemd-analyze verify`) and keep the settings the daemon relies on.

Needs the `systemd` package for systemd-analyze (skipped without it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)"
)


def _verify(*units: Path) -> list[str]:
    """Problems systemd-analyze reports about these unit files (it exits 0 on unknown keys)."""
    proc = subprocess.run(
        [ANALYZE, "verify", *map(str, units)], capture_output=True, text=True, timeout=60, check=False
    )
    names = [u.name for u in units]
    lines = (proc.stdout + proc.stderr).splitlines()
    problems = [line for line in lines if any(name in line for name in names)]
    if proc.returncode != 0 and not problems:
        problems = lines or [f"systemd-analyze exited {proc.returncode}"]
    return problems


def _instance(tmp_path: Path, name: str) -> Path:
    """A template is verified as one of its instances."""
    path = tmp_path / f"rfstream@{name}.service"
    shutil.copy(UNITS / "rfstream@.service", path)
    return path


@needs_analyze
def test_units_verify_cleanly(tmp_path):
    assert _verify(UNITS / "rfstream.service", _instance(tmp_path, "rtl0")) == []


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path):
    broken = tmp_path / "rfstream.service"
    broken.write_text((UNITS / "rfstream.service").read_text().replace("WatchdogSec=", "WatchdogSecs="))
    assert any("WatchdogSecs" in line for line in _verify(broken))


def _settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.parametrize("unit", ["rfstream.service", "rfstream@.service"])
def test_units_keep_notify_watchdog_and_hardening(unit):
    s = _settings(UNITS / unit)
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] == ["10"] and s["Restart"] == ["on-failure"]
    assert s["ExecStart"][0].startswith("/usr/bin/env rfstream run --config /etc/rfstream/")
    assert s["CapabilityBoundingSet"] == [""] and s["AmbientCapabilities"] == [""]
    assert s["NoNewPrivileges"] == ["yes"] and s["ProtectSystem"] == ["strict"]
    assert s["DynamicUser"] == ["yes"] and s["SupplementaryGroups"] == ["plugdev"]
    assert "char-usb_device rw" in s["DeviceAllow"]
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]


def test_template_instances_do_not_share_config_or_state():
    s = _settings(UNITS / "rfstream@.service")
    assert s["ExecStart"][0].endswith("--config /etc/rfstream/%i.toml")
    assert "rfstream/%i" in s["StateDirectory"][0].split()
    assert s["RuntimeDirectory"] == ["rfstream/%i"]


def _exposure(unit: Path) -> float:
    """The overall exposure `systemd-analyze security` gives a unit file (0 best, 10 worst)."""
    proc = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60
    )
    for line in (proc.stdout + proc.stderr).splitlines():
        if "Overall exposure level" in line:
            return float(line.split(":")[1].split()[0])
    raise AssertionError(f"no exposure level in: {proc.stdout}{proc.stderr}")


@needs_analyze
@pytest.mark.parametrize("unit", ["rfstream.service", "rfstream@.service"])
def test_security_exposure_stays_at_most_1_7(tmp_path, unit):
    path = _instance(tmp_path, "rtl0") if "@" in unit else UNITS / unit
    assert _exposure(path) <= 1.7


@needs_analyze
def test_the_exposure_check_can_fail(tmp_path):
    weak = tmp_path / "rfstream.service"
    text = (UNITS / "rfstream.service").read_text()
    for setting in ("ProtectSystem=strict", "PrivateTmp=yes", "ProtectHome=yes", "IPAddressDeny=any"):
        text = text.replace(setting, "")
    weak.write_text(text)
    assert _exposure(weak) > 1.7


@pytest.mark.parametrize("unit", ["rfstream.service", "rfstream@.service"])
def test_units_carry_the_cheap_remaining_hardening(unit):
    s = _settings(UNITS / unit)
    assert s["ProcSubset"] == ["pid"] and s["PrivateMounts"] == ["yes"]
    assert s["IPAddressDeny"] == ["any"] and s["IPAddressAllow"] == ["localhost"]
    assert s["LimitCORE"] == ["0"] and s["MemoryMax"] and s["TasksMax"]
