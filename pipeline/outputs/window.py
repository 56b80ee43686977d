"""--window: an OpenCV window with a statistics overlay and the keyboard controls."""

from __future__ import annotations

import os
import sys

from swapstream.core.errors import ConfigError
from swapstream.pipeline.outputs import LiveOutput
from swapstream.stages.sinks.controls import HELP


def display_available() -> bool:
    """Whether an OpenCV window can open here: a display, and an OpenCV built with a GUI."""
    linux = sys.platform.startswith("linux")
    if linux and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    import cv2

    gui = [ln for ln in cv2.getBuildInformation().splitlines() if ln.strip().startswith("GUI:")]
    return not gui or "NONE" not in gui[0].upper()


def check(value, cfg) -> None:
    if not display_available():
        raise ConfigError("--window: no display here (DISPLAY is not set, or OpenCV has no GUI); use "
                          "--serve to watch in a browser, or --virtual-camera / --stream")


def build(value, ctx):
    from swapstream.stages.sinks.window import WindowSink

    return WindowSink(ctx.controls, ctx.snapshot)


OUTPUT = LiveOutput(
    "window", "--window", {"action": "store_true",
                           "help": "an OpenCV window with a statistics overlay"},
    build, check, order=10, default=display_available, default_value=True, hint=HELP)
