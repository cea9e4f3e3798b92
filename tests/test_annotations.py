"""AnnotationWriter: real SigMF files, checked with the sigmf library."""

from __future__ import annotations

import json
import os
import resource
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import sigmf
from sigmf import sigmffile
from sigmf.validate import validate

from rfstream.errors import SinkError
from rfstream.sinks.base import Sink
from rfstream.sinks.sigmf_annotations import AnnotationWriter
from rfstream.types import Chunk, ChunkResult, Frame

RATE = 2_000_000.0
CENTER = 915e6
CHUNK = 4000


def make_recording(directory: Path, name: str = "rec") -> Path:
    """A small real SigMF recording with one hand-made (ground-truth) annotation."""
    samples = (np.arange(4 * CHUNK) % 7).astype(np.complex64)
    meta = sigmf.fromarray(samples)
    meta.sample_rate = RATE
    meta.add_capture(0, metadata={"core:frequency": CENTER, "core:datetime": "2024-05-01T12:00:00.000000Z"})
    meta.add_annotation(100, length=50, metadata={"core:label": "truth", "core:generator": "a human"})
    meta.tofile(directory / name)
    return directory / f"{name}.sigmf-meta"


def make_result(seq: int, boxes, *, center: float = CENTER, utc: datetime | None = None) -> ChunkResult:
    chunk = Chunk(
        iq=np.zeros(CHUNK, np.complex64),
        sample_rate_hz=RATE,
        center_freq_hz=center,
        start_sample=seq * CHUNK,
        seq=seq,
        arrived_ns=time.monotonic_ns(),
        start_time_utc=utc,
    )
    frame = Frame(
        np.zeros((40, 40), np.float32),
        chunk.start_s,
        chunk.duration_s / 40,
        center - RATE / 2,
        RATE / 40,
        chunk,
    )
    dets = tuple(
        frame.detection(x0, y0, x1, y1, score=score, label=label, detector="energy")
        for x0, y0, x1, y1, score, label in boxes
    )
    return ChunkResult(frame, dets, ())


RESULTS = [
    make_result(0, [(10, 0, 20, 10, 0.9, "lora"), (30, 5, 35, 40, 0.6, "ook")]),
    make_result(1, []),
    make_result(2, [(0, 20, 4, 30, 0.7, "lora")]),
]


def expected_annotations(results):
    out = []
    for r in results:
        for d in r.detections:
            start = round(d.t_start_s * RATE)
            out.append((start, round(d.t_stop_s * RATE) - start, d.f_low_hz, d.f_high_hz, d.label, d.score))
    return sorted(out)


def ours(annotations):
    return sorted(
        (
            a["core:sample_start"],
            a["core:sample_count"],
            a["core:freq_lower_edge"],
            a["core:freq_upper_edge"],
            a["core:label"],
            a["rfstream:score"],
        )
        for a in annotations
        if a.get("core:generator") == "rfstream"
    )


def write(source: Path | None, out: Path, results=RESULTS) -> AnnotationWriter:
    w = AnnotationWriter(source, out, sample_rate_hz=RATE, center_freq_hz=CENTER)
    assert isinstance(w, Sink)
    for r in results:
        w.publish(r)
    w.close()
    return w


def load_valid(meta_path: Path) -> sigmffile.SigMFFile:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # undeclared extensions, dataset confusion: all would warn
        rec = sigmffile.fromfile(meta_path)
        rec.validate()
    return rec


def test_annotations_beside_the_recording_point_at_its_data(tmp_path):
    source = make_recording(tmp_path)
    out = tmp_path / "rec.detections.sigmf-meta"
    write(source, out)
    meta = json.loads(out.read_text())
    assert meta["global"]["core:dataset"] == "rec.sigmf-data"
    rec = load_valid(out)
    assert rec.read_samples(0, 8).shape == (8,)  # the original samples, not a copy
    anns = rec.get_annotations()
    assert ours(anns) == expected_annotations(RESULTS)
    assert [a["core:sample_start"] for a in anns] == sorted(a["core:sample_start"] for a in anns)
    mine = [a for a in anns if a.get("core:generator") == "rfstream"]
    assert all(a["rfstream:detector"] == "energy" and a["rfstream:found_by"] == ["energy"] for a in mine)
    assert {"name": "rfstream", "version": "1.0.0", "optional": True} in meta["global"]["core:extensions"]
    # the original's global and captures came along, and its ground truth is kept
    assert rec.get_captures() == json.loads(source.read_text())["captures"]
    assert [a["core:label"] for a in anns if a.get("core:generator") == "a human"] == ["truth"]
    assert stat_mode(out) == 0o644


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def test_annotations_in_another_directory_link_the_data(tmp_path):
    source = make_recording(tmp_path)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "annotated"  # the extension is added
    w = write(source, out)
    assert w.out_meta == tmp_path / "out" / "annotated.sigmf-meta"
    link = tmp_path / "out" / "annotated.sigmf-data"
    assert link.is_symlink() and link.samefile(tmp_path / "rec.sigmf-data")
    rec = load_valid(w.out_meta)
    assert "core:dataset" not in rec.get_global_info()
    assert rec.read_samples(0, 4).shape == (4,)
    assert ours(rec.get_annotations()) == expected_annotations(RESULTS)


def test_in_place_rerun_replaces_our_annotations_and_keeps_the_rest(tmp_path):
    source = make_recording(tmp_path)
    write(source, source)
    write(source, source, RESULTS[2:])  # a second run: only its own detections remain
    rec = load_valid(source)
    assert "core:dataset" not in rec.get_global_info()
    assert ours(rec.get_annotations()) == expected_annotations(RESULTS[2:])
    assert sum(a.get("core:label") == "truth" for a in rec.get_annotations()) == 1


def test_live_stream_writes_metadata_only_with_one_capture_per_tuning(tmp_path):
    utc = datetime(2024, 6, 1, 8, 30, tzinfo=timezone.utc)
    results = [
        make_result(3, [(1, 1, 2, 2, 0.5, "fsk")], utc=utc),
        make_result(4, [(1, 1, 2, 2, 0.5, "fsk")], center=868e6),
    ]
    out = tmp_path / "live.sigmf-meta"
    write(None, out, results)
    meta = json.loads(out.read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate(meta)
    g = meta["global"]
    assert g["core:metadata_only"] is True and g["core:sample_rate"] == RATE
    assert g["core:version"] == sigmf.__specification__
    caps = meta["captures"]
    assert caps[0]["core:sample_start"] == 0 and caps[0]["core:frequency"] == CENTER
    sample0 = datetime.fromisoformat(caps[0]["core:datetime"].replace("Z", "+00:00"))
    assert (utc - sample0).total_seconds() == pytest.approx(3 * CHUNK / RATE)
    assert caps[1] == {
        "core:sample_start": 4 * CHUNK,
        "core:frequency": 868e6,
    }
    assert ours(meta["annotations"]) == expected_annotations(results)


def test_unwritable_destination_fails_at_construction(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for bad in (tmp_path / "missing" / "out.sigmf-meta", blocker / "out.sigmf-meta"):
        with pytest.raises(SinkError, match=r"cannot write annotations to .*does not exist"):
            AnnotationWriter(None, bad, sample_rate_hz=RATE, center_freq_hz=CENTER)
    (tmp_path / "adir.sigmf-meta").mkdir()
    with pytest.raises(SinkError, match="is a directory"):
        AnnotationWriter(None, tmp_path / "adir.sigmf-meta", sample_rate_hz=RATE, center_freq_hz=CENTER)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(SinkError, match="cannot write annotations"):
            AnnotationWriter(None, locked / "out", sample_rate_hz=RATE, center_freq_hz=CENTER)


def test_the_pair_exists_from_the_start_and_a_failed_close_leaves_it_whole(tmp_path):
    """Construction writes a valid file (no detections yet); a close that cannot write (here a file-size
    limit that also stops the fallback) leaves that file as it was, no temp file, and says what was lost."""
    out = tmp_path / "out.sigmf-meta"
    out.write_text('{"old": true}\n')
    w = AnnotationWriter(None, out, sample_rate_hz=RATE, center_freq_hz=CENTER, fallback_dir=tmp_path / "fb")
    start_doc = json.loads(out.read_text())
    assert start_doc["annotations"] == [] and start_doc["global"]["core:metadata_only"] is True
    for seq in range(200):  # tens of kilobytes of JSON
        w.publish(make_result(seq, [(1, 1, 2, 2, 0.5, "fsk")] * 3))
    (tmp_path / "fb").mkdir()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # a full disk, four kilobytes in
    try:
        with pytest.raises(
            SinkError, match=r"fallback .* failed too.* they remain in .*out.sigmf-meta.journal"
        ):
            w.close()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert json.loads(out.read_text()) == start_doc
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fb", "out.sigmf-meta", "out.sigmf-meta.journal"]
    assert list((tmp_path / "fb").iterdir()) == []
    w.close()  # idempotent: nothing more happens
    assert json.loads(out.read_text()) == start_doc
    recovered = AnnotationWriter(None, out, sample_rate_hz=RATE, center_freq_hz=CENTER).recovered_path
    assert len(json.loads(recovered.read_text())["annotations"]) == 600  # nothing was lost


def test_an_unwritable_output_at_close_goes_to_the_fallback_and_says_so(tmp_path, monkeypatch):
    from rfstream.sinks import sigmf_annotations as mod

    out = tmp_path / "out.sigmf-meta"
    w = AnnotationWriter(None, out, sample_rate_hz=RATE, center_freq_hz=CENTER, fallback_dir=tmp_path / "fb")
    (tmp_path / "fb").mkdir()
    for r in RESULTS:
        w.publish(r)
    real = mod.write_json_atomic

    def refuse_the_output(path, obj):
        if path == out:
            raise SinkError(f"cannot write {path}: Read-only file system")
        real(path, obj)

    monkeypatch.setattr(mod, "write_json_atomic", refuse_the_output)
    with pytest.raises(
        SinkError, match=r"Read-only file system; the detections were saved to .*fb/rfstream-annotations-"
    ):
        w.close()
    (saved,) = (tmp_path / "fb").iterdir()
    assert w.fallback_path == saved
    meta = json.loads(saved.read_text())
    assert ours(meta["annotations"]) == expected_annotations(RESULTS)
    assert meta["global"]["rfstream:intended_path"] == str(out)


def test_a_crashed_runs_journal_is_recovered_by_the_next_writer(tmp_path):
    source = make_recording(tmp_path)
    out = tmp_path / "out" / "dets.sigmf-meta"
    out.parent.mkdir()
    crashed = AnnotationWriter(source, out, sample_rate_hz=RATE, center_freq_hz=CENTER)
    for r in RESULTS:
        crashed.publish(r)
    # the process dies here: no close(); a temp file of an interrupted write is left behind too
    (out.parent / ".dets.sigmf-meta.abc123.tmp").write_text("{")
    assert crashed.journal_path.is_file()
    assert ours(json.loads(out.read_text())["annotations"]) == []  # the detections are in the journal only
    nxt = AnnotationWriter(source, out, sample_rate_hz=RATE, center_freq_hz=CENTER)
    assert nxt.recovered_path is not None and nxt.recovered_path.parent == out.parent
    rec = load_valid(nxt.recovered_path)  # valid SigMF, pointing at the data through the link
    assert rec.read_samples(0, 4).shape == (4,)
    assert ours(rec.get_annotations()) == expected_annotations(RESULTS)
    assert [a["core:label"] for a in rec.get_annotations() if a.get("core:generator") == "a human"] == [
        "truth"
    ]
    assert not (out.parent / ".dets.sigmf-meta.abc123.tmp").exists()
    nxt.close()
    assert not nxt.journal_path.exists()
    assert ours(json.loads(out.read_text())["annotations"]) == []  # the new run found nothing


def test_a_recordings_annotation_with_a_bad_start_never_costs_the_detections(tmp_path):
    source = make_recording(tmp_path)
    meta = json.loads(source.read_text())
    meta["annotations"].append({"core:sample_start": 2.5, "core:label": "odd"})
    meta["annotations"].append("not an object")
    source.write_text(json.dumps(meta))
    out = tmp_path / "dets.sigmf-meta"
    write(source, out)
    written = json.loads(out.read_text())
    assert ours(written["annotations"]) == expected_annotations(RESULTS)
    assert [a for a in written["annotations"] if a.get("core:label") == "odd"]  # kept as it was, last


def test_non_finite_detections_are_skipped_not_fatal(tmp_path):
    out = tmp_path / "nan.sigmf-meta"
    r = make_result(0, [(1, 1, 2, 2, 0.5, "fsk")])
    bad = ChunkResult(r.frame, (r.detections[0].replace(score=float("nan")), *r.detections), ())
    w = write(None, out, [bad])
    assert w.skipped_nonfinite == 1
    assert len(json.loads(out.read_text())["annotations"]) == 1


def test_an_existing_foreign_data_file_is_not_overwritten(tmp_path):
    source = make_recording(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.sigmf-data").write_bytes(b"other")
    with pytest.raises(SinkError, match="exists and is not"):
        AnnotationWriter(source, tmp_path / "out" / "x", sample_rate_hz=RATE, center_freq_hz=CENTER)
