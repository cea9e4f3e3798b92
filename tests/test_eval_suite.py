"""scripts/eval_suite.py end to end on tiny recordings of both generators: it scores what the pipeline publishes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_suite_scores_both_generators_and_measures_what_users_get(tmp_path):
    out = tmp_path / "suite.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "eval_suite.py"),
            "--generator",
            "both",
            "--seeds",
            "2",
            "--rate",
            "1e6",
            "--duration",
            "0.4",
            "--workdir",
            str(tmp_path),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    for heading in (
        "rfstream's synthesiser",
        "the independent generator",
        "| published |",
        "false alarm",
        "ECE",
        "operating threshold score ≥",  # the published row is at the shipped operating threshold
    ):
        assert heading in proc.stdout, heading
    assert "Duplicates (boxes of one chunk with IoU > 0.5): 0 extra boxes" in proc.stdout  # fusion: none
    data = json.loads(out.read_text())
    assert set(data["generators"]) == {"synth", "indep"}
    names = data["config"]["detectors"]
    for gen in data["generators"].values():
        assert set(gen["reports"]) == {*names, "published", "fused, all scores"}
        assert gen["truth_pieces"] > 0 and "widened" in gen["widening"]
        pub = gen["reports"]["published"]
        every = gen["reports"]["fused, all scores"]
        # the whole ranking holds the published boxes and those under the threshold
        assert every["label_aware"]["n_detections"] >= pub["label_aware"]["n_detections"]
        assert pub["label_aware"]["n_truth"] == gen["truth_pieces"]
        assert set(pub) >= {"confusion", "duplicates", "reliability", "snr_recall"}

    # "published" is exactly what a user's replay of the same recording publishes
    from rfstream.config import load_config
    from rfstream.runner import collect_run

    for gen in data["generators"].values():
        (meta,) = gen["recordings"]
        cfg = load_config(overrides={"publish.endpoint": "", "source.path": meta})
        results, _ = collect_run(cfg, progress=False)
        published = gen["reports"]["published"]
        assert published["label_aware"]["n_detections"] == sum(len(r.detections) for r in results)
        assert published["duplicates"]["n_chunks"] == len(results)
        # with the same labels: the tracker (which names each box by its track's vote) follows the
        # confident boxes alone, so publishing the low-confidence ones too changes no label
        per_label = published["label_aware"]["results"][0]["per_label"]
        suite_labels = {k: v["n_detections"] for k, v in per_label.items() if v["n_detections"]}
        replay_labels = Counter(d.label for r in results for d in r.detections)
        assert suite_labels == dict(replay_labels)


def test_each_recording_is_scored_in_its_own_time_span():
    """Every recording of a generator starts at 0 s at one centre frequency: pooled as they are, a
    box of one recording could match another's truth. The suite moves recording k to k x 10^4 s."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import eval_suite
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    from rfstream.eval import FrameTruth, score_run
    from rfstream.types import Detection

    truth = FrameTruth(0.01, 0.05, 1e9, 1.001e9, "fsk", 20.0)
    det = Detection(0, 0, 1, 1, 0.01, 0.05, 1e9, 1.001e9, 0.9, "fsk", "frame")
    span = eval_suite.RECORDING_SPAN_S
    assert eval_suite.shifted(truth, span).t_start_s == 0.01 + span
    assert eval_suite.shifted(det, span).t_stop_s == 0.05 + span
    # recording 0 holds the truth, recording 1 (an empty scene) the box: nothing matches
    apart = score_run([truth], [eval_suite.shifted(det, span)])
    assert apart.label_agnostic.results[0].overall.recall == 0.0
    assert score_run([truth], [det]).label_agnostic.results[0].overall.recall == 1.0
