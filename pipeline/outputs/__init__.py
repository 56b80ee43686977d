"""Live outputs, one module each in this package: what `swapstream live` can send its frames to.

Each module declares one `OUTPUT = LiveOutput(...)`: its name (the key in LiveConfig.outputs and
in a settings file's `outputs:` section), its command-line flag, its pre-flight check (user
errors before the camera opens: one line, exit 2), how its sink is built, whether it takes the
session's audio, and whether it is the output to use when none is asked for. The live command's
flags, the checks, the sinks and the default all come from here, so adding an output is adding
one module to this package (docs/architecture.md, "Add a live output").
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the declarations load with the CLI: no codec or GUI library at import
    from swapstream.core.video import StreamInfo
    from swapstream.stages.base import Sink
    from swapstream.stages.sinks.controls import Controls


@dataclass
class OutputContext:
    """What a builder may use: the live config (LiveConfig), the camera's frame size and rate
    (stages.sources.camera.CaptureInfo), the stream facts for encoders (pts in microseconds),
    the controls, the statistics snapshot (for overlays and the page) and whether there is audio.
    inbox: with --camera browser, the stages.sources.browser.Inbox the page sends its camera to."""

    cfg: Any
    info: Any
    stream_info: StreamInfo
    controls: Controls
    snapshot: Callable[[], dict]
    has_audio: bool
    inbox: Any = None


@dataclass(frozen=True)
class LiveOutput:
    """One kind of live output.

    name: key in LiveConfig.outputs; flag: its command-line flag; flag_options: the argparse
    options of the flag (help, metavar, nargs, const, action); build(value, ctx) -> Sink;
    check(value, cfg): raises a SwapstreamError naming the fix; audio: takes the session's audio;
    order: place among the outputs (sinks and --help); default: a function saying whether this
    output is the one to use when none is asked for, and default_value: its value then (the
    first output by order whose default() is true wins); hint: a line said once it runs."""

    name: str
    flag: str
    flag_options: dict
    build: Callable[[Any, OutputContext], Sink]
    check: Callable[[Any, Any], None] = lambda value, cfg: None
    audio: bool = False
    order: int = 50
    default: Callable[[], bool] | None = None
    default_value: Any = None
    hint: str = ""

    @property
    def dest(self) -> str:
        """The argparse destination of the flag."""
        return "output_" + self.name


@cache
def outputs() -> dict[str, LiveOutput]:
    """Every output declared in this package, by name, in their order."""
    found = []
    for mod in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{mod.name}")
        if isinstance(getattr(module, "OUTPUT", None), LiveOutput):
            found.append(module.OUTPUT)
    return {o.name: o for o in sorted(found, key=lambda o: (o.order, o.name))}
