"""The studio's long work, each a `swapstream` command in a process of its own.

The studio's server never extracts, trains or converts itself: it starts the same command a user
would type (`python -m swapstream.pipeline.cli extract ...`), in its own process group, with its
output going to `jobs/<id>.log`; so a long job never makes the page unresponsive, and everything
the studio does is also a command line (the job's `argv` says which).

    jobs/<id>.json   {id, kind, title, argv, state, pid, started, ended, rc, error, progress}
    jobs/<id>.log    what the command printed (its progress bars included)

state: running -> done | failed | stopped; a job keeps running when the studio stops, and a
studio started later reads how it ended (jobs/<id>.rc, written by runjob); one whose process is
gone without an exit code (the machine restarted) is "interrupted" (a training run resumes with
--resume, a conversion queue resumes where it stopped).
progress (0-1) is read from the newest progress bar in the log ("NN%|"); error is the command's
one-line error ("swapstream: error: ..."), shown as it is on the page.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from swapstream.core.errors import ConfigError

PERCENT = re.compile(rb"(\d{1,3})%\|")
LINK = re.compile(rb"live: web at (https?://[^\s\"'<>]+)")  # a live session's page, once it is up
ERROR = re.compile(rb"swapstream(?: [a-z]+)?: error: ([^\r\n]+)")  # ours, and argparse's usage errors
TAIL = 16 * 1024  # bytes of the log read for progress and errors


def _started(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, /proc), with the boot's id; None where
    unknown. A job keeps it, so a pid the system gave to another process later is not taken for it."""
    try:
        ticks = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{ticks}"
    except (OSError, IndexError):
        return None


def _alive(pid: int | None, started: str | None = None) -> bool:
    """Whether process `pid` runs (a zombie, ended but not yet reaped by its parent, does not; with
    `started`, one that started at another time is another process)."""
    if not pid:
        return False
    if started is not None and _started(pid) != started:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) said it exists


class Jobs:
    """The jobs of a workspace's jobs/ folder (module docstring). Thread-safe."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen] = {}

    def start(self, kind: str, title: str, argv: list[str], cwd: Path) -> dict:
        """Start `swapstream <argv>` in `cwd` as a job; returns its state."""
        jid = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{secrets.token_hex(3)}"
        log = self.folder / f"{jid}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GLOG_minloglevel": "2"}
        with open(log, "wb") as out:
            rcfile = self.folder / f"{jid}.rc"
            proc = subprocess.Popen([sys.executable, "-m", "swapstream.pipeline.cli.runjob", str(rcfile),
                                     *argv], cwd=cwd,
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
        job = {"id": jid, "kind": kind, "title": title, "argv": ["swapstream", *argv], "state": "running",
               "pid": proc.pid, "since": _started(proc.pid), "started": time.time(), "ended": None,
               "rc": None, "error": None, "progress": 0.0}
        with self._lock:
            self._procs[jid] = proc
            self._write(job)
        return job

    def stop(self, jid: str) -> dict:
        """Ask a running job to stop (SIGTERM: the command's own clean stop: a checkpoint kept,
        no half-written output)."""
        job = self.get(jid)
        with self._lock:
            if job["state"] == "running" and _alive(job["pid"], job.get("since")):
                try:  # the command itself: it stops what it started (Ray's processes) its own way
                    os.kill(job["pid"], signal.SIGTERM)
                except ProcessLookupError:
                    pass
                job["stopping"] = True
                self._write(job)
        return job

    def get(self, jid: str) -> dict:
        """A job's state, brought up to date (progress, end, error)."""
        if not re.fullmatch(r"[0-9A-Za-z-]{1,80}", jid or ""):
            raise ConfigError(f"no job {jid!r}")
        path = self.folder / f"{jid}.json"
        if not path.is_file():
            raise ConfigError(f"no job {jid!r}; reload the page")
        with self._lock:
            job = json.loads(path.read_text())
            if job["state"] == "running":
                self._update(job)
            return job

    def all(self) -> list[dict]:
        """Every job, newest first."""
        ids = sorted((p.stem for p in self.folder.glob("*.json")), reverse=True)
        out = []
        for jid in ids:
            try:
                out.append(self.get(jid))
            except (ConfigError, json.JSONDecodeError):
                continue
        return out

    def log_tail(self, jid: str, size: int = 4000) -> str:
        self.get(jid)
        data = self._tail(self.folder / f"{jid}.log", size)
        return data.decode("utf-8", "replace").replace("\r", "\n")

    # ------------------------------------------------------------------------------ inside
    def _update(self, job: dict) -> None:
        tail = self._tail(self.folder / f"{job['id']}.log", TAIL)
        found = PERCENT.findall(tail)
        if found:
            job["progress"] = min(int(found[-1]), 100) / 100
        link = LINK.findall(tail) if job["kind"] == "live" else []
        if link and not job.get("link"):
            job["link"] = link[-1].decode("ascii", "replace")
        if job["progress"] and job["started"]:
            p = job["progress"]
            job["eta_s"] = round((time.time() - job["started"]) * (1 - p) / p) if 0.02 < p < 1 else None
        proc = self._procs.get(job["id"])
        rcfile = self.folder / f"{job['id']}.rc"
        if proc is not None:
            rc = proc.poll()
        elif rcfile.is_file():  # it ended while another studio (or none) was running
            rc = int(rcfile.read_text() or 1)
        else:
            rc = None if _alive(job["pid"], job.get("since")) else "gone"
        if rc is None:
            self._write(job)
            return
        job["ended"] = time.time()
        if rc == "gone":
            job["state"] = "interrupted"
        else:
            job["rc"] = rc
            job["state"] = "done" if rc == 0 else "stopped" if job.get("stopping") else "failed"
            job["link"], job["eta_s"] = None, None
            if job["state"] == "done":
                job["progress"] = 1.0
        err = ERROR.findall(tail)
        if job["state"] == "failed":
            job["error"] = err[-1].decode("utf-8", "replace") if err else \
                f"the command ended with exit code {rc}; see its log"
        self._procs.pop(job["id"], None)
        self._write(job)

    def _write(self, job: dict) -> None:
        path = self.folder / f"{job['id']}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(job, indent=1))
        os.replace(tmp, path)

    @staticmethod
    def _tail(path: Path, size: int) -> bytes:
        try:
            with open(path, "rb") as f:
                f.seek(max(0, f.seek(0, 2) - size))
                return f.read()
        except OSError:
            return b""
