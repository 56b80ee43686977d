"""--record: the swapped video and its audio to a file, complete and playable when the session ends."""

from __future__ import annotations

from swapstream.pipeline.outputs import LiveOutput


def settings(value, cfg):
    """The recording's EncodeSettings (stages.sinks.file)."""
    from swapstream.stages.sinks.file import EncodeSettings

    return EncodeSettings(value, cfg.codec, crf=20, preset="veryfast")


def check(value, cfg) -> None:
    from swapstream.stages.sinks.file import EncodeStage

    EncodeStage(settings(value, cfg), None).validate()  # codec, folder, extension


def build(value, ctx):
    from swapstream.stages.sinks.record import RecordSink

    return RecordSink(settings(value, ctx.cfg), ctx.stream_info, audio=ctx.has_audio)


OUTPUT = LiveOutput(
    "record", "--record", {"metavar": "FILE", "help": "write the output to FILE (.mp4, .mkv, .mov)"},
    build, check, audio=True, order=50)
