"""Live SDR through the real SoapySDR library and the rfstreamtest driver (tests/soapy_driver).

The driver streams a tone at +100 kHz whose phase follows the absolute sample
index, so ``angle(iq * exp(-j w (start_sample + k)))`` is ~0 only when
rfstream's sample bookkeeping is exact — across overflows too.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rfstream.config import SourceConfig
from rfstream.errors import DeviceError
from rfstream.sources import soapy as soapy_mod
from rfstream.sources.base import Source
from rfstream.sources.soapy import SoapySource, format_devices, import_soapysdr, list_devices

pytestmark = pytest.mark.soapy

DRIVER_DIR = Path(__file__).parent / "soapy_driver"
TONE_HZ = 100e3  # the driver's default tone_offset_hz
RATE = 2e6


@pytest.fixture(scope="session")
def soapy_driver() -> str:
    """Build the rfstreamtest module and load it into this process's SoapySDR."""
    try:
        soapy = import_soapysdr()
    except DeviceError as exc:
        pytest.skip(str(exc))
    if shutil.which(os.environ.get("CXX", "g++")) is None or shutil.which("pkg-config") is None:
        pytest.skip("no C++ compiler or pkg-config to build the SoapySDR test driver")
    if subprocess.run(["pkg-config", "--exists", "SoapySDR"], check=False).returncode != 0:
        pytest.skip("SoapySDR development files missing (apt-get install libsoapysdr-dev)")
    built = subprocess.run(
        ["sh", str(DRIVER_DIR / "build.sh")], capture_output=True, text=True, check=False, timeout=120
    )
    assert built.returncode == 0, built.stderr
    module = built.stdout.strip().splitlines()[-1]
    # Subprocesses (the CLI) find it through the plugin path; this process loads it now, since
    # SoapySDR may already have scanned its search path.
    os.environ["SOAPY_SDR_PLUGIN_PATH"] = str(Path(module).parent)
    err = soapy.loadModule(module)
    assert err in ("", f"{module} already loaded") or "already loaded" in err, err
    return module


def _cfg(**over) -> SourceConfig:
    base = dict(
        kind="soapy",
        device_args="driver=rfstreamtest,serial=0001",
        sample_rate_hz=RATE,
        center_freq_hz=433.92e6,
        chunk_ms=100.0,
        read_timeout_s=0.1,
        reopen_backoff_s=0.05,
        queue_depth=4,
    )
    base.update(over)
    return SourceConfig(**base)


def _phase_error(iq: np.ndarray, start: int, rate: float) -> float:
    """Residual phase (rad) of the driver's tone after removing the phase implied by start_sample."""
    k = np.arange(iq.shape[0], dtype=np.float64) + start
    ref = np.exp(-2j * np.pi * TONE_HZ / rate * k)
    return float(np.angle(np.mean(iq.astype(np.complex128) * ref)))


def _collect(src: SoapySource, count: int, *, on_chunk=None) -> list[dict]:
    """Summaries of ``count`` chunks; no Chunk is kept, so ring buffers return."""
    out = []
    for chunk in src:
        out.append(
            {
                "seq": chunk.seq,
                "start": chunk.start_sample,
                "n": chunk.num_samples,
                "gap": chunk.gap_before_samples,
                "utc": chunk.start_time_utc,
                "phase": _phase_error(chunk.iq, chunk.start_sample, chunk.sample_rate_hz),
                "peak_hz": _peak_hz(chunk.iq, chunk.sample_rate_hz) if chunk.seq == 0 else None,
                "rf_hz": chunk.center_freq_hz,
            }
        )
        if on_chunk is not None:
            on_chunk(chunk)
        del chunk
        if len(out) >= count:
            break
    return out


def _peak_hz(iq: np.ndarray, rate: float) -> float:
    spec = np.abs(np.fft.fftshift(np.fft.fft(iq[:65536])))
    freqs = np.fft.fftshift(np.fft.fftfreq(65536, 1 / rate))
    return float(freqs[int(np.argmax(spec))])


def test_import_finds_os_bindings_without_polluting_sys_path(soapy_driver):
    code = (
        "import sys; from rfstream.sources.soapy import import_soapysdr; m = import_soapysdr();"
        "print(m.__file__); print(m.getAPIVersion());"
        "print(any(p.startswith('/usr/lib/python3') for p in sys.path))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out[0].endswith("SoapySDR.py")
    assert out[1].startswith("0.")
    assert out[2] == "False"  # only SoapySDR was loaded from the OS, not all of dist-packages


def test_missing_bindings_is_one_line_device_error(tmp_path, monkeypatch):
    monkeypatch.setattr(soapy_mod, "_BINDING_DIRS", (str(tmp_path),))
    with pytest.raises(
        DeviceError, match=r"^SoapySDR Python bindings not found: apt-get install python3-soapysdr$"
    ):
        soapy_mod._load_os_bindings()
    (tmp_path / "SoapySDR.py").write_text("")
    (tmp_path / "_SoapySDR.cpython-399-x86_64-linux-gnu.so").write_bytes(b"")
    with pytest.raises(DeviceError, match="only for another Python"):
        soapy_mod._load_os_bindings()


def test_list_devices_shows_the_test_driver_and_its_ranges(soapy_driver):
    devices = list_devices("driver=rfstreamtest")
    assert [d["serial"] for d in devices] == ["0001", "0002"]
    dev = devices[0]
    assert dev["driver"] == "rfstreamtest" and dev["error"] == ""
    assert dev["args"] == "driver=rfstreamtest,serial=0001"
    (ch,) = dev["channels"]
    assert ch["sample_rate_ranges_hz"] == [(250e3, 3.2e6), (5e6, 20e6)]
    assert ch["frequency_ranges_hz"] == [(24e6, 1766e6)]
    assert ch["gain_range_db"] == (0.0, 49.6) and ch["agc"] is True
    assert ch["antennas"] == ["RX", "TEST"]
    assert set(ch["formats"]) == {"CF32", "CS16"} and ch["hardware_time"] is True
    text = format_devices(devices)
    assert "250 kS/s–3.2 MS/s, 5 MS/s–20 MS/s" in text
    assert "24 MHz–1.766 GHz" in text and "0–49.6 dB (AGC)" in text
    assert list_devices("driver=rfstreamtest,serial=0404") == []
    assert format_devices([]).startswith("no SDR found")


@pytest.mark.parametrize("fmt", ["CS16", "CF32"])
def test_streams_contiguous_chunks_with_exact_bookkeeping(soapy_driver, fmt):
    with SoapySource(_cfg(stream_format=fmt)) as src:
        assert isinstance(src, Source)
        assert src.info.sample_rate_hz == RATE and src.info.center_freq_hz == 433.92e6
        assert src.info.total_samples is None and fmt in src.info.description
        t0 = time.monotonic()
        chunks = _collect(src, 6)
        elapsed = time.monotonic() - t0
        stats = src.stats()
    assert [c["seq"] for c in chunks] == list(range(6))
    assert [c["start"] for c in chunks] == [i * 200_000 for i in range(6)]
    assert all(c["n"] == 200_000 and c["gap"] == 0 for c in chunks)
    assert all(c["rf_hz"] == 433.92e6 for c in chunks)
    assert max(abs(c["phase"]) for c in chunks) < 0.05  # index-exact: one sample off is 0.31 rad
    assert abs(chunks[0]["peak_hz"] - TONE_HZ) < 2 * RATE / 65536
    # hardware (epoch) time: UTC steps exactly by the chunk duration, and is near now
    steps = {(b["utc"] - a["utc"]).total_seconds() for a, b in itertools.pairwise(chunks)}
    assert all(abs(s - 0.1) < 1e-6 for s in steps)
    assert abs(time.time() - chunks[-1]["utc"].timestamp()) < 5
    assert elapsed > 0.45  # paced by the device clock: 0.6 s of samples cannot come much faster
    assert stats["overflows"] == stats["timeouts"] == stats["samples_shed"] == 0
    assert stats["device_state"] == "streaming"


def test_overflow_burst_becomes_an_exact_gap(soapy_driver):
    src = SoapySource(_cfg(stream_format="CF32"))

    def inject(chunk):
        if chunk.seq == 2:
            src.write_setting("inject", "overflow:3:10000")

    try:
        chunks = _collect(src, 7, on_chunk=inject)
        stats = src.stats()
    finally:
        src.close()
    assert stats["overflows"] == 3
    assert stats["samples_lost_overflow"] == 30_000
    gaps = [c["gap"] for c in chunks]
    assert sum(1 for g in gaps if g) == 1
    # the gap is what the device lost plus what rfstream shed to keep chunks contiguous
    assert sum(gaps) == stats["samples_lost_overflow"] + stats["samples_shed"]
    for a, b in itertools.pairwise(chunks):
        assert b["start"] == a["start"] + a["n"] + b["gap"]
    # the tone's phase proves each start_sample is the true device index, after the gap too
    assert max(abs(c["phase"]) for c in chunks) < 0.05
    assert stats["samples_received"] + stats["samples_lost_overflow"] == stats["stream_position"]
    assert stats["stream_position"] >= chunks[-1]["start"] + chunks[-1]["n"]


def test_without_hardware_time_gaps_are_estimated_from_the_host_clock(soapy_driver):
    src = SoapySource(_cfg(device_args="driver=rfstreamtest,serial=0001,hw_time=0"))

    def inject(chunk):
        if chunk.seq == 1:
            src.write_setting("inject", "overflow:1:100000")  # 50 ms lost

    try:
        chunks = _collect(src, 4, on_chunk=inject)
        stats = src.stats()
    finally:
        src.close()
    assert stats["overflows"] == 1 and stats["gaps_estimated"] == 1
    (gapped,) = [c for c in chunks if c["gap"]]
    assert abs(gapped["gap"] - stats["samples_shed"] - 100_000) < 20_000  # host-clock estimate
    assert max(abs(c["phase"]) for c in chunks[:2]) < 0.05  # exact before the gap
    assert abs(time.time() - chunks[0]["utc"].timestamp()) < 5  # UTC from the host clock


def test_hardware_time_that_is_not_epoch_time_takes_utc_from_the_host(soapy_driver):
    with SoapySource(_cfg(device_args="driver=rfstreamtest,serial=0001,epoch_time=0")) as src:
        chunks = _collect(src, 2)
    assert abs(time.time() - chunks[0]["utc"].timestamp()) < 5
    assert (chunks[1]["utc"] - chunks[0]["utc"]).total_seconds() == pytest.approx(0.1, abs=1e-6)
    assert max(abs(c["phase"]) for c in chunks) < 0.05


def test_timeouts_are_counted_and_lose_nothing(soapy_driver):
    src = SoapySource(_cfg(read_timeout_s=0.05))

    def inject(chunk):
        if chunk.seq == 1:
            src.write_setting("inject", "timeout:2")

    try:
        chunks = _collect(src, 5, on_chunk=inject)
        stats = src.stats()
    finally:
        src.close()
    assert stats["timeouts"] == 2
    assert all(c["gap"] == 0 for c in chunks)  # the device buffered through the stall
    assert [c["start"] for c in chunks] == [i * 200_000 for i in range(5)]
    assert max(abs(c["phase"]) for c in chunks) < 0.05


def test_slow_consumer_sheds_instead_of_blocking_the_reader(soapy_driver):
    src = SoapySource(_cfg(queue_depth=2, chunk_ms=50.0))
    try:
        chunks = _collect(src, 4, on_chunk=lambda _: time.sleep(0.25))
        stats = src.stats()
    finally:
        src.close()
    assert stats["samples_shed"] > 0
    assert stats["overflows"] == 0  # the reader kept draining the device
    assert sum(c["gap"] for c in chunks) > 0
    for a, b in itertools.pairwise(chunks):
        assert b["start"] == a["start"] + a["n"] + b["gap"]
    assert max(abs(c["phase"]) for c in chunks) < 0.05


def test_unplugged_device_is_reopened_and_iteration_survives(soapy_driver, tmp_path):
    control = tmp_path / "usb"
    control.write_text("ok")
    src = SoapySource(_cfg(device_args=f"driver=rfstreamtest,serial=0002,control={control}"))
    seen: list[tuple[int, int]] = []
    failure: list[BaseException] = []

    def consume():
        try:
            for chunk in src:
                seen.append((chunk.start_sample, chunk.gap_before_samples))
                del chunk
        except BaseException as exc:  # the test wants to know about anything at all
            failure.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        _wait(lambda: len(seen) >= 2, 3.0)
        control.write_text("disconnect")
        _wait(lambda: src.device_state == "reopening", 2.0)
        count_while_lost = len(seen)
        time.sleep(0.4)  # reopen attempts fail while unplugged: the device is not found
        assert src.device_state == "reopening" and len(seen) <= count_while_lost + 1
        control.write_text("ok")
        _wait(lambda: src.device_state == "streaming", 3.0)
        _wait(lambda: len(seen) >= count_while_lost + 3, 3.0)
        stats = src.stats()
    finally:
        src.close()
        consumer.join(5.0)
    assert not consumer.is_alive() and failure == []
    assert stats["reopens"] == 1 and stats["gaps_estimated"] >= 1
    gaps = [g for _, g in seen]
    assert any(g > 0.4 * RATE for g in gaps)  # the outage shows as a gap about its length
    starts = [s for s, _ in seen]
    assert starts == sorted(starts)
    assert src.device_state == "closed" and src.device is None
    with pytest.raises(DeviceError, match="the SDR is closed"):
        src.write_setting("inject", "timeout:1")


def test_device_that_drops_its_stream_is_reopened(soapy_driver):
    src = SoapySource(_cfg())
    try:
        _collect(src, 1)
        src.write_setting("inject", "disconnect")
        _collect(src, 3)  # iteration carried on through the reopen
        assert src.stats()["reopens"] == 1 and src.device_state == "streaming"
    finally:
        src.close()


def _wait(cond, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.01)


def test_no_matching_device_is_a_one_line_device_error(soapy_driver):
    with pytest.raises(
        DeviceError, match=r"^no SDR matches source\.device_args 'driver=rfstreamtest,serial=0404'"
    ):
        SoapySource(_cfg(device_args="driver=rfstreamtest,serial=0404"))


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (
            {"sample_rate_hz": 4e6},
            r"source\.sample_rate_hz = 4 MS/s is outside .*250 kS/s–3\.2 MS/s, 5 MS/s–20 MS/s",
        ),
        ({"center_freq_hz": 3e9}, r"source\.center_freq_hz = 3 GHz is outside .*24 MHz–1\.766 GHz"),
        ({"gain_db": 60.0}, r"source\.gain_db = 60 dB is outside .*0 dB–49\.6 dB"),
        ({"antenna": "LNAW"}, r"source\.antenna = 'LNAW' is not on .*RX, TEST"),
        ({"bandwidth_hz": 50e6}, r"source\.bandwidth_hz = 50 MHz is outside"),
        ({"channel": 1}, r"source\.channel = 1 but .* has 1 receive channel"),
    ],
)
def test_out_of_range_settings_are_refused_by_name(soapy_driver, over, message):
    with pytest.raises(DeviceError, match=message) as info:
        SoapySource(_cfg(**over))
    assert "\n" not in str(info.value)


def test_manual_gain_antenna_and_bandwidth_reach_the_device(soapy_driver):
    with SoapySource(_cfg(gain_db=12.5, antenna="TEST", bandwidth_hz=1.5e6)) as src:
        dev, rx = src.device, import_soapysdr().SOAPY_SDR_RX
        assert dev.getGain(rx, 0) == 12.5 and dev.getGainMode(rx, 0) is False
        assert dev.getAntenna(rx, 0) == "TEST" and dev.getBandwidth(rx, 0) == 1.5e6
        with pytest.raises(
            DeviceError, match=r"^SDR refused setting biastee='1': rfstreamtest: unknown setting"
        ):
            src.write_setting("biastee", "1")
    with SoapySource(_cfg()) as src:  # gain_db < 0: AGC
        assert src.device.getGainMode(import_soapysdr().SOAPY_SDR_RX, 0) is True


def test_devices_verb_lists_the_driver_in_a_fresh_process(soapy_driver):
    # a new process finds the module through SOAPY_SDR_PLUGIN_PATH, as an operator's would
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run(
        [sys.executable, "-m", "rfstream.cli", "devices", "--args", "driver=rfstreamtest,serial=0002"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert 'device_args = "driver=rfstreamtest,serial=0002"' in proc.stdout
    assert "24 MHz–1.766 GHz" in proc.stdout and "0001" not in proc.stdout
