"""The Ray Train job with real Ray: 2 CPU workers (gloo, DDP), checkpoints, resume, a killed worker."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from safetensors.torch import load_file

from swapstream.core.errors import ModelError, SwapstreamError
from swapstream.engines.checkpoint import load_checkpoint
from swapstream.pipeline.cli import main
from swapstream.training.job import train_job
from swapstream.training.loop import TrainConfig
from swapstream.training.runstore import checkpoint_dirs, run_name

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _cfg(facesets, out, **kw) -> TrainConfig:
    kw = {"preset": "lite64", "batch_size": 4, "lr": 5e-4, "save_every": 3, "preview_every": 3,
          "log_every": 1, "workers": 2, "keep": 2, **kw}
    return TrainConfig(str(facesets[0]), str(facesets[1]), str(out), **kw)


def _adam_steps(out: Path) -> set[float]:
    opt = load_file(out / "optimizer.safetensors")
    return {v.item() for k, v in opt.items() if k.startswith("state.") and k.endswith(".step")}


def _history_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "history.jsonl").read_text().splitlines()]


def test_two_workers_train_checkpoint_and_resume(facesets, tmp_path, monkeypatch):
    # relative paths, as a person types them: the workers run in other working directories
    monkeypatch.chdir(tmp_path)
    rel = [os.path.relpath(f, tmp_path) for f in facesets]
    out = tmp_path / "m"
    res = train_job(_cfg(rel, "m", steps=7, tensorboard="tb"), progress=False)
    assert res.step == 7
    ckpt = load_checkpoint(out, with_optimizer=True)
    assert ckpt.step == 7 and ckpt.training["workers"] == 2
    assert _adam_steps(out) == {7.0}
    # one sampling generator per worker is saved, and they differ (each worker draws its own batches)
    rng = {k: v for k, v in ckpt.optimizer.items() if k.startswith("rng.")}
    assert set(rng) == {"rng.0", "rng.1"} and not (rng["rng.0"] == rng["rng.1"]).all()
    # Ray keeps the last 2 (steps 6 and 7), each a complete checkpoint
    kept = checkpoint_dirs(tmp_path / "m.train" / run_name(out))
    assert len(kept) == 2
    assert sorted(load_checkpoint(k).step for k in kept) == [6, 7]
    assert _history_steps(out) == list(range(1, 8))
    for png in ("preview.png", "loss_curve.png"):
        assert cv2.imread(str(out / png)) is not None, png
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 200

    # the same command again, with more steps, continues: step counter and Adam state go on
    res2 = train_job(_cfg(rel, "m", steps=10), progress=False)
    assert res2.step == 10 and load_checkpoint(out).step == 10
    assert _adam_steps(out) == {10.0}
    assert _history_steps(out) == list(range(1, 11))


def test_cli_errors_before_any_worker_starts(facesets, tmp_path, capsys):
    base = ["train", "--a", str(facesets[0]), "--b", str(facesets[1]), "--steps", "2"]
    cases = [
        ([*base, "-o", str(tmp_path / "new"), "--resume"], "holds a checkpoint"),
        ([*base, "-o", str(tmp_path / "g"), "--gpu"], "no GPU"),
        (["train", "--a", str(tmp_path / "nope"), "--b", str(facesets[1]), "-o", str(tmp_path / "x")],
         "does not exist"),
        ([*base, "-o", str(tmp_path / "w"), "--runner", "local", "--workers", "2"], "--runner ray"),
    ]
    for argv, needle in cases:
        assert main(["-q", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "new").exists() and not (tmp_path / "g").exists()


def _train_workers(under: int | None = None) -> list[int]:
    """Pids of Ray Train's worker processes (descendants of `under` when given: the Ray a run
    started), leaving out their children (a fork inherits the title)."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines()]
    parent = {int(r[0]): int(r[1]) for r in rows if len(r) >= 2}
    titled = {int(r[0]) for r in rows if len(r) == 3 and "ray::RayTrainWorker" in r[2]}

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parent.get(pid, 0)
            if pid == under:
                return True
        return False

    return [p for p in titled if parent[p] not in titled and (under is None or descends(p))]


def test_killed_worker_restarts_from_checkpoint(facesets, tmp_path):
    out = tmp_path / "m"
    before = set(_train_workers())  # workers of other runs are not ours to kill
    cmd = [sys.executable, "-m", "swapstream.pipeline.cli", "-q", "train", "--a", str(facesets[0]), "--b",
           str(facesets[1]), "-o", str(out), "--steps", "60", "--batch-size", "4", "--lr", "5e-4",
           "--save-every", "5", "--preview-every", "100", "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = Path(str(out) + ".train", run_name(out))
    deadline = time.time() + 240
    while time.time() < deadline and not (run_dir / "checkpoint_manager_snapshot.json").exists():
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.5)
    victims = [p for p in _train_workers(under=proc.pid) if p not in before]
    assert len(victims) == 2, victims
    os.kill(victims[1], signal.SIGKILL)
    # the newest checkpoint Ray has registered (a folder still being copied is not registered yet)
    snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    killed_at = max(load_checkpoint(run_dir / r["checkpoint_dir_name"]).step
                    for r in snapshot["checkpoint_results"])
    log, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, log
    restarts = re.findall(r"restarted from its last checkpoint \(step (\d+)\)", log)
    assert restarts, log
    # it went on from a saved step (every 5), at or after the newest one registered before the kill
    assert all(int(k) % 5 == 0 and killed_at <= int(k) < 60 for k in restarts), (restarts, killed_at)
    ckpt = load_checkpoint(out, with_optimizer=True)
    assert ckpt.step == 60 and _adam_steps(out) == {60.0}
    steps = _history_steps(out)  # rows every 10 steps, none lost or repeated across the restart
    assert steps == sorted(set(steps)) and steps[-1] == 60


def test_user_errors_in_the_workers_stop_the_job_at_once(facesets, tmp_path):
    # a model in -o of another preset: the driver refuses before any worker starts ...
    out = tmp_path / "m"
    train_job(_cfg(facesets, out, steps=2, workers=1), progress=False)
    with pytest.raises(ModelError, match="preset 'lite64'"):
        train_job(_cfg(facesets, out, steps=4, workers=1, preset="original64"), progress=False)
    # ... and a faceset that goes bad after the start is reported from the worker, not retried
    broken = tmp_path / "broken"
    shutil.copytree(facesets[1], broken)
    for png in broken.glob("0*.png"):
        png.write_bytes(b"not a png")
    t = time.time()
    with pytest.raises(SwapstreamError):
        train_job(_cfg((facesets[0], broken), tmp_path / "n", steps=4, workers=1, max_failures=3),
                  progress=False)
    assert time.time() - t < 120  # not three restarts of the whole job
