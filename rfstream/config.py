"""Configuration: defaults < TOML file < RFSTREAM_* environment < CLI flags.

Everything lands in frozen dataclasses. An unknown key or a bad value stops
the start with a ConfigError naming the key (``spectrogram.nfft: ...``).

Environment variables name a key with a double underscore between section
and key: ``RFSTREAM_SPECTROGRAM__NFFT=2048``, ``RFSTREAM_PUBLISH__ENDPOINT=...``.
Detectors are a list of records (``[[detectors]]``); the environment cannot
address them, a file or ``--set detectors.N.key=value`` can.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rfstream.errors import ConfigError
from rfstream.limits import (
    MAX_ABS_FREQ_HZ,
    MAX_CHANNELS,
    MAX_CONFIG_BYTES,
    MAX_IMAGE_SIDE,
    MAX_NFFT,
    MAX_SAMPLE_RATE_HZ,
    MIN_SAMPLE_RATE_HZ,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # JetPack 6 ships Python 3.10
    import tomli as tomllib

ENV_PREFIX = "RFSTREAM_"
# RFSTREAM_* variables that are not config keys: the config file and the model search directory.
ENV_RESERVED = frozenset({"RFSTREAM_CONFIG", "RFSTREAM_MODEL_DIR"})


@dataclass(frozen=True, slots=True)
class SourceConfig:
    kind: str = "sigmf"  # sigmf | raw | synth | soapy
    path: str = ""  # recording (sigmf/raw)
    chunk_ms: float = 200.0
    channel: int = 0
    realtime: bool = False  # pace chunks at the sample rate (replay); live sources always are
    loop: bool = False  # replay the recording again and again
    capture_index: int = -1  # -1: every capture in order
    verify_checksum: bool = True  # check a SigMF recording's core:sha512 before replaying it
    allow_external_dataset: bool = False  # let core:dataset name a file outside the metadata's folder
    # raw IQ files (rtl_sdr .cu8, hackrf .cs8, .cs16, GNU Radio .cf32/.cfile)
    datatype: str = ""  # SigMF datatype string, e.g. cu8, ci16_le, cf32_le; "" = from the extension
    sample_rate_hz: float = 0.0
    center_freq_hz: float = 0.0
    # soapy
    device_args: str = ""
    gain_db: float = -1.0  # < 0: automatic gain (AGC) where the device has it
    antenna: str = ""
    bandwidth_hz: float = 0.0  # 0: the device's default
    stream_format: str = "CS16"  # CS16 | CF32
    reopen_backoff_s: float = 1.0
    read_timeout_s: float = 0.5
    queue_depth: int = 8  # chunks buffered between the reader and processing


@dataclass(frozen=True, slots=True)
class SpectrogramConfig:
    backend: str = "auto"  # auto | numpy | cupy
    nfft: int = 4096
    hop: int = 2048
    window: str = "hann"  # any scipy.signal.get_window name
    height: int = 1024  # rows (time)
    width: int = 1024  # columns (frequency)
    dynamic_range_db: float = 50.0  # dB mapped onto [0, 1]
    floor_offset_db: float = 6.0  # the image's 0 sits this far below the frame's median (noise floor)
    remove_dc: bool = False  # null the DC bin (RTL-SDR style receivers show a spike there)


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    name: str = "energy"
    kind: str = "energy"  # energy | two_stage | onnx | tensorrt | torch
    enabled: bool = True
    priority: int = 0  # higher = kept longer when the pipeline sheds load
    model: str = ""  # model name or path (learned kinds)
    score_threshold: float = -1.0  # < 0: the model's own default
    labels: tuple[str, ...] = ()  # keep only these labels; () keeps all
    options: Mapping[str, Any] = field(default_factory=dict)  # kind-specific, validated by the kind


# The embedded default: the model-free energy detector and both shipped models, side by side.
# Priority decides what the daemon drops first under load (lowest first).
DEFAULT_DETECTORS: tuple[DetectorConfig, ...] = (
    DetectorConfig(name="energy", kind="energy", priority=2),
    # INT8 on the CPU: same AP as frame_detector.onnx, 1.25x faster (scripts/quantize_model.py).
    DetectorConfig(name="frame", kind="onnx", model="frame_detector_int8", priority=1),
    DetectorConfig(name="classifier", kind="two_stage", model="crop_classifier", priority=0),
)


@dataclass(frozen=True, slots=True)
class MergeConfig:
    mode: str = "fuse"  # fuse (one box per signal, rfstream/detect/fuse.py) | class_nms
    cluster_iou: float = 0.3  # fuse: boxes overlapping more are one signal, whatever their labels
    correlated: tuple[str, ...] = ("energy+classifier",)  # fuse: detectors sharing evidence, "a+b"
    group_fragments: bool = True  # fuse: join fragments of one emission (rfstream/detect/fragments.py)
    threshold: float = -1.0  # publish gate on the score; < 0: the fusion file's (fuse) or 0 (class_nms)
    keep_low_confidence: bool = False  # publish boxes below the gate, marked low_confidence
    # fuse: a box no detector labelled ("unknown": an energy blob no classifier confirmed) is
    # low_confidence whatever its score ("low_confidence"), or published like any other
    # ("publish"); "auto": low_confidence where a detector that labels ran on the chunk, else
    # publish (energy detectors only, or overload left only them running)
    unknown: str = "auto"
    fusion_file: str = ""  # fitted fusion numbers (scripts/fit_fusion.py); "": the shipped fusion.json
    iou_threshold: float = 0.5  # class_nms: NMS IoU
    class_aware: bool = True  # class_nms: only boxes of one label suppress each other


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    max_gap_s: float = 0.5  # a track ends after this long without a hit
    confirm_hits: int = 2  # hits before a track is confirmed
    freq_tolerance_hz: float = 0.0  # extra slack when matching; 0 = 10 % of the bandwidth
    smoothing: float = 0.5  # exponential smoothing of the edges, 0 = no memory
    label_by_track: bool = True  # a detection carrying its track on takes its label (rfstream/track.py)


@dataclass(frozen=True, slots=True)
class PublishConfig:
    endpoint: str = "tcp://127.0.0.1:5555"  # "" disables ZeroMQ publishing
    spectrogram: bool = False  # publish the uint8 image for GUIs
    spectrogram_decimate: int = 2  # publish every Nth row and column
    sndhwm: int = 64  # messages queued per subscriber before they are dropped
    health_interval_s: float = 1.0
    allow_remote: bool = False  # binding to a non-loopback address needs this (and CURVE keys)
    curve_secret_key: str = ""  # path to the server's secret key file (rfstream keys generate)
    curve_authorized_keys: str = ""  # directory of clients' public key files
    annotations: str = ""  # write detections as SigMF annotations to this .sigmf-meta at shutdown


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    deadline_ms: float = 400.0
    queue_depth: int = 4
    workers: int = 0  # detectors run at once by the fan-out; 0 = from the thread budget
    # the thread budget (rfstream/runtime/budget.py); 0 = decided at start-up from the usable cores
    threads: int = 0  # cores to plan for; 0 = the CPU affinity capped by the cgroup CPU quota
    spectrogram_workers: int = 0  # CPU spectrogram threads
    detector_threads: int = 0  # ONNX Runtime intra-op threads per session (a record's threads wins)
    blas_threads: int = 0  # OpenBLAS/MKL threads; 0 = 1
    pipelined: bool = True  # each stage in its own worker; false: one chunk at a time (debugging)
    stage_queue_depth: int = 2  # chunks waiting between two pipelined stages
    log_format: str = "auto"  # auto | console | json
    log_level: str = "info"
    watchdog: bool = True  # feed systemd's watchdog while chunks flow
    metrics_endpoint: str = ""  # host:port for Prometheus; "" disables
    metrics_allow_remote: bool = False  # serve /metrics on a non-loopback address
    watchdog_stall_s: float = 0.0  # no chunk done for this long stops the watchdog; 0: auto
    # load shedding in live runs (see rfstream/runtime/policy.py, DegradePolicy)
    degrade: bool = True  # step through the degrade levels when overruns persist
    degrade_load_high: float = 0.8  # processing cost / chunk period that counts as overload
    degrade_load_low: float = 0.5  # ... and below which load has fallen
    degrade_up_chunks: int = 5  # overloaded chunks in a row before stepping up a level
    degrade_down_chunks: int = 25  # calm chunks in a row before stepping down (doubles when it flaps)


@dataclass(frozen=True, slots=True)
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    spectrogram: SpectrogramConfig = field(default_factory=SpectrogramConfig)
    detectors: tuple[DetectorConfig, ...] = DEFAULT_DETECTORS
    merge: MergeConfig = field(default_factory=MergeConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


# --- validation rules, by key, beyond the type ------------------------------------------
_CHOICES = {
    "source.kind": ("sigmf", "raw", "synth", "soapy"),
    "source.stream_format": ("CS16", "CF32"),
    "spectrogram.backend": ("auto", "numpy", "cupy"),
    "runtime.log_format": ("auto", "console", "json"),
    "runtime.log_level": ("debug", "info", "warning", "error"),
    "detectors.kind": ("energy", "two_stage", "onnx", "tensorrt", "torch"),
    "merge.mode": ("fuse", "class_nms"),
    "merge.unknown": ("auto", "publish", "low_confidence"),
}


@dataclass(frozen=True, slots=True)
class _Range:
    """The values a numeric key accepts: [low, high], or (low, high] where ``low_open``."""

    low: float
    high: float
    low_open: bool = False

    def complaint(self, value: float) -> str | None:
        below = value <= self.low if self.low_open else value < self.low
        if not below and value <= self.high:
            return None
        bracket = "(" if self.low_open else "["
        return f"must lie in {bracket}{_num(self.low)}, {_num(self.high)}], got {_show(value)}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e12 else f"{x:g}"


# Every numeric key has a range the code can actually serve (a test checks that none is
# missing): a port, a queue size or an FFT size that passes here works at run time.
_RANGES: dict[str, _Range] = {
    "source.chunk_ms": _Range(1.0, 60_000.0),
    "source.channel": _Range(0, MAX_CHANNELS - 1),
    "source.capture_index": _Range(-1, 2**31 - 1),
    "source.sample_rate_hz": _Range(MIN_SAMPLE_RATE_HZ, MAX_SAMPLE_RATE_HZ),  # or 0: the file's/device's
    "source.center_freq_hz": _Range(-MAX_ABS_FREQ_HZ, MAX_ABS_FREQ_HZ),
    "source.gain_db": _Range(-100.0, 200.0),
    "source.bandwidth_hz": _Range(0.0, MAX_SAMPLE_RATE_HZ),
    "source.reopen_backoff_s": _Range(0.0, 3600.0, low_open=True),
    "source.read_timeout_s": _Range(0.0, 60.0, low_open=True),
    "source.queue_depth": _Range(1, 1024),
    "spectrogram.nfft": _Range(16, MAX_NFFT),
    "spectrogram.hop": _Range(1, MAX_NFFT),
    "spectrogram.height": _Range(16, MAX_IMAGE_SIDE),
    "spectrogram.width": _Range(16, MAX_IMAGE_SIDE),
    "spectrogram.dynamic_range_db": _Range(0.0, 400.0, low_open=True),
    "spectrogram.floor_offset_db": _Range(-400.0, 400.0),
    "detectors.priority": _Range(-1000, 1000),
    "detectors.score_threshold": _Range(-1.0, 1.0),
    "merge.iou_threshold": _Range(0.0, 1.0),
    "merge.cluster_iou": _Range(0.0, 1.0),
    "merge.threshold": _Range(-1.0, 1.0),
    "tracker.max_gap_s": _Range(0.0, 86_400.0, low_open=True),
    "tracker.confirm_hits": _Range(1, 10_000),
    "tracker.freq_tolerance_hz": _Range(0.0, MAX_SAMPLE_RATE_HZ),
    "tracker.smoothing": _Range(0.0, 1.0),
    "publish.spectrogram_decimate": _Range(1, 64),
    "publish.sndhwm": _Range(1, 1_000_000),  # ZeroMQ takes a C int; a million messages is already GiBs
    "publish.health_interval_s": _Range(0.0, 3600.0, low_open=True),
    "runtime.deadline_ms": _Range(0.0, 3_600_000.0, low_open=True),
    "runtime.queue_depth": _Range(1, 1024),
    "runtime.workers": _Range(0, 256),
    "runtime.threads": _Range(0, 1024),
    "runtime.spectrogram_workers": _Range(0, 256),
    "runtime.detector_threads": _Range(0, 256),
    "runtime.blas_threads": _Range(0, 256),
    "runtime.stage_queue_depth": _Range(1, 64),
    "runtime.watchdog_stall_s": _Range(0.0, 86_400.0),
    "runtime.degrade_load_high": _Range(0.0, 100.0, low_open=True),
    "runtime.degrade_load_low": _Range(0.0, 100.0, low_open=True),
    "runtime.degrade_up_chunks": _Range(1, 1_000_000),
    "runtime.degrade_down_chunks": _Range(1, 1_000_000),
}


# Settings that name files: a path no filesystem can hold fails here, naming the key, instead of
# as an OSError wherever the file is first touched.
_PATHS = {
    "source.path",
    "publish.annotations",
    "publish.curve_secret_key",
    "publish.curve_authorized_keys",
    "detectors.model",
    "merge.fusion_file",
}
MAX_PATH_CHARS = 1024
MAX_STRING_CHARS = 1024  # any text setting: names, endpoints, device args, paths
MAX_NAME_BYTES = 255  # one path component, on every common filesystem


def _path_problem(path: str) -> str | None:
    if "\0" in path:
        return "is not a path: it holds a NUL character"
    if len(path) > MAX_PATH_CHARS:
        return f"is not a usable path: {len(path)} characters, more than {MAX_PATH_CHARS}"
    longest = max((len(part.encode("utf-8", "surrogateescape")) for part in path.split("/")), default=0)
    if longest > MAX_NAME_BYTES:
        return f"is not a usable path: a name of {longest} bytes, more than {MAX_NAME_BYTES}"
    return None


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"config key '{_cut(key)}': {message}")


def _cut(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else f"{text[: limit - 15]}... ({len(text)} chars)"


def _show(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut short: a message must stay one readable line whatever was typed."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        return "<an integer too long to print>"
    return _cut(text, limit)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Coerce a TOML/env/CLI value to the annotated type, or raise naming the key."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise _fail(key, f"expected true or false, got {_show(value)}")
    if tp is int:
        if isinstance(value, bool):
            raise _fail(key, f"expected an integer, got {_show(value)}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value)) if float(value).is_integer() else int(value)
            except ValueError:
                pass
        raise _fail(key, f"expected an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, bool):
            raise _fail(key, f"expected a number, got {_show(value)}")
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise _fail(key, f"expected a number, got {_show(value)}") from None
        except OverflowError:  # an integer beyond any float (10**400)
            out = math.inf
        if not math.isfinite(out):
            raise _fail(key, f"expected a finite number, got {_show(value)}")
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        raise _fail(key, f"expected a string, got {_show(value)}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise _fail(key, f"expected a list, got {_show(value)}")
        (item_tp, _) = typing.get_args(tp)
        return tuple(_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value))
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, Mapping):
            raise _fail(key, f"expected a table, got {_show(value)}")
        return dict(value)
    if isinstance(tp, types.UnionType):
        raise _fail(key, "unsupported type")  # pragma: no cover - no such fields
    raise _fail(key, f"unsupported type {tp!r}")  # pragma: no cover


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise _fail(f"{prefix}{key}", "unknown key" + _suggest(key, names))
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(f"{prefix}{f.name}", data[f.name], hints[f.name])
    return cls(**kwargs)


def _suggest(key: str, names: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(names), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _validate(cfg: Config) -> None:
    def check(key: str, value: Any) -> None:
        generic = key.split(".")[0] + "." + key.split(".")[-1] if key.startswith("detectors") else key
        if generic in _CHOICES and value not in _CHOICES[generic]:
            raise _fail(key, f"{_show(value)} is not one of {', '.join(_CHOICES[generic])}")
        if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
            raise _fail(key, f"{_show(value)} is {len(value)} characters, more than {MAX_STRING_CHARS}")
        if generic in _PATHS and value:
            problem = _path_problem(value)
            if problem:
                raise _fail(key, f"{_show(value)} {problem}")
        bounds = _RANGES.get(generic)
        if generic == "source.sample_rate_hz" and value == 0:
            bounds = None  # 0: the file's or the device's own rate
        if bounds is not None:
            complaint = bounds.complaint(value)
            if complaint:
                zero = " (or 0: the file's or device's own)" if generic == "source.sample_rate_hz" else ""
                raise _fail(key, complaint + zero)

    for section in ("source", "spectrogram", "merge", "tracker", "publish", "runtime"):
        obj = getattr(cfg, section)
        for f in dataclasses.fields(obj):
            check(f"{section}.{f.name}", getattr(obj, f.name))
    seen: set[str] = set()
    for i, det in enumerate(cfg.detectors):
        for f in dataclasses.fields(det):
            check(f"detectors.{i}.{f.name}", getattr(det, f.name))
        if det.name in seen:
            raise _fail(f"detectors.{i}.name", f"duplicate detector name {det.name!r}")
        seen.add(det.name)
    rt = cfg.runtime
    if rt.degrade_load_low >= rt.degrade_load_high:
        raise _fail(
            "runtime.degrade_load_low",
            f"must be below runtime.degrade_load_high ({rt.degrade_load_high}), got {rt.degrade_load_low}",
        )
    if rt.metrics_endpoint and not _host_port(rt.metrics_endpoint):
        raise _fail("runtime.metrics_endpoint", f"expected HOST:PORT, got {_show(rt.metrics_endpoint)}")
    sp = cfg.spectrogram
    if sp.hop > sp.nfft:
        raise _fail("spectrogram.hop", f"must be <= spectrogram.nfft ({sp.nfft}), got {sp.hop}")
    if cfg.publish.endpoint:
        from rfstream.sinks.endpoints import check_zmq_endpoint

        check_zmq_endpoint(cfg.publish.endpoint, allow_remote=True)  # the form and the port; policy later


def _host_port(text: str) -> tuple[str, int] | None:
    """``"127.0.0.1:9108"`` / ``"[::1]:9108"`` -> (host, port), or None when it is not one."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_RESERVED:
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) != 2 or not all(parts):
            raise _fail(name, "environment keys look like RFSTREAM_SECTION__KEY")
        layer.setdefault(parts[0], {})[parts[1]] = value
    return layer


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if parts[0] == "detectors":
        if len(parts) < 3 or not parts[1].isdigit():
            raise _fail(dotted, "detector keys look like detectors.N.key")
        dets = tree.setdefault("detectors", [])
        index = int(parts[1])
        if index >= len(dets):
            raise _fail(dotted, f"there is no detector {index} (have {len(dets)})")
        node = dets[index] = dict(dets[index])
        for part in parts[2:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        return
    if len(parts) != 2:
        raise _fail(dotted, "keys look like section.key")
    tree.setdefault(parts[0], {})[parts[1]] = value


def _parse_cli_value(text: str) -> Any:
    """Parse a --set value as TOML where it parses, else keep it a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the frozen Config from defaults, a TOML file, the environment and CLI overrides.

    ``overrides`` maps dotted keys (``"spectrogram.nfft"``, ``"detectors.0.enabled"``)
    to values; string values are parsed as TOML where they parse.
    """
    environ = os.environ if environ is None else environ
    tree: dict[str, Any] = {}
    if path is None and environ.get("RFSTREAM_CONFIG"):
        path = environ["RFSTREAM_CONFIG"]
    if path is not None:
        file_tree = read_toml(path)
        merge = file_tree.get("merge")
        if isinstance(merge, dict) and isinstance(merge.get("fusion_file"), str) and merge["fusion_file"]:
            # a file named in a config file lives beside it (under systemd the working folder is /)
            merge["fusion_file"] = str(Path(path).parent / os.path.expanduser(merge["fusion_file"]))
        tree = _merge(tree, file_tree)
    tree = _merge(tree, _env_layer(environ))
    for dotted, value in (overrides or {}).items():
        if "detectors" not in tree and dotted.startswith("detectors."):
            tree["detectors"] = [dataclasses.asdict(d) for d in Config().detectors]
        _set_dotted(tree, dotted, _parse_cli_value(value) if isinstance(value, str) else value)
    return config_from_tree(tree)


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A TOML config file: a regular file of at most MAX_CONFIG_BYTES (a FIFO or /dev/zero fails at once)."""
    from rfstream.errors import InputError
    from rfstream.sources.base import read_bounded

    p = Path(path)
    try:
        data = read_bounded(p, "config file", MAX_CONFIG_BYTES)
    except InputError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} cannot be read: it is not UTF-8 text ({exc.reason})") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from exc


def config_from_tree(tree: Mapping[str, Any]) -> Config:
    """Validate a nested mapping (as read from TOML) into a Config."""
    sections = {f.name: f for f in dataclasses.fields(Config)}
    for key in tree:
        if key not in sections:
            raise _fail(key, "unknown section" + _suggest(key, set(sections)))
    hints = typing.get_type_hints(Config)
    kwargs: dict[str, Any] = {}
    for name, value in tree.items():
        if name == "detectors":
            if not isinstance(value, list):
                raise _fail("detectors", "expected a list of [[detectors]] tables")
            dets = []
            for i, item in enumerate(value):
                if not isinstance(item, Mapping):
                    raise _fail(f"detectors.{i}", "expected a table")
                dets.append(_build(DetectorConfig, item, f"detectors.{i}."))
            kwargs[name] = tuple(dets)
        else:
            if not isinstance(value, Mapping):
                raise _fail(name, "expected a table")
            kwargs[name] = _build(hints[name], value, f"{name}.")
    cfg = Config(**kwargs)
    _validate(cfg)
    return cfg


def replace(cfg: Config, **sections: Mapping[str, Any]) -> Config:
    """A copy of ``cfg`` with some keys of some sections changed (validated)."""
    tree = to_tree(cfg)
    for section, changes in sections.items():
        if section == "detectors":
            tree["detectors"] = list(changes)  # type: ignore[arg-type]
        else:
            tree[section] = {**tree[section], **changes}
    return config_from_tree(tree)


def to_tree(cfg: Config) -> dict[str, Any]:
    """The Config as plain nested dicts and lists (TOML-shaped)."""
    tree = dataclasses.asdict(cfg)
    tree["detectors"] = [dict(d) for d in tree["detectors"]]
    return tree
