"""`--window`: the live output in an OpenCV window, with a statistics overlay and key controls.

Keys: s swap on/off, d direction a2b/b2a, b face boxes, o overlay, q or Esc quit (closing the
window quits too). The overlay shows fps out/in, latency p50/p95, dropped frames and faces.
It runs on the runner's main thread (main_thread): macOS draws windows only from there.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from swapstream.core.errors import ConfigError
from swapstream.core.packet import FramePacket
from swapstream.stages.base import Sink
from swapstream.stages.sinks.controls import Controls
from swapstream.stages.sinks.overlay import stats_lines, stats_panel

TITLE = "swapstream live"


class WindowSink(Sink):
    """Shows each frame ((H, W, 3) uint8 RGB) it gets; reads keys between frames."""

    name = "window"
    keeps_every_frame = False  # a slow display skips frames, it never slows the others
    main_thread = True

    def __init__(self, controls: Controls, snapshot: Callable[[], dict], title: str = TITLE) -> None:
        self.controls, self.snapshot, self.title = controls, snapshot, title
        self._open = False
        self.shown = 0

    def setup(self) -> None:
        try:
            # resizable, aspect kept, no toolbar (Qt's would squeeze the video into less room)
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
        except cv2.error as err:
            raise ConfigError(f"--window: OpenCV cannot open a window here ({str(err).splitlines()[-1]}); "
                              "use --serve to watch in a browser") from None
        self._open = True

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        for p in batch:
            frame = p.frame
            if self.controls.state()["overlay"]:
                frame = stats_panel(frame, stats_lines(self.snapshot()))
            if not self.shown:  # open at the video's own size; the user may resize it
                cv2.resizeWindow(self.title, frame.shape[1], frame.shape[0])
            cv2.imshow(self.title, np.ascontiguousarray(frame[..., ::-1]))  # OpenCV wants BGR
            self.shown += 1
            self._keys()
        return batch

    def idle(self) -> None:
        if self._open:
            self._keys()

    def _keys(self) -> None:
        key = cv2.waitKey(1)
        if key >= 0:
            self.controls.key(chr(key & 0xFF))
        try:
            if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                self.controls.act("quit")  # the user closed the window
        except cv2.error:
            self.controls.act("quit")

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass
