"""The command line of scenegen."""

from __future__ import annotations

import argparse
import time

from . import DENSITIES, LAYOUTS, MODULATIONS, generate_scene
from .channel import RECEIVERS
from .families import FAMILY


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scenegen", description="write one labelled wideband SigMF scene")
    p.add_argument("--out", help="output base name (OUT.sigmf-meta + OUT.sigmf-data)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=10e6, help="sample rate in S/s (default 10e6)")
    p.add_argument("--duration", type=float, default=2.0, help="seconds (default 2)")
    p.add_argument("--freq", type=float, default=915e6, help="centre frequency in Hz (default 915e6)")
    p.add_argument("--density", choices=sorted(DENSITIES), help="default: drawn from the seed")
    p.add_argument("--layout", choices=LAYOUTS, help="default: drawn from the seed")
    p.add_argument("--receiver", choices=RECEIVERS, help="default: drawn from the seed")
    p.add_argument("--types", help="comma-separated fine labels to draw from (default: all)")
    p.add_argument("--list", action="store_true", help="list the modulation types and their families")
    args = p.parse_args(argv)
    if args.list:
        for name in sorted(MODULATIONS):
            mod = MODULATIONS[name]
            print(f"{name:16s} {FAMILY[name]:7s} {mod.activity:11s} {mod.description}")
        return 0
    if not args.out:
        p.error("--out is required")
    types = tuple(t.strip() for t in args.types.split(",") if t.strip()) if args.types else None
    started = time.monotonic()
    try:
        s = generate_scene(
            args.out,
            seed=args.seed,
            sample_rate_hz=args.rate,
            duration_s=args.duration,
            center_freq_hz=args.freq,
            density=args.density,
            layout=args.layout,
            receiver=args.receiver,
            types=types,
        )
    except (ValueError, OSError) as exc:
        print(f"scenegen: error: {exc}")
        return 2
    print(
        f"wrote {s.meta_path}: {s.annotations} annotations from {s.transmitters} transmitters "
        f"({s.density}, {s.layout}, {s.receiver} receiver, {s.clipped_fraction:.2%} clipped) "
        f"in {time.monotonic() - started:.1f} s"
    )
    return 0
