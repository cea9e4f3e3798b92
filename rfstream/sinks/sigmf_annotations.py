"""Detections as SigMF annotations: a ``.sigmf-meta`` written once, atomically, at close.

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

Nothing is written until close; the destination is probed at construction so an
unwritable path fails before any processing, and the file appears whole or not
at all (temp file in the same directory, fsync, ``os.replace``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from datetime import timedelta
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
    ) -> None:
        if not sample_rate_hz > 0:
            raise SinkError(f"annotations: sample rate must be > 0, got {sample_rate_hz!r}")
        self.out_meta = _meta_path(Path(out_meta))
        _probe_writable(self.out_meta)
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
            from rfstream.sources.sigmf import read_metadata

            # Checked as a replay checks it, so a bad field fails here, before the run, not at close.
            original = read_metadata(Path(source_meta))
            self._global = dict(original.get("global", {}))
            self._global.setdefault("core:sample_rate", self._rate)
            self._captures = [dict(c) for c in original.get("captures", [])]
            self._annotations = [
                dict(a) for a in original.get("annotations", []) if a.get("core:generator") != GENERATOR
            ]
            self._point_at_data(Path(source_meta))
        extensions = [
            e for e in self._global.get("core:extensions", []) if e.get("name") != EXTENSION["name"]
        ]
        self._global["core:extensions"] = [*extensions, dict(EXTENSION)]
        self.skipped_nonfinite = 0
        self._utc_known = False
        self._closed = False

    # --- the Sink protocol ---------------------------------------------------------------------
    def publish(self, result: ChunkResult) -> None:
        if self._closed:
            return
        if self._live:
            self._follow_tuning(result)
        rate = self._rate
        for d in result.detections:
            if not all(map(math.isfinite, (d.t_start_s, d.t_stop_s, d.f_low_hz, d.f_high_hz, d.score))):
                self.skipped_nonfinite += 1  # JSON has no NaN; one bad box must not lose the file
                continue
            start = max(0, round(d.t_start_s * rate))
            stop = max(start, round(d.t_stop_s * rate))
            self._annotations.append(
                {
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
            )

    add = publish

    def publish_health(self, health: Mapping[str, Any]) -> None:
        """Health is not part of a recording's metadata."""

    def close(self) -> None:
        """Write OUT.sigmf-meta (and the data symlink, first); raises SinkError if it cannot."""
        if self._closed:
            return
        self._closed = True
        meta = {
            "global": self._global,
            "captures": self._captures,
            "annotations": sorted(self._annotations, key=lambda a: a["core:sample_start"]),
        }
        if self._link is not None and not os.path.lexists(self._link[0]):
            try:
                os.symlink(self._link[1], self._link[0])
            except OSError as exc:
                raise SinkError(
                    f"cannot link {self._link[0]} to the recording's data: {exc.strerror}"
                ) from exc
        write_json_atomic(self.out_meta, meta)
        _log.info("wrote SigMF annotations", path=str(self.out_meta), annotations=len(meta["annotations"]))
        if self.skipped_nonfinite:
            _log.warning("skipped detections with non-finite values", count=self.skipped_nonfinite)

    def metadata(self) -> dict[str, Any]:
        """What close() would write (a copy), for tests and tools."""
        return json.loads(
            json.dumps(
                {
                    "global": self._global,
                    "captures": self._captures,
                    "annotations": sorted(self._annotations, key=lambda a: a["core:sample_start"]),
                }
            )
        )

    # --- internals -----------------------------------------------------------------------------
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

    def _follow_tuning(self, result: ChunkResult) -> None:
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


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON so that ``path`` holds the old content or the new, never a part of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
        if not done:
            with contextlib.suppress(FileNotFoundError):
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
