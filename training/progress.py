"""The driver's progress bar of a Ray Train job (swapstream.training.job): rank 0 reports to a tiny
actor (Progress), and the driver polls it while trainer.fit() runs in another thread."""

from __future__ import annotations

import threading

from tqdm import tqdm

from swapstream.core.errors import SwapstreamError


class Progress:
    """A tiny actor rank 0 reports to; the driver polls it for its progress bar."""

    def __init__(self) -> None:
        self.step, self.row, self.pid = 0, {}, None
        self.error: tuple[str, str] | None = None

    def update(self, step: int, row: dict, pid: int) -> None:
        self.step, self.row, self.pid = step, row, pid

    def fail(self, kind: str, message: str) -> None:
        """A worker hit a user's error (SwapstreamError): retrying cannot help, the driver stops."""
        self.error = self.error or (kind, message)

    def get(self) -> tuple[int, dict, int | None, tuple[str, str] | None]:
        return self.step, self.row, self.pid, self.error


def fit_with_bar(trainer, bar_actor, steps: int, progress: bool):
    """trainer.fit() in a thread while this thread draws the progress bar from rank 0's reports."""
    import ray

    box: dict = {}

    def fit() -> None:
        try:
            box["result"] = trainer.fit()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    th = threading.Thread(target=fit, daemon=True)
    th.start()
    bar = tqdm(total=steps, unit="step", disable=not progress, dynamic_ncols=True)
    last_pid, last_row_step = None, -1
    try:
        while th.is_alive():
            th.join(0.5)
            try:
                step, row, pid, error = ray.get(bar_actor.get.remote(), timeout=5)
            except Exception:
                continue
            if error is not None:
                raise _error_from(*error)
            if pid is not None and last_pid is not None and pid != last_pid:
                bar.write(f"a training worker failed; the job restarted from its last checkpoint "
                          f"(step {step}) and goes on")
            if row.get("skipped") and step != last_row_step:
                bar.write(f"{row['skipped']} step(s) up to step {step} had a NaN/inf loss or gradient "
                          f"and were skipped")
            if pid is not None:
                last_pid, last_row_step = pid, step
                bar.n = step
                bar.set_postfix(loss_a=f"{row.get('loss_a', 0):.4f}", loss_b=f"{row.get('loss_b', 0):.4f}",
                                samples_s=f"{row.get('samples_per_s', 0):.0f}", refresh=False)
                bar.refresh()
    finally:
        bar.close()
    if "error" in box:
        raise box["error"]
    return box["result"]


def _error_from(kind: str, message: str) -> SwapstreamError:
    """Rebuild a worker's SwapstreamError (by class name) for the one-line CLI message."""
    from swapstream.core import errors

    cls = getattr(errors, kind, SwapstreamError)
    if not (isinstance(cls, type) and issubclass(cls, SwapstreamError)):
        cls = SwapstreamError
    return cls(message)
