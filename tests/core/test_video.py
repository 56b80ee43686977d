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
