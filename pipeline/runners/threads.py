"""Thread pools of the libraries the stages use, set to fit a runner.

torch (OpenMP), ONNX Runtime (which the onnx engine sizes from torch's count), OpenCV and numpy's
BLAS each start a pool of one thread per core, and the OpenMP and BLAS ones spin for a while after
each call. In the local runner the stages share the machine with a decoder and an encoder running
in their own threads, and spinning pools took the cores x264 needed: on 2 cores `swapstream
convert` of a 20 s 720p clip (--runner local) ran in 18.3 s whole with the default pools and 13.7 s
with one thread each.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


def stage_threads(cpus: int | None = None) -> int:
    """Threads each library pool gets in the local runner: half the CPUs, at least 1 (the other
    half decodes and encodes)."""
    from swapstream.pipeline.runners.choice import cpu_count

    return max(1, (cpus or cpu_count()) // 2)


@contextlib.contextmanager
def limited(n: int) -> Iterator[None]:
    """Within the block, torch, OpenCV and numpy's BLAS use at most `n` threads each; restored
    after. torch is only touched if already imported (importing it costs ~1.5 s)."""
    import cv2
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    old_cv2 = cv2.getNumThreads()
    old_torch = torch.get_num_threads() if torch is not None else None
    cv2.setNumThreads(n)
    if torch is not None:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        cv2.setNumThreads(old_cv2)
        if torch is not None and old_torch is not None:
            torch.set_num_threads(old_torch)
