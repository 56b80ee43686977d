"""A conversion queue's files side by side, each a Ray task: `swapstream convert IN... -o DIR
--parallel N [--address CLUSTER]` (and the studio's "side by side on Ray").

The driver holds the queue (pipeline.conversion_queue: its lock, its file) and keeps up to N files
converting at once, each as a task that runs `convert_segmented` with the local runner on
whichever node Ray places it (on a cluster the inputs and DIR must be on a folder every node
mounts at the same path). A file's states are the queue's: running when its task starts, then
done, failed (a bad input: its one line; the other files go on) or cancelled (the studio's Cancel:
its task is cancelled, its finished segments are kept). Ctrl-C or SIGTERM cancels the tasks and
leaves their files "running" on disk: the same command resumes them from their segments.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

from swapstream.core.errors import SwapstreamError
from swapstream.pipeline.conversion_queue import Job, JobQueue, one_line

WAIT_S = 0.5  # how often the driver looks for ended tasks and cancel requests


def _convert_file(input_path: str, output_path: str, cfg) -> list[str]:
    """On a Ray worker: one file converted in segments with the local runner; its summary lines."""
    from swapstream.pipeline.segments import convert_segmented

    cfg = dataclasses.replace(cfg, runner="local", segments=cfg.segments if cfg.segments is not None else 0)
    return convert_segmented(input_path, output_path, cfg, progress=False, dispatch="local").lines()


def _absolute(cfg):
    """cfg with the model and the --only references as absolute paths."""
    import os

    model = os.path.abspath(cfg.swap.model) if cfg.swap.model else cfg.swap.model
    swap = dataclasses.replace(cfg.swap, model=model)
    identity = dataclasses.replace(cfg.identity, only=[os.path.abspath(r) for r in cfg.identity.only])
    return dataclasses.replace(cfg, swap=swap, identity=identity)


def run_queue_on_ray(queue: JobQueue, cfg, slots: int, address: str | None = None, verbose: bool = False,
                     on_event: Callable[[str, Job, object], None] | None = None) -> list[Job]:
    """Run the queue's jobs, `slots` at a time, as Ray tasks (module docstring); the jobs it ran, as
    they ended. on_event as run_queue's ("done" gets the summary lines)."""
    import ray

    from swapstream.training.cluster import init_ray

    say = on_event or (lambda kind, job, detail: None)
    init_ray(address, verbose)
    cfg = _absolute(cfg)  # a cluster's workers start in another folder
    task = ray.remote(num_cpus=1, max_retries=0)(_convert_file)
    running: dict[object, Job] = {}
    ran: list[Job] = []
    try:
        while True:
            while len(running) < slots and (job := queue.next()) is not None:
                job = queue.mark(job.id, "running")
                say("start", job, None)
                running[task.remote(job.input, job.output, cfg)] = job
            if not running:
                return ran
            ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_S)
            for ref in ready:
                job = running.pop(ref)
                try:
                    lines = ray.get(ref)
                except ray.exceptions.RayTaskError as err:
                    cause = getattr(err, "cause", None)
                    if not isinstance(cause, SwapstreamError):
                        queue.mark(job.id, "failed", error=f"internal error: {one_line(cause or err)}")
                        raise
                    job = queue.mark(job.id, "failed", error=one_line(cause))
                    say("failed", job, cause)
                except ray.exceptions.RayError as err:  # its worker died (memory, a lost node): this file
                    why = f"its Ray worker was lost ({type(err).__name__}); run the same command again"
                    job = queue.mark(job.id, "failed", error=why)
                    say("failed", job, err)
                else:
                    job = queue.mark(job.id, "done", progress=1.0)
                    say("done", job, lines)
                ran.append(job)
            for ref, job in list(running.items()):  # the studio's Cancel, from another process
                with queue._mutex:
                    asked = queue._take_cancel_request(queue._get(job.id))
                if asked:
                    ray.cancel(ref, force=True)
                    running.pop(ref)
                    job = queue.mark(job.id, "cancelled")
                    say("cancelled", job, None)
                    ran.append(job)
    except BaseException as err:
        for ref, job in running.items():  # left "running" on disk: the same command resumes them
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
            if isinstance(err, KeyboardInterrupt):
                say("interrupted", job, err)
        raise
