"""`--record FILE`: the live output written to a file with convert's guarantees.

The same EncodeStage as convert: written under a temporary name and renamed when complete (a
crash, Ctrl-C or a lost camera never leaves a half-written file under the final name; after a
lost camera the file is completed, so it stays playable), tagged as synthetic media, with the
audio kept (the source's own or the microphone's, AAC, on the frames' clock). Frames carry their
capture times as pts, so a camera whose rate wobbles is recorded with its real timing.

A recording that fails (a full disk, `ulimit -f`, a vanished drive) keeps what it wrote: .mp4 and
.mov are written as fragments (a keyframe every KEYFRAME_S, one fragment each, the index up
front), so salvage() cuts the file after its last complete fragment and renames it into place,
where it plays; Matroska is readable up to its last complete cluster as it is.
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import av

from swapstream.core.errors import OutputError
from swapstream.core.video import StreamInfo
from swapstream.stages.sinks.file import _CONTAINERS, EncodeSettings, EncodeStage
from swapstream.stages.sinks.live_av import LiveAV

KEYFRAME_S = 2.0  # at most this much of a failed recording is lost


def complete_length(path: str | os.PathLike) -> int:
    """Bytes of a fragmented mp4 up to the end of its last complete top-level box that is not a
    lone `moof` (a fragment's header without its `mdat`); 0 when not even the header is whole."""
    size, pos, good = os.path.getsize(path), 0, 0
    with open(path, "rb") as f:
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            n, kind = struct.unpack(">I4s", head[:8])
            if n == 1 and len(head) == 16:
                n = struct.unpack(">Q", head[8:16])[0]
            elif n == 0:
                n = size - pos
            if n < 8 or pos + n > size:
                break
            pos += n
            if kind != b"moof":
                good = pos
    return good


class RecordSink(LiveAV, EncodeStage):
    """File sink for live frames (+ audio()); settings.path is the final name."""

    name = "record"
    keeps_every_frame = True
    # fragments: a file cut short by a failure is still playable (up to its last fragment)
    movflags = "use_metadata_tags+frag_keyframe+empty_moov+default_base_moof"

    def __init__(self, settings: EncodeSettings, info: StreamInfo, audio: bool = True) -> None:
        EncodeStage.__init__(self, settings, info)
        self._init_live(audio)
        self._file = None
        # salvage (the output's own thread) and abort/close (the runner's, after a join that
        # timed out) must not interleave: an abort in the middle would unlink what salvage keeps
        self._ending = threading.RLock()

    def _open_container(self) -> str:
        """The temporary file opened by Python and handed to the muxer: a failed write (EFBIG,
        ENOSPC, EIO) then raises at the frame that made it. With FFmpeg's own file I/O a failed
        write of a fragment was seen not to raise (the recording stopped growing and nobody was
        told), though convert's plain mp4 writes do raise (stages/sinks/file.py)."""
        path = self.validate()
        muxer = _CONTAINERS[path.suffix.lower()]
        self.temp_path = self.settings.partial_path
        options = {"movflags": self.movflags} if muxer in ("mp4", "mov") else {}
        try:
            self._file = open(self.temp_path, "wb")  # noqa: SIM115 - closed in _close_file
            self._out = av.open(self._file, "w", format=muxer, options=options)
        except (av.FFmpegError, OSError) as err:
            self._close_file()
            raise OutputError(f"{path}: cannot create the output file ({err}); check free space "
                              "and permissions") from None
        return muxer

    def _close_file(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass  # what could not be written is judged by salvage()

    def _finalize(self) -> None:
        if self._file is not None:
            self._file.flush()  # a last failed write raises here, before the rename
            self._close_file()
        super()._finalize()

    def abort(self) -> None:
        with self._ending:
            if self._out is not None:
                try:
                    self._out.close()
                except Exception:  # noqa: BLE001 - the file is removed anyway
                    pass
                self._out = None
            self._close_file()
            super().abort()

    def _add_video(self) -> None:
        super()._add_video()
        self._video.codec_context.gop_size = max(1, int(round((self.info.fps or 30) * KEYFRAME_S)))

    def salvage(self) -> str:
        """After a failed write: close what can be closed, cut the file after its last complete
        fragment (.mp4/.mov) and rename it into place; removed when nothing playable is in it."""
        with self._ending:
            return self._salvage()

    def _salvage(self) -> str:
        temp, final = self.temp_path, Path(self.settings.path)
        if self._out is not None:
            try:
                self._out.close()  # the trailer may not fit either; the fragments are what counts
            except Exception:  # noqa: BLE001 - the file is judged by what is on disk
                pass
            self._out = None
        self._close_file()
        self._close_source()
        if temp is None or self._done or not temp.exists():
            self._done = True
            return "nothing was kept"
        keep = temp.stat().st_size
        if temp.suffix.lower() in (".mp4", ".m4v", ".mov"):
            keep = complete_length(temp)
            if keep <= 0 or not self._has_fragment(temp, keep):
                self.abort()
                return "nothing playable had been written, so nothing was kept"
            os.truncate(temp, keep)
        os.replace(temp, final)
        self._done = True
        return f"what was recorded before ({keep / 1e6:.1f} MB) is kept, playable, in {final}"

    @staticmethod
    def _has_fragment(path: Path, length: int) -> bool:
        """Whether the first `length` bytes hold a media fragment (moof + mdat), not just headers."""
        pos = 0
        with open(path, "rb") as f:
            while pos + 8 <= length:
                f.seek(pos)
                n, kind = struct.unpack(">I4s", f.read(8))
                if kind == b"mdat":
                    return True
                if n < 8:
                    return False
                pos += n
        return False
