"""Model manager: metadata parsing and validation, resolution order, bad model files."""

from __future__ import annotations

import json

import pytest
from test_onnx_tiny import CROP_LABELS, crop_classifier, frame_detector, props

from rfstream.config import SpectrogramConfig
from rfstream.detect import models
from rfstream.detect.models import (
    EngineTarget,
    ModelMetadata,
    check_compatible,
    read_metadata,
    read_onnx_metadata,
    resolve_model,
    write_engine_sidecar,
)
from rfstream.detect.models_cli import list_models, model_info
from rfstream.detect.ort import OrtModel
from rfstream.detect.trt_engine import build_engine
from rfstream.errors import ModelError

TARGET = EngineTarget(gpu_name="NVIDIA Orin", compute_capability="8.7", tensorrt_version="8.6.2")


# --- metadata -------------------------------------------------------------------------------------
def test_metadata_round_trip(tmp_path):
    path = frame_detector(tmp_path / "fd.onnx", size=(64, 64), stride=4)
    meta = read_metadata(path)
    assert meta.task == "frame_detector"
    assert meta.labels == ("tone", "unknown")
    assert meta.input_size == (64, 64)
    assert meta.decoder["stride"] == 4
    assert meta.normalisation["nfft"] == 4096
    assert meta.score_threshold == pytest.approx(0.3)
    again = ModelMetadata.from_props(meta.to_props(), "copy")
    assert (again.task, again.labels, again.input_size, dict(again.decoder)) == (
        meta.task,
        meta.labels,
        meta.input_size,
        dict(meta.decoder),
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("rfstream.format", "2", "rfstream.format '2' is not supported"),
        ("rfstream.task", "segmenter", "rfstream.task 'segmenter' is not one of"),
        ("rfstream.labels", "[]", "rfstream.labels must be a non-empty list"),
        ("rfstream.labels", '["tone", "tone"]', "duplicates"),
        ("rfstream.labels", "not json", "rfstream.labels is not valid JSON"),
        ("rfstream.input_size", "[64]", "rfstream.input_size must be [H, W]"),
        ("rfstream.normalisation", '{"nfft": 4096}', "rfstream.normalisation.dynamic_range_db is missing"),
        ("rfstream.score_threshold", "high", "rfstream.score_threshold must be a number in [0, 1]"),
        ("rfstream.score_threshold", "1.5", "rfstream.score_threshold must be a number in [0, 1]"),
        ("rfstream.decoder", '{"stride": 0}', "rfstream.decoder.stride must be a positive integer"),
    ],
)
def test_bad_metadata_fields_are_named(key, value, message):
    p = props("frame_detector", ["tone", "unknown"], (64, 64), decoder={"stride": 4})
    p[key] = value
    with pytest.raises(ModelError, match=r"model m.onnx") as info:
        ModelMetadata.from_props(p, "m.onnx")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_field_is_named():
    p = props("frame_detector", ["tone"], (64, 64))  # no decoder
    with pytest.raises(ModelError, match=r"metadata field rfstream.decoder is missing"):
        ModelMetadata.from_props(p, "m.onnx")


def test_model_without_rfstream_metadata(tmp_path):
    path = frame_detector(tmp_path / "bare.onnx", with_metadata=False)
    with pytest.raises(ModelError, match=r"has no rfstream metadata \(rfstream.format\)"):
        read_metadata(path)


def test_metadata_via_onnxruntime_matches_onnx(tmp_path, monkeypatch):
    path = frame_detector(tmp_path / "fd.onnx")
    with_onnx = read_onnx_metadata(path)
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)  # onnx is an optional dependency
    assert read_onnx_metadata(path) == with_onnx


# --- bad files ------------------------------------------------------------------------------------
def test_truncated_onnx_is_one_line_model_error(tmp_path):
    good = frame_detector(tmp_path / "good.onnx").read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelError) as info:
        read_metadata(bad)
    assert "truncated.onnx" in str(info.value) and "\n" not in str(info.value)


def test_garbage_onnx_is_model_error_with_onnxruntime_too(tmp_path, monkeypatch):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x00\x01this is not a protobuf" * 10)
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)
    with pytest.raises(ModelError, match=r"garbage.onnx is not a readable ONNX file"):
        read_metadata(bad)


def test_corrupt_file_with_intact_metadata_fails_in_session(tmp_path):
    """Metadata readable but the graph broken: ONNX Runtime's load error becomes a ModelError."""
    path = frame_detector(tmp_path / "fd.onnx")
    import onnx

    model = onnx.load(str(path))
    model.graph.node[0].op_type = "NoSuchOperator"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="cannot be loaded by ONNX Runtime") as info:
        OrtModel(path, providers="cpu")
    assert "\n" not in str(info.value)


def test_wrong_input_shape_is_refused(tmp_path):
    # Graph takes 32x32 images, metadata claims 64x64.
    meta = props("frame_detector", ["tone", "unknown"], (64, 64), decoder={"stride": 4})
    path = frame_detector(tmp_path / "fd.onnx", size=(32, 32), metadata=meta)
    with pytest.raises(
        ModelError, match=r"input 'image' has shape \['N', 1, 32, 32\], expected \[N, 1, 64, 64\]"
    ):
        OrtModel(path, providers="cpu")


def test_crop_classifier_with_wrong_class_count_is_refused(tmp_path):
    meta = props("crop_classifier", ["tone", "unknown"], (64, 64))  # graph has 3 classes
    path = crop_classifier(tmp_path / "cc.onnx", metadata=meta)
    with pytest.raises(ModelError, match=r"has 3 classes but rfstream.labels names 2"):
        OrtModel(path, providers="cpu")


def test_missing_model_file():
    with pytest.raises(ModelError, match="does not exist"):
        read_metadata("/nonexistent/model.onnx")


# --- compatibility with the running spectrogram ----------------------------------------------------
def test_spectrogram_mismatch_is_refused(tmp_path):
    meta = read_metadata(frame_detector(tmp_path / "fd.onnx"))
    cfg = SpectrogramConfig(height=64, width=64)
    check_compatible(meta, cfg)  # matches
    with pytest.raises(ModelError, match=r"trained with nfft = 4096 but spectrogram.nfft is 2048"):
        check_compatible(meta, SpectrogramConfig(height=64, width=64, nfft=2048, hop=1024))
    with pytest.raises(ModelError, match=r"dynamic_range_db = 50 but spectrogram.dynamic_range_db is 60"):
        check_compatible(meta, SpectrogramConfig(height=64, width=64, dynamic_range_db=60.0))
    with pytest.raises(ModelError, match=r"expects 64x64 frames but the spectrogram makes 1024x1024"):
        check_compatible(meta, SpectrogramConfig())


def test_labels_outside_the_taxonomy_and_kept_labels(tmp_path):
    meta = read_metadata(crop_classifier(tmp_path / "cc.onnx"))
    check_compatible(meta, SpectrogramConfig(), labels_kept=["tone"])
    with pytest.raises(ModelError, match="cannot produce the kept label"):
        check_compatible(meta, SpectrogramConfig(), labels_kept=["ofdm"])
    odd = ModelMetadata.from_props(props("crop_classifier", ["wifi", "unknown"], (64, 64)), "odd.onnx")
    with pytest.raises(ModelError, match="labels outside rfstream's taxonomy: wifi"):
        check_compatible(odd, SpectrogramConfig())


# --- resolution -----------------------------------------------------------------------------------
def test_resolution_prefers_onnx_over_pt_and_lists_tried_paths(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    frame_detector(b / "det.onnx")
    r = resolve_model("det", search_dirs=[a, b], target=TARGET)
    assert r.kind == "onnx" and r.path == b / "det.onnx"
    assert str(a / "det.engine") in r.tried and str(b / "det.engine") in r.tried
    with pytest.raises(ModelError) as info:
        resolve_model("nothere", search_dirs=[a, b], target=TARGET)
    msg = str(info.value)
    for tried in (a / "nothere.engine", a / "nothere.onnx", b / "nothere.pt"):
        assert str(tried) in msg
    assert "\n" not in msg


def test_matching_engine_wins(tmp_path):
    onnx_path = frame_detector(tmp_path / "det.onnx")
    engine = tmp_path / "det.engine"
    engine.write_bytes(b"serialized engine bytes")
    write_engine_sidecar(engine, onnx_path, TARGET, precision="fp16")
    r = resolve_model("det", search_dirs=[tmp_path], target=TARGET)
    assert r.kind == "engine" and r.warnings == ()
    meta = read_metadata(engine)  # the sidecar carries the ONNX file's metadata
    assert meta.task == "frame_detector" and meta.decoder["stride"] == 4


def test_engine_for_another_gpu_falls_back_to_onnx_with_warning(tmp_path):
    onnx_path = frame_detector(tmp_path / "det.onnx")
    engine = tmp_path / "det.engine"
    engine.write_bytes(b"serialized engine bytes")
    write_engine_sidecar(engine, onnx_path, TARGET, precision="fp16")
    here = EngineTarget(
        gpu_name="NVIDIA GeForce RTX 4090", compute_capability="8.9", tensorrt_version="10.3.0"
    )
    r = resolve_model("det", search_dirs=[tmp_path], target=here)
    assert r.kind == "onnx"
    assert len(r.warnings) == 1 and "det.engine skipped" in r.warnings[0] and "gpu_name" in r.warnings[0]
    # another TensorRT version on the same GPU
    newer = EngineTarget(TARGET.gpu_name, TARGET.compute_capability, "10.3.0")
    assert "tensorrt_version" in resolve_model("det", search_dirs=[tmp_path], target=newer).warnings[0]
    # an explicit .engine path falls back to the .onnx beside it
    r = resolve_model(str(engine), search_dirs=[], target=here)
    assert r.path == onnx_path and r.warnings


def test_stale_engine_and_engine_without_sidecar_fall_back(tmp_path):
    onnx_path = frame_detector(tmp_path / "det.onnx")
    engine = tmp_path / "det.engine"
    engine.write_bytes(b"serialized engine bytes")
    write_engine_sidecar(engine, onnx_path, TARGET, precision="fp16")
    frame_detector(
        onnx_path,
        stride=8,
        metadata=props("frame_detector", ["tone", "unknown"], (64, 64), decoder={"stride": 8}),
    )
    r = resolve_model("det", search_dirs=[tmp_path], target=TARGET)
    assert r.kind == "onnx" and "sha256 differs" in r.warnings[0]
    models.sidecar_path(engine).unlink()
    r = resolve_model("det", search_dirs=[tmp_path], target=TARGET)
    assert r.kind == "onnx" and "no metadata sidecar" in r.warnings[0]


def test_models_planted_in_the_current_directory_are_never_loaded(tmp_path, monkeypatch):
    """A ./det.engine (with a sidecar claiming this GPU) or ./det.onnx where the daemon starts is ignored."""
    shipped = tmp_path / "models"
    shipped.mkdir()
    onnx_path = frame_detector(shipped / "det.onnx")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    planted = cwd / "det.engine"
    planted.write_bytes(b"attacker engine")
    write_engine_sidecar(planted, onnx_path, TARGET, precision="fp16")  # even a matching sidecar
    frame_detector(cwd / "other.onnx")
    monkeypatch.chdir(cwd)
    r = resolve_model("det", search_dirs=[shipped], target=TARGET)
    assert r.path == onnx_path and r.kind == "onnx"
    assert all(not t.startswith(str(cwd)) and not t.startswith("det") for t in r.tried)
    with pytest.raises(ModelError, match="not found"):
        resolve_model("other", search_dirs=[shipped], target=TARGET)
    with pytest.raises(ModelError, match="not found"):
        resolve_model("other.onnx", search_dirs=[shipped], target=TARGET)


def test_an_engine_is_used_only_beside_the_onnx_it_was_built_from(tmp_path):
    """An engine whose source ONNX cannot be found cannot be checked, so it is not trusted."""
    cache, elsewhere = tmp_path / "cache", tmp_path / "elsewhere"
    cache.mkdir()
    elsewhere.mkdir()
    onnx_path = frame_detector(elsewhere / "det.onnx")
    engine = cache / "det.engine"
    engine.write_bytes(b"serialized engine bytes")
    write_engine_sidecar(engine, onnx_path, TARGET, precision="fp16")
    with pytest.raises(ModelError, match="not found"):
        resolve_model("det", search_dirs=[cache], suffixes=(".engine",), target=TARGET)
    # with the ONNX model in the search path (the one the name runs otherwise) it is checked and used
    r = resolve_model("det", search_dirs=[cache, elsewhere], target=TARGET)
    assert r.kind == "engine" and r.path == engine


def test_engine_without_tensorrt_falls_back(tmp_path):
    onnx_path = frame_detector(tmp_path / "det.onnx")
    engine = tmp_path / "det.engine"
    engine.write_bytes(b"x")
    write_engine_sidecar(engine, onnx_path, TARGET, precision="fp16")
    r = resolve_model("det", search_dirs=[tmp_path])  # this machine: no TensorRT
    assert r.kind == "onnx" and r.warnings


def test_search_dirs_env_and_suffix_filter(tmp_path, monkeypatch):
    env_dir = tmp_path / "env"
    frame_detector(env_dir / "det.onnx")
    (env_dir / "det.pt").write_bytes(b"torchscript")
    monkeypatch.setenv("RFSTREAM_MODEL_DIR", str(env_dir))
    dirs = models.default_search_dirs(tmp_path / "cfg")
    assert dirs[0] == tmp_path / "cfg" and dirs[1] == env_dir and dirs[-1] == models.packaged_model_dir()
    assert resolve_model("det").path == env_dir / "det.onnx"
    assert resolve_model("det", suffixes=(".pt",)).kind == "pt"
    with pytest.raises(ModelError, match="no model named"):
        resolve_model("  ")


def test_explicit_relative_path_against_config_dir(tmp_path):
    frame_detector(tmp_path / "sub" / "det.onnx")
    r = resolve_model("sub/det.onnx", search_dirs=[tmp_path])
    assert r.path == tmp_path / "sub" / "det.onnx"


# --- list / info / build-engine -------------------------------------------------------------------
def test_list_and_info(tmp_path):
    frame_detector(tmp_path / "fd.onnx")
    crop_classifier(tmp_path / "cc.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"nope")
    rows = {r["name"]: r for r in list_models([tmp_path])}
    assert rows["fd"]["task"] == "frame_detector" and rows["cc"]["labels"] == CROP_LABELS
    assert "error" in rows["broken"]
    info = model_info(tmp_path / "cc.onnx")
    assert info["inputs"][0]["name"] == "crops" and info["outputs"][0]["name"] == "probs"
    assert len(info["sha256"]) == 64
    json.dumps(info)  # the CLI prints it as JSON


def test_build_engine_without_tensorrt(tmp_path):
    path = frame_detector(tmp_path / "fd.onnx")
    with pytest.raises(ModelError, match="TensorRT is not installed"):
        build_engine(path, tmp_path / "fd.engine")


def test_metadata_is_read_from_the_wire_format_as_onnx_reads_it(tmp_path):
    """No onnx import and no session: the protobuf reader gives onnx's answer, and any cut of the
    file is a ModelError or a readable prefix, never another exception."""
    import onnx

    from rfstream.detect.models import packaged_model_dir

    for path in sorted(packaged_model_dir().glob("*.onnx")):
        model = onnx.load(str(path), load_external_data=False)
        assert read_onnx_metadata(path) == {p.key: p.value for p in model.metadata_props}
    data = (packaged_model_dir() / "frame_detector_int8.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    full = read_onnx_metadata(packaged_model_dir() / "frame_detector_int8.onnx")
    for n in range(1, len(data), max(1, len(data) // 97)):
        cut.write_bytes(data[:n])
        try:
            props = read_onnx_metadata(cut)
        except ModelError as exc:
            assert "cut.onnx" in str(exc) and "\n" not in str(exc)
        else:
            assert props.items() <= full.items()
