"""The model manager: find a model file, read its rfstream metadata, refuse a mismatch.

A model is a file that describes itself. ONNX files carry the contract in
``metadata_props`` (written by ``rfstream train``, see rfstream/train/export.py):

    rfstream.format          "1"
    rfstream.task            "frame_detector" | "crop_classifier"
    rfstream.labels          JSON list, the model's class order
    rfstream.input_size      JSON [H, W]
    rfstream.normalisation   JSON {"dynamic_range_db", "floor_offset_db", "nfft", ...}
    rfstream.score_threshold "0.5"
    rfstream.decoder         JSON {"stride", ...} (frame detector only)
    rfstream.training        JSON summary of the data and the run

A TensorRT engine has no room for metadata, so ``tensorrt.build_engine`` writes a
sidecar ``<engine>.json`` holding the source ONNX file's metadata and what the
engine was built for (GPU name, compute capability, TensorRT version, source
sha256). A TorchScript ``.pt`` carries the same JSON as ``<file>.pt.json``.

Resolution of a model *name* (no suffix): in each search directory in turn —
the config file's directory, ``$RFSTREAM_MODEL_DIR``, the packaged
``rfstream/models/``; never the current directory — try ``<name>.engine`` (only
if its sidecar matches this GPU and TensorRT version and the sha256 of the ONNX
model the same name resolves to, the one it must have been built from;
otherwise a warning and the next candidate), then ``<name>.onnx``, then
``<name>.pt``. An absolute path is taken as given. Suffixes win over directories: a matching engine anywhere beats
an ONNX file, since the engine is the point of having built one. A path with a
suffix means exactly that file (an ``.engine`` that does not match still falls
back to the ``.onnx`` beside it, with a warning).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from rfstream.config import SpectrogramConfig
from rfstream.detect.calibration import Calibration, CalibrationError
from rfstream.errors import InferenceFailed, ModelError
from rfstream.labels import LABELS

__all__ = [
    "FORMAT",
    "SUFFIXES",
    "TASKS",
    "EngineTarget",
    "InferenceFailed",
    "ModelMetadata",
    "ResolvedModel",
    "check_compatible",
    "default_search_dirs",
    "file_sha256",
    "packaged_model_dir",
    "read_metadata",
    "read_onnx_metadata",
    "resolve_model",
    "sidecar_path",
    "write_engine_sidecar",
]

log = structlog.get_logger(__name__)

FORMAT = "1"
TASKS = ("frame_detector", "crop_classifier")
SUFFIXES = (".engine", ".onnx", ".pt")
_NORMALISATION_KEYS = ("dynamic_range_db", "floor_offset_db", "nfft")


# --- metadata ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """The rfstream contract of one model file, parsed and validated."""

    source: str  # the file the metadata came from (for messages)
    task: str
    labels: tuple[str, ...]
    input_size: tuple[int, int]  # (H, W)
    normalisation: Mapping[str, float]
    score_threshold: float
    decoder: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    # Raw score -> probability, fitted on validation data at training time (identity if absent).
    calibration: Calibration = field(default_factory=Calibration)

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str) -> ModelMetadata:
        """Parse ``metadata_props`` (string values); any missing or bad field is a ModelError naming it."""
        if "rfstream.format" not in props:
            raise ModelError(f"model {source} has no rfstream metadata (rfstream.format)")
        if props["rfstream.format"] != FORMAT:
            raise ModelError(
                f"model {source}: rfstream.format {props['rfstream.format']!r} is not supported "
                f"(this rfstream reads format {FORMAT!r})"
            )

        def need(key: str) -> str:
            if key not in props:
                raise ModelError(f"model {source}: metadata field {key} is missing")
            return props[key]

        def as_json(key: str) -> Any:
            try:
                return json.loads(need(key))
            except json.JSONDecodeError as exc:
                raise ModelError(f"model {source}: metadata field {key} is not valid JSON: {exc}") from exc

        task = need("rfstream.task")
        if task not in TASKS:
            raise ModelError(f"model {source}: rfstream.task {task!r} is not one of {', '.join(TASKS)}")
        labels = as_json("rfstream.labels")
        if not (isinstance(labels, list) and labels and all(isinstance(v, str) and v for v in labels)):
            raise ModelError(f"model {source}: rfstream.labels must be a non-empty list of names")
        if len(set(labels)) != len(labels):
            raise ModelError(f"model {source}: rfstream.labels has duplicates: {labels}")
        size = as_json("rfstream.input_size")
        if not (
            isinstance(size, list)
            and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        ):
            raise ModelError(f"model {source}: rfstream.input_size must be [H, W] positive integers")
        norm = as_json("rfstream.normalisation")
        if not isinstance(norm, dict):
            raise ModelError(f"model {source}: rfstream.normalisation must be a JSON object")
        for key in _NORMALISATION_KEYS:
            value = norm.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ModelError(f"model {source}: rfstream.normalisation.{key} is missing or not a number")
        try:
            threshold = float(need("rfstream.score_threshold"))
        except ValueError:
            threshold = math.nan
        if not 0.0 <= threshold <= 1.0:
            raise ModelError(
                f"model {source}: rfstream.score_threshold must be a number in [0, 1], "
                f"got {props['rfstream.score_threshold']!r}"
            )
        decoder: dict[str, Any] = {}
        if task == "frame_detector":
            decoder = as_json("rfstream.decoder")
            stride = decoder.get("stride") if isinstance(decoder, dict) else None
            if isinstance(stride, bool) or not isinstance(stride, int) or stride <= 0:
                raise ModelError(f"model {source}: rfstream.decoder.stride must be a positive integer")
        training: Any = {}
        if "rfstream.training" in props:
            training = as_json("rfstream.training")
        calibration = Calibration()
        if "rfstream.calibration" in props:
            try:
                calibration = Calibration.from_json(props["rfstream.calibration"])
            except CalibrationError as exc:
                raise ModelError(f"model {source}: metadata field rfstream.calibration: {exc}") from exc
            unknown = set(calibration.per_label) - set(labels)
            if unknown:
                raise ModelError(
                    f"model {source}: rfstream.calibration names labels the model does not have: "
                    f"{', '.join(sorted(unknown))}"
                )
        return cls(
            source=source,
            task=task,
            labels=tuple(labels),
            input_size=(size[0], size[1]),
            # Numbers are settings to check; anything else (a note on the input) is documentation.
            normalisation={
                k: v if k == "nfft" else float(v)
                for k, v in norm.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            },
            score_threshold=threshold,
            decoder=decoder,
            training=training if isinstance(training, dict) else {"summary": training},
            calibration=calibration,
        )

    def to_props(self) -> dict[str, str]:
        """Back to ``metadata_props`` strings (for engine sidecars)."""
        props = {
            "rfstream.format": FORMAT,
            "rfstream.task": self.task,
            "rfstream.labels": json.dumps(list(self.labels)),
            "rfstream.input_size": json.dumps(list(self.input_size)),
            "rfstream.normalisation": json.dumps(dict(self.normalisation)),
            "rfstream.score_threshold": repr(self.score_threshold),
            "rfstream.training": json.dumps(dict(self.training), sort_keys=True, default=str),
        }
        if self.decoder:
            props["rfstream.decoder"] = json.dumps(dict(self.decoder))
        if not self.calibration.is_identity or self.calibration.threshold is not None:
            props["rfstream.calibration"] = self.calibration.to_json()
        return props


def _onnx_error(path: Path, exc: BaseException) -> ModelError:
    detail = " ".join(str(exc).split())[:200] or type(exc).__name__
    return ModelError(f"model {path} is not a readable ONNX file (corrupt or truncated?): {detail}")


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict of strings.

    Read straight from the protobuf wire format (:func:`_model_props`), so neither the
    ``onnx`` package (1.5 s to import) nor an ONNX Runtime session is needed to learn
    what a model is. A missing, corrupt or truncated file is a ModelError.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model {p} does not exist")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ModelError(f"model {p} cannot be read: {exc.strerror or exc}") from exc
    try:
        return _model_props(data)
    except ValueError as exc:
        raise _onnx_error(p, exc) from exc


def _varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: bytes | memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one protobuf message; every byte accounted for."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise ValueError("truncated fixed-size field")
            value, pos = None, pos + size
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > end:
                raise ValueError(f"field {number} runs past the end of the file (truncated?)")
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


_MODEL_GRAPH, _MODEL_METADATA_PROPS = 7, 14  # onnx.proto ModelProto field numbers


def _model_props(data: bytes) -> dict[str, str]:
    """ModelProto.metadata_props (StringStringEntryProto: key = 1, value = 2) from the raw file."""
    view = memoryview(data)
    props: dict[str, str] = {}
    graph = False
    for number, wire, value in _fields(view):
        if number == _MODEL_GRAPH and wire == 2:
            graph = graph or len(value) > 0
        elif number == _MODEL_METADATA_PROPS and wire == 2:
            entry = {n: bytes(v).decode("utf-8") for n, w, v in _fields(value) if w == 2 and n in (1, 2)}
            props[entry.get(1, "")] = entry.get(2, "")
    if not graph:
        raise ValueError("the file holds no graph")
    return props


def sidecar_path(model_path: str | os.PathLike[str]) -> Path:
    """``model.engine`` -> ``model.engine.json`` (also ``model.pt`` -> ``model.pt.json``)."""
    p = Path(model_path)
    return p.with_name(p.name + ".json")


def read_sidecar(path: Path) -> dict[str, Any]:
    side = sidecar_path(path)
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"model {path} has no metadata sidecar {side.name}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model {path}: metadata sidecar {side.name} cannot be read: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("metadata"), dict):
        raise ModelError(f"model {path}: metadata sidecar {side.name} has no 'metadata' object")
    return data


def read_metadata(path: str | os.PathLike[str]) -> ModelMetadata:
    """The validated metadata of a model file of any supported kind."""
    p = Path(path)
    if p.suffix == ".onnx":
        return ModelMetadata.from_props(read_onnx_metadata(p), str(p))
    if p.suffix in (".engine", ".pt"):
        if not p.is_file():
            raise ModelError(f"model {p} does not exist")
        props = read_sidecar(p)["metadata"]
        return ModelMetadata.from_props({str(k): str(v) for k, v in props.items()}, str(p))
    raise ModelError(f"model {p}: unknown model file type {p.suffix!r} (expected .engine, .onnx or .pt)")


def check_compatible(
    meta: ModelMetadata,
    spectrogram_cfg: SpectrogramConfig,
    frame_shape: tuple[int, int] | None = None,
    *,
    labels_kept: Sequence[str] = (),
) -> None:
    """Refuse a model trained on other spectrogram settings, another frame size or unknown labels."""
    src = meta.source
    running = {
        "dynamic_range_db": float(spectrogram_cfg.dynamic_range_db),
        "floor_offset_db": float(spectrogram_cfg.floor_offset_db),
        "nfft": int(spectrogram_cfg.nfft),
    }
    for key, value in running.items():
        if not math.isclose(float(meta.normalisation[key]), float(value), rel_tol=1e-6, abs_tol=1e-9):
            raise ModelError(
                f"model {src} was trained with {key} = {meta.normalisation[key]:g} but "
                f"spectrogram.{key} is {value:g}; retrain the model or change the spectrogram settings"
            )
    if meta.task == "frame_detector":
        shape = tuple(frame_shape) if frame_shape else (spectrogram_cfg.height, spectrogram_cfg.width)
        if tuple(meta.input_size) != shape:
            raise ModelError(
                f"model {src} expects {meta.input_size[0]}x{meta.input_size[1]} frames but the "
                f"spectrogram makes {shape[0]}x{shape[1]} (spectrogram.height x spectrogram.width)"
            )
    foreign = [label for label in meta.labels if label not in LABELS]
    if foreign:
        raise ModelError(
            f"model {src} has labels outside rfstream's taxonomy: {', '.join(foreign)} "
            f"(known: {', '.join(LABELS)})"
        )
    missing = [label for label in labels_kept if label not in meta.labels]
    if missing:
        raise ModelError(
            f"model {src} cannot produce the kept label(s) {', '.join(missing)} "
            f"(it knows {', '.join(meta.labels)})"
        )


# --- engines: what they were built for -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EngineTarget:
    """What a TensorRT engine is bound to: the GPU model and the TensorRT version."""

    gpu_name: str
    compute_capability: str  # "8.7" (Orin), "8.9", "9.0"
    tensorrt_version: str

    @classmethod
    def current(cls) -> EngineTarget:
        """This machine's target; ModelError where TensorRT or a CUDA GPU is missing."""
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise ModelError("TensorRT is not installed (pip install 'rfstream[gpu]')") from exc
        try:
            import cupy

            device = cupy.cuda.Device()
            props = cupy.cuda.runtime.getDeviceProperties(device.id)
            name = props["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            cc = f"{props['major']}.{props['minor']}"
        except Exception as exc:  # ImportError, CUDARuntimeError: no usable GPU
            raise ModelError(f"no CUDA GPU is usable for TensorRT: {exc}") from exc
        return cls(gpu_name=name, compute_capability=cc, tensorrt_version=str(trt.__version__))

    def mismatch(self, built: Mapping[str, Any]) -> str | None:
        """Why an engine built for ``built`` (a sidecar) cannot run here, or None."""
        for key in ("gpu_name", "compute_capability", "tensorrt_version"):
            if str(built.get(key)) != getattr(self, key):
                return f"built for {key} {built.get(key)!r}, this machine has {getattr(self, key)!r}"
        return None


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def engine_mismatch(engine: Path, onnx_path: Path | None, target: EngineTarget | None) -> str | None:
    """Why ``engine`` must not be used here (stale, other GPU, no TensorRT), or None."""
    try:
        side = read_sidecar(engine)
    except ModelError as exc:
        return str(exc)
    if target is None:
        try:
            target = EngineTarget.current()
        except ModelError as exc:
            return str(exc)
    why = target.mismatch(side)
    if why:
        return why
    if onnx_path is not None and onnx_path.is_file() and side.get("onnx_sha256") != file_sha256(onnx_path):
        return f"built from another version of {onnx_path.name} (sha256 differs); rebuild it"
    return None


# --- resolution ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A model file that was found, and how."""

    path: Path
    kind: str  # "engine" | "onnx" | "pt"
    tried: tuple[str, ...]  # every candidate looked at, in order
    warnings: tuple[str, ...] = ()  # e.g. an engine skipped for another GPU


def packaged_model_dir() -> Path:
    """``rfstream/models/`` inside the installed package."""
    from importlib import resources

    return Path(str(resources.files("rfstream") / "models"))


def default_search_dirs(config_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The config file's directory, ``$RFSTREAM_MODEL_DIR``, then the packaged models."""
    dirs: list[Path] = []
    if config_dir:
        dirs.append(Path(config_dir))
    env = os.environ.get("RFSTREAM_MODEL_DIR")
    if env:
        dirs.extend(Path(p) for p in env.split(os.pathsep) if p)
    dirs.append(packaged_model_dir())
    return dirs


def resolve_model(
    name_or_path: str | os.PathLike[str],
    *,
    search_dirs: Iterable[str | os.PathLike[str]] | None = None,
    suffixes: Sequence[str] = SUFFIXES,
    target: EngineTarget | None = None,
) -> ResolvedModel:
    """Find a model file by path or by name (see the module docstring for the order).

    ``search_dirs`` defaults to :func:`default_search_dirs`; ``suffixes`` narrows the kinds
    acceptable (a backend that only runs ONNX passes ``(".onnx",)``); ``target`` overrides
    this machine's engine target (tests). No usable file: ModelError listing every path tried.
    """
    text = os.fspath(name_or_path)
    if not text.strip():
        raise ModelError("no model named (the detector's 'model' key is empty)")
    dirs = [Path(d) for d in (default_search_dirs() if search_dirs is None else search_dirs)]
    given = Path(text).expanduser()
    # A relative name is looked up in the model folders only, never in the current
    # directory: a file planted wherever the daemon happens to start must not be loaded.
    if given.suffix in SUFFIXES:
        bases = [given] if given.is_absolute() else [d / given for d in dirs]
        stems = [b.with_suffix("") for b in bases]
        order = [given.suffix] + ([".onnx"] if given.suffix == ".engine" and ".onnx" in suffixes else [])
    else:
        stems = [given] if given.is_absolute() else [d / given for d in dirs]
        order = [s for s in SUFFIXES if s in suffixes]
    tried: list[str] = []
    warnings: list[str] = []
    # The ONNX model an engine must have been built from: the one this name would run otherwise.
    onnx_twin = next((s.with_suffix(".onnx") for s in stems if s.with_suffix(".onnx").is_file()), None)
    for suffix in order:
        for stem in unique_paths(stems):
            candidate = stem.parent / (stem.name + suffix)
            tried.append(str(candidate))
            if not candidate.is_file():
                continue
            if suffix == ".engine":
                why = (
                    engine_mismatch(candidate, onnx_twin, target)
                    if onnx_twin is not None
                    else "no ONNX model of that name to check that the engine was built from it"
                )
                if why:
                    message = f"engine {candidate} skipped: {why}; falling back"
                    log.warning("engine skipped", engine=str(candidate), reason=why)
                    warnings.append(message)
                    continue
            return ResolvedModel(candidate, suffix[1:], tuple(tried), tuple(warnings))
    raise ModelError(f"model {text!r} not found; tried: {', '.join(tried)}")


def unique_paths(paths: Iterable[Path]) -> list[Path]:
    seen: set[str] = set()
    out = []
    for p in paths:
        key = os.path.normpath(str(p))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


# --- engine sidecars ------------------------------------------------------------------------------
def write_engine_sidecar(
    engine: Path, onnx_path: Path, target: EngineTarget, *, precision: str, max_batch: int | None = None
) -> None:
    """Write ``<engine>.json``: what the engine was built for and from, and the model's metadata.

    ``rfstream.detect.trt_engine.build_engine`` calls it; an engine built elsewhere
    (``trtexec``) gets one the same way.
    """
    meta = read_metadata(onnx_path)
    data = {
        "gpu_name": target.gpu_name,
        "compute_capability": target.compute_capability,
        "tensorrt_version": target.tensorrt_version,
        "onnx": onnx_path.name,
        "onnx_sha256": file_sha256(onnx_path),
        "precision": precision,
        "max_batch": max_batch,
        "metadata": meta.to_props(),
    }
    sidecar_path(engine).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
