"""Live sources: a camera, a network stream, or a video file played in real time.

    --camera 0 | /dev/video2 | "FaceTime HD Camera" | rtsp://... | udp://... | clip.mp4 | lavfi:testsrc

- Cameras through PyAV: Linux `v4l2` (an index N means /dev/videoN), macOS `avfoundation`,
  Windows `dshow`. The camera is asked for MJPEG at the requested size and rate (uncompressed
  YUYV falls to ~5 fps at 720p on many webcams over USB 2); the rate is then measured over the
  first second of frames, and that figure is reported, not the one the driver claims.
- Any URL PyAV opens (rtsp, udp, http, srt where the build has it), and `FORMAT:ARGS` for any
  FFmpeg input device (`lavfi:testsrc=size=640x480:rate=30`, `x11grab::0.0`).
- A file (or lavfi) plays at its own rate in real time, so a recorded clip stands in for a
  camera; with `loop` it repeats (each repeat starts its face tracks afresh).

Each FramePacket carries its capture time (time.monotonic() seconds; a camera's own timestamp
where it gives one, a file frame's due time) and pts = microseconds since the source opened
(time base 1/1000000), so outputs keep the real timing of a camera whose rate wobbles. `follows`
is the previous frame's index: the runner rewrites it when it drops frames.

A file's or stream's audio is decoded too and handed to `on_audio` as AudioChunks, paced like
the video. End of a file: the iteration ends (exit 0). A camera or stream that stops or fails:
SourceLost (exit 1).
"""

from __future__ import annotations

import errno
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import av
import cv2
import numpy as np

from swapstream.core.audio import AUDIO_RATE, LIVE_TIME_BASE, AudioChunk
from swapstream.core.errors import ConfigError, InputError, SourceLost
from swapstream.core.packet import FramePacket
from swapstream.core.paths import masked
from swapstream.core.video import quarter_turns, to_rgb
from swapstream.stages.base import Source
from swapstream.stages.devices import Camera, describe, list_cameras, v4l2_query
from swapstream.stages.sources.file import open_error

TIME_BASE = LIVE_TIME_BASE


def parse_size(text: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720); ConfigError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not m or int(m.group(1)) < 16 or int(m.group(2)) < 16:
        raise ConfigError(f"size {text!r} is not WIDTHxHEIGHT (e.g. 1280x720, each at least 16)")
    return int(m.group(1)), int(m.group(2))


@dataclass
class CaptureSettings:
    """camera: what to open (see the module docstring); width/height/fps: what to ask a camera
    for (0: its default; frames of another size are scaled to width x height); loop: repeat a
    file; audio: decode the source's own audio; timeouts in seconds for network sources."""

    camera: str = "0"
    width: int = 0
    height: int = 0
    fps: float = 0.0
    loop: bool = False
    audio: bool = True
    open_timeout: float = 10.0
    read_timeout: float = 5.0


@dataclass
class Target:
    """What --camera resolved to. kind: device | url | file | input (an FFmpeg input format)."""

    kind: str
    url: str
    format: str | None
    label: str
    camera: Camera | None = None

    @property
    def paced(self) -> bool:
        """Read at its own rate by us (a file or generator), not delivered in real time."""
        return self.kind == "file" or (self.kind == "input" and self.format == "lavfi")


def _device_format() -> str:
    if sys.platform == "darwin":
        return "avfoundation"
    if sys.platform == "win32":
        return "dshow"
    return "v4l2"


def _no_camera(spec: str, cameras: list[Camera]) -> InputError:
    here = "; ".join(describe(cameras)[:1] if not cameras else
                     [f"{c.spec} ({c.name})" for c in cameras])
    return InputError(f"no camera, file or stream named {spec!r}; cameras here: {here}. Pass one of "
                      "those, a video file, or a URL (see `swapstream live --list-cameras`)")


def resolve(spec: str, cameras: Callable[[], list[Camera]] = list_cameras) -> Target:
    """Turn a --camera value into a Target; InputError naming what exists when nothing matches."""
    spec = str(spec).strip()
    if "://" in spec:
        return Target("url", spec, None, masked(spec))  # the label is printed: no password in it
    m = re.fullmatch(r"([a-z0-9_]{2,}(?:,[a-z0-9_]+)?):(.*)", spec)
    if m and m.group(1) in av.formats_available and not os.path.exists(spec):
        return Target("input", m.group(2), m.group(1), spec)
    if os.path.isfile(spec):
        return Target("file", spec, None, spec)
    fmt = _device_format()
    if fmt == "v4l2":
        path = f"/dev/video{spec}" if spec.isdigit() else spec
        if path.startswith("/dev/"):
            if not os.path.exists(path):
                raise _no_camera(spec, cameras())
            return Target("device", path, "v4l2", path)
        cams = cameras()
        by_name = [c for c in cams if c.name.lower() == spec.lower()]
        if by_name:
            c = by_name[0]
            return Target("device", c.spec, "v4l2", f"{c.spec} ({c.name})", c)
        raise _no_camera(spec, cams)
    cams = cameras()
    if fmt == "avfoundation":
        match = [c for c in cams if c.spec == spec or c.name.lower() == spec.lower()]
        if not match:
            raise _no_camera(spec, cams)
        return Target("device", f"{match[0].spec}:none", fmt, match[0].name, match[0])
    # dshow opens by name; an index picks from the list
    match = [c for c in cams if c.name.lower() == spec.lower()]
    if spec.isdigit() and int(spec) < len(cams):
        match = [cams[int(spec)]]
    if not match:
        raise _no_camera(spec, cams)
    return Target("device", f"video={match[0].name}", fmt, match[0].name, match[0])


@dataclass
class CaptureInfo:
    """What a live source delivers: frame size (after any scaling), the rate asked or the file's
    own, a description for the user, and whether it has audio of its own."""

    width: int
    height: int
    fps: float
    label: str
    kind: str
    has_audio: bool


class CameraSource(Source):
    """A live source of FramePackets (see the module docstring)."""

    name = "capture"
    live = True

    def __init__(self, settings: CaptureSettings, on_audio: Callable[[AudioChunk], None] | None = None,
                 cameras: Callable[[], list[Camera]] = list_cameras) -> None:
        self.settings = settings
        self.on_audio = on_audio
        self._cameras = cameras
        self.target: Target | None = None
        self.info: CaptureInfo | None = None
        self.measured_fps: float | None = None
        self._container = None
        self._video = self._audio = None
        self._resampler = None

    # ---------------------------------------------------------------------------------- open
    def open(self) -> CaptureInfo:
        s = self.settings
        t = self.target = resolve(s.camera, self._cameras)
        options: dict[str, str] = {}
        if t.kind == "device":
            self._check_device(t)
            if s.width and s.height:
                options["video_size"] = f"{s.width}x{s.height}"
            if s.fps:
                options["framerate"] = f"{s.fps:g}"
            if t.format == "v4l2":
                options["input_format"] = "mjpeg"
            elif t.format == "dshow":
                options["vcodec"] = "mjpeg"
            elif t.format == "avfoundation":
                options.setdefault("framerate", "30")  # avfoundation refuses to guess
        self._container = self._open(t, options)
        if not self._container.streams.video:
            kinds = ", ".join(sorted({st.type for st in self._container.streams})) or "no streams"
            self.close()
            raise InputError(f"{t.label}: has no video stream (found: {kinds}); pass a camera, a video "
                             "file or a stream with video")
        v = self._video = self._container.streams.video[0]
        # slice threads only: frame threads hold a frame back per thread, i.e. latency
        v.thread_type = "SLICE"
        if s.audio and self._container.streams.audio and self.on_audio is not None:
            self._audio = self._container.streams.audio[0]
        w, h = v.codec_context.width, v.codec_context.height
        if s.width and s.height:
            w, h = s.width, s.height
        rate = v.average_rate or v.guessed_rate or v.base_rate
        fps = float(rate) if rate else (s.fps or 30.0)
        if w <= 0 or h <= 0:
            self.close()
            raise InputError(f"{t.label}: the video stream states no frame size; it is damaged or not "
                             "a video, pass another source")
        self.info = CaptureInfo(w, h, fps, t.label, t.kind, self._audio is not None)
        return self.info

    def _check_device(self, t: Target) -> None:
        """A V4L2 camera's sizes are known before opening: a size it does not offer is refused
        with the sizes it does."""
        s = self.settings
        if t.format != "v4l2" or not (s.width and s.height):
            return
        cam = t.camera
        if cam is None:
            try:
                name, driver, _, modes = v4l2_query(t.url)
            except OSError:
                return  # the open below says what is wrong
            cam = Camera(name, t.url, modes, driver)
        if not cam.offers(s.width, s.height):
            sizes = ", ".join(f"{w}x{h}" for w, h in cam.sizes)
            raise InputError(f"camera {t.label} does not offer {s.width}x{s.height}; it offers {sizes}. "
                             "Pass one of those with --size")

    def _open(self, t: Target, options: dict):
        s = self.settings
        try:
            if t.kind == "file":
                return av.open(t.url)
            timeout = (s.open_timeout, s.read_timeout) if t.kind == "url" else None
            return av.open(t.url, format=t.format, options=options, timeout=timeout)
        except (av.FFmpegError, OSError) as err:
            code = getattr(err, "errno", None)
            why = masked(getattr(err, "strerror", None) or str(err))
            if t.kind == "file":
                raise open_error(t.url, err) from None
            if code == errno.EBUSY:
                raise InputError(f"camera {t.label} is busy: another program (a meeting app, OBS, a "
                                 "browser tab) is using it; close that program or pick another "
                                 "camera") from None
            if t.kind == "device" and code in (errno.EINVAL, errno.EIO) and ("video_size" in options):
                raise InputError(f"camera {t.label} refused {options['video_size']} at "
                                 f"{options.get('framerate', 'its default rate')} fps ({why}); see the sizes "
                                 "it offers with `swapstream live --list-cameras` and pass one with --size") \
                    from None
            if t.kind == "device" and code in (errno.EACCES, errno.EPERM):
                raise InputError(f"camera {t.label}: permission denied; add yourself to the 'video' group "
                                 "(sudo usermod -aG video $USER, then log in again)") from None
            if t.kind == "url":
                raise InputError(f"cannot open stream {t.label} ({why}); check the address and that the "
                                 "sender is running") from None
            raise InputError(f"cannot open {t.label} ({why}); check it with "
                             "`swapstream live --list-cameras`") from None

    # ------------------------------------------------------------------------------- reading
    def packets(self) -> Iterator[FramePacket]:
        """FramePackets as they are captured (a paced source sleeps until each is due)."""
        if self._container is None or self.info is None:
            raise RuntimeError("CameraSource.open() has not been called")
        t, info = self.target, self.info
        opened = time.monotonic()
        index, last_pts, prev = 0, -1, None
        first_second: list[float] = []
        clock = _PaceClock() if t.paced else None
        while True:
            for frame in self._frames(clock):
                capture = clock.due if clock else self._capture_time(frame)
                rgb = to_rgb(frame, quarter_turns(frame))
                if rgb.shape[:2] != (info.height, info.width):
                    rgb = cv2.resize(rgb, (info.width, info.height), interpolation=cv2.INTER_AREA)
                pts = max(int(round((capture - opened) * 1e6)), last_pts + 1)
                yield FramePacket(index, pts, TIME_BASE, rgb, follows=prev, capture_time=capture)
                prev, last_pts, index = index, pts, index + 1
                if self.measured_fps is None:
                    first_second.append(capture)
                    if first_second[-1] - first_second[0] >= 1.0:
                        self.measured_fps = (len(first_second) - 1) / (first_second[-1] - first_second[0])
            if t.kind in ("device", "url"):
                why = ("unplugged or taken by another program" if t.kind == "device"
                       else "the stream ended or its sender stopped")
                raise SourceLost(f"{t.label} stopped delivering frames ({why}); outputs closed")
            if not (self.settings.loop and t.kind == "file" and index):
                return
            self._container.seek(0)
            clock.restart()
            prev = None  # the clip starts over: a cut, tracks start afresh

    def _frames(self, clock: _PaceClock | None) -> Iterator[av.VideoFrame]:
        """Decoded video frames; audio on the way goes to on_audio. Errors of a live source end
        it as SourceLost; a damaged file raises InputError."""
        streams = [self._video] + ([self._audio] if self._audio is not None else [])
        try:
            for packet in self._container.demux(*streams):
                for frame in packet.decode():
                    when = None if frame.pts is None or frame.time_base is None else \
                        float(frame.pts * frame.time_base)
                    if clock is not None:
                        clock.wait(when)
                    if isinstance(frame, av.AudioFrame):
                        self._emit_audio(frame, clock.due if clock else time.monotonic())
                    else:
                        yield frame
        except av.FFmpegError as err:
            why = getattr(err, "strerror", None) or str(err)
            if self.target.kind == "file":
                raise InputError(f"{self.target.url}: decoding failed ({why}); the file is truncated or "
                                 "corrupt, re-export it") from None
            raise SourceLost(f"{self.target.label} failed ({why}); outputs closed") from None

    def _emit_audio(self, frame: av.AudioFrame, capture: float) -> None:
        if self._resampler is None:
            layout = "mono" if frame.layout.nb_channels == 1 else "stereo"
            self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=AUDIO_RATE)
        for out in self._resampler.resample(frame):
            self.on_audio(AudioChunk(np.ascontiguousarray(out.to_ndarray(), np.float32), AUDIO_RATE, capture))

    @staticmethod
    def _capture_time(frame: av.VideoFrame) -> float:
        """A device's own timestamp (FFmpeg gives v4l2 frames wall-clock pts) on our monotonic
        clock where it is plausible, else the time the frame arrived."""
        now_mono, now_wall = time.monotonic(), time.time()
        if frame.pts is not None and frame.time_base is not None:
            stamp = float(frame.pts * frame.time_base)
            if 0 <= now_wall - stamp < 2.0:
                return now_mono - (now_wall - stamp)
        return now_mono

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


class _PaceClock:
    """Plays a file in real time: wait(t) sleeps until media time t (seconds) is due, counting
    from the first frame; `due` is the monotonic time it was due. A jump back (a loop) or far
    ahead (a gap) re-anchors the clock instead of stalling."""

    def __init__(self) -> None:
        self.anchor: tuple[float, float] | None = None  # (monotonic, media seconds)
        self.due = time.monotonic()
        self.step = 0.0  # the last step between media times seen
        self._last: float | None = None

    def restart(self) -> None:
        self.anchor = None

    def wait(self, media: float | None) -> None:
        now = time.monotonic()
        if media is None:
            self.due = now
            return
        if self._last is not None and 0 < media - self._last < 1.0:
            self.step = media - self._last
        self._last = media
        if self.anchor is None or media < self.anchor[1] or media - self.anchor[1] > 3600:
            # the first frame, or the file starts over: due now, or a step after the last one
            start = now if self.anchor is None else max(now, self.due + self.step)
            self.anchor = (start, media)
        self.due = self.anchor[0] + (media - self.anchor[1])
        if self.due > now:
            time.sleep(self.due - now)
