"""The `swapstream` command: extract, sort, train, convert, live, compile, engines, demo, each
a module of this package (add its flags, run it).

User-fixable problems (SwapstreamError) print one line and exit 2; Ctrl-C exits 130, SIGTERM 143
and SIGHUP 129 (they take Ctrl-C's path: swapstream.core.process); either way no half-written
output is left under the final name. `live` ends normally (exit 0) on any of the three.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from swapstream.pipeline.cli import compile, convert, demo, engines, extract, live, sort, studio, train

# One module per command, each with add(subparsers) and run(args) -> exit code; listed in the
# order `swapstream --help` shows them.
COMMANDS = (extract, sort, train, convert, live, studio, compile, engines, demo)

EPILOG = "Swapping someone's face needs their consent. Output video is tagged as synthetic media."


def _quiet_native_logs() -> None:
    # MediaPipe / TFLite / absl log to stderr from C++; keep the terminal for our own lines.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", message=".*SymbolDatabase.GetPrototype.*")

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="swapstream", epilog=EPILOG,
                                description="Face swapping for whole videos and live cameras: extract "
                                            "(and sort) faces, train, convert, live.")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true", help="show tracebacks and library logs")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        os.environ["SWAPSTREAM_VERBOSE"] = "1"
    else:
        _quiet_native_logs()
    from swapstream.core.errors import SwapstreamError
    from swapstream.core.process import Stopped, prepare_process

    prepare_process()  # TERM/HUP as Ctrl-C, SIGXFSZ ignored, open-file limit raised
    try:
        return args.func(args)
    except SwapstreamError as e:
        if args.verbose:
            raise
        print(f"swapstream: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        how = f"stopped by {e.name}" if isinstance(e, Stopped) else "interrupted"
        print(f"swapstream: {how} (a video output is not left half-written; training keeps "
              "its last checkpoint)", file=sys.stderr)
        return e.exit_code if isinstance(e, Stopped) else 130


