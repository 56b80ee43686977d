"""Helpers for tests that run swapstream in a child process."""

from __future__ import annotations

import signal


def ctrl_c_default() -> None:
    """Popen preexec_fn: the child gets SIGINT's default action, so Python turns it into
    KeyboardInterrupt. A test run started in the background (`make test &`, nohup) has SIGINT
    ignored, and children inherit an ignored signal: their Ctrl-C would then do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sigterm_when(argv: list[str], cwd, ready, seconds: float = 180) -> str:
    """Run `swapstream ARGV` in a child, send it SIGTERM once ready() is true, and check that it
    stopped as a stopped command must: exit 143, its last line "swapstream: stopped by SIGTERM",
    no traceback. Returns what it printed on stderr."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "swapstream.pipeline.cli", *argv], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=ctrl_c_default)
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
