"""Build the configured detectors: ``[[detectors]]`` records -> ready, warmed-up Detector values.

Kinds:

- ``energy``    -> :class:`rfstream.detect.energy.EnergyDetector` (no model).
- ``two_stage`` -> energy proposals (settings in ``options.energy``) + a crop
  classifier (``model``; ``.engine`` -> ``.onnx``).

The energy detector and a two-stage detector's proposal stage are one
:class:`rfstream.detect.energy.EnergyProposer` when their energy settings are
equal (the default): built once here and handed to both, so each frame's
proposals are computed once. Different settings get their own proposer.
- ``onnx`` / ``tensorrt`` / ``torch`` -> the full-frame detector. The model name
  resolves ``.engine`` -> ``.onnx`` -> ``.pt`` (see rfstream.detect.models) and the
  backend follows the file found: a TensorRT engine built for this GPU, else ONNX
  Runtime (with the CUDA/TensorRT execution providers where present), else
  TorchScript. ``kind`` says which one you expect; getting another is logged.

Every model's metadata is checked against the running spectrogram settings and
the kept labels, and every detector is warmed up, before the first chunk.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from rfstream.config import DetectorConfig, SpectrogramConfig
from rfstream.detect.base import Detector, parse_options
from rfstream.detect.models import check_compatible, default_search_dirs, read_metadata, resolve_model
from rfstream.errors import ConfigError, ModelError

__all__ = ["build_detector", "build_detectors"]

log = structlog.get_logger(__name__)

_FILE_KIND = {"engine": "tensorrt", "onnx": "onnx", "pt": "torch"}


def _threshold(cfg: DetectorConfig) -> float | None:
    return cfg.score_threshold if cfg.score_threshold >= 0 else None


def _resolve(cfg: DetectorConfig, dirs: list[Path], suffixes: Sequence[str]) -> Any:
    if not cfg.model:
        raise ConfigError(f"config key 'detectors.{cfg.name}.model': kind '{cfg.kind}' needs a model")
    try:
        return resolve_model(cfg.model, search_dirs=dirs, suffixes=suffixes)
    except ModelError as exc:
        raise ModelError(f"detector {cfg.name!r}: {exc}") from exc


def _proposer(
    options: Any, where: str, spectrogram_cfg: SpectrogramConfig, xp: Any, shared: dict[Any, Any]
) -> Any:
    """The energy proposer for these options: the one already built for equal options, else a new one.

    The spectrogram's dB scale and hop fix the margins and the frame geometry.
    """
    from rfstream.detect.energy import EnergyProposer, energy_options

    parsed = energy_options(options, where, spectrogram_cfg.dynamic_range_db, spectrogram_cfg.hop)
    if parsed not in shared:
        shared[parsed] = EnergyProposer(parsed, xp=xp, where=where)
    return shared[parsed]


def build_detector(
    cfg: DetectorConfig,
    spectrogram_cfg: SpectrogramConfig,
    *,
    backend: Any,
    search_dirs: list[Path],
    default_threads: int = 0,
    proposers: dict[Any, Any] | None = None,
) -> Detector:
    """One detector from its record (not warmed up); ``default_threads`` where ``threads = 0``.

    ``proposers``: energy proposers already built, by options (shared and extended here).
    """
    xp = backend.xp if backend is not None else __import__("numpy")
    where = f"detectors.{cfg.name}.options"
    proposers = {} if proposers is None else proposers
    if cfg.kind == "energy":
        from rfstream.detect.energy import EnergyDetector

        proposer = _proposer(cfg.options, where, spectrogram_cfg, xp, proposers)
        return EnergyDetector.from_config(
            cfg,
            xp=xp,
            dynamic_range_db=spectrogram_cfg.dynamic_range_db,
            hop=spectrogram_cfg.hop,
            proposer=proposer,
        )
    if cfg.kind == "two_stage":
        from rfstream.detect.two_stage import TwoStageDetector, TwoStageOptions

        options = dict(cfg.options)
        energy_table = options.pop("energy", {})
        parsed = parse_options(TwoStageOptions, options, where)
        if parsed.threads == 0:
            parsed = dataclasses.replace(parsed, threads=default_threads)
        resolved = _resolve(cfg, search_dirs, (".engine", ".onnx"))
        meta = read_metadata(resolved.path)
        check_compatible(meta, spectrogram_cfg, labels_kept=cfg.labels)
        return TwoStageDetector(
            cfg.name,
            _proposer(energy_table, f"{where}.energy", spectrogram_cfg, xp, proposers),
            resolved.path,
            meta=meta,
            options=parsed,
            score_threshold=_threshold(cfg),
            labels_kept=cfg.labels,
            priority=cfg.priority,
        )
    if cfg.kind in ("onnx", "tensorrt", "torch"):
        from rfstream.detect.ort import OnnxOptions

        parsed = parse_options(OnnxOptions, cfg.options, where)
        if parsed.threads == 0:
            parsed = dataclasses.replace(parsed, threads=default_threads)
        resolved = _resolve(cfg, search_dirs, (".engine", ".onnx", ".pt"))
        meta = read_metadata(resolved.path)
        check_compatible(
            meta, spectrogram_cfg, (spectrogram_cfg.height, spectrogram_cfg.width), labels_kept=cfg.labels
        )
        runs_on = _FILE_KIND[resolved.kind]
        if runs_on != cfg.kind:
            log.info(
                "detector backend follows the model file",
                detector=cfg.name,
                kind=cfg.kind,
                runs_on=runs_on,
                model=str(resolved.path),
            )
        overrides = {"mask_threshold": parsed.mask_threshold} if parsed.mask_threshold >= 0 else {}
        common: dict[str, Any] = {
            "meta": meta,
            "score_threshold": _threshold(cfg),
            "labels_kept": cfg.labels,
            "priority": cfg.priority,
            "decoder_overrides": overrides,
        }
        if resolved.kind == "engine":
            from rfstream.detect.trt_engine import TensorRTFrameDetector

            return TensorRTFrameDetector(cfg.name, resolved.path, **common)
        if resolved.kind == "pt":
            from rfstream.detect.torch_backend import TorchFrameDetector

            return TorchFrameDetector(cfg.name, resolved.path, threads=parsed.threads, **common)
        from rfstream.detect.ort import OnnxFrameDetector

        return OnnxFrameDetector(
            cfg.name, resolved.path, providers=parsed.providers, threads=parsed.threads, **common
        )
    raise ConfigError(f"config key 'detectors.{cfg.name}.kind': unknown kind {cfg.kind!r}")


def build_detectors(
    cfgs: Sequence[DetectorConfig],
    spectrogram_cfg: SpectrogramConfig,
    *,
    backend: Any = None,
    config_dir: str | os.PathLike[str] | None = None,
    warmup: bool = True,
    threads: int = 0,
) -> list[Detector]:
    """Every enabled detector, models resolved and checked, warmed up for the spectrogram's frame size.

    ``threads``: ONNX Runtime intra-op threads per session where a record leaves ``threads = 0``
    (the thread budget's share, rfstream.runtime.budget); 0 shares the CPUs among the detectors.

    A model that is missing, corrupt or mismatched raises ModelError naming the detector.
    """
    dirs = default_search_dirs(config_dir)
    shape = (spectrogram_cfg.height, spectrogram_cfg.width)
    enabled = [cfg for cfg in cfgs if cfg.enabled]
    # The fan-out already runs the detectors side by side: give each model session its share of
    # the cores instead of a pool per session that oversubscribes them (threads = 0 in a record).
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, len(enabled)))
    built: list[Detector] = []
    proposers: dict[Any, Any] = {}  # one energy proposer per distinct settings, shared
    try:
        for cfg in enabled:
            try:
                detector = build_detector(
                    cfg,
                    spectrogram_cfg,
                    backend=backend,
                    search_dirs=dirs,
                    default_threads=threads,
                    proposers=proposers,
                )
                built.append(detector)
                if warmup:
                    detector.warmup(shape)
            except ModelError as exc:
                message = str(exc)
                if f"detector {cfg.name!r}" not in message:
                    message = f"detector {cfg.name!r}: {message}"
                raise ModelError(message) from exc
    except Exception:
        for detector in built:  # release what was already set up (sessions, CUDA streams)
            detector.close()
        raise
    return built
