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


def test_a_signal_safe_thread_is_joined_only_if_it_was_launched():
    """join_launched: a thread started is joined (it ran to its end); one never started, or one
    whose start() a signal cut short before the thread was launched, is passed over (joining a
    thread that never began raises RuntimeError in the clean-up that must not fail)."""
    from swapstream.core.process import SignalSafeThread

    ran = []
    started = SignalSafeThread(target=lambda: ran.append(1))
    started.start()
    started.join_launched()
    assert ran == [1] and not started.is_alive()

    SignalSafeThread(target=lambda: ran.append(2)).join_launched()  # never started: nothing

    cut = SignalSafeThread(target=lambda: ran.append(3))
    cut._launched = True  # what start() has set when a signal interrupts it before the launch
    t0 = time.monotonic()
    cut.join_launched()  # waits LAUNCH_WAIT_S for it to begin, then passes it over
    assert ran == [1] and 1.5 < time.monotonic() - t0 < 5


def test_sigusr1_prints_a_running_commands_stacks_and_it_goes_on(tmp_path):
    """`kill -USR1 PID` on a swapstream command (here the studio, which waits for requests): every
    thread's stack on stderr, the command still running and answering, then its usual stop (the
    studio ends 0 on SIGTERM: stopping is how a server ends)."""
    import contextlib
    import queue
    import subprocess
    import sys
    import threading
    import urllib.request

    from tests.procs import launched

    proc = subprocess.Popen(launched([sys.executable, "-m", "swapstream.pipeline.cli", "studio",
                                      "--workspace", str(tmp_path / "ws"), "--serve", "127.0.0.1:0"]),
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True)
        reader.start()
        url, deadline = "", time.monotonic() + 60
        while not url and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=1)  # "studio: open http://127.0.0.1:PORT/"
                url = line.split()[-1] if line.startswith("studio: open ") else ""
        assert url, f"no URL printed in 60 s (rc {proc.poll()})"
        proc.send_signal(signal.SIGUSR1)
        with urllib.request.urlopen(url, timeout=10) as r:  # still serving after the dump
            assert r.status == 200
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(5)  # the rest of stdout, to its end
        out, err = "".join(lines.queue), proc.stderr.read()  # the stack dump is a few kB
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # faulthandler's dump: the main thread waits in serve()
    assert "Current thread" in err and "serve" in err, err
    assert proc.returncode == 0 and "studio: stopped" in out, (proc.returncode, out, err)
