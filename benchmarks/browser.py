"""A headless Chromium driven by playwright's sync API, for the benchmarks (and the tests, through
tests/browser.py, which adds skipping when it is missing).

The system's Chromium is used (Debian/Ubuntu: `sudo apt-get install chromium`); playwright never
downloads a browser here. A benchmark script imports it as `browser` (its own folder is on
sys.path when it runs).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required", "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--use-fake-ui-for-media-stream"]
CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    """The Chromium to drive: $SWAPSTREAM_CHROMIUM, else the first of CANDIDATES found; None if none."""
    for name in (os.environ.get("SWAPSTREAM_CHROMIUM"), *CANDIDATES):
        if name and (path := shutil.which(name)):
            return path
    return None


@contextmanager
def launch(path: str, extra_args: tuple[str, ...] = ()) -> Iterator:
    """A launched headless playwright Browser (sync API) of the Chromium at `path`; closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=[*ARGS, *extra_args])
        try:
            yield browser
        finally:
            browser.close()


def chromium(extra_args: tuple[str, ...] = ()):
    """launch() of the Chromium found here; RuntimeError naming the install when there is none."""
    path = chromium_path()
    if path is None:
        raise RuntimeError("Chromium not found: install it with `sudo apt-get install chromium` "
                           "(Debian/Ubuntu)")
    return launch(path, extra_args)


def write_y4m(frames, path, fps: int = 30):
    """Write frames ((H, W, 3) uint8 RGB, even W and H) as a YUV4MPEG2 4:2:0 file: what Chromium's
    fake camera plays (`--use-file-for-fake-video-capture=PATH`, looped). Returns `path`."""
    from pathlib import Path

    import av

    path = Path(path)
    with av.open(str(path), "w", format="yuv4mpegpipe") as out:
        stream = None
        for rgb in frames:
            if stream is None:
                stream = out.add_stream("wrapped_avframe", rate=fps)
                stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p"
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path
