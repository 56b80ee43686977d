"""The studio's Tune view: one frame of a video through the same chain convert runs, re-rendered
as the settings change.

    render(video, model, time, values)
        frame at `time` ──(cached per video and time)──> detect -> align -> swap [-> hands]
            ──(cached per frame and every section but blend)──> blend(values.blend) -> JPEG

The chain is pipeline.request.make_chain's for convert, built once per model and settings other
than blend's (loading a model takes a second; a blend setting is the common change and costs
only the blend, ~50-150 ms at 1080p on 2 cores). Each frame is its own shot (follows=None), so
no tracking or smoothing carries over from the frame looked at before.

values: a settings file's sections (detect, align, blend, identity, swap), as convert --config
takes them; `save_settings` writes them to settings/NAME.yaml for convert and live.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import yaml

from swapstream.core.errors import ConfigError, InputError
from swapstream.core.packet import FramePacket
from swapstream.core.video import quarter_turns, to_rgb
from swapstream.pipeline.config import ConvertConfig, convert_values, fill, merge
from swapstream.pipeline.request import check_model, make_chain
from swapstream.stages.face.blend import BlendStage
from swapstream.stages.sources.file import open_error

SECTIONS = ("detect", "align", "blend", "identity", "swap")
JPEG_QUALITY = 90


def config_of(values: dict, model: Path) -> ConvertConfig:
    """A ConvertConfig from a settings file's sections and the model; ConfigError for a bad key or
    value (one line naming it)."""
    if not isinstance(values, dict) or any(k not in SECTIONS for k in values):
        raise ConfigError(f"settings: the sections are {', '.join(SECTIONS)}")
    return fill(ConvertConfig, merge(convert_values(values), {"swap": {"model": str(model)}}), "settings")


def jpeg_url(rgb: np.ndarray) -> str:
    """(H, W, 3) uint8 RGB -> a data: URL of its JPEG."""
    _, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                          [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


class Tuner:
    """Renders tune frames (module docstring); one render at a time, any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._video: tuple | None = None  # (path, container, stream, duration s)
        self._frame: tuple | None = None  # (path, time) -> (rgb, index)
        self._frame_rgb: np.ndarray | None = None
        self._frame_index = 0
        self._frame_pts: int | None = None
        self._chain_key: str | None = None
        self._stages: list = []
        self._swapped: tuple[str, FramePacket] | None = None  # key -> packet before blend
        self._blend_key: str | None = None
        self._blend: BlendStage | None = None
        self._checked = None  # pipeline.request.CheckedModel of the chain's model
        self._spent = False  # the chain's identify stage was flushed (--only): build it again first

    def render(self, video: Path, model: Path, at: float, values: dict) -> dict:
        """{before, after (data: URLs of JPEGs), index, time, duration, width, height, faces,
        ms: {decode, chain, blend, total}}. InputError / ConfigError / ModelError name the fix."""
        with self._lock:
            t0 = time.perf_counter()
            cfg = config_of(values, model)
            duration = self._open(video)
            at = min(max(float(at), 0.0), max(duration - 1e-3, 0.0))
            rgb, index, pts = self._decode(video, at)
            t1 = time.perf_counter()
            rest = {k: v for k, v in values.items() if k != "blend"}
            # a model trained further under the same name is another model
            key = json.dumps([str(model), _stamp(model / "model.json"), rest], sort_keys=True, default=str)
            if key != self._chain_key:
                self._build(cfg, key)
            frame_key = f"{key}|{video}|{_stamp(video)}|{pts}"
            if self._swapped is None or self._swapped[0] != frame_key:
                if self._spent:  # identify was flushed to decide on the last frame: a fresh chain
                    self._build(cfg, key)
                self._spent = bool(cfg.identity.only or cfg.map)
                packet = FramePacket(index, None, Fraction(1, 1000), rgb.copy())
                for st in self._stages:
                    out = st.process([packet])
                    packet = (out or st.flush() or [packet])[0]
                self._swapped = (frame_key, packet)
            t2 = time.perf_counter()
            blend_key = json.dumps([key, values.get("blend", {})], sort_keys=True, default=str)
            if blend_key != self._blend_key:
                if self._blend is not None:
                    self._blend.close()
                c = self._checked  # the chain's links bind their settings: the blend's, made anew
                self._blend = make_chain(cfg, c.meta, "convert", c.reference, c.people)[-1].build()
                self._blend.setup()
                self._blend_key = blend_key
            [done] = self._blend.process([copy.deepcopy(self._swapped[1])])
            t3 = time.perf_counter()
            h, w = rgb.shape[:2]
            out = {"before": jpeg_url(rgb), "after": jpeg_url(done.frame), "index": index, "time": at,
                   "duration": duration, "width": w, "height": h, "faces": len(done.faces)}
            out["ms"] = {"decode": round(1000 * (t1 - t0)), "chain": round(1000 * (t2 - t1)),
                         "blend": round(1000 * (t3 - t2)), "total": round(1000 * (time.perf_counter() - t0))}
            return out

    def close(self) -> None:
        with self._lock:
            self._close_chain()
            if self._video is not None:
                self._video[1].close()
                self._video = None

    # ------------------------------------------------------------------------------ inside
    def _open(self, video: Path) -> float:
        """Open `video` (again when the file changed); its duration in seconds."""
        if self._video is None or self._video[0] != (video, _stamp(video)):
            if self._video is not None:
                self._video[1].close()
                self._video = self._frame = None
            try:
                container = av.open(str(video))
            except (av.FFmpegError, OSError) as err:
                raise open_error(str(video), err) from None
            if not container.streams.video:
                container.close()
                raise InputError(f"{video.name} has no video stream; pick a video")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            duration = float(container.duration / 1e6) if container.duration else \
                float((stream.duration or 0) * (stream.time_base or 0))
            self._video, self._frame = ((video, _stamp(video)), container, stream, duration), None
        return self._video[3]

    def _decode(self, video: Path, at: float) -> tuple[np.ndarray, int, int | None]:
        """The frame shown at `at` seconds from the video's start: ((H, W, 3) uint8 RGB, its index
        at the stream's average rate, its pts)."""
        key = (video, round(at, 3))
        if self._frame == key and self._frame_rgb is not None:
            return self._frame_rgb, self._frame_index, self._frame_pts
        _, container, stream, _ = self._video
        tb = stream.time_base
        rate = float(stream.average_rate or 30)
        start = float((stream.start_time or 0) * tb)  # frame.time counts from the file's own zero
        target, half = start + at, 0.5 / rate
        best = None
        try:
            for back in (0.0, 10.0):  # a seek that lands after the target (some MPEG-TS): 10 s earlier
                container.seek(int(max(target - back, start) / tb), stream=stream, backward=True)
                best = first = None
                for frame in container.decode(stream):
                    first = frame.time if first is None else first
                    best = frame
                    if frame.time is not None and frame.time >= target - half:
                        break
                if first is None or first <= target + half:
                    break
        except av.FFmpegError as err:
            raise InputError(f"{video.name}: decoding failed ({err}); the file is damaged, "
                             "pick another") from None
        if best is None:
            raise InputError(f"{video.name}: no frame at {at:.2f} s")
        index = int(round(((best.time or start) - start) * rate))
        self._frame_rgb = to_rgb(best, quarter_turns(best))
        self._frame, self._frame_index, self._frame_pts = key, index, best.pts
        return self._frame_rgb, index, best.pts

    def _build(self, cfg: ConvertConfig, key: str) -> None:
        """The chain but its blend, set up (the model loaded, the references of --only embedded)."""
        self._close_chain()
        checked = self._checked = check_model(cfg)
        links = make_chain(cfg, checked.meta, "convert", checked.reference, checked.people)
        stages = [lk.build() for lk in links[:-1]]
        try:
            for st in stages:
                st.setup()
        except BaseException:
            for st in stages:
                st.close()
            raise
        self._stages, self._chain_key, self._swapped, self._spent = stages, key, None, False

    def _close_chain(self) -> None:
        for st in self._stages:
            st.close()
        if self._blend is not None:
            self._blend.close()
        self._stages, self._blend, self._blend_key = [], None, None
        self._chain_key, self._swapped = None, None


def _stamp(path: Path) -> tuple[int, int] | None:
    """(mtime ns, size) of a file: a file written again is another file to the caches."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def save_settings(path: Path, values: dict, model: Path | None = None) -> None:
    """Check `values` (as config_of does) and write them to `path` as YAML, atomically."""
    config_of(values, model or Path("model"))
    head = "# swapstream settings, saved by the studio's Tune view: convert --config / live --config\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # never a planted link
    with os.fdopen(fd, "w") as f:
        f.write(head + yaml.safe_dump(values, sort_keys=True))
    os.replace(tmp, path)
