"""What a file or network output needs when its frames come from a live source: timestamps from
capture times, and audio (AudioChunks) encoded to AAC on the same clock.

`LiveAV` is mixed into EncodeStage subclasses (stages.sinks.record, stages.sinks.stream). The first frame
delivered sets the time origin: a frame's pts is its capture time since then, an audio chunk's
pts its first sample's capture time since then (chunks captured before the first frame are
dropped). Audio and video therefore line up by capture time in the output, whatever the latency.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from swapstream.core.audio import AUDIO_RATE, LIVE_TIME_BASE
from swapstream.core.packet import FramePacket
from swapstream.core.video import StreamInfo

_JITTER_S = 0.1  # capture-time wobble under which audio stays continuous


def live_stream_info(label: str, width: int, height: int, fps: float, has_audio: bool) -> StreamInfo:
    """A StreamInfo for frames from a live source (pts in microseconds)."""
    return StreamInfo(path=label, width=width, height=height, fps=fps or 30.0, time_base=LIVE_TIME_BASE,
                      duration=None, frames=None, rotation=0, codec="live", pix_fmt="rgb24",
                      has_audio=has_audio)


class LiveAV:
    """Mixin for an EncodeStage fed live: capture-time pts and an AAC track from audio()."""

    wants_audio = True

    def _init_live(self, audio: bool) -> None:
        self._with_audio = audio
        self._origin: float | None = None
        self._aac = None
        self._next_sample: int | None = None

    def _pts_of(self, packet: FramePacket) -> int | None:
        if packet.capture_time is None:
            return super()._pts_of(packet)
        if self._origin is None:
            self._origin = packet.capture_time
        return int(round((packet.capture_time - self._origin) / self.info.time_base))

    def _add_audio(self, muxer: str) -> None:
        if self._with_audio:
            self._aac = self._out.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
            self._audio[-1] = (self._aac, True)  # flushed with the re-encoded streams at the end

    def audio(self, chunk) -> None:
        """Encode an AudioChunk ((C, N) float32, C 1 or 2) at its capture time."""
        if self._aac is None or self._origin is None or self._out is None:
            return
        rate = self._aac.codec_context.sample_rate
        start = int(round((chunk.capture_time - self._origin) * rate))
        if self._next_sample is not None and (start < self._next_sample
                                              or start - self._next_sample < _JITTER_S * rate):
            # continuous audio: capture times wobble, samples do not; and a chunk stamped before
            # the end of the last one (a loaded machine, a looped file) goes after it, as the
            # muxer needs rising timestamps
            start = self._next_sample
        if start < 0:
            return
        samples = np.asarray(chunk.samples, np.float32)
        if samples.shape[0] == 1:
            samples = np.repeat(samples, 2, axis=0)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:2]), format="fltp", layout="stereo")
        frame.sample_rate = rate
        frame.pts, frame.time_base = start, Fraction(1, rate)
        self._out.mux(self._aac.encode(frame))
        self._next_sample = start + samples.shape[1]
