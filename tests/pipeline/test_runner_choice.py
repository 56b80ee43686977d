"""`--runner auto`: each rule of choose_runner on real StreamInfo objects, the measured rates
file (round trip, moving average, corrupt and short runs ignored, a cache it cannot write), and
`swapstream convert` without --runner on a real clip."""

from __future__ import annotations

import argparse
import json
from fractions import Fraction
from pathlib import Path

import pytest

import swapstream.pipeline.convert as convert_mod
import swapstream.pipeline.runners.choice as rc
from swapstream.core.video import StreamInfo
from swapstream.pipeline.config import ConvertConfig, SwapSection
from swapstream.pipeline.runners.choice import (
    DEFAULT_RATES,
    LONG_S,
    MANY_CPUS,
    choose_runner,
    load_rates,
    record_rate,
)
from swapstream.pipeline.stats import RunStats
from swapstream.stages.sources.file import probe

NO_CLUSTER: dict[str, str] = {}  # an environment without RAY_ADDRESS


def stream(frames: int | None, width: int = 1280, height: int = 720, fps: float = 30.0,
           duration: float | None = None) -> StreamInfo:
    """A StreamInfo as decode gives it, for a video of `frames` frames (None: count unknown)."""
    if duration is None and frames is not None:
        duration = frames / fps
    return StreamInfo(path="in.mp4", width=width, height=height, fps=fps, time_base=Fraction(1, 15360),
                      duration=duration, frames=frames, rotation=0, codec="h264", pix_fmt="yuv420p",
                      has_audio=True, frames_exact=frames is not None)


# rates of a machine where Ray converts faster than the local runner once started (on the 2-core
# development machine it does not: DEFAULT_RATES)
FAST_RAY = {"local": {"mpx_per_s": 27.6, "startup_s": 2.0}, "ray": {"mpx_per_s": 35.0, "startup_s": 3.5}}


def small_machine(cfg: ConvertConfig, info: StreamInfo | None, rates=DEFAULT_RATES, **kw):
    """choose_runner on a 2-CPU machine without a GPU or cluster, with the given rates."""
    return choose_runner(cfg, info, **{"cpus": 2, "gpus": 0, "env": NO_CLUSTER, "rates": rates, **kw})


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    from swapstream.pipeline.samples import make_clip

    return make_clip(tmp_path_factory.mktemp("auto") / "short.mp4", ["astronaut"], 1.0, 30, 320, 240)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh swapstream cache folder for rates.json."""
    monkeypatch.setenv("SWAPSTREAM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --- the rules ------------------------------------------------------------------------------

def test_a_short_real_clip_runs_local_and_says_why(short_clip):
    info = probe(short_clip)
    c = small_machine(ConvertConfig(), info)
    assert c.runner == "local"
    assert c.line.startswith("runner: local (one machine, 2 CPUs, no GPU; ~")
    assert "320x240" in c.reason and "fps" in c.reason and f"{LONG_S:.0f} s" in c.reason, c.reason


def test_a_runner_asked_for_is_kept():
    for runner in ("ray", "local"):
        c = choose_runner(ConvertConfig(runner=runner), stream(None), cpus=64, gpus=4,
                          env={"RAY_ADDRESS": "h:6379"})
        assert (c.runner, c.reason) == (runner, "asked for")


def test_a_cluster_address_means_ray():
    c = small_machine(ConvertConfig(), stream(30), env={"RAY_ADDRESS": "10.0.0.5:6379"})
    assert c.runner == "ray" and "cluster address" in c.reason and "10.0.0.5:6379" in c.reason
    c = small_machine(ConvertConfig(address="head:6379"), stream(30))
    assert c.runner == "ray" and "head:6379" in c.reason


def test_segments_mean_ray():
    c = small_machine(ConvertConfig(segments=0), stream(30))
    assert c.runner == "ray" and "segments" in c.reason


def test_a_gpu_means_ray_unless_the_device_is_cpu():
    c = small_machine(ConvertConfig(), stream(30), gpus=1)
    assert c.runner == "ray" and "1 GPU" in c.reason
    c = small_machine(ConvertConfig(swap=SwapSection(device="cpu")), stream(30), gpus=1)
    assert c.runner == "local" and "GPU unused" in c.reason


def test_many_cpus_mean_ray():
    assert small_machine(ConvertConfig(), stream(30), cpus=16).runner == "ray"
    assert small_machine(ConvertConfig(), stream(30), cpus=MANY_CPUS).runner == "ray"
    assert small_machine(ConvertConfig(), stream(30), cpus=MANY_CPUS - 1).runner == "local"


def test_a_long_input_goes_to_ray_when_ray_is_faster():
    ten_minutes = stream(18_000)  # 720p at 30 fps: ~600 s locally at these rates
    c = small_machine(ConvertConfig(), ten_minutes, rates=FAST_RAY)
    local_s = rc.estimate_s(FAST_RAY["local"], 18_000, 1280, 720)
    ray_s = rc.estimate_s(FAST_RAY["ray"], 18_000, 1280, 720)
    assert ray_s < local_s and local_s > LONG_S
    assert c.runner == "ray"
    assert c.line.startswith("runner: ray (2 CPUs, no GPU, but ~")
    assert f"Ray's estimate {ray_s:.0f} s" in c.reason and f"local {local_s:.0f} s" in c.reason


def test_a_long_input_stays_local_when_ray_is_no_faster():
    slow_ray = {"local": DEFAULT_RATES["local"], "ray": {"mpx_per_s": 20.0, "startup_s": 3.5}}
    c = small_machine(ConvertConfig(), stream(18_000), rates=slow_ray)
    assert c.runner == "local" and "no shorter" in c.reason
    equal = {"local": DEFAULT_RATES["local"], "ray": dict(DEFAULT_RATES["local"])}
    assert small_machine(ConvertConfig(), stream(18_000), rates=equal).runner == "local"


def test_under_a_minute_of_work_stays_local_even_where_ray_would_win():
    info = stream(1500)  # ~52 s locally, ~43 s on Ray at these rates
    local_s = rc.estimate_s(FAST_RAY["local"], 1500, 1280, 720)
    assert rc.estimate_s(FAST_RAY["ray"], 1500, 1280, 720) < local_s < LONG_S
    assert small_machine(ConvertConfig(), info, rates=FAST_RAY).runner == "local"


def test_frame_count_from_duration_and_unknown_length():
    by_duration = stream(None, duration=600.0)  # no frame count: 600 s x 30 fps
    assert rc.frames_of(by_duration) == 18_000
    assert small_machine(ConvertConfig(), by_duration, rates=FAST_RAY).runner == "ray"
    unknown = stream(None, duration=None)
    c = small_machine(ConvertConfig(), unknown)
    assert c.runner == "local" and "length unknown" in c.reason


def test_bigger_frames_are_more_work():
    """400 frames are ~15 s of work in 720p but ~2 min in 4K: frames/s follow the pixels."""
    rates = {"local": {"mpx_per_s": 27.6, "startup_s": 2.0}, "ray": {"mpx_per_s": 35.0, "startup_s": 3.5}}
    assert small_machine(ConvertConfig(), stream(400, 3840, 2160), rates=rates).runner == "ray"
    assert small_machine(ConvertConfig(), stream(400), rates=rates).runner == "local"


# --- measured rates -------------------------------------------------------------------------

def test_record_then_load_round_trip_with_a_moving_average(cache):
    assert load_rates(2) == {r: {**v, "runs": 0} for r, v in DEFAULT_RATES.items()}
    # 300 frames of 1280x720 (0.9216 Mpx) in 12 s, 2 of them start-up: 27.648 Mpx/s
    assert record_rate("local", 300, 1280, 720, 12.0, 2.0, cpus=2)
    got = load_rates(2)
    assert got["local"]["mpx_per_s"] == pytest.approx(27.648, abs=1e-3)
    assert got["local"]["startup_s"] == pytest.approx(2.0) and got["local"]["runs"] == 1
    assert got["ray"] == {**DEFAULT_RATES["ray"], "runs": 0}  # not measured: the built-in figures
    assert load_rates(4)["local"] == {**DEFAULT_RATES["local"], "runs": 0}  # another CPU count
    # twice as fast, slower start: the stored figures move halfway
    assert record_rate("local", 300, 1280, 720, 9.0, 4.0, cpus=2)
    got = load_rates(2)["local"]
    assert got["mpx_per_s"] == pytest.approx((27.648 + 55.296) / 2, abs=1e-3)
    assert got["startup_s"] == pytest.approx(3.0) and got["runs"] == 2
    assert [p.name for p in cache.iterdir()] == ["rates.json"]  # no temporary file left
    data = json.loads((cache / "rates.json").read_text())
    assert set(data["rates"]) == {"local"} and set(data["rates"]["local"]) == {"2"}


def test_measured_rates_drive_the_choice(cache):
    info = stream(18_000)
    # the built-in 2-core rates: Ray never pays off
    assert choose_runner(ConvertConfig(), info, cpus=2, gpus=0, env=NO_CLUSTER).runner == "local"
    # this machine's Ray turned out fast: 200 Mpx/s
    assert record_rate("ray", 1000, 1280, 720, 3.5 + 1000 * 0.9216 / 200.0, 3.5, cpus=2)
    assert choose_runner(ConvertConfig(), info, cpus=2, gpus=0, env=NO_CLUSTER).runner == "ray"
    # and then slow, four times: 5 Mpx/s (the moving average gives each new run half the weight)
    for _ in range(4):
        assert record_rate("ray", 1000, 1280, 720, 3.5 + 1000 * 0.9216 / 5.0, 3.5, cpus=2)
    c = choose_runner(ConvertConfig(), info, cpus=2, gpus=0, env=NO_CLUSTER)
    assert c.runner == "local" and "no shorter" in c.reason


def test_a_corrupt_rates_file_is_ignored(cache):
    cache.mkdir(parents=True)
    (cache / "rates.json").write_text("{not json")
    assert load_rates(2) == {r: {**v, "runs": 0} for r, v in DEFAULT_RATES.items()}
    (cache / "rates.json").write_text(json.dumps(
        {"version": 1, "rates": {"local": {"2": {"mpx_per_s": -3, "startup_s": 1}},
                                 "ray": {"2": {"mpx_per_s": "fast", "startup_s": 1}}}}))
    assert load_rates(2) == {r: {**v, "runs": 0} for r, v in DEFAULT_RATES.items()}
    (cache / "rates.json").write_text("[1, 2]")
    assert load_rates(2)["local"]["runs"] == 0
    assert record_rate("local", 300, 1280, 720, 12.0, 2.0, cpus=2)  # replaces the corrupt file
    assert load_rates(2)["local"]["runs"] == 1


def test_short_and_impossible_runs_are_not_recorded(cache):
    assert not record_rate("local", 99, 1280, 720, 5.0, 1.0, cpus=2)
    assert not record_rate("local", 300, 1280, 720, 2.0, 2.0, cpus=2)  # no time after start-up
    assert not record_rate("warp", 300, 1280, 720, 12.0, 2.0, cpus=2)
    assert not (cache / "rates.json").exists()


def test_a_cache_it_cannot_write_is_skipped(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("SWAPSTREAM_CACHE", str(blocker / "cache"))  # a folder under a file
    assert record_rate("local", 300, 1280, 720, 12.0, 2.0, cpus=2) is False
    assert load_rates(2)["local"]["runs"] == 0


def test_convert_records_its_wall_time_but_not_a_clusters(cache, monkeypatch):
    monkeypatch.setattr(convert_mod, "gpu_count", lambda: 0)
    monkeypatch.setattr(convert_mod, "cpu_count", lambda: 2)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    info = stream(300)
    # 300 frames in 8 s of frames (10 s, 2 of them set-up), the runner call took 11 s in all
    convert_mod._record(ConvertConfig(runner="ray", address="h:6379"), info,
                        RunStats(frames=300, seconds=10.0, startup_s=2.0), 11.0)
    assert not (cache / "rates.json").exists()
    convert_mod._record(ConvertConfig(runner="ray"), info, RunStats(frames=300, seconds=10.0, startup_s=2.0),
                        11.0)
    got = load_rates(2)["ray"]
    assert got["startup_s"] == pytest.approx(3.0) and got["mpx_per_s"] == pytest.approx(300 * 0.9216 / 8)


# --- through the command line ---------------------------------------------------------------

def test_segments_dispatch_follows_the_choice(short_clip, capsys):
    from swapstream.pipeline.cli.convert import _segments_runner

    args = argparse.Namespace(input=str(short_clip), quiet=False)
    cfg, choice = _segments_runner(args, ConvertConfig(segments=0))
    assert cfg.runner == choice.runner == "ray" and "segments" in choice.reason
    assert capsys.readouterr().err.startswith("runner: ray (crash-safe segments")
    cfg, choice = _segments_runner(args, ConvertConfig(segments=0, runner="local"))
    assert cfg.runner == choice.runner == "local" and choice.reason == "asked for"


def test_convert_without_runner_picks_local_and_records_it(short_clip, tmp_path, monkeypatch, capsys):
    from swapstream.engines.checkpoint import save_checkpoint
    from swapstream.engines.model import SwapModel, preset
    from swapstream.pipeline.cli import main

    monkeypatch.setattr(rc, "cpu_count", lambda: 2)  # the decision of a small machine, on any machine
    monkeypatch.setattr(rc, "gpu_count", lambda: 0)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("SWAPSTREAM_CACHE", str(tmp_path / "cache"))
    model = save_checkpoint(tmp_path / "model", SwapModel(preset("lite64"), ["a", "b"]), "lite64")
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    rc_ = main(["convert", str(short_clip), str(out), "--model", str(model), "--engine", "eager",
                "--stats", str(stats)])
    err = capsys.readouterr().err
    assert rc_ == 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith("runner: ")]
    assert len(lines) == 1 and lines[0].startswith("runner: local (one machine, 2 CPUs, no GPU"), err
    resolved = json.loads(out.with_name(out.name + ".swapstream.json").read_text())
    assert resolved["runner"] == "local"
    s = json.loads(stats.read_text())
    assert s["runner"] == "local" and s["runner_reason"] == lines[0][len("runner: local ("):-1]
    assert not (tmp_path / "cache" / "rates.json").exists()  # 30 frames: too short to measure
