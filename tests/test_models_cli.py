"""`rfstream models list|info|build-engine` through its argparse front end."""

from __future__ import annotations

import argparse
import io
import json

import pytest
from test_onnx_tiny import crop_classifier, frame_detector

from rfstream.detect import models_cli
from rfstream.errors import ModelError


def run(*argv):
    parser = argparse.ArgumentParser(prog="rfstream models")
    models_cli.add_arguments(parser)
    out = io.StringIO()
    code = models_cli.run(parser.parse_args(argv), out)
    return code, out.getvalue()


def test_list_info_and_build_engine(tmp_path):
    frame_detector(tmp_path / "fd.onnx")
    crop_classifier(tmp_path / "cc.onnx")
    code, text = run("list", "--dir", str(tmp_path))
    assert code == 0 and "fd" in text and "frame_detector" in text and "crop_classifier" in text
    code, text = run("list", "--dir", str(tmp_path), "--json")
    assert {json.loads(line)["name"] for line in text.splitlines()} >= {"fd", "cc"}
    code, text = run("info", "fd", "--dir", str(tmp_path))
    info = json.loads(text)
    assert info["task"] == "frame_detector" and info["inputs"][0]["shape"] == ["N", 1, 64, 64]
    with pytest.raises(ModelError, match="not found"):
        run("info", "nothere", "--dir", str(tmp_path))
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(ModelError, match="TensorRT is not installed"):
            run("build-engine", "fd", "--dir", str(tmp_path))
