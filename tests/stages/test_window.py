"""The live window, on a real (virtual) X display: Xvfb, screen-grabbed with FFmpeg's x11grab."""
# Window and screenshot run in processes of their own: Qt (OpenCV's) and FFmpeg's x11grab each
# bring X client libraries, and sharing a process with what other tests loaded is not safe.

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from tests.pipeline.test_convert import decode_all

pytestmark = pytest.mark.slow


@pytest.fixture
def display(monkeypatch):
    """A fresh Xvfb display on a free number; skips with the install hint without Xvfb."""
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb not found: install it with `sudo apt-get install xvfb` (Debian/Ubuntu)")
    read, write = os.pipe()
    args = ["Xvfb", "-displayfd", str(write), "-screen", "0", "1024x768x24", "-nolisten", "tcp"]
    proc = subprocess.Popen(args,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(write,))
    os.close(write)
    with os.fdopen(read) as f:
        num = f.readline().strip()  # written once the display takes connections
    monkeypatch.setenv("DISPLAY", f":{num}")
    yield f":{num}"
    proc.terminate()
    proc.wait(timeout=10)


GRAB = """
import sys, av, numpy as np
with av.open(sys.argv[1] + ".0", format="x11grab", options={"video_size": "1024x768"}) as c:
    np.save(sys.argv[2], next(c.decode(video=0)).to_ndarray(format="rgb24"))
"""


def grab(display: str, tmp) -> np.ndarray:
    """One screenshot of the X display, (H, W, 3) uint8 RGB. Taken in another process: X client
    libraries loaded by earlier tests in this one (two libxcb builds) made x11grab crash here."""
    out = tmp / "screen.npy"
    subprocess.run([sys.executable, "-c", GRAB, display, str(out)], check=True, timeout=30)
    return np.load(out)


def test_the_window_shows_the_live_frames(clips, model_dir, display, tmp_path):
    """`swapstream live --window` as a user runs it (the window on the main thread), beside a
    recording of the same frames: a screenshot of the display holds the recorded frames."""
    rec = tmp_path / "rec.mp4"
    p = subprocess.Popen([sys.executable, "-m", "swapstream.pipeline.cli", "live", "--model", str(model_dir),
                          "--camera",
                          str(clips["a"]), "--loop", "--window", "--record", str(rec), "--duration", "6"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    watchdog = threading.Timer(120, p.kill)  # a hung window fails this test, not the whole suite
    watchdog.start()
    assert p.stdout.readline().startswith("engine: ")  # which engine --engine auto picked
    assert p.stdout.readline().startswith("live: ")  # set up, frames flowing
    assert "keys: s swap" in p.stdout.readline()
    time.sleep(3.0)
    screen = grab(display, tmp_path)
    out, err = p.communicate(timeout=30)
    watchdog.cancel()
    assert p.returncode == 0 and "ended (duration)" in out and "Traceback" not in err, (out, err)
    frames, _ = decode_all(rec)
    # the lower half of a recorded frame (the overlay is at the top) is on the screen, where the
    # window shows it; the screenshot falls between two frames of the 30 fps video
    halves = [np.ascontiguousarray(f[f.shape[0] // 2:]) for f in frames[::3]]
    best = max(cv2.matchTemplate(screen, h, cv2.TM_CCOEFF_NORMED).max() for h in halves)
    assert best > 0.9, best
