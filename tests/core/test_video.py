"""The bottom layer's video facts: Planes carry a decoded frame across a process boundary intact."""

from __future__ import annotations

import pickle

import av
import numpy as np

from swapstream.core.packet import Face, Why
from swapstream.core.video import Planes, passable, to_rgb


def test_planes_round_trip_through_pickle_keeps_every_pixel_and_tag(clips):
    with av.open(str(clips["a"])) as c:
        frame = next(c.decode(video=0))
    assert passable(frame)
    back = pickle.loads(pickle.dumps(Planes.of(frame))).frame()
    assert (back.width, back.height, back.format.name) == (frame.width, frame.height, "yuv420p")
    assert (int(back.colorspace or 2), int(back.color_range or 0)) == \
        (int(frame.colorspace or 2), int(frame.color_range or 0))
    for a, b in zip(back.planes, frame.planes):
        pa = np.frombuffer(a, np.uint8).reshape(a.height, a.line_size)[:, :a.width]
        pb = np.frombuffer(b, np.uint8).reshape(b.height, b.line_size)[:, :b.width]
        assert (pa == pb).all()
    assert (to_rgb(back) == to_rgb(frame)).all()


def test_why_a_face_was_skipped_is_a_typed_fact():
    face = Face(np.zeros((478, 2), np.float32))
    assert face.ok and not face.skipped_for(Why.OTHER_PERSON)
    face.skip(Why.OTHER_PERSON, "track 3: 1 of 7 samples within 0.41")
    assert not face.ok and face.skipped_for(Why.OTHER_PERSON) and not face.skipped_for(Why.ALIGNMENT)
    assert str(face.skips[0]) == "other person: track 3: 1 of 7 samples within 0.41"


FORK_AFTER_CONVERSIONS = """
import subprocess, sys, threading
import numpy as np, av
import swapstream.core.video  # registers the fork hook
stop, ready = threading.Event(), threading.Barrier(3)
def worker():  # converts frames, then stays alive, as a live or decode thread does
    f = av.VideoFrame.from_ndarray(np.zeros((720, 1280, 3), np.uint8), format="rgb24")
    for _ in range(3):
        f.reformat(format="yuv420p")
    ready.wait()
    stop.wait()
threads = [threading.Thread(target=worker, daemon=True) for _ in range(2)]
for t in threads:
    t.start()
ready.wait()
for _ in range(5):  # a Popen with preexec_fn, as Ray starts its processes
    subprocess.run(["true"], preexec_fn=lambda: None, check=True)
f = av.VideoFrame.from_ndarray(np.full((72, 128, 3), 200, np.uint8), format="rgb24")
print(int(f.reformat(format="yuv420p").reformat(format="rgb24").to_ndarray().mean()))
"""


def test_a_fork_running_python_in_the_child_after_threads_converted_frames_does_not_hang():
    """Threads that converted frames hold swscale contexts with slice threads; a child of
    fork that frees them waits on threads that did not come across. Without
    fresh_scalers_before_fork this hangs (it did, inside ray.init's Popen)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FORK_AFTER_CONVERSIONS], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert abs(int(done.stdout.strip()) - 200) <= 2  # conversions still work after the forks
