"""SIGTERM to a running `swapstream train` (a service manager's stop, `timeout`, Ray's job stop): it
takes Ctrl-C's path, exits 143, and leaves -o a checkpoint that loads and that the same command
with --resume continues. A real child process, a real signal, the real facesets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from swapstream.engines.checkpoint import load_checkpoint
from swapstream.training.loop import TrainConfig, train
from swapstream.training.runstore import run_name
from tests.procs import launched

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "swapstream.pipeline.cli", "-q"]
SAVE_EVERY = 3


def _start(facesets, out: Path, *extra: str) -> subprocess.Popen:
    """`train` for far more steps than the test waits for, a checkpoint every SAVE_EVERY steps."""
    cmd = [*CLI, "train", "--a", str(facesets[0]), "--b", str(facesets[1]), "-o", str(out),
           "--steps", "100000", "--batch-size", "4", "--lr", "5e-4", "--save-every", str(SAVE_EVERY),
           "--preview-every", "100000", "--log-every", "1", *extra]
    return subprocess.Popen(launched(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for(p: subprocess.Popen, path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if p.poll() is not None or time.monotonic() > deadline:
            p.kill()
            raise AssertionError(f"no {path} (rc {p.poll()}): {p.communicate()}")
        time.sleep(0.1)


def _term(p: subprocess.Popen) -> str:
    p.send_signal(signal.SIGTERM)
    try:
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    return err


def _assert_stopped_and_resumable(p: subprocess.Popen, err: str, facesets, out: Path) -> None:
    """Exit 143 with one line of ours, a checkpoint in -o that loads, and `train --resume` (in this
    process, on the local runner: -o is the same checkpoint for both runners) continuing it."""
    assert p.returncode == 143, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("swapstream:")]
    assert lines and lines[-1].startswith("swapstream: stopped by SIGTERM") and "Traceback" not in err, err
    ckpt = load_checkpoint(out, with_optimizer=True)  # verified: hash, preset, shapes
    assert ckpt.step >= SAVE_EVERY and ckpt.preset == "lite64"
    assert not [f for f in out.parent.iterdir() if ".tmp-" in f.name]  # no half-written checkpoint
    # the same command with --resume continues it: the step counter and Adam's state go on
    more = ckpt.step + 2
    cfg = TrainConfig(str(facesets[0]), str(facesets[1]), str(out), preset="lite64", steps=more, batch_size=4,
                      lr=5e-4, save_every=SAVE_EVERY, preview_every=100000, log_every=1, resume=True,
                      device="cpu")
    res = train(cfg, progress=False)
    assert res.step == more and load_checkpoint(out).step == more
    opt = load_file(out / "optimizer.safetensors")
    adam = {v.item() for k, v in opt.items() if k.startswith("state.") and k.endswith(".step")}
    assert adam == {float(more)}
    steps = [json.loads(line)["step"] for line in (out / "history.jsonl").read_text().splitlines()]
    assert steps == list(range(1, more + 1))  # nothing lost or repeated across the stop


def test_sigterm_to_local_training_keeps_a_checkpoint_that_resumes(facesets, tmp_path):
    out = tmp_path / "m"
    p = _start(facesets, out, "--runner", "local", "--device", "cpu")
    _wait_for(p, out / "model.json", 180)  # the first checkpoint (step SAVE_EVERY) is written
    err = _term(p)
    _assert_stopped_and_resumable(p, err, facesets, out)


def test_sigterm_to_a_ray_train_job_keeps_its_newest_checkpoint_in_o(facesets, tmp_path):
    # ray.init makes SIGTERM a bare sys.exit(15): without ours put back, -o stays empty, exit 15
    out = tmp_path / "m"
    p = _start(facesets, out)
    run_dir = Path(str(out) + ".train", run_name(out))
    _wait_for(p, run_dir / "checkpoint_manager_snapshot.json", 300)  # Ray registered a checkpoint
    err = _term(p)
    _assert_stopped_and_resumable(p, err, facesets, out)
