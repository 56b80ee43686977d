"""Serving an aiohttp application so that whoever reaches the port cannot exhaust the process:
the web page (stages.sinks.web) and any server swapstream adds after it.

- At most `max_connections` open connections. A new one beyond that takes the place of the
  oldest connection that is not in a request (idle keep-alive, or one still trickling its
  headers); when every one is in a request, the new one is closed at once. Each connection is a
  file descriptor: 1100 idle ones used to exhaust a 1024-file limit and end the session (EMFILE
  in whichever thread opened a file next).
- A connection must complete a request's headers within `idle_timeout` seconds of opening (or
  of its last response): aiohttp's keep-alive timer, which also runs before the first request.
- Request lines and header fields are limited to 8 KiB (aiohttp answers 400 beyond that).

`GuardedServer(app).start(sock)` on the server's event loop; `stop()` closes it and every
connection. `busy(request)` is its middleware: it marks the connection as in a request.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web

TOKEN_HEADER = "X-Swapstream-Token"
UPLOAD_HEADER = "X-Swapstream-Upload"  # a non-JSON POST (an upload) must carry it: no cross-site form can
MAX_CONNECTIONS = 128
IDLE_TIMEOUT_S = 10.0
MAX_HEADER_BYTES = 8190
log = logging.getLogger("swapstream.web")


def _open(conn) -> bool:
    transport = getattr(conn, "transport", None)
    return transport is not None and not transport.is_closing()


def _alive(conn, age: float) -> bool:
    """Open, or made so recently that asyncio has not connected it yet (a burst of accepts)."""
    if getattr(conn, "transport", None) is None:
        return age < 5.0 and getattr(conn, "_manager", True) is not None
    return _open(conn)


class _Refuse(asyncio.Protocol):
    """A connection over the cap with no idle one to replace: 503 and closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        try:
            transport.write(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                            b"Content-Length: 0\r\n\r\n")
        finally:
            transport.close()


class GuardedServer:
    """An aiohttp Application served with a connection cap and an idle timeout (module docstring)."""

    def __init__(self, app: web.Application, max_connections: int = MAX_CONNECTIONS,
                 idle_timeout: float = IDLE_TIMEOUT_S) -> None:
        self.app, self.max_connections, self.idle_timeout = app, max_connections, idle_timeout
        self.runner: web.AppRunner | None = None
        self.refused = 0  # connections closed at once (all others in a request)
        self.evicted = 0  # idle connections closed to make room for a new one
        self._server: asyncio.AbstractServer | None = None
        self._busy: dict[object, int] = {}  # connection (RequestHandler) -> requests in progress
        self._conns: dict[object, float] = {}  # connections made, oldest first -> when

    async def start(self, sock: socket.socket, ssl=None) -> None:
        """Serve on `sock` (listening, non-blocking); `ssl`: an ssl.SSLContext for https."""
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                    keepalive_timeout=self.idle_timeout, max_line_size=MAX_HEADER_BYTES,
                                    max_field_size=MAX_HEADER_BYTES)
        await self.runner.setup()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._connection, sock=sock, backlog=128, ssl=ssl,
                                                ssl_handshake_timeout=self.idle_timeout if ssl else None)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def open_connections(self) -> int:
        """Connections open now (not counting those closing)."""
        if self.runner is None or self.runner.server is None:
            return 0
        return sum(_open(c) for c in self.runner.server.connections)

    def _connection(self) -> asyncio.BaseProtocol:
        """The protocol of a new connection (asyncio calls this on accept, and a burst of accepts
        before any of them is registered with aiohttp: hence our own list, pending ones included)."""
        now = time.monotonic()
        self._conns = {c: t for c, t in self._conns.items() if _alive(c, now - t)}
        if len(self._conns) >= self.max_connections:
            idle = next((c for c in self._conns if _open(c) and not self._busy.get(c)), None)
            if idle is None:
                self.refused += 1
                return _Refuse()
            self.evicted += 1
            idle.transport.abort()  # its descriptor is closed on the loop's next turn
            del self._conns[idle]
        conn = self.runner.server()
        self._conns[conn] = now
        return conn

    @web.middleware
    async def busy(self, request: web.Request, handler) -> web.StreamResponse:
        """Middleware: the request's connection is not idle while the request runs."""
        conn = request.protocol
        self._busy[conn] = self._busy.get(conn, 0) + 1
        try:
            return await handler(request)
        finally:
            left = self._busy.get(conn, 1) - 1
            if left > 0:
                self._busy[conn] = left
            else:
                self._busy.pop(conn, None)


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only: localhost, 127.0.0.0/8 or ::1."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def access_guard(token: str | None, loopback: bool, port: Callable[[], int], command: str):
    """The middleware every swapstream page's server runs first (docs/security.md):

    - with a token (any address but loopback), every request carries it, as ?token=... or the
      X-Swapstream-Token header: 403 otherwise, 400 for a non-ASCII one;
    - bound to loopback, the Host header must name a loopback host (no DNS rebinding): 403;
    - every POST is JSON, or carries the X-Swapstream-Upload header (a file upload): a cross-site
      form can send neither (415);
    - responses are never cached, never framed, and leak no referrer.
    `port()` gives the port for the message; `command` names what printed the URL."""

    @web.middleware
    async def guard(request: web.Request, handler) -> web.StreamResponse:
        if token is not None:
            given = request.query.get("token") or request.headers.get(TOKEN_HEADER, "")
            if not given.isascii():  # a token is ASCII; anything else is malformed, not a 500
                log.debug("web: 400 for a non-ASCII token from %s", request.remote)
                raise web.HTTPBadRequest(text=f"swapstream: the token is ASCII; open the URL that "
                                              f"`{command}` printed\n")
            if not hmac.compare_digest(given.encode(), token.encode()):
                raise web.HTTPForbidden(text=f"swapstream: this page needs its token; open the URL that "
                                             f"`{command}` printed (it ends in ?token=...)\n")
        if loopback:
            try:
                host = urlsplit(f"//{request.host}").hostname or ""
            except ValueError:  # "Host: [zz]": malformed, not a 500
                log.debug("web: 400 for a malformed Host header from %s", request.remote)
                raise web.HTTPBadRequest(text="swapstream: malformed Host header\n") from None
            if not is_loopback(host):
                raise web.HTTPForbidden(text=f"swapstream: open this page as http://127.0.0.1:{port()}/\n")
        if request.method == "POST" and request.content_type != "application/json" \
                and not request.headers.get(UPLOAD_HEADER):
            raise web.HTTPUnsupportedMediaType(text="swapstream: send JSON (application/json)\n")
        response = await handler(request)
        response.headers.update({"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                                 "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                                 "Cross-Origin-Resource-Policy": "same-origin"})
        return response

    return guard
