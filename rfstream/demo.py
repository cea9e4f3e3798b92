"""``rfstream demo``: the whole path on the embedded default, with everything it made on disk.

Synthesise a labelled capture -> replay it through the full pipeline (CPU, the
configured detectors) -> print detections and tracks -> draw a waterfall with
the boxes -> score against the capture's own annotations -> write the
detections as SigMF annotations.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rfstream.config import Config, replace
from rfstream.errors import SinkError
from rfstream.types import Detection, Track


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows]
    )


def detections_table(dets: list[Detection], limit: int = 20) -> str:
    rows = [
        [
            f"{d.t_start_s:.3f}",
            f"{d.t_stop_s - d.t_start_s:.3f}",
            f"{d.center_freq_hz / 1e6:.4f}",
            f"{d.bandwidth_hz / 1e3:.1f}",
            d.label,
            f"{d.score:.2f}",
            "+".join(d.found_by),
        ]
        for d in sorted(dets, key=lambda d: (-d.score, d.t_start_s))[:limit]
    ]
    return _table(rows, ["t_s", "dur_s", "f_MHz", "bw_kHz", "label", "score", "found_by"])


def tracks_table(tracks: list[Track], limit: int = 20) -> str:
    rows = [
        [
            str(t.track_id),
            t.label,
            f"{0.5 * (t.f_low_hz + t.f_high_hz) / 1e6:.4f}",
            f"{(t.f_high_hz - t.f_low_hz) / 1e3:.1f}",
            f"{t.first_seen_s:.3f}",
            f"{t.last_seen_s:.3f}",
            str(t.hits),
            t.state,
        ]
        for t in sorted(tracks, key=lambda t: (-t.hits, t.track_id))[:limit]
    ]
    return _table(rows, ["id", "label", "f_MHz", "bw_kHz", "first_s", "last_s", "hits", "state"])


def truth_fc(meta: Path) -> float:
    """Centre frequency of a recording's first capture."""
    captures = json.loads(meta.read_text()).get("captures") or [{}]
    return float(captures[0].get("core:frequency", 0.0))


def run_demo(cfg: Config, out: Path, *, rate: float, duration: float, seed: int, quiet: bool = False) -> int:
    from rfstream.eval import clip_to_frames, evaluate, split_by_snr
    from rfstream.render import (
        Waterfall,
        boxes_from_annotations,
        boxes_from_detections,
        db_range,
        describe,
        draw_png,
    )
    from rfstream.runner import collect_run, progress_callback
    from rfstream.sinks.sigmf_annotations import AnnotationWriter
    from rfstream.sources.sigmf import read_annotations
    from rfstream.sources.synth import synthesize

    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"cannot create output directory {out}: {exc.strerror or exc}") from exc
    started = time.monotonic()
    say(f"1/4 synthesising {duration:g} s at {rate / 1e6:g} MS/s (seed {seed}) ...")
    with progress_callback("synth", enabled=not quiet and sys.stderr.isatty()) as progress:
        meta = synthesize(
            out / "demo-capture", sample_rate_hz=rate, duration_s=duration, seed=seed, progress=progress
        )
    truth = read_annotations(meta)
    annotated = out / "demo-detections.sigmf-meta"
    # Checks the output is writable before any work is spent.
    writer = AnnotationWriter(meta, annotated, sample_rate_hz=rate, center_freq_hz=truth_fc(meta))

    detectors = ", ".join(f"{d.name} ({d.kind})" for d in cfg.detectors if d.enabled)
    say(f"2/4 replaying {meta.name} through spectrogram -> [{detectors}] -> NMS -> tracker ...")
    if cfg.publish.endpoint:  # --endpoint: every chunk's detections, the tracks and health go out too
        say(f"    publishing detections, tracks and health on {cfg.publish.endpoint} (rfstream listen)")
    cfg = replace(cfg, source={"kind": "sigmf", "path": str(meta), "realtime": False})
    results, summary = collect_run(cfg, progress=not quiet and sys.stderr.isatty())
    for r in results:
        writer.publish(r)
    writer.close()
    detections = [d for r in results for d in r.detections]
    tracks: dict[int, Track] = {}
    for r in results:
        for e in r.track_events:
            tracks[e.track.track_id] = e.track

    say(f"3/4 {len(detections)} detections in {len(results)} chunks, {len(tracks)} tracks")
    if not quiet:
        print(detections_table(detections))
        print()
        print(tracks_table(list(tracks.values())))
        print()
    waterfall = Waterfall(rows_per_frame=max(8, 1400 // max(1, len(results))))
    for r in results:
        waterfall.add(r.frame)
    png = draw_png(
        waterfall,
        boxes_from_annotations(truth) + boxes_from_detections(detections),
        out / "waterfall.png",
        title=describe(meta.name, waterfall),
        db_range=db_range(cfg.spectrogram),
    ).path

    say("4/4 scoring against the capture's own annotations (time-frequency IoU)")
    truth = clip_to_frames(truth, [r.frame for r in results])  # scored per frame, as detected
    report = evaluate(truth, detections, label_aware=False)
    scored, weak = split_by_snr(truth, 10.0)
    strong = evaluate(scored, detections, label_aware=False, ignore=weak)
    labelled = evaluate(truth, detections, label_aware=True)
    (out / "eval.json").write_text(
        json.dumps(
            {
                "label_agnostic": report.to_dict(),
                "label_aware": labelled.to_dict(),
                "snr_ge_10db": strong.to_dict(),
            },
            indent=2,
        )
    )
    if not quiet:
        # The default detectors label what they find: score with the label required.
        print(labelled.to_table())
        agnostic = {r["iou_threshold"]: r["overall"]["recall"] for r in report.to_dict()["results"]}
        print(
            f"boxes alone (any label): recall {agnostic[0.5]:.2f} at IoU 0.5, {agnostic[0.25]:.2f} at IoU 0.25"
        )
        print()
    h = summary.health
    lat = h["latency_ms"].get("total", {})
    say(
        f"done in {time.monotonic() - started:.1f} s; per chunk p50 {lat.get('p50', 0):.0f} ms, "
        f"real-time factor {h['realtime_factor']:.1f}\n"
        f"outputs in {out}/:\n"
        f"  {meta.name} (+ .sigmf-data)  the synthesised capture, annotated with its ground truth\n"
        f"  {annotated.name}  rfstream's detections as SigMF annotations\n"
        f"  {png.name}  waterfall: detections (solid, by label) over the truth (dashed white)\n"
        f"  eval.json  precision / recall / F1 / AP at IoU 0.5 and 0.25"
    )
    return 0
