"""`--record FILE`: the live output written to a file with convert's guarantees.

The same EncodeStage as convert: written under a temporary name and renamed when complete (a
crash, Ctrl-C or a lost camera never leaves a half-written file under the final name; after a
lost camera the file is completed, so it stays playable), tagged as synthetic media, with the
audio kept (the source's own or the microphone's, AAC, on the frames' clock). Frames carry their
capture times as pts, so a camera whose rate wobbles is recorded with its real timing.
"""

from __future__ import annotations

from swapstream.core.video import StreamInfo
from swapstream.stages.sinks.file import EncodeSettings, EncodeStage
from swapstream.stages.sinks.live_av import LiveAV


class RecordSink(LiveAV, EncodeStage):
    """File sink for live frames (+ audio()); settings.path is the final name."""

    name = "record"
    keeps_every_frame = True

    def __init__(self, settings: EncodeSettings, info: StreamInfo, audio: bool = True) -> None:
        EncodeStage.__init__(self, settings, info)
        self._init_live(audio)
