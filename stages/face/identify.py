"""Identify stage: who each face track is, among the people of the swap's map (`--map REF=MODEL`,
`--only REF` being a map of one), decided per track by a vote; faces of nobody in the map are left.

Runs after align (frames in order, face.track set). For each track it embeds the aligned faces
(swapstream.engines.identity: every frame until the track is decided, then every `recheck` frames) and
compares them with each person's reference embeddings: a sample votes for the nearest person if
it is within `threshold` of them, else for nobody. A track is decided by a vote over its first
`vote` samples (the person with more than half of the votes, else nobody), so one misjudged frame
(blur, a hand over the face) cannot flip it, and the decision then holds for the rest of the
track: no flicker between swapped and unswapped, nor between two people's models. A track whose
faces stop matching its own earlier faces for `split` samples in a row (a cut the tracker missed,
two people passing) is split there, and the new part gets its own vote.

Convert (`hold=True`) holds frames back until the tracks in them are decided and `split x
recheck` frames have followed, so every frame of a track, its first included, gets the track's
decision. Live (`hold=False`) cannot wait: a new track is left unswapped until its vote is in
(`vote` frames, ~100 ms at the live default).

The decision is written on each face: face.person = the map entry's index (the swap stage runs
the face through that entry's model); faces of tracks of nobody in the map get a
Why.OTHER_PERSON skip, so swap and blend leave them as they are.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from swapstream.core.errors import ConfigError
from swapstream.core.packet import Face, FramePacket, Why
from swapstream.engines.identity import SAME_PERSON, FaceEmbedder, distance, distance_to, normalise
from swapstream.stages.base import Needs, Stage

MAX_HOLD = 48  # frames convert may hold back (4K: ~1.2 GB); past it the oldest is decided as is
NOBODY = -1  # a track's decision when it is none of the map's people


@dataclass
class IdentitySettings:
    """only: references of the one person to swap (photos, a faceset folder, a video; with the
    swap's model, a map of one person: pipeline.people); empty: swap every face (or the map's
    people). threshold: same-person distance of unit embeddings (swapstream.engines.identity);
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
    """A stretch of one track judged as one person: frames from `start` on. A sample is (frame
    index, (P,) float32 distances to each of the P people's references, (128,) embedding)."""

    start: int
    samples: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)
    odd: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)  # unlike the rest, in a row
    decision: int | None = None  # None: not yet; NOBODY; else the person's index in the map
    tally: tuple[int, int] = (0, 0)  # (samples for the most voted person, samples) when decided

    def mean(self) -> np.ndarray:
        return normalise(np.mean([e for _, _, e in self.samples], 0)[None])[0]

    def decide(self, threshold: float) -> int:
        """Each sample votes for the nearest person within `threshold` (else for nobody); the
        person with more than half of the votes is the decision, else NOBODY."""
        votes: dict[int, int] = {}
        for _, d, _ in self.samples:
            k = int(np.argmin(d))
            if d[k] <= threshold:
                votes[k] = votes.get(k, 0) + 1
        best = max(votes, key=lambda k: (votes[k], -k), default=NOBODY)
        near = votes.get(best, 0)
        self.decision = best if near * 2 > len(self.samples) else NOBODY
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
    """Sets face.person to the map entry each face's track is decided to be; marks faces of
    tracks of nobody in the map (and, live, of tracks not decided yet) as not to be swapped.

    references: each person's reference embeddings ((M_k, 128) float32 unit vectors), in the
    map's order; one (M, 128) array is a map of one person (--only)."""

    name = "identify"
    # ordered: the tracks' votes need every frame in order; holds: returns frames it held back
    needs = Needs(ordered=True, temporal=True, holds=True)

    def __init__(self, settings: IdentitySettings, references: np.ndarray | Sequence[np.ndarray],
                 hold: bool = True, embedder: FaceEmbedder | None = None) -> None:
        self.settings = settings
        if isinstance(references, np.ndarray):
            references = [references]
        self.references = [np.asarray(r, np.float32) for r in references]  # (M_k, 128) each
        if not self.references or any(r.ndim != 2 or len(r) == 0 for r in self.references):
            raise ValueError("identify needs each person's (M, 128) reference embeddings, M >= 1")
        self.hold = hold
        self.vote = settings.vote if hold else settings.live_vote
        self.lag = settings.split * settings.recheck if hold else 0
        self.embedder = embedder
        self._tracks: dict[int, _Track] = {}
        self._held: deque[FramePacket] = deque()
        self._held_out: list[FramePacket] = []
        self._newest = -1
        # (track, first frame, person: the map entry or NOBODY, samples)
        self.decided: list[tuple[int, int, int, int]] = []

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
            dist = np.stack([distance_to(emb, r) for r in self.references], 1)  # (N, P)
            for (packet, face), e, d in zip(todo, emb, dist):
                self._sample(face.track, packet.index, d, e)
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
    def _sample(self, tid: int, index: int, d: np.ndarray, e: np.ndarray) -> None:
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
        self.decided.append((tid, part.start, int(part.decision), len(part.samples)))

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
            elif part.decision == NOBODY:
                near, n = part.tally
                who = "the --only person" if len(self.references) == 1 else "anyone in the --map"
                face.skip(Why.OTHER_PERSON, f"not {who} (track {face.track}: {near} of {n} "
                                              f"samples within {s.threshold} of one person)")
            else:
                face.person = part.decision
        return packet

    def _forget(self) -> None:
        """Drop tracks that ended before every frame still held."""
        oldest = self._held[0].index if self._held else self._newest
        for tid in [t for t, tr in self._tracks.items() if tr.last_seen < min(oldest, self._newest)]:
            del self._tracks[tid]
