"""`swapstream engines`: the swap engines and whether each runs here."""

from __future__ import annotations


def add(sub) -> None:
    p = sub.add_parser("engines", help="list the swap engines and whether each runs here",
                       description="List every swap engine, whether it can run on this machine (and "
                                   "why not), and which one --engine auto picks.")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.set_defaults(func=run)


def run(a) -> int:
    from swapstream.engines.registry import engine_status, pick_engine

    rows = engine_status(a.device)
    width = max(len(n) for n, _, _ in rows)
    for name, ok, note in rows:
        print(f"{name:<{width}}  {'yes' if ok else 'no ':<3}  {note}")
    print(f"--engine auto picks: {pick_engine(a.device)}")
    return 0
