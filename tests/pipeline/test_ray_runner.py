"""The Ray runner with real Ray actors: same output as the local runner, faults, back-pressure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from swapstream.pipeline.config import ConvertConfig, SwapSection
from swapstream.pipeline.convert import convert
from swapstream.pipeline.samples import make_clip
from tests.pipeline.test_convert import audio_info, decode_all
from tests.procs import launched

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the module (the runner leaves a Ray it did not start running)."""
    import ray

    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"GLOG_minloglevel": "2"}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """6 s, 180 frames: long enough to kill a worker halfway."""
    return make_clip(tmp_path_factory.mktemp("long") / "long.mp4", ["astronaut"], 6.0, 30, 320, 240, 0.6)


@pytest.fixture(scope="module")
def longer_clip(tmp_path_factory) -> Path:
    """30 s, 900 frames: a conversion still running when a loaded machine gets round to the
    signal (the 6 s clip once finished first); tests end it early, so its length costs little."""
    return make_clip(tmp_path_factory.mktemp("longer") / "longer.mp4", ["astronaut"], 30.0, 30, 320, 240,
                     0.6)


def _ray_cfg(model_dir, **kw) -> ConvertConfig:
    return ConvertConfig(swap=SwapSection(model=str(model_dir)), runner="ray", batch_size=4, **kw)


def test_same_output_as_the_local_runner(ray_local, clips, model_dir, tmp_path):
    local = convert(clips["ab"], tmp_path / "local.mp4",
                    ConvertConfig(swap=SwapSection(model=str(model_dir)), runner="local"),
                    progress=False)
    ray_ = convert(clips["ab"], tmp_path / "ray.mp4", _ray_cfg(model_dir, detect_actors=2), progress=False)
    assert ray_.frames == local.frames == 30
    assert ray_.faces_swapped == local.faces_swapped == 60
    lf, lt = decode_all(tmp_path / "local.mp4")
    rf, rt = decode_all(tmp_path / "ray.mp4")
    assert rt == lt
    assert audio_info(tmp_path / "ray.mp4")[1] == audio_info(tmp_path / "local.mp4")[1]
    diff = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(lf, rf)]
    assert max(diff) < 1.5, diff  # codec noise only: the detect pool starts tracks at other frames
    names = [s.name for s in ray_.stats.stages]
    assert names == ["detect", "align", "swap", "hands", "blend", "encode"]
    assert ray_.stats.stages[0].actors == 2 and all(s.frames == 30 for s in ray_.stats.stages)


def test_ray_and_local_write_the_same_pixels(ray_local, clips, model_dir, tmp_path):
    """Same input, settings and batches: the frames the two runners hand the encoder are the same.
    Lossless x264 (crf 0) writes them exactly, whatever its threads, so the decoded outputs are
    compared: outside the faces bit for bit (both write the decoded frame's own YUV there), inside
    within the last bit of the networks' arithmetic in other processes and thread counts."""
    def cfg(runner: str) -> ConvertConfig:
        c = ConvertConfig(swap=SwapSection(model=str(model_dir)), runner=runner, batch_size=4,
                          detect_actors=1)
        c.encode.crf = 0
        return c

    convert(clips["ab"], tmp_path / "local.mp4", cfg("local"), progress=False)
    convert(clips["ab"], tmp_path / "ray.mp4", cfg("ray"), progress=False)
    (lf, _), (rf, _), (src, _) = (decode_all(p) for p in (tmp_path / "local.mp4", tmp_path / "ray.mp4",
                                                         clips["ab"]))
    assert len(lf) == len(rf) == len(src) == 30
    for a, b, s in zip(lf, rf, src):
        untouched = (a == s).all(axis=2)  # where the local runner wrote the source's own pixels
        assert untouched.mean() > 0.5  # most of the frame is not a face
        d = np.abs(a.astype(int) - b.astype(int))
        assert d[untouched].max() == 0
        assert d.mean() < 0.05 and (d > 2).mean() < 0.001, (d.mean(), (d > 2).mean())


def test_fused_and_separate_face_actors_give_the_same_video(ray_local, clips, model_dir, tmp_path):
    runs = {f: convert(clips["ab"], tmp_path / f"{f}.mp4", _ray_cfg(model_dir, fuse=f, detect_actors=1),
                       progress=False) for f in ("on", "off")}
    for r in runs.values():  # the fused actor still reports each stage's busy time
        assert [s.name for s in r.stats.stages] == ["detect", "align", "swap", "hands", "blend", "encode"]
        assert r.faces_swapped == 60 and all(s.busy_s > 0 for s in r.stats.stages)
    on, off = decode_all(tmp_path / "on.mp4"), decode_all(tmp_path / "off.mp4")
    assert on[1] == off[1]
    assert max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(on[0], off[0])) < 0.5


def _actor_pids(title: str) -> list[int]:
    """Pids of the processes titled `title`, leaving out their children (a fork inherits the title)."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines()]
    titled = {int(r[0]): int(r[1]) for r in rows if len(r) == 3 and title in r[2]}
    return [pid for pid, parent in titled.items() if parent not in titled]


def _kill_one(title: str, earlier: set[int], run: threading.Thread, deadline: float) -> int:
    """SIGKILL one new worker titled `title` while `run` goes on; its pid."""
    while time.time() < deadline and run.is_alive():
        for pid in (p for p in _actor_pids(title) if p not in earlier):
            try:
                os.kill(pid, signal.SIGKILL)
                return pid
            except ProcessLookupError:  # gone between ps and kill: look again
                continue
        time.sleep(0.1)
    raise AssertionError(f"no {title} process to kill while the conversion ran")


@pytest.mark.parametrize(("stage", "fuse"),
                         [("Detect", "auto"), ("Blend", "off"), ("AlignSwapHandsBlend", "on")])
def test_a_killed_worker_is_restarted_and_no_frame_is_lost(ray_local, long_clip, model_dir, tmp_path, stage,
                                                            fuse):
    out = tmp_path / "out.mp4"
    title = f"ray::{stage}Actor"
    earlier = set(_actor_pids(title))  # workers of earlier runs may still be exiting
    result = {}
    run = threading.Thread(target=lambda: result.update(
        s=convert(long_clip, out, _ray_cfg(model_dir, fuse=fuse), progress=False)))
    run.start()
    deadline = time.time() + 90
    while time.time() < deadline and run.is_alive() and not list(tmp_path.glob(".out.partial-*")):
        time.sleep(0.1)  # the encoder has opened its file: every worker is ready
    time.sleep(1.0)  # let them work on some frames first
    killed = _kill_one(title, earlier, run, deadline)
    run.join(timeout=180)
    assert not run.is_alive()
    assert "s" in result, "conversion failed after the worker was killed"
    src_frames, src_t = decode_all(long_clip)
    dst_frames, dst_t = decode_all(out)
    assert dst_t == src_t  # every frame once, in order
    assert result["s"].faces_swapped == len(src_t)
    assert killed not in _actor_pids(title)  # that process is gone; a new one finished the work


def test_in_flight_batches_are_bounded(ray_local, long_clip, model_dir, tmp_path, monkeypatch):
    from swapstream.pipeline.runners import ray as ray_runner

    seen = []
    real = ray_runner._Pipeline.submit

    def spy(self, batch_no, batch):
        seen.append((len(self.inflight), self.window))
        return real(self, batch_no, batch)

    monkeypatch.setattr(ray_runner._Pipeline, "submit", spy)
    convert(long_clip, tmp_path / "out.mp4", _ray_cfg(model_dir, max_in_flight=3), progress=False)
    assert len(seen) == 45 and all(w == 3 for _, w in seen)
    assert max(n for n, _ in seen) <= 2  # never more than the window in flight, whatever the length


def _cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(launched([sys.executable, "-m", "swapstream.pipeline.cli", "-q", *args]), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_or_killed_driver_leaves_no_output(longer_clip, model_dir, tmp_path, sig):
    out = tmp_path / "out.mp4"
    proc = _cli(["convert", str(longer_clip), str(out), "--model", str(model_dir), "--runner", "ray"])
    deadline = time.time() + 90
    while time.time() < deadline and not list(tmp_path.glob(".out.partial-*")):
        time.sleep(0.2)  # wait until the encoder has opened its temporary file
    assert list(tmp_path.glob(".out.partial-*")), proc.communicate(timeout=30)
    assert proc.poll() is None, "the conversion ended before it could be interrupted"
    proc.send_signal(sig)
    try:
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert not out.exists()
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert not list(tmp_path.glob(".out.partial-*"))  # cleaned up on Ctrl-C
