"""rfstream's one exception tree.

    RfstreamError                 every error rfstream raises on purpose
    ├── FatalError                ends the process with a one-line message, exit != 0
    │   ├── ConfigError           unknown key, bad value, bad file (exit 2)
    │   ├── InputError            a recording, raw file or argument that cannot be used
    │   ├── ModelError            a model file that is missing, corrupt or mismatched
    │   ├── SinkError             an output that cannot be opened (endpoint in use, unwritable path)
    │   └── DeviceError           an SDR that cannot be opened or configured
    └── RecoverableError          becomes a counter and a log line; the stream goes on
        ├── OverflowGap           samples lost before a chunk (SDR overflow, file gap)
        ├── DeviceLost            the SDR went away; the source reopens it with backoff
        └── InferenceFailed       one detector failed on one frame; the others go on

Third-party errors (sigmf, ONNX Runtime, TensorRT, SoapySDR, ZeroMQ) are
translated at the boundary with ``raise ... from exc``; the CLI turns any
FatalError into ``rfstream: error: <message>`` and its ``exit_code``.
"""

from __future__ import annotations


class RfstreamError(Exception):
    """Base of every error rfstream raises on purpose."""

    exit_code = 1


class FatalError(RfstreamError):
    """The process cannot go on; systemd (or the user) must act."""


class ConfigError(FatalError):
    """A configuration key or value is wrong; the message names the key."""

    exit_code = 2


class InputError(FatalError):
    """An input recording, file or argument cannot be used."""


class ModelError(FatalError):
    """A model file is missing, corrupt, or does not match the pipeline."""


class SinkError(FatalError):
    """An output (socket endpoint, file) cannot be opened or written."""


class DeviceError(FatalError):
    """An SDR cannot be found, opened or configured."""


class RecoverableError(RfstreamError):
    """Trouble that is counted and logged while the stream goes on."""


class OverflowGap(RecoverableError):
    """Samples were lost before the next chunk."""


class DeviceLost(RecoverableError):
    """The SDR stopped answering; it will be reopened."""


class InferenceFailed(RecoverableError):
    """A detector's runtime (ONNX Runtime, TensorRT) failed on one frame."""
