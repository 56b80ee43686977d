"""The contracts every part of the pipeline keeps: Stage, Sink, Source, and what a stage needs.

    Source ──packets──> Stage ──> Stage ──> ... ──> Sink(s)

- A **Stage** turns a batch of FramePackets into a batch (usually the same packets, with more
  filled in). `setup()` once before the first batch (loads models), `process(batch)` for each
  batch, `flush()` at the end of the stream (returns packets it held back, usually none),
  `close()` always, last, even after an error (releases what setup took; safe to call twice).
- A **Sink** is a stage at the end: it takes packets in order and delivers them somewhere (a
  file, a window, a network). `flush()` completes the delivery (a file is renamed into place);
  `abort()` instead discards it (no half-written output under the final name); `close()` after
  either. A sink never blocks its runner for long: a slow viewer is the sink's own business.
- A **Source** yields packets: `open()` (raises a SwapstreamError for a bad input), then
  `packets()` (an iterator; a live source blocks until the next frame is captured), `close()`.
- **Needs** is what a stage declares about itself, so that runners place it without knowing its
  name: the device it wants, whether it must see every frame in order in one instance, whether
  it carries state from frame to frame, and how many CPUs' worth of copies pay off in a pool.

Nothing here knows of threads, processes or Ray: runners supply those.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from swapstream.core.packet import FramePacket


@dataclass(frozen=True)
class Needs:
    """What a stage asks of the runner that places it.

    device: "cpu", or "gpu" (runs on a GPU when the machine has one; one copy per GPU).
    ordered: must see every frame in frame order, in one instance (a pool would reorder them).
    temporal: carries state from one frame to the next (tracks, filters); it copes with gaps
        (FramePacket.follows), so it may still be pooled unless it is also `ordered`.
    cpu_share: pool size, as a share of the CPUs, when the stage may be pooled (0 = one copy).
    holds: may return packets of earlier batches (it holds frames back until it can decide about
        them), so the stages after it get their frames with the packets, not with the batch.
    """

    device: str = "cpu"
    ordered: bool = False
    temporal: bool = False
    cpu_share: float = 0.0
    holds: bool = False

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "gpu"):
            raise ValueError(f"Needs.device must be 'cpu' or 'gpu', got {self.device!r}")

    @property
    def poolable(self) -> bool:
        return not self.ordered

    def __or__(self, other: Needs) -> Needs:
        """The needs of two stages run as one (a fused stage)."""
        return Needs("gpu" if "gpu" in (self.device, other.device) else "cpu",
                     self.ordered or other.ordered, self.temporal or other.temporal,
                     0.0 if self.ordered or other.ordered else max(self.cpu_share, other.cpu_share),
                     self.holds or other.holds)


class Stage:
    """A step of the chain: setup / process / flush / close. Subclasses set `name` and `needs`."""

    name: ClassVar[str] = "stage"
    needs: ClassVar[Needs] = Needs()

    def setup(self) -> None:
        """Load what the stage needs (models, devices). Raises SwapstreamError on a user error."""

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        raise NotImplementedError

    def flush(self) -> list[FramePacket]:
        """End of stream: the packets held back, if any, to go through the stages after this."""
        return []

    def close(self) -> None:
        """Release what setup() took; always called last, also after an error; idempotent."""

    def limit_threads(self, n: int) -> None:
        """A runner's hint: use at most `n` threads of your own (codecs, OpenMP). Default: ignore."""


class Sink(Stage):
    """The end of a chain. After the last batch, flush() completes the output or abort() drops it;
    close() follows either. process() returns the batch it delivered.

    For live runs a sink also says: whether it must get every frame (a recording) or may skip
    frames when it is slow (a display); whether it takes audio (audio(chunk) between frames, in
    capture order); whether it must run on the main thread (GUI windows); idle() is called
    when no frame came for a while (a window keeps drawing and reading keys)."""

    name: ClassVar[str] = "sink"
    needs: ClassVar[Needs] = Needs(ordered=True)
    keeps_every_frame: ClassVar[bool] = True
    wants_audio: ClassVar[bool] = False
    main_thread: ClassVar[bool] = False

    def audio(self, chunk) -> None:
        """Audio captured between the frames delivered before and after it (an AudioChunk)."""

    def idle(self) -> None:
        """Nothing arrived for a moment; a GUI sink handles its events here."""

    def abort(self) -> None:
        """Discard the output (a temporary file is removed); safe after flush() and twice."""

    def salvage(self) -> str:
        """The output failed (a full disk, a vanished receiver): keep what it wrote where that
        can be made whole, else drop it (abort()); returns what became of it, a phrase for the
        one line the runner prints ("nothing was kept", "the frames written so far are in X")."""
        self.abort()
        return "nothing was kept"

    def report(self) -> dict:
        """What the sink has to say at the end: counts, and "warnings" (a list of lines)."""
        return {}


class Source:
    """Where packets come from: open() -> packets() -> close()."""

    name: ClassVar[str] = "source"
    #: True when frames arrive in real time whether or not they are taken (a camera, a stream, a
    #: file played at its own rate): a runner under the `newest` policy drops what it cannot take.
    live: ClassVar[bool] = False

    def open(self) -> object:
        """Open the input; returns what it is (e.g. StreamInfo). SwapstreamError on a bad input."""
        raise NotImplementedError

    def packets(self) -> Iterator[FramePacket]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the input; idempotent."""
