"""The ``rfstream`` command: run, replay, demo, synth, listen, eval, bench, train, models, devices.

Every verb loads the configuration the same way (defaults < ``--config`` file <
``RFSTREAM_*`` environment < flags) and every FatalError ends the process with
one line, ``rfstream: error: <message>``, and a non-zero exit.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rfstream import __version__
from rfstream.config import Config, load_config
from rfstream.errors import ConfigError, FatalError, InputError, RfstreamError
from rfstream.limits import MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ

EPILOG = "docs: README.md, docs/architecture.md, docs/protocol.md, docs/operations.md"

# argparse (before 3.13) reads "-250e3", "-1e6" or "-inf" after a flag as another flag ("expected
# one argument"); with this, every number reaches the value checks, which name the setting.
_NEGATIVE_NUMBER = re.compile(r"^-(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|infinity|nan)$", re.IGNORECASE)
MAX_SYNTH_SAMPLES = 1 << 31  # synth/demo write complex64: 16 GiB


def finite_float(text: str) -> float:
    """argparse type: a finite number (``nan``/``inf`` are refused at the flag, naming it)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _check_synthesis(rate: float, duration: float, what: str) -> None:
    """A synthesised recording that can be written: a sample rate, a duration, and a bounded size."""
    if not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
        raise InputError(
            f"{what} --rate must lie in [{MIN_SAMPLE_RATE_HZ:g}, {MAX_SAMPLE_RATE_HZ:g}] Hz, got {rate:g}"
        )
    if not duration > 0:
        raise InputError(f"{what} --duration must be > 0, got {duration:g}")
    if rate * duration > MAX_SYNTH_SAMPLES:
        raise InputError(
            f"{what}: {duration:g} s at {rate:g} Hz is {rate * duration:.3g} samples, more than the "
            f"{MAX_SYNTH_SAMPLES} rfstream writes at once; shorten --duration or lower --rate"
        )


# --- shared option groups ---------------------------------------------------------------------
def _add_config_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("configuration")
    g.add_argument("--config", metavar="FILE", help="TOML config file (see config/rfstream.toml)")
    g.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one setting, e.g. --set spectrogram.nfft=2048 (repeatable)",
    )
    g.add_argument("--log-format", choices=("auto", "console", "json"), help="log format (default: auto)")
    g.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="log level")
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars, tables or info logs (warnings still show)",
    )


def _add_replay_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("recording")
    g.add_argument("capture", help="a .sigmf-meta / .sigmf-data / .sigmf archive, or a raw IQ file")
    g.add_argument("--chunk-ms", type=finite_float, help="chunk length in ms (default 200)")
    g.add_argument("--channel", type=int, help="channel of a multi-channel recording (default 0)")
    g.add_argument("--capture-index", type=int, help="replay only this SigMF capture segment")
    g.add_argument("--datatype", help="raw files: SigMF datatype, e.g. cu8, ci8, ci16_le, cf32_le")
    g.add_argument("--rate", type=finite_float, help="raw files: sample rate in Hz")
    g.add_argument("--freq", type=finite_float, help="raw files: centre frequency in Hz")
    g.add_argument(
        "--no-verify",
        action="store_true",
        help="do not check the data against core:sha512 (faster for large recordings)",
    )
    g.add_argument(
        "--allow-external-dataset",
        action="store_true",
        help="let core:dataset name a file outside the metadata's folder",
    )


def _overrides(args: argparse.Namespace, mapping: dict[str, str]) -> dict[str, Any]:
    """CLI flags -> dotted config overrides; --set pairs last so they win."""
    out: dict[str, Any] = {}
    for attr, key in mapping.items():
        value = getattr(args, attr, None)
        if value is not None and value is not False:
            out[key] = value
    if getattr(args, "log_format", None):
        out["runtime.log_format"] = args.log_format
    if getattr(args, "log_level", None):
        out["runtime.log_level"] = args.log_level
    elif getattr(args, "quiet", False):
        out["runtime.log_level"] = "warning"  # -q: only what needs attention
    if getattr(args, "no_verify", False):
        out["source.verify_checksum"] = False
    for pair in getattr(args, "set", []) or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out


_REPLAY_FLAGS = {
    "capture": "source.path",
    "chunk_ms": "source.chunk_ms",
    "channel": "source.channel",
    "capture_index": "source.capture_index",
    "datatype": "source.datatype",
    "rate": "source.sample_rate_hz",
    "freq": "source.center_freq_hz",
    "allow_external_dataset": "source.allow_external_dataset",
}


def _load(args: argparse.Namespace, mapping: dict[str, str], extra: dict[str, Any] | None = None) -> Config:
    overrides = _overrides(args, mapping)
    if extra:
        overrides = {**extra, **overrides}
    cfg = load_config(getattr(args, "config", None), overrides=overrides)
    from rfstream.runtime.budget import limit_blas

    limit_blas(cfg.runtime.blas_threads or 1)  # BLAS reads its thread count when NumPy loads: now
    from rfstream.runtime.logging import configure_logging

    configure_logging(cfg.runtime.log_format, cfg.runtime.log_level)
    return cfg


def _interactive(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def _config_dir(args: argparse.Namespace) -> Path | None:
    """Model files named in a config file may sit beside it."""
    config = getattr(args, "config", None)
    return Path(config).parent if config else None


def _print_summary(summary: Any, *, started: float, paced: bool, out: Any = sys.stderr) -> None:
    """The run in one line; on time / late only where chunks had a deadline (a paced run)."""
    h = summary.health
    c, s = h["chunks"], h["samples"]
    wall = time.monotonic() - started
    lat = h["latency_ms"].get("total", {})
    timing = f"{c['on_time']} on time, {c['late']} late, " if paced else ""
    print(
        f"chunks {c['processed']} processed ({timing}{c['shed']} shed); "
        f"samples {s['processed']} processed, {s['shed']} shed, {s['lost_overflow']} lost; "
        f"{h['detections']} detections, {summary.tracks_seen} tracks; "
        f"per chunk p50 {lat.get('p50', 0):.1f} ms, p95 {lat.get('p95', 0):.1f} ms; "
        f"real-time factor {h['realtime_factor']:.2f}; wall {wall:.1f} s",
        file=out,
    )
    if h["nonfinite_samples"]:
        print(f"warning: {h['nonfinite_samples']} NaN/Inf samples were zeroed", file=out)


# --- verbs ------------------------------------------------------------------------------------
def cmd_replay(args: argparse.Namespace) -> int:
    extra: dict[str, Any] = {}
    if args.realtime:
        extra["source.realtime"] = True
    if args.loop:
        extra["source.loop"] = True
    if args.datatype or args.rate:
        extra["source.kind"] = "raw"
    if args.endpoint is not None:
        extra["publish.endpoint"] = args.endpoint
    if args.no_publish:
        extra["publish.endpoint"] = ""
    if args.spectrogram:
        extra["publish.spectrogram"] = True
    if args.annotate:
        extra["publish.annotations"] = args.annotate
    cfg = _load(args, _REPLAY_FLAGS, extra)
    started = time.monotonic()
    json_lines = args.json or args.output_format == "json"
    if json_lines:
        from rfstream.sinks.jsonl import JsonLinesSink

        factories = [lambda _info: JsonLinesSink()]
    else:
        factories = []
    if cfg.source.realtime:
        # Paced like a live source: the daemon's runtime (notify, watchdog, signals, SIGHUP, health).
        from rfstream.daemon import Daemon

        summary = Daemon(cfg, config_path=args.config, sink_factories=factories).run()
    else:
        from rfstream.runner import run_pipeline

        summary = run_pipeline(
            cfg,
            sink_factories=factories,
            lossless=True,
            progress=_interactive(args) and not json_lines,
            config_dir=_config_dir(args),
        )
    if not args.quiet:
        _print_summary(summary, started=started, paced=cfg.source.realtime)
        if cfg.publish.annotations:
            print(f"annotations written to {cfg.publish.annotations}", file=sys.stderr)
    return 0


_RUN_FLAGS = {
    "source": "source.kind",
    "path": "source.path",
    "datatype": "source.datatype",
    "device_args": "source.device_args",
    "rate": "source.sample_rate_hz",
    "freq": "source.center_freq_hz",
    "gain": "source.gain_db",
    "loop": "source.loop",
    "endpoint": "publish.endpoint",
}
# flags that only some source kinds read: given with another kind, they would be silently ignored
_RUN_FLAG_KINDS = {
    "path": ("sigmf", "raw"),
    "datatype": ("raw",),
    "loop": ("sigmf", "raw"),
    "device_args": ("soapy",),
    "gain": ("soapy",),
    "rate": ("soapy", "raw", "synth"),  # a SigMF recording carries its own
    "freq": ("soapy", "raw", "synth"),
}


def cmd_run(args: argparse.Namespace) -> int:
    from rfstream.daemon import run_daemon

    # Recordings and the synthesiser are paced like the live source they stand in for: unpaced,
    # the reader outruns processing and nearly every chunk would be shed.
    cfg = _load(args, _RUN_FLAGS, {"source.realtime": True})
    check_run_source(cfg, args)
    return run_daemon(cfg, config_path=args.config)


def check_run_source(cfg: Config, args: argparse.Namespace) -> None:
    """The source ``run`` will read is fully chosen, and no flag given is one it would ignore."""
    kind = cfg.source.kind
    for attr, kinds in _RUN_FLAG_KINDS.items():
        value = getattr(args, attr, None)
        if value is not None and value is not False and kind not in kinds:
            flag = "--" + attr.replace("_", "-")
            readers = " or ".join(f'"{k}"' for k in kinds)
            raise ConfigError(
                f'run: {flag} is read only by source.kind {readers}, but source.kind is "{kind}"; '
                f"add --source {kinds[0]}"
            )
    if kind in ("sigmf", "raw") and not cfg.source.path:
        raise ConfigError(
            f'run: source.kind is "{kind}" but source.path is empty; give the recording with --path FILE, '
            "or choose another source with --source sigmf|raw|synth|soapy (source.kind)"
        )


def cmd_synth(args: argparse.Namespace) -> int:
    from rfstream.runner import progress_callback
    from rfstream.sources.synth import synthesize

    _check_synthesis(args.rate, args.duration, "synth")
    with progress_callback("synth", enabled=_interactive(args)) as progress:
        meta = synthesize(
            args.out,
            sample_rate_hz=args.rate,
            duration_s=args.duration,
            seed=args.seed,
            center_freq_hz=args.freq,
            num_signals=args.signals,
            progress=progress,
        )
    if not args.quiet:
        from rfstream.sources.sigmf import read_annotations

        n = len(read_annotations(meta))
        print(
            f"wrote {meta} and its .sigmf-data: {args.duration:g} s at {args.rate / 1e6:g} MS/s, {n} annotated signals"
        )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from rfstream.eval import (
        clip_to_frames,
        score_run,
        select_truth,
        split_by_snr,
        widening_note,
        widening_stats,
    )
    from rfstream.runner import collect_run
    from rfstream.sources.raw import datatype_from_extension
    from rfstream.sources.sigmf import read_annotations

    raw_flags = [flag for flag in ("rate", "datatype", "freq") if getattr(args, flag) is not None]
    if raw_flags or datatype_from_extension(args.capture) is not None:
        flags = ", ".join("--" + f for f in raw_flags)
        given = (
            f" ({flags} {'is a raw-file flag' if len(raw_flags) == 1 else 'are raw-file flags'})"
            if raw_flags
            else ""
        )
        raise InputError(
            f"{args.capture}: eval scores against a SigMF recording's annotations, and raw IQ files carry "
            f"no annotations{given}; give a .sigmf-meta, .sigmf-data or .sigmf recording with annotations"
        )
    cfg = _load(args, _REPLAY_FLAGS, {"publish.endpoint": ""})
    annotations, own = select_truth(
        read_annotations(args.capture, allow_external_dataset=cfg.source.allow_external_dataset)
    )
    if not annotations:
        if own:
            raise InputError(
                f"{args.capture} holds only rfstream's own detections ({len(own)} annotations with "
                'core:generator "rfstream"), no truth to score against'
            )
        raise InputError(f"{args.capture} has no annotations to score against")
    generators = sorted({getattr(a, "generator", "") or "no core:generator" for a in annotations})
    truth_line = f"truth: {len(annotations)} annotations of {args.capture} ({', '.join(generators)})" + (
        f'; left out {len(own)} that rfstream wrote (core:generator "rfstream")' if own else ""
    )
    results, _ = collect_run(cfg, progress=_interactive(args), config_dir=_config_dir(args))
    frames = [r.frame for r in results]
    truth = clip_to_frames(annotations, frames)
    widening = widening_note(truth, frames)
    widened = widening_stats(truth)
    ignored: list[Any] = []
    if args.min_snr is not None:
        # Weaker signals are neither to be found nor false positives when they are.
        truth, ignored = split_by_snr(truth, args.min_snr)
    detections = [d for r in results for d in r.detections]
    report = score_run(truth, detections, groups=[r.detections for r in results], ignore=ignored)
    aware = not args.ignore_labels and any(d.label != "unknown" for d in detections)
    main = report.label_aware if aware else report.label_agnostic
    if args.json:
        out = {
            **main.to_dict(),  # the main P/R/AP report at the top level, as before
            "truth": {
                "path": str(args.capture),
                "annotations": len(annotations),
                "generators": generators,
                "left_out_rfstream": len(own),
                "note": truth_line,
            },
            "widening": {**widened, "note": widening},
            "scores": report.to_dict(),
        }
        print(json.dumps(out, indent=2))
    else:
        print(truth_line)
        print(widening)
        print()
        print(report.to_text(main_label_aware=aware))
    return 0


def cmd_listen(args: argparse.Namespace) -> int:
    from rfstream.sinks.endpoints import check_zmq_endpoint
    from rfstream.sinks.listen import listen, silence_message

    check_zmq_endpoint(args.endpoint, allow_remote=True, key="listen endpoint")  # form and port

    topics = tuple(t.strip() for t in args.topics.split(",") if t.strip())
    received = listen(args.endpoint, topics, count=args.count, timeout_s=args.timeout, json_lines=args.json)
    if received == 0 and args.timeout is not None:
        raise InputError(silence_message(args.endpoint, args.timeout))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    cfg = _load(args, {"chunk_ms": "source.chunk_ms"}, {"publish.endpoint": ""})  # before NumPy loads
    from rfstream.bench import run_bench

    try:
        rates = [finite_float(r) for r in args.rates.split(",") if r.strip()]
    except argparse.ArgumentTypeError as exc:
        raise InputError(f"--rates must be comma-separated sample rates in Hz: {exc}") from None
    if not rates or any(not MIN_SAMPLE_RATE_HZ <= r <= MAX_SAMPLE_RATE_HZ for r in rates):
        raise InputError(
            f"--rates must be sample rates in [{MIN_SAMPLE_RATE_HZ:g}, {MAX_SAMPLE_RATE_HZ:g}] Hz, got {args.rates!r}"
        )
    if not 1 <= args.chunks <= 100_000:
        raise InputError(f"--chunks must lie in [1, 100000], got {args.chunks}")
    if not 0 <= args.peers <= 1000:
        raise InputError(f"--peers must lie in [0, 1000], got {args.peers}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("pipelined", "serial") for m in modes):
        raise InputError(f"--modes must name pipelined and/or serial, got {args.modes!r}")
    if not 0 <= args.replay_s <= 600:
        raise InputError(f"--replay-s must lie in [0, 600], got {args.replay_s:g}")
    if not 0 <= args.paced_s <= 3600:
        raise InputError(f"--paced-s must lie in [0, 3600], got {args.paced_s:g}")
    report = run_bench(
        cfg,
        rates,
        chunks=args.chunks,
        config_dir=_config_dir(args),
        publish=args.publish,
        peers=args.peers,
        modes=modes,
        replay_s=args.replay_s,
        config_path=getattr(args, "config", None),
        paced_s=args.paced_s,
    )
    print(json.dumps(report, indent=2) if args.json else report["table"])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from rfstream.demo import run_demo

    _check_synthesis(args.rate, args.duration, "demo")
    cfg = _load(args, {}, {"publish.endpoint": args.endpoint or ""})
    return run_demo(
        cfg, Path(args.out), rate=args.rate, duration=args.duration, seed=args.seed, quiet=args.quiet
    )


def cmd_devices(args: argparse.Namespace) -> int:
    from rfstream.sources.soapy import format_devices, list_devices

    devices = list_devices(args.args or "")
    print(json.dumps(devices, indent=2) if args.json else format_devices(devices))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from rfstream.sinks.keys import generate_keys

    for path in generate_keys(Path(args.dir), args.name):
        print(f"wrote {path}")
    return 0


# --- the parser -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rfstream",
        description="Real-time RF signal detection: SDR or SigMF in, detections out over ZeroMQ.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"rfstream {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser(
        "run",
        help="run the daemon on the configured source (systemd's entry point)",
        description="Run the daemon until SIGTERM (or the end of a recording without --loop). The source "
        "is source.kind in the config, or --source: soapy (a live SDR, --device-args), sigmf or raw "
        "(a recording, --path; replayed at its own sample rate, as an SDR would deliver it) or synth "
        "(synthetic signals, paced in real time).",
    )
    _add_config_options(p)
    src = p.add_argument_group("source")
    src.add_argument(
        "--source", choices=("sigmf", "raw", "synth", "soapy"), help="what to read (source.kind)"
    )
    src.add_argument("--path", metavar="FILE", help="sigmf/raw: the recording (source.path)")
    src.add_argument("--datatype", help="raw: SigMF datatype, e.g. cu8, ci16_le, cf32_le (source.datatype)")
    src.add_argument("--loop", action="store_true", help="sigmf/raw: replay again and again (source.loop)")
    src.add_argument("--device-args", help="soapy: SoapySDR device args, e.g. driver=rtlsdr")
    src.add_argument("--rate", type=finite_float, help="soapy, raw, synth: sample rate in Hz")
    src.add_argument("--freq", type=finite_float, help="soapy, raw, synth: centre frequency in Hz")
    src.add_argument("--gain", type=finite_float, help="soapy: gain in dB (< 0: automatic)")
    p.add_argument("--endpoint", help="ZeroMQ PUB endpoint (default tcp://127.0.0.1:5555)")
    p.set_defaults(func=cmd_run)

    p = verbs.add_parser("replay", help="replay a recording through the pipeline")
    _add_replay_options(p)
    _add_config_options(p)
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--realtime", action="store_true", help="pace chunks at the recording's sample rate")
    pace.add_argument(
        "--fast", action="store_true", help="as fast as possible, never dropping a chunk (default)"
    )
    p.add_argument(
        "--loop", action="store_true", help="replay again and again (with --realtime: a live stand-in)"
    )
    p.add_argument("--annotate", metavar="OUT.sigmf-meta", help="write the detections as SigMF annotations")
    p.add_argument("--endpoint", help="ZeroMQ PUB endpoint (default tcp://127.0.0.1:5555)")
    p.add_argument("--no-publish", action="store_true", help="do not open a ZeroMQ socket")
    p.add_argument("--spectrogram", action="store_true", help="also publish the spectrogram topic")
    p.add_argument(
        "--json", action="store_true", help="print each detection as a JSON line on stdout (the wire schema)"
    )
    p.add_argument("-F", dest="output_format", choices=("json",), help="rtl_433 style: -F json is --json")
    p.set_defaults(func=cmd_replay)

    p = verbs.add_parser("demo", help="synthesise a labelled capture, detect, track, score and draw it")
    _add_config_options(p)
    p.add_argument("--out", default="rfstream-demo", help="output directory (default ./rfstream-demo)")
    p.add_argument("--rate", type=finite_float, default=10e6, help="sample rate in Hz (default 10e6)")
    p.add_argument("--duration", type=finite_float, default=2.0, help="seconds (default 2)")
    p.add_argument("--seed", type=int, default=1, help="synthesis seed (default 1)")
    p.add_argument(
        "--endpoint",
        help="also publish the detections, tracks and health over ZeroMQ (PUB) at this endpoint, e.g. "
        "tcp://127.0.0.1:5555; connect the subscriber first (rfstream listen)",
    )
    p.set_defaults(func=cmd_demo)

    p = verbs.add_parser("synth", help="write a labelled synthetic SigMF recording")
    p.add_argument("out", help="output base name (OUT.sigmf-meta + OUT.sigmf-data)")
    p.add_argument("--rate", type=finite_float, default=10e6, help="sample rate in Hz (default 10e6)")
    p.add_argument("--duration", type=finite_float, default=2.0, help="seconds (default 2)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument(
        "--freq", type=finite_float, default=2.44e9, help="centre frequency in Hz (default 2.44e9)"
    )
    p.add_argument(
        "--signals", type=int, default=None, help="number of signal emitters (default: by duration)"
    )
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_synth)

    p = verbs.add_parser("eval", help="score detections against a labelled recording's annotations")
    _add_replay_options(p)
    _add_config_options(p)
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.add_argument("--min-snr", type=finite_float, help="score only annotations with rfstream:snr_db >= this")
    p.add_argument("--ignore-labels", action="store_true", help="match boxes regardless of labels")
    p.set_defaults(func=cmd_eval)

    p = verbs.add_parser("listen", help="print what a ZeroMQ subscriber receives")
    p.add_argument("endpoint", nargs="?", default="tcp://127.0.0.1:5555")
    p.add_argument("--topics", default="detections,tracks,health", help="comma-separated topics")
    p.add_argument("--count", type=int, help="stop after this many messages")
    p.add_argument("--timeout", type=finite_float, help="stop after this many seconds")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_listen)

    p = verbs.add_parser("bench", help="per-stage timings and real-time factor at several sample rates")
    _add_config_options(p)
    p.add_argument("--rates", default="2.4e6,10e6,20e6", help="comma-separated sample rates in Hz")
    p.add_argument("--chunks", type=int, default=20, help="chunks timed per rate (default 20)")
    p.add_argument("--chunk-ms", type=finite_float, help="chunk length in ms (default 200)")
    p.add_argument("--publish", action="store_true", help="include a real ZeroMQ publisher on loopback")
    p.add_argument(
        "--peers",
        type=int,
        default=5,
        help="rounds of the spectrogram-vs-scipy/torch rows and per-stage CPU costs (0 = skip; default 5)",
    )
    p.add_argument(
        "--modes",
        default="pipelined,serial",
        help="runtimes to time at each rate, alternating: pipelined, serial (default both, with their ratio)",
    )
    p.add_argument(
        "--replay-s",
        type=finite_float,
        default=6.0,
        help="seconds of a generated 20 MS/s ci16 recording to replay as a whole process (0 = skip; default 6)",
    )
    p.add_argument(
        "--paced-s",
        type=finite_float,
        default=10.0,
        help="seconds of a live run paced at 20 MS/s, shedding and degrading as the daemon would "
        "(0 = skip; default 10)",
    )
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.set_defaults(func=cmd_bench)

    p = verbs.add_parser("devices", help="list the SDRs SoapySDR sees, with their ranges")
    p.add_argument("--args", help="SoapySDR device filter, e.g. driver=rtlsdr")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_devices)

    p = verbs.add_parser("keys", help="ZeroMQ CURVE keys for remote publishing")
    keys = p.add_subparsers(dest="keys_command", metavar="{generate}", required=True)
    g = keys.add_parser("generate", help="write a key pair NAME.key and NAME.key_secret (0600) into DIR")
    g.add_argument("dir", metavar="DIR", help="directory for the key files (created if missing)")
    g.add_argument("--name", default="server", help="key name (default server)")
    g.set_defaults(func=cmd_keys)

    _add_plugin_verb(
        verbs, "train", "rfstream.train.cli", "train the shipped models (needs the 'train' extra)"
    )
    _add_plugin_verb(verbs, "models", "rfstream.detect.models_cli", "list, inspect and build models")
    _add_plugin_verb(
        verbs, "proxy", "rfstream.sinks.proxy", "forward many rfstream publishers to one endpoint (XSUB/XPUB)"
    )
    _add_plugin_verb(
        verbs, "render", "rfstream.render_cli", "draw a recording (and detections) as a PNG", config=True
    )
    _add_plugin_verb(verbs, "view", "rfstream.web.view_cli", "live web viewer of a publisher (needs 'web')")
    _add_plugin_verb(
        verbs,
        "serve",
        "rfstream.web.serve_cli",
        "detection over HTTP: POST /api/detect (needs 'web')",
        config=True,
    )
    for p in (parser, *verbs.choices.values()):
        p._negative_number_matcher = _NEGATIVE_NUMBER  # see _NEGATIVE_NUMBER
    return parser


def _add_plugin_verb(verbs: Any, name: str, module: str, help_text: str, *, config: bool = False) -> None:
    """A verb whose options live in its own module (``add_arguments`` / ``run``).

    With ``config``, the verb also takes the configuration options and its ``run(args, cfg)``
    gets the loaded Config; the module's ``config_overrides(args)`` maps its own flags to keys.
    """
    import importlib

    p = verbs.add_parser(name, help=help_text)
    try:
        mod = importlib.import_module(module)
    except ImportError:
        p.set_defaults(func=lambda _args: _missing(name))
        return
    mod.add_arguments(p)
    if config:
        _add_config_options(p)
        p.set_defaults(func=lambda args: mod.run(args, _load(args, {}, mod.config_overrides(args))))
    else:
        p.set_defaults(func=mod.run)


def _missing(name: str) -> int:
    raise FatalError(f"'rfstream {name}' is not available in this installation")


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; an unknown flag is reported with the verb's own usage and a did-you-mean."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        verb = _innermost_parser(parser, args)
        options = [s for action in verb._actions for s in action.option_strings]
        flag = next((u.partition("=")[0] for u in unknown if u.startswith("-")), "")
        close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6) if flag else []
        hint = f" (did you mean {close[0]}?)" if close else ""
        verb.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    return args


def _innermost_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the verb the user chose, e.g. ``rfstream keys generate``."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return parser
        chosen = getattr(args, subs[0].dest, None)
        if chosen not in subs[0].choices:
            return parser
        parser = subs[0].choices[chosen]


def main(argv: Sequence[str] | None = None) -> int:
    from rfstream.runtime.budget import limit_blas

    # OpenBLAS reads its thread count once, when NumPy loads (building the parser may load it):
    # one thread, as the thread budget wants (runtime.blas_threads other than 1 needs threadpoolctl).
    limit_blas(1)
    argv = list(sys.argv[1:] if argv is None else argv)
    if _is_daemon(argv):
        # before anything slow: a SIGHUP or SIGTERM while the models load must not kill the daemon
        from rfstream.runtime.signals import install_early

        install_early()
    try:
        return _main(argv)
    finally:
        from rfstream.runtime.signals import release_early

        release_early()  # a verb that failed before its daemon adopted the handlers


def _is_daemon(argv: Sequence[str]) -> bool:
    """``run``, or ``replay --realtime``: the verbs that run rfstream.daemon and handle SIGHUP."""
    verb = next((a for a in argv if not a.startswith("-")), None)
    return verb == "run" or (verb == "replay" and "--realtime" in argv)


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    try:
        from rfstream.runtime.logging import configure_logging

        configure_logging("auto", "info")  # verbs that load a config set their own
        return int(args.func(args) or 0)
    except RfstreamError as exc:
        print(f"rfstream: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rfstream: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rfstream listen | head`
        return 0
    except Exception as exc:  # a bug of ours: one line, the traceback only when asked for
        if _debug_requested(args):
            import traceback

            traceback.print_exc()
        detail = _one_line(f"{type(exc).__name__}: {exc}")
        print(f"rfstream: error: internal error: {detail} (please report it)", file=sys.stderr)
        return INTERNAL_ERROR_EXIT


INTERNAL_ERROR_EXIT = 70  # EX_SOFTWARE


def _one_line(text: str) -> str:
    """An error message as one line: libraries sometimes put the cause on the next lines."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip()) or "(no message)"


def _debug_requested(args: argparse.Namespace) -> bool:
    import os

    level = getattr(args, "log_level", None) or os.environ.get("RFSTREAM_RUNTIME__LOG_LEVEL", "")
    return str(level).lower() == "debug"


if __name__ == "__main__":
    sys.exit(main())
