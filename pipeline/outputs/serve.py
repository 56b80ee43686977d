"""--serve: a web page with the video, statistics and controls (WebRTC)."""

from __future__ import annotations

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

    listen(*parse_serve(value)).close()  # in use, not an address here, privileged


def build(value, ctx):
    from swapstream.stages.sinks.web import WebSettings, WebSink

    host, port = parse_serve(value)
    return WebSink(WebSettings(host, port, audio=ctx.has_audio), ctx.controls, ctx.snapshot)


OUTPUT = LiveOutput(
    "serve", "--serve",
    {"nargs": "?", "const": DEFAULT_SERVE, "metavar": "[HOST:]PORT",
     "help": f"a web page with the video, statistics and controls (default {DEFAULT_SERVE}; any other "
             "address requires the token the printed URL carries)"},
    build, check, audio=True, order=40, default=lambda: True, default_value=DEFAULT_SERVE)
