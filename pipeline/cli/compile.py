"""`swapstream compile`: build a model's swap engine ahead of time."""

from __future__ import annotations

from swapstream.engines.ahead import buildable_engines


def add(sub) -> None:
    p = sub.add_parser("compile", help="build a model's swap engine ahead of time",
                       description="Build the engine for every direction of MODEL into the engine cache "
                                   "(shared by convert, live and every worker on this machine), so the "
                                   "first run does not wait for it. A valid cached engine is not rebuilt.")
    p.add_argument("model", help="checkpoint directory from `swapstream train`")
    p.add_argument("--engine", required=True, choices=buildable_engines(), help="engine to build")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="auto (default): fp16 on CUDA, fp32 on CPU")
    p.add_argument("--batch", default="32", metavar="[1-]N", help="largest batch the engine takes (32)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.set_defaults(func=run)


def run(a) -> int:
    from swapstream.engines.ahead import compile_ahead, parse_batch
    from swapstream.engines.checkpoint import verify_checkpoint

    verify_checkpoint(a.model)
    compile_ahead(a.model, a.engine, a.precision, parse_batch(a.batch), a.device)
    return 0
