"""What real machines do to a running swapstream: SIGTERM and SIGHUP (service managers, `timeout`,
a closed terminal) and a file-size limit (`ulimit -f`, a full disk in small). Real child
processes, real signals, real files played back with PyAV."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.pipeline.test_convert import decode_all
from tests.procs import launched

pytestmark = pytest.mark.slow
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
CLI = [sys.executable, "-m", "swapstream.pipeline.cli"]


def finish(p: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    try:
        return p.communicate(timeout=timeout)
    finally:  # never leave a live process looping through the rest of the suite
        if p.poll() is None:
            p.kill()
            p.communicate()


def ours(err: str) -> list[str]:
    """Our stderr lines (MediaPipe's C++ logs its own, which swapstream cannot silence)."""
    return [ln for ln in err.strip().splitlines() if ln.startswith(("live:", "swapstream:"))]


def partials(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if "partial" in p.name]


def start_live(model_dir, clip, *outputs: str, limits: dict | None = None) -> subprocess.Popen:
    """`swapstream live` on `clip` with `outputs`, SIGINT's default action and resource `limits`
    (tests.procs.launched)."""
    p = subprocess.Popen(launched([*CLI, "live", "--model", str(model_dir), "--engine", "eager", "--camera",
                                   str(clip), "--loop", *outputs], **(limits or {})),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    for _ in range(2):  # "engine: ..." then "live: <source> ..." once it runs
        line = p.stdout.readline()
        assert line.startswith(("engine: ", "live: ")), (line, finish(p, 5))
    return p


def wait_for_a_fragment(p: subprocess.Popen, folder: Path, seconds: float = 60) -> None:
    """Until the recording's temporary file holds its first media fragment (a keyframe every 2 s,
    one fragment each: ~90 kB at 400x300), i.e. at least 2 s of frames; polled, not a fixed sleep,
    so a loaded machine waits longer and an idle one no longer than it must."""
    def size(f: Path) -> int:
        try:
            return f.stat().st_size
        except FileNotFoundError:
            return 0

    deadline = time.monotonic() + seconds
    while not any(size(f) > 16_384 for f in partials(folder)):
        assert p.poll() is None and time.monotonic() < deadline, finish(p, 5)
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_term_and_hup_during_a_live_recording_leave_a_playable_file_and_no_partial(clips, model_dir, tmp_path,
                                                                                   sig):
    rec = tmp_path / "rec.mp4"
    p = start_live(model_dir, clips["a"], "--record", str(rec))
    wait_for_a_fragment(p, tmp_path)
    p.send_signal(sig)
    out, err = finish(p)
    name = signal.Signals(sig).name
    assert p.returncode == 0, err  # a live session ends normally on a stop signal, as on Ctrl-C
    assert f"ended ({name})" in out and "Traceback" not in err, (out, err)
    frames, _ = decode_all(rec)
    assert len(frames) > 30
    assert not partials(tmp_path)


def test_term_during_convert_leaves_nothing_under_the_output_name_and_no_partial(clips, model_dir, tmp_path):
    out_path = tmp_path / "out.mp4"
    p = subprocess.Popen(launched([*CLI, "convert", str(clips["a"]), str(out_path), "--model", str(model_dir),
                                   "--runner", "local", "--engine", "eager"]), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 60
    while not partials(tmp_path) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the output is being written once its temporary file exists
    assert partials(tmp_path), finish(p, 5)
    p.send_signal(signal.SIGTERM)
    _, err = finish(p)
    assert p.returncode == 143, err
    lines = ours(err)
    assert lines[-1].startswith("swapstream: stopped by SIGTERM") and "Traceback" not in err, err
    assert not out_path.exists() and not partials(tmp_path)


class UdpCounter(threading.Thread):
    """Receives a UDP stream and counts its bytes (the second output, that must go on)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.bytes, self.last = 0, 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.bytes += len(self.sock.recv(65536))
                self.last = time.monotonic()
            except OSError:
                pass


# files of at most 150 kB (`ulimit -f`); SIGXFSZ at its default: swapstream must ignore it
# itself, or the write beyond the limit kills the process
SMALL_FILES = {"RLIMIT_FSIZE": (150_000, 150_000)}


def test_a_file_size_limit_stops_the_recording_alone_and_keeps_it_playable(clips, model_dir, tmp_path):
    rec, stats = tmp_path / "rec.mp4", tmp_path / "stats.json"
    udp = UdpCounter()
    udp.start()
    p = start_live(model_dir, clips["a"], "--record", str(rec), "--stream", f"udp://127.0.0.1:{udp.port}",
                   "--duration", "7", "--stats", str(stats), limits=SMALL_FILES)
    # the first fragment (~98 kB with the header) fits, the second (~88 kB more) fails at ~4 s:
    # 7 s leave the stream ~3 s (~80 frames) beyond the recording's end
    out, err = finish(p, 90)
    udp.done.set()
    lines = ours(err)
    assert p.returncode == 0, err
    assert len(lines) == 1 and "output record stopped:" in lines[0], lines
    assert "writing the output failed: the file grew past the size" in lines[0], lines
    assert "other output" in lines[0] and "Traceback" not in err
    frames, _ = decode_all(rec)  # kept under its name, and it plays to its end
    assert len(frames) >= 50 and rec.stat().st_size <= 150_000
    assert not partials(tmp_path)
    s = json.loads(stats.read_text())
    delivered = s["frames_delivered"]
    # the stream went on after the recording stopped: it got (nearly) every frame out
    assert delivered["stream"] >= s["frames_out"] - 8 and delivered["record"] < delivered["stream"] - 30, s
    assert udp.bytes > 100_000


TINY_FILES = {"RLIMIT_FSIZE": (20_000, 20_000)}  # less than the converted clip; SIGXFSZ at its default


def test_a_full_disk_during_convert_is_one_line_and_leaves_nothing(clips, model_dir, tmp_path):
    """`ulimit -f` (a full disk in small) while convert writes: one line naming the cause and the
    fix, exit 2, no traceback, nothing under the output name and no partial."""
    out_path = tmp_path / "out.mp4"
    p = subprocess.run(launched([*CLI, "convert", str(clips["a"]), str(out_path), "--model", str(model_dir),
                                 "--runner", "local", "--engine", "eager"], **TINY_FILES),
                       capture_output=True, text=True, env=ENV, timeout=180)
    assert p.returncode == 2, p.stderr
    lines = ours(p.stderr)
    assert "Traceback" not in p.stderr and len(lines) == 1, p.stderr
    assert "writing the output failed" in lines[0] and "free space" in lines[0], lines
    assert not out_path.exists() and not partials(tmp_path)
