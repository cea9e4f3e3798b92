"""Detections as SigMF annotations, written so that a crash, a full disk or a kill loses (almost) nothing.

The output describes the *same samples* as the input, with one annotation per
detection. Design (see docs/protocol.md, "SigMF annotations"):

- From a recording (``source_meta`` given): the original global and captures are
  copied, the original's own annotations are kept unless rfstream generated them
  (``core:generator == "rfstream"``, so re-running replaces rather than piles up),
  and the output points at the original samples without copying them:
    * same directory, same base name (annotating in place): a conforming pair;
    * same directory, another name: ``core:dataset`` names the original data file;
    * another directory: a symlink ``OUT.sigmf-data`` to the original data file.
- From a live source (``source_meta`` None): a metadata-only recording
  (``core:metadata_only``), one capture per tuning (``core:frequency``,
  ``core:datetime`` where the source knows UTC).

Sample indices are stream samples (``t_s × sample_rate_hz``), which are the
recording's sample indices when the recording was replayed from its start.

Durability, in the order things happen:

1. At construction the data link (if one is needed) and ``OUT.sigmf-meta`` appear
   together — a valid pair holding the recording's own annotations and no
   detections yet — so a run killed at any later moment never leaves an orphan
   link or half a file (every metadata write goes to a temp file in the same
   directory, is fsynced and renamed over the old one).
2. Each chunk's detections (and, live, each new tuning) are appended as one JSON
   line to the journal ``OUT.sigmf-meta.journal`` and flushed to the kernel, which
   survives SIGKILL; the journal is fsynced at most every ``checkpoint_s``, so a
   power loss costs at most that interval.
3. ``close()`` writes the whole document atomically and removes the journal.
4. A later writer for the same output finds a crashed run's journal, writes its
   detections to ``OUT.recovered-<UTC>.sigmf-meta`` (logged), and removes stale temp
   files.
5. If the output cannot be written (full disk, file-size limit, read-only
   folder), the run goes on; ``close()`` writes everything to the fallback folder
   (``$STATE_DIRECTORY`` under systemd, else the system temp folder), logs where,
   and raises SinkError naming both paths.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sigmf
import structlog

from rfstream import __version__
from rfstream.errors import InputError, SinkError
from rfstream.sinks.base import iso_utc
from rfstream.types import ChunkResult

META_EXT = ".sigmf-meta"
DATA_EXT = ".sigmf-data"
GENERATOR = "rfstream"
EXTENSION = {"name": "rfstream", "version": "1.0.0", "optional": True}
JOURNAL_EXT = ".journal"
CHECKPOINT_S = 1.0

_log = structlog.get_logger(__name__)


class AnnotationWriter:
    """A Sink that gathers detections and writes them as SigMF annotations on close."""

    def __init__(
        self,
        source_meta: Path | str | None,
        out_meta: Path | str,
        *,
        sample_rate_hz: float,
        center_freq_hz: float,
        datatype: str = "cf32_le",
        description: str = "",
        checkpoint_s: float = CHECKPOINT_S,
        fallback_dir: Path | str | None = None,
    ) -> None:
        if not sample_rate_hz > 0:
            raise SinkError(f"annotations: sample rate must be > 0, got {sample_rate_hz!r}")
        self.out_meta = _meta_path(Path(out_meta))
        _probe_writable(self.out_meta)
        self.journal_path = self.out_meta.with_name(self.out_meta.name + JOURNAL_EXT)
        self._checkpoint_s = float(checkpoint_s)
        self._fallback_dir = Path(fallback_dir) if fallback_dir else default_fallback_dir()
        self.fallback_path: Path | None = None  # where the detections went when out_meta failed
        self.recovered_path: Path | None = None  # where a crashed run's journal was recovered to
        self._rate = float(sample_rate_hz)
        self._link: tuple[Path, Path] | None = None  # (symlink to create, the data it points at)
        self._live = source_meta is None
        if source_meta is None:
            self._global: dict[str, Any] = {
                "core:datatype": datatype,
                "core:version": sigmf.__specification__,
                "core:sample_rate": self._rate,
                "core:recorder": f"rfstream {__version__}",
                "core:metadata_only": True,  # a live stream: the samples were not kept
            }
            if description:
                self._global["core:description"] = description
            self._captures: list[dict[str, Any]] = [
                {"core:sample_start": 0, "core:frequency": float(center_freq_hz)}
            ]
            self._annotations: list[dict[str, Any]] = []
        else:
            from rfstream.sources.sigmf_meta import read_document

            original = read_document(Path(source_meta))  # UTF-8 with a BOM, UTF-16, as a replay reads it
            self._global = dict(original.get("global", {}))
            self._global.setdefault("core:sample_rate", self._rate)
            self._captures = [dict(c) for c in original.get("captures", []) if isinstance(c, dict)]
            self._annotations = [
                dict(a)
                for a in original.get("annotations", [])
                if isinstance(a, dict) and a.get("core:generator") != GENERATOR
            ]
            self._point_at_data(Path(source_meta))
        extensions = [
            e
            for e in self._global.get("core:extensions", [])
            if isinstance(e, dict) and e.get("name") != EXTENSION["name"]
        ]
        self._global["core:extensions"] = [*extensions, dict(EXTENSION)]
        self.skipped_nonfinite = 0
        self._utc_known = False
        self._closed = False
        self._journal_error: str | None = None  # why the journal stopped (a full disk, ...)
        self._next_sync = 0.0
        self._start()

    # --- the Sink protocol ---------------------------------------------------------------------
    def publish(self, result: ChunkResult) -> None:
        if self._closed:
            return
        capture = self._follow_tuning(result) if self._live else None
        new = []
        for d in result.detections:
            if not all(map(math.isfinite, (d.t_start_s, d.t_stop_s, d.f_low_hz, d.f_high_hz, d.score))):
                self.skipped_nonfinite += 1  # JSON has no NaN; one bad box must not lose the file
                continue
            new.append(detection_annotation(d, self._rate))
        self._annotations.extend(new)
        if new or capture is not None:
            self._append({"annotations": new, **({"capture": capture} if capture is not None else {})})

    add = publish

    def publish_health(self, health: Mapping[str, Any]) -> None:
        """Health is not part of a recording's metadata."""

    def close(self) -> None:
        """Write the whole OUT.sigmf-meta and drop the journal; SinkError if it cannot (see the module doc)."""
        if self._closed:
            return
        self._closed = True
        document = self._document()
        try:
            write_json_atomic(self.out_meta, document)
        except SinkError as exc:
            self._fall_back(document, exc)  # raises, saying where the detections are
        with contextlib.suppress(OSError):
            self.journal_path.unlink()
        _log.info(
            "wrote SigMF annotations", path=str(self.out_meta), annotations=len(document["annotations"])
        )
        if self.skipped_nonfinite:
            _log.warning("skipped detections with non-finite values", count=self.skipped_nonfinite)

    def metadata(self) -> dict[str, Any]:
        """What close() would write (a copy), for tests and tools."""
        return json.loads(json.dumps(self._document()))

    # --- internals -----------------------------------------------------------------------------
    def _document(self) -> dict[str, Any]:
        return {
            "global": self._global,
            "captures": self._captures,
            "annotations": sorted(self._annotations, key=_start_key),
        }

    def _start(self) -> None:
        """Recover a crashed run's journal, then make the pair and open a fresh journal."""
        self.recovered_path = recover_journal(self.out_meta)
        _remove_stale_temp_files(self.out_meta)
        if self._link is not None and not os.path.lexists(self._link[0]):
            try:
                os.symlink(self._link[1], self._link[0])
            except OSError as exc:
                raise SinkError(
                    f"cannot link {self._link[0]} to the recording's data: {exc.strerror}"
                ) from exc
        write_json_atomic(self.out_meta, self._document())
        self._append({"rfstream_journal": 1, "meta": self.out_meta.name}, mode="w")

    def _append(self, record: dict[str, Any], mode: str = "a") -> None:
        """One JSON line onto the journal. The file is opened per line, not held open: a
        folder can then still be remounted (an operator's read-only remount, a clean unmount)."""
        if self._journal_error is not None:
            return
        try:
            with open(self.journal_path, mode, encoding="utf-8") as journal:
                journal.write(json.dumps(record, allow_nan=False) + "\n")
                journal.flush()  # in the kernel: survives a kill of this process
                now = time.monotonic()
                if now >= self._next_sync:  # on the disk: survives a power loss
                    os.fsync(journal.fileno())
                    self._next_sync = now + self._checkpoint_s
        except OSError as exc:
            self._journal_error = exc.strerror or str(exc)
            _log.error(
                "annotation journal stopped; detections are kept in memory until the run ends",
                path=str(self.journal_path),
                error=self._journal_error,
            )

    def _fall_back(self, document: dict[str, Any], exc: SinkError) -> None:
        """The output cannot be written: put everything in the fallback folder and say where."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        fallback = self._fallback_dir / f"rfstream-annotations-{stamp}-{os.getpid()}{META_EXT}"
        saved = dict(
            document, **{"global": {**document["global"], "rfstream:intended_path": str(self.out_meta)}}
        )
        try:
            write_json_atomic(fallback, saved)
        except SinkError as again:
            if self._journal_error is None and self.journal_path.is_file():
                where = (
                    f"they remain in {self.journal_path}, which the next run writing {self.out_meta} recovers"
                )
            else:
                count = sum(a.get("core:generator") == GENERATOR for a in document["annotations"])
                where = f"{count} detections are lost"
            _log.error(
                "annotations could not be written", output=str(exc), fallback=str(again), detections=where
            )
            raise SinkError(f"{exc}; the fallback {fallback} failed too ({again}); {where}") from exc
        with contextlib.suppress(OSError):
            self.journal_path.unlink()
        self.fallback_path = fallback
        _log.error("annotations written to the fallback path instead", path=str(fallback), error=str(exc))
        raise SinkError(f"{exc}; the detections were saved to {fallback} instead") from exc

    def _point_at_data(self, source_meta: Path) -> None:
        dataset = self._global.get("core:dataset")
        data = source_meta.parent / dataset if dataset else _data_path(source_meta)
        if not data.exists():
            return  # a metadata-only original: nothing to point at
        out_dir = self.out_meta.parent
        if out_dir.resolve() == data.parent.resolve():
            if _data_path(self.out_meta).resolve() == data.resolve():
                self._global.pop("core:dataset", None)
            else:
                self._global["core:dataset"] = data.name
            return
        # SigMF allows core:dataset only for a file beside the meta, so link one there.
        link = out_dir / data.name if dataset else _data_path(self.out_meta)
        if os.path.lexists(link) and not (link.exists() and link.samefile(data)):
            raise SinkError(f"cannot write annotations to {self.out_meta}: {link} exists and is not {data}")
        self._link = (link, data.resolve())

    def _follow_tuning(self, result: ChunkResult) -> dict[str, Any] | None:
        """Record UTC and retunings of a live stream; the capture added, if any."""
        chunk = result.frame.chunk
        last = self._captures[-1]
        if not self._utc_known and chunk.start_time_utc is not None and last["core:sample_start"] == 0:
            self._utc_known = True
            t0 = chunk.start_time_utc - timedelta(seconds=chunk.start_sample / self._rate)
            last["core:datetime"] = iso_utc(t0)
        if (
            float(chunk.center_freq_hz) != last["core:frequency"]
            and chunk.start_sample > last["core:sample_start"]
        ):
            capture: dict[str, Any] = {
                "core:sample_start": int(chunk.start_sample),
                "core:frequency": float(chunk.center_freq_hz),
            }
            if chunk.start_time_utc is not None:
                capture["core:datetime"] = iso_utc(chunk.start_time_utc)
            self._captures.append(capture)
            return capture
        return None


def detection_annotation(d: Any, rate_hz: float) -> dict[str, Any]:
    """One Detection as a SigMF annotation (stream sample indices at ``rate_hz``)."""
    start = max(0, round(d.t_start_s * rate_hz))
    stop = max(start, round(d.t_stop_s * rate_hz))
    out = {
        "core:sample_start": start,
        "core:sample_count": stop - start,
        "core:freq_lower_edge": float(d.f_low_hz),
        "core:freq_upper_edge": float(d.f_high_hz),
        "core:label": d.label,
        "core:generator": GENERATOR,
        "rfstream:score": float(d.score),
        "rfstream:detector": d.detector,
        "rfstream:found_by": list(d.found_by),
    }
    presence = getattr(d, "presence", None)
    if presence is not None:  # fused (merge.mode = "fuse"): what the wire's schema 2 adds
        out["rfstream:presence"] = float(presence)
        out["rfstream:alternatives"] = {label: float(p) for label, p in d.alternatives}
        if d.group_id >= 0:
            out["rfstream:group_id"] = int(d.group_id)
        if d.low_confidence:
            out["rfstream:low_confidence"] = True
    return out


def _start_key(annotation: dict[str, Any]) -> tuple[int, int]:
    """Sort by sample_start; an annotation whose start is not an integer goes last, kept as it was."""
    start = annotation.get("core:sample_start")
    if isinstance(start, int) and not isinstance(start, bool):
        return (0, start)
    return (1, 0)


def default_fallback_dir() -> Path:
    """Where detections go when their output cannot be written: systemd's state folder, else temp."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) if state else Path(tempfile.gettempdir())


def recover_journal(out_meta: Path) -> Path | None:
    """A crashed run's journal beside ``out_meta``: its detections into OUT.recovered-<UTC>.sigmf-meta.

    The crashed run's own ``out_meta`` (written at its start) is the base document; the
    journal's lines add its detections and tunings. Returns the recovered file, or None.
    """
    journal = out_meta.with_name(out_meta.name + JOURNAL_EXT)
    if not journal.is_file():
        return None
    try:
        base = _read_meta(out_meta)
    except InputError:
        base = {"global": {}, "captures": []}
    annotations = [a for a in base.get("annotations", []) if isinstance(a, dict)]
    captures = [c for c in base.get("captures", []) if isinstance(c, dict)]
    with open(journal, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                break  # the line being written when the run died
            if not isinstance(record, dict):
                continue
            annotations.extend(a for a in record.get("annotations", []) if isinstance(a, dict))
            if isinstance(record.get("capture"), dict):
                captures.append(record["capture"])
    stamp = datetime.fromtimestamp(journal.stat().st_mtime, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    stem = out_meta.name[: -len(META_EXT)]
    recovered = out_meta.with_name(f"{stem}.recovered-{stamp}{META_EXT}")
    n = 1
    while recovered.exists():  # two crashes within a second
        n += 1
        recovered = out_meta.with_name(f"{stem}.recovered-{stamp}-{n}{META_EXT}")
    global_ = dict(base.get("global", {}))
    data = _data_path(out_meta)
    if "core:dataset" not in global_ and os.path.lexists(data):
        global_["core:dataset"] = data.name  # the recovered meta has another name than its data
    write_json_atomic(
        recovered,
        {"global": global_, "captures": captures, "annotations": sorted(annotations, key=_start_key)},
    )
    journal.unlink()
    _log.warning(
        "recovered the detections of a run that did not finish",
        path=str(recovered),
        detections=sum(a.get("core:generator") == GENERATOR for a in annotations),
    )
    return recovered


def _remove_stale_temp_files(out_meta: Path) -> None:
    """Temp files of a writer killed between writing and renaming (``.OUT.sigmf-meta.*.tmp``)."""
    for stale in out_meta.parent.glob(f".{out_meta.name}.*"):
        if stale.suffix in (".tmp", ".probe"):
            with contextlib.suppress(OSError):
                stale.unlink()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON so that ``path`` holds the old content or the new, never a part of it."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # a read-only or full folder
        raise SinkError(f"cannot write {path}: {exc.strerror or exc}") from exc
    done = False
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
        done = True
    except OSError as exc:
        raise SinkError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise SinkError(f"cannot write {path}: {exc}") from exc
    finally:
        if not done:  # a read-only folder refuses this too; the next writer removes it then
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    with contextlib.suppress(OSError):  # make the rename itself durable; not every filesystem allows it
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o644  # mkstemp's 0600 would be a surprise for a metadata file


def _meta_path(path: Path) -> Path:
    return path if path.name.endswith(META_EXT) else path.with_name(path.name + META_EXT)


def _data_path(meta: Path) -> Path:
    return meta.with_name(meta.name[: -len(META_EXT)] + DATA_EXT)


def _probe_writable(path: Path) -> None:
    """Fail now, naming the path, if close() could not write there."""
    where = f"cannot write annotations to {path}"
    if not path.parent.is_dir():
        raise SinkError(f"{where}: directory {path.parent} does not exist")
    if path.is_dir():
        raise SinkError(f"{where}: it is a directory")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".probe")
    except OSError as exc:
        raise SinkError(f"{where}: {exc.strerror or exc}") from exc
    os.close(fd)
    os.unlink(tmp)


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except OSError as exc:
        raise InputError(f"cannot read SigMF metadata {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise InputError(f"SigMF metadata {path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("global"), dict):
        raise InputError(f"SigMF metadata {path} has no global object")
    return meta
