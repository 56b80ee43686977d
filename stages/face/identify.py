"""Identify stage: swap only the chosen person (`--only REF`), decided per face track by a vote.

Runs after align (frames in order, face.track set). For each track it embeds the aligned faces
(swapstream.engines.identity: every frame until the track is decided, then every `recheck` frames) and
compares them with the reference person's embeddings. A track is decided by a vote over its
first `vote` samples (a face closer than `threshold` to the reference counts for), so one
misjudged frame (blur, a hand over the face) cannot flip it, and the decision then holds for the
rest of the track: no flicker between swapped and unswapped. A track whose faces stop matching
its own earlier faces for `split` samples in a row (a cut the tracker missed, two people passing)
is split there, and the new part gets its own vote.

Convert (`hold=True`) holds frames back until the tracks in them are decided and `split x
recheck` frames have followed, so every frame of a track, its first included, gets the track's
decision. Live (`hold=False`) cannot wait: a new track is left unswapped until its vote is in
(`vote` frames, ~100 ms at the live default).

Faces of tracks decided against are marked with an error ("not the --only person ...") so swap
and blend leave them as they are.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from swapstream.core.errors import ConfigError
from swapstream.core.packet import Face, FramePacket, Why
from swapstream.engines.identity import SAME_PERSON, FaceEmbedder, distance, distance_to, normalise
from swapstream.stages.base import Needs, Stage

MAX_HOLD = 48  # frames convert may hold back (4K: ~1.2 GB); past it the oldest is decided as is


@dataclass
class IdentitySettings:
    """only: references of the one person to swap (photos, a faceset folder, a video); empty:
    swap every face. threshold: same-person distance of unit embeddings (swapstream.engines.identity);
    vote: samples that decide a track; recheck: frames between samples of a decided track;
    split: samples in a row unlike the track's own that split it; live_vote: the vote in live
    mode, where undecided faces wait unswapped."""

    only: list[str] = field(default_factory=list)
    threshold: float = SAME_PERSON
    vote: int = 7
    recheck: int = 3
    split: int = 3
    live_vote: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.only, str):
            self.only = [self.only]
        if not 0.0 < self.threshold < 2.0:
            raise ConfigError(f"identity threshold {self.threshold} is outside (0, 2); "
                              f"{SAME_PERSON} is dlib's same-person distance")
        for name in ("vote", "recheck", "split", "live_vote"):
            if getattr(self, name) < 1:
                raise ConfigError(f"identity.{name} must be 1 or more, got {getattr(self, name)}")


@dataclass
class _Part:
    """A stretch of one track judged as one person: frames from `start` on."""

    start: int
    samples: list[tuple[int, float, np.ndarray]] = field(default_factory=list)  # (index, dist, emb)
    odd: list[tuple[int, float, np.ndarray]] = field(default_factory=list)  # unlike the rest, in a row
    decision: bool | None = None
    tally: tuple[int, int] = (0, 0)  # (samples near the reference, samples) when decided

    def mean(self) -> np.ndarray:
        return normalise(np.mean([e for _, _, e in self.samples], 0)[None])[0]

    def decide(self, threshold: float) -> bool:
        near = sum(d <= threshold for _, d, _ in self.samples)
        self.decision = bool(self.samples) and near * 2 > len(self.samples)
        self.tally = (near, len(self.samples))
        return self.decision

    @property
    def last(self) -> int:
        return self.samples[-1][0] if self.samples else self.start - 10**9


@dataclass
class _Track:
    parts: list[_Part]
    last_seen: int

    def part_at(self, index: int) -> _Part:
        i = bisect_right([p.start for p in self.parts], index) - 1
        return self.parts[max(i, 0)]


class IdentifyStage(Stage):
    """Marks faces of tracks that are not the reference person as not to be swapped."""

    name = "identify"
    # ordered: the tracks' votes need every frame in order; holds: returns frames it held back
    needs = Needs(ordered=True, temporal=True, holds=True)

    def __init__(self, settings: IdentitySettings, reference: np.ndarray, hold: bool = True,
                 embedder: FaceEmbedder | None = None) -> None:
        self.settings = settings
        self.reference = np.asarray(reference, np.float32)  # (M, 128) unit embeddings
        self.hold = hold
        self.vote = settings.vote if hold else settings.live_vote
        self.lag = settings.split * settings.recheck if hold else 0
        self.embedder = embedder
        self._tracks: dict[int, _Track] = {}
        self._held: deque[FramePacket] = deque()
        self._held_out: list[FramePacket] = []
        self._newest = -1
        self.decided: list[tuple[int, int, bool, int]] = []  # (track, first frame, swap, samples)

    def setup(self) -> None:
        if self.embedder is None:
            self.embedder = FaceEmbedder()
        self.embedder.net  # noqa: B018 - load the network now, not on the first face

    def process(self, batch: list[FramePacket]) -> list[FramePacket]:
        if self.embedder is None:
            self.setup()
        todo: list[tuple[FramePacket, Face]] = []
        planned: dict[int, int] = {}  # track -> the last frame of this batch it is sampled in
        for packet in batch:
            self._newest = packet.index
            seen = {f.track for f in packet.faces}
            for tid, track in list(self._tracks.items()):
                if tid not in seen and track.parts[-1].decision is None:
                    self._decide(tid, track.parts[-1])  # the track ended before its vote was in
            for face in packet.faces:
                track = self._tracks.setdefault(face.track, _Track([_Part(packet.index)], packet.index))
                track.last_seen = packet.index
                part = track.parts[-1]
                last = planned.get(face.track, part.last)
                due = part.decision is None or part.odd or packet.index - last >= self.settings.recheck
                if due and face.ok and face.crop is not None:
                    todo.append((packet, face))
                    planned[face.track] = packet.index
        if self.hold:
            self._held.extend(batch)  # before sampling: a split looks back over held frames
        if todo:
            emb = self.embedder.embed_faces([(p.frame, f.landmarks) for p, f in todo])
            dist = distance_to(emb, self.reference)
            for (packet, face), e, d in zip(todo, emb, dist):
                self._sample(face.track, packet.index, float(d), e)
        if not self.hold:
            out = [self._mark(p) for p in batch]
            self._forget()
            return out
        while len(self._held) > MAX_HOLD:  # faces that never give a sample cannot hold all
            oldest = self._held[0]
            for f in oldest.faces:
                part = self._tracks[f.track].part_at(oldest.index)
                if part.decision is None:
                    self._decide(f.track, part)
            self._held_out.append(self._mark(self._held.popleft()))
        return self._release(flushing=False)

    def flush(self) -> list[FramePacket]:
        for tid, track in self._tracks.items():
            for part in track.parts:
                if part.decision is None:
                    self._decide(tid, part)
        return self._release(flushing=True)

    # ---------------------------------------------------------------------------------------
    def _sample(self, tid: int, index: int, d: float, e: np.ndarray) -> None:
        s = self.settings
        track = self._tracks[tid]
        part = track.parts[-1]
        sample = (index, d, e)
        if part.samples and float(distance(e, part.mean())) > s.threshold:
            part.odd.append(sample)
            if len(part.odd) >= s.split:  # another person under the same track: split here
                new = _Part(part.odd[0][0], samples=list(part.odd))
                new.start = self._switch(tid, part, new)
                part.odd = []
                if part.decision is None:
                    self._decide(tid, part)
                track.parts.append(new)
                self._maybe_decide(tid, new)
            return
        part.samples += part.odd + [sample]  # a few odd samples that did not last: the same person
        part.odd = []
        self._maybe_decide(tid, part)

    def _switch(self, tid: int, old: _Part, new: _Part) -> int:
        """The first frame of the new person in a split track: the unsampled frames between the
        old part's last sample and the first odd one (held, in convert) go to whichever part
        their face is nearer."""
        lo, hi = old.last, new.start
        between = [(p, f) for p in self._held if lo < p.index < hi
                   for f in p.faces if f.track == tid and f.ok and f.crop is not None]
        if not between:
            return hi
        emb = self.embedder.embed_faces([(p.frame, f.landmarks) for p, f in between])
        nearer_new = distance(emb, new.mean()) < distance(emb, old.mean())
        return next((p.index for (p, _), n in zip(between, nearer_new) if n), hi)

    def _maybe_decide(self, tid: int, part: _Part) -> None:
        if part.decision is None and len(part.samples) >= self.vote:
            self._decide(tid, part)

    def _decide(self, tid: int, part: _Part) -> None:
        part.samples += part.odd
        part.odd = []
        part.decide(self.settings.threshold)
        self.decided.append((tid, part.start, bool(part.decision), len(part.samples)))

    def _ready(self, packet: FramePacket) -> bool:
        if self._newest - packet.index < self.lag:
            return False
        return all(self._tracks[f.track].part_at(packet.index).decision is not None
                   for f in packet.faces if f.ok and f.crop is not None)

    def _release(self, flushing: bool) -> list[FramePacket]:
        out, self._held_out = self._held_out, []
        while self._held and (flushing or self._ready(self._held[0])):
            out.append(self._mark(self._held.popleft()))
        self._forget()
        return out

    def _mark(self, packet: FramePacket) -> FramePacket:
        s = self.settings
        for face in packet.faces:
            if not face.ok or face.crop is None:
                continue
            part = self._tracks[face.track].part_at(packet.index)
            if part.decision is None:
                face.skip(Why.UNDECIDED, "a new face waits for its identity vote")
            elif not part.decision:
                near, n = part.tally
                face.skip(Why.OTHER_PERSON, f"not the --only person (track {face.track}: {near} of {n} "
                                              f"samples within {s.threshold})")
        return packet

    def _forget(self) -> None:
        """Drop tracks that ended before every frame still held."""
        oldest = self._held[0].index if self._held else self._newest
        for tid in [t for t, tr in self._tracks.items() if tr.last_seen < min(oldest, self._newest)]:
            del self._tracks[tid]
