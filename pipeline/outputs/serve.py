"""--serve: a web page with the video, statistics and controls (WebRTC)."""

from __future__ import annotations

import socket

from swapstream.core.errors import ConfigError
from swapstream.pipeline.outputs import LiveOutput

DEFAULT_SERVE = "127.0.0.1:8080"


def parse_serve(text: str) -> tuple[str, int]:
    """'[HOST:]PORT' -> (host, port); the host defaults to 127.0.0.1; port 0: any free port."""
    host, _, port = str(text).rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"--serve {text!r} is not [HOST:]PORT (e.g. 8080 or 0.0.0.0:8080)")
    return host, int(port)


def check(value, cfg) -> None:
    from swapstream.stages.sinks.web import listen

    host, port = parse_serve(value)
    listen(host, port).close()  # in use, not an address here, privileged
    tls(host, cfg)  # a certificate that does not load, before the camera opens


def tls(host: str, cfg):
    """The page's https set-up (stages.sinks.tls.Tls), or None for plain http: https with
    --tls-cert/--tls-key, and off loopback when the page is the camera (browsers give the camera
    to secure pages only; a self-signed certificate kept in the cache folder)."""
    from swapstream.stages.sinks.web import is_loopback, lan_address

    camera = cfg.camera == "browser"
    if not (cfg.tls_cert or cfg.tls_key or (camera and not is_loopback(host))):
        return None
    from swapstream.engines.cache import cache_root
    from swapstream.stages.sinks.tls import TlsSettings, server_context

    hosts = [lan_address(), socket.gethostname()] if host in ("", "0.0.0.0", "::") else [host]
    return server_context(TlsSettings(cfg.tls_cert, cfg.tls_key), cache_root(), hosts)


def build(value, ctx):
    from swapstream.stages.sinks.web import WebSettings, WebSink

    host, port = parse_serve(value)
    camera = None if ctx.inbox is None else (ctx.info.width, ctx.info.height, ctx.info.fps)
    t = tls(host, ctx.cfg)
    settings = WebSettings(host, port, audio=ctx.has_audio, camera=camera,
                           tls=None if t is None else t.context,
                           fingerprint=t.fingerprint if t is not None and t.self_signed else None)
    return WebSink(settings, ctx.controls, ctx.snapshot, ctx.inbox)


OUTPUT = LiveOutput(
    "serve", "--serve",
    {"nargs": "?", "const": DEFAULT_SERVE, "metavar": "[HOST:]PORT",
     "help": f"a web page with the video, statistics and controls (default {DEFAULT_SERVE}; any other "
             "address requires the token the printed URL carries; with --camera browser the page sends "
             "its camera, over https off loopback)"},
    build, check, audio=True, order=40, default=lambda: True, default_value=DEFAULT_SERVE)
