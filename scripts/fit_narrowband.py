#!/usr/bin/env python3
"""Refit an IQ classifier of rfstream/detect/narrowband.py and write its JSON file.

    python scripts/fit_narrowband.py                       # writes rfstream/models/narrowband.json
    python scripts/fit_narrowband.py --wide                # writes rfstream/models/wideband.json
    python scripts/fit_narrowband.py --seeds 1000-1019 --out /tmp/narrowband.json

Training seeds of rfstream's synthesiser only: **1000–1999** (the script refuses any other;
evaluation uses 1–99, validation 500–599 and 3000–3099). ``--rate`` is cycled over the seeds.

Examples are the boxes the two-stage detector will ask about: each recording is cut into
200 ms chunks and turned into frames by the daemon's spectrogram; the energy proposer's boxes
no wider than ``--max-width`` are matched to the truth (the annotations cut per frame,
``rfstream.eval.clip_to_frames``; best IoU ≥ 0.3) and take the truth's family (tone, am, fm,
ook; every other family is "other"); unmatched proposals are left out (receiver spurs are not
annotated, and look like tones). The truth pieces themselves, widened to whole columns, are
added as examples too. Boxes whose measured SNR is below the classifier's ``min_snr_db`` are
left out, as the classifier leaves them unlabelled.

``--wide`` fits the wide-box model instead (:data:`WIDE_FEATURES` to :data:`WIDE_CLASSES`): the
proposals *wider* than ``--max-width`` matched to the truth at IoU >= 0.5 (a wide box at 0.3 is
often a piece of its signal, or two signals), labelled with the truth's family (chirp, fm, fsk,
ofdm, psk, pulsed; am, ook and tone are "other"); the truth pieces are not added (a proposal is
what the detector will ask about).

The fit: a multinomial logistic regression on the standardised features, L2-penalised,
classes weighted to equal total weight, L-BFGS. Printed: the held-out accuracy and confusion
of a two-fold split by recording, then the fit on everything is written atomically (a
temporary file in the same directory, then renamed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small products per box: threads only cost

import numpy as np
from scipy.optimize import minimize

from rfstream.detect.narrowband import (
    CLASSES,
    DEFAULT_MODEL,
    DEFAULT_WIDE_MODEL,
    FEATURES,
    WIDE_CLASSES,
    WIDE_FEATURES,
    NarrowbandClassifier,
    NarrowbandModel,
    NarrowbandOptions,
    expand,
    wideband_classifier,
)
from rfstream.detect.nms import iou_matrix

TRAIN_SEEDS = range(1000, 2000)
MATCH_IOU = 0.3
WIDE_MATCH_IOU = 0.5


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def _class(label: str, classes: tuple[str, ...]) -> int:
    return classes.index(label) if label in classes[:-1] else len(classes) - 1


def examples(meta: Path, clf: NarrowbandClassifier, wide: bool = False) -> tuple[list[np.ndarray], list[int]]:
    """Features and classes of one recording's narrow proposals and narrow truth pieces (``wide``:
    its proposals wider than the limit)."""
    from rfstream.config import SpectrogramConfig
    from rfstream.detect.energy import EnergyProposer, energy_options
    from rfstream.dsp.spectrogram import Spectrogrammer
    from rfstream.eval import clip_to_frames, select_truth
    from rfstream.sources.sigmf import SigMFSource, read_annotations

    spec = SpectrogramConfig(backend="numpy")
    spectrogrammer = Spectrogrammer(spec)
    proposer = EnergyProposer(energy_options({}, "fit", spec.dynamic_range_db, spec.hop))
    truth_all = select_truth(read_annotations(meta))[0]
    limit = clf.options.max_width_hz
    known = clf.classes
    feats: list[np.ndarray] = []
    classes: list[int] = []
    source = SigMFSource(meta, chunk_ms=200.0)
    try:
        for chunk in source:
            frame = spectrogrammer.process(chunk)
            truth = clip_to_frames(truth_all, [frame])
            tb = np.array([[t.t_start_s, t.t_stop_s, t.f_low_hz, t.f_high_hz] for t in truth]).reshape(-1, 4)
            boxes, _ = proposer.for_frame(frame)
            phys = np.array([frame.to_physical(*b) for b in np.asarray(boxes).tolist()]).reshape(-1, 4)
            candidates: list[tuple[np.ndarray, int]] = []
            if len(phys) and len(tb):
                # iou_matrix takes x0, y0, x1, y1: frequency as x, time as y
                iou = iou_matrix(phys[:, [2, 0, 3, 1]], tb[:, [2, 0, 3, 1]])
                width = phys[:, 3] - phys[:, 2]
                for i in np.flatnonzero(width > limit if wide else width <= limit):
                    j = int(iou[i].argmax())
                    if iou[i, j] >= (WIDE_MATCH_IOU if wide else MATCH_IOU):
                        candidates.append((phys[i], _class(truth[j].label, known)))
            for t, box in zip(truth, tb, strict=True) if not wide else ():
                x0, _, x1, _ = frame.to_pixels(*box)
                lo, hi = frame.f0_hz + math.floor(x0) * frame.df_hz, frame.f0_hz + math.ceil(x1) * frame.df_hz
                if hi - lo <= limit:
                    candidates.append((np.array([box[0], box[1], lo, hi]), _class(t.label, known)))
            iq = np.asarray(chunk.iq)
            for box, c in candidates:
                f = clf.box_features(
                    iq, chunk.sample_rate_hz, chunk.center_freq_hz, chunk.start_s, tuple(box)
                )
                if f is not None and 10.0 * f[0] >= clf.options.min_snr_db:
                    feats.append(f)
                    classes.append(c)
    finally:
        source.close()
    return feats, classes


def fit(
    x: np.ndarray,
    y: np.ndarray,
    l2: float,
    classes: tuple[str, ...] = CLASSES,
    names: tuple[str, ...] = FEATURES,
) -> NarrowbandModel:
    """Class-balanced, L2-penalised multinomial logistic regression (L-BFGS) on ``expand(x)``."""
    x = expand(x)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    xs = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    n_c, n_f = len(classes), xs.shape[1]
    onehot = np.eye(n_c)[y]
    counts = np.bincount(y, minlength=n_c).astype(np.float64)
    w_sample = (len(y) / (n_c * np.maximum(counts, 1.0)))[y]

    def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = flat.reshape(n_c, n_f)
        logits = xs @ w.T
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        value = -(w_sample * (onehot * logp).sum(axis=1)).sum() / len(y)
        grad = ((np.exp(logp) - onehot) * w_sample[:, None]).T @ xs / len(y)
        value += 0.5 * l2 * (w[:, :-1] ** 2).sum()
        grad[:, :-1] += l2 * w[:, :-1]
        return value, grad.ravel()

    res = minimize(loss, np.zeros(n_c * n_f), jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    return NarrowbandModel(res.x.reshape(n_c, n_f), mean, scale, classes=classes, features=names)


def confusion(model: NarrowbandModel, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    pred = model.probabilities(x).argmax(axis=1)
    n = len(model.classes)
    out = np.zeros((n, n), dtype=np.int64)
    np.add.at(out, (y, pred), 1)
    return out


def _table(conf: np.ndarray, classes: tuple[str, ...]) -> str:
    lines = [
        "| truth \\ predicted | " + " | ".join(classes) + " | recall |",
        "|---" * (len(classes) + 2) + "|",
    ]
    for i, name in enumerate(classes):
        total = conf[i].sum()
        recall = f"{conf[i, i] / total:.3f}" if total else "-"
        lines.append(f"| {name} | " + " | ".join(str(v) for v in conf[i]) + f" | {recall} |")
    return "\n".join(lines)


def write_atomically(path: Path, record: dict[str, Any]) -> None:
    classes, names = tuple(record["classes"]), tuple(record["features"])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, indent=1)
            fh.write("\n")
        NarrowbandModel.load(
            tmp, classes=classes, features=names
        )  # it reads back as a model before it replaces anything
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="1000-1079", help="training seeds of the synthesiser, within 1000-1999")
    p.add_argument("--rate", default="10e6,2.4e6,5e6", help="sample rates, S/s, comma-separated, cycled")
    p.add_argument("--duration", type=float, default=1.0, help="seconds per recording (default 1)")
    p.add_argument("--l2", type=float, default=1e-3, help="L2 penalty on the standardised weights")
    p.add_argument("--workdir", default=None, help="where the recordings go (default: a temporary directory)")
    p.add_argument("--wide", action="store_true", help="fit the wide-box model (WIDE_CLASSES)")
    p.add_argument("--out", default=None, help="model file to write (default: the shipped one)")
    p.add_argument("--examples-out", default=None, help="also save the examples (features, classes) as .npz")
    args = p.parse_args(argv)
    try:
        seeds = _seeds(args.seeds)
        rates = [float(r) for r in args.rate.split(",") if r.strip()]
    except ValueError:
        p.error(f"--seeds/--rate: cannot read {args.seeds!r} / {args.rate!r}")
    outside = [s for s in seeds if s not in TRAIN_SEEDS]
    if outside:
        p.error(f"--seeds: {outside[:5]} are not training seeds (1000-1999; 1-99 evaluate)")
    if not rates or not all(1e3 <= r <= 1e9 for r in rates) or not 0 < args.duration <= 60:
        p.error("--rate: sample rates between 1e3 and 1e9 S/s; --duration in (0, 60] s")

    from rfstream.sources.synth import synthesize

    classes, names = (WIDE_CLASSES, WIDE_FEATURES) if args.wide else (CLASSES, FEATURES)
    out = Path(args.out or (DEFAULT_WIDE_MODEL if args.wide else DEFAULT_MODEL))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rfstream-narrowband-"))
    work.mkdir(parents=True, exist_ok=True)
    # A uniform placeholder model: only the features are used while collecting.
    blank = NarrowbandModel(
        np.zeros((len(classes), 2 * len(names) + 1)),
        np.zeros(2 * len(names)),
        np.ones(2 * len(names)),
        classes=classes,
        features=names,
    )
    clf = wideband_classifier(model=blank) if args.wide else NarrowbandClassifier(NarrowbandOptions(), blank)
    started = time.monotonic()
    xs, ys, groups = [], [], []
    for k, seed in enumerate(seeds):
        rate = rates[k % len(rates)]
        base = work / f"train_{seed}_{rate / 1e6:g}MSps_{args.duration:g}s"
        meta = Path(f"{base}.sigmf-meta")
        if not meta.exists():
            meta = Path(synthesize(base, sample_rate_hz=rate, duration_s=args.duration, seed=seed))
        f, c = examples(meta, clf, args.wide)
        xs.extend(f)
        ys.extend(c)
        groups.extend([k] * len(c))
        print(f"seed {seed} at {rate / 1e6:g} MS/s: {len(c)} examples", file=sys.stderr)
    if not ys:
        p.error("no examples: no boxes of that width in these recordings")
    x, y, g = np.array(xs), np.array(ys), np.array(groups)
    if args.examples_out:
        np.savez(args.examples_out, x=x, y=y, groups=g, features=names, classes=classes)
    counts = {name: int((y == i).sum()) for i, name in enumerate(classes)}
    print(f"{len(y)} examples: {counts}")
    held = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for fold in (0, 1):
        train, test = g % 2 != fold, g % 2 == fold
        if train.any() and test.any():
            held += confusion(fit(x[train], y[train], args.l2, classes, names), x[test], y[test])
    print(f"held out (two folds by recording), accuracy {np.trace(held) / max(held.sum(), 1):.3f}:")
    print(_table(held, classes))
    model = fit(x, y, args.l2, classes, names)
    model = dataclasses.replace(
        model,
        fitted_on={
            "seeds": args.seeds,
            "rates_hz": rates,
            "duration_s": args.duration,
            "examples": counts,
            "held_out_accuracy": round(float(np.trace(held) / max(held.sum(), 1)), 4),
            "l2": args.l2,
        },
    )
    write_atomically(out, model.to_json())
    print(f"wrote {out} ({time.monotonic() - started:.0f} s; recordings in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
