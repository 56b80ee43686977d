"""Helpers for tests that run swapstream in a child process."""

from __future__ import annotations

import signal


def ctrl_c_default() -> None:
    """Popen preexec_fn: the child gets SIGINT's default action, so Python turns it into
    KeyboardInterrupt. A test run started in the background (`make test &`, nohup) has SIGINT
    ignored, and children inherit an ignored signal: their Ctrl-C would then do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
