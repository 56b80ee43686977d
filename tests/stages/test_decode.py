"""DecodeStage on real files written with PyAV from the sample faces: counts, pts, pixels, errors."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from swapstream.core.errors import InputError
from swapstream.pipeline.samples import make_clip, render_frames, write_clip
from swapstream.stages.sources.file import DecodeSettings, DecodeStage, probe

W, H, FPS, N = 320, 240, 30, 30  # 1 s clips keep every test well under a second


def decode_all(path, **kw):
    stage = DecodeStage(DecodeSettings(str(path), **kw))
    info = stage.setup()
    try:
        return info, list(stage.frames())
    finally:
        stage.close()


@pytest.fixture(scope="module")
def source():
    """The N rendered frames, (H, W, 3) uint8 RGB, that the clips are made of."""
    return list(render_frames(("astronaut",), N, W, H))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("dec") / "clip.mp4", seconds=N / FPS, fps=FPS, width=W, height=H)


def test_frames_match_what_was_written(clip, source):
    info, packets = decode_all(clip)
    assert (info.width, info.height, info.fps, info.rotation) == (W, H, FPS, 0)
    assert info.frames == N and info.frames_exact and info.has_audio
    assert info.codec == "h264" and info.pix_fmt == "yuv420p"
    assert info.duration == pytest.approx(1.0, abs=1e-3)
    assert [p.index for p in packets] == list(range(N))
    assert [p.time for p in packets] == pytest.approx([i / FPS for i in range(N)], abs=1e-6)
    assert all(p.time_base == info.time_base for p in packets)
    for p, want in zip(packets, source):
        assert p.frame.shape == (H, W, 3) and p.frame.dtype == np.uint8 and p.frame.flags.c_contiguous
        # Close to what was rendered: also proves RGB order (BGR would be far off on this image).
        assert np.abs(p.frame.astype(np.int16) - want).mean() < 3


def test_probe_reports_the_same_info(clip):
    info, _ = decode_all(clip)
    assert probe(clip) == info


def test_ten_bit_input_decodes_to_uint8_rgb(tmp_path, source):
    path = write_clip(tmp_path / "10bit.mp4", source[:10], FPS, audio=False, pix_fmt="yuv420p10le")
    info, packets = decode_all(path)
    assert info.pix_fmt == "yuv420p10le"
    assert len(packets) == 10
    assert all(p.frame.dtype == np.uint8 and p.frame.shape == (H, W, 3) for p in packets)
    assert np.abs(packets[5].frame.astype(np.int16) - source[5]).mean() < 3


def test_variable_frame_rate_pts_survive(tmp_path, source):
    ms = [0, 33, 50, 120, 130, 300, 333, 340, 500, 700]  # irregular gaps, in milliseconds
    path = write_clip(tmp_path / "vfr.mp4", source[:10], FPS, audio=False, pts=ms,
                      time_base=Fraction(1, 1000))
    _, packets = decode_all(path)
    assert [p.time for p in packets] == pytest.approx([t / 1000 for t in ms], abs=1e-6)


def test_missing_pts_are_derived_from_the_frame_rate(tmp_path, source):
    path = tmp_path / "raw.h264"  # a raw H.264 stream carries no timestamps at all
    with av.open(str(path), "w", format="h264") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        for i, f in enumerate(source[:8]):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            out.mux(vs.encode(vf))
        out.mux(vs.encode())
    info, packets = decode_all(path)
    assert [p.time for p in packets] == pytest.approx([i / info.fps for i in range(8)], abs=1e-6)


def test_display_rotation_is_applied(tmp_path, source):
    path = tmp_path / "rot.mp4"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.set_display_rotation(90)  # a phone held upright
        for i, f in enumerate(source[:5]):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            out.mux(vs.encode(vf))
        out.mux(vs.encode())
    info, packets = decode_all(path)
    assert (info.width, info.height, info.rotation) == (H, W, 90)
    assert packets[0].frame.shape == (W, H, 3)
    assert np.abs(packets[2].frame.astype(np.int16) - np.rot90(source[2], 1)).mean() < 3
    info, packets = decode_all(path, autorotate=False)
    assert (info.width, info.height, info.rotation) == (W, H, 90)
    assert packets[0].frame.shape == (H, W, 3)


def _assert_input_error(path, *words):
    with pytest.raises(InputError) as e:
        decode_all(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    for w in words:
        assert w in msg
    return msg


def test_missing_file(tmp_path):
    _assert_input_error(tmp_path / "nope.mp4", "not found")


def test_directory(tmp_path):
    _assert_input_error(tmp_path, "directory")


def test_text_file(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are not the frames you are looking for\n" * 20)
    _assert_input_error(path, "not a media file")


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.mkv"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    _assert_input_error(path, "not a media file")


def test_audio_only_file(tmp_path):
    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w") as out:
        s = out.add_stream("aac", rate=48000, layout="mono")
        for k in range(10):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts = 48000, k * 1024
            out.mux(s.encode(af))
        out.mux(s.encode())
    _assert_input_error(path, "no video stream")


def _cut_in_half(src, dst):
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def test_truncated_mp4_index_at_end(clip, tmp_path):
    # PyAV writes the 'moov' index last, so the first half of the file has none.
    _assert_input_error(_cut_in_half(clip, tmp_path / "half.mp4"), "truncated")


def test_truncated_mp4_index_up_front(tmp_path, source):
    full = tmp_path / "faststart.mp4"
    with av.open(str(full), "w", options={"movflags": "faststart"}) as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        for i, f in enumerate(source):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            out.mux(vs.encode(vf))
        out.mux(vs.encode())
    # The index promises N frames; the samples of the second half are gone.
    _assert_input_error(_cut_in_half(full, tmp_path / "half.mp4"), "truncated")


def test_truncated_mkv_ends_early(tmp_path, source):
    full = write_clip(tmp_path / "full.mkv", source, FPS, audio=False)
    msg = _assert_input_error(_cut_in_half(full, tmp_path / "half.mkv"), "ends early")
    assert "truncated" in msg


def test_frames_is_single_pass_and_needs_setup(clip):
    stage = DecodeStage(DecodeSettings(str(clip)))
    with pytest.raises(RuntimeError):
        stage.info  # noqa: B018
    stage.setup()
    assert len(list(stage.frames())) == N
    with pytest.raises(RuntimeError):
        list(stage.frames())
    stage.close()
    stage.close()
