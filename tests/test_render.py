"""Pictures a person can read: `rfstream render` on real and synthetic recordings, and the demo's picture."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rfstream.render import LABEL_COLOURS, LUT, Box, Waterfall, draw_png
from rfstream.sources.synth import synthesize

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT.parent / "shared" / "captures"


def rfstream(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rfstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def colour_pixels(png: Path, hex_colour: str, tolerance: int = 30) -> int:
    rgb = np.array([int(hex_colour.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4)])
    with Image.open(png) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=int)
    return int((np.abs(pixels - rgb).max(axis=2) < tolerance).sum())


@pytest.mark.skipif(not CAPTURES.is_dir(), reason="../shared/captures is not here")
def test_render_a_real_capture_with_detections(tmp_path):
    out = tmp_path / "skylink.png"
    proc = rfstream("render", str(CAPTURES / "rtl433_skylink_g002.sigmf-meta"), "--detect", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "detections" in proc.stdout
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (1280, 800)
    # the colour bar holds the colour map's ends; some box is drawn in its label's colour
    assert colour_pixels(out, "#{:02x}{:02x}{:02x}".format(*LUT[-1]), 20) > 40
    assert colour_pixels(out, "#{:02x}{:02x}{:02x}".format(*LUT[0]), 20) > 40
    assert max(colour_pixels(out, c) for c in LABEL_COLOURS.values()) > 200


def test_render_truth_and_an_annotations_file(tmp_path):
    meta = synthesize(tmp_path / "scene", sample_rate_hz=1e6, duration_s=0.6, seed=2, num_signals=4)
    dets = tmp_path / "dets.sigmf-meta"
    replay = rfstream("replay", str(meta), "--no-publish", "--annotate", str(dets), "-q")
    assert replay.returncode == 0, replay.stderr
    out = tmp_path / "scene.png"
    proc = rfstream("render", str(meta), "--annotations", str(dets), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    # rfstream's own annotations in the file are detections, the recording's are truth
    shown, truth = (int(w) for w in proc.stdout.split(":")[1].replace(",", "").split()[::2][:2])
    assert shown > 0 and truth > 0
    assert colour_pixels(out, "#ffffff", 8) > 50  # dashed white truth boxes


def test_render_raw_iq_and_bad_input(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "noise.cu8"
    raw.write_bytes(rng.integers(100, 156, 2 * 100_000, dtype=np.uint8).tobytes())
    out = tmp_path / "noise.png"
    ok = rfstream("render", str(raw), "--rate", "250e3", "--freq", "433.92e6", "-o", str(out))
    assert ok.returncode == 0, ok.stderr
    assert out.stat().st_size > 10_000
    bad = rfstream("render", str(raw), "--rate", "250e3", "--datatype", "cx9", "-o", str(out))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("rfstream: error:")
    missing = rfstream("render", str(tmp_path / "nope.sigmf-meta"))
    assert missing.returncode != 0 and "Traceback" not in missing.stderr


def test_labels_never_overlap_even_when_boxes_crowd(tmp_path):
    """Forty boxes stacked on one spot: the labels that are drawn do not overlap; the rest are counted."""
    from rfstream.types import Chunk, Frame

    rng = np.random.default_rng(1)
    chunk = Chunk(np.zeros(1000, np.complex64), 1e6, 100e6, 0, 0, 0)
    frame = Frame(rng.random((256, 256), dtype=np.float32), 0.0, 0.2 / 256, 99.5e6, 1e6 / 256, chunk)
    waterfall = Waterfall(rows_per_frame=128, width=256)
    waterfall.add(frame)
    labels = ("psk", "fsk", "ook", "ofdm")
    boxes = [
        Box(0.05 + i * 1e-3, 0.06 + i * 1e-3, 99.9e6 + i * 8e3, 100.1e6, labels[i % 4], 0.5 + i / 100, False)
        for i in range(40)
    ]
    picture = draw_png(waterfall, boxes, tmp_path / "crowd.png", title="crowd", db_range=(-6.0, 44.0))
    ext = picture.label_extents
    assert len(ext) + picture.unlabelled + picture.repeats == 40 and len(ext) >= 4 and picture.unlabelled > 0
    for i, a in enumerate(ext):
        for b in ext[i + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)


def test_demo_draws_with_the_same_renderer(tmp_path):
    out = tmp_path / "demo"
    proc = rfstream("demo", "--out", str(out), "--rate", "1e6", "--duration", "0.4", "--seed", "4", "-q")
    assert proc.returncode == 0, proc.stderr
    png = out / "waterfall.png"
    with Image.open(png) as im:
        assert im.size == (1280, 800)
    assert colour_pixels(png, "#ffffff", 8) > 50  # the capture's truth, dashed white
