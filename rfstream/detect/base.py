"""What every detector is, and how a detector kind reads its options.

A detector is a value with a name and one method, ``detect(frame) -> list[Detection]``;
the energy detector, ONNX Runtime and TensorRT are interchangeable behind it.
Each kind keeps its settings in a frozen *options* dataclass built from
``DetectorConfig.options`` by :func:`parse_options`, which refuses an unknown key
or a bad value with a ConfigError naming the key
(``config key 'detectors.energy.options.margin_db': unknown key``).

Options dataclasses declare their checks next to the field, in the field's
metadata, so the check and the documentation live together::

    @dataclass(frozen=True, slots=True)
    class FooOptions:
        size: int = field(default=3, metadata=positive("pixels per side"))
        mode: Literal["a", "b"] = "a"   # a Literal is checked as a choice
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from rfstream.errors import ConfigError
from rfstream.types import Detection, Frame

__all__ = [
    "AsyncDetector",
    "BatchModel",
    "Detector",
    "Proposer",
    "at_least",
    "check_options",
    "in_range",
    "parse_options",
    "positive",
]

T = TypeVar("T")

Check = Callable[[Any], "str | None"]  # returns a complaint, or None when the value is fine


@runtime_checkable
class Detector(Protocol):
    """A detector: a Frame in, Detections out. Set up at construction, then ``detect`` per frame.

    ``priority``: higher is kept longer when the pipeline sheds load.
    ``warmup(frame_shape)`` allocates buffers / builds engines for ``(height, width)`` so the
    first real frame is not slow; ``close()`` releases what the detector holds (sessions,
    CUDA streams). Both may be no-ops.
    """

    name: str
    kind: str
    priority: int

    def detect(self, frame: Frame) -> list[Detection]: ...

    def warmup(self, frame_shape: tuple[int, int]) -> None: ...

    def close(self) -> None: ...


# Optional capabilities are declared here, not discovered with getattr: a value either is one
# of these (``isinstance`` against the runtime-checkable protocol) or it is not.


@runtime_checkable
class AsyncDetector(Detector, Protocol):
    """A detector whose work runs on a device queue: ``submit`` enqueues and returns at once,
    ``collect`` waits for that frame's result. The fan-out submits every such detector first,
    runs the host detectors meanwhile, and collects last (see rfstream.detect.fanout)."""

    def submit(self, frame: Frame) -> None: ...

    def collect(self) -> list[Detection]: ...


@runtime_checkable
class BatchModel(Protocol):
    """A loaded model that maps one input batch to its outputs (ONNX Runtime, TensorRT).

    ``run(batch) -> [output, ...]`` in the model's output order; ``close()`` releases what
    the model holds (sessions, engines, device buffers) and may be a no-op.
    """

    def run(self, batch: np.ndarray) -> list[np.ndarray]: ...

    def close(self) -> None: ...


@runtime_checkable
class Proposer(Protocol):
    """Candidate boxes for a frame: the proposal stage a two-stage detector classifies.

    ``for_frame(frame, score_threshold)`` returns pixel boxes ``(N, 4)`` (x0, y0, x1, y1) and
    scores ``(N,)`` in [0, 1], best first; one instance may serve several detectors and then
    computes each frame once (rfstream.detect.energy.EnergyProposer).
    """

    options: Any

    def for_frame(self, frame: Frame, score_threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray]: ...

    def warmup(self, frame_shape: tuple[int, int]) -> None: ...


# --- checks, declared in field metadata ---------------------------------------------------
def positive(doc: str = "") -> dict[str, Any]:
    """Field metadata: the value must be > 0."""
    return {"check": lambda v: None if v > 0 else f"must be > 0, got {v!r}", "doc": doc}


def at_least(low: float, doc: str = "") -> dict[str, Any]:
    """Field metadata: the value must be >= ``low``."""
    return {"check": lambda v: None if v >= low else f"must be >= {low}, got {v!r}", "doc": doc}


def in_range(low: float, high: float, doc: str = "") -> dict[str, Any]:
    """Field metadata: the value must lie in ``[low, high]``."""
    return {
        "check": lambda v: None if low <= v <= high else f"must lie in [{low}, {high}], got {v!r}",
        "doc": doc,
    }


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"config key '{key}': {message}")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Coerce a TOML value to the field's annotated type, or raise naming the key."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise _fail(key, f"{value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(key, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _fail(key, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _fail(key, f"expected a finite number, got {value!r}")
            return float(value)
        raise _fail(key, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _fail(key, f"expected a string, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _fail(key, f"expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _fail(key, f"expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    raise _fail(key, f"unsupported option type {tp!r}")  # pragma: no cover - a kind's bug


def check_options(options: Any, where: str) -> None:
    """Run the checks declared in an options dataclass's field metadata; raise naming the key."""
    for f in dataclasses.fields(options):
        check = f.metadata.get("check")
        if check is not None:
            complaint = check(getattr(options, f.name))
            if complaint:
                raise _fail(f"{where}.{f.name}", complaint)


def parse_options(cls: type[T], options: Mapping[str, Any], where: str) -> T:
    """Build a kind's frozen options dataclass from ``DetectorConfig.options``.

    ``where`` is the dotted prefix of the keys, e.g. ``"detectors.energy.options"``.
    Unknown keys, wrong types, choices outside a ``Literal`` and failed field checks
    raise ConfigError naming the full key.
    """
    if not isinstance(options, Mapping):
        raise _fail(where, f"expected a table, got {options!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), sorted(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise _fail(f"{where}.{key}", f"unknown key{hint}; known: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(f"{where}.{key}", value, hints[key])
    try:
        built = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # a kind's own __post_init__ complaint
        raise _fail(where, str(exc)) from exc
    check_options(built, where)
    return built
