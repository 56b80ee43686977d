"""Back-pressure policies, and the hand-off between threads that carries them out.

- `block`: the producer waits for room. Nothing is lost; memory is bounded by the capacity.
  Convert uses it: every frame of the input reaches the output.
- `newest`: the producer never waits; an item nobody took in time is replaced by the newer one
  and counted as dropped. Live uses it: a slow stage makes frames drop, never queue, so the
  latency of the frames that do come out cannot grow over a session.
"""

from __future__ import annotations

import threading
import time
from collections import deque

POLICIES = ("block", "newest")


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"back-pressure policy {policy!r} is not one of {', '.join(POLICIES)}")
    return policy


class Closed(Exception):
    """The hand-off was closed and is empty: the producer has finished (or the run stops)."""


class Handoff:
    """A bounded queue between one producer thread and one consumer thread under a policy.

    put(item): under `block` waits while `capacity` items wait; under `newest` drops the oldest
    waiting item instead (counted in `dropped`, handed to `on_drop`). get(): the oldest item;
    raises Closed once the hand-off is closed and drained. close(): no more puts.
    """

    def __init__(self, policy: str = "block", capacity: int = 1, on_drop=None) -> None:
        self.policy = check_policy(policy)
        self.capacity = max(1, capacity)
        self.on_drop = on_drop
        self.dropped = 0
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item, timeout: float | None = None) -> bool:
        """Hand `item` over; False if the hand-off is closed (or, under block, `timeout` passed)."""
        with self._cond:
            if self.policy == "block":
                end = None if timeout is None else time.monotonic() + timeout
                while len(self._items) >= self.capacity and not self._closed:
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
            if self._closed:
                return False
            while len(self._items) >= self.capacity:  # newest: the stale one goes
                old = self._items.popleft()
                self.dropped += 1
                if self.on_drop is not None:
                    self.on_drop(old)
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None):
        """The oldest waiting item; raises Closed when closed and empty, TimeoutError on timeout."""
        with self._cond:
            end = None if timeout is None else time.monotonic() + timeout
            while not self._items:
                if self._closed:
                    raise Closed
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError
                self._cond.wait(left)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """No more items will be put; a blocked put() returns False, get() drains then raises."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class Continuity:
    """Keeps FramePacket.follows true when frames are dropped before the chain: a packet that
    continued a dropped frame continues the last frame that went in instead (its tracks and
    filters carry over across the gap, with the real time step)."""

    def __init__(self) -> None:
        self.last: int | None = None

    def admit(self, packet) -> None:
        if packet.follows is not None:
            packet.follows = self.last
        self.last = packet.index
