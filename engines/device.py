"""Devices and precisions, shared by the engines and training.

- resolve_device("auto" | "cpu" | "cuda" | "cuda:N") -> torch.device (auto: CUDA when visible).
- device_kind(device) -> "cpu" | "cuda", without importing torch (~1.1 s) where no GPU can be:
  a conversion on a CPU machine whose engine is cached runs without torch.
- resolve_precision("auto" | "fp32" | "fp16" | "bf16", device) -> the precision an engine runs:
  auto is fp16 on CUDA and fp32 on CPU (the reference precision; bf16 on a CPU is opt-in).
- cpu_has_bf16(): whether this CPU has native bf16 arithmetic (AVX-512 BF16 or AMX), where
  bf16 runs about twice as fast as fp32; elsewhere it is emulated and slower.
"""

from __future__ import annotations

import functools
import glob
import os
import sys
from typing import TYPE_CHECKING

from swapstream.core.errors import ConfigError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("fp32", "fp16", "bf16")
HALF = ("fp16", "bf16")


def __getattr__(name: str):
    # DTYPES: precision -> torch dtype, built on first use (importing torch costs ~1.1 s)
    if name == "DTYPES":
        import torch

        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def gpu_possible() -> bool:
    """False when torch cannot see a GPU here, told without importing torch: on Linux, no NVIDIA
    (/dev/nvidia0, ...) or AMD (/dev/kfd) device node. True means: ask torch."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/kfd")


def device_kind(device: str) -> str:
    """"cpu" or "cuda" for a user's --device (as resolve_device would resolve it, with its
    errors), importing torch only where a GPU may be asked for or be there."""
    if device == "cpu" or (device == "auto" and not gpu_possible()):
        return "cpu"
    return resolve_device(device).type


def resolve_device(device: str) -> torch.device:
    """torch.device for a user's --device; ConfigError naming the fix when it is not there."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but no CUDA GPU is visible; use --device cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA "
                          f"GPU(s), numbered from 0")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")
    return dev


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision to run on a device (a torch.device, or its kind "cpu" / "cuda"): auto ->
    fp16 on CUDA, fp32 on CPU; ConfigError for an unknown one."""
    if precision == "auto":
        return "fp16" if getattr(device, "type", device) == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of auto, {', '.join(PRECISIONS)}")
    return precision


@functools.cache
def cpu_has_bf16() -> bool:
    """Native bf16 on this CPU (AVX-512 BF16 / AMX, read from /proc/cpuinfo; False elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def device_identity(device: torch.device) -> dict:
    """What a compiled engine depends on besides the weights: for a GPU its name and compute
    capability; for a CPU its architecture and whether it has native bf16."""
    if device.type == "cuda":
        import torch

        idx = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(idx)
        return {"gpu": torch.cuda.get_device_name(idx), "capability": f"{major}.{minor}",
                "cuda": torch.version.cuda}
    import platform

    return {"cpu": platform.machine(), "bf16": cpu_has_bf16()}
