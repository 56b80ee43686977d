"""Stop signals while outputs complete (core.process.holding_stops), with real signals sent to
this process."""

from __future__ import annotations

import os
import signal
import time

import pytest

from swapstream.core.process import holding_stops


def _deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # the handler runs in the main thread at its next bytecode


def test_stops_are_noted_while_outputs_complete_and_a_second_ctrl_c_ends_it():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with holding_stops() as came:
            _deliver(signal.SIGTERM)
            _deliver(signal.SIGHUP)
            _deliver(signal.SIGINT)
            assert came == ["SIGTERM", "SIGHUP", "SIGINT"]  # noted, nothing raised
            _deliver(signal.SIGINT)  # someone insists
            pytest.fail("a second Ctrl-C must end the wind-down")
    assert signal.getsignal(signal.SIGINT) is before  # the handlers are put back
