"""What several commands share: the swap flags, the --only and --map flags, settings files,
None-dropping."""

from __future__ import annotations

from pathlib import Path


def settings_file(path: str | None) -> dict:
    """A YAML settings file's values; its identity.only references, and the references and models
    of its map, are relative to the file."""
    from swapstream.pipeline.config import load_yaml

    values = load_yaml(path) if path else {}

    def here(r: str) -> str:
        return str(Path(path).parent / r) if not Path(r).is_absolute() else r

    only = values.get("identity", {}).get("only") if isinstance(values.get("identity"), dict) else None
    if only:
        refs = [only] if isinstance(only, str) else list(only)
        values["identity"]["only"] = [here(r) for r in map(str, refs)]
    if isinstance(values.get("map"), dict):
        values["map"] = {here(str(r)): here(str(m)) if isinstance(m, str) and m else m
                         for r, m in values["map"].items()}
    return values


def only_flag(p) -> None:
    p.add_argument("--only", nargs="+", metavar="REF",
                   help="swap only this person: photos, a faceset folder or a video of them; other people "
                        "are left as they are (decided per face track by a vote over its frames)")


def map_flag(p) -> None:
    p.add_argument("--map", action="append", metavar="REF=MODEL",
                   help="swap this person (REF: a photo, a folder of photos or a faceset) with this model; "
                        "repeat for each person (--map alice.jpg=models/alice_to_carol --map "
                        "bob/=models/bob_to_dave); anyone else is left as they are. Instead of --model")


def map_values(items: list[str] | None) -> dict[str, str] | None:
    """--map REF=MODEL values as {REF: MODEL}; ConfigError (exit 2) for one without "=" or a
    person given twice."""
    if not items:
        return None
    from swapstream.core.errors import ConfigError

    out: dict[str, str] = {}
    for item in items:
        ref, eq, model = item.rpartition("=")
        if not eq or not ref.strip() or not model.strip():
            raise ConfigError(f"--map {item!r} is not REF=MODEL; give a person's photo, folder or "
                              f"faceset, '=', and their model's folder (--map alice.jpg=models/alice_to_bob)")
        if ref in out:
            raise ConfigError(f"--map gives {ref} twice (models {out[ref]} and {model}); give each "
                              f"person once")
        out[ref] = model
    return out


def swap_flags(p, model_required: bool) -> None:
    """--model / --swap / --engine / --precision / --providers / --device: the `swap` settings
    section's flags, shared by convert and live (a settings file's `swap:` section may give them)."""
    p.add_argument("--model", required=model_required,
                   help="checkpoint directory from `swapstream train` (--map names one per person instead)")
    p.add_argument("--swap", dest="direction", choices=["a2b", "b2a"],
                   help="a2b: faces of A get B's face (default); b2a: the reverse")
    p.add_argument("--engine", help="swap engine: auto (default: the fastest that runs here), eager, "
                                    "compile, onnx, tensorrt; `swapstream engines` lists them")
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"],
                   help="auto (default): fp16 on CUDA, fp32 on CPU; bf16 is about 2x fp32 on CPUs with "
                        "AVX-512 BF16 or AMX")
    p.add_argument("--providers", metavar="LIST",
                   help="onnx engine: ONNX Runtime providers in order, e.g. CUDAExecutionProvider,"
                        "CPUExecutionProvider (default: the best installed)")
    p.add_argument("--device", help="auto | cpu | cuda[:N] (default auto)")


def swap_values(a) -> dict:
    """The `swap` settings section from the swap flags (None where a flag was not given)."""
    return {"model": a.model, "direction": a.direction, "engine": a.engine, "precision": a.precision,
            "providers": a.providers, "device": a.device}


def drop_none(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = drop_none(v)
            if v:
                out[k] = v
        elif v is not None:
            out[k] = v
    return out
