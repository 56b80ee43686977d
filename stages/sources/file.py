"""Decode stage: the pipeline's source. Reads a video file into FramePackets with PyAV.

Each packet carries the frame as a contiguous (H, W, 3) uint8 RGB array in [0, 255], turned upright
by the display matrix when `autorotate` is on, and the frame's own pts and the stream's time base,
so the encoder can write the exact timestamps back (variable frame rate survives). Any pixel format
FFmpeg decodes, 10-bit included, is converted to 8-bit RGB by swscale.

Problems a user can fix (missing file, not a video, truncated file) raise `InputError` with a
one-line message naming the file, the problem and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import av

from swapstream.core.errors import InputError
from swapstream.core.packet import FramePacket
from swapstream.core.video import StreamInfo, passable, quarter_turns, to_rgb
from swapstream.stages.base import Source
from swapstream.stages.hardware import hwaccel, hwaccel_error

# A container's frame count may be off by a frame or two in real files (edit lists, a dropped
# last frame); only a shortfall beyond this is called truncation.
_COUNT_SLACK_FRAMES = 2
_COUNT_SLACK_SHARE = 0.02


def short_beyond_tolerance(expected: int, decoded: int) -> bool:
    """True when `decoded` falls short of an index's `expected` frame count by more than odd but
    sound files do (2 frames or 2%): the file is truncated or corrupt."""
    return expected - decoded > max(_COUNT_SLACK_FRAMES, _COUNT_SLACK_SHARE * expected)
# For containers that only state a duration (Matroska), compare times instead of counts: an
# average frame rate guessed from the first frames makes a count estimate wrong for VFR video.
_TIME_SLACK_S = 0.5
_TIME_SLACK_SHARE = 0.05


@dataclass
class DecodeSettings:
    path: str
    threads: int = 0  # 0 = FFmpeg picks (thread_type AUTO)
    autorotate: bool = True  # apply the display-matrix rotation so faces are upright
    # Optional range, in the video stream's time base: frames with start_pts <= pts < end_pts.
    # With start_pts the decoder seeks to the keyframe at or before it; first_index is then the
    # whole video's index of the first frame yielded (FramePacket.index stays global).
    start_pts: int | None = None
    end_pts: int | None = None
    hwaccel: str = "none"  # decode on a device: cuda | vaapi | qsv | videotoolbox | ... (none: CPU)
    first_index: int = 0
    # hand each frame's decoded YUV on as FramePacket.source where an encoder can write it as it
    # is (see passable); for a sink in this process (the local runner), never across processes
    keep_source: bool = False


def probe(path: str | os.PathLike) -> StreamInfo:
    """Open `path`, inspect its video stream (decoding the first frame), close; raises InputError."""
    stage = DecodeStage(DecodeSettings(str(path)))
    try:
        return stage.setup()
    finally:
        stage.close()


def open_error(path: str, err: Exception) -> InputError:
    """Turn an exception from av.open() into a one-line InputError."""
    if isinstance(err, IsADirectoryError) or os.path.isdir(path):
        return InputError(f"{path}: is a directory, not a video file; pass the path of a video file")
    if isinstance(err, FileNotFoundError) or not os.path.exists(path):
        return InputError(f"{path}: file not found; check the path and spelling")
    if isinstance(err, PermissionError):
        return InputError(f"{path}: permission denied; make the file readable (chmod +r)")
    size = os.path.getsize(path)
    if size == 0:
        return InputError(f"{path}: file is empty (0 bytes); re-export or re-download it")
    with open(path, "rb") as f:
        head = f.read(12)
    why = getattr(err, "strerror", None) or str(err)
    if head[4:8] == b"ftyp":
        # An ISO-BMFF file whose 'moov' index is missing: cut off while copying or still being written.
        return InputError(f"{path}: MP4/MOV file is truncated or corrupt (no 'moov' index: {why}); "
                          "re-download or re-export it completely")
    return InputError(f"{path}: not a media file FFmpeg can read ({why}); "
                      "pass a video file such as .mp4, .mov or .mkv")


def _stream_duration(container, stream) -> tuple[float | None, bool]:
    """(seconds, of_stream): the video stream's own duration, else Matroska's DURATION tag, else
    the file's (of_stream False: that one may include a longer audio track)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base), True
    tag = stream.metadata.get("DURATION")  # "HH:MM:SS.nnnnnnnnn", written by FFmpeg/mkvmerge
    if tag:
        try:
            h, m, s = tag.split(":")
            return int(h) * 3600 + int(m) * 60 + float(s), True
        except ValueError:
            pass
    if container.duration is not None:
        return container.duration / av.time_base, False
    return None, False


class DecodeStage(Source):
    """File source: `setup()` (or `open()`) opens the file, `frames()` (or `packets()`) yields
    FramePackets, `close()` releases it."""

    name = "decode"

    def __init__(self, settings: DecodeSettings):
        self.settings = settings
        self._container = None
        self._stream = None
        self._info: StreamInfo | None = None
        self._first = None  # the first decoded av.VideoFrame, kept from setup() for frames()
        self._decoded = None  # generator of av.VideoFrame
        self._k = 0  # quarter turns counter-clockwise that make the frame upright
        self._stream_duration = False  # info.duration is the video stream's own, not the file's

    @property
    def info(self) -> StreamInfo:
        if self._info is None:
            raise RuntimeError("DecodeStage.setup() has not been called")
        return self._info

    def setup(self) -> StreamInfo:
        """Open the container and decode the first frame (for rotation and pixel format)."""
        path = self.settings.path
        if os.path.isdir(path):
            raise open_error(path, IsADirectoryError(path))
        accel = hwaccel(self.settings.hwaccel)
        try:
            self._container = av.open(path, hwaccel=accel) if accel else av.open(path)
        except (av.FFmpegError, OSError) as err:
            if accel is not None and os.path.isfile(path):
                raise hwaccel_error(self.settings.hwaccel, err) from None
            raise open_error(path, err) from None
        c = self._container
        if not c.streams.video:
            kinds = ", ".join(sorted({s.type for s in c.streams})) or "no streams"
            self.close()
            raise InputError(f"{path}: has no video stream (found: {kinds}); "
                             "pass a video file, not an audio-only or data file")
        v = self._stream = c.streams.video[0]
        v.thread_type = "AUTO"
        if self.settings.threads:
            v.codec_context.thread_count = self.settings.threads
        if self.settings.start_pts is not None:
            try:
                c.seek(self.settings.start_pts, stream=v, backward=True, any_frame=False)
            except av.FFmpegError as err:
                self.close()
                raise InputError(f"{path}: cannot seek to pts {self.settings.start_pts} ({err}); the file's "
                                 "index is damaged, remux it (ffmpeg -i in.mp4 -c copy fixed.mkv)") from None
        self._decoded = self._decode_all()
        try:
            self._first = next(self._decoded)
        except (InputError, av.FFmpegError, OSError) as err:
            self.close()
            if accel is not None:
                raise hwaccel_error(self.settings.hwaccel, err) from None
            raise
        except StopIteration:
            self.close()
            st = self.settings
            where = f" from pts {st.start_pts} to {st.end_pts}" if self.ranged else ""
            raise InputError(f"{path}: video stream has no decodable frames{where}; "
                             "the file is empty or corrupt, re-export it") from None

        rotation = quarter_turns(self._first) * 90
        self._k = rotation // 90 if self.settings.autorotate else 0
        w, h = self._first.width, self._first.height
        if self._k % 2:
            w, h = h, w
        rate = v.average_rate or v.guessed_rate or v.base_rate
        fps = float(rate) if rate else 0.0
        duration, self._stream_duration = _stream_duration(c, v)
        frames, exact = (v.frames, True) if v.frames else (None, False)
        if frames is None and duration and fps:
            frames = int(round(duration * fps))
        self._info = StreamInfo(
            path=path, width=w, height=h, fps=fps, time_base=v.time_base, duration=duration,
            frames=frames, rotation=rotation, codec=v.codec_context.name,
            pix_fmt=v.codec_context.pix_fmt or self._first.format.name,
            has_audio=bool(c.streams.audio), frames_exact=exact,
            colorspace=int(self._first.colorspace or 2))
        return self._info

    @property
    def ranged(self) -> bool:
        """Whether only a range of the video is decoded (start_pts / end_pts set)."""
        return self.settings.start_pts is not None or self.settings.end_pts is not None

    def _decode_all(self) -> Iterator[av.VideoFrame]:
        """Decoded frames in presentation order, within the range if one is set; FFmpeg errors
        become InputError with the frame index."""
        n = self.settings.first_index
        start, end = self.settings.start_pts, self.settings.end_pts
        try:
            # demux() ends with an empty packet per stream; decoding it drains the decoder.
            for packet in self._container.demux(self._stream):
                for frame in packet.decode():
                    if frame.pts is not None:
                        if start is not None and frame.pts < start:
                            continue  # between the keyframe sought to and the range start
                        if end is not None and frame.pts >= end:
                            return  # presentation order: every later frame is past the end too
                    n += 1
                    yield frame
        except av.FFmpegError as err:
            why = getattr(err, "strerror", None) or str(err)
            raise InputError(f"{self.settings.path}: decoding failed at frame index {n} ({why}); the file is "
                             "truncated or corrupt, re-export it or repair it "
                             "(e.g. ffmpeg -i in.mp4 -c copy fixed.mkv)") from None

    def frames(self) -> Iterator[FramePacket]:
        """Yield FramePackets index 0.. (first_index.. for a range) in presentation order; single pass.

        frame: (H, W, 3) uint8 RGB, C-contiguous, upright if autorotate. pts in `info.time_base`
        units; a frame without pts gets previous pts + the typical frame step.
        """
        info = self.info
        if self._first is None:
            raise RuntimeError("DecodeStage.frames() can be iterated only once per setup()")
        tb = info.time_base
        step = max(1, int(round(1 / (info.fps * tb)))) if info.fps else 1  # one frame in pts units
        first, self._first = self._first, None
        start = self._stream.start_time or 0
        keep = self.settings.keep_source
        index, prev_pts, last_step = self.settings.first_index, None, step

        def packets(frame):
            nonlocal index, prev_pts, last_step
            pts = frame.pts
            if pts is None:
                pts = start if prev_pts is None else prev_pts + last_step
            elif prev_pts is not None and pts > prev_pts:
                last_step = pts - prev_pts
            # each frame continues the one before it; the first starts afresh
            packet = FramePacket(index, pts, tb, to_rgb(frame, self._k),
                                 follows=None if prev_pts is None else index - 1,
                                 source=frame if keep and passable(frame, self._k) else None)
            index, prev_pts = index + 1, pts
            return packet

        yield packets(first)
        for frame in self._decoded:
            yield packets(frame)
        if not self.ranged:  # a range's caller knows how many frames it expects; the file's count is not it
            self._check_complete(index - self.settings.first_index, prev_pts, last_step)

    def open(self) -> StreamInfo:
        return self.setup()

    def packets(self) -> Iterator[FramePacket]:
        return self.frames()

    def _check_complete(self, count: int, last_pts: int | None, step: int) -> None:
        """Raise InputError when far fewer frames decoded than the container promised."""
        info, path = self.info, self.settings.path
        if info.frames_exact and info.frames:
            if short_beyond_tolerance(info.frames, count):
                raise InputError(f"{path}: video ends early: {count} of {info.frames} frames decoded, "
                                 "the file is truncated; re-download or re-export it completely")
        elif self._stream_duration and info.duration and last_pts is not None:
            start = self._stream.start_time or 0
            got = float((last_pts + step - start) * info.time_base)
            if info.duration - got > max(_TIME_SLACK_S, _TIME_SLACK_SHARE * info.duration):
                raise InputError(f"{path}: video ends early: {got:.2f} s of {info.duration:.2f} s decoded, "
                                 "the file is truncated; re-download or re-export it completely")

    def close(self) -> None:
        """Release the file; safe to call twice."""
        if self._decoded is not None:
            self._decoded.close()
            self._decoded = None
        if self._container is not None:
            self._container.close()
            self._container = None
        self._first = None
