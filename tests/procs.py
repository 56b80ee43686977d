"""Helpers for tests that run swapstream in a child process."""

from __future__ import annotations

import json
import signal
import sys

# Runs in a fresh interpreter, then execs the command: what a Popen preexec_fn would do, without
# running Python in a child forked from a test process with threads (which can deadlock before
# exec: a lock another thread held at the fork stays held in the child, forever).
_LAUNCH = """
import json, os, resource, signal, sys
cfg = json.loads(sys.argv[1])
signal.signal(signal.SIGINT, signal.SIG_DFL)
for name in ("SIGPIPE", "SIGXFSZ"):  # Python ignores them at start; the command gets the default
    signal.signal(getattr(signal, name), signal.SIG_DFL)
for name, (soft, hard) in cfg["limits"].items():
    resource.setrlimit(getattr(resource, name), (soft, hard))
os.execv(sys.argv[2], sys.argv[2:])
"""


def launched(argv: list[str], **limits: tuple[int, int]) -> list[str]:
    """`argv` (its first item an absolute path, e.g. sys.executable) run with SIGINT's default
    action and the resource limits given (RLIMIT_NOFILE=(soft, hard), ...): a command line for
    Popen. The child gets SIGINT's default so Python turns it into KeyboardInterrupt: a test run
    started in the background (`make test &`, nohup) has SIGINT ignored, and children inherit an
    ignored signal (their Ctrl-C would then do nothing)."""
    return [sys.executable, "-c", _LAUNCH, json.dumps({"limits": limits}), *argv]


def sigterm_when(argv: list[str], cwd, ready, seconds: float = 180) -> str:
    """Run `swapstream ARGV` in a child, send it SIGTERM once ready() is true, and check that it
    stopped as a stopped command must: exit 143, its last line "swapstream: stopped by SIGTERM",
    no traceback. Returns what it printed on stderr."""
    import subprocess
    import time

    proc = subprocess.Popen(launched([sys.executable, "-m", "swapstream.pipeline.cli", *argv]), cwd=cwd,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.02)
        assert proc.poll() is None, f"it ended (rc {proc.returncode}) before ready: {proc.communicate()}"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    ours = [ln for ln in err.strip().splitlines() if ln.startswith("swapstream:")]
    assert ours and ours[-1].startswith("swapstream: stopped by SIGTERM") and "Traceback" not in err, err
    return err
