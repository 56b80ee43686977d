"""--stream: the swapped video (and audio) to a network stream."""

from __future__ import annotations

from swapstream.pipeline.outputs import LiveOutput


def check(value, cfg) -> None:
    from swapstream.stages.hardware import check_codec
    from swapstream.stages.sinks.stream import stream_format

    stream_format(value)
    check_codec(cfg.codec)


def build(value, ctx):
    from swapstream.stages.sinks.stream import StreamSettings, StreamSink

    return StreamSink(StreamSettings(value, ctx.cfg.codec), ctx.stream_info, audio=ctx.has_audio)


OUTPUT = LiveOutput(
    "stream", "--stream",
    {"metavar": "URL", "help": "udp://127.0.0.1:1234 (MPEG-TS), tcp://, srt://, rtmp://"},
    build, check, audio=True, order=30)
