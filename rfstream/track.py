"""The tracker: follows signals across chunks and turns detections into track events.

Rules (stream time throughout; ``now`` is the end of the current frame, ``frame.t1_s``):

- **Association.** Detections are taken in time order (then frequency). A detection may
  join a live track, whatever the two labels, when
  (a) it starts no later than ``max_gap_s`` after the track was last seen; and
  (b) its frequency interval overlaps the track's, each widened by the tolerance
  (``freq_tolerance_hz``, or 10 % of the wider of the two bandwidths when that is 0); and
  (c) where the two labels differ (neither ``unknown``), the widened intervals' IoU is at least
  0.5. A burst cut by a chunk boundary may be voted ``psk`` in one chunk and ``fsk`` in the next
  (a short tail looks different) on the same band: one signal, one id. A tone inside an OFDM
  band is another signal: its band is far narrower, so it does not join.
- **Label**: the score-weighted vote of the track's detections (``unknown`` votes only while no
  labelled detection has joined); ties go to the label seen first. With
  ``tracker.label_by_track`` (the default) the pipeline publishes each detection that carries
  its track on with the track's label (:meth:`Tracker.relabel`): one signal keeps one label while
  a chunk of it looks like something else (an FM or AM voice channel in a pause looks like a
  carrier, a burst's tail like another modulation). *Carries on*: it starts within
  ``RELABEL_GAP_S`` (50 ms) of the track's last sighting and their bands, not widened, overlap
  with IoU ≥ 0.5; a later burst on the channel (perhaps another transmitter) and the members of
  a train (each hop its own signal) keep their own labels. The detection's own label moves to
  the front of its ``alternatives`` with its score; boxes and scores are unchanged. Causal: a
  track's first detection keeps its own label. Chosen on validation recordings: relabelling
  trains, or every joined detection, made the labels worse there.
  Of the candidates it joins the one with the largest frequency IoU (of the widened
  intervals), ties to the older track. So a signal continuing across a chunk
  boundary keeps its track, and a hopping signal's bursts on different frequencies
  are separate tracks; bursts that return to the same frequency within
  ``max_gap_s`` join the same one. A track may take several detections in one
  chunk (pulses on one frequency); unmatched detections start new tracks, which
  later detections of the same chunk may join.
- **Trains** (detections of one chunk sharing a ``group_id`` ≥ 0: a frequency hopper's dwells,
  a pulse train, TDMA bursts, grouped by fusion, see :mod:`rfstream.detect.fragments`) are
  associated as one detection spanning them all (lowest to highest frequency, first start to last
  stop, best score), so a hopper is one track across chunks, its band the span it hops over.
- **Low-confidence boxes** (below fusion's operating threshold, published only where
  ``merge.keep_low_confidence`` asks for them) are not tracked: tracks follow the boxes a user
  should believe, so they are the same whether or not the low-confidence ones are published.
- **Ids** start at 1 and only grow.
- **State**: ``tentative`` until ``confirm_hits`` detections have joined, then
  ``confirmed``; ``ended`` once ``now - last_seen_s > max_gap_s`` (a gap in the
  stream moves ``now`` on, so tracks across a gap end by time as well) or when
  :meth:`Tracker.finish` is called.
- **Smoothing**: the edges follow the detections exponentially,
  ``edge = smoothing·edge + (1 − smoothing)·detected_edge``. ``score`` is the best
  detection score so far; ``first_seen_s`` / ``last_seen_s`` are the earliest start and
  the latest stop of the joined detections.
- **Events**: per chunk, at most one event per track: ``end`` for tracks that ended
  (listed first), then, by track id, ``start`` for tracks created in this chunk and
  ``update`` for older tracks that got at least one detection. Every ``start`` is
  eventually followed by exactly one ``end``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rfstream.config import TrackerConfig
from rfstream.types import MAX_ALTERNATIVES, Detection, Frame, Track, TrackEvent, TrackState

__all__ = ["Tracker"]

_ANY = "unknown"
RELABEL_GAP_S = 0.05  # a detection takes its track's label only where it carries on within this
# A detection with another label joins a track only if their bands match this well (widened IoU).
_RELABEL_IOU = 0.5


@dataclass(slots=True)
class _Live:
    """A track's mutable state while it lives; published as frozen Track snapshots."""

    track_id: int
    label: str
    f_low_hz: float
    f_high_hz: float
    first_seen_s: float
    last_seen_s: float
    hits: int
    score: float
    state: TrackState
    votes: dict[str, float] = field(default_factory=dict)  # label -> summed detection scores

    def snapshot(self, state: TrackState | None = None) -> Track:
        return Track(
            track_id=self.track_id,
            label=self.label,
            f_low_hz=self.f_low_hz,
            f_high_hz=self.f_high_hz,
            first_seen_s=self.first_seen_s,
            last_seen_s=self.last_seen_s,
            hits=self.hits,
            score=self.score,
            state=state or self.state,
        )


class Tracker:
    """One stream's tracker. ``update(frame, detections)`` per chunk, ``finish()`` at the end."""

    def __init__(self, cfg: TrackerConfig | None = None) -> None:
        cfg = cfg or TrackerConfig()
        self.cfg = cfg
        self._keep = float(cfg.smoothing)
        self._live: dict[int, _Live] = {}
        self._next_id = 1
        self._last_seq = -1
        self._assigned: list[int] = []  # per detection of the last update: its track's id

    def _tolerance(self, a_bw: float, b_bw: float) -> float:
        if self.cfg.freq_tolerance_hz > 0:
            return self.cfg.freq_tolerance_hz
        return 0.1 * max(a_bw, b_bw)

    def _affinity(self, track: _Live, det: Detection) -> float:
        """Frequency IoU of the widened intervals; < 0 when the detection may not join."""
        if det.t_start_s - track.last_seen_s > self.cfg.max_gap_s:
            return -1.0
        tol = self._tolerance(track.f_high_hz - track.f_low_hz, det.bandwidth_hz)
        iou = _band_iou(track.f_low_hz - tol, track.f_high_hz + tol, det.f_low_hz - tol, det.f_high_hz + tol)
        if iou <= 0:
            return -1.0
        if iou < _RELABEL_IOU and track.label != det.label and _ANY not in (track.label, det.label):
            return -1.0  # another label on a band this different: another signal (a tone on an OFDM band)
        return iou

    def _join(self, track: _Live, det: Detection) -> None:
        keep = self._keep
        track.f_low_hz = keep * track.f_low_hz + (1.0 - keep) * det.f_low_hz
        track.f_high_hz = keep * track.f_high_hz + (1.0 - keep) * det.f_high_hz
        track.first_seen_s = min(track.first_seen_s, det.t_start_s)
        track.last_seen_s = max(track.last_seen_s, det.t_stop_s)
        track.hits += 1
        track.score = max(track.score, det.score)
        _vote(track, det)
        if track.hits >= self.cfg.confirm_hits:
            track.state = "confirmed"

    def update(self, frame: Frame, detections: Sequence[Detection]) -> list[TrackEvent]:
        """Associate one chunk's (merged) detections; return the chunk's track events."""
        seq = frame.chunk.seq
        self._last_seq = seq
        started: set[int] = set()
        touched: set[int] = set()
        self._assigned = [-1] * len(detections)
        for det, index in sorted(
            _by_train(detections),
            key=lambda dm: (dm[0].t_start_s, dm[0].f_low_hz, dm[0].f_high_hz, -dm[0].score),
        ):
            best, best_affinity = None, 0.0
            for track in self._live.values():  # dict order = id order, so ties go to the older
                affinity = self._affinity(track, det)
                if affinity > best_affinity:
                    best, best_affinity = track, affinity
            if best is None:
                best = _Live(
                    track_id=self._next_id,
                    label=det.label,
                    f_low_hz=det.f_low_hz,
                    f_high_hz=det.f_high_hz,
                    first_seen_s=det.t_start_s,
                    last_seen_s=det.t_stop_s,
                    hits=1,
                    score=det.score,
                    state="confirmed" if self.cfg.confirm_hits <= 1 else "tentative",
                )
                _vote(best, det)
                self._live[best.track_id] = best
                self._next_id += 1
                started.add(best.track_id)
            else:
                continues = det.group_id < 0 and _continues(best, det)  # trains: see the docstring
                self._join(best, det)
                if continues:
                    self._assigned[index] = best.track_id
            touched.add(best.track_id)

        now = frame.t1_s
        events = [
            TrackEvent("end", self._live.pop(tid).snapshot("ended"), seq)
            for tid in [
                t.track_id
                for t in self._live.values()
                if t.track_id not in touched and now - t.last_seen_s > self.cfg.max_gap_s
            ]
        ]
        for tid in sorted(touched):
            kind = "start" if tid in started else "update"
            events.append(TrackEvent(kind, self._live[tid].snapshot(), seq))
        return events

    def relabel(self, detections: Sequence[Detection]) -> list[Detection]:
        """The detections just given to :meth:`update`, those that carry their track on
        (:func:`_continues`) with its label.

        Where the track's label (the vote so far) differs from the detection's and is not
        ``unknown``, the detection takes it and its own label goes first among its
        ``alternatives``, with its score (so no alternative is more probable than the score).
        Other detections are returned as they are.
        """
        if len(detections) != len(self._assigned):
            raise ValueError("relabel() takes the detections of the last update()")
        out = []
        for det, tid in zip(detections, self._assigned, strict=True):
            track = self._live.get(tid)
            label = det.label if track is None else track.label
            if label == det.label or label == _ANY:
                out.append(det)
                continue
            others = [a for a in det.alternatives if a[0] not in (label, det.label)]
            alternatives = ((det.label, round(det.score, 4)), *others)
            out.append(det.replace(label=label, alternatives=alternatives[:MAX_ALTERNATIVES]))
        return out

    def finish(self, at_s: float | None = None) -> list[TrackEvent]:
        """End every live track (the stream ended). Returns their ``end`` events, by id.

        ``at_s`` (stream time of the end) is accepted for the pipeline's symmetry with
        ``update``; ending does not move a track's ``last_seen_s``.
        """
        del at_s
        events = [TrackEvent("end", t.snapshot("ended"), self._last_seq) for t in self._live.values()]
        self._live.clear()
        return events

    def tracks(self) -> list[Track]:
        """Snapshots of the live tracks, by id (for a late subscriber)."""
        return [t.snapshot() for t in self._live.values()]


def _continues(track: _Live, det: Detection) -> bool:
    """Whether ``det`` (not a train) carries on ``track`` closely enough to take its label: it
    starts within ``RELABEL_GAP_S`` of the track's last sighting and their bands (not widened)
    overlap with IoU at least 0.5. Looser joins (a burst on the same channel a while later) keep
    one id but may be another transmitter, whose label is its own."""
    if det.t_start_s - track.last_seen_s > RELABEL_GAP_S:
        return False
    return _band_iou(track.f_low_hz, track.f_high_hz, det.f_low_hz, det.f_high_hz) >= _RELABEL_IOU


def _band_iou(lo_a: float, hi_a: float, lo_b: float, hi_b: float) -> float:
    """IoU of two frequency intervals; 0 where they do not overlap (or both are empty)."""
    inter = min(hi_a, hi_b) - max(lo_a, lo_b)
    union = max(hi_a, hi_b) - min(lo_a, lo_b)
    return inter / union if inter > 0 and union > 0 else 0.0


def _vote(track: _Live, det: Detection) -> None:
    """Add a detection's score to its label's vote; the track's label is the vote's winner."""
    track.votes[det.label] = track.votes.get(det.label, 0.0) + max(det.score, 1e-9)
    labelled = {k: v for k, v in track.votes.items() if k != _ANY}
    pool = labelled or track.votes
    # max() keeps the first of equal votes, and dicts keep insertion order: ties go to the first seen
    track.label = max(pool, key=lambda k: pool[k])


def _by_train(detections: Sequence[Detection]) -> list[tuple[Detection, int]]:
    """Each train (detections sharing a ``group_id`` >= 0) as one detection spanning it; others as
    they are, with their index in ``detections`` (a train's is -1: trains keep their own labels,
    so none of its members is relabelled); low-confidence detections left out."""
    use = [(i, d) for i, d in enumerate(detections) if not d.low_confidence]
    single = [(d, i) for i, d in use if d.group_id < 0]
    trains: dict[int, list[Detection]] = {}
    for _, d in use:
        if d.group_id >= 0:
            trains.setdefault(d.group_id, []).append(d)
    for members in trains.values():
        best = max(members, key=lambda d: (d.score, d.label, d.detector))
        spanning = best.replace(
            f_low_hz=min(d.f_low_hz for d in members),
            f_high_hz=max(d.f_high_hz for d in members),
            t_start_s=min(d.t_start_s for d in members),
            t_stop_s=max(d.t_stop_s for d in members),
        )
        single.append((spanning, -1))
    return single
