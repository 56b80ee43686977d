"""Training state beside the weights, flattened for `optimizer.safetensors` (never pickle).

Keys:  "state.<param index>.<key>"  Adam state of the generator (encoder + decoders)
       "scaler.<key>"               the fp16 GradScaler
       "disc.<name>"                GAN discriminator weights
       "dstate.<param index>.<key>" the discriminator's Adam state
       "rng.<rank>"                 each worker's batch-sampling generator (uint8 bytes)
Hyper-parameters (param_groups) are not stored: they come from the TrainConfig on resume.
"""

from __future__ import annotations

import torch
from torch import nn

from swapstream.core.errors import ModelError


def optimizer_tensors(opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None,
                      prefix: str = "state") -> dict[str, torch.Tensor]:
    """Optimizer (and grad scaler) state as {"<prefix>.<param>.<key>": tensor}."""
    out = {}
    for idx, st in opt.state_dict()["state"].items():
        for key, v in st.items():
            out[f"{prefix}.{idx}.{key}"] = v if torch.is_tensor(v) else torch.tensor(v)
    if scaler is not None and scaler.is_enabled():
        out.update({f"scaler.{k}": torch.tensor(v) for k, v in scaler.state_dict().items()})
    return out


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           scaler: torch.amp.GradScaler | None = None, prefix: str = "state") -> None:
    """Inverse of optimizer_tensors: restores the state into opt (and scaler, if both have one).
    Entries of the other kinds listed in the module docstring are ignored."""
    current = opt.state_dict()
    n_params = sum(len(g["params"]) for g in current["param_groups"])
    state: dict[int, dict[str, torch.Tensor]] = {}
    scaler_state = {}
    for name, v in tensors.items():
        kind, _, rest = name.partition(".")
        if kind == "scaler":
            scaler_state[rest] = v
            continue
        if kind != prefix:
            continue
        idx, _, key = rest.partition(".")
        if not idx.isdigit() or int(idx) >= n_params:
            raise ModelError(f"optimizer state entry {name!r} does not fit this model; delete "
                             f"optimizer.safetensors to resume with a fresh optimizer")
        state.setdefault(int(idx), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": current["param_groups"]})
    if scaler is not None and scaler.is_enabled() and scaler_state:
        types = scaler.state_dict()
        scaler.load_state_dict({k: type(types[k])(v.item()) for k, v in scaler_state.items() if k in types})


def module_tensors(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def load_module_tensors(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str) -> bool:
    """Loads "<prefix>.*" entries into module; False (module untouched) when there are none."""
    state = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    if not state:
        return False
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"saved {prefix} weights do not fit ({str(e).splitlines()[0]}); delete "
                         f"optimizer.safetensors to resume with a fresh one") from None
    return True


def rng_tensors(states: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """One generator state (uint8 tensor) per worker rank."""
    return {f"rng.{rank}": s.detach().cpu() for rank, s in enumerate(states)}


def rng_state(tensors: dict[str, torch.Tensor], rank: int, world: int) -> torch.Tensor | None:
    """This rank's saved generator state, if the checkpoint was written by as many workers."""
    saved = [k for k in tensors if k.startswith("rng.")]
    if len(saved) != world:
        return None
    return tensors.get(f"rng.{rank}")
