"""What stands between the network and the routes: Host and Origin checks, the token, body limits,
one-line errors without server paths.

The app is meant for 127.0.0.1. When it is bound elsewhere a token is required on every ``/api`` request
(``Authorization: Bearer``, ``X-Pointseg-Token``, the cookie set by opening the printed URL, or
``?token=``). On loopback the ``Host`` header must name the loopback exactly (defeats DNS rebinding), and
state-changing requests carrying a foreign ``Origin`` are refused (no CORS, no CSRF). Request bodies are
counted as they arrive and cut off at the route's limit, whatever ``Content-Length`` says or omits.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
import sqlite3

from starlette.exceptions import HTTPException

log = logging.getLogger("pointseg.server")

#: the names a loopback-bound server answers to (the one set: ``serve`` and the Host check both use it)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

#: JSON bodies are small (the default of ``pointseg.limits.MAX_JSON_BODY_BYTES``)
MAX_JSON_BYTES = 16 * 1024 * 1024
#: an upload request carries at most this many files (the page sends eight at a time)
MAX_FILES_PER_UPLOAD = 8

_HOST = re.compile(r"^(?P<name>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?$")
#: absolute POSIX or Windows paths inside a message (``/home/u/p/images/x.png``, ``C:\data\x.png``)
_PATH = re.compile(r"(?:[A-Za-z]:\\|\\\\|/)(?:[^\s'\"/\\:]+[/\\])+(?P<name>[^\s'\"/\\:]*)")


def host_name(header: str) -> str | None:
    """The host of a ``Host`` header, without the port, or None when the header is malformed
    (``[::1]evil.com``, ``a b``, ``host:port:extra``, a port above 65535)."""
    m = _HOST.match(header or "")
    if m is None or (m.group("port") is not None and int(m.group("port")) > 65535):
        return None
    return m.group("name").lower()


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS


def token_matches(given: str | None, token: str) -> bool:
    """Constant-time comparison that refuses, never crashes on, non-ASCII input."""
    if given is None:
        return False
    return secrets.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8"))


def scrub_paths(text: str) -> str:
    """Replace absolute paths in a message by their last part: no route returns a server path."""
    return _PATH.sub(lambda m: m.group("name") or "(folder)", text)


def public_message(exc: BaseException) -> str:
    """One line for the user: the exception's message, without server paths."""
    if isinstance(exc, OSError) and exc.strerror:
        name = str(exc.filename).replace("\\", "/").rsplit("/", 1)[-1] if exc.filename else ""
        text = f"{name}: {exc.strerror}" if name else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return scrub_paths(line)[:500]


def storage_error(exc: sqlite3.Error) -> tuple[int, str]:
    """HTTP status and one line for an SQLite failure the user can act on."""
    text = str(exc).lower()
    if "full" in text:
        return 507, "the disk holding the project is full; free some space and try again (nothing was lost)"
    if "readonly" in text or "read-only" in text:
        return 503, "the project folder is read-only; make it writable and try again"
    if "locked" in text or "busy" in text:
        return 503, "the project database is busy; try again"
    return 503, f"the project database failed: {public_message(exc)}"


def error_body(status: int, message: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps({"detail": scrub_paths(message)}).encode()
    return body, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


async def send_error(send, status: int, message: str) -> None:
    body, headers = error_body(status, message)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(HTTPException):
    """Raised by the counting ``receive`` the moment a body passes its limit (an HTTPException, so the
    framework's body parsing passes it on unchanged and the client gets a 413)."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than this route's limit of {limit:,} bytes")
        self.limit = limit

    def __str__(self) -> str:
        return str(self.detail)


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
CSP = (b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
       b"connect-src 'self'; frame-ancestors 'none'")


class GuardMiddleware:
    """Pure ASGI middleware (no buffering): Host/Origin/token checks, streaming body limits, security
    headers, and a last-resort one-line 500 that keeps the connection usable."""

    def __init__(self, app, *, token: str | None, loopback: bool, upload_limit: int,
                 json_limit: int = MAX_JSON_BYTES, upload_paths: tuple[str, ...] = ("/api/images",)):
        self.app = app
        self.token = token
        self.loopback = loopback
        self.upload_limit = upload_limit
        self.json_limit = json_limit
        self.upload_paths = upload_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            return await send_error(send, *refusal)
        limit = self.upload_limit if (scope["method"] == "POST" and scope["path"] in self.upload_paths) \
            else self.json_limit
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return await send_error(send, 413, f"request body of {int(length):,} bytes is larger than this "
                                               f"route's limit of {limit:,} bytes")
        set_cookie = self._cookie_to_set(scope)
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = list(SECURITY_HEADERS)
                names = {k.lower() for k, _ in message.get("headers", [])}
                if b"content-security-policy" not in names:
                    extra.append((b"content-security-policy", CSP))
                if set_cookie:
                    extra.append((b"set-cookie", f"pointseg_token={self.token}; HttpOnly; Path=/; "
                                                 f"SameSite=Strict".encode()))
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except BodyTooLarge as exc:
            if not started:
                await send_error(guarded_send, 413, str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug must not reset the client's connection
            log.exception("unexpected error on %s", scope.get("path"))
            if not started:
                await send_error(guarded_send, 500, f"internal error: {type(exc).__name__}: "
                                                    f"{public_message(exc)}")

    def _refusal(self, scope, headers: dict) -> tuple[int, str] | None:
        host = host_name(headers.get("host", ""))
        if self.loopback and (host is None or not is_loopback(host)):
            return 421, "unexpected Host header; open the app at http://127.0.0.1 as printed"
        origin = headers.get("origin")
        if origin and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            if origin != f"{scope.get('scheme', 'http')}://{headers.get('host', '')}":
                return 403, "cross-origin requests are refused (no CORS)"
        if scope["method"] == "OPTIONS":
            return 405, "no CORS: cross-origin requests are refused"
        path = scope["path"]
        if self.token is not None and (path.startswith("/api/") or path == "/api"):
            if not token_matches(_token_from(headers, scope), self.token):
                return 401, "missing or wrong access token; open the URL with ?token=… printed by pointseg serve"
        return None

    def _cookie_to_set(self, scope) -> bool:
        if self.token is None or scope["path"] != "/":
            return False
        return token_matches(_query(scope).get("token"), self.token)


def _query(scope) -> dict:
    from urllib.parse import parse_qs

    raw = scope.get("query_string", b"").decode("latin-1")
    return {k: v[0] for k, v in parse_qs(raw).items() if v}


def _token_from(headers: dict, scope) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if headers.get("x-pointseg-token"):
        return headers["x-pointseg-token"]
    cookies = headers.get("cookie", "")
    for part in cookies.split(";"):
        name, _, value = part.strip().partition("=")
        if name == "pointseg_token" and value:
            return value
    return _query(scope).get("token")
