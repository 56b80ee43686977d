"""`swapstream convert` end to end on real media, and every bad-input case through the CLI."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from swapstream.core.packet import FramePacket
from swapstream.engines.checkpoint import save_checkpoint
from swapstream.engines.model import SwapModel, preset
from swapstream.pipeline.cli import main
from swapstream.pipeline.config import ConvertConfig, SwapSection
from swapstream.pipeline.convert import convert
from swapstream.stages.face.detect import DetectStage
from swapstream.stages.sinks.file import synthetic_tags


def local_cfg(model_dir) -> ConvertConfig:
    return ConvertConfig(swap=SwapSection(model=str(model_dir)), runner="local")


def decode_all(path: Path) -> tuple[list[np.ndarray], list[float]]:
    frames, times = [], []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.pts * f.time_base))
    return frames, times


def audio_info(path: Path) -> tuple[float, list[bytes]]:
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        packets = [bytes(p) for p in c.demux(s) if p.size]
        return float(s.duration * s.time_base), packets


@pytest.fixture(scope="module")
def converted(clips, model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("convert") / "a_as_b.mp4"
    summary = convert(clips["a"], out, local_cfg(model_dir), progress=False)
    return out, summary


def test_same_frames_timestamps_and_audio(clips, converted):
    out, summary = converted
    src_frames, src_times = decode_all(clips["a"])
    dst_frames, dst_times = decode_all(out)
    assert len(dst_frames) == len(src_frames) == summary.frames == 60
    np.testing.assert_allclose(dst_times, src_times, atol=1e-4)
    src_dur, src_pk = audio_info(clips["a"])
    dst_dur, dst_pk = audio_info(out)
    assert abs(src_dur - dst_dur) < 0.05
    assert dst_pk == src_pk  # remuxed, not re-encoded
    assert summary.faces_swapped == 60 and summary.frames_without_face == 0
    assert synthetic_tags(out)["synthetic_media"] == "1"
    assert out.with_name(out.name + ".swapstream.json").exists()
    assert [p.name for p in out.parent.iterdir() if "partial" in p.name] == []


def test_face_changed_and_background_kept(clips, converted):
    out, _ = converted
    src_frames, _ = decode_all(clips["a"])
    dst_frames, _ = decode_all(out)
    det = DetectStage()
    changed, kept = [], []
    for i in (5, 30, 55):
        [p] = det.process([FramePacket(i, i, Fraction(1, 30), src_frames[i])])
        x0, y0, x1, y1 = p.faces[0].bbox
        cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
        diff = np.abs(src_frames[i].astype(int) - dst_frames[i].astype(int)).mean(2)
        centre = diff[int(cy - h / 6):int(cy + h / 6), int(cx - w / 6):int(cx + w / 6)]
        far = np.ones(diff.shape, bool)
        far[max(0, int(y0 - h)):int(y1 + h), max(0, int(x0 - w)):int(x1 + w)] = False
        changed.append(centre.mean())
        kept.append(diff[far].mean())
    assert min(changed) > 8, changed  # the face was replaced
    assert max(kept) < 2, kept  # elsewhere only codec noise


def test_frames_without_faces_pass_through(clips, model_dir, tmp_path):
    out = tmp_path / "empty.mkv"
    s = convert(clips["empty"], out, local_cfg(model_dir), progress=False)
    assert s.frames == 10 and s.frames_without_face == 10 and s.faces_swapped == 0
    src, _ = decode_all(clips["empty"])
    dst, _ = decode_all(out)
    assert len(dst) == 10 and np.abs(src[5].astype(int) - dst[5].astype(int)).mean() < 2


def test_two_faces_both_swapped(clips, model_dir, tmp_path):
    out = tmp_path / "ab.mp4"
    s = convert(clips["ab"], out, local_cfg(model_dir), progress=False)
    assert s.faces_swapped == 2 * s.frames


# --- bad input: exit 2, one line, no output ---------------------------------------------------

def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=48000, layout="mono")
        for i in range(20):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts, f.time_base = 48000, i * 1024, Fraction(1, 48000)
            c.mux(s.encode(f))
        c.mux(s.encode())
    return path


@pytest.fixture(scope="module")
def bad(clips, model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    text = root / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    cut = root / "cut.mp4"
    data = Path(clips["a"]).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    pickled = root / "model.pt"
    torch.save(SwapModel(preset("lite64"), ["a", "b"]).state_dict(), pickled)
    corrupt = root / "corrupt_model"
    corrupt.mkdir()
    for f in Path(model_dir).iterdir():
        (corrupt / f.name).write_bytes(f.read_bytes())
    w = corrupt / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    only_a = save_checkpoint(root / "only_a", SwapModel(preset("lite64"), ["a"]), "lite64")
    (root / "empty_faceset").mkdir()
    # an mp4 with its index up front (faststart), cut in half: it opens, then ends early
    faststart = root / "faststart.mp4"
    with av.open(str(clips["a"])) as i, av.open(str(faststart), "w", options={"movflags": "faststart"}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for pkt in i.demux():
            if pkt.dts is not None:
                pkt.stream = streams[pkt.stream.index]
                o.mux(pkt)
    cut_faststart = root / "cut_faststart.mp4"
    cut_faststart.write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 2])
    afile = root / "afile"
    afile.write_text("a file, not a folder")
    return {"text": text, "cut": cut, "audio": _audio_only(root / "tone.m4a"), "pickled": pickled,
            "corrupt": corrupt, "only_a": only_a, "empty_faceset": root / "empty_faceset",
            "cut_faststart": cut_faststart, "afile": afile}


def _cases(clips, model_dir, bad, out):
    good, model = str(clips["a"]), str(model_dir)
    return {
        "missing input": (["convert", "/nonexistent/in.mp4", out, "--model", model], "not found"),
        "not a video": (["convert", str(bad["text"]), out, "--model", model], "not a media file"),
        "truncated": (["convert", str(bad["cut"]), out, "--model", model], "truncated|moov|cut"),
        "no video stream": (["convert", str(bad["audio"]), out, "--model", model], "no video"),
        "unwritable output": (["convert", good, "/nonexistent/dir/out.mp4", "--model", model],
                              "does not exist"),
        "missing model": (["convert", good, out, "--model", "/nonexistent/model"], "model not found"),
        "pickled model": (["convert", good, out, "--model", str(bad["pickled"])], "pickle"),
        "corrupt model": (["convert", good, out, "--model", str(bad["corrupt"])], "truncated or corrupt"),
        "direction not in model": (["convert", good, out, "--model", str(bad["only_a"])],
                                   "cannot swap a2b"),
        "empty faceset": (["train", "--a", str(bad["empty_faceset"]), "--b", str(bad["empty_faceset"]),
                           "-o", out], "no landmarks.json|no usable faces"),
        "no faces to extract": (["extract", str(clips["empty"]), "-o", out], "no faces"),
        "extract from a non-video": (["extract", str(bad["text"]), "-o", out], "not a media file"),
        "extract into a file": (["extract", good, "-o", str(bad["afile"] / "fs")], "is a file"),
        "train into a file": (["train", "--a", "x", "--b", "y", "-o", str(bad["afile"] / "m")], "is a file"),
        "occluder share above 1": (["train", "--a", "x", "--b", "y", "-o", out, "--occluders", "2"],
                                   "occluders = 2.0 must be a share, 0-1"),
        "truncated faststart": (["convert", str(bad["cut_faststart"]), out, "--model", model],
                                "truncated|ends early|corrupt"),
        "unknown engine": (["convert", good, out, "--model", model, "--engine", "warp"],
                           "unknown engine 'warp'; engines: auto, eager"),
        "engine not installed": (["convert", good, out, "--model", model, "--engine", "tensorrt"],
                                 r"swapstream\[tensorrt\]|CUDA"),
        "hardware encoder without its GPU": (
            ["convert", good, out, "--model", model, "--codec", "h264_nvenc"],
            "h264_nvenc.*(cannot open here|not a video).*libx264"),
        "hardware decoder without its GPU": (["convert", good, out, "--model", model, "--hwaccel", "cuda"],
                                             "hwaccel 'cuda'.*none"),
    }


CASES = ["missing input", "not a video", "truncated", "no video stream", "unwritable output",
         "missing model", "pickled model", "corrupt model", "direction not in model", "empty faceset",
         "no faces to extract", "extract from a non-video", "extract into a file", "train into a file",
         "occluder share above 1",
         "truncated faststart", "unknown engine", "engine not installed"]
if not __import__("torch").cuda.is_available():  # these run where an NVIDIA GPU is
    CASES += ["hardware encoder without its GPU", "hardware decoder without its GPU"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line_and_no_output(case, clips, model_dir, bad, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    argv, pattern = _cases(clips, model_dir, bad, str(out))[case]
    before = sorted(tmp_path.iterdir())
    rc = main(["-q", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("swapstream: error: "), err
    assert "Traceback" not in err
    import re

    assert re.search(pattern, err), err
    assert not out.exists()
    assert sorted(tmp_path.iterdir()) == before  # nothing half-written beside it either
