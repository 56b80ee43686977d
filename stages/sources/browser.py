"""`--camera browser`: the camera (and microphone) of the browser that opened the live page.

    browser getUserMedia ──WebRTC──> server's event loop ──Inbox.put──> newest frame ──> BrowserSource
                                                                        (drops stale)    (capture thread)

The page sends its camera over the same WebRTC connection that brings the swapped video back
(stages.sinks.webrtc.Viewers, stages.sinks.web). The server's event loop decodes each frame and
hands it to the Inbox, which keeps only the newest: a frame that arrives while the previous one
was not taken yet replaces it and is counted as dropped, so nothing ever queues behind a busy
swap and the returned stream cannot build lag.

- One sender at a time: the Inbox holds the seat (`claim` / `release`); a second page that offers
  its camera is told "busy" by the server (it may still watch).
- Frames of another size than asked (a phone held upright sends 480x640) are scaled to fit the
  session's size, aspect kept, with black bars: outputs (a recording) keep one size.
- Audio from the page's microphone goes to `on_audio` as AudioChunks ((C, N) float32 in [-1, 1],
  48 kHz), stamped with its arrival time, so the live runner releases it with its video frame.
- While no page sends, packets() waits (the session stays up; the seat is free for the next page).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import av
import cv2
import numpy as np

from swapstream.core.audio import AUDIO_RATE, LIVE_TIME_BASE, AudioChunk
from swapstream.core.packet import FramePacket
from swapstream.core.video import to_rgb
from swapstream.stages.base import Source
from swapstream.stages.sources.camera import CaptureInfo

BROWSER = "browser"
DEFAULT_SIZE = (640, 480)
DEFAULT_FPS = 30.0
WAIT_S = 0.05  # how often a waiting packets() looks whether the source was closed


class Inbox:
    """The hand-over from the server's event loop to the capture thread: the newest camera frame,
    the sender's seat, and the sender's audio. Every method may be called from any thread."""

    def __init__(self, on_audio: Callable[[AudioChunk], None] | None = None) -> None:
        self.on_audio = on_audio
        self._cond = threading.Condition()
        self._frame: av.VideoFrame | None = None
        self._arrived = 0.0
        self._from: str | None = None  # the sender of the frame waiting
        self.received = 0  # frames that arrived from the browser
        self.dropped = 0  # frames replaced before the capture thread took them
        self.last_arrival: float | None = None  # time.monotonic() of the newest frame
        self.sender: str | None = None  # the id of the page that holds the seat
        self.closed = False
        self._resampler: av.AudioResampler | None = None

    # ------------------------------------------------------------------------------ the seat
    def claim(self, sender: str) -> bool:
        """Take the seat for `sender`; False when another page holds it."""
        with self._cond:
            if self.sender is not None and self.sender != sender:
                return False
            self.sender, self.last_arrival = sender, None
            return True

    def release(self, sender: str) -> bool:
        """Free the seat if `sender` holds it (its frame, not taken yet, goes with it)."""
        with self._cond:
            if self.sender != sender:
                return False
            self.sender, self._frame = None, None
            self._cond.notify_all()
            return True

    # ----------------------------------------------------------------------------- the video
    def put(self, frame: av.VideoFrame, arrived: float | None = None, sender: str | None = None) -> None:
        """Make `frame` (any av.VideoFrame) from `sender` the newest; the one it replaces, if not
        taken, is dropped."""
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame, self._arrived = frame, time.monotonic() if arrived is None else arrived
            self._from = sender
            self.received += 1
            self.last_arrival = self._arrived
            self._cond.notify_all()

    def take(self, timeout: float) -> tuple[av.VideoFrame, float, str | None] | None:
        """The newest frame not taken yet, its arrival time and its sender; None after `timeout` s
        or when closed."""
        with self._cond:
            if self._frame is None and not self.closed:
                self._cond.wait(timeout)
            if self._frame is None:
                return None
            frame, self._frame = self._frame, None
            return frame, self._arrived, self._from

    def close(self) -> None:
        """Wake a waiting take() for good (the session ends)."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    # ----------------------------------------------------------------------------- the audio
    def put_audio(self, frame: av.AudioFrame, arrived: float | None = None) -> None:
        """The sender's microphone (any av.AudioFrame) to on_audio, resampled to 48 kHz float."""
        if self.on_audio is None:
            return
        arrived = time.monotonic() if arrived is None else arrived
        if self._resampler is None:
            layout = "mono" if frame.layout.nb_channels == 1 else "stereo"
            self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=AUDIO_RATE)
        frame.pts = None  # a new sender restarts its timestamps; the resampler needs none
        for out in self._resampler.resample(frame):
            self.on_audio(AudioChunk(np.ascontiguousarray(out.to_ndarray(), np.float32), AUDIO_RATE, arrived))


def fit(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (height, width, 3) uint8: scaled to fit, aspect kept, centred on black."""
    h, w = rgb.shape[:2]
    if (w, h) == (width, height):
        return rgb
    scale = min(width / w, height / h)
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if (sw, sh) == (width, height):
        return small
    out = np.zeros((height, width, 3), np.uint8)
    x, y = (width - sw) // 2, (height - sh) // 2
    out[y:y + sh, x:x + sw] = small
    return out


class BrowserSource(Source):
    """A live source fed by a page's camera through an Inbox (see the module docstring).
    width/height/fps: what the page is asked for (0: 640x480 at 30 fps); frames come out at
    width x height."""

    name = "capture"
    live = True

    def __init__(self, inbox: Inbox, width: int = 0, height: int = 0, fps: float = 0.0) -> None:
        self.inbox = inbox
        self.width, self.height = (width, height) if width and height else DEFAULT_SIZE
        self.fps = fps or DEFAULT_FPS
        self.info: CaptureInfo | None = None
        self.measured_fps: float | None = None
        self._closed = False

    def open(self) -> CaptureInfo:
        """Nothing to open here: the page connects once the server runs. Audio: the page sends its
        microphone (or silence when it is refused), so the outputs get an audio stream."""
        self.info = CaptureInfo(self.width, self.height, self.fps, "the browser's camera", BROWSER,
                                self.inbox.on_audio is not None)
        return self.info

    def packets(self) -> Iterator[FramePacket]:
        """FramePackets as the page's frames arrive (capture_time: the arrival, time.monotonic()
        seconds; pts: microseconds since open). Waits while no page sends; ends when closed."""
        if self.info is None:
            raise RuntimeError("BrowserSource.open() has not been called")
        opened = time.monotonic()
        index, last_pts, prev, sender = 0, -1, None, None
        first_second: list[float] = []
        while not self._closed and not self.inbox.closed:
            got = self.inbox.take(WAIT_S)
            if got is None:
                continue
            frame, arrived, came_from = got
            if came_from != sender:  # a new page: its faces are new tracks
                sender, prev = came_from, None
            rgb = fit(to_rgb(frame, 0), self.width, self.height)
            pts = max(int(round((arrived - opened) * 1e6)), last_pts + 1)
            yield FramePacket(index, pts, LIVE_TIME_BASE, rgb, follows=prev, capture_time=arrived)
            prev, last_pts, index = index, pts, index + 1
            if self.measured_fps is None:
                first_second.append(arrived)
                if first_second[-1] - first_second[0] >= 1.0:
                    self.measured_fps = (len(first_second) - 1) / (first_second[-1] - first_second[0])

    def wake(self) -> None:
        """End a waiting packets() (the runner stops)."""
        self._closed = True
        self.inbox.close()

    def close(self) -> None:
        self.wake()
