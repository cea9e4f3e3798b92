#!/usr/bin/env python3
"""Score every configured detector, and what the pipeline publishes, on fresh labelled recordings.

    python scripts/eval_suite.py --generator both --seeds 1-10 --rate 10e6 --duration 2 --out eval_suite.json

Two generators (``--generator synth|indep|both``):

- ``synth``: rfstream's own synthesiser (``rfstream synth``); evaluation seeds 1-99
  are never used in training, which uses 1000-1999.
- ``indep``: scenegen (``scripts/scenegen``), written independently of rfstream's
  synthesiser, sharing only the SigMF format: about forty waveform types, its own
  impairments and layouts. Nothing trained on it. Label-agnostic AP and precision
  are its headline: its families are mapped onto rfstream's labels, but the boxes
  are what must hold up first.

Each recording is replayed through the real ``Pipeline``, assembled by
``rfstream.runner.assemble`` as every verb assembles a run,
losslessly, exactly as ``rfstream replay`` / ``rfstream eval`` run it: the
spectrogram, every detector of the configuration (default: the shipped one),
the merge (or fusion) stage, the operating threshold and the tracker. What the
pipeline hands its sinks (``ChunkResult.detections``) is scored as
**published**; each detector's own output is recorded on the way (a transparent
wrapper around it) and scored too. Whatever the merge stage becomes, the suite
measures what a subscriber gets.

Truth: the recording's annotations (never rfstream's own, ``core:generator
"rfstream"``), cut per frame and widened to the frame's resolution
(``rfstream.eval.clip_to_frames``). Metrics: ``rfstream.eval.score_run`` (AP,
precision, recall per label and overall, recall per SNR bin, confusion matrix,
duplicates, reliability/ECE). Prints markdown tables; ``--out`` writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # scenegen lives beside this script

from rfstream.config import load_config, replace  # noqa: E402
from rfstream.eval import (  # noqa: E402
    RunReport,
    clip_to_frames,
    recall_by_group,
    score_run,
    select_truth,
    split_by_snr,
    widening_note,
)
from rfstream.runner import assemble, build_detectors  # noqa: E402
from rfstream.sources.sigmf import read_annotations  # noqa: E402

PUBLISHED = "published"
# Every fused box, those under the operating threshold too (what ``merge.keep_low_confidence``
# publishes, marked ``low_confidence``): the whole ranking, over which AP is meant.
ALL_SCORES = "fused, all scores"
GENERATORS = ("synth", "indep")


# --- recordings ----------------------------------------------------------------------------------
def make_recording(
    generator: str, work: Path, seed: int, rate: float, duration: float, density: str | None
) -> Path:
    """The recording for one (generator, seed, rate), made once and kept in ``work``."""
    tag = f"{generator}_{rate / 1e6:g}MSps_{duration:g}s_seed{seed}" + (f"_{density}" if density else "")
    base = work / tag
    meta = Path(f"{base}.sigmf-meta")
    if meta.exists():
        return meta
    if generator == "synth":
        from rfstream.sources.synth import synthesize

        return Path(synthesize(base, sample_rate_hz=rate, duration_s=duration, seed=seed))
    from scenegen import generate_scene

    return generate_scene(
        base, seed=seed, sample_rate_hz=rate, duration_s=duration, density=density
    ).meta_path


# --- running the real pipeline ---------------------------------------------------------------------
class Recorder:
    """Wraps a detector and keeps what it returned per chunk; otherwise it *is* the detector.

    ``close`` is a no-op so one set of loaded models serves every recording; the suite
    closes the real detectors at the end.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.kind = inner.kind
        self.priority = inner.priority
        self.found: dict[int, list[Any]] = {}

    def __getattr__(self, name: str) -> Any:
        if name in ("submit", "collect"):  # the async protocol only where AsyncRecorder records it
            raise AttributeError(name)
        return getattr(self.inner, name)

    def reset(self) -> None:
        self.found = {}

    def detect(self, frame: Any) -> list[Any]:
        found = self.inner.detect(frame)
        self.found.setdefault(frame.chunk.seq, []).extend(found)
        return found

    def warmup(self, frame_shape: tuple[int, int]) -> None:
        self.inner.warmup(frame_shape)

    def close(self) -> None:
        pass


class AsyncRecorder(Recorder):
    """For detectors with the GPU split (``submit`` / ``collect``)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self._seq = -1

    def submit(self, frame: Any) -> None:
        self._seq = frame.chunk.seq
        self.inner.submit(frame)

    def collect(self) -> list[Any]:
        found = self.inner.collect()
        self.found.setdefault(self._seq, []).extend(found)
        return found


def wrap(detector: Any) -> Recorder:
    return AsyncRecorder(detector) if callable(getattr(detector, "submit", None)) else Recorder(detector)


def run_recording(cfg: Any, meta: Path, recorders: list[Recorder]) -> list[Any]:
    """Replay ``meta`` through the pipeline, losslessly, assembled as every verb assembles a run
    (``rfstream.runner.assemble``); return its ChunkResults."""
    for r in recorders:
        r.reset()
    cfg = replace(cfg, source={"kind": "sigmf", "path": str(meta), "realtime": False, "loop": False})
    results: list[Any] = []
    assemble(cfg, detectors=recorders, lossless=True, on_result=results.append).run()
    return results


# --- the suite ---------------------------------------------------------------------------------------
def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        elif part:
            out.append(int(part))
    return out


FINE_KEY = "scenegen:label"  # scenegen's own type of each emission, beside the family in core:label


def fine_labels(meta: Path, annotations: list[Any], rate_hz: float) -> list[str]:
    """Each annotation's generator-specific type (``scenegen:label``), or its family where there is none."""
    raw = json.loads(meta.read_text()).get("annotations", [])
    by_key = {(a.get("core:sample_start"), round(float(a.get("core:freq_lower_edge", 0.0)))): a for a in raw}
    out = []
    for a in annotations:
        entry = by_key.get((round(a.t_start_s * rate_hz), round(a.f_low_hz)), {})
        out.append(str(entry.get(FINE_KEY, a.label)))
    return out


RECORDING_SPAN_S = 1e4  # recording k is scored at times k * this + its own (no recording is this long)


def shifted(box: Any, seconds: float) -> Any:
    """``box`` (a truth piece or a detection) moved ``seconds`` later."""
    return dataclasses.replace(box, t_start_s=box.t_start_s + seconds, t_stop_s=box.t_stop_s + seconds)


def evaluate_generator(
    generator: str,
    args: argparse.Namespace,
    cfg: Any,
    recorders: list[Recorder],
    work: Path,
) -> dict[str, Any]:
    names = [r.name for r in recorders]
    rows = [*names, PUBLISHED, ALL_SCORES] if args.split_low else [*names, PUBLISHED]
    found: dict[str, list[list[Any]]] = {name: [] for name in rows}  # per chunk
    truth: list[Any] = []
    fine: list[str] = []  # per truth piece: the generator's own type
    frames_all: list[Any] = []
    n_annotations = n_own = 0
    recordings = []
    for rate in args.rates:
        for seed in args.seeds:
            t0 = time.monotonic()
            meta = make_recording(
                generator, work, seed, rate, args.duration, args.density if generator == "indep" else None
            )
            t1 = time.monotonic()
            results = run_recording(cfg, meta, recorders)
            t2 = time.monotonic()
            frames = [r.frame for r in results]
            annotations, own = select_truth(read_annotations(meta))
            n_annotations += len(annotations)
            n_own += len(own)
            # Every recording of a generator shares one centre frequency and starts at 0 s: each is
            # scored in its own time span, so a box of one recording never matches another's truth.
            shift = len(recordings) * max(RECORDING_SPAN_S, 2.0 * args.duration)
            kinds = fine_labels(meta, annotations, rate)
            pieces = [shifted(p, shift) for p in clip_to_frames(annotations, frames, kinds=kinds)]
            truth.extend(pieces)
            fine.extend(p.kind for p in pieces)
            frames_all.extend(frames)
            if args.split_low:
                # run with every fused box kept; the daemon's default publishes those at or over
                # the threshold (low_confidence False), exactly the same boxes
                found[PUBLISHED].extend(
                    [shifted(d, shift) for d in r.detections if not d.low_confidence] for r in results
                )
                found[ALL_SCORES].extend([shifted(d, shift) for d in r.detections] for r in results)
            else:
                found[PUBLISHED].extend([shifted(d, shift) for d in r.detections] for r in results)
            for rec in recorders:
                found[rec.name].extend(
                    [shifted(d, shift) for d in rec.found.get(r.frame.chunk.seq, [])] for r in results
                )
            recordings.append(str(meta))
            print(
                f"{generator} seed {seed} at {rate / 1e6:g} MS/s: {len(annotations)} annotations, "
                f"{len(frames)} frames, {sum(len(r.detections) for r in results)} published "
                f"(made in {t1 - t0:.0f} s, replayed in {t2 - t1:.0f} s)",
                file=sys.stderr,
            )
    widening = widening_note(truth, frames_all)
    ignored: list[Any] = []
    if args.min_snr is not None:
        every = truth
        truth, ignored = split_by_snr(every, args.min_snr)
        kept = {id(t) for t in truth}
        fine = [f for f, t in zip(fine, every, strict=True) if id(t) in kept]
    reports: dict[str, RunReport] = {}
    by_type: dict[str, dict[str, Any]] = {}
    for name, groups in found.items():
        dets = [d for g in groups for d in g]
        reports[name] = score_run(truth, dets, groups=groups, ignore=ignored)
        by_type[f"{name} any label @0.5"] = recall_by_group(truth, dets, fine, ignore=ignored)
        if name == PUBLISHED:
            by_type[f"{name} any label @0.25"] = recall_by_group(
                truth, dets, fine, iou_threshold=0.25, ignore=ignored
            )
            by_type[f"{name} label @0.5"] = recall_by_group(
                truth, dets, fine, label_aware=True, ignore=ignored
            )
    return {
        "generator": generator,
        "recordings": recordings,
        "annotations": n_annotations,
        "left_out_rfstream_annotations": n_own,
        "truth_pieces": len(truth),
        "ignored_truth_pieces": len(ignored),
        "widening": widening,
        "recall_by_type": by_type,
        "reports": reports,
    }


# --- markdown ---------------------------------------------------------------------------------------------
def _f(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _md(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def headline_table(reports: dict[str, RunReport], *, agnostic_first: bool) -> str:
    rows = []
    for name, rep in reports.items():
        aw, ag = rep.label_aware, rep.label_agnostic
        a5, g5, g25 = aw.at(0.5).overall, ag.at(0.5).overall, ag.at(0.25).overall
        labelled = any(lbl != "unknown" for lbl in rep.confusion.detected_labels)
        aware_cells = [_f(a5.ap), _f(a5.precision), _f(a5.recall)] if labelled else ["-", "-", "-"]
        agnostic_cells = [_f(g5.ap), _f(g5.precision), _f(g5.recall), _f(g25.recall)]
        dup = rep.duplicates
        ece = rep.reliability_aware.ece if labelled else rep.reliability_agnostic.ece
        cells = (agnostic_cells + aware_cells) if agnostic_first else (aware_cells + agnostic_cells)
        rows.append([name, str(aw.n_detections), *cells, f"{dup.duplicates} ({_f(dup.rate)})", _f(ece)])
    aware_h = ["AP@0.5 label", "precision@0.5 label", "recall@0.5 label"]
    agnostic_h = [
        "AP@0.5 any label",
        "precision@0.5 any label",
        "recall@0.5 any label",
        "recall@0.25 any label",
    ]
    header = ["detector", "boxes", *(agnostic_h + aware_h if agnostic_first else aware_h + agnostic_h)]
    return _md([*header, "duplicates (per box)", "ECE"], rows)


def per_label_table(rep: RunReport) -> str:
    aw, ag = rep.label_aware.at(0.5), rep.label_agnostic.at(0.5)
    rows = []
    for label in sorted(set(aw.per_label) | set(ag.per_label)):
        a = aw.per_label.get(label)
        g = ag.per_label.get(label)
        rows.append(
            [
                label,
                str(a.n_truth if a else g.n_truth if g else 0),
                _f(a.n_detections if a else None),
                _f(a.ap if a else None),
                _f(a.precision if a else None),
                _f(a.recall if a else None),
                _f(g.recall if g else None),
            ]
        )
    return _md(
        ["label", "truth", "published", "AP@0.5", "precision@0.5", "recall@0.5", "recall@0.5 any label"], rows
    )


def snr_table(reports: dict[str, RunReport]) -> str:
    first = next(iter(reports.values()))
    header = ["detector", *(f"{b.name} dB (n={b.n_truth})" for b in first.snr_recall_agnostic)]
    rows = []
    for name, rep in reports.items():
        rows.append([f"{name} (any label)", *(_f(b.recall) for b in rep.snr_recall_agnostic)])
        if any(lbl != "unknown" for lbl in rep.confusion.detected_labels):
            rows.append([f"{name} (label)", *(_f(b.recall) for b in rep.snr_recall_aware)])
    return _md(header, rows)


def confusion_table(rep: RunReport) -> str:
    header, rows = rep.confusion.rows()
    return _md(header, rows)


def reliability_table(rep: RunReport) -> str:
    a, g = rep.reliability_aware, rep.reliability_agnostic
    rows = [
        [f"{x.lo:.1f}–{x.hi:.1f}", str(x.n), _f(x.mean_score), _f(x.fraction_correct), _f(y.fraction_correct)]
        for x, y in zip(a.bins, g.bins, strict=True)
    ]
    rows.append(["ECE", str(a.n), "", _f(a.ece), _f(g.ece)])
    return _md(
        ["score", "boxes", "mean score", "fraction correct (label)", "fraction correct (any label)"], rows
    )


def type_table(by_type: dict[str, dict[str, Any]]) -> str:
    """Recall per generator type (scenegen's fine labels): where the misses are."""
    columns = list(by_type)
    first = by_type[columns[0]]
    rows = [
        [t, str(first[t][0]), *(_f(by_type[c][t][2]) for c in columns)]
        for t in sorted(first, key=lambda k: (-first[k][0], k))
    ]
    return _md(["type", "truth", *(f"recall {c}" for c in columns)], rows)


def operating_point(cfg: Any) -> str:
    """One line: how the published boxes were chosen (merge mode, publish gate), so the published row's
    precision and recall read as the figures *at the operating threshold*."""
    m = cfg.merge
    if m.mode == "class_nms":
        gate = f"score ≥ {max(m.threshold, 0.0):g}" if m.threshold > 0 else "no gate"
        return f"Published = class-aware NMS across detectors (merge.mode = class_nms), {gate}."
    from rfstream.detect.fuse import load_fusion, publishes_unknown

    model = load_fusion(m.fusion_file)
    threshold = model.threshold if m.threshold < 0 else m.threshold
    source = (
        f"fitted on synthesiser seeds {_span(model.fitted_on.get('seeds'))}"
        if m.threshold < 0 and model.fitted_on.get("seeds")
        else "merge.threshold"
    )
    kept = "; boxes below it kept as low_confidence" if m.keep_low_confidence else ", boxes below it dropped"
    if not publishes_unknown(m, [d.kind for d in cfg.detectors if d.enabled]):
        kept += ", and so are boxes no detector labelled (`unknown`, merge.unknown)"
    every = (
        f" `{ALL_SCORES}` = every fused box, those under the threshold too (what merge.keep_low_confidence"
        " publishes): its AP is over the whole ranking, its precision and recall at no threshold."
        if not m.keep_low_confidence
        else ""
    )
    return (
        f"Published = fusion (one box per signal), operating threshold score ≥ {threshold:.3f} ({source}"
        f"{kept}): the published row's precision and recall are at that threshold.{every}"
    )


def _span(seeds: Any) -> str:
    if isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds):
        return f"{min(seeds)}-{max(seeds)}" if len(seeds) > 1 else str(seeds[0])
    return "?"


def generator_section(result: dict[str, Any], args: argparse.Namespace) -> str:
    gen = result["generator"]
    reports: dict[str, RunReport] = result["reports"]
    pub = reports[PUBLISHED]
    title = {
        "synth": "rfstream's synthesiser (fresh seeds)",
        "indep": "the independent generator (scenegen)",
    }[gen]
    snr = (
        f", SNR ≥ {args.min_snr:g} dB scored ({result['ignored_truth_pieces']} weaker pieces ignored)"
        if args.min_snr is not None
        else ""
    )
    lines = [
        f"### {title}",
        "",
        f"{len(result['recordings'])} recording(s) (seeds {args.seeds_text}, {', '.join(f'{r / 1e6:g}' for r in args.rates)} MS/s, "
        f"{args.duration:g} s each), {result['annotations']} annotations, {result['truth_pieces']} truth pieces per frame{snr}. "
        f"Truth {result['widening'].removeprefix('truth ')}.",
        "",
        headline_table(reports, agnostic_first=gen == "indep"),
        "",
        operating_point(args.cfg),
        "",
        "Published boxes per label (label-aware at IoU 0.5; the last column any label):",
        "",
        per_label_table(pub),
        "",
        *(
            [
                "Recall per type (scenegen's fine label of each truth piece):",
                "",
                type_table(result["recall_by_type"]),
                "",
            ]
            if gen == "indep"
            else []
        ),
        "Recall per SNR bin (IoU 0.5):",
        "",
        snr_table(reports),
        "",
        "Confusion of the published boxes (truth × published label, matched label-agnostically at IoU 0.5):",
        "",
        confusion_table(pub),
        "",
        f"{pub.duplicates.summary()[0].upper()}{pub.duplicates.summary()[1:]}.",
        "",
        "Reliability of the published scores (IoU 0.5):",
        "",
        reliability_table(pub),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generator", choices=("synth", "indep", "both"), default="both")
    p.add_argument("--seeds", default="1-10", help="evaluation seeds, e.g. 1-10 or 3,5,7 (default 1-10)")
    p.add_argument("--rate", default="10e6", help="sample rate(s) in S/s, comma-separated (default 10e6)")
    p.add_argument("--duration", type=float, default=2.0, help="seconds per recording (default 2)")
    p.add_argument(
        "--density", choices=("sparse", "medium", "crowded"), help="indep: scene density (default: per seed)"
    )
    p.add_argument("--min-snr", type=float, default=None, help="score only truth with SNR >= this (dB)")
    p.add_argument("--config", default=None, help="rfstream TOML config (default: the built-in defaults)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting (repeatable)"
    )
    p.add_argument("--workdir", default=None, help="where the recordings go (default: a temporary directory)")
    p.add_argument("--out", default=None, help="JSON report")
    args = p.parse_args(argv)
    args.seeds_text = args.seeds
    args.seeds = _seeds(args.seeds)
    args.rates = [float(r) for r in args.rate.split(",") if r.strip()]
    overrides: dict[str, Any] = {"publish.endpoint": "", "publish.annotations": ""}
    for pair in args.set:
        key, _, value = pair.partition("=")
        overrides[key.strip()] = value
    cfg = load_config(args.config, overrides=overrides)
    args.cfg = cfg
    # With fusion's gate dropping the boxes under the threshold, also score the whole ranking: the
    # run keeps them (marked low_confidence) and the published row leaves them out again.
    args.split_low = cfg.merge.mode == "fuse" and not cfg.merge.keep_low_confidence
    if args.split_low:
        cfg = replace(cfg, merge={"keep_low_confidence": True})

    config_dir = Path(args.config).resolve().parent if args.config else None
    detectors = build_detectors(cfg, config_dir)
    recorders = [wrap(d) for d in detectors]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rfstream-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    generators = GENERATORS if args.generator == "both" else (args.generator,)
    try:
        results = [evaluate_generator(gen, args, cfg, recorders, work) for gen in generators]
    finally:
        for d in detectors:
            d.close()
    sections = [generator_section(r, args) for r in results]
    text = "\n\n".join(sections)
    print(text)
    print(f"({time.monotonic() - started:.0f} s; recordings in {work})", file=sys.stderr)
    if args.out:
        data = {
            "config": {
                "generators": list(generators),
                "seeds": args.seeds,
                "rates_hz": args.rates,
                "duration_s": args.duration,
                "min_snr_db": args.min_snr,
                "density": args.density,
                "config_file": args.config,
                "overrides": args.set,
                "detectors": [d.name for d in detectors],
            },
            "markdown": text,
            "generators": {
                r["generator"]: {
                    **{k: v for k, v in r.items() if k != "reports"},
                    "reports": {name: rep.to_dict() for name, rep in r["reports"].items()},
                }
                for r in results
            },
        }
        Path(args.out).write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
