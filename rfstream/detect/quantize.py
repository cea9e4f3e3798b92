"""INT8 quantisation of rfstream's ONNX models with ONNX Runtime, and the comparison that decides it.

:func:`quantize_model` turns an rfstream ``.onnx`` model (a frame detector or a
crop classifier) into an INT8 one that loads exactly like the original
(``rfstream.*`` metadata copied, float input and outputs, so
:class:`rfstream.detect.ort.OrtModel` checks and runs it unchanged):

- ``static`` (the default): QDQ format, unsigned 8-bit activations and signed
  8-bit weights per output channel (ONNX Runtime's U8S8 kernels on x86), the
  activation ranges calibrated on :func:`calibration_inputs` — frames the
  synthesiser draws with seeds that neither training (1000–1999) nor
  evaluation (1–99) uses, made by the daemon's own spectrogram stage (crops
  of their energy proposals for a crop classifier). Two ends of the graph stay
  in float by default: the layer that reads the model input (quantising the
  [0, 1] frame itself to 8 bits costs the shipped frame detector 0.02 AP@0.5
  on weak signals, keeping that one layer in float costs nothing and is as
  fast — measured, see docs/architecture.md) and the output heads (the nodes
  that feed ``Sigmoid``/``Softmax``, whose probabilities a threshold cuts).
- ``dynamic``: weights only (``ConvInteger``/``MatMulInteger``), activations
  quantised at run time; no calibration.

The model is first pre-processed (ONNX shape inference and graph optimisation,
``quant_pre_process``) as ONNX Runtime recommends. The result records how it
was made in ``rfstream.quantization`` (JSON: mode, calibration, source sha256).

:func:`compare_models` scores two frame detectors on the same evaluation frames
(AP, label-aware, via :mod:`rfstream.eval`) and times them at given thread
counts; ``scripts/quantize_model.py`` runs both and prints the table used to
decide whether the INT8 model ships (it must lose at most 0.01 AP and be
faster). Retrained models go through the same two calls.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rfstream.config import SpectrogramConfig
from rfstream.detect.models import file_sha256, read_metadata, read_onnx_metadata
from rfstream.errors import ModelError

__all__ = [
    "CALIBRATION_SEEDS",
    "calibration_frames",
    "calibration_inputs",
    "compare_models",
    "quantize_model",
]

# Synthesiser seeds for calibration: disjoint from evaluation (1-99) and training (1000-1999).
CALIBRATION_SEEDS = range(2000, 2100)
_RATES = (2.4e6, 10e6, 20e6, 50e6)  # the sample rates the daemon is benchmarked at, and a low one
_HEADS = ("Sigmoid", "Softmax")


def calibration_frames(
    n: int = 16, *, spectrogram: SpectrogramConfig | None = None, rates: Sequence[float] = _RATES
) -> list[Any]:
    """``n`` Frames of synthetic recordings (several sample rates) from the daemon's spectrogram stage."""
    from rfstream.dsp.spectrogram import Spectrogrammer
    from rfstream.sources.synth import SynthSource

    spectrogram = spectrogram or SpectrogramConfig(backend="numpy")
    per_rate = -(-n // len(rates))
    frames: list[Any] = []
    for i, rate in enumerate(rates):
        stage = Spectrogrammer(spectrogram, workers=1)
        source = SynthSource(rate, chunk_ms=200.0, seed=CALIBRATION_SEEDS[i])
        try:
            for k, chunk in enumerate(source):
                if k >= per_rate:
                    break
                frames.append(stage.process(chunk))
        finally:
            source.close()
            stage.close()
    return frames[:n]


def calibration_inputs(path: str | os.PathLike[str], n: int = 16) -> list[np.ndarray]:
    """Input batches for calibrating ``path``: whole frames, or crops of their energy proposals."""
    meta = read_metadata(path)
    frames = calibration_frames(n)
    if meta.task == "frame_detector":
        return [f.image[None, None].astype(np.float32) for f in frames]
    from rfstream.detect.crops import extract_crops
    from rfstream.detect.energy import EnergyProposer

    proposer = EnergyProposer()
    size = meta.input_size[0]
    batches = []
    for frame in frames:
        boxes, _ = proposer.for_frame(frame)
        if len(boxes):
            batches.append(extract_crops(frame.image, boxes[:64], size=size))
    return batches


def _head_nodes(model: Any) -> list[str]:
    """Names of the nodes whose output feeds a Sigmoid or Softmax (the probability heads)."""
    feeds = {i for n in model.graph.node if n.op_type in _HEADS for i in n.input}
    return [n.name for n in model.graph.node if n.name and any(o in feeds for o in n.output)]


def _input_nodes(model: Any) -> list[str]:
    """Names of the nodes that read a graph input (the first layer)."""
    inputs = {i.name for i in model.graph.input}
    return [n.name for n in model.graph.node if n.name and any(i in inputs for i in n.input)]


def quantize_model(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    mode: Literal["static", "dynamic"] = "static",
    calibration: Iterable[np.ndarray] | None = None,
    n_calibration: int = 16,
    method: Literal["minmax", "entropy", "percentile"] = "minmax",
    per_channel: bool = True,
    float_input_layer: bool = True,
    float_heads: bool = True,
    keep_float: Sequence[str] = (),
) -> Path:
    """Write an INT8 version of the rfstream ONNX model ``src`` to ``dst``; return ``dst``.

    ``calibration``: input batches for ``static`` (None: :func:`calibration_inputs` with
    ``n_calibration`` frames). ``float_input_layer``: keep the nodes reading the model input
    in float; ``float_heads``: keep the nodes feeding the output Sigmoid/Softmax in float;
    ``keep_float``: more node names to keep in float (names after
    pre-processing, e.g. ``/model/stem/stem.0/Conv``). Any failure is a ModelError naming
    the file.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    meta = read_metadata(src)  # refuses a file that is not an rfstream model
    input_name = "image" if meta.task == "frame_detector" else "crops"
    props = read_onnx_metadata(src)
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    record: dict[str, Any] = {"mode": mode, "source_sha256": file_sha256(src), "per_channel": per_channel}
    with tempfile.TemporaryDirectory(prefix="rfstream-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            # Symbolic shape inference cannot follow the dynamic batch through Resize; ONNX's own
            # shape inference and the graph optimisation are what quantisation needs.
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            graph = onnx.load(str(pre))
            for i, node in enumerate(graph.graph.node):  # exclusion goes by node name
                node.name = node.name or f"{node.op_type}_{i}"
            onnx.save(graph, str(pre))
            exclude = [
                *(_input_nodes(graph) if float_input_layer else []),
                *(_head_nodes(graph) if float_heads else []),
                *keep_float,
            ]
            if mode == "static":
                batches = (
                    list(calibration) if calibration is not None else calibration_inputs(src, n_calibration)
                )
                if not batches:
                    raise ModelError(f"model {src}: no calibration inputs")

                class _Reader(CalibrationDataReader):
                    def __init__(self) -> None:
                        self._it = iter(batches)

                    def get_next(self) -> dict[str, np.ndarray] | None:
                        batch = next(self._it, None)
                        return None if batch is None else {input_name: np.asarray(batch, dtype=np.float32)}

                quantize_static(
                    str(pre),
                    str(dst),
                    _Reader(),
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    per_channel=per_channel,
                    calibrate_method=methods[method],
                    nodes_to_exclude=exclude,
                )
                record.update(
                    calibration=f"{len(batches)} batches of synthetic frames, seeds {CALIBRATION_SEEDS.start}+",
                    method=method,
                    float_nodes=exclude,
                )
            elif mode == "dynamic":
                quantize_dynamic(
                    str(pre),
                    str(dst),
                    weight_type=QuantType.QUInt8,
                    per_channel=per_channel,
                    nodes_to_exclude=exclude,
                )
                record.update(float_nodes=exclude)
            else:
                raise ModelError(f"quantisation mode {mode!r} is not one of static, dynamic")
        except ModelError:
            raise
        except Exception as exc:  # onnx / onnxruntime raise untyped errors
            raise ModelError(f"model {src}: quantisation failed: {' '.join(str(exc).split())[:240]}") from exc
    model = onnx.load(str(dst))
    del model.metadata_props[:]
    for key, value in {**props, "rfstream.quantization": json.dumps(record, sort_keys=True)}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(dst))
    from rfstream.detect.ort import OrtModel

    OrtModel(dst, providers="cpu", threads=1)  # loads, and its I/O fits the rfstream contract
    return dst


def _time_ms(model: Any, batch: np.ndarray, repeats: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``model.run(batch)`` (after one warm-up run)."""
    model.run(batch)
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        model.run(batch)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)) * 1e3, float(np.median(cpu)) * 1e3


def compare_models(
    models: dict[str, str | os.PathLike[str]],
    *,
    seeds: Sequence[int] = range(1, 11),
    rate_hz: float = 10e6,
    duration_s: float = 2.0,
    threads: Sequence[int] = (1, 2),
    repeats: int = 9,
    workdir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """AP (label-aware, IoU 0.5 and 0.25) and inference time of frame detectors on the same frames.

    Every model sees the same evaluation recordings (synthesiser seeds ``seeds``, never
    used in training), cut into frames once by the daemon's spectrogram stage; the times
    are medians of ``repeats`` runs on one frame per thread count, the models interleaved.
    """
    from rfstream.detect.ort import OnnxFrameDetector
    from rfstream.dsp.spectrogram import Spectrogrammer
    from rfstream.eval import clip_to_frames, evaluate
    from rfstream.sources.sigmf import SigMFSource, read_annotations
    from rfstream.sources.synth import synthesize

    work = Path(workdir or tempfile.mkdtemp(prefix="rfstream-quant-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    detectors = {
        name: OnnxFrameDetector(name, path, providers="cpu", threads=1) for name, path in models.items()
    }
    found: dict[str, list[Any]] = {name: [] for name in models}
    truth: list[Any] = []
    frames_seen = 0
    for seed in seeds:
        base = work / f"eval_{int(rate_hz)}_{seed}"
        meta = Path(f"{base}.sigmf-meta")
        if not meta.exists():
            synthesize(base, sample_rate_hz=rate_hz, duration_s=duration_s, seed=seed)
        stage = Spectrogrammer(SpectrogramConfig(backend="numpy"))
        frames = []
        for chunk in SigMFSource(meta):
            frame = stage.process(chunk)
            frames.append(frame)
            for name, det in detectors.items():
                found[name].extend(det.detect(frame))
        stage.close()
        frames_seen += len(frames)
        truth.extend(clip_to_frames(read_annotations(meta), frames))
    report: dict[str, Any] = {"frames": frames_seen, "truth": len(truth), "rate_hz": rate_hz, "models": {}}
    for name, dets in found.items():
        results = evaluate(truth, dets, label_aware=True).to_dict()["results"]
        at = {r["iou_threshold"]: r["overall"] for r in results}
        report["models"][name] = {"ap50": at[0.5]["ap"], "ap25": at[0.25]["ap"], "detections": len(dets)}
    batch = frames[-1].image[None, None].astype(np.float32)
    for n in threads:
        runners = {
            name: OnnxFrameDetector(name, path, providers="cpu", threads=n).model
            for name, path in models.items()
        }
        timed: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
        for _ in range(3):  # interleave, so a busy spell on the machine hits every model
            for name, runner in runners.items():
                timed[name].append(_time_ms(runner, batch, max(1, repeats // 3)))
        for name, values in timed.items():
            report["models"][name][f"ms_{n}_threads"] = round(float(np.median([v[0] for v in values])), 1)
            report["models"][name][f"cpu_ms_{n}_threads"] = round(float(np.median([v[1] for v in values])), 1)
    return report
