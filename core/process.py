"""How a swapstream process meets its machine: stop signals, the file-size signal, the open-file
limit. The CLI calls `prepare_process()` once at start.

- SIGTERM and SIGHUP (service managers, `timeout`, a closed terminal, Ray's job stop) take
  Ctrl-C's path: the first one raises `Stopped`, a KeyboardInterrupt, in the main thread, so every
  `except KeyboardInterrupt` and `finally` that completes a recording, removes a partial file or
  saves a checkpoint runs as it does for Ctrl-C. Later ones, while the process winds down, are
  noted, not raised (a service manager sends SIGKILL when it has waited long enough); a second
  Ctrl-C while the outputs complete ends the process at once (holding_stops).
  A signal that was ignored when the process started (`nohup`) stays ignored.
- SIGXFSZ (a write beyond the file-size limit, `ulimit -f`) is ignored: the write then fails with
  EFBIG, which the output that made it reports and survives, instead of the process dumping core.
- The soft limit on open files is raised to the hard limit: each viewer, connection, Ray worker
  and codec holds files, and a soft limit of 1024 is the usual default.
"""

from __future__ import annotations

import contextlib
import faulthandler
import signal
import threading

STOP_SIGNALS = ("SIGTERM", "SIGHUP")
_state = {"installed": False, "stopping": False}


class Stopped(KeyboardInterrupt):
    """A stop signal arrived (SIGTERM, SIGHUP): handled wherever Ctrl-C is. `signum`, `name`, and
    the conventional exit code 128 + signum (143 for SIGTERM, 129 for SIGHUP)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def how_interrupted(err: KeyboardInterrupt) -> str:
    """'SIGTERM' / 'SIGHUP' for a stop signal, 'Ctrl-C' for a plain KeyboardInterrupt."""
    return err.name if isinstance(err, Stopped) else "Ctrl-C"


def _on_stop(signum, _frame) -> None:
    if _state["stopping"]:
        return  # winding down already: let it finish
    _state["stopping"] = True
    raise Stopped(signum)


def take_stop_signals() -> None:
    """Make SIGTERM and SIGHUP raise Stopped in the main thread (see the module docstring).
    Nothing outside the main thread (Python lets only it set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in STOP_SIGNALS:
        num = getattr(signal, name, None)
        if num is not None and signal.getsignal(num) is not signal.SIG_IGN:
            signal.signal(num, _on_stop)
    _state.update(installed=True, stopping=False)


def retake_stop_signals() -> None:
    """After a library replaced the handlers (ray.init makes SIGTERM `sys.exit(15)`): ours again,
    if this process had taken them."""
    if _state["installed"]:
        for name in STOP_SIGNALS:
            num = getattr(signal, name, None)
            if num is not None and threading.current_thread() is threading.main_thread():
                signal.signal(num, _on_stop)


@contextlib.contextmanager
def holding_stops():
    """While a process completes its outputs (a live recording's last frames and index), Ctrl-C,
    SIGTERM and SIGHUP are noted and not raised: ending is what it does already. A second Ctrl-C
    raises KeyboardInterrupt (someone at the terminal insists: a hung flush must not need
    SIGKILL). Yields a list the names of the signals that came are appended to. Main thread only
    (elsewhere: no effect)."""
    came: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield came
        return
    nums = [getattr(signal, n) for n in ("SIGINT", *STOP_SIGNALS) if hasattr(signal, n)]
    old = {n: signal.getsignal(n) for n in nums}
    def note(signum, _frame) -> None:
        name = signal.Signals(signum).name
        if name == "SIGINT" and "SIGINT" in came:
            raise KeyboardInterrupt
        came.append(name)

    for n in nums:
        if old[n] is not signal.SIG_IGN:
            signal.signal(n, note)
    try:
        yield came
    finally:
        for n, h in old.items():
            signal.signal(n, h if h is not None else signal.SIG_DFL)


LAUNCH_WAIT_S = 2.0  # SignalSafeThread: a launched thread has begun by then


class SignalSafeThread(threading.Thread):
    """A thread its starter can clean up after whether or not start() returned: a stop signal
    handled in the main thread may raise Stopped inside start() (in its wait for the new thread),
    and the thread then runs anyway. Start it inside the try whose clean-up calls
    join_launched(): joining a thread that was never started raises, leaving one running lets it
    read a source the clean-up is closing."""

    _launched = False

    def start(self) -> None:
        self._launched = True
        super().start()

    def join_launched(self, timeout: float | None = None) -> None:
        """Join the thread if it was launched; else nothing. A signal may come inside start()
        before the thread was launched (start() never sets `_started` then) or after (the new
        thread sets it within moments), so a thread not begun within LAUNCH_WAIT_S never was.
        timeout: seconds at most for the join (a thread blocked in a read), None: until it ends."""
        if self._launched and self._started.wait(LAUNCH_WAIT_S):
            self.join(timeout)


def raise_open_file_limit() -> tuple[int, int] | None:
    """Raise the soft RLIMIT_NOFILE to the hard one (at most 2**20); (old soft, new soft), or None
    where there are no such limits (Windows) or it cannot be raised."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard if hard != resource.RLIM_INFINITY else 1 << 20, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            return None
        return soft, want
    return soft, soft


def prepare_process() -> None:
    """At the start of a swapstream command: stop signals, SIGXFSZ, the open-file limit, and
    SIGUSR1 to print every thread's stack to stderr (`kill -USR1 PID`: where a command that
    seems stuck is; it goes on running)."""
    take_stop_signals()
    if threading.current_thread() is threading.main_thread():
        if hasattr(signal, "SIGXFSZ"):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if hasattr(signal, "SIGUSR1"):
            with contextlib.suppress(OSError, ValueError):  # io.UnsupportedOperation: no real stderr
                faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    raise_open_file_limit()
