"""`--virtual-camera [DEVICE]`: the live output as a camera other programs (Zoom, Meet, Teams,
OBS, Discord) can pick, through pyvirtualcam.

- Linux: a v4l2loopback device. Without one: one line with the fix and exit 2:
  `sudo modprobe v4l2loopback exclusive_caps=1 card_label=swapstream` (Chrome and apps built on
  it list the device only with exclusive_caps=1).
- Windows and macOS: OBS's virtual camera (install OBS Studio and start its Virtual Camera once).
- No audio: meeting apps take the microphone directly (pick your real microphone there).
- The width and height are kept even (odd ones are padded by repeating the edge), as the
  YUV formats the apps read need.
"""

from __future__ import annotations

import sys

import numpy as np

from swapstream.core.errors import ConfigError
from swapstream.core.packet import FramePacket
from swapstream.stages.base import Sink
from swapstream.stages.devices import loopback_devices

MODPROBE = "sudo modprobe v4l2loopback exclusive_caps=1 card_label=swapstream"


def check_virtual_camera(device: str | None) -> None:
    """ConfigError naming the fix when no virtual camera device can be written here."""
    try:
        import pyvirtualcam  # noqa: F401
    except ImportError:
        raise ConfigError("--virtual-camera needs pyvirtualcam: pip install pyvirtualcam") from None
    if sys.platform.startswith("linux"):
        devices = loopback_devices()
        if not devices:
            raise ConfigError(f"--virtual-camera: no v4l2loopback device on this machine; create one with "
                              f"`{MODPROBE}` (install v4l2loopback-dkms first if modprobe cannot find it)")
        if device and device not in [d.spec for d in devices]:
            here = ", ".join(f"{d.spec} ({d.name})" for d in devices)
            raise ConfigError(f"--virtual-camera {device}: not a v4l2loopback device; these are: {here}")


class VirtualCameraSink(Sink):
    """Sends each frame ((H, W, 3) uint8 RGB) to the virtual camera; opened at the first frame,
    when the size is known."""

    name = "virtual-camera"
    keeps_every_frame = False

    def __init__(self, device: str | None = None, fps: float = 30.0) -> None:
        self.device, self.fps = device, fps or 30.0
        self._cam = None
        self.sent = 0

    def setup(self) -> None:
        check_virtual_camera(self.device)

    def _open(self, width: int, height: int) -> None:
        import pyvirtualcam

        try:
            self._cam = pyvirtualcam.Camera(width, height, self.fps, fmt=pyvirtualcam.PixelFormat.RGB,
                                            device=self.device)
        except RuntimeError as err:
            hint = f"`{MODPROBE}`" if sys.platform.startswith("linux") else \
                "install OBS Studio and start its Virtual Camera once"
            raise ConfigError(f"--virtual-camera: cannot open the virtual camera ({err}); {hint}") from None

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        for p in batch:
            frame = p.frame
            ph, pw = frame.shape[0] % 2, frame.shape[1] % 2
            if ph or pw:
                frame = np.pad(frame, ((0, ph), (0, pw), (0, 0)), mode="edge")
            if self._cam is None:
                self._open(frame.shape[1], frame.shape[0])
            self._cam.send(np.ascontiguousarray(frame))
            self.sent += 1
        return batch

    def close(self) -> None:
        if self._cam is not None:
            self._cam.close()
            self._cam = None
