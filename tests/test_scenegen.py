"""scenegen, the independent scene generator: independent, deterministic, valid SigMF, honest annotations."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "scripts" / "scenegen"
sys.path.insert(0, str(PKG.parent))

from scenegen import DSSS_FAMILY, FAMILY, MODULATIONS, generate_scene  # noqa: E402
from scenegen.scene import occupied_band  # noqa: E402

from rfstream.labels import LABELS  # noqa: E402
from rfstream.sources.sigmf import read_annotations  # noqa: E402

DTYPES = {"cf32_le": "<f4", "ci16_le": "<i2", "cu8": "u1"}


def load_iq(meta: Path) -> tuple[dict, np.ndarray]:
    m = json.loads(meta.read_text())
    dt = m["global"]["core:datatype"]
    raw = np.fromfile(meta.with_suffix(".sigmf-data"), dtype=DTYPES[dt]).astype(np.float32)
    if dt == "cu8":
        raw -= 127.5
    return m, (raw[0::2] + 1j * raw[1::2]).astype(np.complex64)


# --- independence ----------------------------------------------------------------------------------
def test_scenegen_imports_nothing_from_rfstream():
    files = sorted(PKG.glob("*.py"))
    assert len(files) >= 5
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert not name.startswith("rfstream"), f"{path.name} imports {name}"


def test_making_a_scene_loads_no_rfstream_module(tmp_path):
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from scenegen import generate_scene;"
        "generate_scene(sys.argv[2], seed=3, sample_rate_hz=1e6, duration_s=0.1);"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'rfstream');"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(PKG.parent), str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the catalogue --------------------------------------------------------------------------------------
def test_about_forty_types_each_mapped_to_a_family_rfstream_knows():
    assert len(MODULATIONS) >= 40
    assert set(FAMILY) == set(MODULATIONS)
    assert set(FAMILY.values()) <= set(LABELS) - {"unknown"}
    assert FAMILY["dsss_barker"] == FAMILY["dsss_pn"] == DSSS_FAMILY
    assert {"tone", "am", "fm", "fsk", "ook", "psk", "ofdm", "chirp", "pulsed"} <= set(FAMILY.values())


@pytest.mark.parametrize("fs", [1e6, 10e6])
def test_every_type_renders_finite_unit_power_inside_the_band(fs):
    rng = np.random.default_rng(7)
    made = 0
    for name, mod in sorted(MODULATIONS.items()):
        plan = mod.plan(rng, fs)
        if plan is None:
            continue
        n = int(0.02 * fs)
        x, duty = mod.render(rng, plan, n, fs)
        assert x.dtype == np.complex64 and 16 <= x.size <= n, name
        assert np.all(np.isfinite(x)), name
        assert 0 < duty <= 1, name
        mean = float(np.mean(np.abs(x) ** 2))
        assert mean / duty == pytest.approx(1.0, rel=0.35), name  # unit power over the on samples
        lo, hi = occupied_band(x, fs, plan["bw_hz"])
        assert -0.5 * fs <= lo < hi <= 0.5 * fs, name
        made += 1
    assert made >= (30 if fs == 1e6 else 44)


# --- determinism and the file ---------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kwargs = {"sample_rate_hz": 2e6, "duration_s": 0.25, "density": "crowded"}
    a = generate_scene(tmp_path / "a", seed=11, **kwargs)
    b = generate_scene(tmp_path / "b", seed=11, **kwargs)
    c = generate_scene(tmp_path / "c", seed=12, **kwargs)
    assert a.data_path.read_bytes() == b.data_path.read_bytes()
    assert a.meta_path.read_text() == b.meta_path.read_text()
    assert a.data_path.read_bytes() != c.data_path.read_bytes()
    assert a.annotations > 0


@pytest.mark.parametrize("receiver", ["float", "sdr12", "rtl8"])
def test_valid_sigmf_that_rfstream_reads(tmp_path, receiver):
    import sigmf

    s = generate_scene(tmp_path / "r", seed=4, sample_rate_hz=1e6, duration_s=0.3, receiver=receiver)
    handle = sigmf.sigmffile.fromfile(str(s.meta_path))
    handle.validate()
    meta = json.loads(s.meta_path.read_text())
    g = meta["global"]
    assert g["core:datatype"] == {"float": "cf32_le", "sdr12": "ci16_le", "rtl8": "cu8"}[receiver]
    assert g["core:sha512"] == hashlib.sha512(s.data_path.read_bytes()).hexdigest()
    anns = meta["annotations"]
    assert anns and len(anns) == s.annotations
    n = s.data_path.stat().st_size // {"cf32_le": 8, "ci16_le": 4, "cu8": 2}[g["core:datatype"]]
    fc = meta["captures"][0]["core:frequency"]
    for a in anns:
        assert a["core:label"] == FAMILY[a["scenegen:label"]]
        assert a["core:sample_count"] > 0 and a["core:sample_start"] + a["core:sample_count"] <= n
        assert fc - 0.5e6 <= a["core:freq_lower_edge"] < a["core:freq_upper_edge"] <= fc + 0.5e6
        assert a["rfstream:snr_db"] == a["scenegen:snr_db"] and -5 <= a["scenegen:snr_db"] <= 30
    truth = read_annotations(s.meta_path)
    assert len(truth) == len(anns) and all(t.snr_db is not None for t in truth)
    assert {t.label for t in truth} <= set(LABELS) - {"unknown"}


# --- the annotations hold the energy -----------------------------------------------------------------------
def _psd(seg: np.ndarray, nper: int) -> np.ndarray:
    k = max(1, seg.size // nper)
    seg = np.pad(seg, (0, max(0, k * nper - seg.size)))[: k * nper].reshape(k, nper) * np.hanning(nper)
    return np.fft.fftshift((np.abs(np.fft.fft(seg, axis=1)) ** 2).mean(0))


def test_bursts_carry_their_snr_inside_their_box_and_nothing_outside(tmp_path):
    """For each annotated burst with a quiet stretch of the same band before or after it, the power
    inside the annotated band rises above that reference by the annotated SNR, and the band just
    outside stays at the reference."""
    fs = 2e6
    types = ("qpsk", "16qam", "gfsk", "fsk2", "msk", "ofdm_256", "ofdm_nulls", "bpsk", "gmsk", "dsss_pn")
    s = generate_scene(
        tmp_path / "b",
        seed=21,
        sample_rate_hz=fs,
        duration_s=1.0,
        density="medium",
        receiver="float",
        types=types,
    )
    meta, x = load_iq(s.meta_path)
    fc = meta["captures"][0]["core:frequency"]
    anns = meta["annotations"]
    checked = []
    for a in anns:
        st, n = a["core:sample_start"], a["core:sample_count"]
        lo, hi = a["core:freq_lower_edge"] - fc, a["core:freq_upper_edge"] - fc
        bw = hi - lo
        if a["scenegen:snr_db"] < 8 or bw < fs / 200:
            continue

        def quiet(t0: int, t1: int, a=a, lo=lo, hi=hi, bw=bw) -> bool:
            return (
                t0 >= 0
                and t1 <= x.size
                and not any(
                    b is not a
                    and b["core:sample_start"] < t1
                    and t0 < b["core:sample_start"] + b["core:sample_count"]
                    and b["core:freq_lower_edge"] - fc < hi + bw
                    and lo - bw < b["core:freq_upper_edge"] - fc
                    for b in anns
                )
            )

        length = min(n, 1 << 16)
        if not quiet(st, st + length):
            continue
        ref = next((t for t in (st - length - 200, st + n + 200) if quiet(t, t + length)), None)
        if ref is None:
            continue
        nper = 256
        f = np.fft.fftshift(np.fft.fftfreq(nper, 1 / fs))
        inside = (f >= lo) & (f <= hi)
        beside = ((f > hi + fs / nper) & (f <= hi + bw)) | ((f < lo - fs / nper) & (f >= lo - bw))
        burst, quiet_ref = _psd(x[st : st + length], nper), _psd(x[ref : ref + length], nper)
        excess_in = (burst[inside] - quiet_ref[inside]).sum()
        snr = 10 * np.log10(max(excess_in, 1e-12) / quiet_ref[inside].sum())
        leak = (burst[beside] - quiet_ref[beside]).sum() / excess_in
        checked.append((a["scenegen:label"], a["scenegen:snr_db"], snr, leak))
    assert len(checked) >= 8, checked
    for label, want, got, leak in checked:
        assert got == pytest.approx(want, abs=2.5), (label, want, got)
        assert leak < 0.05, (label, leak)


def test_long_narrow_emissions_sit_where_annotated(tmp_path):
    """Carriers and voice, made at a low rate and placed in the spectrum: the strongest bin of each
    carrier lies inside its box, and its power matches the annotated SNR."""
    fs = 1e6
    s = generate_scene(
        tmp_path / "c",
        seed=5,
        sample_rate_hz=fs,
        duration_s=0.5,
        density="sparse",
        receiver="float",
        types=("cw",),
    )
    meta, x = load_iq(s.meta_path)
    fc = meta["captures"][0]["core:frequency"]
    spec = np.abs(np.fft.fftshift(np.fft.fft(x))) ** 2 / x.size
    f = np.fft.fftshift(np.fft.fftfreq(x.size, 1 / fs))
    noise = np.median(spec) / np.log(2)  # the median of an exponential is ln 2 times its mean
    assert meta["annotations"]
    for a in meta["annotations"]:
        lo, hi = a["core:freq_lower_edge"] - fc, a["core:freq_upper_edge"] - fc
        near = np.abs(f - 0.5 * (lo + hi)) <= 0.5 * (hi - lo) + 300
        peak = f[near][np.argmax(spec[near])]
        assert lo - 60 <= peak <= hi + 60
        tone = (spec[near] - noise).sum() / (a["core:sample_count"] / x.size)
        snr = 10 * np.log10(tone / (noise * (fs / 4096) * x.size / fs))
        assert snr == pytest.approx(a["scenegen:snr_db"], abs=2.0)


def test_rfstream_replays_a_scene(tmp_path):
    """What rfstream eval will do with it: open, replay every sample, and score it."""
    from rfstream.sources.sigmf import SigMFSource

    s = generate_scene(tmp_path / "p", seed=8, sample_rate_hz=1e6, duration_s=0.3, receiver="rtl8")
    total = sum(chunk.num_samples for chunk in SigMFSource(s.meta_path))
    assert total == s.data_path.stat().st_size // 2


def test_cli_lists_and_writes(tmp_path):
    proc = subprocess.run([sys.executable, str(PKG), "--list"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == len(MODULATIONS)
    proc = subprocess.run(
        [
            sys.executable,
            str(PKG),
            "--seed",
            "2",
            "--rate",
            "1e6",
            "--duration",
            "0.1",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o.sigmf-meta").exists() and "annotations" in proc.stdout
    proc = subprocess.run(
        [sys.executable, str(PKG), "--out", str(tmp_path / "none" / "o"), "--duration", "0.1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "does not exist" in proc.stdout


def test_seed_19_makes_a_scene(tmp_path):
    """Seed 19 drew a narrow signal on top of a host narrower than the resolvable width and crashed
    (numpy: high - low < 0); such a host is now passed over."""
    scene = generate_scene(tmp_path / "s19", seed=19, sample_rate_hz=10e6, duration_s=1.0)
    assert scene.meta_path.exists()
