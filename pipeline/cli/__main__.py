"""python -m swapstream.pipeline.cli"""

import sys

from swapstream.pipeline.cli import main

sys.exit(main())
