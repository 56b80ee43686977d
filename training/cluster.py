"""Joining a Ray cluster, or starting a local Ray: one way for the training job and the pipeline's
Ray runner (which import it from here, the lower of the two layers)."""

from __future__ import annotations

import logging
import os

from swapstream.core.errors import ConfigError
from swapstream.core.process import retake_stop_signals

# One OpenMP thread per actor: the pools are the parallelism, and every actor's own full-size
# thread pool on the same cores costs more than it gives (measured: +20% fps on 2 cores).
ACTOR_ENV = {"OMP_NUM_THREADS": "1"}
QUIET_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}


def init_ray(address: str | None, verbose: bool, frame_bytes: int = 0, batch_size: int = 8) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local Ray; True if started.

    A local Ray gets an object store sized for the frames in flight (48 batches' worth, between
    512 MiB and Ray's default of 30% of RAM): the store touches fresh pages until it is full, so
    an oversized one looks like memory growing with the length of the video.

    ray.init makes SIGTERM a bare `sys.exit(15)`; the process's own stop signals (SIGTERM and
    SIGHUP take Ctrl-C's path, core/process.py) are put back right after it, so a stopped
    `train` or Ray-run `convert` saves its checkpoint or removes its partial as on Ctrl-C.
    """
    import ray

    if ray.is_initialized():
        return False
    store = None
    if not (address or os.environ.get("RAY_ADDRESS")) and frame_bytes:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        store = int(min(max(48 * batch_size * frame_bytes, 512 << 20), 0.3 * ram))
    try:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=verbose,
                 logging_level=logging.INFO if verbose else logging.ERROR, object_store_memory=store,
                 runtime_env={"env_vars": {**ACTOR_ENV, **({} if verbose else QUIET_ENV)}})
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = address or os.environ.get("RAY_ADDRESS")
        if not where:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot join the Ray cluster at {where} ({first}); check --address / "
                          f"RAY_ADDRESS, or leave both unset to run a local Ray") from None
    finally:
        retake_stop_signals()  # ray.init made SIGTERM a bare sys.exit: Ctrl-C's path again
    return True
