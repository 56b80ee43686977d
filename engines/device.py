"""Devices and precisions, shared by the engines and training.

- resolve_device("auto" | "cpu" | "cuda" | "cuda:N") -> torch.device (auto: CUDA when visible).
- resolve_precision("auto" | "fp32" | "fp16" | "bf16", device) -> the precision an engine runs:
  auto is fp16 on CUDA and fp32 on CPU (the reference precision; bf16 on a CPU is opt-in).
- cpu_has_bf16(): whether this CPU has native bf16 arithmetic (AVX-512 BF16 or AMX), where
  bf16 runs about twice as fast as fp32; elsewhere it is emulated and slower.
"""

from __future__ import annotations

import functools

import torch

from stages.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "bf16")
HALF = ("fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """torch.device for a user's --device; ConfigError naming the fix when it is not there."""
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


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision to run: auto -> fp16 on CUDA, fp32 on CPU; ConfigError for an unknown one."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
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
        idx = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(idx)
        return {"gpu": torch.cuda.get_device_name(idx), "capability": f"{major}.{minor}",
                "cuda": torch.version.cuda}
    import platform

    return {"cpu": platform.machine(), "bf16": cpu_has_bf16()}
