"""Live IQ from an SDR through SoapySDR.

The reader thread owns the device. It reads with a timeout straight into a
preallocated ring of chunk buffers (CF32 in place; CS16 through one scratch
buffer, scaled into complex64 once) and never waits on processing: when the
queue to the consumer is full, or every ring buffer is still held by a live
Chunk, the chunk is dropped and its samples are counted as shed.

Sample bookkeeping is exact where the device gives hardware time: every read's
timestamp is turned into an absolute sample index, so an overflow, a timeout or
a shed chunk shows up as ``Chunk.gap_before_samples == start_sample - previous
chunk's end``. A chunk is always contiguous; samples read before a gap that do
not fill a chunk are shed. Without hardware time, gaps after an overflow or a
timeout are estimated from the host clock and counted in ``gaps_estimated``.

A device that fails (stream error, exception, unplugged) is closed and reopened
with exponential backoff while iteration keeps waiting; ``device_state`` says
"streaming", "reopening" or "closed". Across a reopen the gap is estimated from
the host clock.

A Chunk's ``iq`` is a lease on a ring buffer (rfstream.hostmem.HostRing) that
returns to the ring when ``iq`` and every view of it are garbage-collected: keep
the Chunk (or any slice of ``iq``) as long as you need the samples, and copy what
you keep beyond them. No buffer is allocated per chunk. With ``pinned=True`` (the
CUDA backend is active) the ring is page-locked host memory, so the GPU
spectrogram's host-to-device copy of each chunk is a true asynchronous DMA
straight from the buffer the SDR was read into (rfstream.dsp.gpu.PinnedStager);
on the CPU the ring is plain memory. SoapySDR's Python ``readStream`` takes any
array exposing ``__array_interface__`` (it passes the data pointer on), so the
reader writes into either kind in place.

SoapySDR's Python bindings come from the OS (``apt-get install
python3-soapysdr``); :func:`import_soapysdr` finds them outside a virtualenv.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import queue
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from rfstream.config import SourceConfig
from rfstream.errors import ConfigError, DeviceError
from rfstream.hostmem import HostRing
from rfstream.sources.base import ChunkStamper, SourceInfo, chunk_length, utc_plus
from rfstream.types import Chunk

log = logging.getLogger(__name__)

# Where distributions put SoapySDR.py and _SoapySDR*.so (Debian/Ubuntu, Fedora, /usr/local builds).
_BINDING_DIRS = (
    "/usr/lib/python3/dist-packages",
    f"/usr/lib/python3.{sys.version_info.minor}/dist-packages",
    f"/usr/lib/python3.{sys.version_info.minor}/site-packages",
    f"/usr/lib64/python3.{sys.version_info.minor}/site-packages",
    "/usr/local/lib/python3/dist-packages",
    f"/usr/local/lib/python3.{sys.version_info.minor}/dist-packages",
    f"/usr/local/lib/python3.{sys.version_info.minor}/site-packages",
)
_EPOCH_2000_NS = 946_684_800 * 10**9  # hardware time past this is taken as UNIX epoch time
_BACKOFF_CAP_S = 30.0
_RING_SLACK = 4  # ring buffers beyond the queue: one filling, the consumer's current chunk, spare

_soapy: ModuleType | None = None


def import_soapysdr() -> ModuleType:
    """Import SoapySDR's Python bindings, from the OS's packages if this interpreter lacks them.

    Only SoapySDR itself is loaded from the OS directories (not the whole of
    dist-packages on sys.path), so a virtualenv's other packages are never
    shadowed by the distribution's.
    """
    global _soapy
    if _soapy is not None:
        return _soapy
    try:
        import SoapySDR  # type: ignore[import-not-found]
    except ImportError:
        SoapySDR = _load_os_bindings()
    _soapy = SoapySDR
    return SoapySDR


def _load_os_bindings() -> ModuleType:
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    other_builds: list[str] = []
    for directory in dict.fromkeys(_BINDING_DIRS):
        wrapper = Path(directory, "SoapySDR.py")
        if not wrapper.is_file():
            continue
        ext = next(
            (
                Path(directory, "_SoapySDR" + s)
                for s in suffixes
                if Path(directory, "_SoapySDR" + s).is_file()
            ),
            None,
        )
        if ext is None:
            other_builds += [p.name for p in Path(directory).glob("_SoapySDR*.so")]
            continue
        try:
            low = _load_module("_SoapySDR", ext)
            sys.modules["_SoapySDR"] = low  # SoapySDR.py does `import _SoapySDR`
            return _load_module("SoapySDR", wrapper)
        except ImportError as exc:
            sys.modules.pop("_SoapySDR", None)
            raise DeviceError(f"SoapySDR Python bindings in {directory} do not load: {exc}") from exc
    if other_builds:
        raise DeviceError(
            f"SoapySDR Python bindings found only for another Python ({', '.join(other_builds)}); "
            f"this is Python {sys.version_info.major}.{sys.version_info.minor}"
        )
    raise DeviceError("SoapySDR Python bindings not found: apt-get install python3-soapysdr")


def _load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


# --- ranges and their messages ------------------------------------------------------------


def _si(value: float, unit: str) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g} {prefix}{unit}"
    return f"{value:g} {unit}"


def _ranges(ranges: Any) -> list[tuple[float, float]]:
    return [(float(r.minimum()), float(r.maximum())) for r in ranges]


def _fmt_ranges(ranges: Sequence[tuple[float, float]], unit: str) -> str:
    return ", ".join(_si(lo, unit) if lo == hi else f"{_si(lo, unit)}–{_si(hi, unit)}" for lo, hi in ranges)


def _check_range(
    key: str, value: float, ranges: Sequence[tuple[float, float]], unit: str, device: str
) -> None:
    if not ranges:  # the driver does not say; let it decide
        return
    tol = 1e-9 * max(1.0, abs(value))
    if not any(lo - tol <= value <= hi + tol for lo, hi in ranges):
        raise DeviceError(
            f"{key} = {_si(value, unit)} is outside what {device} supports: {_fmt_ranges(ranges, unit)}"
        )


# --- device listing ----------------------------------------------------------------------


def list_devices(device_args: str = "") -> list[dict[str, Any]]:
    """Every device SoapySDR finds for ``device_args``, with each RX channel's ranges.

    A device that is found but cannot be opened (busy, no permission) is listed
    with its ``error`` and no channels.
    """
    soapy = import_soapysdr()
    try:
        found = soapy.Device.enumerate(soapy.KwargsFromString(device_args))
    except (RuntimeError, ValueError) as exc:
        raise DeviceError(f"SoapySDR cannot enumerate devices for {device_args!r}: {exc}") from exc
    out = []
    for kwargs in found:
        args = dict(kwargs)
        entry: dict[str, Any] = {
            "driver": args.get("driver", ""),
            "label": args.get("label", ""),
            "serial": args.get("serial", ""),
            # driver and serial pick one board; the label is for people
            "args": f"driver={args['driver']},serial={args['serial']}"
            if args.get("driver") and args.get("serial")
            else soapy.KwargsToString(kwargs),
            "channels": [],
            "error": "",
        }
        try:
            dev = soapy.Device(kwargs)
        except (RuntimeError, ValueError) as exc:
            entry["error"] = str(exc)
            out.append(entry)
            continue
        try:
            rx = soapy.SOAPY_SDR_RX
            for ch in range(dev.getNumChannels(rx)):
                gain = dev.getGainRange(rx, ch)
                entry["channels"].append(
                    {
                        "channel": ch,
                        "sample_rate_ranges_hz": _ranges(dev.getSampleRateRange(rx, ch)),
                        "sample_rates_hz": [float(r) for r in dev.listSampleRates(rx, ch)],
                        "frequency_ranges_hz": _ranges(dev.getFrequencyRange(rx, ch)),
                        "gain_range_db": (float(gain.minimum()), float(gain.maximum())),
                        "agc": bool(dev.hasGainMode(rx, ch)),
                        "antennas": list(dev.listAntennas(rx, ch)),
                        "bandwidth_ranges_hz": _ranges(dev.getBandwidthRange(rx, ch)),
                        "formats": list(dev.getStreamFormats(rx, ch)),
                        "hardware_time": bool(dev.hasHardwareTime()),
                    }
                )
        except (RuntimeError, ValueError) as exc:
            entry["error"] = str(exc)
        finally:
            dev.close()
        out.append(entry)
    return out


def format_devices(devices: Sequence[dict[str, Any]]) -> str:
    """A human-readable table of :func:`list_devices` output."""
    if not devices:
        return "no SDR found (is the device plugged in, and its SoapySDR module installed? try SoapySDRUtil --info)"
    lines = []
    for dev in devices:
        lines.append(f"{dev['driver']}  {dev['label']}  serial={dev['serial'] or '-'}")
        lines.append(f'  device_args = "{dev["args"]}"')
        if dev["error"]:
            lines.append(f"  cannot open: {dev['error']}")
        for ch in dev["channels"]:
            gain_lo, gain_hi = ch["gain_range_db"]
            lines.append(f"  rx{ch['channel']}  rate      {_fmt_ranges(ch['sample_rate_ranges_hz'], 'S/s')}")
            lines.append(f"       frequency {_fmt_ranges(ch['frequency_ranges_hz'], 'Hz')}")
            lines.append(f"       gain      {gain_lo:g}–{gain_hi:g} dB{' (AGC)' if ch['agc'] else ''}")
            if ch["bandwidth_ranges_hz"]:
                lines.append(f"       bandwidth {_fmt_ranges(ch['bandwidth_ranges_hz'], 'Hz')}")
            lines.append(f"       antennas  {', '.join(ch['antennas']) or '-'}")
            lines.append(
                f"       formats   {', '.join(ch['formats'])}"
                + ("  hardware time" if ch["hardware_time"] else "")
            )
    return "\n".join(lines)


# --- the source ----------------------------------------------------------------------------


class _StreamLost(Exception):
    """The device stopped streaming; the reader reopens it."""


class _Opened:
    """A configured device with an active RX stream."""

    __slots__ = ("dev", "freq_hz", "mtu", "name", "rate_hz", "stream")

    def __init__(self, dev: Any, stream: Any, mtu: int, rate_hz: float, freq_hz: float, name: str) -> None:
        self.dev, self.stream, self.mtu = dev, stream, mtu
        self.rate_hz, self.freq_hz, self.name = rate_hz, freq_hz, name

    def close(self) -> None:
        try:
            self.dev.deactivateStream(self.stream)
            self.dev.closeStream(self.stream)
            self.dev.close()
        except (RuntimeError, ValueError) as exc:  # a lost device may refuse; it is going anyway
            log.debug("soapy: closing %s: %s", self.name, exc)


class SoapySource:
    """Chunks from a live SDR, with exact gap accounting and automatic reopening."""

    def __init__(self, cfg: SourceConfig, *, pinned: bool = False) -> None:
        self._cfg = cfg
        self._soapy = import_soapysdr()
        self._closing = threading.Event()
        self._state = "streaming"
        opened = self._open()  # configuration errors surface here, as DeviceError
        self._opened: _Opened | None = opened
        self._rate = opened.rate_hz
        self._freq = opened.freq_hz
        self._len = chunk_length(cfg.chunk_ms, self._rate)
        self._cs16 = cfg.stream_format == "CS16"
        self._timeout_us = int(cfg.read_timeout_s * 1e6)
        self.info = SourceInfo(
            sample_rate_hz=self._rate,
            center_freq_hz=self._freq,
            description=f"SoapySDR {opened.name} rx{cfg.channel} {cfg.stream_format}",
            total_samples=None,
            start_time_utc=None,
        )

        # The ring: queue_depth chunks waiting, plus slack; a buffer is free again when the
        # consumer drops the chunk (and every view of its samples). Allocated once, here.
        try:
            self._ring = HostRing(self._len, np.complex64, cfg.queue_depth + _RING_SLACK, pinned=pinned)
        except RuntimeError as exc:  # pinned memory asked for where CuPy cannot give it
            opened.close()
            raise ConfigError(f"source: pinned SDR buffers for the GPU: {exc}") from exc
        self._spill = np.zeros(self._len, np.complex64)  # where shed samples are read
        self._scratch = np.zeros(2 * max(opened.mtu, 1), np.int16) if self._cs16 else None
        self._scale = np.float32(1.0 / 32768.0)
        self._queue: queue.Queue[Chunk] = queue.Queue(maxsize=cfg.queue_depth)
        self._stamper = ChunkStamper(self._rate)

        # Sample bookkeeping (reader thread only).
        self._next_idx = 0  # absolute index of the next sample the device will give
        self._emitted_end = 0  # index just past the last emitted chunk
        self._time_base: tuple[int, int] | None = None  # (hardware ns, sample index) of this opening
        self._host_t0: float | None = None  # monotonic time of sample 0, for estimates
        self._utc0: datetime | None = None  # UTC of sample 0
        self._suspect = False  # an overflow or timeout happened since the last good read
        self._failure: Exception | None = None
        self._counters = dict.fromkeys(
            (
                "samples_received",
                "samples_lost_overflow",
                "samples_shed",
                "chunks_emitted",
                "overflows",
                "timeouts",
                "reopens",
                "gaps_estimated",
            ),
            0,
        )
        self._reader = threading.Thread(target=self._run, name="soapy-reader", daemon=True)
        self._reader.start()

    # --- public ---------------------------------------------------------------------------
    @property
    def device_state(self) -> str:
        return self._state

    @property
    def device(self) -> Any:
        """The open ``SoapySDR.Device`` (None while reopening or closed), for device-specific calls."""
        opened = self._opened
        return None if opened is None else opened.dev

    def write_setting(self, key: str, value: str) -> None:
        """A driver-specific setting (``biastee``, ``direct_samp``, ...) on the open device."""
        dev = self.device
        if dev is None:
            raise DeviceError(f"cannot write setting {key!r}: the SDR is {self._state}")
        try:
            dev.writeSetting(key, value)
        except (RuntimeError, ValueError) as exc:
            raise DeviceError(f"SDR refused setting {key}={value!r}: {exc}") from exc

    def stats(self) -> dict[str, Any]:
        """Counters since the start; ``stream_position`` is the absolute index of the next sample
        (samples_received + samples_lost_overflow, give or take estimated gaps)."""
        return {
            **self._counters,
            "stream_position": self._next_idx,
            "device_state": self._state,
            "ring_free": self._ring.free_slots(),
            "ring_pinned": self._ring.pinned,
        }

    def __iter__(self) -> Iterator[Chunk]:
        while not self._closing.is_set():
            try:
                chunk = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._failure is not None:
                    raise DeviceError(f"SDR reader stopped: {self._failure}") from self._failure
                continue  # a reopening device: keep waiting, the daemon stays up
            yield chunk
            del chunk  # the ring buffer returns as soon as the consumer lets go of it too

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=self._cfg.read_timeout_s + 2.0)
        while True:  # queued chunks hold ring buffers
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def __enter__(self) -> SoapySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- opening ----------------------------------------------------------------------------
    def _open(self) -> _Opened:
        cfg, soapy = self._cfg, self._soapy
        rx = soapy.SOAPY_SDR_RX
        args = soapy.KwargsFromString(cfg.device_args)
        try:
            found = soapy.Device.enumerate(args)
        except (RuntimeError, ValueError) as exc:
            raise DeviceError(f"SoapySDR cannot enumerate devices for {cfg.device_args!r}: {exc}") from exc
        if not found:
            raise DeviceError(
                f"no SDR matches source.device_args {cfg.device_args!r} (see `rfstream devices`)"
            )
        try:
            dev = soapy.Device(args)
        except (RuntimeError, ValueError) as exc:
            raise DeviceError(f"cannot open SDR {cfg.device_args!r}: {exc}") from exc
        try:
            return self._configure(dev, rx)
        except (RuntimeError, ValueError) as exc:
            dev.close()
            raise DeviceError(f"cannot configure SDR {cfg.device_args!r}: {exc}") from exc
        except DeviceError:
            dev.close()
            raise

    def _configure(self, dev: Any, rx: int) -> _Opened:
        cfg, soapy = self._cfg, self._soapy
        name = f"{dev.getDriverKey()}:{dev.getHardwareKey()}"
        ch = cfg.channel
        channels = dev.getNumChannels(rx)
        if ch >= channels:
            raise DeviceError(f"source.channel = {ch} but {name} has {channels} receive channel(s)")
        formats = list(dev.getStreamFormats(rx, ch))
        if cfg.stream_format not in formats:
            raise DeviceError(
                f"source.stream_format = {cfg.stream_format} is not offered by {name}: {', '.join(formats)}"
            )
        if cfg.antenna:
            antennas = list(dev.listAntennas(rx, ch))
            if cfg.antenna not in antennas:
                raise DeviceError(f"source.antenna = {cfg.antenna!r} is not on {name}: {', '.join(antennas)}")
            dev.setAntenna(rx, ch, cfg.antenna)
        if cfg.sample_rate_hz > 0:
            _check_range(
                "source.sample_rate_hz",
                cfg.sample_rate_hz,
                _ranges(dev.getSampleRateRange(rx, ch)),
                "S/s",
                name,
            )
            dev.setSampleRate(rx, ch, cfg.sample_rate_hz)
        if cfg.bandwidth_hz > 0:
            _check_range(
                "source.bandwidth_hz", cfg.bandwidth_hz, _ranges(dev.getBandwidthRange(rx, ch)), "Hz", name
            )
            dev.setBandwidth(rx, ch, cfg.bandwidth_hz)
        if cfg.center_freq_hz > 0:
            _check_range(
                "source.center_freq_hz",
                cfg.center_freq_hz,
                _ranges(dev.getFrequencyRange(rx, ch)),
                "Hz",
                name,
            )
            dev.setFrequency(rx, ch, cfg.center_freq_hz)
        if cfg.gain_db >= 0:
            gain = dev.getGainRange(rx, ch)
            _check_range("source.gain_db", cfg.gain_db, [(gain.minimum(), gain.maximum())], "dB", name)
            if dev.hasGainMode(rx, ch):
                dev.setGainMode(rx, ch, False)
            dev.setGain(rx, ch, cfg.gain_db)
        elif dev.hasGainMode(rx, ch):
            dev.setGainMode(rx, ch, True)
        else:
            log.warning("soapy: %s has no AGC; keeping its default gain (set source.gain_db)", name)
        rate = float(dev.getSampleRate(rx, ch))
        freq = float(dev.getFrequency(rx, ch))
        if rate <= 0:
            raise DeviceError(f"{name} reports sample rate {rate}; set source.sample_rate_hz")
        fmt = soapy.SOAPY_SDR_CS16 if cfg.stream_format == "CS16" else soapy.SOAPY_SDR_CF32
        stream = dev.setupStream(rx, fmt, [ch])
        mtu = int(dev.getStreamMTU(stream))
        status = dev.activateStream(stream)
        if status != 0:
            dev.closeStream(stream)
            raise DeviceError(f"{name} refused to start streaming: {soapy.errToStr(status)}")
        return _Opened(dev, stream, mtu, rate, freq, name)

    # --- the reader thread --------------------------------------------------------------------
    def _run(self) -> None:
        backoff = self._cfg.reopen_backoff_s
        try:
            self._loop(backoff)
        except Exception as exc:  # a bug, not the device: stop iteration loudly instead of hanging
            log.exception("soapy: reader failed")
            self._failure = exc
        finally:
            if self._opened is not None:
                self._opened.close()
                self._opened = None
            self._state = "closed"

    def _loop(self, backoff: float) -> None:
        while not self._closing.is_set():
            if self._opened is None:
                if self._closing.wait(backoff):
                    break
                backoff = min(backoff * 2, max(_BACKOFF_CAP_S, self._cfg.reopen_backoff_s))
                try:
                    opened = self._open()
                except DeviceError as exc:
                    log.warning("soapy: reopen failed (next try in %.3g s): %s", backoff, exc)
                    continue
                if opened.rate_hz != self._rate:
                    log.error(
                        "soapy: reopened %s streams at %s S/s, not %s",
                        opened.name,
                        opened.rate_hz,
                        self._rate,
                    )
                    opened.close()
                    continue
                if self._scratch is not None and opened.mtu * 2 > self._scratch.size:
                    self._scratch = np.zeros(2 * opened.mtu, np.int16)
                self._opened = opened
                self._time_base = None  # a new stream: new hardware time base
                self._suspect = True  # the gap across the reopen is estimated
                self._counters["reopens"] += 1
                self._state = "streaming"
                backoff = self._cfg.reopen_backoff_s
                log.info("soapy: %s streaming again", opened.name)
            try:
                self._pump(self._opened)
            except (_StreamLost, RuntimeError, ValueError) as exc:
                if self._closing.is_set():
                    break
                log.warning("soapy: device lost (%s); reopening", exc)
                self._state = "reopening"
                self._opened.close()
                self._opened = None

    def _take(self) -> np.ndarray | None:
        """A lease on a free ring buffer, or None: read into the spill buffer and shed the chunk."""
        return self._ring.lease()

    def _pump(self, opened: _Opened) -> None:
        soapy = self._soapy
        dev, stream = opened.dev, opened.stream
        overflow, timeout, has_time = (
            soapy.SOAPY_SDR_OVERFLOW,
            soapy.SOAPY_SDR_TIMEOUT,
            soapy.SOAPY_SDR_HAS_TIME,
        )
        length, mtu, cs16 = self._len, opened.mtu, self._cs16
        counters = self._counters
        lease = self._take()
        buf = lease if lease is not None else self._spill
        fill = 0
        chunk_start = 0
        while not self._closing.is_set():
            n = min(mtu, length - fill)
            target = self._scratch[: 2 * n] if cs16 else buf[fill : fill + n]
            sr = dev.readStream(stream, [target], n, timeoutUs=self._timeout_us)
            ret = sr.ret
            if ret == timeout:
                counters["timeouts"] += 1
                self._suspect = True
                continue
            if ret == overflow:
                counters["overflows"] += 1
                self._suspect = True
                continue
            if ret < 0:
                raise _StreamLost(soapy.errToStr(ret))
            if ret == 0:
                continue
            counters["samples_received"] += ret
            idx = self._index_of(sr.timeNs if sr.flags & has_time else None, ret)
            gap = idx - self._next_idx
            if gap > 0:
                counters["samples_lost_overflow"] += gap
                if fill:  # a chunk is contiguous: what came before the gap is shed
                    counters["samples_shed"] += fill
                    if not cs16:
                        buf[:ret] = buf[fill : fill + ret]
                    fill = 0
            if fill == 0:
                chunk_start = idx
            if cs16:
                np.multiply(
                    self._scratch[: 2 * ret],
                    self._scale,
                    out=buf.view(np.float32)[2 * fill : 2 * (fill + ret)],
                )
            fill += ret
            self._next_idx = idx + ret
            if fill == length:
                self._emit(lease, chunk_start)
                # Drop every reader-side reference first: a shed chunk's buffer is free for the next.
                lease = buf = target = None
                lease = self._take()
                buf = lease if lease is not None else self._spill
                fill = 0
        # An unfinished lease goes back to the ring with the last reference to it.

    def _index_of(self, time_ns: int | None, ret: int) -> int:
        """Absolute sample index of the first sample of a read of ``ret`` samples."""
        now = time.monotonic()
        rate = self._rate
        if self._host_t0 is None:  # the very first read of the stream
            self._host_t0 = now - ret / rate
            self._utc0 = datetime.now(timezone.utc) - timedelta(
                seconds=ret / rate
            )  # hardware epoch time wins below
        if time_ns is not None:
            if self._time_base is None:
                start = self._next_idx
                if self._suspect:  # first read after a reopen: place it by the host clock
                    start = max(self._next_idx, round((now - self._host_t0) * rate) - ret)
                    self._counters["gaps_estimated"] += start != self._next_idx
                self._time_base = (time_ns, start)
                if time_ns > _EPOCH_2000_NS:
                    stamp = datetime.fromtimestamp(time_ns / 1e9 - start / rate, timezone.utc)
                    self._utc0 = stamp
            base_ns, base_idx = self._time_base
            idx = base_idx + round((time_ns - base_ns) * rate / 1e9)
            if idx < self._next_idx:  # the clock went backwards (device reset): rebase, no gap
                self._time_base = (time_ns, self._next_idx)
                idx = self._next_idx
        elif self._suspect:
            idx = max(self._next_idx, round((now - self._host_t0) * rate) - ret)
            if idx != self._next_idx:
                self._counters["gaps_estimated"] += 1
                self._host_t0 = now - (idx + ret) / rate  # re-anchor, so drift does not pile up
        else:
            idx = self._next_idx
        self._suspect = False
        return idx

    def _emit(self, lease: np.ndarray | None, start: int) -> None:
        counters = self._counters
        if lease is None or self._queue.full():  # the consumer is behind: shed, never block
            counters["samples_shed"] += self._len
            return  # a shed lease returns to the ring when the reader drops it
        chunk = self._stamper.stamp(
            lease,
            start_sample=start,
            center_freq_hz=self._freq,
            start_time_utc=utc_plus(self._utc0, start, self._rate),
            gap_before_samples=start - self._emitted_end,
        )
        self._emitted_end = start + self._len
        counters["chunks_emitted"] += 1
        self._queue.put_nowait(chunk)
