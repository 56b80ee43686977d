"""EncodeStage round trips through real files: frame count, pts, audio remux, tags, failure paths."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from swapstream.core.errors import ConfigError, InputError, OutputError
from swapstream.pipeline.samples import make_clip, render_frames, write_clip
from swapstream.stages.sinks.file import EncodeSettings, EncodeStage, synthetic_tags
from swapstream.stages.sources.file import DecodeSettings, DecodeStage

W, H, FPS, N = 320, 240, 30, 30


def decode_all(path):
    stage = DecodeStage(DecodeSettings(str(path)))
    info = stage.setup()
    try:
        return info, list(stage.frames())
    finally:
        stage.close()


def encode(info, packets, out, audio_from=None, batch=8):
    stage = EncodeStage(EncodeSettings(str(out), audio_from=audio_from and str(audio_from)), info)
    stage.setup()
    for i in range(0, len(packets), batch):
        assert stage.process(packets[i:i + batch]) == packets[i:i + batch]
    assert stage.flush() == []
    return stage


def audio_packets(path):
    """[(payload bytes, pts seconds)] of the first audio stream, and its duration in seconds."""
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        pkts = [(bytes(p), float(p.pts * p.time_base)) for p in c.demux(a) if p.size]
        dur = a.duration * a.time_base if a.duration else c.duration / av.time_base
    return pkts, float(dur)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("enc") / "clip.mp4", seconds=N / FPS, fps=FPS, width=W, height=H)


@pytest.fixture(scope="module")
def decoded(clip):
    return decode_all(clip)


def test_round_trip_keeps_frames_pts_audio_and_pixels(clip, decoded, tmp_path):
    info, src = decoded
    out = tmp_path / "out.mp4"
    stage = encode(info, src, out, audio_from=clip)
    assert stage.warnings == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # temp file renamed away
    info2, got = decode_all(out)
    assert len(got) == len(src) == N
    assert info2.time_base == info.time_base  # mp4 -> mp4: same time base, so same pts
    assert [p.pts for p in got] == [p.pts for p in src]
    assert (info2.width, info2.height, info2.codec, info2.pix_fmt) == (W, H, "h264", "yuv420p")
    diff = np.mean([np.abs(a.frame.astype(np.int16) - b.frame).mean() for a, b in zip(src, got)])
    assert diff < 3, diff
    want, want_dur = audio_packets(clip)
    have, have_dur = audio_packets(out)
    assert [p for p, _ in have] == [p for p, _ in want]  # copied byte for byte, not re-encoded
    assert [t for _, t in have] == pytest.approx([t for _, t in want], abs=1e-6)
    assert have_dur == pytest.approx(want_dur, abs=0.1)


def test_audio_is_interleaved_with_video(clip, decoded, tmp_path):
    info, src = decoded
    out = tmp_path / "out.mkv"  # Matroska keeps packets in the order they were muxed
    encode(info, src, out, audio_from=clip)
    with av.open(str(out)) as c:
        kinds = "".join(p.stream.type[0] for p in c.demux() if p.size)
    assert kinds.count("v") == N
    assert "a" in kinds[: len(kinds) // 2] and "v" in kinds[len(kinds) // 2:]


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_variable_frame_rate_survives(tmp_path, ext):
    ms = [0, 33, 50, 120, 130, 300, 333, 340, 500, 700]  # irregular gaps, in milliseconds
    frames = list(render_frames(("astronaut",), len(ms), W, H))
    path = write_clip(tmp_path / "vfr.mkv", frames, FPS, audio=False, pts=ms, time_base=Fraction(1, 1000))
    info, src = decode_all(path)
    out = tmp_path / f"out{ext}"
    encode(info, src, out)
    _, got = decode_all(out)
    assert [p.time for p in got] == pytest.approx([t / 1000 for t in ms], abs=1e-6)


def test_odd_size_is_padded_to_even(tmp_path):
    # 4:4:4 is the one way to write an odd-sized H.264 input in the first place.
    frames = render_frames(("astronaut",), 15, 321, 241)
    path = write_clip(tmp_path / "odd.mkv", frames, FPS, audio=False, pix_fmt="yuv444p")
    info, src = decode_all(path)
    assert (info.width, info.height) == (321, 241)
    out = tmp_path / "out.mp4"
    encode(info, src, out)
    info2, got = decode_all(out)
    assert (info2.width, info2.height) == (322, 242) and len(got) == len(src)
    diff = np.mean([np.abs(b.frame[:241, :321].astype(np.int16) - a.frame).mean() for a, b in zip(src, got)])
    assert diff < 3, diff


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".mov"])
def test_synthetic_tag_reads_back(decoded, tmp_path, ext):
    info, src = decoded
    out = tmp_path / f"out{ext}"
    encode(info, src[:5], out)
    tags = synthetic_tags(out)
    assert tags == {"comment": EncodeSettings("x").synthetic_tag, "synthetic_media": "1"}


def test_audio_the_container_refuses_is_reencoded_to_aac(decoded, tmp_path):
    info, src = decoded
    pcm = tmp_path / "pcm.mkv"  # PCM with an unordered "2 channels" layout: mp4 refuses to copy it
    with av.open(str(pcm), "w") as out:
        s = out.add_stream("pcm_s16le", rate=48000, layout="stereo")
        for k in range(47):
            samples = np.zeros((1, 2 * 1024), np.int16)
            af = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
            af.sample_rate, af.pts = 48000, k * 1024
            out.mux(s.encode(af))
        out.mux(s.encode())
    out = tmp_path / "out.mp4"
    stage = encode(info, src, out, audio_from=pcm)
    assert len(stage.warnings) == 1 and "re-encoded to AAC" in stage.warnings[0]
    with av.open(str(out)) as c:
        (a,) = c.streams.audio
        assert a.codec_context.name == "aac" and a.layout.name == "stereo"
        assert float(a.duration * a.time_base) == pytest.approx(47 * 1024 / 48000, abs=0.1)


def test_missing_output_folder(decoded, tmp_path):
    info, _ = decoded
    stage = EncodeStage(EncodeSettings(str(tmp_path / "no" / "out.mp4")), info)
    with pytest.raises(OutputError, match="does not exist"):
        stage.setup()
    assert list(tmp_path.iterdir()) == []


def test_output_is_a_directory(decoded, tmp_path):
    info, _ = decoded
    target = tmp_path / "out.mp4"
    target.mkdir()
    with pytest.raises(OutputError, match="is a directory") as e:
        EncodeStage(EncodeSettings(str(target)), info).setup()
    assert str(target) in str(e.value) and "\n" not in str(e.value)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"] and not any(target.iterdir())


def test_unknown_extension(decoded, tmp_path):
    info, _ = decoded
    with pytest.raises(OutputError, match=r"\.mp4"):
        EncodeStage(EncodeSettings(str(tmp_path / "out.xyz")), info).setup()
    assert list(tmp_path.iterdir()) == []


def test_bad_audio_source_leaves_no_temp_file(decoded, tmp_path):
    info, _ = decoded
    settings = EncodeSettings(str(tmp_path / "out.mp4"), audio_from=str(tmp_path / "nope.mp4"))
    stage = EncodeStage(settings, info)
    with pytest.raises(InputError):
        stage.setup()
    assert list(tmp_path.iterdir()) == []


def test_abort_leaves_nothing(clip, decoded, tmp_path):
    info, src = decoded
    stage = EncodeStage(EncodeSettings(str(tmp_path / "out.mp4"), audio_from=str(clip)), info)
    stage.setup()
    stage.process(src[:10])
    assert stage.temp_path.exists() and stage.temp_path.parent == tmp_path
    assert stage.temp_path.suffix == ".mp4" and stage.temp_path.name.startswith(".out.partial-")
    stage.abort()
    stage.abort()
    assert list(tmp_path.iterdir()) == []


def test_abort_after_flush_keeps_the_output(decoded, tmp_path):
    info, src = decoded
    stage = encode(info, src[:5], tmp_path / "out.mp4")
    stage.abort()
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


@pytest.mark.parametrize("codec", ["nope264", "aac"])
def test_codec_that_is_not_a_video_encoder(decoded, tmp_path, codec):
    info, _ = decoded
    with pytest.raises(ConfigError, match=codec):
        EncodeStage(EncodeSettings(str(tmp_path / "out.mp4"), codec=codec), info).setup()
    assert list(tmp_path.iterdir()) == []


def test_hd_output_is_bt709_tagged_and_keeps_colours(tmp_path):
    """Untagged HD is read as BT.709 (as players do) and written converted and tagged BT.709."""
    rgb = np.zeros((720, 1280, 3), np.uint8)
    rgb[:] = (200, 60, 40)
    src = tmp_path / "u709.mp4"
    with av.open(str(src), "w") as c:  # an untagged HD file made with the BT.709 matrix
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 1280, 720, "yuv420p"
        for i in range(3):
            vf = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p", dst_colorspace=1, dst_color_range=1)
            vf.pts = i
            c.mux(s.encode(vf))
        c.mux(s.encode())
    dec = DecodeStage(DecodeSettings(str(src)))
    info = dec.setup()
    frames = list(dec.frames())
    dec.close()
    assert np.abs(frames[0].frame[100, 100].astype(int) - (200, 60, 40)).max() <= 3
    out = tmp_path / "out.mp4"
    enc = EncodeStage(EncodeSettings(str(out)), info)
    enc.setup()
    enc.process(frames)
    enc.flush()
    with av.open(str(out)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.colorspace, cc.color_primaries, cc.color_trc) == (1, 1, 1)
        back = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(back[100, 100].astype(int) - (200, 60, 40)).max() <= 4


def _yuv_planes(frame: av.VideoFrame) -> list[np.ndarray]:
    return [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].copy()
            for p in frame.planes]


def test_decoded_frames_go_to_the_encoder_as_they_are_outside_the_touched_boxes(clip, tmp_path):
    """keep_source: the encoder writes the decoder's own YUV; only a touched box is converted from
    the stages' RGB. Outside it the output is as close to the source as a plain transcode."""
    dec = DecodeStage(DecodeSettings(str(clip), keep_source=True))
    info = dec.setup()
    packets = list(dec.frames())
    dec.close()
    assert all(p.source is not None for p in packets)  # 8-bit yuv420p, even size: every frame
    enc = EncodeStage(EncodeSettings(str(tmp_path / "o.mp4")), info)
    box = (101, 51, 201, 151)  # odd corners: widened to even for the chroma planes
    p = packets[3]
    before = _yuv_planes(p.source)
    p.frame = p.frame.copy()
    p.frame[box[1]:box[3], box[0]:box[2]] = (250, 20, 20)
    p.touched.append(box)
    made = enc._from_source(p.source, p.frame, p.touched)
    got, whole = _yuv_planes(made), _yuv_planes(enc._to_yuv(p.frame))
    inside = np.zeros((H, W), bool)
    inside[50:152, 100:202] = True
    assert np.array_equal(got[0][~inside], before[0][~inside])  # the source's own Y outside
    assert np.array_equal(got[0][inside], whole[0][inside])  # the RGB conversion inside
    # chroma: as the whole frame's conversion inside, but for its filter at the box's edge
    assert np.array_equal(got[1][27:74, 52:99], whole[1][27:74, 52:99])
    assert np.abs(got[2][25:76, 50:101].astype(int) - whole[2][25:76, 50:101]).max() <= 40
    assert np.array_equal(got[1][:25], before[1][:25]) and np.array_equal(got[2][80:], before[2][80:])
    assert np.array_equal(_yuv_planes(p.source)[0], before[0])  # the decoder's frame is left alone
    assert enc._from_source(packets[4].source, packets[4].frame, []) is packets[4].source  # untouched
    # the stream (untagged, 240 lines) is written as BT.601: a BT.709-tagged frame goes through RGB
    tagged = av.VideoFrame(W, H, "yuv420p")
    assert enc._passes(tagged) and enc.colorspace == 6
    tagged.colorspace = 1
    assert not enc._passes(tagged)
    tagged.colorspace = 5
    assert enc._passes(tagged)

    out = tmp_path / "out.mp4"
    encode(info, packets, out)
    _, got_frames = decode_all(out)
    _, src = decode_all(clip)
    assert len(got_frames) == N
    red = got_frames[3].frame[60:140, 110:190].reshape(-1, 3).mean(0)
    assert np.abs(red - (250, 20, 20)).max() < 12, red  # the touched box made it into the file
    diff = np.mean([np.abs(a.frame[:, 220:].astype(np.int16) - b.frame[:, 220:]).mean()
                    for a, b in zip(src, got_frames)])
    assert diff < 3, diff


def test_frames_the_encoder_cannot_take_as_they_are_are_not_kept(tmp_path):
    """Rotated, 10-bit, odd-sized or full-range sources go through RGB as before."""
    from swapstream.core.video import passable

    def frame(fmt, w=64, h=48, **tags):
        f = av.VideoFrame(w, h, fmt)
        for k, v in tags.items():
            setattr(f, k, v)
        return f

    assert passable(frame("yuv420p"))
    assert not passable(frame("yuv420p"), quarter_turns=1)
    assert not passable(frame("yuv420p10le"))
    assert not passable(frame("yuv420p", w=63))
    assert not passable(frame("yuv420p", color_range=2))  # full range (JPEG)
    assert not passable(frame("yuv420p", colorspace=9))  # BT.2020: the encoder writes 709/601
    assert passable(frame("yuv420p", colorspace=5))
