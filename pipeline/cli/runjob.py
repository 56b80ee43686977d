"""`python -m swapstream.pipeline.cli.runjob RCFILE ARGV...`: run `swapstream ARGV...` and write
its exit code to RCFILE when it ends (atomically), so a studio started later still knows how a job
ended that ran while it was down."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> int:
    rcfile, argv = Path(sys.argv[1]), sys.argv[2:]
    from swapstream.pipeline.cli import main as swapstream

    rc = 1
    try:
        rc = swapstream(argv)
    except SystemExit as err:  # argparse's usage errors: 2
        rc = err.code if isinstance(err.code, int) else 1
        raise
    finally:
        tmp = rcfile.with_suffix(".tmp")
        tmp.write_text(str(rc))
        os.replace(tmp, rcfile)
    return rc


if __name__ == "__main__":
    sys.exit(main())
