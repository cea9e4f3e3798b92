#!/usr/bin/env python3
"""Soak test: the daemon against the rfstreamtest SoapySDR driver in real time, for minutes.

    python scripts/soak.py --minutes 10 --rate 10e6 --out soak.json

Builds the test driver (tests/soapy_driver), starts ``rfstream run`` in a
subprocess on it, and every ``--interval`` seconds samples the daemon's
resident memory (``/proc/PID/status`` VmRSS) and its latest ``health``
message (a real ZeroMQ SUB socket). At the end it stops the daemon with
SIGTERM and writes a JSON report: RSS start/end/max and its slope (least
squares, after a warm-up), end-to-end latency percentiles over time, whether
``received == processed + shed + in_flight`` held in every sample and at
shutdown, chunk and sample counts, degrade levels seen, and the host load.

Exit status 0 when the daemon stayed up, exited 0, and the accounting was
exact throughout; 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) in MB per hour."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mt) * (v - mv) for t, v in points) / var * 3600.0


def _latest_health(sock: zmq.Socket) -> dict[str, Any] | None:
    latest = None
    while sock.poll(0):
        _, payload = sock.recv_multipart()
        latest = msgpack.unpackb(payload)
    return latest


def _exact(h: dict[str, Any]) -> bool:
    s = h["samples"]
    return s["received"] == s["processed"] + s["shed"] + s["in_flight"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=10e6, help="sample rate in S/s (default 10e6)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    p.add_argument(
        "--warmup", type=float, default=60.0, help="seconds left out of the RSS slope (default 60)"
    )
    p.add_argument("--out", default="soak.json", help="JSON report (default soak.json)")
    p.add_argument("--log", default="soak.log", help="the daemon's log (default soak.log)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to rfstream run")
    args = p.parse_args(argv)

    built = subprocess.run(
        ["sh", str(ROOT / "tests/soapy_driver/build.sh")], capture_output=True, text=True, check=True
    )
    module = Path(built.stdout.strip().splitlines()[-1])
    port = _free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SOAPY_SDR_PLUGIN_PATH": str(module.parent),
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    cmd = [
        sys.executable, "-m", "rfstream.cli", "run",
        "--set", "source.kind=soapy",
        "--set", "source.device_args=driver=rfstreamtest,serial=0001",
        "--rate", str(args.rate), "--freq", "433.92e6",
        "--endpoint", endpoint, "--log-format", "json",
        *(x for pair in args.set for x in ("--set", pair)),
    ]  # fmt: skip
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"health")
    sub.connect(endpoint)
    log_file = open(args.log, "wb")  # noqa: SIM115 - held for the daemon's lifetime
    daemon = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    started = time.monotonic()
    samples: list[dict[str, Any]] = []
    print(f"soak: pid {daemon.pid}, {args.rate / 1e6:g} MS/s for {args.minutes:g} min, health on {endpoint}")
    try:
        end = started + args.minutes * 60.0
        while time.monotonic() < end and daemon.poll() is None:
            time.sleep(min(args.interval, max(0.0, end - time.monotonic())))
            if daemon.poll() is not None:
                break
            h = _latest_health(sub)
            t = round(time.monotonic() - started, 1)
            rec: dict[str, Any] = {
                "t_s": t,
                "rss_mb": round(_rss_mb(daemon.pid), 1),
                "load1": os.getloadavg()[0],
            }
            if h is not None:
                e2e = h["latency_ms"].get("end_to_end", {})
                rec.update(
                    chunks=h["chunks"],
                    samples=h["samples"],
                    exact=_exact(h),
                    e2e_ms=e2e,
                    total_ms=h["latency_ms"].get("total", {}),
                    rtf=h["realtime_factor"],
                    degrade=h["degrade_level"],
                    device=h["device_state"],
                    source=h.get("source", {}),
                    publish=h.get("publish", {}),
                )
            samples.append(rec)
            print(json.dumps({k: rec.get(k) for k in ("t_s", "rss_mb", "rtf", "degrade", "exact", "e2e_ms")}))
    finally:
        stop_t = time.monotonic()
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        try:
            rc = daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            rc = daemon.wait()
        stop_s = time.monotonic() - stop_t
        log_file.close()
        sub.close(linger=0)
        ctx.term()

    final = None
    for line in Path(args.log).read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "stopped":
            final = rec
    with_health = [s for s in samples if "samples" in s]
    rss = [(s["t_s"], s["rss_mb"]) for s in samples]
    steady = [(t, v) for t, v in rss if t >= args.warmup] or rss
    last = with_health[-1] if with_health else {}
    report = {
        "rate_hz": args.rate,
        "minutes": args.minutes,
        "samples_taken": len(samples),
        "exit_code": rc,
        "stop_s": round(stop_s, 3),
        "rss_mb": {
            "start": rss[0][1] if rss else None,
            "end": rss[-1][1] if rss else None,
            "max": max(v for _, v in rss) if rss else None,
            "after_warmup_start": steady[0][1] if steady else None,
            "slope_mb_per_hour_after_warmup": round(_slope_per_hour(steady), 2),
        },
        "e2e_latency_ms_over_time": [{"t_s": s["t_s"], **s["e2e_ms"]} for s in with_health],
        "processing_ms_over_time": [{"t_s": s["t_s"], **s["total_ms"]} for s in with_health],
        "accounting_exact_every_sample": all(s["exact"] for s in with_health) if with_health else False,
        "accounting_exact_at_shutdown": bool(final and final.get("accounting_exact")),
        "final": final,
        "chunks": last.get("chunks"),
        "samples": last.get("samples"),
        "source": last.get("source"),
        "publish": last.get("publish"),
        "degrade_levels_seen": sorted({s["degrade"] for s in with_health}),
        "realtime_factor_last": last.get("rtf"),
        "host_load1": {
            "min": min(s["load1"] for s in samples) if samples else None,
            "max": max(s["load1"] for s in samples) if samples else None,
            "cpus": os.cpu_count(),
        },
        "timeline": samples,
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    summary = {k: report[k] for k in ("exit_code", "stop_s", "rss_mb", "accounting_exact_every_sample",
                                      "accounting_exact_at_shutdown", "chunks", "degrade_levels_seen")}  # fmt: skip
    print(json.dumps(summary, indent=2))
    ok = rc == 0 and report["accounting_exact_every_sample"] and report["accounting_exact_at_shutdown"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
