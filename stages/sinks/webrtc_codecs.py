"""The WebRTC video's codec side, lighter than aiortc's defaults: frames handed to the encoders
in yuv420p, quick VP8 and H.264 encoders for what the server sends, and the start bitrate a
sending page's camera is told to begin at. Measured here at 640x480 (a 2-core CPU beside the
page's Chromium): the returned video's encoding 5.6 -> 2.6 ms a frame.

The encoders are aiortc's own classes, given their codec context ready-made (see
QuickVp8Encoder); quick_senders puts them on a connection's video senders through aiortc's
private attribute, and an aiortc without it keeps its own encoders.
"""

from __future__ import annotations

import fractions

import av
import cv2
import numpy as np
from aiortc.codecs.h264 import MAX_FRAME_RATE as H264_MAX_FPS
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import MAX_BITRATE as VP8_MAX_BITRATE
from aiortc.codecs.vpx import Vp8Encoder


def i420_pixels(rgb: np.ndarray) -> tuple[np.ndarray, str]:
    """(H, W, 3) uint8 RGB -> (pixels, format) for av.VideoFrame.from_ndarray, in a new array:
    (H * 3 / 2, W) uint8 yuv420p (BT.601, limited range), what the encoders take. OpenCV's
    conversion: 0.3 ms at 640x480 where the encoder's own (swscale) took 1.7 (Y within 1 level of
    it). Odd sizes, which 4:2:0 cannot halve, stay rgb24 (a copy; swscale converts them later)."""
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        return rgb.copy(), "rgb24"
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), "yuv420p"


def to_i420(rgb: np.ndarray) -> av.VideoFrame:
    """(H, W, 3) uint8 RGB -> an av.VideoFrame in yuv420p (rgb24 for odd sizes), see i420_pixels."""
    return av.VideoFrame.from_ndarray(*i420_pixels(rgb))


class QuickVp8Encoder(Vp8Encoder):
    """aiortc's VP8 encoder at a lighter real-time setting: speed 10 (aiortc: 6) and no temporal
    denoiser (aiortc: 4; the swapped frames are not a noisy sensor's), starting at its top rate
    (1.5 Mbit/s; aiortc: 0.5, climbing over ~20 s as the page reports its bandwidth). 2.3 ms a 640x480 frame
    where aiortc's took 3.9, at the same PSNR (42.0 vs 41.6 dB at 1.4 Mbps; measured here). The
    codec is made here and handed to aiortc's encode(), which keeps one that matches the frame
    size and bitrate, so bitrate changes and keyframe requests work as in aiortc."""

    def __init__(self) -> None:
        super().__init__()
        self.target_bitrate = VP8_MAX_BITRATE  # the page's bandwidth reports bring it down if need be

    def encode(self, frame, force_keyframe: bool = False):
        rate = self.target_bitrate
        if self.codec is None or (frame.width, frame.height) != (self.codec.width, self.codec.height) \
                or abs(rate - self.codec.bit_rate) / self.codec.bit_rate > 0.1:
            c = av.CodecContext.create("libvpx", "w")
            c.width, c.height, c.bit_rate, c.pix_fmt = frame.width, frame.height, rate, "yuv420p"
            c.gop_size, c.qmin, c.qmax = 3000, 2, 56
            c.options = {"bufsize": str(rate), "cpu-used": "-10", "deadline": "realtime",
                         "lag-in-frames": "0", "minrate": str(rate), "maxrate": str(rate),
                         "noise-sensitivity": "0", "overshoot-pct": "15", "partitions": "0",
                         "static-thresh": "1", "undershoot-pct": "100"}
            c.thread_count = 1
            self.codec = c
        return super().encode(frame, force_keyframe)


class QuickH264Encoder(H264Encoder):
    """aiortc's H.264 encoder with x264's `superfast` preset: aiortc leaves x264 at its default
    (`medium`), 18 ms a 640x480 frame here; superfast 2.3 ms, 0.1 dB below it (43.0 dB at 1.4
    Mbps). Same hand-over as QuickVp8Encoder."""

    def _encode_frame(self, frame, force_keyframe: bool):
        rate = self.target_bitrate
        if self.codec is None or (frame.width, frame.height) != (self.codec.width, self.codec.height) \
                or abs(rate - self.codec.bit_rate) / self.codec.bit_rate > 0.1:
            self.buffer_data, self.buffer_pts = b"", None
            c = av.CodecContext.create("libx264", "w")
            c.width, c.height, c.bit_rate, c.pix_fmt = frame.width, frame.height, rate, "yuv420p"
            c.framerate = fractions.Fraction(H264_MAX_FPS, 1)
            c.time_base = fractions.Fraction(1, H264_MAX_FPS)
            c.options = {"level": "31", "tune": "zerolatency", "preset": "superfast"}
            c.profile = "Baseline"
            self.codec = c
        return super()._encode_frame(frame, force_keyframe)


def with_start_bitrate(sdp: str, kbps: int) -> str:
    """`sdp` with `x-google-start-bitrate=kbps` on every VP8 and H.264 format of its video
    sections: Chromium's sender starts its camera there instead of at ~300 kbit/s. Its bandwidth
    estimate took ~20 s to climb to the cap, and the bits it added as it climbed cost the
    decoder and the swap's share of the CPU more and more: the round trip's p50 rose by 30-60 %
    over a 30 s session before it levelled, which read as lag building up. Other browsers ignore
    the parameter."""
    param = f"x-google-start-bitrate={kbps}"
    out: list[str] = []
    section: list[str] = []

    def close_section() -> None:
        """Add the parameter within one media section, then hand its lines to `out`."""
        if section and section[0].startswith("m=video"):
            for pt in _formats(section, ("VP8", "H264")):
                fmtp = next((j for j, ln in enumerate(section) if ln.startswith(f"a=fmtp:{pt} ")), None)
                if fmtp is None:
                    at = next(j for j, ln in enumerate(section) if ln.startswith(f"a=rtpmap:{pt} "))
                    section.insert(at + 1, f"a=fmtp:{pt} {param}")
                else:
                    section[fmtp] = f"{section[fmtp]};{param}"
        out.extend(section)
        section.clear()

    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            close_section()
        section.append(line)
    close_section()
    return "\r\n".join(out)


def _formats(section: list[str], codecs: tuple[str, ...]) -> list[str]:
    """The payload types of one SDP media section's lines whose a=rtpmap names one of `codecs`."""
    found = []
    for line in section:
        if line.startswith("a=rtpmap:"):
            pt, _, codec = line[len("a=rtpmap:"):].partition(" ")
            if codec.split("/")[0].upper() in codecs:
                found.append(pt)
    return found


def quick_senders(pc) -> None:
    """Give the connection's video senders the quick encoder of the codec negotiated (after the
    answer is made; aiortc makes its own only at the first frame, once connected). An aiortc
    without the private attributes keeps its own encoders."""
    for t in pc.getTransceivers():
        codecs = getattr(t, "_codecs", None)
        name = "_RTCRtpSender__encoder"
        if t.kind != "video" or not codecs or getattr(t.sender, name, False) is not None:
            continue
        mime = codecs[0].mimeType.lower()
        if mime == "video/vp8":
            setattr(t.sender, name, QuickVp8Encoder())
        elif mime == "video/h264":
            setattr(t.sender, name, QuickH264Encoder())
