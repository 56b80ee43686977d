"""`--serve [HOST:]PORT`: the live output as a web page: the video (and sound) over WebRTC, the live
statistics, and the controls (swap, direction, face boxes, overlay, quit; keys s d b o q).

    GET  /          the page (stages/data/live.html)
    GET  /stats     the runner's statistics snapshot + {"controls": state, "viewers": n, "audio": bool}
    POST /control   {"action": "swap"|"direction"|"boxes"|"overlay"|"quit", "value": optional} -> state
    POST /offer     {"sdp", "type": "offer"} -> the server's answer {"sdp", "type", "id"}
    POST /bye       {"id": viewer id} a viewer leaves (the page sends it when it is closed)

An aiohttp server on its own event loop in a daemon thread; the WebRTC parts are in
swapstream.stages.sinks.webrtc. process() and audio() only hand data over to that loop and return at once.

Security (docs/security.md): bound to a loopback address (127.0.0.1, ::1, localhost) the page
needs no token, but requests must name a loopback host (no DNS rebinding) and every POST must be
JSON (no cross-site forms; /bye too). Bound to any other address (0.0.0.0 included) every request
must carry the token, as ?token=... or the X-Swapstream-Token header; the URL printed carries it.
Viewer ids are random (a page cannot guess another's). Malformed requests (a non-ASCII token, a
body nested too deep, an offer with more than one video or audio section, a control value that
is not a JSON boolean) get 400 and one debug log line, never a traceback. Connections are capped
and timed out (stages.sinks.server); a viewer that never completes WebRTC is dropped.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from swapstream.core.errors import OutputError, SwapstreamError
from swapstream.core.packet import FramePacket
from swapstream.stages.base import Sink
from swapstream.stages.sinks.controls import ACTIONS, Controls
from swapstream.stages.sinks.server import GuardedServer, access_guard, is_loopback
from swapstream.stages.sinks.webrtc import AudioConverter, BusyError, Hub, Viewers

MAX_VIEWERS = 8
START_TIMEOUT_S = 10.0
CAMERA_BITS_PER_PIXEL = 0.1  # a sending page caps its camera at this (kbps in /stats); it starts there too
ASK_MARGIN = 1.2  # a sending page's camera is capped at this much more than the swap's output rate
ASK_MIN_FPS = 10.0
log = logging.getLogger("swapstream.web")


@dataclass
class WebSettings:
    """host/port to listen on (port 0: any free one); audio: the source has audio, send it too;
    token: what every request must carry (None: a random one when host is not loopback).
    camera: (width, height, fps) the page's camera is asked for when the session's camera is the
    browser (--camera browser), else None. tls: an ssl.SSLContext to serve https with (always off
    loopback when the page sends its camera: browsers give the camera to secure pages only);
    fingerprint: its certificate's SHA-256, shown to the user."""

    host: str = "127.0.0.1"
    port: int = 8080
    audio: bool = False
    token: str | None = None
    camera: tuple[int, int, float] | None = None
    tls: object | None = None
    fingerprint: str | None = None


def listen(host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on host:port; OutputError when that cannot be."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise OutputError(f"--serve {host}:{port}: {host!r} is not an address of this machine "
                          f"({err.strerror}); use 127.0.0.1, 0.0.0.0 or one of its IP addresses") from None
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":  # on Windows SO_REUSEADDR would let two servers share the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and ipaddress.ip_address(addr[0]).is_unspecified:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "::" takes IPv4 too
        sock.bind(addr)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as err:
        sock.close()
        where = f"--serve {host}:{port}:"
        if err.errno in (errno.EADDRINUSE, 10048):
            raise OutputError(f"{where} port {port} is in use (another swapstream or web server?); "
                              "pick another with --serve PORT") from None
        if err.errno in (errno.EADDRNOTAVAIL, 10049):
            raise OutputError(f"{where} {host} is not an address of this machine; use 127.0.0.1, 0.0.0.0 "
                              "or one of its IP addresses") from None
        if err.errno in (errno.EACCES, 10013):
            raise OutputError(f"{where} port {port} needs more privileges; pick one above 1023") from None
        raise OutputError(f"{where} port {port} cannot be listened on ({err.strerror or err}); "
                          "pick another with --serve PORT") from None
    return sock


def lan_address() -> str:
    """This machine's address on its network (where a 0.0.0.0 server is reached); 127.0.0.1 if none."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.254.254.254", 9))  # UDP: nothing is sent, the route picks the address
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def page_url(host: str, port: int, token: str | None, https: bool = False) -> str:
    """Where a page served on host:port is opened: an unspecified host (0.0.0.0, ::) as this
    machine's network address, IPv6 in brackets, the token in the query when there is one."""
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = lan_address()
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if https else 'http'}://{host}:{port}/" + (f"?token={token}" if token else "")


def quiet_logs() -> None:
    """aiohttp, aiortc and aioice log at WARNING and above, unless SWAPSTREAM_VERBOSE is set."""
    if not os.environ.get("SWAPSTREAM_VERBOSE"):
        for name in ("aiohttp", "aiortc", "aioice"):
            logging.getLogger(name).setLevel(logging.WARNING)


class WebSink(Sink):
    """The web page output; see the module docstring. `snapshot()` returns the live statistics
    (LiveStats.snapshot()); `url` is where to open the page (the real port after setup() when
    the port asked for was 0)."""

    name = "web"
    keeps_every_frame = False
    wants_audio = True

    def __init__(self, settings: WebSettings, controls: Controls, snapshot: Callable[[], dict],
                 inbox=None) -> None:
        self.settings, self.controls, self.snapshot = settings, controls, snapshot
        self.inbox = inbox  # stages.sources.browser.Inbox: a page may send its camera into it
        self.loopback = is_loopback(settings.host)
        self.token = settings.token or (None if self.loopback else secrets.token_urlsafe(18))
        self.port = settings.port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._hub: Hub | None = None
        self._viewers: Viewers | None = None
        self._server: GuardedServer | None = None
        self._convert = AudioConverter()
        self._close_lock = threading.Lock()
        self._page = ""
        self.connections = 0

    @property
    def fingerprint(self) -> str | None:
        """The SHA-256 fingerprint of a self-signed certificate the page is served with, else None."""
        return self.settings.fingerprint

    @property
    def url(self) -> str:
        return page_url(self.settings.host, self.port, self.token, self.settings.tls is not None)

    # ------------------------------------------------------------------------- sink contract
    def setup(self) -> None:
        """Listen and serve; returns once the server accepts connections (a few ms).
        OutputError when host:port cannot be listened on."""
        if self._thread is not None:
            return
        quiet_logs()
        self._page = resources.files("swapstream.stages.sinks").joinpath("data/live.html").read_text("utf-8")
        sock = listen(self.settings.host, self.settings.port)
        self.port = sock.getsockname()[1]
        loop = self._loop = asyncio.new_event_loop()
        self._hub = Hub(loop)
        self._viewers = Viewers(self._hub, self.settings.audio)
        self._thread = threading.Thread(target=self._serve, args=(loop,), name="web-server", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(sock), loop).result(START_TIMEOUT_S)
        except BaseException:
            sock.close()
            self.close()
            raise

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        """Make the last packet's frame ((H, W, 3) uint8 RGB) the one viewers get next (a copy
        while anyone watches). Returns at once: encoding happens in the server's thread."""
        if self._hub is not None and batch:
            self._hub.publish(batch[-1].frame, time.monotonic())
        return batch

    def audio(self, chunk) -> None:
        """Send an AudioChunk (samples (C, N) float32 in [-1, 1]) to every viewer, if audio is on."""
        hub = self._hub
        if self.settings.audio and hub is not None and hub.audio_tracks:
            hub.push_audio(self._convert(chunk.samples, chunk.rate))

    def flush(self) -> list[FramePacket]:
        self.close()
        return []

    def abort(self) -> None:
        self.close()

    def close(self) -> None:
        """Close every viewer's connection and stop the server; idempotent, any thread."""
        with self._close_lock:
            loop, thread, self._loop = self._loop, self._thread, None
            if loop is None or loop.is_closed():
                return
            try:
                asyncio.run_coroutine_threadsafe(self._stop(), loop).result(5.0)
            except Exception as err:  # noqa: BLE001 - closing goes on regardless
                log.debug("web: stopping the server: %r", err)
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None and thread is not threading.current_thread():
                thread.join(5.0)

    def report(self) -> dict:
        return {"url": self.url, "viewers": self.connections}

    # --------------------------------------------------------------------------- the server
    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        if not os.environ.get("SWAPSTREAM_VERBOSE"):
            loop.set_exception_handler(lambda _loop, ctx: log.debug("web: %s", ctx.get("message")))
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _start(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=256 * 1024)
        self._server = GuardedServer(app)
        guard = access_guard(self.token, self.loopback, lambda: self.port, "swapstream live")
        app.middlewares.extend([self._server.busy, guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/control", self._control)
        app.router.add_post("/offer", self._offer)
        app.router.add_post("/bye", self._bye)
        await self._server.start(sock, self.settings.tls)

    async def _stop(self) -> None:
        if self._viewers is not None:
            await self._viewers.close()
        if self._server is not None:
            await self._server.stop()
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in rest:  # what the closed connections left behind
            t.cancel()
        if rest:
            await asyncio.wait(rest, timeout=1.0)

    async def _index(self, _request: web.Request) -> web.Response:
        return web.Response(text=self._page, content_type="text/html")

    async def _stats(self, _request: web.Request) -> web.Response:
        try:
            snap = dict(self.snapshot())
        except Exception as err:  # noqa: BLE001 - the page still shows the controls
            log.debug("web: snapshot failed: %r", err)
            snap = {}
        snap.update(controls=self.controls.state(), viewers=len(self._viewers.peers),
                    audio=self.settings.audio, camera=self._camera_state(snap))
        return web.json_response(_finite(snap), dumps=lambda o: json.dumps(o, default=str))

    async def _control(self, request: web.Request) -> web.Response:
        body = await _json(request)
        action = body.get("action")
        if action not in ACTIONS:
            return web.json_response({"error": f"unknown action {action!r}; one of {', '.join(ACTIONS)}"},
                                     status=400)
        try:  # handlers (the swap stage) may take a moment: off the event loop
            state = await asyncio.get_running_loop().run_in_executor(None, self.controls.act, action,
                                                                     body.get("value"))
        except SwapstreamError as err:
            return web.json_response({"error": str(err)}, status=400)
        return web.json_response(state)

    def _camera_state(self, snap: dict) -> dict | None:
        """For the page: what its camera is asked for, whether the seat is taken, and `ask_fps`:
        the rate the swap keeps up with (ASK_MARGIN above what came out over the last seconds,
        at least ASK_MIN_FPS, at most --fps), which the sending page caps its camera at, so
        frames that would only be dropped are neither encoded nor sent nor decoded."""
        if self.settings.camera is None or self.inbox is None:
            return None
        w, h, fps = self.settings.camera
        ask = fps
        out = snap.get("fps_out")
        if self.inbox.sender is not None and isinstance(out, (int, float)) and out > 0 \
                and (snap.get("seconds") or 0) > 3:
            ask = float(min(fps, max(ASK_MIN_FPS, round(out * ASK_MARGIN))))
        return {"width": w, "height": h, "fps": fps, "ask_fps": ask, "kbps": self._camera_kbps(),
                "busy": self.inbox.sender is not None,
                "received": self.inbox.received, "dropped": self.inbox.dropped}

    def _camera_kbps(self) -> int | None:
        """The sending page's camera cap (kbit/s), which its camera also starts at: CAMERA_BITS_PER_PIXEL
        at the size and rate it is asked for; None when the session's camera is not the browser's."""
        if self.settings.camera is None:
            return None
        w, h, fps = self.settings.camera
        return max(1, round(w * h * fps * CAMERA_BITS_PER_PIXEL / 1000))

    async def _offer(self, request: web.Request) -> web.Response:
        body = await _json(request)
        if body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
            return web.json_response({"error": 'send {"sdp": ..., "type": "offer"}'}, status=400)
        sends = body.get("camera") is True
        if sends and self.inbox is None:
            return web.json_response({"error": "this session's camera is not the browser's; start it with "
                                               "`swapstream live --camera browser`"}, status=400)
        if len(self._viewers.peers) >= MAX_VIEWERS:
            return web.json_response({"error": f"{MAX_VIEWERS} viewers already; close one"}, status=503)
        try:
            start = self._camera_kbps() if sends else None  # the page starts its camera at its cap
            answer = await self._viewers.answer(body["sdp"], "offer", self.inbox if sends else None, start)
        except BusyError as err:
            return web.json_response({"error": str(err), "busy": True}, status=409)
        except ValueError as err:
            return web.json_response({"error": str(err)}, status=400)
        self.connections += 1
        return web.json_response(answer)

    async def _bye(self, request: web.Request) -> web.Response:
        pid = (await _json(request)).get("id")
        if isinstance(pid, str):
            await self._viewers.drop(pid)
        return web.Response(status=204)


def _finite(obj):
    """`obj` with NaN and infinities as None (JSON has no NaN: the page could not parse it)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


async def _json(request: web.Request) -> dict:
    """The request's JSON object; 400 when it is not one."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[..." nested deep
        body = None
    if not isinstance(body, dict):
        log.debug("web: 400 for a body that is not a JSON object (%s %s)", request.method, request.path)
        raise web.HTTPBadRequest(text="swapstream: the body must be a JSON object\n")
    return body
