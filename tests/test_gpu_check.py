"""scripts/gpu_check.sh on a machine without a GPU, and the ``gpu`` extra's pins.

The script's real work needs a CUDA machine; here it is checked for syntax (``bash -n``,
and shellcheck where installed), for saying "no GPU" with exit 2 before touching
anything, and — with a stand-in ``nvidia-smi`` and a stand-in Python that fails every
GPU step — for running every step, reporting each failure and exiting 1 (or 3 when
the environment cannot be set up).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def run(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def fake_bin(tmp_path: Path, **scripts: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(0o755)
    return bin_dir


def test_the_script_parses_and_passes_shellcheck():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed")
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_without_a_gpu_it_says_so_and_exits_2(tmp_path):
    # No nvidia-smi on PATH at all (this machine), then one hidden by CUDA_VISIBLE_DEVICES.
    path_without = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "nvidia-smi").exists()
    )
    work = tmp_path / "work"
    result = run({"PATH": path_without, "GPU_CHECK_WORK": str(work)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no CUDA GPU visible" in result.stdout and "nothing was checked" in result.stdout
    assert not work.exists()  # nothing was set up
    smi = fake_bin(tmp_path, **{"nvidia-smi": 'echo "GPU 0: Stand-in (UUID: GPU-0)"'})
    hidden = run(
        {"PATH": f"{smi}{os.pathsep}{path_without}", "CUDA_VISIBLE_DEVICES": "", "GPU_CHECK_WORK": str(work)}
    )
    assert hidden.returncode == 2 and "no CUDA GPU visible" in hidden.stdout


def _stand_in_venv(tmp_path: Path, *, importable: bool) -> Path:
    """A venv whose python imports rfstream (or not) and fails everything else, at once."""
    venv = tmp_path / "venv"
    ok = "exit 0" if importable else "exit 1"
    fake_bin(
        venv,
        python=f'case "$*" in *"import rfstream, pytest"*) {ok};; esac\necho "stand-in python: $*" >&2\nexit 1',
    )
    return venv


def test_with_a_gpu_every_step_runs_and_each_failure_is_reported(tmp_path):
    smi = fake_bin(tmp_path, **{"nvidia-smi": 'echo "GPU 0: Stand-in (UUID: GPU-0)"'})
    venv = _stand_in_venv(tmp_path, importable=True)
    work = tmp_path / "work"
    result = run(
        {
            "PATH": f"{smi}{os.pathsep}{os.environ['PATH']}",
            "GPU_CHECK_INSTALL": "0",
            "GPU_CHECK_VENV": str(venv),
            "GPU_CHECK_WORK": str(work),
        }
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    steps = ("install", "machine", "tests", "engines", "bench")
    rows = [
        row for row in (line.split() for line in lines if line.startswith("  ")) if row and row[0] in steps
    ]
    summary = {row[0]: row[1] for row in rows}
    assert summary == {
        "install": "PASS",
        "machine": "FAIL",
        "tests": "FAIL",
        "engines": "FAIL",
        "bench": "FAIL",
    }
    assert "rfstream GPU check" in result.stdout
    for step in ("install", "machine", "tests", "engines", "bench"):
        assert (work / "logs" / f"{step}.log").is_file()


def test_an_environment_that_cannot_be_set_up_exits_3(tmp_path):
    smi = fake_bin(tmp_path, **{"nvidia-smi": 'echo "GPU 0: Stand-in (UUID: GPU-0)"'})
    venv = _stand_in_venv(tmp_path, importable=False)
    result = run(
        {
            "PATH": f"{smi}{os.pathsep}{os.environ['PATH']}",
            "GPU_CHECK_INSTALL": "0",
            "GPU_CHECK_VENV": str(venv),
            "GPU_CHECK_WORK": str(tmp_path / "work"),
        }
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "could not be installed" in result.stdout


def test_the_gpu_extra_pins_versions_whose_apis_the_code_uses():
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    gpu = {spec.split(">")[0].split("<")[0].strip(): spec for spec in extras["gpu"]}
    assert gpu["cupy-cuda12x"] == "cupy-cuda12x>=13,<14"
    assert gpu["tensorrt"] == "tensorrt>=8.6,<11"  # TensorRT 11 removed the FP16/INT8 builder flags
