"""`rfstream serve` as a client sees it: a real server process, real HTTP requests (urllib).

/api/detect must give exactly what `rfstream replay --annotate` gives on the same recording, and
every bad request a 4xx JSON error that says what was wrong.
"""

from __future__ import annotations

import http.client as http_client
import json
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from web_helpers import ROOT, http, running

from rfstream.errors import ConfigError
from rfstream.sinks.endpoints import check_http_listen
from rfstream.sources.synth import synthesize

pytest.importorskip("aiohttp")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A small synthetic recording, as a pair and as a .sigmf archive."""
    from sigmf import sigmffile

    folder = tmp_path_factory.mktemp("serve")
    meta = synthesize(folder / "small", sample_rate_hz=1e6, duration_s=0.5, seed=3)
    sigmffile.fromfile(str(meta)).archive(str(folder / "small.sigmf"))
    return folder, meta, folder / "small.sigmf"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running("serve", "--listen", "127.0.0.1:0", "--workers", "1", "--max-bytes", "8M") as proc:
        yield proc.url("serve")


@pytest.fixture(scope="module")
def annotated(archive, tmp_path_factory):
    """What `rfstream replay ARCHIVE --annotate OUT` writes."""
    _, _, arch = archive
    out = tmp_path_factory.mktemp("replay") / "dets.sigmf-meta"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rfstream.cli",
            "replay",
            str(arch),
            "--no-publish",
            "--annotate",
            str(out),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


def ours(meta: dict) -> list[dict]:
    return [a for a in meta["annotations"] if a.get("core:generator") == "rfstream"]


def test_detect_json_matches_replay_annotate(server, archive, annotated):
    _, _, arch = archive
    reply = http("POST", f"{server}/api/detect?name=small.sigmf", arch.read_bytes())
    assert reply.status == 200, reply.body
    answer = reply.json()
    expected = ours(annotated)
    assert expected, "the recording should give detections"
    rate = answer["recording"]["sample_rate_hz"]
    got = sorted(
        (
            max(0, round(d["t_start_s"] * rate)),
            d["f_low_hz"],
            d["f_high_hz"],
            d["label"],
            d["score"],
            tuple(d["found_by"]),
        )
        for d in answer["detections"]
    )
    want = sorted(
        (
            a["core:sample_start"],
            a["core:freq_lower_edge"],
            a["core:freq_upper_edge"],
            a["core:label"],
            a["rfstream:score"],
            tuple(a["rfstream:found_by"]),
        )
        for a in expected
    )
    assert got == want
    # the wire schema: every key a `detections` message's detection has
    for key in ("x0", "y1", "t_start_s", "t_stop_utc", "f_low_hz", "score", "label", "detector", "found_by"):
        assert key in answer["detections"][0]
    assert answer["chunks"] == 3 and answer["tracks"]
    assert {"track_id", "label", "f_low_hz", "first_seen_s", "hits", "state"} <= set(answer["tracks"][0])


def test_detect_sigmf_format_is_the_annotate_output(server, archive, annotated):
    _, _, arch = archive
    reply = http("POST", f"{server}/api/detect?format=sigmf", arch.read_bytes())
    assert reply.status == 200, reply.body
    assert reply.json()["annotations"] == annotated["annotations"]
    assert reply.json()["captures"] == annotated["captures"]


def test_detect_raw_iq_with_query_parameters(server, archive):
    _, meta, _ = archive
    data = meta.with_suffix(".sigmf-data").read_bytes()
    reply = http("POST", f"{server}/api/detect?rate=1e6&freq=2.44e9&datatype=cf32_le", data)
    assert reply.status == 200, reply.body
    answer = reply.json()
    assert answer["recording"]["sample_rate_hz"] == 1e6 and answer["detections"]
    assert all(2.435e9 < d["f_low_hz"] < 2.445e9 for d in answer["detections"])


@pytest.mark.parametrize(
    ("query", "body", "status", "needle"),
    [
        ("", b"", 400, "empty body"),
        ("?rate=1e6&freq=1e8&datatype=cx99", b"\0" * 800, 400, "unknown datatype"),
        ("?rate=abc&datatype=cf32_le", b"\0" * 800, 400, "query parameter 'rate'"),
        ("?rate=1e6", b"\0" * 800, 400, "datatype"),
        ("", b"this is not an archive" * 40, 400, "not a SigMF archive"),
        ("?colour=red", b"x", 400, "unknown query parameter"),
        ("?format=xml", b"x", 400, "format"),
    ],
)
def test_bad_requests_get_a_clear_4xx(server, query, body, status, needle):
    reply = http("POST", f"{server}/api/detect{query}", body)
    assert reply.status == status, reply.body
    error = reply.json()
    assert needle.lower() in error["error"].lower() and error["status"] == status
    assert "Traceback" not in reply.body.decode()


def test_truncated_archive_is_a_400(server, archive):
    _, _, arch = archive
    reply = http("POST", f"{server}/api/detect", arch.read_bytes()[:100_000])
    assert reply.status == 400, reply.body
    assert "archive" in reply.json()["error"] and "/tmp" not in reply.json()["error"]


def test_oversize_upload_is_a_413(server):
    reply = http("POST", f"{server}/api/detect?rate=1e6&datatype=cu8", b"\x80" * (9 << 20))
    assert reply.status == 413, reply.body
    assert "--max-bytes" in reply.json()["error"]


def test_health_and_unknown_routes(server):
    health = http("GET", f"{server}/api/health")
    assert health.status == 200
    h = health.json()
    assert h["workers"] == 1 and h["busy"] == 0 and h["detectors"] == ["energy", "frame", "classifier"]
    assert h["limits"]["max_bytes"] == 8 << 20
    missing = http("GET", f"{server}/api/nothing")
    assert missing.status == 404 and missing.json()["error"]
    wrong = http("GET", f"{server}/api/detect")
    assert wrong.status == 405 and wrong.json()["status"] == 405


# --- the listen policy (rfstream/sinks/endpoints.py) ---------------------------------------------------
def test_non_loopback_listen_needs_a_private_token_file(tmp_path):
    with pytest.raises(ConfigError, match="bearer token"):
        check_http_listen("0.0.0.0:8080", token_file=None)
    token = tmp_path / "token"
    token.write_text("s3cret-token-of-some-length\n")
    token.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        check_http_listen("0.0.0.0:8080", token_file=str(token))
    token.chmod(stat.S_IRUSR | stat.S_IWUSR)
    listen = check_http_listen("0.0.0.0:8080", token_file=str(token))
    assert listen.token == "s3cret-token-of-some-length" and listen.port == 8080
    assert check_http_listen("127.0.0.1:0", token_file=None).token is None
    assert check_http_listen("[::1]:9000", token_file=None).host == "::1"
    for bad in ("8080", "localhost:99999", ":80", "host:port"):
        with pytest.raises(ConfigError, match="HOST:PORT"):
            check_http_listen(bad, token_file=None)


def test_a_token_is_required_once_configured(tmp_path):
    token = tmp_path / "token"
    token.write_text("another-token-0123456789")
    token.chmod(0o600)
    with running("serve", "--listen", "127.0.0.1:0", "--workers", "1", "--token-file", str(token)) as proc:
        url = proc.url("serve")
        refused = http("GET", f"{url}/api/health")
        assert refused.status == 401 and "bearer token" in refused.json()["error"]
        wrong = http("GET", f"{url}/api/health", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        ok = http("GET", f"{url}/api/health", headers={"Authorization": "Bearer another-token-0123456789"})
        assert ok.status == 200 and ok.json()["status"] == "ok"
        # a browser: ?token= once sets a same-site cookie and redirects to the address without it
        host, port = url.removeprefix("http://").split(":")
        conn = http_client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", "/api/health?token=another-token-0123456789")
        first = conn.getresponse()
        first.read()
        assert first.status == 302 and first.getheader("Location") == "/api/health"
        cookie = first.getheader("Set-Cookie")
        assert "rfstream_token=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        with_cookie = http("GET", f"{url}/api/health", headers={"Cookie": cookie.split(";")[0]})
        assert with_cookie.status == 200
        assert http("GET", f"{url}/api/health?token=wrong-token-0123456789").status == 401


def test_serve_refuses_a_public_listen_without_a_token():
    proc = subprocess.run(
        [sys.executable, "-m", "rfstream.cli", "serve", "--listen", "0.0.0.0:0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("rfstream: error: ") and "0.0.0.0:0 is not a loopback address" in last
    assert "--token-file" in last


def test_time_duration_and_concurrency_limits():
    """One worker, 1.5 s per request, 10 s recordings: a long request times out (408) while a second
    one is refused at once (429); a recording over the length limit is a 413 before any work."""
    import threading

    rng = np.random.default_rng(0)

    def cu8(seconds: float) -> bytes:
        return rng.integers(120, 136, int(2 * 250e3 * seconds), dtype=np.uint8).tobytes()

    raw = "rate=250e3&freq=433.92e6&datatype=cu8"
    with running(
        "serve", "--listen", "127.0.0.1:0", "--workers", "1", "--max-seconds", "1.5", "--max-duration", "10"
    ) as proc:
        url = proc.url("serve")
        too_long = http("POST", f"{url}/api/detect?{raw}", cu8(12))
        assert too_long.status == 413 and "--max-duration" in too_long.json()["error"]
        replies: list = []
        first = threading.Thread(
            target=lambda: replies.append(http("POST", f"{url}/api/detect?{raw}", cu8(8)))
        )
        first.start()
        deadline = time.time() + 30
        while time.time() < deadline and http("GET", f"{url}/api/health").json()["busy"] == 0:
            time.sleep(0.02)
        second = http("POST", f"{url}/api/detect?{raw}", cu8(1))
        first.join(60)
        assert second.status == 429 and second.headers.get("Retry-After") == "1", second.body
        assert replies and replies[0].status == 408, replies
        assert "--max-seconds" in replies[0].json()["error"]
        health = http("GET", f"{url}/api/health").json()
        assert health["busy"] == 0 and health["requests"]["408"] == 1 and health["requests"]["429"] == 1
