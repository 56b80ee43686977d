"""Crash-safe segments on real media: keyframe plan, ranged decode, segmented == unsegmented
output, resume after a failed segment and after a killed driver, segments on a 2-node Ray cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import swapstream.pipeline.segments as segments
from swapstream.core.errors import ConfigError, OutputError
from swapstream.pipeline.cli import main
from swapstream.pipeline.config import ConvertConfig, SwapSection
from swapstream.pipeline.convert import convert
from swapstream.pipeline.samples import render_frames
from swapstream.pipeline.segment_plan import segments_at
from swapstream.pipeline.segments import (
    convert_segmented,
    default_work_dir,
    join_segments,
    keyframes,
    plan_segments,
    segment_resources,
)
from swapstream.stages.sinks.file import synthetic_tags
from swapstream.stages.sources.file import DecodeSettings, DecodeStage
from tests.procs import sigterm_when

W, H, FPS, N, GOP = 320, 240, 30, 90, 10  # 3 s, a keyframe every 10 frames
REPO = Path(__file__).resolve().parents[2]
RUN_SEGMENT = segments.run_segment  # the real one, before any test wraps it


def write_gop_clip(path: Path) -> Path:
    """N frames of the astronaut at W x H, H.264 with a keyframe every GOP frames, AAC tone."""
    tb = Fraction(1, FPS)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.time_base = vs.codec_context.time_base = tb
        vs.options = {"crf": "16", "preset": "veryfast", "g": str(GOP), "sc_threshold": "0"}
        aus = out.add_stream("aac", rate=48000, layout="mono")
        for i, frame in enumerate(render_frames(("astronaut",), N, W, H, 0.6)):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = i, tb
            out.mux(vs.encode(vf))
        out.mux(vs.encode())
        for start in range(0, N * 48000 // FPS, 1024):
            tone = (0.2 * np.sin(2 * np.pi * 440 * (start + np.arange(1024)) / 48000)).astype(np.float32)
            af = av.AudioFrame.from_ndarray(tone[None], format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = 48000, start, Fraction(1, 48000)
            out.mux(aus.encode(af))
        out.mux(aus.encode())
    return path


def read_video(path: Path) -> tuple[list[int], Fraction, list[np.ndarray]]:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        tb = c.streams.video[0].time_base
        return [f.pts for f in frames], tb, [f.to_ndarray(format="rgb24") for f in frames]


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(audio=0) if p.size]


def assert_complete(out: Path, src: Path) -> None:
    """Same frame count and audio packets as the source; in mp4 the same timestamps, exactly
    (Matroska stores milliseconds)."""
    pts, tb, frames = read_video(out)
    src_pts, src_tb, _ = read_video(src)
    assert len(frames) == N
    if out.suffix == ".mp4":
        assert [p * tb for p in pts] == [p * src_tb for p in src_pts]
    assert audio_packets(out) == audio_packets(src)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_gop_clip(tmp_path_factory.mktemp("segclip") / "gop10.mp4")


@pytest.fixture(scope="module")
def cfg(model_dir) -> ConvertConfig:
    return ConvertConfig(swap=SwapSection(model=str(model_dir)), runner="local")


@pytest.fixture(scope="module")
def reference(clip, cfg, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("segref") / "whole.mp4"
    convert(clip, out, cfg, progress=False)
    return out


class Counter:
    """Wraps run_segment: records the segment indices it is called with; may fail on one."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls, self.fail_on = [], fail_on

    def __call__(self, job):
        self.calls.append(job.segment.index)
        if job.segment.index == self.fail_on:
            raise RuntimeError(f"injected failure in segment {job.segment.index}")
        return RUN_SEGMENT(job)


# --- planning and ranged decode ---------------------------------------------------------------

def test_plan_splits_at_keyframes(clip):
    pts, tb, idx = keyframes(clip)
    assert tb == Fraction(1, 15360)  # the mp4 muxer's timescale for 1/30
    assert idx == list(range(0, N, GOP)) and pts == [i * 512 for i in idx]
    plan = plan_segments(clip, 3)
    assert [(s.first_index, s.frames) for s in plan] == [(0, 30), (30, 30), (60, 30)]
    assert [s.start_pts for s in plan] == [None, 30 * 512, 60 * 512]
    assert [s.end_pts for s in plan] == [30 * 512, 60 * 512, None]
    # each segment after the first runs the 8 frames before it through detect and align (unwritten)
    assert [(s.lead, s.lead_pts) for s in plan] == [(0, None), (8, 22 * 512), (8, 52 * 512)]
    assert len(plan_segments(clip, 100)) == N // GOP  # no more segments than keyframes
    assert len(plan_segments(clip, 0)) == 1  # automatic: about one per minute
    plan4 = plan_segments(clip, 4)
    assert sum(s.frames for s in plan4) == N and all(s.first_index % GOP == 0 for s in plan4)


def test_segment_tasks_take_a_gpu_share_where_the_cluster_has_gpus():
    def node(cpu, gpu=0, alive=True):
        return {"Alive": alive, "Resources": {"CPU": cpu, **({"GPU": gpu} if gpu else {})}}

    assert segment_resources([node(2)], "auto") == {"num_cpus": 1}  # no GPU: CPU only
    # a 16-core node with one GPU: 16 segments at once, each with 1/16 of the GPU
    assert segment_resources([node(8), node(16, 1)], "auto") == {"num_cpus": 1, "num_gpus": 0.0625}
    assert segment_resources([node(16, 1), node(8, 4)], "cuda") == {"num_cpus": 1, "num_gpus": 0.0625}
    assert segment_resources([node(4, 8)], "auto") == {"num_cpus": 1, "num_gpus": 1.0}
    assert segment_resources([node(16, 1)], "cpu") == {"num_cpus": 1}  # the user asked for the CPU
    assert segment_resources([node(16, 1, alive=False), node(2)], "auto") == {"num_cpus": 1}
    # six shares must fit on one GPU: rounded down to Ray's 1/10000, never to zero
    assert segment_resources([node(6, 1)], "auto") == {"num_cpus": 1, "num_gpus": 0.1666}
    assert segment_resources([node(30000, 1)], "auto") == {"num_cpus": 1, "num_gpus": 0.0001}
    # most CPUs on CPU-only nodes: GPU-share tasks would leave them idle, so none is asked for
    assert segment_resources([node(32), node(8, 1)], "auto") == {"num_cpus": 1}


def test_lead_context_is_cut_short_by_the_start_of_the_video():
    pts = [10 * i for i in range(20)]
    plan = segments_at(pts, [0, 5, 9], 8)
    assert [(s.first_index, s.frames, s.start_pts, s.end_pts) for s in plan] == \
        [(0, 5, None, 50), (5, 4, 50, 90), (9, 11, 90, None)]
    # at most 8 frames, never before frame 0, whatever lies between the cuts
    assert [(s.lead, s.lead_pts) for s in plan] == [(0, None), (5, 0), (8, 10)]


def test_ranged_decode_keeps_global_indices_and_pts(clip):
    def decode(**kw):
        stage = DecodeStage(DecodeSettings(str(clip), **kw))
        stage.setup()
        try:
            return list(stage.frames())
        finally:
            stage.close()

    whole = decode()
    # a start that is not a keyframe: decoded from the keyframe before it, earlier frames dropped
    part = decode(start_pts=25 * 512, end_pts=47 * 512, first_index=25)
    assert [p.index for p in part] == list(range(25, 47))
    assert [p.pts for p in part] == [p.pts for p in whole[25:47]]
    assert all(np.array_equal(a.frame, b.frame) for a, b in zip(part, whole[25:47]))
    tail = decode(start_pts=80 * 512, first_index=80)
    assert [p.index for p in tail] == list(range(80, N))


# --- segmented output ---------------------------------------------------------------------------

def test_segmented_equals_unsegmented(clip, cfg, reference, tmp_path):
    out = tmp_path / "segmented.mp4"
    s = convert_segmented(clip, out, cfg, 3, progress=False)
    assert s.frames == N and s.faces_swapped == N and s.frames_without_face == 0
    assert_complete(out, clip)
    ref_pts, ref_tb, ref = read_video(reference)
    pts, tb, got = read_video(out)
    assert (pts, tb) == (ref_pts, ref_tb)
    diff = np.array([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(ref, got)])
    # Different GOPs: codec-noise-sized differences. The lead frames bring tracks and landmark
    # smoothing to each edge warmed up, so the frames after an edge are no worse than the rest
    # (without the lead, the frame after the first edge reads ~1.56 against a mean of ~0.9).
    assert diff.mean() < 1.5 and diff.max() < 3, diff.round(2)
    assert diff[[30, 31, 32, 60, 61, 62]].max() < diff.mean() + 0.5, diff.round(2)
    assert synthetic_tags(out) == synthetic_tags(reference)
    resolved = json.loads(out.with_name(out.name + ".swapstream.json").read_text())
    assert resolved["segments"] == 3 and [e["node_id"] for e in resolved["segment_runs"]] == ["local"] * 3
    assert not default_work_dir(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["segmented.mp4", "segmented.mp4.swapstream.json"]


def test_join_refuses_segments_with_other_codec_parameters(clip, tmp_path):
    files = []
    for k, (w, h) in enumerate([(64, 48), (80, 48)]):  # another size: another SPS
        files.append(tmp_path / f"seg-{k}.mp4")
        with av.open(str(files[-1]), "w") as out:
            vs = out.add_stream("libx264", rate=FPS)
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            for i in range(3):
                vf = av.VideoFrame.from_ndarray(np.zeros((h, w, 3), np.uint8), format="rgb24")
                vf.pts = k * 3 + i
                out.mux(vs.encode(vf))
            out.mux(vs.encode())
    with pytest.raises(OutputError, match="extradata differs"):
        join_segments(files, clip, tmp_path / "joined.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg-0.mp4", "seg-1.mp4"]  # no partial file


def test_failed_segment_then_rerun_runs_only_the_rest(clip, cfg, tmp_path, monkeypatch):
    out = tmp_path / "resumed.mp4"
    work = default_work_dir(out)
    monkeypatch.setattr(segments, "run_segment", failing := Counter(fail_on=2))
    with pytest.raises(RuntimeError, match="injected failure in segment 2"):
        convert_segmented(clip, out, cfg, 4, progress=False)
    assert failing.calls == [0, 1, 2] and not out.exists()
    m = segments.read_manifest(work)
    assert [e["status"] for e in m["segments"]] == ["done", "done", "pending", "pending"]
    assert all((work / e["file"]).is_file() for e in m["segments"][:2])

    monkeypatch.setattr(segments, "run_segment", counter := Counter())
    s = convert_segmented(clip, out, cfg, 4, progress=False)
    assert counter.calls == [2, 3]
    assert s.frames == N and s.faces_swapped == N and any("resumed: 2 of 4" in w for w in s.warnings)
    assert_complete(out, clip)
    assert not work.exists()


def test_other_config_starts_afresh_and_resume_says_why(clip, cfg, tmp_path, monkeypatch, capsys):
    out = tmp_path / "fresh.mkv"
    monkeypatch.setattr(segments, "run_segment", Counter(fail_on=1))
    with pytest.raises(RuntimeError):
        convert_segmented(clip, out, cfg, 3, progress=False)
    other = ConvertConfig(swap=SwapSection(model=cfg.swap.model), runner="local",
                          encode=type(cfg.encode)(crf=30))
    with pytest.raises(ConfigError, match="another input, config or model"):
        convert_segmented(clip, out, other, 3, progress=False, resume=True)
    monkeypatch.setattr(segments, "run_segment", counter := Counter())
    convert_segmented(clip, out, other, 3, progress=False)
    assert counter.calls == [0, 1, 2]  # the stale segment 0 (crf 18) was not reused
    assert_complete(out, clip)
    # --resume with nothing to resume: one line, exit 2, nothing written
    again = tmp_path / "again.mp4"
    rc = main(["-q", "convert", str(clip), str(again), "--model", cfg.swap.model, "--runner", "local",
               "--segments", "3", "--resume"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "nothing to resume" in err and len(err.splitlines()) == 1
    assert not again.exists() and not default_work_dir(again).exists()


@pytest.mark.slow
def wait_for_a_done_segment(proc: subprocess.Popen, work: Path, seconds: float = 120) -> None:
    """Until the run's manifest records a finished segment, or `proc` ends, or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None and not a_segment_done(work):
        time.sleep(0.02)


def a_segment_done(work: Path) -> bool:
    """Whether the manifest in `work` records a finished segment."""
    m = segments.read_manifest(work)
    return bool(m) and any(e["status"] == "done" for e in m["segments"])


def test_killed_driver_resumes_without_redoing_finished_segments(clip, cfg, tmp_path, monkeypatch):
    out = tmp_path / "killed.mp4"
    work = default_work_dir(out)
    code = ("from swapstream.pipeline.config import ConvertConfig, SwapSection\n"
            "from swapstream.pipeline.segments import convert_segmented\n"
            f"convert_segmented({str(clip)!r}, {str(out)!r}, "
            f"ConvertConfig(swap=SwapSection(model={cfg.swap.model!r}), "
            "runner='local'), 6, progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        wait_for_a_done_segment(proc, work)
        assert proc.poll() is None, f"driver ended (rc {proc.returncode}) before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    m = segments.read_manifest(work)
    done = [e for e in m["segments"] if e["status"] == "done"]
    assert 1 <= len(done) < len(m["segments"]) and not out.exists()
    before = {e["file"]: (work / e["file"]).stat().st_mtime_ns for e in done}

    seen = {}

    def check_then_run(job):
        seen[job.segment.index] = {f: (work / f).stat().st_mtime_ns for f in before}
        return RUN_SEGMENT(job)

    monkeypatch.setattr(segments, "run_segment", check_then_run)
    s = convert_segmented(clip, out, cfg, 6, progress=False)
    assert sorted(seen) == [e["index"] for e in m["segments"] if e["status"] != "done"]
    assert all(v == before for v in seen.values())  # finished segment files were not rewritten
    assert s.frames == N
    assert_complete(out, clip)
    assert not work.exists() and [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


@pytest.mark.slow
def test_segments_spread_over_two_ray_nodes(clip, cfg, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        out = tmp_path / "ray.mp4"
        s = convert_segmented(clip, out, cfg, 4, progress=False, dispatch="ray")
        assert s.frames == N and s.faces_swapped == N
        assert_complete(out, clip)
        runs = json.loads(out.with_name(out.name + ".swapstream.json").read_text())["segment_runs"]
        assert len({r["node_id"] for r in runs}) == 2, runs
        assert not default_work_dir(out).exists()
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_segments_load_the_engine_the_first_one_built(clip, model_dir, tmp_path, monkeypatch):
    """The onnx engine is exported once into the engine cache; every later segment loads it."""
    from swapstream.engines.onnx import OnnxEngine

    monkeypatch.setenv("SWAPSTREAM_CACHE", str(tmp_path / "cache"))
    exports = []
    real = OnnxEngine.export
    monkeypatch.setattr(OnnxEngine, "export", lambda self, identity, path: (exports.append(identity),
                                                                             real(self, identity, path)))
    cfg = ConvertConfig(swap=SwapSection(model=str(model_dir), engine="onnx"), runner="local")
    s = convert_segmented(clip, tmp_path / "out.mp4", cfg, 3, progress=False)
    assert s.frames > 0 and s.faces_swapped > 0
    assert exports == ["b"]  # one export for three segments (a2b: B's decoder)
    kept = [p for p in (tmp_path / "cache" / "engines" / "onnx").iterdir() if p.is_dir()]
    assert len(kept) == 1  # one engine folder (beside it, the key's lock file)


def test_a_manifest_entry_outside_the_work_dir_is_refused(clip, cfg, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out" / "x.mp4"
    out.parent.mkdir()
    work = default_work_dir(out)
    monkeypatch.setattr(segments, "run_segment", Counter(fail_on=1))
    with pytest.raises(RuntimeError):
        convert_segmented(clip, out, cfg, 3, progress=False)
    m = segments.read_manifest(work)
    m["segments"][1]["file"] = "../x.mp4"  # what a tampered (or hand-edited) manifest may say
    (work / "manifest.json").write_text(json.dumps(m))
    monkeypatch.setattr(segments, "run_segment", counter := Counter())
    rc = main(["-q", "convert", str(clip), str(out), "--model", cfg.swap.model, "--runner", "local",
               "--segments", "3"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "'../x.mp4'" in err and "delete" in err, err
    assert counter.calls == [] and not out.exists() and [p for p in out.parent.iterdir() if p != work] == []


@pytest.mark.slow
def test_sigterm_leaves_the_manifest_resumable_and_the_same_command_finishes(clip, cfg, tmp_path, monkeypatch,
                                                                           capsys):
    """A service manager's stop (SIGTERM) in the middle of `convert --segments`: Ctrl-C's path,
    exit 143, the finished segments kept in the manifest; the same command again converts only
    the rest, and the joined output plays."""
    out = tmp_path / "termed.mp4"
    work = default_work_dir(out)
    argv = ["-q", "convert", str(clip), str(out), "--model", cfg.swap.model, "--runner", "local",
            "--segments", "6"]
    sigterm_when(argv, REPO, lambda: a_segment_done(work), 120)
    m = segments.read_manifest(work)  # whole (written atomically), and it names what is done
    done = [e for e in m["segments"] if e["status"] == "done"]
    assert 1 <= len(done) < len(m["segments"]) == 6
    assert all((work / e["file"]).stat().st_size == e["size"] for e in done)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]

    monkeypatch.setattr(segments, "run_segment", counter := Counter())
    assert main(argv) == 0, capsys.readouterr().err  # the same command again
    assert counter.calls == [e["index"] for e in m["segments"] if e["status"] != "done"]  # only the rest
    assert_complete(out, clip)  # every frame, the source's timestamps and audio: it plays
    assert not work.exists()
