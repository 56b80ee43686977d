"""The local runner's three threads (decode ahead, stages, encode behind): order, counts, errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from swapstream.pipeline.chain import Link
from swapstream.pipeline.runners.base import built
from swapstream.pipeline.runners.local import LocalRunner
from swapstream.stages.base import Needs, Stage
from swapstream.stages.sinks.file import EncodeSettings, EncodeStage
from swapstream.stages.sources.file import DecodeSettings, DecodeStage
from tests.pipeline.test_convert import decode_all


class Darken(Stage):
    """Halves every pixel of frame `bad_at` and after; at `bad_at`, with `crop`, also cuts a row
    off (the encoder then refuses the frame)."""

    name = "darken"
    needs = Needs()

    def __init__(self, bad_at: int = -1, crop: bool = False) -> None:
        self.bad_at, self.crop = bad_at, crop

    def process(self, batch):
        for p in batch:
            p.frame = (np.asarray(p.frame) // 2).astype(np.uint8)
            if p.index == self.bad_at and self.crop:
                p.frame = p.frame[1:]
        return batch


def _run(src, dst, stage: Stage):
    dec = DecodeStage(DecodeSettings(str(src)))
    info = dec.open()
    sink = EncodeStage(EncodeSettings(str(dst), audio_from=str(src)), info)
    try:
        report = LocalRunner(4, progress=False).run([Link("darken", lambda: stage, stage.needs)], dec,
                                                    [built(sink)])
        return report.stats, report.sinks
    finally:
        dec.close()


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name in ("decode", "encode")}


def test_every_frame_in_order_with_the_sink_in_its_own_thread(clips, tmp_path):
    out = tmp_path / "dark.mp4"
    stats, _ = _run(clips["a"], out, Darken())
    src, _ = decode_all(clips["a"])
    dst, _ = decode_all(out)
    assert stats.frames == len(dst) == len(src) == 60
    assert [s.frames for s in stats.stages] == [60, 60]
    # each output frame is its own input frame halved (codec noise aside), so none was reordered
    errs = [np.abs(d.astype(int) - s.astype(int) // 2).mean() for d, s in zip(dst, src)]
    swapped = [np.abs(d.astype(int) - s.astype(int) // 2).mean() for d, s in zip(dst[1:], src)]
    assert max(errs) < 3 and min(swapped) > max(errs)
    assert not _threads()


def test_a_sink_error_stops_the_run_and_leaves_no_output(clips, tmp_path):
    out = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match="the stream is"):
        _run(clips["a"], out, Darken(bad_at=21, crop=True))
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]
    assert not _threads()


def test_a_truncated_input_raises_after_its_good_frames_and_leaves_no_output(clips, tmp_path):
    from swapstream.core.errors import InputError

    cut = tmp_path / "cut.mp4"
    data = clips["a"].read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "out.mp4"
    with pytest.raises(InputError):
        _run(cut, out, Darken())
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]
    assert not _threads()


def test_a_stop_signal_while_the_decode_thread_starts_joins_it_before_the_source_closes(
        clips, tmp_path, monkeypatch):
    """A real SIGTERM, raised in this (the main) thread just as the decode thread has begun: the
    runner's clean-up must still stop and join that thread, so the source is not closed while the
    thread reads it (closing a generator another thread runs raises ValueError)."""
    import signal

    from swapstream.core import process
    from swapstream.pipeline.runners import local

    real_start = local._Reader.start

    def start_then_term(self):
        real_start(self)
        signal.raise_signal(signal.SIGTERM)  # handled here, inside start(), as in a real stop

    old = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(local._Reader, "start", start_then_term)
    process.take_stop_signals()
    try:
        with pytest.raises(process.Stopped):
            _run(clips["a"], tmp_path / "out.mp4", Darken())  # its finally closes the source
    finally:
        signal.signal(signal.SIGTERM, old)
        process._state.update(installed=False, stopping=False)
    assert not _threads()  # joined, not left reading
    assert not [p for p in tmp_path.iterdir()]  # nothing under the output's name, no partial
