"""A conversion queue kept on disk: several inputs converted one after another, surviving a crash,
a kill or Ctrl-C (`swapstream convert IN1 IN2 ... -o DIR`; the studio's queue).

- The queue is one JSON file (`DIR/.swapstream-queue.json`, QUEUE_FILE), rewritten atomically on
  every change (a temporary file in the same folder, fsync, os.replace): a crash leaves the
  previous state or the new one, never half of one.
- One process runs a queue at a time: the first change a process makes takes an advisory lock
  (fcntl.flock on `QUEUE_FILE.lock`, holding its pid), which it keeps until close() or its end (the
  kernel drops the lock of a dead process). Another process that tries to change the queue meanwhile
  gets a ConfigError naming the holder's pid. Reading (jobs()) needs no lock.
- A job's states: queued -> running -> done | failed | cancelled; retry() puts a failed or
  cancelled job back in the queue. A job the file says is "running" while this process holds the
  lock and is not running it was left by a process that died: next() takes it again as queued (its
  converter resumes it: `convert --segments` keeps its finished segments).
- Another process (the studio) cancels a job of a queue that is running with request_cancel():
  a file `QUEUE_FILE.cancel-<id>` that the running process reads at the job's next progress report
  (a running job) or when it comes to it (a queued one), then removes.
- run_queue() runs the jobs in order. A job whose conversion raises a SwapstreamError (a bad
  input: corrupt, no video stream) fails with the error's one line and the queue goes on; Ctrl-C
  or a stop signal (KeyboardInterrupt, swapstream.core.process) leaves the running job "running"
  in the file, to be resumed, and is raised again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from swapstream.core.errors import ConfigError, InputError, SwapstreamError

QUEUE_FILE = ".swapstream-queue.json"
QUEUE_VERSION = 1
STATES = ("queued", "running", "done", "failed", "cancelled")
ENDED = ("done", "failed", "cancelled")
OUTPUT_SUFFIX = ".swapped.mp4"
# What a folder given as an input contributes: its files with these extensions (FFmpeg opens more,
# but a folder also holds pictures, subtitles and notes); a file named on its own is always taken.
VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts",
                              ".m2ts", ".mts", ".wmv", ".flv", ".3gp", ".ogv"})


@dataclass
class Job:
    """One input to convert into one output. input/output: absolute paths; error: one line (failed
    jobs); progress: 0..1; started/ended: epoch seconds of the last attempt; attempts: how many
    times a run took it."""

    id: str
    input: str
    output: str
    state: str = "queued"
    error: str | None = None
    progress: float = 0.0
    started: float | None = None
    ended: float | None = None
    attempts: int = 0

    @classmethod
    def from_json(cls, d: dict) -> Job:
        names = {f.name for f in dataclasses.fields(cls)}
        job = cls(**{k: v for k, v in d.items() if k in names})
        if job.state not in STATES or not job.id or not job.input or not job.output:
            raise ValueError(f"job {d!r}")
        return job


class JobCancelled(Exception):
    """Raised by run_queue's progress callback when the running job was cancelled meanwhile."""


def one_line(err: BaseException) -> str:
    """An error's message as one line (what the CLI prints for a SwapstreamError)."""
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _requeue(job: Job) -> None:
    job.state, job.error, job.progress, job.started, job.ended = "queued", None, 0.0, None, None


def queue_path(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir).absolute() / QUEUE_FILE


class JobQueue:
    """The queue kept in the JSON file `path` (created on the first change). Thread-safe."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).absolute()
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._mutex = threading.Lock()
        self._lock_fd: int | None = None
        self._active: set[str] = set()  # jobs this process is running
        self._jobs: list[Job] = self._read()

    # ----------------------------------------------------------------------------- file and lock
    def _read(self) -> list[Job]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        except OSError as err:
            raise ConfigError(f"cannot read the queue {self.path} ({err.strerror or err})") from None
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != QUEUE_VERSION:
                raise ValueError("version")
            return [Job.from_json(d) for d in data["jobs"]]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{self.path} is not a swapstream queue (or one of another version); "
                              "delete it to start a new queue (finished outputs are kept)") from None

    def _write(self) -> None:
        """Atomically: a temporary file in the same folder, flushed to disk, renamed over the queue."""
        data = {"version": QUEUE_VERSION, "jobs": [dataclasses.asdict(j) for j in self._jobs]}
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "w") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        with contextlib.suppress(OSError):  # the rename itself, on disk
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _claim(self) -> None:
        """Take the queue's lock (once; kept until close()); ConfigError when another process holds
        it. Reloads the file: what is on disk is the truth the holder before us left."""
        if self._lock_fd is not None:
            return
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ConfigError(f"cannot write the queue {self.path} ({err.strerror or err}); choose an "
                              "output folder you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise ConfigError(f"{self.path} is being converted by another swapstream (pid {self.holder()}); "
                              "wait for it or stop it (its running job resumes when the same command is "
                              "run again)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        self._jobs = self._read()

    def holder(self) -> str:
        """The pid written by the process that holds (or last held) the lock; '?' if unknown."""
        try:
            return self.lock_path.read_text().strip() or "?"
        except OSError:
            return "?"

    def close(self) -> None:
        """Let go of the lock (the file stays)."""
        with self._mutex:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the descriptor drops the flock
                self._lock_fd = None

    def __enter__(self) -> JobQueue:
        with self._mutex:
            self._claim()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------------------------- the jobs
    def _get(self, job_id: str) -> Job:
        for j in self._jobs:
            if j.id == job_id:
                return j
        raise ConfigError(f"no job {job_id!r} in the queue {self.path}")

    def jobs(self) -> list[Job]:
        """Copies of the jobs, in queue order (read from the file unless this process owns it)."""
        with self._mutex:
            if self._lock_fd is None:
                self._jobs = self._read()
            return [dataclasses.replace(j) for j in self._jobs]

    def add(self, inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
            suffix: str = OUTPUT_SUFFIX) -> list[Job]:
        """Queue each input (a file) for `out_dir/<stem><suffix>` (`<stem>-2<suffix>`, ... when
        another job has that output); the jobs, in the order given. An input the queue already holds
        for this folder keeps its job (a done one whose output is gone is queued again); an input
        given twice is queued once."""
        out = Path(out_dir).absolute()
        with self._mutex:
            self._claim()
            result: list[Job] = []
            for raw in inputs:
                src = str(Path(raw).absolute())
                job = next((j for j in self._jobs if j.input == src and Path(j.output).parent == out), None)
                if job is None:
                    taken = {j.output for j in self._jobs}
                    stem, k = Path(src).stem, 1
                    dst = out / f"{stem}{suffix}"
                    while str(dst) in taken or str(dst) == src:
                        k += 1
                        dst = out / f"{stem}-{k}{suffix}"
                    ids = {j.id for j in self._jobs}
                    jid = secrets.token_hex(4)
                    while jid in ids:
                        jid = secrets.token_hex(4)
                    job = Job(jid, src, str(dst))
                    self._jobs.append(job)
                elif job.state == "done" and not Path(job.output).exists():
                    _requeue(job)
                if job not in result:
                    result.append(job)
            self._write()
            return [dataclasses.replace(j) for j in result]

    def next(self) -> Job | None:
        """The first job to run: queued, or left "running" by a process that died (one this
        process is not running). A job another process asked to cancel is cancelled instead."""
        with self._mutex:
            self._claim()
            for j in self._jobs:
                if j.state == "queued" or (j.state == "running" and j.id not in self._active):
                    if self._take_cancel_request(j):
                        continue
                    return dataclasses.replace(j)
            return None

    def _take_cancel_request(self, job: Job) -> bool:
        """Whether another process asked to cancel `job` (request_cancel); if so it is cancelled
        and written, and the request removed. Called with the mutex held."""
        request = cancel_request_path(self.path, job.id)
        if not request.exists():
            return False
        job.state, job.ended = "cancelled", time.time()
        self._write()
        with contextlib.suppress(OSError):
            request.unlink()
        return True

    def mark(self, job_id: str, state: str, error: str | None = None, progress: float | None = None) -> Job:
        """Set a job's state (and its error line, progress); "running" starts an attempt unless
        this process is running it already; an end state records the time."""
        if state not in STATES:
            raise ValueError(f"state {state!r} is not one of {', '.join(STATES)}")
        with self._mutex:
            self._claim()
            job = self._get(job_id)
            if state == "running" and job_id not in self._active:
                self._active.add(job_id)
                job.attempts += 1
                job.started, job.ended, job.error = time.time(), None, None
            if state in ENDED:
                self._active.discard(job_id)
                job.ended = time.time()
                with contextlib.suppress(OSError):  # a cancel asked too late: not for a next attempt
                    cancel_request_path(self.path, job_id).unlink()
            if state == "queued":
                self._active.discard(job_id)
                job.started = job.ended = None
            job.state = state
            if error is not None:
                job.error = " ".join(str(error).split())
            elif state != "failed":
                job.error = None
            if progress is not None:
                job.progress = min(max(float(progress), 0.0), 1.0)
            self._write()
            return dataclasses.replace(job)

    def cancel(self, job_id: str) -> Job:
        """A queued or running job is cancelled (a running one stops at its next progress report:
        run_queue's callback raises JobCancelled); ConfigError for a job that has ended."""
        with self._mutex:
            self._claim()
            job = self._get(job_id)
            if job.state not in ("queued", "running"):
                raise ConfigError(f"job {job_id} ({Path(job.input).name}) is {job.state}; only a queued "
                                  "or running job can be cancelled")
            job.state, job.ended = "cancelled", time.time()
            self._write()
            return dataclasses.replace(job)

    def retry(self, job_id: str) -> Job:
        """A failed or cancelled job goes back in the queue (its error cleared, attempts kept);
        ConfigError for any other."""
        with self._mutex:
            self._claim()
            job = self._get(job_id)
            if job.state not in ("failed", "cancelled"):
                raise ConfigError(f"job {job_id} ({Path(job.input).name}) is {job.state}; only a failed "
                                  "or cancelled job can be retried")
            if job_id in self._active:  # cancelled while running, not yet stopped
                raise ConfigError(f"job {job_id} is still stopping; retry it once it has")
            _requeue(job)
            self._write()
            return dataclasses.replace(job)

    def _progress(self, job_id: str, fraction: float) -> None:
        """A running job's progress; JobCancelled once it has been cancelled."""
        with self._mutex:
            job = self._get(job_id)
            if job.state == "cancelled" or self._take_cancel_request(job):
                raise JobCancelled(job_id)
            job.progress = min(max(float(fraction), 0.0), 1.0)
            self._write()


def cancel_request_path(queue_file: str | os.PathLike, job_id: str) -> Path:
    return Path(queue_file).with_name(f"{Path(queue_file).name}.cancel-{job_id}")


def request_cancel(queue_file: str | os.PathLike, job_id: str) -> Job:
    """Cancel `job_id` of the queue in `queue_file`, whoever runs it: at once when no process
    holds the queue, else through a request its runner takes at the job's next progress report.
    ConfigError for an unknown job or one that has ended."""
    queue = JobQueue(queue_file)
    job = next((j for j in queue.jobs() if j.id == job_id), None)
    if job is None:
        raise ConfigError(f"the queue has no job {job_id!r}; reload the page")
    if job.state not in ("queued", "running"):
        raise ConfigError(f"{Path(job.input).name} is {job.state}; only a queued or running job can be "
                          "cancelled")
    try:
        return queue.cancel(job_id)
    except ConfigError:
        if queue._lock_fd is not None:
            raise
    finally:
        queue.close()
    request = cancel_request_path(queue_file, job_id)
    request.write_text(str(os.getpid()))
    return dataclasses.replace(job)


def run_queue(queue: JobQueue, convert_one: Callable[[Job, Callable[[float], None]], object],
              on_event: Callable[[str, Job, object], None] | None = None) -> list[Job]:
    """Run the queue's jobs one after another until none is left; the jobs it ran, as they ended.

    convert_one(job, progress_cb) converts one job (progress_cb(fraction 0..1) as it goes; it
    raises JobCancelled once the job is cancelled). on_event(kind, job, detail): "start" (detail
    None), "done" (detail: what convert_one returned), "failed" (the error), "cancelled" (None),
    "interrupted" (the KeyboardInterrupt). A SwapstreamError fails the job with its one line and the
    queue goes on; a KeyboardInterrupt (Ctrl-C, SIGTERM) leaves the job "running" on disk and is
    raised again; any other error (a bug) fails the job and is raised again, with its traceback."""
    say = on_event or (lambda kind, job, detail: None)
    ran: list[Job] = []
    while (job := queue.next()) is not None:
        job = queue.mark(job.id, "running")
        say("start", job, None)

        def progress_cb(fraction: float, job_id: str = job.id) -> None:
            queue._progress(job_id, fraction)

        try:
            result = convert_one(job, progress_cb)
        except JobCancelled:
            job = queue.mark(job.id, "cancelled")
            say("cancelled", job, None)
        except SwapstreamError as err:
            job = queue.mark(job.id, "failed", error=one_line(err))
            say("failed", job, err)
        except KeyboardInterrupt as err:
            say("interrupted", job, err)
            raise
        except BaseException as err:
            queue.mark(job.id, "failed", error=f"internal error: {one_line(err)}")
            raise
        else:
            job = queue.mark(job.id, "done", progress=1.0)
            say("done", job, result)
        ran.append(job)
    return ran


# ------------------------------------------------------------------------------------ inputs
def video_files(folder: str | os.PathLike, skip: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """A folder's video files (by extension, VIDEO_EXTENSIONS), sorted by name, not recursive;
    hidden files (a conversion's partial files) and the paths in `skip` left out."""
    skipped = {str(Path(p).absolute()) for p in skip}
    return sorted((p.absolute() for p in Path(folder).iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_EXTENSIONS
                   and str(p.absolute()) not in skipped), key=lambda p: p.name)


def expand_inputs(paths: Iterable[str | os.PathLike], out_dir: str | os.PathLike) -> list[Path]:
    """The files the inputs name: a file as it is, a folder's video files (its converted outputs,
    `*.swapped.mp4` in out_dir itself, left out); each file once, in order. InputError (exit 2) for
    a path that does not exist or a folder with no video file."""
    out = Path(out_dir).absolute()
    files: list[Path] = []
    for raw in paths:
        p = Path(raw).absolute()
        if p.is_dir():
            found = video_files(p)
            if p == out:
                found = [f for f in found if not f.name.endswith(OUTPUT_SUFFIX)]
            if not found:
                raise InputError(f"folder {raw} has no video files ({' '.join(sorted(VIDEO_EXTENSIONS))}); "
                                 "name the files or choose another folder")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise InputError(f"{raw}: file or folder not found; check the path and spelling")
    return list(dict.fromkeys(files))
