"""What the viewer and the detection service share: JSON errors, bearer tokens, the serve loop.

Every answer that is not a success is a JSON object ``{"error": "...", "status": N}`` with a 4xx
status that names what was wrong; an unexpected exception becomes a 500 with one line
(``internal error: ...``), logged here with its traceback, never sent to the client.

aiohttp is imported here and only here at module level; without the ``web`` extra the
verbs end with ``rfstream: error: ... pip install 'rfstream[web]'``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from rfstream.errors import ConfigError, FatalError, InputError, RfstreamError
from rfstream.sinks.endpoints import HttpListen

try:
    from aiohttp import web
except ImportError:  # the 'web' extra is not installed; require_web() says so
    web = None  # type: ignore[assignment]

__all__ = [
    "TOKEN_COOKIE",
    "error_response",
    "json_response",
    "json_safe",
    "make_app",
    "require_web",
    "serve_forever",
]

log = structlog.get_logger(__name__)

TOKEN_COOKIE = "rfstream_token"
Handler = Callable[[Any], Awaitable[Any]]


def require_web(verb: str) -> None:
    if web is None:
        raise FatalError(f"'rfstream {verb}' needs the web extra: pip install 'rfstream[web]'")


def json_safe(obj: Any) -> Any:
    """A msgpack/health value as strict JSON: NaN/Inf -> null, bytes -> their length, tuples -> lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, bytes | bytearray):
        return f"<{len(obj)} bytes>"
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    return str(obj)


def dumps(obj: Any) -> str:
    return json.dumps(json_safe(obj), separators=(",", ":"), allow_nan=False)


def json_response(obj: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> Any:
    return web.Response(text=dumps(obj), status=status, content_type="application/json", headers=headers)


def error_response(status: int, message: str, *, headers: Mapping[str, str] | None = None) -> Any:
    return json_response({"error": message, "status": status}, status=status, headers=headers)


# --- middlewares -----------------------------------------------------------------------------------
def _errors_middleware() -> Any:
    @web.middleware
    async def errors(request: Any, handler: Handler) -> Any:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:  # redirects and the like pass through
                raise
            message = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
            return error_response(exc.status, message, headers=_keep_headers(exc))
        except (InputError, ConfigError) as exc:
            return error_response(400, str(exc))
        except RfstreamError as exc:
            log.error("request failed", path=request.path, error=str(exc))
            return error_response(500, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours: one line to the client, the traceback to the log
            log.exception("internal error", path=request.path)
            return error_response(500, f"internal error: {type(exc).__name__} (see the server's log)")

    return errors


def _keep_headers(exc: Any) -> dict[str, str]:
    return {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After", "WWW-Authenticate")}


def _auth_middleware(token: str) -> Any:
    """Every request carries ``Authorization: Bearer TOKEN`` (or the cookie a ``?token=`` visit sets)."""
    expected = token.encode()

    @web.middleware
    async def auth(request: Any, handler: Handler) -> Any:
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else ""
        given = given or request.cookies.get(TOKEN_COOKIE, "")
        query = request.query.get("token", "")
        if not given and query and request.method == "GET":
            # a browser cannot send a header on navigation: ?token= once, then a same-site cookie
            given = query
            if hmac.compare_digest(given.encode(), expected):
                target = request.rel_url.with_query({k: v for k, v in request.query.items() if k != "token"})
                response = web.Response(status=302, headers={"Location": str(target)})
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
                return response
        if not given or not hmac.compare_digest(given.encode(), expected):
            return error_response(
                401,
                "this server needs a bearer token: send 'Authorization: Bearer TOKEN' "
                "(a browser: open the page once with ?token=TOKEN)",
                headers={"WWW-Authenticate": 'Bearer realm="rfstream"'},
            )
        return await handler(request)

    return auth


def make_app(listen: HttpListen, *, client_max_size: int = 1 << 20) -> Any:
    """An aiohttp Application with JSON errors and, where the listen policy asks for it, a token check."""
    middlewares = [_errors_middleware()]
    if listen.token:
        middlewares.append(_auth_middleware(listen.token))
    return web.Application(middlewares=middlewares, client_max_size=client_max_size)


# --- running -----------------------------------------------------------------------------------------
def serve_forever(
    app: Any, listen: HttpListen, *, what: str, on_ready: Callable[[str], None] | None = None
) -> int:
    """Serve ``app`` until SIGINT/SIGTERM; 0 on a clean stop. A port in use is one ``rfstream: error:`` line."""
    return asyncio.run(_serve(app, listen, what=what, on_ready=on_ready))


async def _serve(app: Any, listen: HttpListen, *, what: str, on_ready: Callable[[str], None] | None) -> int:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, listen.host, listen.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"--listen {listen.host}:{listen.port} cannot be served: {exc.strerror or exc}"
            ) from exc
        port = _bound_port(runner, listen.port)
        url = HttpListen(listen.host, port, listen.token).url
        log.info(f"{what} listening", url=url, token=bool(listen.token))
        if on_ready is not None:
            on_ready(url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info(f"{what} stopping")
    finally:
        await runner.cleanup()
    return 0


def _bound_port(runner: Any, requested: int) -> int:
    """The port the OS picked for ``:0`` (the tests' way to get a free one)."""
    for address in runner.addresses:
        return int(address[1])
    return requested
