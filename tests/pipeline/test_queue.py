"""`swapstream convert IN1 IN2 ... -o DIR`: the conversion queue kept on disk. The queue itself
(atomic file, a dead process's running job taken again, cancel / retry, one process at a time),
and the command on real clips: good files converted, a corrupt one failing alone, a SIGTERM'd
queue resumed by the same command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import swapstream.pipeline.segments as segments
from swapstream.core.errors import ConfigError, InputError
from swapstream.pipeline.cli import main
from swapstream.pipeline.conversion_queue import (
    QUEUE_FILE,
    Job,
    JobQueue,
    expand_inputs,
    queue_path,
    request_cancel,
    run_queue,
)
from swapstream.pipeline.segments import default_work_dir
from swapstream.stages.sinks.file import synthetic_tags
from tests.pipeline.test_convert import decode_all
from tests.pipeline.test_segments import RUN_SEGMENT, write_gop_clip
from tests.procs import sigterm_when

REPO = Path(__file__).resolve().parents[2]


def states(out_dir: Path) -> list[str]:
    data = json.loads((out_dir / QUEUE_FILE).read_text())
    return [j["state"] for j in data["jobs"]]


def on_disk(out_dir: Path) -> list[dict]:
    return json.loads((out_dir / QUEUE_FILE).read_text())["jobs"]


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("swapstream:")]
    assert len(lines) == 1 and lines[0].startswith("swapstream: error: ") and "Traceback" not in err, err
    return lines[0]


# --- the queue ------------------------------------------------------------------------------

def test_every_change_is_written_atomically(tmp_path, monkeypatch):
    q = JobQueue(queue_path(tmp_path))
    [a, b] = q.add([tmp_path / "a.mp4", tmp_path / "b.mp4"], tmp_path)
    assert [j["state"] for j in on_disk(tmp_path)] == ["queued", "queued"]
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    q.mark(a.id, "running")
    assert states(tmp_path) == ["running", "queued"] and synced  # on disk before the rename
    before = (tmp_path / QUEUE_FILE).read_text()

    def crash(*_):  # the process dies between writing the new file and renaming it
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        q.mark(a.id, "done")
    assert (tmp_path / QUEUE_FILE).read_text() == before  # the previous state, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == [QUEUE_FILE, QUEUE_FILE + ".lock"]  # no temp file
    q.close()


def test_outputs_are_named_after_the_inputs_and_an_input_is_queued_once(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for name in ("x/clip.mp4", "x/b.MKV", "x/notes.txt", "x/.hidden.mp4", "y/clip.mov"):
        (tmp_path / name).write_bytes(b"")
    out = tmp_path / "out"
    files = expand_inputs([tmp_path / "x", tmp_path / "y", tmp_path / "x" / "clip.mp4"], out)
    assert [str(f.relative_to(tmp_path)) for f in files] == ["x/b.MKV", "x/clip.mp4", "y/clip.mov"]
    with JobQueue(queue_path(out)) as q:
        jobs = q.add(files, out)
        assert [Path(j.output).name for j in jobs] == ["b.swapped.mp4", "clip.swapped.mp4",
                                                       "clip-2.swapped.mp4"]
        again = q.add(list(reversed(files)), out)  # the same inputs: the same jobs, the same names
        assert [j.id for j in again] == [j.id for j in reversed(jobs)] and len(q.jobs()) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no video files"):
        expand_inputs([tmp_path / "y", tmp_path / "empty"], out)
    with pytest.raises(InputError, match="not found"):
        expand_inputs([tmp_path / "nope.mp4"], out)


def test_cancel_retry_and_failures_do_not_stop_the_queue(tmp_path):
    q = JobQueue(queue_path(tmp_path))
    a, b, c, d = q.add([tmp_path / f"{n}.mp4" for n in "abcd"], tmp_path)
    assert q.cancel(b.id).state == "cancelled" and q.retry(b.id).state == "queued"
    q.cancel(d.id)
    seen = []

    def convert_one(job: Job, progress_cb):
        seen.append(Path(job.input).stem)
        if job.id == a.id:
            raise InputError(f"{job.input}: not a media file\n(second line)")
        if job.id == b.id:  # cancelled while it runs (the studio's button): stops at its next report
            progress_cb(0.25)
            q.cancel(job.id)
            progress_cb(0.5)
            raise AssertionError("not reached")
        progress_cb(0.5)
        return "ok"

    events = []
    ran = run_queue(q, convert_one, lambda kind, job, detail: events.append((kind, Path(job.input).stem)))
    assert seen == ["a", "b", "c"]  # d was cancelled before it started
    assert [(j.state, Path(j.input).stem) for j in ran] == [("failed", "a"), ("cancelled", "b"),
                                                            ("done", "c")]
    jobs = {Path(j.input).stem: j for j in q.jobs()}
    assert jobs["a"].error == f"{tmp_path / 'a.mp4'}: not a media file (second line)"  # one line
    assert jobs["b"].progress == 0.25 and jobs["c"].progress == 1.0 and jobs["c"].ended >= jobs["c"].started
    assert ("failed", "a") in events and ("cancelled", "b") in events and ("done", "c") in events
    with pytest.raises(ConfigError, match="is done"):
        q.cancel(c.id)
    with pytest.raises(ConfigError, match="is done"):
        q.retry(c.id)
    assert q.retry(a.id).state == "queued" and q.retry(d.id).state == "queued"
    assert [j.attempts for j in q.jobs()] == [1, 1, 1, 0]
    q.close()


def test_another_process_cancels_a_running_and_a_queued_job_of_a_running_queue(tmp_path):
    """The studio cancels files of a queue that `swapstream convert` runs: a running job stops at
    its next progress report, a queued one is skipped; with nobody running the queue, at once."""
    q = JobQueue(queue_path(tmp_path))  # the converting process: it holds the queue's lock
    a, b, c = q.add([tmp_path / f"{n}.mp4" for n in "abc"], tmp_path)
    seen = []

    def convert_one(job: Job, progress_cb):
        seen.append(Path(job.input).stem)
        if job.id == a.id:
            progress_cb(0.3)
            # another process (its own open file, so its own lock attempt) asks to cancel a and b
            assert request_cancel(queue_path(tmp_path), a.id).state == "running"
            assert request_cancel(queue_path(tmp_path), b.id).state == "queued"
            progress_cb(0.6)
            raise AssertionError("not reached: a was cancelled")
        progress_cb(1.0)

    ran = run_queue(q, convert_one)
    assert seen == ["a", "c"]
    assert [(Path(j.input).stem, j.state) for j in q.jobs()] == [("a", "cancelled"), ("b", "cancelled"),
                                                                ("c", "done")]
    assert [(Path(j.input).stem, j.state) for j in ran] == [("a", "cancelled"), ("c", "done")]
    assert not list(tmp_path.glob("*.cancel-*"))  # the requests were taken
    q.retry(b.id)
    q.close()
    assert request_cancel(queue_path(tmp_path), b.id).state == "cancelled"  # nobody runs it: at once
    with pytest.raises(ConfigError, match="is done"):
        request_cancel(queue_path(tmp_path), c.id)


def test_interrupt_leaves_the_job_running_and_the_next_run_takes_it_again(tmp_path):
    q = JobQueue(queue_path(tmp_path))
    a, b = q.add([tmp_path / "a.mp4", tmp_path / "b.mp4"], tmp_path)

    def interrupted(job, progress_cb):
        progress_cb(0.4)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_queue(q, interrupted)
    q.close()
    assert states(tmp_path) == ["running", "queued"] and on_disk(tmp_path)[0]["progress"] == 0.4
    with JobQueue(queue_path(tmp_path)) as again:
        assert again.next().id == a.id
        ran = run_queue(again, lambda job, cb: None)
    assert [j.id for j in ran] == [a.id, b.id] and states(tmp_path) == ["done", "done"]
    assert [j["attempts"] for j in on_disk(tmp_path)] == [2, 1]


def test_running_job_of_a_killed_process_is_picked_again(tmp_path):
    code = ("import os, signal, sys\n"
            "from swapstream.pipeline.conversion_queue import JobQueue, queue_path\n"
            f"q = JobQueue(queue_path({str(tmp_path)!r}))\n"
            f"q.add([{str(tmp_path / 'a.mp4')!r}, {str(tmp_path / 'b.mp4')!r}], {str(tmp_path)!r})\n"
            "q.mark(q.next().id, 'running', progress=0.5)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert states(tmp_path) == ["running", "queued"]
    q = JobQueue(queue_path(tmp_path))  # the kernel dropped the dead process's lock
    job = q.next()
    assert Path(job.input).name == "a.mp4" and job.state == "running"  # resumed, not skipped
    ran = run_queue(q, lambda job, cb: None)
    assert [Path(j.input).name for j in ran] == ["a.mp4", "b.mp4"]
    assert [(j.state, j.attempts) for j in q.jobs()] == [("done", 2), ("done", 1)]
    q.close()


def test_a_second_process_on_the_same_queue_gets_one_line(clips, model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = ("import sys\n"
            "from swapstream.pipeline.conversion_queue import JobQueue, queue_path\n"
            f"q = JobQueue(queue_path({str(out)!r}))\n"
            f"q.add([{str(clips['a'])!r}], {str(out)!r})\n"
            "print('holding', flush=True)\n"
            "sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(ConfigError, match=rf"being converted by another swapstream \(pid {holder.pid}\)"):
            JobQueue(queue_path(out)).add([clips["b"]], out)
        rc = main(["-q", "convert", str(clips["a"]), str(clips["b"]), "-o", str(out),
                   "--model", str(model_dir)])
        err = capsys.readouterr().err
        assert rc == 2 and f"(pid {holder.pid}); wait for it" in one_error_line(err), err
        assert [Path(j.input).name for j in JobQueue(queue_path(out)).jobs()] == ["a.mp4"]  # untouched
    finally:
        holder.communicate("", timeout=30)
    with JobQueue(queue_path(out)) as q:  # once it has ended, the queue is free
        assert len(q.add([clips["b"]], out)) == 1


# --- the command -----------------------------------------------------------------------------

@pytest.fixture
def mistakes(tmp_path):
    (tmp_path / "nothing").mkdir()
    (tmp_path / "afile").write_text("not a folder")
    return tmp_path


@pytest.mark.parametrize("case,pattern", [
    ("missing input", "nope.mp4: file or folder not found"),
    ("folder without videos", "folder .*nothing has no video files"),
    ("DIR is a file", "-o .*afile is a file, not a folder"),
    ("DIR not creatable", "cannot create the output folder .*afile/out"),
    ("one path without -o", "convert takes INPUT OUTPUT, or several inputs with -o DIR"),
])
def test_command_mistakes_exit_2_with_one_line(case, pattern, clips, mistakes, capsys):
    import re

    good, out = str(clips["a"]), str(mistakes / "out")
    argv = {"missing input": [good, str(mistakes / "nope.mp4"), "-o", out],
            "folder without videos": [good, str(mistakes / "nothing"), "-o", out],
            "DIR is a file": [good, "-o", str(mistakes / "afile")],
            "DIR not creatable": [good, "-o", str(mistakes / "afile" / "out")],
            "one path without -o": [good]}[case]
    before = sorted(mistakes.rglob("*"))
    rc = main(["-q", "convert", *argv, "--model", str(mistakes / "model")])  # checked after these
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and re.search(pattern, line), line
    assert sorted(mistakes.rglob("*")) == before  # nothing written


@pytest.mark.slow
def test_good_files_are_converted_and_a_corrupt_one_fails_alone(clips, model_dir, tmp_path, capsys):
    corrupt = tmp_path / "x.mp4"
    corrupt.write_bytes(np.random.default_rng(0).bytes(50_000))
    out = tmp_path / "out"
    argv = ["-q", "convert", str(clips["a"]), str(clips["b"]), str(corrupt), str(clips["empty"]),
            "-o", str(out), "--model", str(model_dir), "--runner", "local"]
    t0 = time.monotonic()
    rc = main(argv)
    std = capsys.readouterr()
    assert rc == 2, std.err
    line = one_error_line(std.err)
    assert f"1 of 4 inputs failed: {corrupt}: " in line and line.endswith(f"; the others are in {out}"), line
    # a faceless clip converts (its frames pass through unswapped): done, like the good ones
    assert states(out) == ["done", "done", "failed", "done"], std.out
    failed = on_disk(out)[2]
    assert failed["input"] == str(corrupt) and "\n" not in failed["error"] and str(corrupt) in failed["error"]
    a_out = out / "a.swapped.mp4"
    assert f"[1/4] a.mp4 -> {a_out}\n[1/4] wrote {a_out}: 60 frames" in std.out
    assert f"[3/4] failed: {failed['error']}" in std.out and f"  failed: {failed['error']}" in std.out
    assert f"queue {out / QUEUE_FILE}: 3 done, 1 failed" in std.out
    for name in ("a", "b", "empty"):
        dst = out / f"{name}.swapped.mp4"
        assert len(decode_all(dst)[0]) == len(decode_all(clips[name])[0]) == {"empty": 10}.get(name, 60)
        assert synthetic_tags(dst)["synthetic_media"] == "1"
    assert not (out / "x.swapped.mp4").exists()
    leftovers = [p.name for p in out.iterdir() if "partial" in p.name or p.name.endswith("swapstream-work")]
    assert leftovers == []
    first_run = time.monotonic() - t0

    # the same command again: the done files are skipped, the failed one is tried again (and fails)
    rc = main(argv)
    std = capsys.readouterr()
    assert rc == 2 and f"1 of 4 inputs failed: {corrupt}" in one_error_line(std.err)
    assert f"[1/4] a.mp4: done already ({out / 'a.swapped.mp4'})" in std.out
    assert [(j["state"], j["attempts"]) for j in on_disk(out)] == [("done", 1), ("done", 1), ("failed", 2),
                                                                   ("done", 1)]
    print(f"first run {first_run:.1f} s")


@pytest.mark.slow
def test_sigterm_then_the_same_command_resumes_the_queue(clips, model_dir, tmp_path, monkeypatch, capsys):
    """A stop in the middle of the first job: exit 143, the job left "running" with its finished
    segments in its manifest; the same command again converts only that job's other segments,
    then the next job, and both outputs play."""
    src = write_gop_clip(tmp_path / "gop10.mp4")  # 90 frames, a keyframe every 10: 6 segments
    out = tmp_path / "out"
    first = out / "gop10.swapped.mp4"
    work = default_work_dir(first)
    argv = ["-q", "convert", str(src), str(clips["b"]), "-o", str(out), "--model", str(model_dir),
            "--runner", "local", "--segments", "6"]

    def one_segment_done() -> bool:
        m = segments.read_manifest(work)
        return bool(m) and any(e["status"] == "done" for e in m["segments"]) and states(out)[0] == "running"

    err = sigterm_when(argv, REPO, one_segment_done)
    assert "gop10.mp4: stopped; run the same command again to resume" in err
    assert states(out) == ["running", "queued"] and not first.exists()
    m = segments.read_manifest(work)
    done = [e["index"] for e in m["segments"] if e["status"] == "done"]
    assert 1 <= len(done) < len(m["segments"]) == 6
    kept = {e["file"]: (work / e["file"]).stat().st_mtime_ns for e in m["segments"] if e["status"] == "done"}

    calls = []

    def recording(job):
        calls.append((Path(job.input).name, job.segment.index))
        if work.exists():  # the finished segments are not rewritten
            assert {f: (work / f).stat().st_mtime_ns for f in kept} == kept
        return RUN_SEGMENT(job)

    monkeypatch.setattr(segments, "run_segment", recording)
    assert main(argv) == 0, capsys.readouterr().err  # the same command again
    std = capsys.readouterr()
    assert [i for n, i in calls if n == "gop10.mp4"] == [i for i in range(6) if i not in done]  # the rest
    assert [i for n, i in calls if n == "b.mp4"] == [0]
    assert f"resumed: {len(done)} of 6 segments were done by an earlier run" in std.out
    assert f"queue {out / QUEUE_FILE}: 2 done, 0 failed" in std.out
    assert [(j["state"], j["attempts"]) for j in on_disk(out)] == [("done", 2), ("done", 1)]
    for dst, src_clip in ((first, src), (out / "b.swapped.mp4", clips["b"])):
        assert len(decode_all(dst)[0]) == len(decode_all(src_clip)[0])
        assert synthetic_tags(dst)["synthetic_media"] == "1"
    assert not work.exists()


def test_files_convert_side_by_side_as_ray_tasks(clips, model_dir, tmp_path, capsys):
    """--parallel 2: two files at once, each a Ray task on a local Ray; a corrupt one fails alone."""
    import ray

    corrupt = tmp_path / "x.mp4"
    corrupt.write_bytes(np.random.default_rng(1).bytes(50_000))
    out = tmp_path / "out"
    try:
        rc = main(["-q", "convert", str(clips["a"]), str(clips["b"]), str(corrupt), "-o", str(out),
                   "--model", str(model_dir), "--parallel", "2"])
    finally:
        ray.shutdown()
    std = capsys.readouterr()
    assert rc == 2 and f"1 of 3 inputs failed: {corrupt}" in one_error_line(std.err), std.err
    jobs = on_disk(out)
    assert [j["state"] for j in jobs] == ["done", "done", "failed"], jobs
    a, b = jobs[0], jobs[1]
    assert a["started"] < b["ended"] and b["started"] < a["ended"], (a, b)  # they ran at the same time
    for name in ("a", "b"):
        dst = out / f"{name}.swapped.mp4"
        assert len(decode_all(dst)[0]) == 60 and synthetic_tags(dst)["synthetic_media"] == "1"
