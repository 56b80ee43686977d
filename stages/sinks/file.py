"""Encode stage: the pipeline's sink. Writes FramePackets to H.264 and remuxes the source's audio.

- Video: yuv420p H.264 (libx264, `crf`, `preset`). The encoder and stream time base are the input's
  and every frame keeps its input pts, so variable frame rate and exact timestamps survive.
- Odd sizes: 4:2:0 chroma needs even width and height, so an odd last row/column is padded by
  repeating the edge pixels; the output is then one pixel taller/wider than the input.
- A packet that carries its decoded frame (FramePacket.source) is written from it: as it is when
  no stage touched the frame, else a copy with only the `touched` boxes converted from RGB. Outside
  the faces the output then holds the source's own YUV (no RGB round trip, ~1 level of error
  each way), and the whole-frame RGB -> YUV (2.2 ms a 720p frame here) is not paid.
- Audio: every audio stream of `audio_from` is copied packet for packet (no re-encode), interleaved
  with the video as it is written. A stream the container refuses (e.g. PCM in .mp4) is re-encoded
  to AAC instead, and `warnings` says so.
- Metadata marks the file as synthetic media: `comment` and a custom `synthetic_media=1` key.
- The file is written under a temporary name next to the output and renamed only when complete,
  so a crash or `abort()` never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from swapstream.core.errors import InputError, OutputError
from swapstream.core.packet import FramePacket
from swapstream.core.video import StreamInfo, matrix_of
from swapstream.stages.base import Sink
from swapstream.stages.hardware import check_codec, encoder_options

# Output extension -> FFmpeg muxer. Only containers that carry H.264 with exact timestamps.
_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


# errno of a write that failed for want of room -> what to tell the user
_NO_ROOM = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.EFBIG: "the file grew past the size this file system or `ulimit -f` allows",
            errno.EIO: "the disk reported an input/output error"}

@dataclass
class EncodeSettings:
    path: str  # final output path
    codec: str = "libx264"
    crf: int = 18
    preset: str = "fast"
    audio_from: str | None = None  # input whose audio streams are copied (remuxed, not re-encoded)
    synthetic_tag: str = "synthetic media: faces replaced by swapstream"
    threads: int = 0  # threads of the encoder and of the RGB->YUV conversion; 0: FFmpeg's choice
    # names this output's temporary file, so whoever made the settings can find (and remove) it
    # even when the process that wrote it died
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def partial_path(self) -> Path:
        """The temporary file the output is written to before it is renamed into place; it keeps
        the extension so tools (and the muxer guess) see the right container."""
        path = Path(self.path)
        return path.absolute().parent / f".{path.stem}.partial-{self.token}{path.suffix}"


def _unwritable(folder: Path) -> str | None:
    """Why no file can be made in `folder`, or None. By making one: permission bits do not tell
    (root may write anywhere by them, yet not in /proc; a read-only mount says so only here)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return "no write permission"
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".swapstream-probe-"):
            pass
    except OSError as err:
        return err.strerror or str(err)
    return None


def _pad_even(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H + H%2, W + W%2, 3) uint8, the odd row/column repeated from the edge."""
    ph, pw = frame.shape[0] % 2, frame.shape[1] % 2
    if ph or pw:
        return np.pad(frame, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return frame


# Standard layouts by channel count: PCM from .wav/.mkv often has an unordered "2 channels" layout,
# which the mp4 muxer refuses; AAC carries at most 8 channels (more are downmixed to stereo).
_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def _planes(frame: av.VideoFrame) -> list[np.ndarray]:
    """The Y, U and V planes of a yuv420p frame as writable (h, w) uint8 views of its buffers."""
    return [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width] for p in frame.planes]


def _aac_layout(layout) -> str:
    if layout.name.endswith("channels"):
        return _LAYOUTS.get(layout.nb_channels, "stereo")
    return layout.name if layout.nb_channels <= 8 else "stereo"


def _remux_ok(muxer: str, src_path: str, index: int) -> bool:
    """Whether `muxer` accepts a copy of audio stream `index` of `src_path`. Tried in memory with
    its first packets and the trailer, because some refusals only show there (mp4 writes its
    index at the end and refuses e.g. PCM with an unordered channel layout only then)."""
    try:
        with av.open(src_path) as src, av.open(io.BytesIO(), "w", format=muxer) as trial:
            template = src.streams[index]
            out = trial.add_stream_from_template(template)
            trial.start_encoding()
            sent = 0
            for pkt in src.demux(template):
                if pkt.size and pkt.dts is not None:
                    pkt.stream = out
                    trial.mux(pkt)
                    sent += 1
                if sent == 3:
                    break
        return True
    except (av.FFmpegError, ValueError):
        return False


def synthetic_tags(path: str | os.PathLike) -> dict[str, str]:
    """The container's synthetic-media tags as {"comment": ..., "synthetic_media": ...}; keys are
    lower-cased because Matroska reads them back upper-case; a key the file lacks is left out."""
    with av.open(str(path)) as c:
        tags = {k.lower(): v for k, v in c.metadata.items()}
    return {k: tags[k] for k in ("comment", "synthetic_media") if k in tags}


class EncodeStage(Sink):
    """File sink: `setup()`, `process(batch)` for each batch in order, then `flush()` (rename into
    place) or `abort()` (temporary file removed); `close()` aborts what was not flushed."""

    name = "encode"
    # mp4/mov muxer flags: use_metadata_tags keeps custom keys (synthetic_media); faststart puts
    # the index up front for players (a second pass over the file at the end)
    movflags = "use_metadata_tags+faststart"

    def __init__(self, settings: EncodeSettings, info: StreamInfo):
        self.settings = settings
        self.info = info
        self.warnings: list[str] = []
        self.temp_path: Path | None = None
        self._out = None  # av OutputContainer on temp_path
        self._video = None
        self._src = None  # av InputContainer of audio_from
        self._audio: dict[int, tuple[object, bool]] = {}  # source stream index -> (out stream, re-encode)
        self._audio_packets = None  # iterator over the source's audio packets
        self._pending = None  # next source audio packet, not yet due
        self._prev_pts: int | None = None
        self._step = 1  # typical frame duration in pts units, for packets without pts
        self._nudged = False  # warned once about non-increasing pts
        self._done = False

    # ----------------------------------------------------------------------------------- setup
    def validate(self) -> Path:
        """Check the codec (a video encoder that opens here) and the output path (folder exists and
        is writable, known extension); ConfigError / OutputError naming the fix if not."""
        check_codec(self.settings.codec)
        path = Path(self.settings.path)
        parent = path.absolute().parent
        if path.is_dir():
            raise OutputError(f"{path}: output path is a directory; give a file name such as {path}/out.mp4")
        if not parent.is_dir():
            raise OutputError(f"{path}: output folder {parent} does not exist; create it first "
                              f"(mkdir -p {parent})")
        if path.suffix.lower() not in _CONTAINERS:
            raise OutputError(f"{path}: unknown output extension {path.suffix!r}; "
                              f"use one of {', '.join(_CONTAINERS)}")
        why = _unwritable(parent)
        if why:
            raise OutputError(f"{path}: output folder {parent} is not writable ({why}); choose another "
                              "folder or fix its permissions")
        return path

    def setup(self) -> None:
        """Validate the output path, open the temporary file, add the streams, write the header."""
        muxer = self._open_container()
        try:
            self._out.metadata["comment"] = self.settings.synthetic_tag
            self._out.metadata["synthetic_media"] = "1"
            self._add_video()
            self._add_audio(muxer)
            self._out.start_encoding()
        except av.FFmpegError as err:
            self.abort()
            raise OutputError(f"{self.settings.path}: cannot write the output header ({err}); "
                              "try the .mkv extension") from None
        except BaseException:
            self.abort()  # no temp file left behind, whatever went wrong
            raise

    def _open_container(self) -> str:
        """Open self._out (the temporary file); returns the muxer name."""
        path = self.validate()
        muxer = _CONTAINERS[path.suffix.lower()]
        self.temp_path = self.settings.partial_path
        options = {}
        if muxer in ("mp4", "mov"):
            options["movflags"] = self.movflags
        try:
            self._out = av.open(str(self.temp_path), "w", format=muxer, options=options)
        except (av.FFmpegError, OSError) as err:
            raise OutputError(f"{path}: cannot create the output file ({err}); check free space "
                              "and permissions") from None
        return muxer

    def _finalize(self) -> None:
        """The output is complete: the temporary file becomes the output (atomic rename)."""
        os.replace(self.temp_path, self.settings.path)  # readers see all or nothing

    @property
    def colorspace(self) -> int:
        """FFmpeg AVColorSpace the output is converted to and tagged with.

        The input's matrix when it names one of BT.709 / BT.601; otherwise the convention players
        assume for untagged video: BT.709 from 720 lines up, BT.601 below. (Untagged BT.601 HD
        output would shift every colour of the frame in a player, not just the face.)
        """
        return matrix_of(self.info.colorspace, self.info.height)

    def _add_video(self) -> None:
        info, s = self.info, self.settings
        tb = info.time_base
        rate = Fraction(info.fps).limit_denominator(100_000) if info.fps else Fraction(30)
        v = self._video = self._out.add_stream(s.codec, rate=rate)
        v.width, v.height = info.width + info.width % 2, info.height + info.height % 2
        v.pix_fmt = "yuv420p"
        cs = self.colorspace
        cc = v.codec_context
        # AVColorPrimaries share the codes 1 / 5 / 6 with AVColorSpace; transfer: BT.709 or BT.601
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = cs, cs, 1 if cs == 1 else 6, 1
        # The input's time base on stream and encoder: input pts go through unchanged.
        v.time_base = tb
        v.codec_context.time_base = tb
        options = encoder_options(s.codec, s.crf, s.preset)
        if options:
            v.options = options
        if s.threads:
            v.codec_context.thread_count = s.threads
        self._step = max(1, int(round(1 / (rate * tb))))

    def _add_audio(self, muxer: str) -> None:
        src_path = self.settings.audio_from
        if not src_path:
            return
        try:
            self._src = av.open(src_path)
        except (av.FFmpegError, OSError) as err:
            raise InputError(f"{src_path}: cannot read audio from it ({err}); check the audio_from path") \
                from None
        for a in self._src.streams.audio:
            if _remux_ok(muxer, src_path, a.index):
                self._audio[a.index] = (self._out.add_stream_from_template(a), False)
            else:
                out = self._out.add_stream("aac", rate=a.rate, layout=_aac_layout(a.layout))
                self._audio[a.index] = (out, True)
                self.warnings.append(f"audio stream {a.index} ({a.codec_context.name}) of {src_path} cannot "
                                     f"be copied into {muxer}; re-encoded to AAC")
        if self._audio:
            self._audio_packets = iter(self._src.demux(*self._src.streams.audio))

    # --------------------------------------------------------------------------------- writing
    @contextlib.contextmanager
    def _writing(self):
        """A write that fails for want of room (a full disk, a quota, `ulimit -f`, a failing
        drive) becomes an OutputError naming the cause and the fix; others pass as they are."""
        try:
            yield
        except (av.FFmpegError, OSError) as err:
            why = _NO_ROOM.get(getattr(err, "errno", None))
            if why is None:
                raise
            raise OutputError(f"{self.settings.path}: writing the output failed: {why} "
                              f"(errno {err.errno}); free space or write elsewhere") from None

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        """Encode the frames of `batch` ((H, W, 3) uint8 RGB, in order) and return the batch."""
        if self._out is None:
            raise RuntimeError("EncodeStage.setup() has not been called (or flush/abort already ran)")
        with self._writing():
            return self._encode(batch)

    def _encode(self, batch: list[FramePacket]) -> list[FramePacket]:
        tb, v = self.info.time_base, self._video
        for packet in batch:
            frame = packet.frame
            if frame.shape[:2] != (self.info.height, self.info.width):
                raise ValueError(f"frame {packet.index} is {frame.shape[1]}x{frame.shape[0]}, the stream "
                                 f"is {self.info.width}x{self.info.height}")
            pts = self._pts_of(packet)
            if pts is None:
                pts = 0 if self._prev_pts is None else self._prev_pts + self._step
            elif self._prev_pts is not None and pts <= self._prev_pts:
                # The encoder refuses non-increasing pts; nudge rather than drop the frame.
                if not self._nudged:
                    self.warnings.append(f"frame {packet.index}: pts {pts} not after {self._prev_pts}; "
                                         "written 1 tick later (later such frames likewise)")
                    self._nudged = True
                pts = self._prev_pts + 1
            if packet.source is not None and self._passes(packet.source):
                vf = self._from_source(packet.source, frame, packet.touched)
            else:
                vf = self._to_yuv(_pad_even(frame))
            vf.pts, vf.time_base = pts, tb
            self._out.mux(v.encode(vf))
            self._prev_pts = pts
        if self._prev_pts is not None:
            self._mux_audio(until=float(self._prev_pts * tb))
        return batch

    def _to_yuv(self, rgb: np.ndarray) -> av.VideoFrame:
        """(H, W, 3) uint8 RGB, even H and W -> the encoder's yuv420p frame: limited range, the
        matrix the stream is tagged with. A thread budget (the Ray runner's encoder, the one
        stage that sees every frame in turn) goes to libswscale too: ~13 ms a 1080p frame on one
        thread here, identical output on several."""
        # a view of the array, not a copy (reformat makes the encoder's own frame)
        vf = av.VideoFrame.from_numpy_buffer(np.ascontiguousarray(rgb), format="rgb24")
        return vf.reformat(format="yuv420p", dst_colorspace=self.colorspace, dst_color_range=1,
                           threads=self.settings.threads or None)

    def _passes(self, source) -> bool:
        """Whether a decoded yuv420p frame can be written as it is: its size is the stream's and
        its colour matrix the one the stream is tagged with (BT.709 or BT.601)."""
        if (source.width, source.height) != (self.info.width, self.info.height):
            return False
        # 5 and 6 (BT.470BG, SMPTE 170M) share BT.601's matrix
        return (matrix_of(int(source.colorspace or 2), source.height) == 1) == (self.colorspace == 1)

    def _from_source(self, source, rgb: np.ndarray,
                     touched: list[tuple[int, int, int, int]]) -> av.VideoFrame:
        """The frame to encode from the decoded one: itself when nothing was touched, else a
        copy whose `touched` boxes (widened to even coordinates for 4:2:0 chroma) are converted
        from `rgb` ((H, W, 3) uint8, the frame the stages made)."""
        if not touched:
            source.pict_type = av.video.frame.PictureType.NONE  # the source's frame types are not ours
            return source
        out = av.VideoFrame(source.width, source.height, "yuv420p")
        planes = _planes(out)
        for dst, src in zip(planes, _planes(source)):
            dst[...] = src
        h, w = rgb.shape[:2]
        for x0, y0, x1, y1 in touched:
            x0, y0 = max(0, x0 - x0 % 2), max(0, y0 - y0 % 2)
            x1, y1 = min(w, x1 + x1 % 2), min(h, y1 + y1 % 2)
            if x1 <= x0 or y1 <= y0:
                continue
            patch = self._to_yuv(rgb[y0:y1, x0:x1])
            for i, (dst, src) in enumerate(zip(planes, _planes(patch))):
                k = 1 if i == 0 else 2  # chroma planes: half size
                dst[y0 // k:y1 // k, x0 // k:x1 // k] = src
        return out

    def _pts_of(self, packet: FramePacket) -> int | None:
        """The packet's pts in the stream's time base."""
        pts, tb = packet.pts, self.info.time_base
        if pts is not None and packet.time_base != tb:
            pts = int(round(pts * packet.time_base / tb))
        return pts

    def _mux_audio(self, until: float | None) -> None:
        """Mux source audio packets whose dts time <= `until` seconds (all when None)."""
        if self._audio_packets is None:
            return
        while True:
            pkt = self._pending
            if pkt is None:
                pkt = next(self._audio_packets, None)
                if pkt is None:
                    self._audio_packets = None
                    return
            ts = pkt.dts if pkt.dts is not None else pkt.pts
            if until is not None and ts is not None and float(ts * pkt.time_base) > until:
                self._pending = pkt  # not due yet: keeps audio interleaved with the video
                return
            self._pending = None
            out, reencode = self._audio[pkt.stream.index]
            if reencode:
                for frame in pkt.decode():  # an empty packet drains the decoder
                    self._out.mux(out.encode(frame))
            elif pkt.size:  # demux ends with empty flush packets: not for the muxer
                pkt.stream = out
                self._out.mux(pkt)

    def _drain_video(self) -> None:
        """Mux the frames the encoder still holds (B-frames, lookahead)."""
        self._out.mux(self._video.encode())

    def flush(self) -> list[FramePacket]:
        """Drain the encoder, mux the remaining audio, close and rename the file into place."""
        if self._done:
            return []
        if self._out is None:
            raise RuntimeError("EncodeStage.setup() has not been called")
        with self._writing():
            self._drain_video()
            self._mux_audio(until=None)
            for out, reencode in self._audio.values():
                if reencode:
                    self._out.mux(out.encode())
            self._out.close()
        self._out = None
        self._close_source()
        self._finalize()
        self._done = True
        return []

    def _close_source(self) -> None:
        self._audio_packets = self._pending = None
        if self._src is not None:
            self._src.close()
            self._src = None

    def limit_threads(self, n: int) -> None:
        if not self.settings.threads:
            self.settings = dataclasses.replace(self.settings, threads=max(1, n))

    def close(self) -> None:
        self.abort()  # after flush() there is nothing left to abort

    def report(self) -> dict:
        return {"warnings": list(self.warnings)}

    def abort(self) -> None:
        """Close and delete the temporary file; safe to call twice and after flush()."""
        if self._out is not None:
            try:
                self._out.close()
            except Exception:  # noqa: BLE001 - closing a broken file must not hide the first error
                pass
            self._out = None
        self._close_source()
        if self.temp_path is not None and not self._done:
            self.temp_path.unlink(missing_ok=True)
        self._done = True
