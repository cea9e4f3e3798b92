"""Dataset export → training → ONNX export, on tiny hand-made recordings (needs torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
onnxruntime = pytest.importorskip("onnxruntime")

from train_helpers import SMALL, write_recording  # noqa: E402

from rfstream.errors import ConfigError, InputError, ModelError  # noqa: E402
from rfstream.labels import LABELS  # noqa: E402
from rfstream.train import cli, trainer  # noqa: E402
from rfstream.train.autotune import autotune  # noqa: E402
from rfstream.train.dataset import export_dataset, load_frames, load_label_map  # noqa: E402
from rfstream.train.export import export_crop_classifier, export_frame_detector, read_metadata, validate  # noqa: E402
from rfstream.train.models import CropClassifier, FrameDetector  # noqa: E402

NORM = {"dynamic_range_db": 50.0, "floor_offset_db": 6.0, "nfft": SMALL.nfft}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    recs = [write_recording(root / "rec" / f"r{i}", seed=i) for i in range(3)]
    export_dataset(recs, root / "ds", spectrogram=SMALL, label_map={"my-burst": "fsk"})
    return root / "ds"


def test_export_writes_png_and_boxes_where_the_signal_is(dataset: Path):
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["frames"] == 6 and manifest["label_counts"] == {"fsk": 3, "tone": 6}
    assert manifest["spectrogram"]["nfft"] == SMALL.nfft and len(manifest["recordings"]) == 3
    for meta in sorted((dataset / "frames").glob("*_bboxes.json")):
        entry = json.loads(meta.read_text())
        image = np.asarray(Image.open(meta.parent / entry["image"]), dtype=np.float32) / 255
        assert image.shape == (entry["height"], entry["width"]) == (SMALL.height, SMALL.width)
        for box in entry["bboxes"]:
            assert box["label"] in LABELS
            assert 0 <= box["x_min"] < box["x_max"] <= entry["width"]
            assert 0 <= box["y_min"] < box["y_max"] <= entry["height"]
            inside = np.zeros(image.shape, bool)
            inside[
                int(box["y_min"]) : int(np.ceil(box["y_max"])), int(box["x_min"]) : int(np.ceil(box["x_max"]))
            ] = True
            assert image[inside].mean() > image[~inside].mean() + 0.2, (meta.name, box)
    # the burst (0.04–0.14 s) is only in the first 200 ms frame of each recording
    second = json.loads((dataset / "frames" / "r0_0001_bboxes.json").read_text())
    assert [b["label"] for b in second["bboxes"]] == ["tone"]
    crops = json.loads((dataset / "crops.json").read_text())
    assert crops["size"] == 64 and {c["label"] for c in crops["crops"]} <= set(LABELS)
    assert {c["source"] for c in crops["crops"]} >= {"jitter"}


def test_label_map_file_and_bad_label_map(tmp_path: Path):
    good = tmp_path / "map.toml"
    good.write_text('"My-Burst" = "gfsk"\nbeacon = "pulsed"\n')
    assert load_label_map(good) == {"my-burst": "gfsk", "beacon": "pulsed"}
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": "no-such-label"}')
    with pytest.raises(InputError, match="not a taxonomy label"):
        load_label_map(bad)
    with pytest.raises(InputError, match="cannot read"):
        load_label_map(tmp_path / "missing.json")


@pytest.mark.slow
def test_train_both_models_and_export_validated_onnx(dataset: Path, tmp_path: Path):
    data = load_frames(dataset)
    hp = autotune("frame_detector", len(data), {"epochs": 2, "folds_run": 1, "batch_size": 2})
    log = tmp_path / "log.jsonl"
    result = trainer.train_frame_detector(data, hp, seed=0, log_path=log)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"train_loss", "precision", "recall", "f1"} <= set(records[0])
    path = tmp_path / "fd.onnx"
    diff = export_frame_detector(
        result.model,
        path,
        labels=LABELS,
        input_size=(SMALL.height, SMALL.width),
        normalisation=NORM,
        score_threshold=0.3,
        decoder={"mask_threshold": 0.5},
        training={"frames": len(data)},
    )
    assert diff < 1e-4
    meta = read_metadata(path)
    assert meta["rfstream.task"] == "frame_detector" and meta["rfstream.labels"] == list(LABELS)
    assert meta["rfstream.input_size"] == [SMALL.height, SMALL.width]
    assert meta["rfstream.decoder"] == {"stride": 4, "mask_threshold": 0.5}
    assert meta["rfstream.normalisation"] == NORM and meta["rfstream.format"] == 1
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    obj, cls = session.run(None, {"image": np.random.default_rng(0).random((2, 1, 128, 128), np.float32)})
    assert obj.shape == (2, 1, 32, 32) and cls.shape == (2, len(LABELS), 32, 32)
    assert np.allclose(cls.sum(axis=1), 1, atol=1e-5) and obj.min() >= 0 and obj.max() <= 1

    crops = json.loads((dataset / "crops.json").read_text())
    x, y, names = trainer.crop_arrays(data, crops)
    assert x.shape == (len(crops["crops"]), 1, 64, 64)
    hp = autotune("crop_classifier", len(y), {"epochs": 1, "folds_run": 1})
    clf = trainer.train_crop_classifier(x, y, [trainer.recording_of(n) for n in names], hp, seed=0)
    path = tmp_path / "cc.onnx"
    assert (
        export_crop_classifier(
            clf.model, path, labels=LABELS, size=64, normalisation=NORM, score_threshold=0.3, training={}
        )
        < 1e-4
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (probs,) = session.run(None, {"crops": x[:5]})
    assert probs.shape == (5, len(LABELS)) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_validation_refuses_a_model_that_differs(tmp_path: Path):
    model = CropClassifier(3)
    path = tmp_path / "cc.onnx"
    export_crop_classifier(
        model, path, labels=LABELS[:3], size=64, normalisation=NORM, score_threshold=0.5, training={}
    )
    with torch.no_grad():
        model.head.bias[0] += 5.0  # torch now disagrees with the file
    with pytest.raises(ModelError, match="differ from torch"):
        validate(torch.nn.Sequential(model, torch.nn.Softmax(dim=1)), path, (1, 64, 64))
    assert not path.exists()


def test_frame_detector_output_stride():
    obj, cls = FrameDetector(4).eval()(torch.zeros(1, 1, 64, 128))
    assert obj.shape == (1, 1, 16, 32) and cls.shape == (1, 4, 16, 32)


def test_frame_targets_keep_narrow_boxes():
    obj, cls = trainer.frame_targets(
        np.array([[10.2, 0, 10.8, 64], [20, 8, 40, 16]], np.float32), np.array([0, 3]), (64, 64), 4
    )
    assert obj[:, 2:3].all() and obj.sum() == 16 + 5 * 2
    assert set(np.unique(cls)) == {-1, 0, 3}


@pytest.mark.slow
def test_cli_trains_from_an_exported_dataset(dataset: Path, tmp_path: Path):
    parser = __import__("argparse").ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        [
            "--out",
            str(tmp_path / "run"),
            "--dataset",
            str(dataset),
            "--epochs",
            "1",
            "--folds-run",
            "1",
            "--export-to",
            str(tmp_path / "models"),
            "--validation-captures",
            "1",
            "--duration",
            "0.4",
            "--sample-rates",
            "1e6",
        ]
    )
    assert cli.run(args) == 0
    report = __import__("json").loads((tmp_path / "run" / "report.json").read_text())
    # One epoch on six frames: calibrated when it found something on the validation capture,
    # else kept uncalibrated with the reason; either way the run finishes and says which.
    for name in ("frame_detector", "crop_classifier"):
        entry = report["calibration"][name]
        assert "error" in entry or (0.0 < entry["threshold"] < 1.0 and entry["ece_raw"] is not None)
    assert read_metadata(tmp_path / "models" / "frame_detector.onnx")["rfstream.training"]["frames"] == 6
    assert read_metadata(tmp_path / "models" / "crop_classifier.onnx")["rfstream.task"] == "crop_classifier"
    with pytest.raises(ConfigError, match="--models"):
        cli.run(
            parser.parse_args(["--out", str(tmp_path / "x"), "--dataset", str(dataset), "--models", "nope"])
        )


def test_faint_truth_is_ignored_not_a_target():
    boxes = np.array([[0, 0, 16, 16], [32, 0, 48, 16], [40, 8, 44, 64]], np.float32)
    obj, cls = trainer.frame_targets(boxes, np.array([0, 1, 2]), (64, 64), 4, np.array([False, True, False]))
    assert (obj[0:4, 0:4] == 1).all() and (cls[0:4, 0:4] == 0).all()
    faint = obj[0:4, 8:12]
    assert set(np.unique(faint)) == {1, trainer.IGNORED}  # the visible box crossing it stays a target
    assert (faint[:, :2] == trainer.IGNORED).all() and (cls[0:4, 8:10] == -1).all()
    assert (obj[:, 10] == 1)[2:].all() and (cls[2:, 10] == 2).all()


def test_faint_truth_gets_no_jittered_crop():
    from rfstream.train.dataset import propose_crops

    truth = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    crops = propose_crops(
        truth,
        ["tone", "fsk"],
        np.zeros((0, 4)),
        rng=np.random.default_rng(0),
        size=(64, 64),
        faint=[True, False],
    )
    assert [(label, source) for _, label, source in crops if source != "noise"] == [("fsk", "jitter")]


def test_noise_crops_are_background_clear_of_truth():
    """The background class also gets bare noise floor and the DC column, never a piece of a signal."""
    from rfstream.train.dataset import NOISE_PER_FRAME, box_iou, propose_crops

    truth = np.array([[100, 0, 300, 1024], [600, 200, 620, 400]], float)
    proposals = np.array([[10, 10, 40, 60], [700, 0, 702, 1024]], float)
    crops = propose_crops(
        truth, ["ofdm", "fsk"], proposals, rng=np.random.default_rng(3), size=(1024, 1024), dc_column=512.0
    )
    noise = [(box, label) for box, label, source in crops if source == "noise"]
    assert len(noise) == NOISE_PER_FRAME + 1  # the frame has room for all of them, and DC is clear
    boxes = np.array([box for box, _ in noise])
    assert {label for _, label in noise} == {"unknown"}
    assert box_iou(boxes, truth).max() == 0.0
    assert ((boxes[:, :2] >= 0) & (boxes[:, 2:] <= 1024)).all() and (boxes[:, 2:] > boxes[:, :2]).all()
    assert any(b[0] <= 512.0 <= b[2] and b[2] - b[0] <= 6.0 for b in boxes)  # the DC column's box
    # proposal-shaped: each box has the size of one of the frame's proposals
    sizes = {(30.0, 50.0), (2.0, 1024.0)}
    assert all((round(b[2] - b[0], 6), round(b[3] - b[1], 6)) in sizes for b in boxes[:NOISE_PER_FRAME])
    # a frame covered by truth gets none
    full = propose_crops(
        np.array([[0, 0, 1024, 1024]], float),
        ["ofdm"],
        proposals,
        rng=np.random.default_rng(3),
        size=(1024, 1024),
        dc_column=512.0,
    )
    assert not [c for c in full if c[2] == "noise"]
