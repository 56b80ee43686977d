"""Swap only the chosen person (`--only`): the identify stage's track vote, convert (local, Ray,
segments) and live, on real two-person clips with real MediaPipe, embeddings and swaps."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from swapstream.core.packet import FramePacket, Why
from swapstream.pipeline.cli import main
from swapstream.pipeline.config import ConvertConfig, LiveConfig, SwapSection
from swapstream.pipeline.request import make_chain
from swapstream.pipeline.runners.base import built
from swapstream.pipeline.runners.local import LocalRunner
from swapstream.pipeline.samples import render_frames, source_image
from swapstream.stages.face.align import AlignSettings, AlignStage
from swapstream.stages.face.detect import DetectStage
from swapstream.stages.face.identify import NOBODY, IdentifyStage, IdentitySettings
from swapstream.stages.sources.file import DecodeSettings, DecodeStage
from swapstream.training.reference import load_reference
from tests.collect import CollectSink


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("refs")
    out = {}
    for who in ("astronaut", "grace_hopper"):
        out[who] = root / f"{who}.png"
        cv2.imwrite(str(out[who]), cv2.cvtColor(source_image(who), cv2.COLOR_RGB2BGR))
    return out


@pytest.fixture(scope="module")
def refs(photos) -> dict[str, np.ndarray]:
    return {who: load_reference([p]).embeddings for who, p in photos.items()}


def aligned(frames: list[np.ndarray], start: int = 0) -> list[FramePacket]:
    """Packets of consecutive frames through real detect and align."""
    packets = [FramePacket(start + i, start + i, Fraction(1, 30), f, follows=start + i - 1 if i else None)
               for i, f in enumerate(frames)]
    detect, align = DetectStage(), AlignStage(AlignSettings(size=64))
    out = align.process(detect.process(packets))
    detect.close()
    return out


def chosen(packet: FramePacket) -> list[bool]:
    return [not f.skipped_for(Why.OTHER_PERSON) for f in packet.faces]


# --- the vote -------------------------------------------------------------------------------

def test_one_misjudged_frame_does_not_flip_a_track(refs):
    """A track of the astronaut in which one frame shows someone else (the tracker's mistake, a
    bad frame): the vote keeps the whole track swapped, that frame included."""
    a = aligned(list(render_frames(["astronaut"], 12, 320, 240, 0.6)))
    b = aligned(list(render_frames(["grace_hopper"], 12, 320, 240, 0.6)), 100)
    packets = a[:4] + [b[4]] + a[5:]
    for i, p in enumerate(packets):  # one track, frames in order
        p.index, p.follows = i, i - 1 if i else None
        for f in p.faces:
            f.track = 0
    stage = IdentifyStage(IdentitySettings(only=["a"]), refs["astronaut"])
    out = stage.process(packets) + stage.flush()
    assert [p.index for p in out] == list(range(12))
    assert all(chosen(p) == [True] for p in out), [p.faces[0].skips for p in out]
    assert stage.decided == [(0, 0, 0, 7)]  # person 0, by the first 7 frames, that one among them
    # the other way round: the whole track, that frame included, is left alone
    stage = IdentifyStage(IdentitySettings(only=["b"]), refs["grace_hopper"])
    for p in packets:
        for f in p.faces:
            f.skips = []
    out = stage.process(packets) + stage.flush()
    assert all(chosen(p) == [False] for p in out)
    # that frame alone looked like her: 1 of the 7 votes, outvoted
    assert "track 0: 1 of 7 samples within" in out[4].faces[0].skips[0].detail, out[4].faces[0].skips


def test_a_track_that_changes_person_is_split(refs):
    """A cut the tracker missed: one track id, the astronaut then Grace Hopper. The track splits
    where she appears; only her part is swapped."""
    a = aligned(list(render_frames(["astronaut"], 10, 320, 240, 0.6)))
    b = aligned(list(render_frames(["grace_hopper"], 10, 320, 240, 0.6)), 100)
    packets = a + b
    for i, p in enumerate(packets):
        p.index, p.follows = i, i - 1 if i else None
        for f in p.faces:
            f.track = 7
    stage = IdentifyStage(IdentitySettings(only=["b"]), refs["grace_hopper"])
    out = [p for k in range(0, 20, 4) for p in stage.process(packets[k:k + 4])] + stage.flush()
    assert [chosen(p)[0] for p in out] == [False] * 10 + [True] * 10
    assert [(d[1], d[2]) for d in stage.decided] == [(0, NOBODY), (10, 0)]


# --- convert --------------------------------------------------------------------------------

def run_chain(clip: Path, cfg, meta: dict, reference: np.ndarray) -> list[tuple[np.ndarray, list]]:
    """Convert in-process; (frame, faces) of each output frame, in order."""
    got = []
    sink = CollectSink(on_frame=lambda p: got.append((p.frame.copy(), p.faces)))
    dec = DecodeStage(DecodeSettings(str(clip)))
    dec.open()
    try:
        LocalRunner(progress=False).run(make_chain(cfg, meta, "convert", reference), dec, [built(sink)])
    finally:
        dec.close()
    return got


def decoded(clip: Path) -> list[np.ndarray]:
    with av.open(str(clip)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_only_the_chosen_person_is_swapped_the_other_unchanged_pixel_for_pixel(clips, model_dir, refs):
    meta = json.loads((model_dir / "model.json").read_text())
    cfg = ConvertConfig(swap=SwapSection(model=str(model_dir)), runner="local")
    cfg.identity.only = ["astronaut.png"]
    out = run_chain(clips["ab"], cfg, meta, refs["astronaut"])
    src = decoded(clips["ab"])
    assert len(out) == len(src) == 30
    for (frame, faces), before in zip(out, src):
        assert len(faces) == 2
        left = min(faces, key=lambda f: f.bbox[0])  # the astronaut is on the left
        right = max(faces, key=lambda f: f.bbox[0])
        assert left.swapped is not None and left.ok
        assert right.swapped is None and right.skipped_for(Why.OTHER_PERSON)
        # where the swap may write: the crop square of the astronaut's face, mapped back
        size = left.crop.shape[0]
        region = cv2.warpAffine(np.ones((size, size), np.uint8), cv2.invertAffineTransform(left.matrix),
                                (frame.shape[1], frame.shape[0]), flags=cv2.INTER_NEAREST)
        region = cv2.dilate(region, np.ones((5, 5), np.uint8)) > 0
        assert np.array_equal(frame[~region], before[~region])  # everything else, her face too
        assert np.abs(frame[region].astype(int) - before[region]).mean() > 3  # the swap did something


def faces_per_frame(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.mark.parametrize("runner,fuse", [("local", "auto"), ("ray", "on"), ("ray", "off")])
def test_convert_only_through_the_cli(clips, model_dir, photos, tmp_path, runner, fuse, capsys):
    """Ray, fused: identify holds frames inside the one align+identify+swap+blend actor; apart:
    swap and blend actors get the held frames with the packets."""
    out = tmp_path / f"only-{runner}-{fuse}.mp4"
    stats = tmp_path / f"only-{runner}-{fuse}.json"
    rc = main(["-q", "convert", str(clips["ab"]), str(out), "--model", str(model_dir), "--runner", runner,
               "--fuse", fuse, "--only", str(photos["astronaut"]), "--stats", str(stats)])
    assert rc == 0
    s = json.loads(stats.read_text())
    assert s["frames"] == faces_per_frame(out) == 30
    assert s["faces_swapped"] == 30 and s["faces_left_alone"] == 30, s
    assert "faces of other people left alone" in capsys.readouterr().out


def test_segments_give_a_track_the_same_decision_on_both_sides_of_an_edge(model_dir, photos, tmp_path):
    """Two people, keyframes every 10 frames: each segment decides its tracks anew from its lead;
    the chosen person is swapped and the other left alone in every frame of every segment."""
    from tests.pipeline.test_segments import FPS

    clip = tmp_path / "two-gop.mp4"
    with av.open(str(clip), "w") as c:
        vs = c.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = 560, 300, "yuv420p"
        vs.options = {"crf": "16", "preset": "veryfast", "g": "10", "sc_threshold": "0"}
        for i, frame in enumerate(render_frames(["astronaut", "grace_hopper"], 40, 560, 300, 0.6)):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            c.mux(vs.encode(vf))
        c.mux(vs.encode())
    out, stats = tmp_path / "two-seg.mp4", tmp_path / "two-seg.json"
    rc = main(["-q", "convert", str(clip), str(out), "--model", str(model_dir), "--runner", "local",
               "--segments", "4", "--only", str(photos["grace_hopper"]), "--stats", str(stats)])
    assert rc == 0
    s = json.loads(stats.read_text())
    assert s["frames"] == 40 and s["faces_swapped"] == 40 and s["faces_left_alone"] == 40, s


def test_bad_references_are_one_line_and_exit_2(clips, model_dir, tmp_path, capsys):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    for ref, words in ((blank, "no face found in reference"), (bad, "cannot be read"),
                       (tmp_path / "nobody.png", "not found")):
        out = tmp_path / "never.mp4"
        rc = main(["-q", "convert", str(clips["ab"]), str(out), "--model", str(model_dir),
                   "--runner", "local", "--only", str(ref)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and words in err[0] and err[0].startswith("swapstream: error:"), err
        assert not out.exists()


# --- live -----------------------------------------------------------------------------------

def test_live_swaps_only_the_chosen_person_once_its_vote_is_in(clips, model_dir, refs):
    from swapstream.pipeline.live_stats import LiveStats
    from swapstream.pipeline.runners.live import LiveRunner
    from swapstream.stages.sources.camera import CameraSource, CaptureSettings

    meta = json.loads((model_dir / "model.json").read_text())
    cfg = LiveConfig(swap=SwapSection(model=str(model_dir)))
    cfg.identity.only = ["grace_hopper.png"]
    stages = [lk.build() for lk in make_chain(cfg, meta, "live", refs["grace_hopper"])]
    seen = []
    sink = CollectSink(on_frame=lambda p: seen.append(sorted((f.bbox[0], f.swapped is not None)
                                                             for f in p.faces)))
    src = CameraSource(CaptureSettings(str(clips["ab"]), audio=False))
    src.open()
    stats = LiveStats([s.name for s in stages], [sink.name])
    LiveRunner(stats).run([built(s) for s in stages], src, [built(sink)])
    two = [s for s in seen if len(s) == 2]
    assert len(two) > 10
    # after the vote (3 frames of the track): the astronaut (left) never, Grace Hopper (right) always
    assert all(not left and right for (_, left), (_, right) in two[4:]), two


def test_the_settings_file_identity_section(clips, model_dir, photos, tmp_path):
    """identity: in a settings file; its references are relative to the file."""
    settings = photos["astronaut"].parent / "only.yaml"
    settings.write_text("identity:\n  only: [grace_hopper.png]\n  vote: 5\n")
    out, stats = tmp_path / "yaml-only.mp4", tmp_path / "yaml-only.json"
    rc = main(["-q", "convert", str(clips["ab"]), str(out), "--model", str(model_dir), "--runner", "local",
               "--config", str(settings), "--stats", str(stats)])
    assert rc == 0
    s = json.loads(stats.read_text())
    assert s["faces_swapped"] == 30 and s["faces_left_alone"] == 30, s
    resolved = json.loads(out.with_name(out.name + ".swapstream.json").read_text())
    assert resolved["identity"]["only"] == [str(photos["grace_hopper"])]
    assert resolved["identity"]["vote"] == 5
