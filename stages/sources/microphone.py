"""`--audio DEVICE`: live audio from a capture device, for the stream, web page and recording.

    Linux    default | hw:1,0 (ALSA; PulseAudio/PipeWire answer as ALSA's `default`), or pulse:NAME
             where the PyAV build has PulseAudio
    macOS    :0 or the device name (avfoundation)
    Windows  the device name, e.g. "Microphone (Realtek Audio)" (dshow)
    any      FORMAT:ARGS, e.g. lavfi:sine=frequency=440 (a test tone, played in real time)

Chunks come out as swapstream.core.audio.AudioChunk: (C, N) float32 at 48 kHz, each with the capture time
of its first sample (arrival time for a device; a generator is paced to real time).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator

import av
import numpy as np

from swapstream.core.audio import AUDIO_RATE, AudioChunk
from swapstream.core.errors import InputError, SourceLost


def audio_target(spec: str) -> tuple[str, str]:
    """(url, format) for an --audio value."""
    m = re.fullmatch(r"([a-z0-9_]{2,}(?:,[a-z0-9_]+)?):(.*)", spec)
    if m and m.group(1) in av.formats_available:
        return m.group(2), m.group(1)
    if sys.platform == "darwin":
        return (spec if spec.startswith(":") else f":{spec}"), "avfoundation"
    if sys.platform == "win32":
        return (spec if spec.startswith("audio=") else f"audio={spec}"), "dshow"
    return spec, "alsa"


class MicrophoneSource:
    """open() the device (InputError naming the fix if it cannot), chunks() until close()."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.url, self.format = audio_target(spec)
        self._container = None
        self._closed = False

    def open(self) -> None:
        try:
            self._container = av.open(self.url, format=self.format)
        except (av.FFmpegError, OSError) as err:
            why = getattr(err, "strerror", None) or str(err)
            raise InputError(f"--audio {self.spec}: cannot open this audio device ({why}); check the name "
                             "(Linux: `arecord -L`, macOS/Windows: your sound settings) or leave --audio out "
                             "to use the source's own audio") from None
        if not self._container.streams.audio:
            self.close()
            raise InputError(f"--audio {self.spec}: has no audio stream; pass an audio device")

    def chunks(self) -> Iterator[AudioChunk]:
        """AudioChunks as they are captured; SourceLost if the device fails mid-run."""
        stream = self._container.streams.audio[0]
        layout = "mono" if stream.codec_context.layout.nb_channels == 1 else "stereo"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=AUDIO_RATE)
        paced = self.format == "lavfi"
        start = None
        try:
            for packet in self._container.demux(stream):
                for frame in packet.decode():
                    now = time.monotonic()
                    media = float(frame.pts * frame.time_base) if frame.pts is not None else None
                    if paced and media is not None:
                        start = start if start is not None else now - media
                        wait = start + media - now
                        if wait > 0:
                            time.sleep(wait)
                        now = start + media
                    for out in resampler.resample(frame):
                        yield AudioChunk(np.ascontiguousarray(out.to_ndarray(), np.float32), AUDIO_RATE, now)
                if self._closed:
                    return
        except av.FFmpegError as err:
            if self._closed:
                return
            raise SourceLost(f"--audio {self.spec} stopped ({err}); outputs closed") from None

    def close(self) -> None:
        self._closed = True
        if self._container is not None:
            self._container.close()
            self._container = None
