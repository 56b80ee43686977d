"""`--runner auto`: the local runner where Ray cannot pay for its start-up and memory, Ray where it
can, said in one line.

Rules, the first that matches wins:

  (a) a Ray cluster address (--address or RAY_ADDRESS)          -> ray
  (b) --segments                                                -> ray (segments as Ray tasks)
  (c) a GPU (and --device is not cpu)                           -> ray
  (d) MANY_CPUS CPUs or more                                    -> ray
  (e) otherwise, estimated wall time of each runner for this input:
          local_s = local.startup_s + frames / local_fps(width x height)
          ray_s   = ray.startup_s   + frames / ray_fps(width x height)
      ray when local_s > LONG_S and ray_s < local_s, else local.

A runner's speed is stored as frame megapixels converted per second once started (`mpx_per_s`), so
one figure gives the frames per second of any frame size, and its start-up in seconds
(`startup_s`). Built-in figures (DEFAULT_RATES) are replaced by this machine's own, measured on
every conversion (record_rate) and kept in `rates.json` in the swapstream cache folder
(engines.cache.cache_root(): $SWAPSTREAM_CACHE, else ~/.cache/swapstream), per runner and CPU count.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MANY_CPUS = 8  # from this many CPUs on, the Ray runner's pools always have the room to pay off
LONG_S = 60.0  # seconds of local work from which Ray's start-up (and memory) can pay for itself
MIN_FRAMES = 100  # shorter runs are mostly start-up: their rate is not recorded
NEW_WEIGHT = 0.5  # weight of a new run in the moving average of rates.json
RATES_FILE = "rates.json"
RATES_VERSION = 1

# Built-in rates, used until this machine has measured its own: mpx_per_s is frame megapixels
# converted per second after start-up, startup_s the seconds of the runner call that are not
# frames (Ray: starting a local Ray, its actors, and shutting it down). Measured on a 2-core AMD
# EPYC VM, lite64 model, 1280x720 clips of 20 and 80 s, with benchmarks/bench_convert.py (the
# moving averages rates.json held after it): there the local runner uses both cores and Ray never
# pays off (80 s clip: local 25.1 s, Ray 47.2 s).
DEFAULT_RATES: dict[str, dict[str, float]] = {
    "local": {"mpx_per_s": 82.2, "startup_s": 0.34},
    "ray": {"mpx_per_s": 50.1, "startup_s": 6.6},
}


@dataclass
class Choice:
    """The runner to use ("local" or "ray") and why, in words (no "runner:" prefix)."""

    runner: str
    reason: str

    @property
    def line(self) -> str:
        """The one line a conversion says: 'runner: local (one machine, ...)'."""
        return f"runner: {self.runner} ({self.reason})"


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask; os.cpu_count() where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def gpu_count() -> int:
    """CUDA GPUs torch sees; 0 without torch, and 0 without importing it where no GPU device node
    is there (swapstream.engines.device.gpu_possible)."""
    from swapstream.engines.device import gpu_possible

    if not gpu_possible():
        return 0
    try:
        import torch
    except ImportError:
        return 0
    try:
        return int(torch.cuda.device_count())
    except Exception:  # a broken driver is no GPU to run on
        return 0


def frames_of(info) -> float | None:
    """Frames in the input (swapstream.core.video.StreamInfo): its frame count, else duration (s) x fps;
    None when neither is known."""
    if info is None:
        return None
    if info.frames:
        return float(info.frames)
    if info.duration and info.fps:
        return float(info.duration) * float(info.fps)
    return None


def estimate_s(rate: Mapping[str, float], frames: float, width: int, height: int) -> float:
    """Seconds a runner with this rate takes for `frames` frames of width x height pixels:
    startup_s + frames / (mpx_per_s * 1e6 / (width * height))."""
    return float(rate["startup_s"]) + frames * width * height / (float(rate["mpx_per_s"]) * 1e6)


def choose_runner(cfg, info, *, cpus: int | None = None, gpus: int | None = None,
                  env: Mapping[str, str] = os.environ, rates: Mapping | None = None) -> Choice:
    """The runner for converting the input `info` (swapstream.core.video.StreamInfo) with `cfg`
    (swapstream.pipeline.config.ConvertConfig); see the module docstring for the rules. cfg.runner "ray" or
    "local" is returned as asked. cpus / gpus default to this machine's; rates (runner ->
    {"mpx_per_s", "startup_s"}) to load_rates(cpus)."""
    if cfg.runner != "auto":
        return Choice(cfg.runner, "asked for")
    address = cfg.address or env.get("RAY_ADDRESS")
    if address:
        return Choice("ray", f"a Ray cluster address was given: {address}")
    if cfg.segments is not None:
        return Choice("ray", "crash-safe segments spread over Ray workers")
    cpus = cpu_count() if cpus is None else cpus
    gpus = gpu_count() if gpus is None else gpus
    used_gpus = 0 if str(cfg.swap.device) == "cpu" else gpus
    if used_gpus > 0:
        return Choice("ray", f"{cpus} CPUs and {used_gpus} GPU{'s' if used_gpus > 1 else ''}: "
                             f"the stages spread over them")
    if cpus >= MANY_CPUS:
        return Choice("ray", f"{cpus} CPUs: pools of stage workers spread over them")
    gpu = "no GPU" if gpus == 0 else "GPU unused (--device cpu)"
    machine = f"{cpus} CPU{'s' if cpus != 1 else ''}, {gpu}"
    frames = frames_of(info)
    if frames is None:
        return Choice("local", f"one machine, {machine}; length unknown")
    rates = load_rates(cpus) if rates is None else rates
    w, h = info.width, info.height
    local_s = estimate_s(rates["local"], frames, w, h)
    ray_s = estimate_s(rates["ray"], frames, w, h)
    if local_s > LONG_S and ray_s < local_s:
        return Choice("ray", f"{machine}, but ~{local_s:.0f} s of work here: Ray's estimate {ray_s:.0f} s, "
                             f"local {local_s:.0f} s")
    if local_s > LONG_S:
        return Choice("local", f"one machine, {machine}; ~{local_s:.0f} s of work here, and Ray's "
                               f"estimate, {ray_s:.0f} s, is no shorter")
    fps = float(rates["local"]["mpx_per_s"]) * 1e6 / (w * h)
    return Choice("local", f"one machine, {machine}; ~{local_s:.0f} s of work here at ~{fps:.0f} fps for "
                           f"{w}x{h}; Ray pays off from ~{LONG_S:.0f} s of work")


def resolve(cfg, info, say=None, **kwargs):
    """(a copy of cfg with its runner resolved, the Choice); `say` gets the Choice's line.
    kwargs go to choose_runner."""
    choice = choose_runner(cfg, info, **kwargs)
    if say is not None:
        say(choice.line)
    return dataclasses.replace(cfg, runner=choice.runner), choice


# ------------------------------------------------------------------------------ measured rates
def rates_path() -> Path:
    """Where this machine's measured rates are kept: <cache root>/rates.json."""
    from swapstream.engines.cache import cache_root

    return cache_root() / RATES_FILE


def _good(entry) -> bool:
    return (isinstance(entry, dict)
            and all(isinstance(entry.get(k), (int, float)) and not isinstance(entry.get(k), bool)
                    and math.isfinite(entry[k]) for k in ("mpx_per_s", "startup_s"))
            and entry["mpx_per_s"] > 0 and entry["startup_s"] >= 0)


def _read_file() -> dict:
    """rates.json's {runner: {str(cpus): entry}}; {} when absent, unreadable or corrupt."""
    try:
        data = json.loads(rates_path().read_text())
    except (OSError, ValueError):
        return {}
    if (not isinstance(data, dict) or data.get("version") != RATES_VERSION
            or not isinstance(data.get("rates"), dict)):
        return {}
    return {r: v for r, v in data["rates"].items() if r in DEFAULT_RATES and isinstance(v, dict)}


def load_rates(cpus: int | None = None) -> dict[str, dict[str, float]]:
    """Per runner {"mpx_per_s": frame megapixels/s after start-up, "startup_s": s, "runs": how
    many measured runs the figures average, 0 for the built-in ones}: DEFAULT_RATES overridden by
    this machine's rates.json entries for `cpus` CPUs (default: cpu_count()). A corrupt file, or
    entry, is ignored."""
    cpus = cpu_count() if cpus is None else cpus
    measured = _read_file()
    out = {}
    for runner, default in DEFAULT_RATES.items():
        entry = measured.get(runner, {}).get(str(cpus))
        if _good(entry):
            out[runner] = {"mpx_per_s": float(entry["mpx_per_s"]), "startup_s": float(entry["startup_s"]),
                           "runs": int(entry.get("runs", 1)) if isinstance(entry.get("runs"), int) else 1}
        else:
            out[runner] = {**default, "runs": 0}
    return out


def record_rate(runner: str, frames: int, width: int, height: int, seconds: float, startup_s: float,
                cpus: int) -> bool:
    """Fold one finished run into rates.json: `frames` frames of width x height pixels in
    `seconds` s of wall time, of which `startup_s` s before the first frame, on `cpus` CPUs. The
    stored figures move halfway (NEW_WEIGHT) towards this run's; the first run of a runner and
    CPU count is stored as it is. Runs under MIN_FRAMES frames are ignored. Written atomically
    (temporary file, then os.replace). Never raises: returns whether the file was updated (a
    read-only cache is skipped)."""
    try:
        work_s = float(seconds) - float(startup_s)
        if (runner not in DEFAULT_RATES or frames < MIN_FRAMES or work_s <= 0 or startup_s < 0
                or width <= 0 or height <= 0 or not math.isfinite(work_s)):
            return False
        new = {"mpx_per_s": frames * width * height / 1e6 / work_s, "startup_s": float(startup_s)}
        rates = _read_file()
        per_cpus = dict(rates.get(runner, {}))
        old = per_cpus.get(str(cpus))
        if _good(old):
            runs = old.get("runs", 1) if isinstance(old.get("runs"), int) else 1
            new = {k: (1 - NEW_WEIGHT) * float(old[k]) + NEW_WEIGHT * new[k] for k in new}
            new["runs"] = runs + 1
        else:
            new["runs"] = 1
        per_cpus[str(cpus)] = {k: round(v, 4) if isinstance(v, float) else v for k, v in new.items()}
        rates[runner] = per_cpus
        path = rates_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{RATES_FILE}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"version": RATES_VERSION, "rates": rates}, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True
    except Exception:  # a read-only or full cache, a race with another writer: keep what is there
        return False
