"""Live outputs are a registry: one module of pipeline/outputs declares an output's flag, check and
sink, and the live command, the settings, the checks and the sinks all follow from it."""

from __future__ import annotations

import sys
import textwrap

import pytest

import swapstream.pipeline.outputs as outputs_pkg
from swapstream.core.errors import ConfigError, SwapstreamError
from swapstream.pipeline.cli import build_parser
from swapstream.pipeline.config import LiveConfig
from swapstream.pipeline.live import build_sinks, check_outputs, plan_outputs
from swapstream.pipeline.outputs import outputs
from swapstream.stages.sinks.controls import Controls
from swapstream.stages.sources.camera import CaptureInfo

NEW_OUTPUT = '''
"""--tally: a test output that counts frames."""

from swapstream.core.errors import OutputError
from swapstream.pipeline.outputs import LiveOutput
from swapstream.stages.base import Sink


class TallySink(Sink):
    name = "tally"

    def __init__(self, label):
        self.label, self.frames = label, 0

    def process(self, batch):
        self.frames += len(batch)
        return batch


def check(value, cfg):
    if value == "bad":
        raise OutputError("--tally bad: choose another label")


OUTPUT = LiveOutput("tally", "--tally", {"metavar": "LABEL", "help": "count the frames"},
                    lambda value, ctx: TallySink(value), check, order=45)
'''


@pytest.fixture
def extra_output(tmp_path, monkeypatch):
    """A new output module, as a user would add one: one file in the outputs package."""
    folder = tmp_path / "more_outputs"
    folder.mkdir()
    (folder / "tally.py").write_text(textwrap.dedent(NEW_OUTPUT))
    monkeypatch.setattr(outputs_pkg, "__path__", [*outputs_pkg.__path__, str(folder)])
    outputs.cache_clear()
    yield
    outputs.cache_clear()
    sys.modules.pop("swapstream.pipeline.outputs.tally", None)


def test_the_built_in_outputs_are_declared_in_order():
    assert list(outputs()) == ["window", "virtual_camera", "stream", "serve", "record"]
    assert [o.flag for o in outputs().values()] == ["--window", "--virtual-camera", "--stream", "--serve",
                                                    "--record"]
    assert {n for n, o in outputs().items() if o.audio} == {"stream", "serve", "record"}


def test_a_new_output_module_is_all_it_takes(extra_output, tmp_path):
    assert list(outputs()) == ["window", "virtual_camera", "stream", "serve", "tally", "record"]
    # the live command has its flag, in the outputs group
    args = build_parser().parse_args(["live", "--model", "m", "--tally", "x", "--record", "r.mp4"])
    assert args.output_tally == "x" and args.output_record == "r.mp4"
    # its check runs before the camera opens
    with pytest.raises(SwapstreamError, match="--tally bad"):
        check_outputs(LiveConfig(outputs={"tally": "bad"}))
    check_outputs(LiveConfig(outputs={"tally": "ok", "record": str(tmp_path / "r.mp4")}))
    # its sink is built in its order among the others
    info = CaptureInfo(64, 48, 30.0, "test", "file", False)
    sinks = build_sinks(LiveConfig(outputs={"record": str(tmp_path / "r.mp4"), "tally": "x"}), info,
                        Controls(), dict, has_audio=False)
    try:
        assert [s.name for s in sinks] == ["tally", "record"] and sinks[0].label == "x"
    finally:
        for s in sinks:
            s.close()


def test_unknown_outputs_are_refused_and_the_default_is_declared():
    with pytest.raises(ConfigError, match="unknown live output 'tv'; outputs: window, virtual_camera"):
        check_outputs(LiveConfig(outputs={"tv": 1}))
    chosen = plan_outputs(LiveConfig()).outputs  # no display on the test machine: the web page
    assert chosen in ({"serve": "127.0.0.1:8080"}, {"window": True})


def test_a_recording_into_a_folder_that_takes_no_files_fails_before_the_session(tmp_path):
    from swapstream.core.errors import OutputError

    # /proc is a folder root may "write" by its permission bits, yet no file can be made in it
    with pytest.raises(OutputError, match="not writable") as err:
        check_outputs(LiveConfig(outputs={"record": "/proc/x.mp4"}))
    assert "\n" not in str(err.value) and "/proc" in str(err.value)
    check_outputs(LiveConfig(outputs={"record": str(tmp_path / "x.mp4")}))  # a real folder passes
    assert list(tmp_path.iterdir()) == []  # and the check leaves nothing behind


def test_a_stream_password_is_never_printed():
    from swapstream.core.paths import masked
    from swapstream.stages.sources.camera import resolve

    url = "rtsp://user:password@192.0.2.7:554/live"
    assert resolve(url).label == "rtsp://user:***@192.0.2.7:554/live" and resolve(url).url == url
    assert masked("srt://h:9000?passphrase=secret&latency=20") == "srt://h:9000?passphrase=***&latency=20"
    assert masked(f"Connection refused: '{url}'") == "Connection refused: 'rtsp://user:***@192.0.2.7:554/live'"
    # FFmpeg splits user:password@host at the last "@": a password may hold "@" or "/"
    assert masked("rtsp://admin:p@ss@10.0.0.2/live") == "rtsp://admin:***@10.0.0.2/live"
    assert masked("rtsp://admin:pa/ss@10.0.0.2/live") == "rtsp://admin:***@10.0.0.2/live"
    assert masked("rtmp://live.example.com/app/sk-12345") == "rtmp://live.example.com/app/***"
    assert masked("udp://127.0.0.1:5000") == "udp://127.0.0.1:5000"
    with pytest.raises(SwapstreamError) as err:
        check_outputs(LiveConfig(outputs={"stream": "ftp://user:password@host/x"}))
    assert "password" not in str(err.value)
