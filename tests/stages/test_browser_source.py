"""The browser camera's hand-over (stages.sources.browser): newest frame only, the seat, fitting."""

from __future__ import annotations

import threading
import time

import av
import cv2
import numpy as np

from swapstream.pipeline.samples import render_frames
from swapstream.stages.sources.browser import BrowserSource, Inbox, fit


def video_frame(rgb: np.ndarray) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


def test_only_the_newest_frame_is_taken_and_the_others_are_counted_dropped():
    inbox = Inbox()
    frames = [np.full((48, 64, 3), v, np.uint8) for v in (10, 120, 230)]
    for f in frames:
        inbox.put(video_frame(f))
    got, _, _ = inbox.take(0.1)
    assert abs(int(got.to_ndarray(format="rgb24").mean()) - 230) <= 2  # the last one
    assert (inbox.received, inbox.dropped) == (3, 2)
    assert inbox.take(0.05) is None  # nothing queued behind it


def test_one_sender_holds_the_seat_until_it_releases_it():
    inbox = Inbox()
    assert inbox.claim("page-1") and not inbox.claim("page-2")
    assert not inbox.release("page-2") and inbox.sender == "page-1"
    assert inbox.release("page-1") and inbox.claim("page-2") and inbox.sender == "page-2"


def test_an_upright_phone_frame_is_fitted_with_bars_not_stretched():
    face = np.ascontiguousarray(next(render_frames(["astronaut"], 1, 480, 640, 0.5)))  # portrait
    out = fit(face, 640, 480)
    assert out.shape == (480, 640, 3)
    assert out[:, :140].max() == 0 and out[:, -140:].max() == 0  # black bars left and right
    # the frame scaled by 0.75 to 360x480, not stretched: the same picture, smaller
    small = cv2.resize(face, (360, 480), interpolation=cv2.INTER_AREA)
    assert np.abs(out[:, 140:500].astype(int) - small).mean() < 1


def test_the_source_yields_the_pages_frames_at_the_sessions_size_and_stops_when_woken():
    inbox = Inbox()
    src = BrowserSource(inbox, 320, 240, 30)
    info = src.open()
    assert (info.width, info.height, info.kind) == (320, 240, "browser")
    got: list = []

    def read() -> None:
        for p in src.packets():
            got.append(p)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    inbox.claim("page")
    for v in (50, 200):
        inbox.put(video_frame(np.full((480, 640, 3), v, np.uint8)))
        time.sleep(0.2)
    src.wake()
    t.join(2)
    assert not t.is_alive()
    assert [p.frame.shape for p in got] == [(240, 320, 3)] * 2
    assert got[1].follows == got[0].index and got[1].pts > got[0].pts
