#!/usr/bin/env python3
"""A minimal rfstream subscriber: pyzmq + msgpack only, no rfstream import.

    pip install pyzmq msgpack
    python examples/subscriber.py tcp://127.0.0.1:5555 --topics detections tracks

Keeps its own table of live tracks (a ``snapshot`` message replaces it, events
update it) and notices dropped chunks from gaps in ``seq``. The wire format is
described in docs/protocol.md.
"""

from __future__ import annotations

import argparse
import sys

import msgpack
import zmq

SUPPORTED_VERSIONS = (1, 2)  # 2: one fused box per signal, with presence / alternatives / group_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint", nargs="?", default="tcp://127.0.0.1:5555")
    parser.add_argument("--topics", nargs="*", default=["detections", "tracks", "health"])
    parser.add_argument("--count", type=int, default=0, help="stop after this many messages (0: never)")
    parser.add_argument(
        "--timeout", type=float, default=0.0, help="stop after this many idle seconds (0: never)"
    )
    args = parser.parse_args(argv)

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.linger = 0
    sock.connect(args.endpoint)
    for topic in args.topics:
        sock.subscribe(topic.encode())

    live: dict[int, dict] = {}  # track_id -> track
    last_seq = None
    received = 0
    try:
        while args.count <= 0 or received < args.count:
            if not sock.poll(int(args.timeout * 1000) if args.timeout > 0 else None):
                break
            topic_raw, payload_raw = sock.recv_multipart()
            topic = topic_raw.decode()
            msg = msgpack.unpackb(payload_raw, raw=False)
            received += 1
            if msg.get("v") not in SUPPORTED_VERSIONS:
                print(f"{topic}: schema v{msg.get('v')} is not one this reader knows; skipped")
                continue
            if topic == "detections":
                if last_seq is not None and msg["seq"] != last_seq + 1:
                    print(f"  ({msg['seq'] - last_seq - 1} chunk(s) not received)")
                last_seq = msg["seq"]
                for d in msg["detections"]:
                    # v2: runner-up labels with their probabilities (v1 has none)
                    others = ", ".join(f"{k} {v:.2f}" for k, v in d.get("alternatives", {}).items())
                    print(
                        f"chunk {msg['seq']}: {d['label']} at {d['f_low_hz'] / 1e6:.4f}-{d['f_high_hz'] / 1e6:.4f} MHz, "
                        f"{d['t_start_s']:.3f}-{d['t_stop_s']:.3f} s, score {d['score']:.2f} "
                        f"(found by {', '.join(d['found_by'])})" + (f"; or {others}" if others else "")
                    )
            elif topic == "tracks":
                if msg["snapshot"]:
                    live = {t["track_id"]: t for t in msg["tracks"]}
                for event in msg["events"]:
                    t = event["track"]
                    if event["event"] == "end":
                        live.pop(t["track_id"], None)
                    else:
                        live[t["track_id"]] = t
                print(f"live tracks: {sorted(live)}")
            elif topic == "health":
                chunks = msg.get("chunks", {})
                print(f"health: {chunks.get('processed')} chunks processed, {chunks.get('late')} late")
            elif topic == "spectrogram":
                print(f"spectrogram {msg['height']}x{msg['width']} ({len(msg['data'])} bytes)")
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
