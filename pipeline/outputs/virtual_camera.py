"""--virtual-camera: a camera device that meeting apps can pick."""

from __future__ import annotations

from swapstream.pipeline.outputs import LiveOutput


def check(value, cfg) -> None:
    from swapstream.stages.sinks.virtualcam import check_virtual_camera

    check_virtual_camera(value or None)


def build(value, ctx):
    from swapstream.stages.sinks.virtualcam import VirtualCameraSink

    return VirtualCameraSink(value or None, ctx.info.fps)


OUTPUT = LiveOutput(
    "virtual_camera", "--virtual-camera",
    {"nargs": "?", "const": "", "metavar": "DEVICE",
     "help": "a virtual camera meeting apps can pick (v4l2loopback on Linux, OBS Virtual Camera on "
             "Windows/macOS); optional device, e.g. /dev/video10"},
    build, check, order=20)
